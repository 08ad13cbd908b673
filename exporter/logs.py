"""Log lines as Prometheus's own exporters write them, so log pipelines parse them as-is.

logfmt as go-kit and slog write it::

    ts=2026-11-30T23:14:03.891Z level=info source=app.py:99 msg="listening on ..."

``ts`` is RFC 3339 in UTC with milliseconds, ``level`` is ``debug``/``info``/``warn``/``error``
(the values of ``--log.level``), ``source`` is the file (relative to the package) and line,
and a value is written bare unless it is empty or holds a space, ``=``, ``"`` or a control
character; then it is double-quoted with ``\\"``, ``\\\\``, ``\\n``, ``\\r``, ``\\t`` and
``\\u00XX`` escapes (go-logfmt's rules), so one record is always one line. JSON has the same
keys, one object per line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TextIO

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def level_name(levelno: int) -> str:
    """The flag's spelling of a level: ``WARNING`` is ``warn``, ``CRITICAL`` is ``error``."""
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


def timestamp(record: logging.LogRecord) -> str:
    """RFC 3339, UTC, milliseconds: ``2026-11-30T23:14:03.891Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
        f".{int(record.msecs):03d}Z"
    )


def source(record: logging.LogRecord) -> str:
    """``smtp/session.py:88`` for our own modules, ``file.py:12`` for a library's."""
    path = os.path.abspath(record.pathname)
    if path.startswith(_PACKAGE_DIR + os.sep):
        name = os.path.relpath(path, _PACKAGE_DIR).replace(os.sep, "/")
    else:
        name = os.path.basename(path)
    return f"{name}:{record.lineno}"


def _fields(formatter: logging.Formatter, record: logging.LogRecord) -> list[tuple[str, str]]:
    fields = [
        ("ts", timestamp(record)),
        ("level", level_name(record.levelno)),
        ("source", source(record)),
        ("msg", record.getMessage()),
    ]
    if record.exc_info:
        fields.append(("exc", formatter.formatException(record.exc_info)))
    elif record.exc_text:
        fields.append(("exc", record.exc_text))
    return fields


def _needs_quotes(value: str) -> bool:
    # go-logfmt quotes for these only; a backslash alone may stay bare.
    return not value or any(c <= " " or c in '="' or c == "\x7f" for c in value)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def logfmt_value(value: str) -> str:
    """A value as go-logfmt writes it: bare when it can be, else quoted and escaped."""
    if not _needs_quotes(value):
        return value
    out = []
    for c in value:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c < " " or c == "\x7f":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


class LogfmtFormatter(logging.Formatter):
    """One logfmt line per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={logfmt_value(v)}" for k, v in _fields(self, record))


class JSONFormatter(logging.Formatter):
    """One JSON object per record, with the logfmt keys."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(dict(_fields(self, record)), ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a record comes, not as it was at set-up (as
    ``logging.lastResort`` does): code that swaps stderr (a test runner capturing it, a
    daemon redirecting it) never leaves us writing to a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always sys.stderr


def setup(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send every logger's records to stderr in ``fmt`` (``logfmt`` or ``json``) from
    ``level`` (``debug``, ``info``, ``warn``, ``error``) up."""
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    # The level holds for every record, also from a library logger set lower than ours.
    handler.setLevel(LEVELS[level])
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # APScheduler logs every job run at INFO; our own logs say what matters.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # asyncio's only DEBUG line at start is "Using selector: ...", before the line that
    # says where we listen, which is to come first.
    logging.getLogger("asyncio").setLevel(max(LEVELS[level], logging.INFO))
