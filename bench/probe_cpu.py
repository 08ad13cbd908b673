"""CPU per ``/probe``: the exporter against blackbox_exporter, driven identically, rounds
interleaved.

    python bench/probe_cpu.py [--rounds 10] [--duration 6] [--concurrency 16]
                              [--module noauth|auth|imap] [--gzip] [--baseline-tree DIR]
                              [--profile N] [--cpu-profile N]

Both exporters run side by side for the whole run against the same Postfix submission port
(``tests/servers/mailstack.py``: STARTTLS, 2048-bit RSA certificate from the stack's CA).
One driver, this process, asks each in turn for ``--duration`` seconds with the same
``--concurrency`` keep-alive HTTP/1.1 connections, each sending the next
``GET /probe?target=127.0.0.1:PORT&module=M`` as soon as the last answer is read: the same
request line to both, the driver's own CPU counted for neither. Rounds alternate the order
(A B, B A, A B, ...), so a drift in the machine's load weighs on both sides alike, and each
round yields a ratio of its own: the spread of those ratios is how stable the figure is.

CPU is each exporter process's utime + stime (``/proc/PID/stat``, all threads) over its own
window, divided by the answers completed in it; a probe that fails counts too and is shown.

The dialogue is the same on both sides, and the script checks it rather than trusting the
configs: Postfix logs, per connection, the commands it received (``disconnect from ...
ehlo=2 starttls=1 noop=1 quit=1 commands=5``); the summaries logged during each side's
windows are tallied and printed. Module ``noauth``: greeting, EHLO, STARTTLS, TLS handshake
(the chain verified against the stack's CA, the host name checked), EHLO, NOOP, QUIT.
Module ``auth`` adds AUTH PLAIN (blackbox: a literal line, see ``throughput.py``).
Module ``imap`` probes the stack's Dovecot IMAP port instead (issue #18): greeting (its
capabilities), STARTTLS, TLS handshake (verified, host name checked), CAPABILITY, LOGIN,
EXAMINE INBOX, NOOP, LOGOUT; blackbox_exporter's tcp prober does the same dialogue with
``query_response``. The check of the dialogue is then Dovecot's log: per session, the
bytes it received and sent (``Logged out in=... out=...``).

Requests carry no Accept-Encoding (no compression on either side) unless ``--gzip``, which
asks both for gzip as Prometheus does. ``--baseline-tree DIR`` adds a third side: the same
exporter command and config run from another checkout (``git worktree add DIR COMMIT`` or
``git archive COMMIT | tar -x -C DIR``), in the same rotation, so a change is measured
against its parent under the same load as against blackbox_exporter.

Profiles, after the rounds: ``--cpu-profile N`` starts one more exporter under
``bench/_cpu_profiled.py``, which samples the Python stack every 2 ms of the process's CPU
time (SIGPROF), drives it N seconds and prints the frames that used the CPU; ``--profile N``
runs py-spy on the measured exporter instead (wall-clock samples: on a loaded machine it
charges the time spent waiting for a core to the call that was running, loopback writes
above all).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import _common as c
import _profile
from throughput import (
    BLACKBOX,
    BLACKBOX_OK,
    EXPORTER_OK,
    MAX_CONCURRENCY,
    blackbox_config,
    drive,
    exporter_config,
    stack_cpu,
)

from tests.servers.mailstack import MailStack, mail_stack, postfix_available

DISCONNECT = re.compile(r"submission/smtpd\[\d+\]: disconnect from \S+ (.*)$")
LOGGED_OUT = re.compile(
    r"imap\(probe\)<[^>]*><[^>]*>: (?:Info: )?(?:Disconnected: )?(Logged out in=\d+ out=\d+)"
)
IMAP_OK = re.compile(rb"^(?:smtp|imap)_probe_success\{[^}]*\} 1(?:\.0)?$", re.M)


@dataclass
class Window:
    round: int
    side: str
    probes: int
    ok: int
    seconds: float
    cpu: float
    sys_cpu: float
    stack_cpu: float
    failure: str | None

    @property
    def ms(self) -> float:
        return self.cpu / self.probes * 1000 if self.probes else float("nan")


class PostfixLog:
    """The per-connection command summaries Postfix logged since the last ``take`` (with
    ``imap``: Dovecot's per-session byte counts)."""

    def __init__(self, stack: MailStack, imap: bool = False) -> None:
        self.path = stack.workdir / "logs" / ("dovecot.log" if imap else "postfix.log")
        self.pattern = LOGGED_OUT if imap else DISCONNECT
        self.pos = self._size()

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def take(self) -> collections.Counter[str]:
        # postlogd writes asynchronously: give it a moment to catch up with the window.
        time.sleep(0.3)
        out: collections.Counter[str] = collections.Counter()
        with contextlib.suppress(OSError), self.path.open("rb") as fh:
            fh.seek(self.pos)
            data = fh.read()
            self.pos += len(data)
        for line in data.decode(errors="replace").splitlines():
            m = self.pattern.search(line)
            if m:
                out[m.group(1)] += 1
        return out


def window(
    rnd: int,
    side: str,
    stack: MailStack,
    pid: int,
    port: int,
    path: str,
    ok: object,
    args: argparse.Namespace,
) -> Window:
    u0, k0 = c.proc_cpu_split(pid)
    st0 = stack_cpu(stack)
    probes, good, seconds, failure = drive(
        port, path, ok, args.concurrency, args.duration, args.headers
    )  # type: ignore[arg-type]
    u1, k1 = c.proc_cpu_split(pid)
    return Window(
        rnd,
        side,
        probes,
        good,
        seconds,
        u1 + k1 - u0 - k0,
        k1 - k0,
        stack_cpu(stack) - st0,
        failure,
    )


def run(args: argparse.Namespace) -> int:
    reason = postfix_available()
    if reason:
        print(f"cannot run: {reason}")
        return 2
    blackbox = next((b for b in map(shutil.which, BLACKBOX) if b), None)
    if blackbox is None:
        print("blackbox_exporter not installed: apt-get install prometheus-blackbox-exporter")
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-probecpu-"))
    c.warn_if_busy()
    windows: list[Window] = []
    dialogues: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    with contextlib.ExitStack() as cm:
        stack = cm.enter_context(mail_stack())
        imap = args.module == "imap"
        port = stack.imap_port if imap else stack.submission_port
        target = f"{stack.host}:{port}"
        path = f"/probe?target={target}&module={args.module}"
        ecfg = exporter_config(stack, work)
        bcfg = blackbox_config(stack, work)
        if imap:
            add_imap_modules(stack, ecfg, bcfg, work)
        eport, bport = c.free_port(), c.free_port()
        exp = cm.enter_context(c.child(c.exporter_command(ecfg, eport), work / "exp.log"))
        bcmd = [
            blackbox,
            f"--config.file={bcfg}",
            f"--web.listen-address=127.0.0.1:{bport}",
            "--log.level=warn",
        ]
        bb = cm.enter_context(c.child(bcmd, work / "blackbox.log"))
        c.wait_http(f"http://127.0.0.1:{eport}/-/ready", 30, exp)
        c.wait_http(f"http://127.0.0.1:{bport}/-/healthy", 30, bb)
        sides = {
            "exporter": (exp.pid, eport, (IMAP_OK if imap else EXPORTER_OK).search),
            "blackbox": (bb.pid, bport, BLACKBOX_OK.search),
        }
        if args.baseline_tree:
            # The same exporter command from another checkout (its code, this config).
            env = {**os.environ, "PYTHONPATH": str(args.baseline_tree)}
            base_port = c.free_port()
            base = cm.enter_context(
                c.child(
                    c.exporter_command(ecfg, base_port),
                    work / "baseline.log",
                    env=env,
                    cwd=args.baseline_tree,
                )
            )
            c.wait_http(f"http://127.0.0.1:{base_port}/-/ready", 30, base)
            sides["baseline"] = (base.pid, base_port, sides["exporter"][2])
        server = "Dovecot" if imap else "Postfix"
        print(f"{server} {target}, {path}, work dir {work}", flush=True)
        for _pid, port, ok in sides.values():  # warm-up: caches, Go's GC, pools
            drive(port, path, ok, args.concurrency, 2.0, args.headers)
        log = PostfixLog(stack, imap)
        names = list(sides)
        for rnd in range(args.rounds):
            # Rotate the order, so each side goes first, second, ... as often as the others.
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            if rnd // len(names) % 2:
                order.reverse()
            ms = {}
            for name in order:
                pid, port, ok = sides[name]
                log.take()
                w = window(rnd, name, stack, pid, port, path, ok, args)
                dialogues[name].update(log.take())
                windows.append(w)
                ms[name] = w
            print(
                f"round {rnd + 1}: "
                + ", ".join(
                    f"{n} {ms[n].ms:.2f} ms ({ms[n].probes / ms[n].seconds:.0f}/s)" for n in order
                )
                + "; ratio "
                + ", ".join(
                    f"{n} {ms[n].ms / ms['blackbox'].ms:.3f}" for n in order if n != "blackbox"
                ),
                flush=True,
            )
        if args.profile:
            out = work / "probe.raw"
            pid, port, ok = sides["exporter"]
            spy = _profile.start(pid, args.profile, out)
            drive(port, path, ok, args.concurrency, args.profile + 1, args.headers)
            error = _profile.finish(spy, out)
            print(f"\npy-spy profile of the exporter answering {path}:")
            print(error or _profile.summarise(out, top=args.top))
        if args.cpu_profile:
            cpu_profile(ecfg, path, work, args)
    summary(windows, dialogues, args)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def add_imap_modules(stack: MailStack, ecfg: Path, bcfg: Path, work: Path) -> None:
    """Module ``imap`` on both sides: the same IMAP dialogue (see the module docstring)."""
    password = work / "probe-password"  # written by exporter_config
    with ecfg.open("a") as fh:
        fh.write(
            f"  imap: {{protocol: imap, tls: starttls, tls_ca_file: {stack.ca_file}, "
            f"timeout: 10s, auth: {{username: probe, password_file: {password}, "
            f"mechanism: LOGIN}}, probe_allow: {{hosts: ['{stack.host}']}}}}\n"
        )
    steps = [
        ("expect", "^\\\\* OK \\\\[CAPABILITY .* STARTTLS"),
        ("send", "A1 STARTTLS\\r"),
        ("expect", "^A1 OK "),
        ("starttls", None),
        ("send", "A2 CAPABILITY\\r"),
        ("expect", "^A2 OK "),
        ("send", f"A3 LOGIN probe {stack.users['probe']}\\r"),
        ("expect", "^A3 OK "),
        ("send", "A4 EXAMINE INBOX\\r"),
        ("expect", "^A4 OK "),
        ("send", "A5 NOOP\\r"),
        ("expect", "^A5 OK "),
        ("send", "A6 LOGOUT\\r"),
        ("expect", "^A6 OK "),
    ]
    qr = "".join(
        "        - starttls: true\n" if v is None else f'        - {k}: "{v}"\n' for k, v in steps
    )
    with bcfg.open("a") as fh:
        fh.write(
            "  imap:\n    prober: tcp\n    timeout: 10s\n    tcp:\n"
            "      preferred_ip_protocol: ip4\n      ip_protocol_fallback: false\n"
            f"      tls_config:\n        ca_file: {stack.ca_file}\n"
            f"      query_response:\n{qr}"
        )


def cpu_profile(cfg: Path, path: str, work: Path, args: argparse.Namespace) -> None:
    """A second exporter under ``_cpu_profiled.py`` (samples by CPU time), driven like the
    first for ``--cpu-profile`` seconds after a warm-up; prints where its CPU went. The
    profile covers start-up and warm-up too, which the probes dwarf."""
    port = c.free_port()
    out = work / "exporter.profile"
    cmd = c.python("_cpu_profiled.py", *c.exporter_command(cfg, port)[3:])
    env = {**os.environ, "CPU_PROFILE_OUT": str(out), "CPU_PROFILE_MODE": "sample"}
    with c.child(cmd, work / "cpu-profiled.log", stop_timeout=60, env=env) as proc:
        c.wait_http(f"http://127.0.0.1:{port}/-/ready", 60, proc)
        drive(port, path, EXPORTER_OK.search, args.concurrency, 2.0, args.headers)
        drive(port, path, EXPORTER_OK.search, args.concurrency, args.cpu_profile, args.headers)
    print(f"\nCPU-time samples (SIGPROF) of the exporter answering {path}:")
    print(_profile.summarise(out, top=args.top) if out.exists() else "(no profile written)")
    if args.profile_out and out.exists():
        shutil.copy(out, args.profile_out)  # collapsed stacks, for flame graphs and grep


def summary(
    windows: list[Window], dialogues: dict[str, collections.Counter[str]], args: argparse.Namespace
) -> None:
    rows = []
    sides = list(dict.fromkeys(w.side for w in windows))
    for side in sides:
        ws = [w for w in windows if w.side == side]
        probes = sum(w.probes for w in ws)
        cpu = sum(w.cpu for w in ws)
        rows.append(
            [
                side,
                probes / sum(w.seconds for w in ws),
                100 * sum(w.ok for w in ws) / max(probes, 1),
                cpu / probes * 1000,
                f"{min(w.ms for w in ws):.2f}-{max(w.ms for w in ws):.2f}",
                100 * sum(w.sys_cpu for w in ws) / cpu,
                sum(w.stack_cpu for w in ws) / probes * 1000,
            ]
        )
        for w in ws:
            if w.failure:
                print(f"  {side}: first failure: {w.failure}")
                break
    print(
        f"\n{args.rounds} interleaved rounds of {args.duration:g}s per side, "
        f"{args.concurrency} in flight, module {args.module}"
    )
    print(
        c.table(
            [
                "prober",
                "probes/s",
                "ok %",
                "CPU ms/probe",
                "(rounds min-max)",
                "kernel %",
                "Postfix ms/probe",
            ],
            rows,
        )
    )
    by = {r[0]: r for r in rows}
    for side in sides:
        if side == "blackbox":
            continue
        ratios = []
        for rnd in range(args.rounds):
            pair = {w.side: w for w in windows if w.round == rnd}
            ratios.append(pair[side].ms / pair["blackbox"].ms)
        print(
            f"\nCPU per probe, {side} / blackbox_exporter: pooled "
            f"{by[side][3] / by['blackbox'][3]:.3f}x; per round median "
            f"{statistics.median(ratios):.3f}x, min {min(ratios):.3f}x, max {max(ratios):.3f}x"
            + (f", stdev {statistics.stdev(ratios):.3f}" if len(ratios) > 1 else "")
            + f"; rounds at or below 1.0x: {sum(r <= 1.0 for r in ratios)} of {len(ratios)}"
        )
        print(f"probes/s, {side} / blackbox_exporter: {by[side][1] / by['blackbox'][1]:.3f}x")
    if "baseline" in by:
        ratios = []
        for rnd in range(args.rounds):
            pair = {w.side: w for w in windows if w.round == rnd}
            ratios.append(pair["exporter"].ms / pair["baseline"].ms)
        print(
            f"\nCPU per probe, exporter / baseline: pooled "
            f"{by['exporter'][3] / by['baseline'][3]:.3f}x; per round median "
            f"{statistics.median(ratios):.3f}x, min {min(ratios):.3f}x, max {max(ratios):.3f}x"
        )
    server = "Dovecot" if args.module == "imap" else "Postfix"
    print(f"\nWhat {server} logged per connection, during each side's windows:")
    for side, counts in dialogues.items():
        for summary_line, n in counts.most_common(4):
            print(f"  {side:9} {n:7d}  {summary_line}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    p.add_argument("--duration", type=float, default=6.0, help="seconds per side per round")
    p.add_argument("--concurrency", type=int, default=16, help="probes in flight (default 16)")
    p.add_argument("--module", choices=("noauth", "auth", "imap"), default="noauth")
    p.add_argument(
        "--profile", type=float, default=0, help="then py-spy the exporter for N seconds"
    )
    p.add_argument(
        "--cpu-profile",
        type=float,
        default=0,
        help="then sample a second exporter by its CPU time for N seconds",
    )
    p.add_argument(
        "--baseline-tree",
        type=Path,
        help="also run the exporter from this checkout (another commit), as a third side",
    )
    p.add_argument("--profile-out", type=Path, help="keep --cpu-profile's raw stacks here")
    p.add_argument("--top", type=int, default=25, help="frames shown by the profiles")
    p.add_argument(
        "--gzip",
        action="store_true",
        help="send Accept-Encoding: gzip, as Prometheus does (both exporters then compress)",
    )
    args = p.parse_args(argv)
    args.headers = {"Accept-Encoding": "gzip"} if args.gzip else None
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise SystemExit(f"--concurrency must be 1..{MAX_CONCURRENCY}")
    if not 1 <= args.duration <= 120 or not 1 <= args.rounds <= 100:
        raise SystemExit("--duration must be 1..120 s and --rounds 1..100")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
