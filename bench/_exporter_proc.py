"""The real exporter (``exporter.app.Exporter``: APScheduler, semaphores, store, HTTP), run as
``smtp-health-exporter --config.file`` runs it, plus a record of when every scheduled probe
was due and when it really started.

    python bench/_exporter_proc.py CONFIG PORT RECORD.json [--concurrency N]

The record comes from a thin wrapper around ``exporter.probe.run`` (the function the
scheduler calls once a concurrency slot is free): for each probe the target, the time
APScheduler meant the run to start and the time the probe started. The scheduler's own
``smtp_exporter_scheduler_lag_seconds`` is observed before the slot is taken, so this is
the stricter figure. Written to RECORD.json when the exporter stops (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import exporter.probe
from exporter import config
from exporter.app import Exporter
from exporter.cli import setup_logging
from exporter.deadline import Deadline
from exporter.results import ProbeResult
from exporter.scheduler import job_id


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("port", type=int)
    p.add_argument("record")
    p.add_argument("--concurrency", type=int, default=None)
    args = p.parse_args()
    setup_logging("warn", "logfmt")
    app = Exporter(
        lambda: config.load(args.config), ("127.0.0.1", args.port), concurrency=args.concurrency
    )
    app.load_initial()
    records: list[tuple[str, float | None, float, float]] = []
    real_run = exporter.probe.run

    async def recorded_run(target: config.Target, deadline: Deadline | None = None) -> ProbeResult:
        scheduled = None
        if app.scheduler is not None:
            scheduled = app.scheduler._scheduled.get(job_id(target))
        started = time.time()
        result = await real_run(target, deadline)
        records.append((target.name, scheduled, started, result.duration_seconds))
        return result

    exporter.probe.run = recorded_run  # type: ignore[assignment]
    t0 = time.time()
    print("starting", flush=True)
    asyncio.run(app.run(started=lambda _: print(f"ready {time.time() - t0:.2f}s", flush=True)))
    out: dict[str, Any] = {"started": t0, "stopped": time.time(), "probes": records}
    with open(args.record, "w") as fh:
        json.dump(out, fh)
    print(f"wrote {len(records)} probe records", flush=True)


if __name__ == "__main__":
    main()
