"""Scheduled mode at scale: N targets at one interval, a share of them tarpits; how late do
probes start, and does any healthy target miss an interval?

    python bench/scheduler_lag.py [--targets 10000] [--interval 60] [--duration 300]
                                  [--tarpit-share 0.1] [--tls none|starttls] [--profile 30]

Quick run: ``--targets 2000 --interval 20 --duration 60``.

Three processes: the real exporter (``bench/_exporter_proc.py``: ``exporter.app.Exporter``
with APScheduler, its semaphores and the HTTP server), a fast SMTP responder + tarpit
(``bench/_fastsmtp.py``) listening on one loopback address per target (127.20.x.y healthy,
127.21.x.y tarpits: distinct target names across 127.0.0.0/8), and this script, which
scrapes /metrics every ``--scrape-every`` seconds as Prometheus would.

Lag of a probe = when it really started (after any wait for a concurrency slot) minus when
APScheduler meant it to run. A healthy target *missed an interval* when two of its
consecutive probes started more than 1.5 intervals apart, or it completed fewer probes than
its schedule had slots in the run (slots ending 2 s before the stop).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import _common as c
import _profile

from exporter.config import Module, Target
from exporter.embedded import make_certificates
from exporter.scheduler import offset_fraction

PROBE_LINE = re.compile(rb'^smtp_probes_total\{target="([^"]+)"[^}]*\} (\S+)$', re.M)
HIST_LINE = re.compile(rb'^smtp_exporter_scheduler_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M)
RENDER_SUM = re.compile(rb"^smtp_exporter_metrics_render_seconds_(sum|count) (\S+)$", re.M)
SKIPPED = re.compile(rb'^smtp_exporter_scheduler_skipped_runs_total\{reason="(\w+)"\} (\S+)$', re.M)


def address(block: int, i: int) -> str:
    """The i-th address of a /16 block in 127.0.0.0/8 (skipping .0 and .255)."""
    return f"127.{block}.{i // 254}.{i % 254 + 1}"


def write_config(
    path: Path,
    healthy: list[str],
    tarpits: list[str],
    args: argparse.Namespace,
    ca_file: Path | None,
) -> None:
    tls = "tls: none"
    if args.tls == "starttls":
        tls = f"tls: starttls, tls_ca_file: {ca_file}, tls_server_name: localhost"
    lines = [
        "defaults:",
        f"  interval: {args.interval:g}s",
        "modules:",
        f"  smtp: {{{tls}, timeout: {args.timeout:g}s}}",
        "targets:",
    ]
    lines += [f'  - {{target: "{t}", module: smtp}}' for t in healthy + tarpits]
    path.write_text("\n".join(lines) + "\n")


def run(args: argparse.Namespace) -> int:
    n_tarpit = round(args.targets * args.tarpit_share)
    n_healthy = args.targets - n_tarpit
    if n_healthy > 254 * 256 or n_tarpit > 254 * 256:
        raise SystemExit("at most 65,024 targets of each kind")
    work = Path(tempfile.mkdtemp(prefix="bench-lag-"))
    port = c.free_port()
    healthy = [f"{address(20, i)}:{port}" for i in range(n_healthy)]
    tarpits = [f"{address(21, i)}:{port}" for i in range(n_tarpit)]
    spec: dict[str, object] = {
        "listeners": [[t.rsplit(":", 1)[0], port, "smtp"] for t in healthy]
        + [[t.rsplit(":", 1)[0], port, "tarpit"] for t in tarpits],
        "max_seconds": args.duration + 300,
    }
    ca_file = None
    if args.tls == "starttls":
        certs = make_certificates(work / "certs")
        spec.update(cert=str(certs.cert_file), key=str(certs.key_file))
        ca_file = certs.ca_file
    (work / "spec.json").write_text(json.dumps(spec))
    cfg = work / "config.yml"
    write_config(cfg, healthy, tarpits, args, ca_file)
    http_port = c.free_port()
    record = work / "record.json"
    exp_args = [str(cfg), str(http_port), str(record)]
    if args.concurrency:
        exp_args += ["--concurrency", str(args.concurrency)]
    print(
        f"{args.targets} targets ({n_healthy} healthy, {n_tarpit} tarpits), interval "
        f"{args.interval:g}s, module timeout {args.timeout:g}s, tls {args.tls}, "
        f"run {args.duration:g}s; work dir {work}",
        flush=True,
    )
    c.warn_if_busy()
    scrapes: list[tuple[float, float, int]] = []  # (start time, seconds, bytes)
    with c.child(c.python("_fastsmtp.py", str(work / "spec.json")), work / "fastsmtp.log") as srv:
        c.wait_line(work / "fastsmtp.log", "ready", 120, srv)
        with c.child(
            c.python("_exporter_proc.py", *exp_args), work / "exporter.log", stop_timeout=30
        ) as exp:
            ready = c.wait_line(work / "exporter.log", "ready", 120, exp)
            t_ready = time.time()
            print(f"exporter {ready.strip()} (pid {exp.pid}), servers pid {srv.pid}", flush=True)
            cpu0, srv_cpu0, sys0 = c.proc_cpu(exp.pid), c.proc_cpu(srv.pid), c.SystemCPU.now()
            profile_at = t_ready + max(args.interval, args.duration - args.profile - 5)
            spy: subprocess.Popen[str] | str | None = None
            end = t_ready + args.duration
            next_scrape = t_ready + args.scrape_every
            while time.time() < end:
                if args.profile and spy is None and time.time() >= profile_at:
                    print(f"profiling the exporter for {args.profile}s with py-spy", flush=True)
                    spy = _profile.start(exp.pid, args.profile, work / "profile.raw")
                wake = min(next_scrape, end)
                if args.profile and spy is None:
                    wake = min(wake, profile_at)
                time.sleep(max(0.0, wake - time.time()))
                if time.time() >= next_scrape:
                    next_scrape += args.scrape_every
                    at = time.time()
                    status, body, secs = c.http_get(
                        f"http://127.0.0.1:{http_port}/metrics", 60, gzip=args.gzip
                    )
                    if status == 200:
                        scrapes.append((at, secs, len(body)))
            cpu1, srv_cpu1, sys1 = c.proc_cpu(exp.pid), c.proc_cpu(srv.pid), c.SystemCPU.now()
            rss, hwm = c.proc_status(exp.pid, "VmRSS"), c.proc_status(exp.pid, "VmHWM")
            t_stop = time.time()
            status, last_body, _ = c.http_get(f"http://127.0.0.1:{http_port}/metrics", 60)
        if exp.returncode not in (0, -15):
            print(f"exporter exited with {exp.returncode}; see {work / 'exporter.log'}")
    data = json.loads(record.read_text())
    busy = (sys1.busy_cores_since(sys0), (cpu1 - cpu0) / (t_stop - t_ready))
    report(args, data, set(healthy), t_stop, scrapes, last_body, busy, (srv_cpu1 - srv_cpu0))
    print(f"exporter RSS at the end {c.mib(rss)} (peak {c.mib(hwm)})")
    profiled = None if spy is None else _profile.finish(spy, work / "profile.raw")
    if spy is not None:
        if profiled:
            print(f"profile: {profiled}")
        else:
            print(f"\npy-spy profile of the exporter ({args.profile}s, raw: {work}/profile.raw)")
            print(_profile.summarise(work / "profile.raw"))
    return 0


def report(
    args: argparse.Namespace,
    data: dict[str, object],
    healthy: set[str],
    t_stop: float,
    scrapes: list[tuple[float, float, int]],
    metrics: bytes,
    busy: tuple[float, float],
    server_cpu: float,
) -> None:
    interval = args.interval
    probes = data["probes"]
    assert isinstance(probes, list)
    starts: dict[str, list[float]] = defaultdict(list)
    lag_ok: list[float] = []
    lag_tarpit: list[float] = []
    lag_scraping: list[float] = []  # healthy probes due while /metrics was being answered
    windows = sorted((at, at + secs) for at, secs, _ in scrapes)
    first_sched: dict[str, float] = {}
    for name, scheduled, started, _duration in probes:
        starts[name].append(started)
        if scheduled is not None:
            (lag_ok if name in healthy else lag_tarpit).append(started - scheduled)
            if name in healthy and any(a <= scheduled <= b for a, b in windows):
                lag_scraping.append(started - scheduled)
            first_sched[name] = min(first_sched.get(name, scheduled), scheduled)
    # Every scheduled time is apply_time + offset * interval + k * interval.
    module = Module("smtp", ehlo_name="bench")  # offsets depend on the names only

    def offset(name: str) -> float:
        host, port = name.rsplit(":", 1)
        return offset_fraction(Target(name, host, int(port), module)) * interval

    applied = min(first_sched[n] - offset(n) for n in first_sched) if first_sched else 0.0
    missed: list[str] = []
    for name in healthy:
        slots = int((t_stop - 2 - (applied + offset(name))) // interval) + 1
        got = sorted(starts.get(name, []))
        gaps = [b - a for a, b in itertools.pairwise(got)]
        if len(got) < slots or any(g > 1.5 * interval for g in gaps):
            missed.append(name)
    n_ok = sum(1 for p in probes if p[0] in healthy)
    n_tp = len(probes) - n_ok
    elapsed = t_stop - float(data["started"])  # type: ignore[arg-type]
    hist = {float(le): float(v) for le, v in HIST_LINE.findall(metrics)}
    skipped = {k.decode(): float(v) for k, v in SKIPPED.findall(metrics)}
    render = {k.decode(): float(v) for k, v in RENDER_SUM.findall(metrics)}
    totals = {t.decode(): float(v) for t, v in PROBE_LINE.findall(metrics)}
    counted_ok = sum(v for t, v in totals.items() if t in healthy)

    print()
    print(
        c.table(
            ["figure", "value"],
            [
                ["targets (healthy + tarpit)", f"{len(healthy)} + {args.targets - len(healthy)}"],
                ["run (s), intervals", f"{elapsed:.0f}, {elapsed / interval:.1f}"],
                ["probes completed healthy / tarpit", f"{n_ok} / {n_tp}"],
                ["probes/s (all)", f"{len(probes) / elapsed:.1f}"],
                ["healthy lag p50 / p99 / max (s)", _lags(lag_ok)],
                ["tarpit lag p50 / p99 / max (s)", _lags(lag_tarpit)],
                [
                    f"healthy lag, the {len(lag_scraping)} due during a scrape",
                    _lags(lag_scraping),
                ],
                ["healthy targets that missed an interval", f"{len(missed)} of {len(healthy)}"],
                ["healthy probes per /metrics vs record", f"{counted_ok:.0f} vs {n_ok}"],
                [
                    "exporter lag histogram p50 / p99 (bucket bound)",
                    f"{_hist_q(hist, 0.5)} / {_hist_q(hist, 0.99)}",
                ],
                [
                    "skipped runs missed / still_running",
                    f"{skipped.get('missed', 0):.0f} / {skipped.get('still_running', 0):.0f}",
                ],
                ["exporter CPU (cores)", f"{busy[1]:.2f}"],
                ["responder CPU (cores)", f"{server_cpu / elapsed:.2f}"],
                ["machine busy (cores of 2)", f"{busy[0]:.2f}"],
                [
                    "/metrics scrape p50 / max (s), size sent",
                    f"{c.percentile([s[1] for s in scrapes], 50):.3f} / "
                    f"{max((s[1] for s in scrapes), default=float('nan')):.3f}, "
                    f"{(scrapes[-1][2] if scrapes else 0) / 1e6:.1f} MB",
                ],
                [
                    "render (exporter's own histogram) mean (s)",
                    f"{render.get('sum', 0) / max(render.get('count', 0), 1):.3f}",
                ],
            ],
        )
    )
    verdict = "PASS" if lag_ok and c.percentile(lag_ok, 99) < 1 and not missed else "FAIL"
    print(f"\ntarget: healthy lag p99 < 1 s and no healthy target missing an interval: {verdict}")
    if missed:
        print(f"missed (first 5): {', '.join(sorted(missed)[:5])}")


def _lags(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{c.percentile(values, 50):.3f} / {c.percentile(values, 99):.3f} / {max(values):.3f}"


def _hist_q(hist: dict[float, float], q: float) -> str:
    """The bucket bound under which a share q of observations fall (Prometheus's view)."""
    if not hist:
        return "-"
    total = hist.get(float("inf"), max(hist.values()))
    for le in sorted(hist):
        if total and hist[le] >= q * total:
            return f"<= {le:g}"
    return "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", type=int, default=10_000)
    p.add_argument("--interval", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    p.add_argument("--tarpit-share", type=float, default=0.10)
    p.add_argument("--timeout", type=float, default=10.0, help="module timeout (default 10 s)")
    p.add_argument("--tls", choices=("none", "starttls"), default="none")
    p.add_argument("--scrape-every", type=float, default=15.0)
    p.add_argument(
        "--no-gzip",
        dest="gzip",
        action="store_false",
        help="scrape without Accept-Encoding: gzip (Prometheus sends it)",
    )
    p.add_argument("--concurrency", type=int, default=None, help="--probe.concurrency")
    p.add_argument(
        "--profile", type=int, default=0, help="py-spy the exporter for this many seconds"
    )
    args = p.parse_args(argv)
    if args.duration > 1800:
        raise SystemExit("--duration is capped at 1800 s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
