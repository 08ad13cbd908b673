"""A pure, bounded SMTP reply reader: bytes in, ``Reply`` objects out. No sockets, no clock.

Limits follow aiosmtplib's fix for endless continuation lines, tightened: RFC 5321
§4.5.3.1.5 allows 512 octets per reply line; we accept a few KiB, then refuse. Whatever a
server sends, the reader holds at most ``MAX_LINE`` bytes of an unfinished line, one reply of
at most ``MAX_REPLY_LINES`` lines, and ``MAX_PENDING`` finished replies.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from ..errors import ProtocolError
from ..net.lines import take_lines

MAX_LINE = 4096
MAX_REPLY_LINES = 200
MAX_PENDING = 8

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
# C0 controls and DEL would let a server forge log lines or terminal escapes downstream.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete SMTP reply; ``lines`` hold the text after ``code`` and the separator."""

    code: int
    lines: tuple[str, ...]

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code of the first line, if its class matches."""
        if not self.lines:
            return None
        m = _ENHANCED.match(self.lines[0])
        if m is None or int(m.group(1)) != self.code // 100:
            return None
        return m.group(0)

    @property
    def text(self) -> str:
        return " ".join(line for line in self.lines if line)

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


class ReplyReader:
    """Incremental reader. ``feed`` raises ``ProtocolError`` on anything that is not a valid,
    reasonably sized reply; after that the reader stays broken (the connection is unusable)."""

    __slots__ = ("_buf", "_code", "_error", "_lines", "_ready")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._code: int | None = None
        self._lines: list[str] = []
        self._ready: deque[Reply] = deque()
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        """Add bytes received from the server; completed replies become available to ``pop``."""
        if self._error is not None:
            raise self._error
        try:
            self._feed(data)
        except ProtocolError as exc:
            self._error = exc
            self._buf.clear()
            self._lines.clear()
            raise

    def pop(self) -> Reply | None:
        """The oldest completed reply not yet taken, or None."""
        return self._ready.popleft() if self._ready else None

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unfinished reply line held (for tests of the memory bound)."""
        return len(self._buf)

    @property
    def holds_data(self) -> bool:
        """Whether anything beyond the replies already taken has been received."""
        return bool(self._buf or self._lines or self._ready or self._error)

    def _feed(self, data: bytes) -> None:
        for raw in take_lines(self._buf, data):
            self._line(raw)
        if len(self._buf) > MAX_LINE:
            raise ProtocolError(f"reply line longer than {MAX_LINE} bytes")

    def _line(self, raw: bytes) -> None:
        if len(raw) > MAX_LINE:
            raise ProtocolError(f"reply line longer than {MAX_LINE} bytes")
        head = raw[:3]
        if len(head) < 3 or not head.isdigit() or raw[0] not in _CLASSES:
            raise ProtocolError(f"malformed reply line {_preview(raw)}")
        sep = raw[3:4]
        if sep not in _SEPARATORS:
            raise ProtocolError(f"malformed reply line {_preview(raw)}")
        code = int(head)
        if self._code is None:
            self._code = code
        elif code != self._code:
            raise ProtocolError(f"reply code changed from {self._code} to {code} mid-reply")
        lines = self._lines
        if len(lines) >= MAX_REPLY_LINES:
            raise ProtocolError(f"reply longer than {MAX_REPLY_LINES} lines")
        lines.append(_clean(raw[4:]))
        if sep != b"-":
            if len(self._ready) >= MAX_PENDING:
                raise ProtocolError("server sent replies nobody asked for")
            self._ready.append(Reply(code, tuple(lines)))
            self._code = None
            self._lines = []


_CLASSES = b"2345"  # the first digit of a reply code (RFC 5321 4.2.1)
_SEPARATORS = (b"", b" ", b"-")


def _clean(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    # isprintable() is False for every character _CONTROL matches (and for a few more,
    # such as TAB, which the substitution then leaves alone): most lines skip the regex.
    if not text.isprintable():
        text = _CONTROL.sub("?", text)
    return text.strip()


def _preview(raw: bytes, limit: int = 40) -> str:
    return repr(_clean(raw[:limit]) + ("..." if len(raw) > limit else ""))
