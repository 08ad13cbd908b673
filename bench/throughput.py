"""Probes per second and CPU seconds per probe against a real Postfix on loopback, for the
exporter and for blackbox_exporter, in the same run against the same server.

    python bench/throughput.py [--duration 15] [--rounds 3] [--concurrency 16] [--profile]

Needs root, Postfix and Dovecot (``tests/servers/mailstack/`` starts them) and blackbox_exporter
(Debian: ``apt-get install prometheus-blackbox-exporter``; skipped with a note if missing).

What each prober does per probe, against Postfix's submission port (STARTTLS required, SASL
through Dovecot, a 2048-bit RSA certificate from the stack's test CA):

* exporter: connect, greeting, EHLO, STARTTLS, TLS handshake, certificate chain parsed and
  verified against the CA (``cryptography``), host name checked, EHLO, [AUTH PLAIN], NOOP,
  QUIT; every phase timed.
* blackbox_exporter, tcp prober with a ``query_response`` module doing the same dialogue:
  greeting, EHLO, STARTTLS, TLS handshake verified against the CA (Go crypto/tls), EHLO,
  [a fixed ``AUTH PLAIN <base64>`` line, expect 235], NOOP, QUIT. blackbox has no SMTP AUTH:
  the credentials are a literal in its config, no mechanism is negotiated and nothing but
  the reply code is checked; it is the closest like-for-like it can do.

Rows: the exporter's probe in a process of its own without HTTP (``bench/_probe_loop.py``,
``exporter.probe.run`` as the scheduler calls it); the real exporter in scheduled mode (one
target under 600 copies of a module, every 2 s; CPU / ``smtp_probes_total``); the real
exporter answering ``/probe`` (from its event loop);
blackbox_exporter answering ``/probe``. The ``/probe`` rows get the same driver:
``--concurrency`` keep-alive HTTP connections from this process, each asking for the next
probe as soon as the last one answered. CPU is the prober process's own (``/proc/PID/stat``
utime + stime over the timed window); Postfix + Dovecot's CPU is summed over their process
trees. Postfix limits one client to 50 simultaneous connections
(``smtpd_client_connection_count_limit``) and 100 smtpd processes (``default_process_limit``),
so ``--concurrency`` stays at or below 40.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import gzip
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import _common as c
import _profile

from tests.servers.mailstack import MailStack, mail_stack, postfix_available

BLACKBOX = ("prometheus-blackbox-exporter", "blackbox_exporter")
EHLO = "bench.example.com"
MAX_CONCURRENCY = 40
EXPORTER_OK = re.compile(rb"^smtp_probe_success\{[^}]*\} 1(?:\.0)?$", re.M)
BLACKBOX_OK = re.compile(rb"^probe_success 1$", re.M)
FAILED = re.compile(rb'^smtp_probe_failed_phase\{[^}]*phase="(\w+)",kind="(\w+)"\} 1', re.M)
PROBES_TOTAL = re.compile(rb"^smtp_probes_total\{[^}]*\} (\S+)$", re.M)
SCHEDULED_JOBS = 600
SCHEDULED_INTERVAL = 2.0  # 600 jobs every 2 s: 300 probes/s


@dataclass
class Row:
    name: str
    probes: int
    ok: int
    seconds: float
    cpu: float  # prober process CPU seconds over the window
    stack_cpu: float  # Postfix + Dovecot CPU seconds over the window
    busy: float  # machine-wide busy cores over the window
    failure: str | None = None
    sys_cpu: float = 0.0  # the kernel's part of ``cpu``

    @property
    def rate(self) -> float:
        return self.probes / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return self.cpu / self.probes * 1000 if self.probes else float("nan")

    @property
    def stack_ms(self) -> float:
        return self.stack_cpu / self.probes * 1000 if self.probes else float("nan")


# --- Postfix + Dovecot CPU -----------------------------------------------------------------


def stack_cpu(stack: MailStack) -> float:
    """CPU seconds of the Postfix and Dovecot masters and everything below them, including
    children already exited and reaped (their parents' cutime + cstime)."""
    roots = []
    for pidfile in ("postfix-spool/pid/master.pid", "dovecot/run/master.pid"):
        with contextlib.suppress(OSError, ValueError):
            roots.append(int((stack.workdir / pidfile).read_text().strip()))
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError):
                raw = Path(f"/proc/{entry}/stat").read_text()
                fields = raw[raw.rindex(")") + 2 :].split()
                stats[int(entry)] = fields
                children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo, seen = 0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        f = stats[pid]
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        todo.extend(children.get(pid, []))
    return total / c.TICKS


