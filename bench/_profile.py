"""Profile a running process with py-spy and summarise where its time goes.

``record(pid, seconds, out)`` samples the process (``py-spy record --format raw``: collapsed
stacks, one line per distinct stack with its sample count); ``summarise`` turns that into the
functions with the most samples at the top of the stack (self time) and anywhere on it
(inclusive time), as text for a report.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
from pathlib import Path


def start(pid: int, seconds: float, out: Path, rate: int = 100) -> subprocess.Popen[str] | str:
    """Start sampling ``pid`` for ``seconds`` in the background; the Popen, or why not."""
    spy = shutil.which("py-spy")
    if spy is None:
        return "py-spy is not installed (pip install py-spy)"
    cmd = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str] | str, out: Path, timeout: float = 120) -> str | None:
    """Wait for a ``start``ed py-spy; None when ``out`` holds the profile, else why not."""
    if isinstance(proc, str):
        return proc
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "py-spy did not finish in time"
    if proc.returncode != 0 or not out.exists():
        return f"py-spy failed: {(text or '').strip()[-500:]}"
    return None


def record(pid: int, seconds: float, out: Path, rate: int = 100) -> str | None:
    """Sample ``pid`` for ``seconds`` (blocking); None on success, else why it could not."""
    return finish(start(pid, seconds, out, rate), out, seconds + 60)


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``: lines differ per call site."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1].rstrip(")")
    return f"{name} ({file})" if file else name


# Leaf frames where a thread waits rather than computes (py-spy's idle detection misses
# some of them): counted apart, not in the CPU shares.
WAITING = frozenset(
    {
        "EpollSelector.select (selectors.py)",
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
        "SocketIO.readinto (socket.py)",
        "Thread.join (threading.py)",
        "_wait_for_tstate_lock (threading.py)",
        "select (selectors.py)",
    }
)


def summarise(path: Path, top: int = 15) -> str:
    """Top frames by self and by inclusive samples, as shares of the samples that were
    computing (not waiting), plus the share that ran outside the event loop's thread."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = waiting = threads = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        if frames[-1] in WAITING:
            waiting += count
            continue
        total += count
        if any(f.startswith("Thread._bootstrap ") for f in frames):
            threads += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            incl_counts[name] += count
    if not total:
        return "(no samples)"
    lines = [
        f"{total} computing samples ({waiting} more waiting: select, locks, idle sockets); "
        f"{threads / total:.1%} of the computing ones in threads other than the main one"
    ]
    lines.append("self (top of stack):")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in self_counts.most_common(top)]
    lines.append("inclusive (anywhere on the stack):")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in incl_counts.most_common(top)]
    return "\n".join(lines)
