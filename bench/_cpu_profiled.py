"""Run the real exporter (``python -m exporter ARGS``) under a profiler that counts CPU
time, not wall-clock time: on a loaded machine, wall-clock samplers (py-spy) charge the time
a process waits for a core to whatever call it was in, loopback sends above all.

    CPU_PROFILE_OUT=out CPU_PROFILE_MODE=sample|cprofile python bench/_cpu_profiled.py ARGS

``sample`` (default): SIGPROF every ``CPU_PROFILE_INTERVAL`` seconds of the process's CPU
time (``setitimer(ITIMER_PROF)``), the Python stack recorded at each, written on exit in
py-spy's raw format (``bench/_profile.py`` summarises it). Time in C code (OpenSSL, system
calls) is charged to the Python function that called it, since a Python signal handler runs
once the call returns. ``cprofile``: cProfile timed by the CPU clock, written as pstats; it
slows Python code down, so its shares lean towards many small Python calls. The exporter
ends normally on SIGTERM, which is when the profile is written.
"""

from __future__ import annotations

import collections
import cProfile
import os
import signal
import sys
import time
from types import FrameType

import _common  # noqa: F401  (puts the repository root on sys.path)

from exporter.cli import main


def _sampled(out: str, interval: float) -> int:
    stacks: collections.Counter[tuple[str, ...]] = collections.Counter()

    def sample(_signum: int, frame: FrameType | None) -> None:
        names = []
        while frame is not None:
            code = frame.f_code
            names.append(f"{code.co_qualname} ({code.co_filename}:{frame.f_lineno})")
            frame = frame.f_back
        stacks[tuple(reversed(names))] += 1

    signal.signal(signal.SIGPROF, sample)
    signal.setitimer(signal.ITIMER_PROF, interval, interval)
    try:
        return main(sys.argv[1:])
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        with open(out, "w") as fh:
            for stack, n in stacks.items():
                fh.write(";".join(stack) + f" {n}\n")


if __name__ == "__main__":
    out = os.environ.get("CPU_PROFILE_OUT", "exporter.profile")
    if os.environ.get("CPU_PROFILE_MODE", "sample") == "cprofile":
        profiler = cProfile.Profile(time.process_time)
        try:
            code = profiler.runcall(main, sys.argv[1:])
        finally:
            profiler.dump_stats(out)
    else:
        code = _sampled(out, float(os.environ.get("CPU_PROFILE_INTERVAL", "0.002")))
    sys.exit(code)
