"""Probe one target back to back with the exporter's own asyncio probe (``exporter.probe.run``,
what the scheduler calls for every run), N probes in flight, for a fixed time.

    python bench/_probe_loop.py CONFIG TARGET MODULE --concurrency N --duration S

Prints ``{"event": "start"}`` when the timed window opens, then one JSON line: probes,
successes, the first failure, wall seconds and this process's CPU seconds (user + system,
all threads; ``sys``: the kernel's part) over the timed window. No scheduler, store or
HTTP: the probe's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from exporter import config, probe


async def loop(target: config.Target, concurrency: int, duration: float) -> dict[str, object]:
    end = 0.0
    counts = {"probes": 0, "ok": 0}
    failure: list[str] = []

    async def worker() -> None:
        while time.monotonic() < end:
            result = await probe.run(target)
            counts["probes"] += 1
            if result.success:
                counts["ok"] += 1
            elif not failure and result.failure is not None:
                f = result.failure
                failure.append(f"{f.phase}: {f.kind}: {f.detail}")

    # Warm up (imports, the trust store cache, first handshakes) outside the timed window.
    await asyncio.gather(*(probe.run(target) for _ in range(min(concurrency, 4))))
    print(json.dumps({"event": "start"}), flush=True)
    cpu0, sys0, t0 = time.process_time(), os.times().system, time.monotonic()
    end = t0 + duration
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        **counts,
        "failure": failure[0] if failure else None,
        "seconds": time.monotonic() - t0,
        "cpu": time.process_time() - cpu0,
        "sys": os.times().system - sys0,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("target")
    p.add_argument("module")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=15.0)
    args = p.parse_args()
    cfg = config.load(args.config)
    module = cfg.modules[args.module]
    host, port = config.parse_target(args.target, module.default_port)
    target = config.Target(args.target, host, port, module)
    print(json.dumps(asyncio.run(loop(target, args.concurrency, args.duration))), flush=True)


if __name__ == "__main__":
    main()
