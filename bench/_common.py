"""Helpers shared by the benchmark scripts: process CPU and memory from /proc, percentiles,
tables, and child processes that are always stopped.

Importing this module puts the repository root on ``sys.path`` so the scripts, run as
``python bench/NAME.py`` from anywhere, can import ``tests.servers`` as well as ``exporter``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- /proc ---------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` (its threads included)."""
    return sum(proc_cpu_split(pid))


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by ``pid``."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM, ...) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass(frozen=True, slots=True)
class SystemCPU:
    """Snapshot of /proc/stat's aggregate line: busy and total jiffies over all cores."""

    busy: int
    total: int

    @classmethod
    def now(cls) -> SystemCPU:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        total = sum(values[:8])  # without guest time, already counted in user
        return cls(total - idle, total)

    def busy_cores_since(self, before: SystemCPU) -> float:
        """Average number of busy cores between ``before`` and this snapshot."""
        total = self.total - before.total
        return (self.busy - before.busy) / total * os.cpu_count() if total else 0.0  # type: ignore[operator]


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def other_busy_processes(exclude: set[int], seconds: float = 1.0) -> list[str]:
    """Processes (not in ``exclude``) that used over 10 % of a core in the last ``seconds``:
    a benchmark on 2 cores is only meaningful when nothing else is running."""

    def snapshot() -> dict[int, float]:
        out = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in exclude:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    out[int(entry)] = proc_cpu(int(entry))
        return out

    before = snapshot()
    time.sleep(seconds)
    after = snapshot()
    busy = []
    for pid, cpu in after.items():
        if pid in before and (cpu - before[pid]) / seconds > 0.1:
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                busy.append(f"{pid} {cmd.decode(errors='replace')[:80]}")
    return busy


def warn_if_busy(exclude: Sequence[int] = ()) -> None:
    """Print a warning when another process is using the CPU before a measurement."""
    busy = other_busy_processes({os.getpid(), *exclude})
    if busy:
        print(
            "WARNING: other processes are using the CPU; figures will be low:\n  "
            + "\n  ".join(busy),
            flush=True,
        )


# --- numbers and tables ----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain left-aligned text table (first column) with right-aligned figures."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


# --- ports, HTTP, children -----------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 30.0, gzip: bool = False) -> tuple[int, bytes, float]:
    """(status, body, seconds from request to the last byte)."""
    headers = {"Accept-Encoding": "gzip"} if gzip else {}
    req = urllib.request.Request(url, headers=headers)
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, body, time.perf_counter() - start
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), time.perf_counter() - start


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers 200; raise if it does not within ``timeout`` or the
    process serving it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before serving")
        with contextlib.suppress(OSError):
            if http_get(url, timeout=2.0)[0] == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g}s")


@contextlib.contextmanager
def child(
    args: Sequence[str], log: Path, *, stop_timeout: float = 10.0, **kwargs: object
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a child process (output to ``log``); on exit SIGTERM it, then SIGKILL it if it
    has not exited within ``stop_timeout``, and always reap it."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            **kwargs,  # type: ignore[call-overload]
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def wait_line(path: Path, needle: str, timeout: float, proc: subprocess.Popen[bytes]) -> str:
    """Wait until a line containing ``needle`` appears in ``path`` (a child's log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                if needle in line:
                    return line
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args!r} exited with {proc.returncode}:\n"
                + path.read_text(errors="replace")[-2000:]
            )
        time.sleep(0.05)
    raise RuntimeError(f"no {needle!r} in {path} within {timeout:g}s")


def python(script: str, *args: str) -> list[str]:
    """Command line running bench/SCRIPT with this interpreter."""
    return [sys.executable, str(BENCH / script), *args]


def exporter_command(config: Path, port: int) -> list[str]:
    """The real exporter, as a user runs it, on 127.0.0.1:PORT with quiet logs."""
    return [
        sys.executable,
        "-m",
        "exporter",
        "--config.file",
        str(config),
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--log.level",
        "warn",
    ]
