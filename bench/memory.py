"""Resident memory of the exporter at N targets.

    python bench/memory.py [N ...]          (default: 1000 10000)
    python bench/memory.py --breakdown-only [N ...]

Two measurements per N:

* **real**: the real exporter (``python -m exporter``) scheduling N STARTTLS + AUTH targets
  against ``bench/_fastsmtp.py`` (``bench/_fleet.py``), once every target has a result and
  /metrics has been scraped (so the per-target render cache is full): VmRSS, and VmHWM (the
  peak, which includes building a scrape). Measured again after one more interval, when
  every result has been replaced once. A fleet of 0 targets gives the baseline.
* **breakdown**: a fresh process that loads the same config, schedules it (APScheduler
  paused), fills the store with N complete synthetic results, then its ring of recent
  results (``store.RECENT`` more each, a tenth failing), and renders one scrape: RSS
  after each step, so each part's share is known — once with the exporter's YAML loader
  (libyaml's ``CSafeLoader``) and once with PyYAML's pure-Python ``SafeLoader``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as c
import _fleet

TARGET_BYTES = 300 * 10**6  # "RSS under 300 MB at 10,000 targets"


def breakdown(n: int, loader: str) -> dict[str, int]:
    """Run in a fresh child: RSS after each step of what the exporter holds for n targets,
    the same config as the real run (``_fleet.write_config``), results synthetic but
    complete. ``loader``: "c" = the exporter's libyaml ``CSafeLoader``; "python" = PyYAML's
    pure-Python ``SafeLoader`` instead (what the exporter used before)."""
    import asyncio
    import dataclasses
    import gc
    import random

    import yaml
    from render import fake_result, gzip_scrape

    from exporter import config
    from exporter.metrics import Renderer
    from exporter.results import Failure, FailureKind, Phase
    from exporter.scheduler import ProbeScheduler
    from exporter.selfmetrics import ExporterMetrics
    from exporter.store import RECENT, ResultStore

    pid = os.getpid()
    out = {"imports": c.proc_status(pid, "VmRSS")}
    work = Path(tempfile.mkdtemp(prefix="bench-mem-b-"))
    (work / "ca.pem").write_text("")
    (work / "password").write_text("probe-pass\n")
    path = work / "config.yml"
    _fleet.write_config(path, _fleet.hosts_for(n), 2525, 67, work / "ca.pem", work / "password")
    if loader == "python":
        config._YAML_LOADER = yaml.SafeLoader
    cfg = config.load(path)
    gc.collect()
    out["config"] = c.proc_status(pid, "VmRSS")
    store, own = ResultStore(), ExporterMetrics()

    async def schedule() -> None:
        sched = ProbeScheduler(store, own)
        sched.apply(cfg)
        sched._scheduler.start(paused=True)  # jobs in the job store, none run
        await asyncio.sleep(0.1)
        gc.collect()
        out["scheduler"] = c.proc_status(pid, "VmRSS")
        rng = random.Random(1)
        for t in cfg.targets:
            store.record(t, fake_result(t, rng))
        gc.collect()
        out["store"] = c.proc_status(pid, "VmRSS")
        # The ring of recent results (store.RECENT per target) filled: that many more
        # results each, every one new, a tenth of the targets failing in AUTH every time.
        failed = Failure(Phase.AUTH, FailureKind.REPLY, "535 5.7.8 authentication failed", 535)
        for _ in range(RECENT):
            for i, t in enumerate(cfg.targets):
                r = fake_result(t, rng)
                store.record(t, dataclasses.replace(r, failure=failed) if i % 10 == 0 else r)
        gc.collect()
        out["ring"] = c.proc_status(pid, "VmRSS")
        renderer = Renderer(store)
        out["scrape_bytes"] = gzip_scrape(renderer, own)  # what a Prometheus scrape does
        out["scrape_peak"] = c.proc_status(pid, "VmHWM")
        gc.collect()
        out["render_cache"] = c.proc_status(pid, "VmRSS")
        sched.shutdown()

    asyncio.run(schedule())
    shutil.rmtree(work, ignore_errors=True)
    return out


def real(n: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    with _fleet.fleet(n, work) as f:
        body, _ = f.metrics()
        first = {
            "rss": c.proc_status(f.pid, "VmRSS"),
            "hwm": c.proc_status(f.pid, "VmHWM"),
            "bytes": len(body),
        }
        del body
        time.sleep(f.interval)  # every result replaced once more
        f.metrics()
        return {
            **first,
            "rss2": c.proc_status(f.pid, "VmRSS"),
            "hwm2": c.proc_status(f.pid, "VmHWM"),
            "interval": f.interval,
            "fds": c.proc_fds(f.pid),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sizes", nargs="*", type=int, default=[1000, 10000])
    p.add_argument("--breakdown-only", action="store_true")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(breakdown(int(args.child[0]), args.child[1])))
        return 0
    mb = 1e6
    rows = []
    for n in args.sizes:
        for loader in ("python", "c"):
            done = subprocess.run(
                c.python("memory.py", "--child", str(n), loader),
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
            s = json.loads(done.stdout)
            rows.append(
                [
                    f"{n} ({'SafeLoader' if loader == 'python' else 'CSafeLoader'})",
                    s["imports"] / mb,
                    (s["config"] - s["imports"]) / mb,
                    (s["scheduler"] - s["config"]) / mb,
                    (s["store"] - s["scheduler"]) / mb,
                    (s["ring"] - s["store"]) / mb,
                    (s["render_cache"] - s["ring"]) / mb,
                    s["render_cache"] / mb,
                    s["scrape_peak"] / mb,
                ]
            )
    print("breakdown: RSS added by each part, fresh process, synthetic complete results")
    print(
        c.table(
            [
                "targets (config loader)",
                "imports MB",
                "+config MB",
                "+scheduler MB",
                "+store MB",
                "+ring MB",
                "+render cache MB",
                "total MB",
                "peak in a scrape MB",
            ],
            rows,
        )
    )
    if args.breakdown_only:
        return 0
    print(
        "\nreal exporter (python -m exporter), N STARTTLS + AUTH targets, every one probed",
        flush=True,
    )
    c.warn_if_busy()
    base = real(0)
    rows = [["0 (baseline)", base["rss"] / mb, base["hwm"] / mb, "-", "-", "-", "-"]]
    verdicts = []
    for n in args.sizes:
        r = real(n)
        per = (r["rss2"] - base["rss"]) / n / 1024
        rows.append(
            [
                n,
                r["rss"] / mb,
                r["hwm"] / mb,
                r["rss2"] / mb,
                r["hwm2"] / mb,
                per,
                f"{r['bytes'] / mb:.1f}",
            ]
        )
        print(f"  {n} targets done (interval {r['interval']:g}s, {r['fds']:.0f} fds)", flush=True)
        if n == 10_000:
            worst = max(r["rss"], r["rss2"])
            verdicts.append(
                f"RSS at 10,000 targets {worst / mb:.0f} MB (target < 300 MB): "
                + ("PASS" if worst < TARGET_BYTES else "FAIL")
                + f"; peak (VmHWM) {r['hwm2'] / mb:.0f} MB"
            )
    print(
        c.table(
            [
                "targets",
                "RSS MB",
                "peak MB",
                "RSS +1 interval MB",
                "peak +1 interval MB",
                "KiB/target",
                "/metrics MB",
            ],
            rows,
        )
    )
    for v in verdicts:
        print(v)
    return 0


if __name__ == "__main__":
    sys.exit(main())
