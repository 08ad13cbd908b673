"""Finding, waiting for, reaping and killing the daemons' processes through /proc."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Proc:
    pid: int
    starttime: int  # clock ticks since boot; with pid it identifies a process uniquely
    cmdline: bytes

    def __str__(self) -> str:
        args = self.cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        return f"{self.pid} ({args})"


def read_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of pid, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses; everything after the last ")" is safe.
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[19])


def read_cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def proc_of(pid: int) -> Proc | None:
    st = read_stat(pid)
    return None if st is None else Proc(pid, st[2], read_cmdline(pid))


def same_process(p: Proc) -> bool:
    """True if p still exists and is not a zombie (guards against recycled PIDs)."""
    st = read_stat(p.pid)
    return st is not None and st[2] == p.starttime and st[0] != "Z"


def descendants(roots: list[Proc]) -> list[Proc]:
    """The given processes (if still the same) and all their descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = read_stat(int(entry))
            if st is not None:
                children.setdefault(st[1], []).append(int(entry))
    found: list[Proc] = []
    todo = [r.pid for r in roots if same_process(r)]
    while todo:
        pid = todo.pop()
        p = proc_of(pid)
        if p is not None:
            found.append(p)
            todo.extend(children.get(pid, []))
    return found


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class Subreaper:
    """Make this process the reaper of orphaned stack processes while stacks run.

    Both masters daemonize, and when they exit their children are orphaned.  In
    containers PID 1 often never reaps, leaving ``<defunct>`` entries forever; as a
    child subreaper we inherit those orphans and reap them ourselves (only the PIDs
    we recorded, so subprocess.Popen objects elsewhere keep their exit statuses).
    """

    _lock = threading.Lock()
    _users = 0

    @classmethod
    def _set(cls, on: bool) -> None:
        ulong = ctypes.c_ulong
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            # prctl is variadic over unsigned long: pass full-width arguments.
            rc = libc.prctl(
                ctypes.c_int(_PR_SET_CHILD_SUBREAPER), ulong(int(on)), ulong(0), ulong(0), ulong(0)
            )
        except (OSError, AttributeError):
            rc = -1
        if rc != 0:
            log.warning("mailstack: cannot become child subreaper; zombies may stay behind")

    @classmethod
    def acquire(cls) -> None:
        with cls._lock:
            if cls._users == 0:
                cls._set(True)
            cls._users += 1

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._users -= 1
            if cls._users == 0:
                cls._set(False)


def reap(procs: list[Proc]) -> None:
    """waitpid() those of procs that are now zombie children of ours, and only those.

    Checking the start time first means a recycled PID (say, another Popen's child)
    is never reaped behind its owner's back.
    """
    me = os.getpid()
    for p in procs:
        st = read_stat(p.pid)
        if st is not None and st == ("Z", me, p.starttime):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p.pid, os.WNOHANG)


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def run_logged(
    cmd: list[str], logfile: Path, timeout: float, poll: Callable[[], object] | None = None
) -> int:
    """Run cmd with stdio redirected to logfile; return its exit status (-1: timed out).

    Never capture a daemon's output through pipes: a daemonized master inherits and
    keeps them open, and reading would block until it exits.  ``poll`` is called
    while waiting (used to reap our zombies: ``doveadm stop`` polls the master with
    kill(pid, 0), which keeps succeeding on an unreaped zombie).
    """
    with logfile.open("ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    proc.kill()
                    proc.wait()
                    out.write(f"timed out after {timeout}s\n".encode())
                    return -1
                if poll is not None:
                    poll()


_PROBLEM = re.compile(r"fatal|panic|error|warning", re.IGNORECASE)


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, preceded by its last problem lines.

    Readiness polling floods the logs with connect/disconnect noise, which would
    push the one line that explains a failure out of a plain tail.
    """
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"--- {path.name}: (missing)"
    problems = list(dict.fromkeys(ln for ln in text if _PROBLEM.search(ln)))[-10:]
    out = [f"--- {path.name}:"]
    if problems:
        out += ["  problems (last 10 distinct):", *problems, f"  last {lines} lines:"]
    return "\n".join([*out, *text[-lines:]])
