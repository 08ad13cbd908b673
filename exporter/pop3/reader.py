"""A pure, bounded POP3 response reader: bytes in, ``Response`` objects out. No sockets, no
clock.

POP3 (RFC 1939) cannot be parsed without knowing what was asked: a multi-line response
(CAPA, LIST, ...) looks like a single-line one until its dot, and ``+OK`` alone does not say
whether lines follow. So the session tells the reader, before it sends each command, what the
answer will be (``expect``); the greeting is expected from the start. Bytes that arrive when
nothing is expected are a protocol error: POP3 never sends anything unasked.

Whatever a server sends, the reader holds at most ``MAX_LINE`` bytes of an unfinished line,
one multi-line response of at most ``MAX_MULTILINE_LINES`` lines and ``MAX_MULTILINE_BYTES``
bytes, and the few responses the session asked for. A multi-line response that never ends
with its dot ends at the bound (``ProtocolError``) or at the probe's deadline, never grows.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from ..errors import ProtocolError
from ..net.lines import take_lines

MAX_LINE = 8192  # RFC 2449 allows 512 octets per response line; a few KiB, then refuse
MAX_MULTILINE_LINES = 1000
MAX_MULTILINE_BYTES = 65536
MAX_EXPECTED = 4  # responses asked for and not yet taken; the session asks for one at a time

# C0 controls and DEL would let a server forge log lines or terminal escapes downstream.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class Status(StrEnum):
    """What a response line starts with."""

    OK = "+OK"
    ERR = "-ERR"
    CONTINUE = "+"  # a SASL challenge (RFC 5034): "+ " and base64


@dataclass(frozen=True, slots=True)
class Response:
    """One complete POP3 response. ``text`` is the first line after the status indicator
    (for ``CONTINUE``, the base64 challenge); ``lines`` the body of a multi-line response,
    dot-unstuffed, without its terminating dot. Server text has control characters replaced."""

    status: Status
    text: str
    lines: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def __str__(self) -> str:
        return f"{self.status.value} {self.text}".rstrip()


class POP3Reader:
    """Incremental reader. ``feed`` raises ``ProtocolError`` on anything that is not a valid,
    reasonably sized response, or that nobody asked for; after that the reader stays broken
    (the connection is unusable). The greeting (single-line) is expected from the start."""

    __slots__ = ("_body", "_body_bytes", "_buf", "_error", "_expected", "_head", "_ready")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._expected: deque[bool] = deque([False])  # multi-line? per response asked for
        self._head: Response | None = None  # the +OK line of a multi-line response in progress
        self._body: list[str] = []
        self._body_bytes = 0
        self._ready: deque[Response] = deque()
        self._error: ProtocolError | None = None

    def expect(self, multiline: bool = False) -> None:
        """Announce the next response: call before sending the command it answers. With
        ``multiline``, a ``+OK`` first line is followed by lines up to a lone dot; a ``-ERR``
        (or a SASL ``+``) is one line whatever was expected."""
        if len(self._expected) >= MAX_EXPECTED:
            raise RuntimeError("too many POP3 responses expected at once")  # a bug of ours
        self._expected.append(multiline)

    def feed(self, data: bytes) -> None:
        """Add bytes received from the server; completed responses become available to
        ``pop``."""
        if self._error is not None:
            raise self._error
        try:
            self._feed(data)
        except ProtocolError as exc:
            self._error = exc
            self._buf.clear()
            self._body.clear()
            self._body_bytes = 0
            self._head = None
            raise

    def pop(self) -> Response | None:
        """The oldest completed response not yet taken, or None."""
        return self._ready.popleft() if self._ready else None

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unfinished line and of an unfinished multi-line body held (for tests
        of the memory bound)."""
        return len(self._buf) + self._body_bytes

    @property
    def holds_data(self) -> bool:
        """Whether anything beyond the responses already taken has been received."""
        return bool(self._buf or self._head or self._ready or self._error)

    def _feed(self, data: bytes) -> None:
        for raw in take_lines(self._buf, data):
            self._line(raw)
        if len(self._buf) > MAX_LINE:
            raise ProtocolError(f"response line longer than {MAX_LINE} bytes")

    def _line(self, raw: bytes) -> None:
        if len(raw) > MAX_LINE:
            raise ProtocolError(f"response line longer than {MAX_LINE} bytes")
        if self._head is not None:
            self._body_line(raw)
            return
        if not self._expected:
            raise ProtocolError(f"server sent a response nobody asked for: {_preview(raw)}")
        multiline = self._expected.popleft()
        response = _status_line(raw)
        if multiline and response.status is Status.OK:
            self._head = response
        else:
            self._ready.append(response)

    def _body_line(self, raw: bytes) -> None:
        if raw == b".":
            assert self._head is not None
            self._ready.append(Response(self._head.status, self._head.text, tuple(self._body)))
            self._head = None
            self._body = []
            self._body_bytes = 0
            return
        if raw[:1] == b".":  # RFC 1939 §3: a line that begins with the dot was byte-stuffed
            raw = raw[1:]
        if len(self._body) >= MAX_MULTILINE_LINES:
            raise ProtocolError(f"multi-line response longer than {MAX_MULTILINE_LINES} lines")
        self._body_bytes += len(raw) + 2
        if self._body_bytes > MAX_MULTILINE_BYTES:
            raise ProtocolError(f"multi-line response longer than {MAX_MULTILINE_BYTES} bytes")
        self._body.append(clean(raw))


def _status_line(raw: bytes) -> Response:
    """The first line of a response: ``+OK``, ``-ERR`` or a SASL ``+`` challenge, each
    alone or followed by a space (RFC 1939 §3; RFC 5034 §4)."""
    word, sep, rest = raw.partition(b" ")
    status = _STATUS.get(word.upper())
    if status is None:
        raise ProtocolError(f"malformed response line {_preview(raw)}")
    return Response(status, clean(rest) if sep else "")


_STATUS = {b"+OK": Status.OK, b"-ERR": Status.ERR, b"+": Status.CONTINUE}


def clean(raw: bytes) -> str:
    """Server bytes as text a result may hold: invalid UTF-8 and control characters
    replaced, surrounding space stripped."""
    text = raw.decode("utf-8", errors="replace")
    if not text.isprintable():  # most lines skip the regex
        text = _CONTROL.sub("?", text)
    return text.strip()


def _preview(raw: bytes, limit: int = 40) -> str:
    return repr(clean(raw[:limit]) + ("..." if len(raw) > limit else ""))
