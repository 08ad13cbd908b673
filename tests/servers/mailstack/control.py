"""Start and stop a whole stack: the mail_stack() context manager."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .certs import make_certs, signed_with_sha1
from .dovecot import write_dovecot_config
from .layout import DOVECOT_DIRS, Layout
from .ports import Ports
from .postfix import write_postfix_config
from .processes import (
    Proc,
    Subreaper,
    descendants,
    proc_of,
    read_cmdline,
    read_pidfile,
    read_stat,
    reap,
    run_logged,
    same_process,
    tail,
    wait_until,
)
from .readiness import wait_ready
from .stack import HOST, START_TIMEOUT, STOP_TIMEOUT, USERS, VMAIL_USER, MailStack

log = logging.getLogger(__name__)

# sun_path is 108 bytes; leave room for the longest socket name Dovecot puts in base_dir.
_MAX_WORKDIR_LEN = 70


@dataclass
class _Runtime:
    lay: Layout
    masters: list[Proc] = field(default_factory=list)


def _gone(p: Proc) -> bool:
    """True once p has exited and is reaped, or is a zombie someone else must reap."""
    st = read_stat(p.pid)
    return st is None or st[2] != p.starttime or (st[0] == "Z" and st[1] != os.getpid())


def _stop(rt: _Runtime) -> None:
    """Stop Postfix and the Dovecot instances, kill what is left of them, reap the orphans.

    Never raises: it runs in ``finally`` blocks and must get as far as it can.
    """
    lay = rt.lay
    t0 = time.monotonic()
    # Snapshot first: once the masters are gone their children are no longer findable.
    # The masters themselves are always included so that even crashed ones get reaped.
    known = {p.pid: p for p in [*rt.masters, *descendants(rt.masters)]}
    procs = list(known.values())
    stops = [("postfix", lay.pf_pidfile, ["postfix", "-c", str(lay.pf_etc), "stop"])]
    for cert in DOVECOT_DIRS:
        d = lay.dovecot(cert)
        stops.append((f"dovecot-{cert}", d.pidfile, ["doveadm", "-c", str(d.conf), "stop"]))

    def stop_one(name: str, pidfile: Path, cmd: list[str]) -> None:
        try:
            pid = read_pidfile(pidfile)
            master = known.get(pid) if pid else None
            if master is None or not same_process(master):
                return
            run_logged(cmd, lay.log_dir / f"stop-{name}.log", STOP_TIMEOUT, lambda: reap(procs))
            if not wait_until(lambda: not same_process(master), STOP_TIMEOUT):
                log.warning("mailstack: %s did not stop pid %d", cmd[0], master.pid)
        except Exception:
            log.exception("mailstack: graceful stop of %s failed; killing its processes", name)

    # All at once: each takes about a second (Dovecot's master waits for its children),
    # and no daemon needs another to shut down.
    threads = [threading.Thread(target=stop_one, args=stop, daemon=True) for stop in stops]
    for t in threads:
        t.start()
    for t in threads:
        t.join(2 * STOP_TIMEOUT + 1)
    # Children outlive their master briefly (Dovecot's log process drains its pipes
    # first); give them a moment and reap them as they go before resorting to signals.
    wait_until(lambda: (reap(procs), all(_gone(p) for p in procs))[1], 2.0)
    # Anything recorded that survived: kill it, but only if /proc says it is still the
    # very process we recorded (same start time and command line), never a recycled PID.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in procs if same_process(p) and read_cmdline(p.pid) == p.cmdline]
        if not alive:
            break
        log.warning("mailstack: sending %s to %s", sig.name, [str(p) for p in alive])
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)
        wait_until(lambda a=alive: not any(same_process(p) for p in a), 3.0)
    # Orphans are reparented to us (subreaper) a moment after their parent dies.
    wait_until(lambda: (reap(procs), all(_gone(p) for p in procs))[1], 2.0)
    leftover = [p.pid for p in procs if not _gone(p)]
    if leftover:
        log.warning("mailstack: processes not gone after stop: %s", leftover)
    log.info("mailstack: stopped %s in %.1fs", lay.workdir, time.monotonic() - t0)


def _check_traversable(path: Path) -> None:
    """Postfix (as postfix/nobody) and Dovecot (as dovecot) must reach files in path."""
    for p in [path, *path.parents]:
        if not os.stat(p).st_mode & 0o001:
            raise RuntimeError(
                f"{p} is not traversable by other users (mode {oct(os.stat(p).st_mode)[-4:]}); "
                "the stack's daemons run as postfix/dovecot/nobody and need o+x on every "
                "parent of the work directory. Use a directory under /tmp."
            )
    if len(str(path)) > _MAX_WORKDIR_LEN:
        raise RuntimeError(
            f"work directory path {path} is too long for UNIX socket names "
            f"(max {_MAX_WORKDIR_LEN} characters); use a shorter base directory"
        )


def _start(workdir: Path, rt: _Runtime, weak: bool = False) -> MailStack:
    lay = rt.lay
    t0 = time.monotonic()
    lay.log_dir.mkdir(mode=0o755)
    (lay.workdir / "sasl").mkdir(mode=0o755)
    vmail = pwd.getpwnam(VMAIL_USER)
    for user in USERS:
        for sub in ("cur", "new", "tmp"):
            (lay.mail_dir / user / "Maildir" / sub).mkdir(parents=True)
    for dirpath, _dirs, _files in os.walk(lay.mail_dir):
        os.chown(dirpath, vmail.pw_uid, vmail.pw_gid)
    lay.mail_dir.chmod(0o755)

    certs = make_certs(lay.ca_dir, weak)
    ports = Ports.pick()
    write_dovecot_config(lay, certs, ports, vmail.pw_uid, vmail.pw_gid)
    write_postfix_config(lay, certs, ports, vmail.pw_uid, vmail.pw_gid, weak)
    # Postfix re-reads a table file until its mtime is >= 2 s older than the start of
    # the read ("pausing to let it finish writing"); freshly written configs would cost
    # ~2 s per start.  Backdating them is harmless: nothing else looks at the mtimes.
    past = time.time() - 60
    for f in lay.pf_etc.iterdir():
        os.utime(f, (past, past))
    t_cfg = time.monotonic()

    # Dovecot first: Postfix's SMTP AUTH talks to its auth socket.
    for cert in DOVECOT_DIRS:
        d = lay.dovecot(cert)
        dc_cmd = ["dovecot", "-c", str(d.conf)]
        if run_logged(dc_cmd, lay.log_dir / "dovecot-start.log", START_TIMEOUT) != 0:
            raise RuntimeError(f"dovecot ({cert} certificate) failed to start")
        wait_until(lambda d=d: read_pidfile(d.pidfile) is not None, 5.0)
        dc_pid = read_pidfile(d.pidfile)
        dc = proc_of(dc_pid) if dc_pid else None
        if dc is None:
            raise RuntimeError(f"dovecot ({cert} certificate) wrote no live master.pid")
        rt.masters.append(dc)

    # "postfix start" returns only after the master has initialised (master -w).
    pf_cmd = ["postfix", "-c", str(lay.pf_etc), "start"]
    if run_logged(pf_cmd, lay.log_dir / "postfix-start.log", START_TIMEOUT) != 0:
        raise RuntimeError("postfix failed to start")
    pf_pid = read_pidfile(lay.pf_pidfile)
    pf = proc_of(pf_pid) if pf_pid else None
    if pf is None:
        raise RuntimeError("postfix started but wrote no live master.pid")
    rt.masters.append(pf)

    not_ready = wait_ready(
        ports,
        certs.ca,
        time.monotonic() + START_TIMEOUT,
        lambda: all(same_process(m) for m in rt.masters),
        weak,
    )
    if not_ready:
        raise RuntimeError(f"listeners never answered: {', '.join(not_ready)}")
    log.info(
        "mailstack: up in %.1fs (certs+configs %.1fs) in %s",
        time.monotonic() - t0,
        t_cfg - t0,
        workdir,
    )
    return MailStack(
        workdir=workdir,
        ca_file=certs.ca,
        host=HOST,
        mx_port=ports.mx,
        submission_port=ports.submission,
        smtps_port=ports.smtps,
        expired_port=ports.expired,
        wronghost_port=ports.wronghost,
        imap_port=ports.imap,
        imaps_port=ports.imaps,
        pop3_port=ports.pop3,
        pop3s_port=ports.pop3s,
        expired_mailbox=ports.expired_mailbox,
        wronghost_mailbox=ports.wronghost_mailbox,
        users=dict(USERS),
        maildir_root=lay.mail_dir,
        weak=weak,
        weak_sha1=certs.weak is not None and signed_with_sha1(certs.weak[1]),
    )


def _start_failure_report(lay: Layout, exc: Exception) -> str:
    logs = ("dovecot-start.log", "dovecot.log", "dovecot-expired.log")
    logs += ("dovecot-wronghost.log", "postfix-start.log", "postfix.log")
    return f"mail stack failed to start: {exc}\nwork directory: {lay.workdir}\n" + "\n".join(
        tail(lay.log_dir / name) for name in logs
    )


def _port_clash(lay: Layout) -> bool:
    """True if start-up failed because another process grabbed one of our ports."""
    names = ("dovecot-start.log", "dovecot.log", "dovecot-expired.log", "dovecot-wronghost.log")
    for name in (*names, "postfix-start.log", "postfix.log"):
        with contextlib.suppress(OSError):
            text = (lay.log_dir / name).read_text(errors="replace")
            if os.strerror(errno.EADDRINUSE) in text:
                return True
    return False


@contextlib.contextmanager
def mail_stack(base: Path | None = None, *, weak: bool = False) -> Iterator[MailStack]:
    """Start Dovecot (three instances: the good, the expired and the wrong-host
    certificate) then Postfix on free 127.0.0.1 ports and yield a MailStack.

    ``weak=True`` starts a deliberately weak Postfix instead of the hardened one: AUTH
    offered and accepted before STARTTLS on the submission ports, an open relay for
    127.0.0.0/8, TLS 1.0 to 1.2 (no 1.3) preferring plain-RSA key exchange, and a 1024-bit
    RSA certificate signed with SHA-1 (Dovecot keeps the good certificate).

    The work directory is a fresh ``mailstack-*`` directory under ``base`` (default
    /tmp); every parent must be traversable by other users, so do not pass pytest's
    0700 tmp dirs.  Start-up waits until every listener answers (SMTP 220, TLS
    handshake on implicit-TLS ports, IMAP OK, POP3 +OK).  On exit every daemon is stopped and
    reaped.  A directory created under the default base is removed after a clean stop
    unless MAILSTACK_KEEP=1; with an explicit base it is kept.

    Raises RuntimeError with the last lines of the logs if start-up fails; the work
    directory is then kept for inspection.
    """
    attempts = 3
    for attempt in range(1, attempts + 1):
        workdir = Path(tempfile.mkdtemp(prefix="mailstack-", dir=base or "/tmp"))
        workdir.chmod(0o755)
        rt = _Runtime(Layout(workdir))
        Subreaper.acquire()
        try:
            try:
                _check_traversable(workdir)
                stack = _start(workdir, rt, weak)
            except Exception as exc:
                _stop(rt)
                if attempt < attempts and _port_clash(rt.lay):
                    # Another process took a port between picking and binding it.
                    log.warning("mailstack: port clash, retrying (%s)", workdir)
                    shutil.rmtree(workdir, ignore_errors=True)
                    continue
                raise RuntimeError(_start_failure_report(rt.lay, exc)) from exc
            try:
                yield stack
            finally:
                _stop(rt)
        finally:
            Subreaper.release()
        if base is None and not os.environ.get("MAILSTACK_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
        return