# --- the /probe driver ---------------------------------------------------------------------


def drive(
    port: int,
    path: str,
    ok: Callable[[bytes], object],
    concurrency: int,
    duration: float,
    headers: dict[str, str] | None = None,
) -> tuple[int, int, float, str | None]:
    """``concurrency`` threads, each with one keep-alive connection, GET ``path`` back to
    back until ``duration`` is over, with ``headers`` (none by default: no compression).
    Returns (answers, successes, seconds, first failure)."""
    end = time.monotonic() + duration
    lock = threading.Lock()
    counts = [0, 0]
    failures: list[str] = []

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while time.monotonic() < end:
                conn.request("GET", path, headers=headers or {})
                resp = conn.getresponse()
                body = resp.read()
                if resp.getheader("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                good = resp.status == 200 and bool(ok(body))
                with lock:
                    counts[0] += 1
                    counts[1] += good
                    if not good and not failures:
                        failures.append(f"HTTP {resp.status}: {body[:300]!r}")
        except (OSError, http.client.HTTPException) as exc:
            with lock:
                failures.append(f"driver: {exc!r}")
        finally:
            conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    return counts[0], counts[1], time.monotonic() - start, failures[0] if failures else None


@contextlib.contextmanager
def measured(stack: MailStack, pid: int) -> Iterator[dict[str, float]]:
    """CPU of ``pid``, of the mail stack and of the machine over the ``with`` block."""
    out: dict[str, float] = {}
    (u0, k0), st0, sys0 = c.proc_cpu_split(pid), stack_cpu(stack), c.SystemCPU.now()
    yield out
    u1, k1 = c.proc_cpu_split(pid)
    out.update(
        cpu=u1 + k1 - u0 - k0,
        sys_cpu=k1 - k0,
        stack=stack_cpu(stack) - st0,
        busy=c.SystemCPU.now().busy_cores_since(sys0),
    )


def probe_endpoint(
    name: str,
    stack: MailStack,
    pid: int,
    port: int,
    path: str,
    ok: Callable[[bytes], object],
    args: argparse.Namespace,
) -> Row:
    drive(port, path, ok, args.concurrency, 2.0)  # warm-up: processes, caches, TLS
    with measured(stack, pid) as m:
        probes, good, seconds, failure = drive(port, path, ok, args.concurrency, args.duration)
    return Row(name, probes, good, seconds, m["cpu"], m["stack"], m["busy"], failure, m["sys_cpu"])


# --- the three probers ---------------------------------------------------------------------


def exporter_config(stack: MailStack, work: Path) -> Path:
    password = work / "probe-password"
    password.write_text(stack.users["probe"] + "\n")
    password.chmod(0o600)
    common = f"tls: starttls, tls_ca_file: {stack.ca_file}, ehlo_name: {EHLO}, timeout: 10s"
    path = work / "exporter.yml"
    path.write_text(
        "modules:\n"
        f"  auth: {{{common}, auth: {{username: probe, password_file: {password}, "
        # A module with credentials probes through /probe only the hosts it allows.
        f"mechanism: PLAIN}}, probe_allow: {{hosts: ['{stack.host}']}}}}\n"
        f"  noauth: {{{common}}}\n"
    )
    return path


def blackbox_config(stack: MailStack, work: Path) -> Path:
    plain = base64.b64encode(f"\0probe\0{stack.users['probe']}".encode()).decode()

    def module(auth: bool) -> str:
        steps = [
            ("expect", "^220 "),
            ("send", f"EHLO {EHLO}\\r"),
            ("expect", "^250-STARTTLS"),
            ("expect", "^250 "),
            ("send", "STARTTLS\\r"),
            ("expect", "^220 "),
            ("starttls", None),
            ("send", f"EHLO {EHLO}\\r"),
            ("expect", "^250 "),
        ]
        if auth:
            steps += [("send", f"AUTH PLAIN {plain}\\r"), ("expect", "^235 ")]
        steps += [
            ("send", "NOOP\\r"),
            ("expect", "^250 "),
            ("send", "QUIT\\r"),
            ("expect", "^221 "),
        ]
        qr = "".join(
            "        - starttls: true\n" if v is None else f'        - {k}: "{v}"\n'
            for k, v in steps
        )
        return (
            "    prober: tcp\n    timeout: 10s\n    tcp:\n"
            "      preferred_ip_protocol: ip4\n      ip_protocol_fallback: false\n"
            f"      tls_config:\n        ca_file: {stack.ca_file}\n"
            f"      query_response:\n{qr}"
        )

    path = work / "blackbox.yml"
    path.write_text(f"modules:\n  auth:\n{module(True)}  noauth:\n{module(False)}")
    return path


def in_process(
    stack: MailStack,
    cfg: Path,
    module: str,
    args: argparse.Namespace,
    profile: Path | None = None,
) -> Row:
    """The probe loop in a child process; the stack's and the machine's CPU are read when it
    says its timed window starts and when it reports. With ``profile``, py-spy samples the
    child over its window instead (the row's figures are then not representative)."""
    target = f"{stack.host}:{stack.submission_port}"
    cmd = c.python(
        "_probe_loop.py",
        str(cfg),
        target,
        module,
        "--concurrency",
        str(args.concurrency),
        "--duration",
        str(args.duration),
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    spy: subprocess.Popen[str] | str | None = None
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        st0, sys0 = stack_cpu(stack), c.SystemCPU.now()
        if profile is not None:
            spy = _profile.start(proc.pid, args.duration - 1, profile)
        last = proc.stdout.readline()
        st1, sys1 = stack_cpu(stack), c.SystemCPU.now()
        proc.wait(args.duration + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if spy is not None:
        _report_profile("the probe loop (exporter.probe.run), " + module, spy, profile)
    if proc.returncode != 0 or "start" not in first or not last:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"probe loop failed ({proc.returncode}):\n{first}{last}{err[-2000:]}")
    r = json.loads(last)
    return Row(
        f"exporter, probe loop, {module}",
        r["probes"],
        r["ok"],
        r["seconds"],
        r["cpu"],
        st1 - st0,
        sys1.busy_cores_since(sys0),
        r["failure"],
        r["sys"],
    )


def scheduled(
    stack: MailStack, work: Path, args: argparse.Namespace, module: str, profile: bool = False
) -> Row:
    """The real exporter in scheduled mode against the same Postfix: one target under
    ``SCHEDULED_JOBS`` copies of a module (distinct jobs, since a job is target + module),
    every one at ``SCHEDULED_INTERVAL``. CPU per probe = the exporter's CPU over the window
    / probes completed (``smtp_probes_total``), scrapes outside the window."""
    target = f"{stack.host}:{stack.submission_port}"
    base = exporter_config(stack, work).read_text().splitlines()
    spec = next(line for line in base if line.startswith(f"  {module}:")).split(":", 1)[1]
    spec = spec.replace("timeout: 10s", f"timeout: {SCHEDULED_INTERVAL:g}s")
    lines = ["modules:"] + [f"  {module}{i}:{spec}" for i in range(SCHEDULED_JOBS)]
    lines += ["targets:"] + [
        f'  - {{target: "{target}", module: {module}{i}, interval: {SCHEDULED_INTERVAL:g}s}}'
        for i in range(SCHEDULED_JOBS)
    ]
    cfg = work / f"scheduled-{module}.yml"
    cfg.write_text("\n".join(lines) + "\n")
    port = c.free_port()
    cmd = c.exporter_command(cfg, port)
    url = f"http://127.0.0.1:{port}/metrics"

    reasons: collections.Counter[str] = collections.Counter()

    def completed() -> tuple[int, int]:
        _status, body, _ = c.http_get(url)
        totals = [float(v) for v in PROBES_TOTAL.findall(body)]
        ok = len(EXPORTER_OK.findall(body))
        reasons.clear()
        reasons.update(f"{p.decode()}: {k.decode()}" for p, k in FAILED.findall(body))
        return int(sum(totals)), ok

    with c.child(cmd, work / f"scheduled-{module}.log") as exp:
        c.wait_http(f"http://127.0.0.1:{port}/-/ready", 30, exp)
        time.sleep(SCHEDULED_INTERVAL + 1)  # every job has started its cycle
        n0, _ = completed()
        with measured(stack, exp.pid) as m:
            t0 = time.monotonic()
            time.sleep(args.duration)
            seconds = time.monotonic() - t0
        n1, ok = completed()
        if profile:
            out = work / f"scheduled-{module}.raw"
            spy = _profile.start(exp.pid, args.duration, out)
            _report_profile(f"the exporter in scheduled mode, {module}", spy, out)
    return Row(
        f"exporter scheduled, {module}",
        n1 - n0,
        round((n1 - n0) * ok / SCHEDULED_JOBS),  # share of jobs whose last probe passed
        seconds,
        m["cpu"],
        m["stack"],
        m["busy"],
        None
        if ok == SCHEDULED_JOBS
        else f"{SCHEDULED_JOBS - ok} jobs' last probe failed: "
        + ", ".join(f"{n} {why}" for why, n in reasons.most_common(3)),
        m["sys_cpu"],
    )


def _report_profile(what: str, spy: subprocess.Popen[str] | str, out: Path | None) -> None:
    assert out is not None
    error = _profile.finish(spy, out)
    print(f"\npy-spy profile of {what}:")
    print(error or _profile.summarise(out))


def pooled(rows: list[Row]) -> list[Row]:
    """One row per prober over all rounds (sums), keeping the first-seen order."""
    out: dict[str, Row] = {}
    for r in rows:
        p = out.get(r.name)
        if p is None:
            out[r.name] = Row(**{**r.__dict__})
            continue
        p.busy = (p.busy * p.seconds + r.busy * r.seconds) / (p.seconds + r.seconds)
        p.probes += r.probes
        p.ok += r.ok
        p.seconds += r.seconds
        p.cpu += r.cpu
        p.sys_cpu += r.sys_cpu
        p.stack_cpu += r.stack_cpu
        p.failure = p.failure or r.failure
    return list(out.values())


def run(args: argparse.Namespace) -> int:
    reason = postfix_available()
    if reason:
        print(f"cannot run: {reason}")
        return 2
    blackbox = next((b for b in map(shutil.which, BLACKBOX) if b), None)
    if blackbox is None:
        print("blackbox_exporter not installed: apt-get install prometheus-blackbox-exporter")
    work = Path(tempfile.mkdtemp(prefix="bench-tput-"))
    rows: list[Row] = []
    c.warn_if_busy()
    with contextlib.ExitStack() as stack_cm:
        stack = stack_cm.enter_context(mail_stack())
        target = f"{stack.host}:{stack.submission_port}"
        print(f"Postfix {target} (submission), work dir {work}", flush=True)
        ecfg = exporter_config(stack, work)
        eport = c.free_port()
        ecmd = c.exporter_command(ecfg, eport)
        exp = stack_cm.enter_context(c.child(ecmd, work / "exporter.log"))
        c.wait_http(f"http://127.0.0.1:{eport}/-/ready", 30, exp)
        bb = None
        if blackbox is not None:
            bcfg = blackbox_config(stack, work)
            bport = c.free_port()
            bcmd = [
                blackbox,
                f"--config.file={bcfg}",
                f"--web.listen-address=127.0.0.1:{bport}",
                "--log.level=warn",
            ]
            bb = stack_cm.enter_context(c.child(bcmd, work / "blackbox.log"))
            c.wait_http(f"http://127.0.0.1:{bport}/-/healthy", 30, bb)
        for rnd in range(1, args.rounds + 1):
            print(f"round {rnd} of {args.rounds}", flush=True)
            for module in ("auth", "noauth"):
                path = f"/probe?target={target}&module={module}"
                rows.append(in_process(stack, ecfg, module, args))
                print(_row_line(rows[-1]), flush=True)
                rows.append(scheduled(stack, work, args, module))
                print(_row_line(rows[-1]), flush=True)
                rows.append(
                    probe_endpoint(
                        f"exporter /probe, {module}",
                        stack,
                        exp.pid,
                        eport,
                        path,
                        EXPORTER_OK.search,
                        args,
                    )
                )
                print(_row_line(rows[-1]), flush=True)
                if bb is not None:
                    rows.append(
                        probe_endpoint(
                            f"blackbox /probe, {module}",
                            stack,
                            bb.pid,
                            bport,
                            path,
                            BLACKBOX_OK.search,
                            args,
                        )
                    )
                    print(_row_line(rows[-1]), flush=True)
        if args.profile:
            in_process(stack, ecfg, "auth", args, profile=work / "loop.raw")
            scheduled(stack, work, args, "auth", profile=True)
            path = f"/probe?target={target}&module=auth"
            spy = _profile.start(exp.pid, args.duration - 1, work / "probe.raw")
            drive(eport, path, EXPORTER_OK.search, args.concurrency, args.duration)
            _report_profile("the exporter answering /probe, auth", spy, work / "probe.raw")
    summary(pooled(rows), rows, args)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def summary(rows: list[Row], rounds: list[Row], args: argparse.Namespace) -> None:
    print(
        f"\n{args.rounds} round(s) of {args.duration:g}s per prober, {args.concurrency} in flight"
    )
    spread: dict[str, list[float]] = {}
    for r in rounds:
        spread.setdefault(r.name, []).append(r.cpu_ms)
    print(
        c.table(
            [
                "prober",
                "probes/s",
                "ok %",
                "CPU ms/probe",
                "(min-max)",
                "kernel %",
                "prober cores",
                "Postfix+Dovecot ms/probe",
                "machine busy cores",
            ],
            [
                [
                    r.name,
                    r.rate,
                    100 * r.ok / max(r.probes, 1),
                    r.cpu_ms,
                    f"{min(spread[r.name]):.2f}-{max(spread[r.name]):.2f}",
                    100 * r.sys_cpu / r.cpu if r.cpu else float("nan"),
                    r.cpu / r.seconds,
                    r.stack_ms,
                    r.busy,
                ]
                for r in rows
            ],
        )
    )
    for r in rows:
        if r.failure:
            print(f"  {r.name}: first failure: {r.failure}")
    by = {r.name: r for r in rows}
    print("\nCPU per probe, exporter / blackbox_exporter (target: <= 1.5):")
    for ours, theirs in (
        ("exporter /probe, auth", "blackbox /probe, auth"),
        ("exporter /probe, noauth", "blackbox /probe, noauth"),
        ("exporter scheduled, auth", "blackbox /probe, auth"),
        ("exporter scheduled, noauth", "blackbox /probe, noauth"),
        ("exporter, probe loop, auth", "blackbox /probe, auth"),
        ("exporter, probe loop, noauth", "blackbox /probe, noauth"),
    ):
        if ours in by and theirs in by:
            ratio = by[ours].cpu_ms / by[theirs].cpu_ms
            verdict = "PASS" if ratio <= 1.5 else "FAIL"
            print(f"  {ours:38} vs {theirs:24} {ratio:5.2f}x  {verdict}")
    print("probes/s, exporter / blackbox_exporter:")
    for ours, theirs in (
        ("exporter /probe, auth", "blackbox /probe, auth"),
        ("exporter, probe loop, auth", "blackbox /probe, auth"),
    ):
        if ours in by and theirs in by:
            print(f"  {ours:30} vs {theirs:26} {by[ours].rate / by[theirs].rate:5.2f}x")


def _row_line(r: Row) -> str:
    return (
        f"  {r.name}: {r.rate:.1f} probes/s, {r.cpu_ms:.2f} ms CPU/probe, "
        f"ok {r.ok}/{r.probes}" + (f", first failure: {r.failure}" if r.failure else "")
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=15.0, help="seconds per row (default 15)")
    p.add_argument("--concurrency", type=int, default=16, help="probes in flight (default 16)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every row (default 3)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="then py-spy the probe loop, scheduled mode and /probe (auth)",
    )
    args = p.parse_args(argv)
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise SystemExit(
            f"--concurrency must be 1..{MAX_CONCURRENCY} (Postfix's per-client limits)"
        )
    if not 1 <= args.duration <= 600:
        raise SystemExit("--duration must be 1..600 s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
