"""``/probe?debug=true``: the probe's transcript, its metrics and its module, as text.

The answer has blackbox_exporter's shape (prober/handler.go with ``debug=true``): the logs
of the probe, then the metrics that would have been returned, then the module's
configuration. Here the logs are the SMTP dialogue line by line (``C:`` sent, ``S:``
received) and notes (``*``: the address connected to, TLS version, cipher and
certificate, each phase's time), every line stamped with the time since the probe began.

Nothing secret can appear: the session masks every AUTH payload and 334 challenge
whatever the mechanism, and any form of the password a server might echo (exporter.smtp.
session); secrets in the module are ``Secret`` values, shown as ``<secret>``. A transcript
is bounded in lines and bytes, whatever the server sends, and a request keeps at most
``MAX_TRANSCRIPTS`` of them.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import time
from collections.abc import Sequence

from ..config import Module, Secret, Target
from ..results import ProbeResult, display_name

MAX_LINES = 300  # an EHLO reply is a dozen lines; a whole probe, some forty
MAX_LINE_CHARS = 512  # RFC 5321's reply line limit, with room for our prefix
MAX_BYTES = 32 << 10  # per probed address
MAX_TRANSCRIPTS = 32  # addresses logged per request (an mx: domain's): 1 MiB at most
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Transcript:
    """The lines of one probe, as its session's ``wire`` sink: bounded, control characters
    escaped, each stamped with seconds since the transcript began. Callable."""

    __slots__ = ("_bytes", "_start", "dropped", "lines")

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._bytes = 0
        self.lines: list[str] = []
        self.dropped = 0  # lines past MAX_LINES or MAX_BYTES, counted, not kept

    def __call__(self, line: str) -> None:
        line = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", line)
        if len(line) > MAX_LINE_CHARS:
            line = line[: MAX_LINE_CHARS - 3] + "..."
        line = f"{time.perf_counter() - self._start:8.4f}s {line}"
        if len(self.lines) >= MAX_LINES or self._bytes + len(line) > MAX_BYTES:
            self.dropped += 1
            return
        self._bytes += len(line) + 1
        self.lines.append(line)

    def text(self) -> str:
        more = f"[{self.dropped} more lines not kept]\n" if self.dropped else ""
        return "".join(f"{line}\n" for line in self.lines) + more


def debug_text(
    target: str,
    module: Module,
    probes: Sequence[tuple[Target, ProbeResult, Transcript | None]],
    metrics: str,
    notes: Sequence[str] = (),
) -> str:
    """The whole ``/probe?debug=true`` answer. ``probes``: each concrete target probed
    with its result and transcript (None for a result not probed here: a failed MX
    lookup); ``notes``: lines about the request itself (the MX lookup)."""
    out = [f"Logs for the probe of {target} with module {module.name}:\n"]
    out.extend(f"* {note}\n" for note in notes)
    if not probes:
        out.append("nothing was probed\n")
    for concrete, result, transcript in probes:
        out.append(f"\n--- {display_name(concrete.name, concrete.labels)}\n")
        if transcript is not None:
            out.append(transcript.text() or "nothing logged\n")
        out.append(_outcome(result) + "\n")
    out.append("\n\nMetrics that would have been returned:\n")
    out.append(metrics)
    out.append("\n\nModule configuration:\n")
    out.extend(f"{line}\n" for line in module_lines(module))
    return "".join(out)


def _outcome(r: ProbeResult) -> str:
    timings = ", ".join(f"{t.phase} {t.seconds * 1000:.1f} ms" for t in r.phases) or "none"
    if r.failure is None:
        head = f"probe succeeded in {r.duration_seconds:.3f}s"
    else:
        f = r.failure
        code = f" (reply {f.code}{' ' + f.enhanced if f.enhanced else ''})" if f.code else ""
        head = (
            f"probe failed in {r.duration_seconds:.3f}s: phase {f.phase}, kind {f.kind}{code}: "
            f"{f.detail}"
        )
    return f"{head}\nphase timings: {timings}"


def module_lines(module: Module) -> list[str]:
    """The module as YAML-like ``key: value`` lines, nested blocks indented; secrets
    masked (a ``Secret`` never reveals itself here)."""
    return _lines(module, "")


def _lines(obj: object, indent: str) -> list[str]:
    out: list[str] = []
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.append(f"{indent}{f.name}:")
            out.extend(_lines(value, indent + "  "))
        else:
            out.append(f"{indent}{f.name}: {_scalar(value)}")
    return out


def _scalar(value: object) -> str:
    if isinstance(value, Secret):
        return "<secret>"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return _CONTROL.sub("?", str(value))
