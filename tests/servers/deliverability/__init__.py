"""Where does the canary land, and what did the receiver think of it? A real sending and
a real receiving side on 127.0.0.1, for issue #19's tests.

::

    client --SMTP--> sending Postfix --(OpenDKIM signs, milter)--> receiving Postfix
                     (submit port; relays for 127.0.0.0/8;          (our VerifyingMilter adds
                      mail.good.test)                                Authentication-Results)
                                                                            |
                                                 Dovecot LMTP <-------------+
                                                 (Sieve files marked messages into Junk)
                                                 Dovecot IMAP / IMAPS  <-- the canary's reader

A ``DNSServer`` serves both sides' records (SPF, DKIM keys, DMARC, MX, PTR): the milter
asks it, and so can the code under test. The sending domains each stand for one verdict
(``configs.GOOD``, ``SPF_FAIL``, ``WRONG_KEY``); a message with the header
``X-Deliverability-Test: junk`` is filed into Junk. Needs root, Postfix, OpenDKIM,
Dovecot with LMTP and Sieve (Debian: postfix opendkim dovecot-imapd dovecot-lmtpd
dovecot-sieve), and dkimpy for the milter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..dns import DNSServer
from ..mailstack.certs import make_certs
from ..mailstack.ports import free_ports
from ..mailstack.processes import (
    Proc,
    Subreaper,
    descendants,
    proc_of,
    read_pidfile,
    reap,
    run_logged,
    same_process,
    tail,
    wait_until,
)
from . import configs
from .configs import HOST
from .milter import VerifyingMilter

log = logging.getLogger(__name__)
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Deliverability:
    """A running testbed, as tests see it."""

    workdir: Path
    ca_file: Path
    host: str
    submit_port: int  # the sending Postfix (plain SMTP, no AUTH; relays for loopback)
    receive_port: int  # the receiving Postfix
    imap_port: int  # the receiving Dovecot, STARTTLS
    imaps_port: int  # the receiving Dovecot, implicit TLS
    dns: DNSServer
    milter: VerifyingMilter
    maildir: Path  # the canary's Maildir (INBOX); Junk is maildir/.Junk

    authserv_id: str = configs.AUTHSERV_ID
    user: str = configs.USER
    password: str = configs.PASSWORD
    recipient: str = f"{configs.USER}@{configs.RECEIVER_DOMAIN}"

    def delivered(self, folder: str = "INBOX") -> list[bytes]:
        """The raw messages in ``folder`` (INBOX or Junk), oldest first."""
        base = self.maildir if folder == "INBOX" else self.maildir / f".{folder}"
        files = [p for sub in ("new", "cur") for p in (base / sub).glob("*") if p.is_file()]
        return [p.read_bytes() for p in sorted(files, key=lambda p: p.stat().st_mtime)]


def available() -> str | None:
    """None if the testbed can start here, else why not."""
    if os.geteuid() != 0:
        return "needs root (Postfix and Dovecot masters)"
    for tool in ("postfix", "dovecot", "opendkim", "sievec"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/usr/lib/dovecot/lmtp").exists():
        return "dovecot-lmtpd is not installed"
    try:
        import dkim  # noqa: F401
    except ImportError:
        return "dkimpy is not installed"
    return None


@contextlib.contextmanager
def deliverability_stack(base: Path | None = None) -> Iterator[Deliverability]:
    """Start everything, yield the testbed, stop everything (also after a failed start,
    whose work directory is then kept and named in the error)."""
    work = Path(tempfile.mkdtemp(prefix="dlv-", dir=base or "/tmp"))
    work.chmod(0o755)
    (work / "logs").mkdir(mode=0o755)
    masters: list[Proc] = []
    opendkim: subprocess.Popen[bytes] | None = None
    Subreaper.acquire()
    with contextlib.ExitStack() as stack:
        try:
            keys = configs.make_keys(work / "keys")
            dns = stack.enter_context(DNSServer(configs.zone(keys)))
            milter = stack.enter_context(
                VerifyingMilter(configs.AUTHSERV_ID, dns.address, dns.port)
            )
            ports = configs.Ports(*free_ports(5))
            certs = make_certs(work / "ca")
            mail = work / "mail"
            vmail = pwd.getpwnam("nobody")
            for sub in ("cur", "new", "tmp"):
                (mail / configs.USER / "Maildir" / sub).mkdir(parents=True)
            for dirpath, _dirs, _files in os.walk(mail):
                os.chown(dirpath, vmail.pw_uid, vmail.pw_gid)
            lmtp = work / "dovecot" / "run" / "lmtp-in"
            dc_conf = configs.write_dovecot(work, ports, certs.good, lmtp, mail)
            receiver = configs.write_receiver(work, ports, milter.port, lmtp)
            sender = configs.write_sender(work, ports)
            dkim_conf = configs.write_opendkim(work, ports, keys)
            _backdate(receiver, sender)

            if run_logged(["dovecot", "-c", str(dc_conf)], work / "logs" / "start.log", 20) != 0:
                raise RuntimeError("dovecot failed to start")
            masters.append(_master(work / "dovecot" / "run" / "master.pid"))
            with (work / "logs" / "opendkim.log").open("ab") as out:
                opendkim = subprocess.Popen(
                    ["opendkim", "-f", "-x", str(dkim_conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                )
            for etc in (receiver, sender):
                cmd = ["postfix", "-c", str(etc), "start"]
                if run_logged(cmd, work / "logs" / "start.log", 20) != 0:
                    raise RuntimeError(f"postfix {etc.name} failed to start")
                masters.append(
                    _master(etc.parent / etc.name.replace("-etc", "-spool") / "pid" / "master.pid")
                )
            _wait_ready(ports, opendkim)
            yield Deliverability(
                workdir=work,
                ca_file=certs.ca,
                host=HOST,
                submit_port=ports.submit,
                receive_port=ports.receive,
                imap_port=ports.imap,
                imaps_port=ports.imaps,
                dns=dns,
                milter=milter,
                maildir=mail / configs.USER / "Maildir",
            )
        except Exception as exc:
            logs = "\n".join(tail(p, 10) for p in sorted((work / "logs").glob("*.log")))
            raise RuntimeError(f"deliverability testbed failed: {exc}\nin {work}\n{logs}") from exc
        finally:
            _stop(work, masters, opendkim)
            Subreaper.release()
    if not os.environ.get("MAILSTACK_KEEP"):
        shutil.rmtree(work, ignore_errors=True)


def _backdate(*dirs: Path) -> None:
    # Postfix waits for table files to be >= 2 s old (see mailstack.control).
    past = time.time() - 60
    for d in dirs:
        for f in d.iterdir():
            os.utime(f, (past, past))


def _master(pidfile: Path) -> Proc:
    wait_until(lambda: read_pidfile(pidfile) is not None, 5.0)
    pid = read_pidfile(pidfile)
    proc = proc_of(pid) if pid else None
    if proc is None:
        raise RuntimeError(f"no live master behind {pidfile}")
    return proc


def _wait_ready(ports: configs.Ports, opendkim: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    waiting = {
        "submit": ports.submit,
        "receive": ports.receive,
        "imap": ports.imap,
        "opendkim": ports.opendkim,
    }
    while waiting and time.monotonic() < deadline:
        if opendkim.poll() is not None:
            raise RuntimeError(f"opendkim exited with {opendkim.returncode}")
        for name, port in list(waiting.items()):
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), 1.0) as s:
                if name == "opendkim" or s.recv(64):
                    del waiting[name]
        time.sleep(0.1)
    if waiting:
        raise RuntimeError(f"never answered: {', '.join(waiting)}")


def _stop(work: Path, masters: list[Proc], opendkim: subprocess.Popen[bytes] | None) -> None:
    """Stop Postfix, Dovecot and OpenDKIM; kill and reap what is left. Never raises."""
    procs = [*masters, *descendants(masters)]
    for name in ("sender", "receiver"):
        etc = work / f"{name}-etc"
        if (etc / "main.cf").exists():
            run_logged(["postfix", "-c", str(etc), "stop"], work / "logs" / "stop.log", 10)
    conf = work / "dovecot" / "dovecot.conf"
    if conf.exists():
        run_logged(["doveadm", "-c", str(conf), "stop"], work / "logs" / "stop.log", 10)
    if opendkim is not None and opendkim.poll() is None:
        opendkim.terminate()
        try:
            opendkim.wait(5)
        except subprocess.TimeoutExpired:
            opendkim.kill()
            opendkim.wait()
    wait_until(lambda: (reap(procs), not any(same_process(p) for p in procs))[1], 5.0)
    for p in procs:
        if same_process(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
    wait_until(lambda: (reap(procs), not any(same_process(p) for p in procs))[1], 3.0)
