"""A pure, bounded IMAP response reader: bytes in, ``Response`` objects out. No sockets, no
clock (RFC 9051 §7, RFC 3501 §7).

A response is a line ended by CRLF, or several: a line ending in a literal announcement
``{n}`` (``{n+}`` and ``~{n}`` are read alike) is followed by exactly n octets and then the
rest of the response. Whatever a server sends, the reader holds at most one unfinished line
of ``max_line`` bytes, one literal of ``max_literal`` bytes, and the finished responses of one
command, which are capped in count and bytes: a line too long, a literal announced too big
(refused when its ``{n}`` arrives, before any of its octets), a line ended by a bare LF, an
endless stream of untagged responses, a tagged response for a tag we did not send or a
continuation request nobody asked for all raise ``ProtocolError``, and the reader stays
broken (the connection is out of step: it can only be closed).

The session says what may come next with ``expect(tag, continuation=...)`` before it sends
a command; a tagged completion of that tag ends the command.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from ..errors import ProtocolError

MAX_LINE = 8 * 1024
MAX_LITERAL = 64 * 1024
MAX_UNTAGGED = 10_000  # untagged responses per command
MAX_COMMAND_BYTES = 1024 * 1024  # response bytes per command, literals included
MAX_TEXT = 512  # characters of server text kept in a Response's ``text``

STATUS = frozenset({"OK", "NO", "BAD", "BYE", "PREAUTH"})
TAGGED_STATUS = frozenset({"OK", "NO", "BAD"})

_LITERAL = re.compile(rb"~?\{(\d{1,20})\+?\}$")
_KEYWORD = re.compile(rb"[A-Za-z][A-Za-z0-9.=-]{0,63}")
_TAG = re.compile(rb"[\x21\x23\x24\x26\x27\x2c-\x5a\x5e-\x7a\x7c\x7e]{1,64}")
# C0 controls and DEL would let a server forge log lines or terminal escapes downstream.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Kind(Enum):
    UNTAGGED = "untagged"  # "* ..."
    TAGGED = "tagged"  # "<tag> OK|NO|BAD ..."
    CONTINUATION = "continuation"  # "+ ..."


@dataclass(frozen=True, slots=True)
class Response:
    """One complete server response.

    ``keyword`` is the status (OK, NO, BAD, BYE, PREAUTH) of a status response, else the data
    keyword (CAPABILITY, EXISTS, FETCH, SEARCH...), upper case; "" for a continuation.
    ``number`` is the leading number of ``* 23 EXISTS``. ``code`` is the response code
    inside ``[...]`` of a status response. ``data`` is the raw rest after the keyword (after
    the code, for status responses), literal announcements kept in place, and ``literals``
    their contents in order; ``text`` is ``data`` made safe to show (decoded, control
    characters replaced, clipped)."""

    kind: Kind
    keyword: str
    tag: str | None = None
    number: int | None = None
    code: str | None = None
    data: bytes = b""
    literals: tuple[bytes, ...] = ()

    @property
    def text(self) -> str:
        """``data`` made safe to show (computed when asked: most responses never are)."""
        return clean(self.data)

    @property
    def is_status(self) -> bool:
        return self.keyword in STATUS

    def __str__(self) -> str:
        """The response as a short, printable line (for failure details and transcripts)."""
        head = {Kind.UNTAGGED: "*", Kind.CONTINUATION: "+"}.get(self.kind, self.tag or "")
        parts = [head]
        if self.number is not None:
            parts.append(str(self.number))
        if self.keyword:
            parts.append(self.keyword)
        if self.code is not None:
            parts.append(f"[{clean(self.code)}]")
        if self.text:
            parts.append(self.text)
        return " ".join(parts)


class IMAPReader:
    """Incremental reader; see the module docstring for its bounds. ``max_line`` can be
    raised for a caller that expects long lines (the canary's SEARCH results)."""

    __slots__ = (
        "_buf",
        "_continuation",
        "_count",
        "_error",
        "_literal",
        "_literal_left",
        "_literals",
        "_max_line",
        "_max_literal",
        "_ready",
        "_segments",
        "_size",
        "_tag",
    )

    def __init__(self, max_line: int = MAX_LINE, max_literal: int = MAX_LITERAL) -> None:
        self._max_line = max_line
        self._max_literal = max_literal
        self._buf = bytearray()
        self._segments: list[bytes] = []  # lines of the response being read, CRLF removed
        self._literals: list[bytes] = []
        self._literal = bytearray()
        self._literal_left = 0
        self._ready: deque[Response] = deque()
        self._tag: bytes | None = None  # the command in flight
        self._continuation = False  # whether it may be asked for more ("+")
        self._count = 0  # untagged responses since the command was sent
        self._size = 0  # bytes received since the command was sent
        self._error: ProtocolError | None = None

    # --- the session's side ---------------------------------------------------------------
    def expect(self, tag: str, *, continuation: bool = False) -> None:
        """A command tagged ``tag`` is about to be sent; ``continuation`` when it may be
        answered with ``+`` (AUTHENTICATE, a synchronizing literal). Resets the per-command
        caps."""
        self._tag = tag.encode("ascii")
        self._continuation = continuation
        self._count = 0
        self._size = 0

    def feed(self, data: bytes) -> None:
        """Add bytes received from the server; completed responses become available to
        ``pop``. Raises ``ProtocolError`` (now and on every later call) when a bound or the
        protocol is broken."""
        if self._error is not None:
            raise self._error
        try:
            self._feed(data)
        except ProtocolError as exc:
            self._error = exc
            self._buf.clear()
            self._segments.clear()
            self._literals.clear()
            self._literal = bytearray()
            raise

    def pop(self) -> Response | None:
        """The oldest completed response not yet taken, or None."""
        return self._ready.popleft() if self._ready else None

    @property
    def holds_data(self) -> bool:
        """Whether anything beyond the responses already taken has been received."""
        return bool(self._buf or self._segments or self._literal_left or self._ready or self._error)

    @property
    def pending_bytes(self) -> int:
        """Bytes held for an unfinished response (for tests of the memory bound)."""
        return len(self._buf) + sum(map(len, self._segments)) + len(self._literal)

    # --- parsing --------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_COMMAND_BYTES:
            raise ProtocolError(f"more than {MAX_COMMAND_BYTES} bytes of responses to one command")
        pos, size, buf = 0, len(data), self._buf
        while pos < size:
            if self._literal_left:
                take = data[pos : pos + self._literal_left]
                self._literal += take
                self._literal_left -= len(take)
                pos += len(take)
                if not self._literal_left:
                    self._literals.append(bytes(self._literal))
                    self._literal = bytearray()
                continue
            end = data.find(b"\n", pos)
            if end == -1:
                buf += data[pos:]
                if len(buf) > self._max_line:
                    raise ProtocolError(f"response line longer than {self._max_line} bytes")
                return
            if buf:  # the rest of a line begun in an earlier chunk
                buf += data[pos : end + 1]
                line = bytes(buf)
                buf.clear()
            else:
                line = data[pos : end + 1]
            pos = end + 1
            if len(line) - 2 > self._max_line:
                raise ProtocolError(f"response line longer than {self._max_line} bytes")
            if len(line) < 2 or line[-2] != 0x0D:
                raise ProtocolError(f"response line not ended by CRLF: {_preview(line)}")
            self._line(line[:-2])

    def _line(self, line: bytes) -> None:
        if line.endswith(b"}") and (literal := _LITERAL.search(line)) is not None:
            size = int(literal.group(1))
            if size > self._max_literal:
                raise ProtocolError(f"literal of {size} bytes exceeds {self._max_literal}")
            self._segments.append(line)
            if size:
                self._literal_left = size
            else:
                self._literals.append(b"")
            return
        if self._segments:  # the end of a response with literals
            first, *more = self._segments
            more.append(line)
            literals = tuple(self._literals)
            self._segments, self._literals = [], []
            self._response(first, more, literals)
        else:
            self._response(line, (), ())

    def _response(self, first: bytes, more: Sequence[bytes], literals: tuple[bytes, ...]) -> None:
        head, _, rest = first.partition(b" ")
        if head == b"*":
            response = _untagged(first, rest, more, literals)
            self._count += 1
            if self._count > MAX_UNTAGGED:
                raise ProtocolError(f"more than {MAX_UNTAGGED} untagged responses to one command")
        elif head == b"+":
            if not self._continuation:
                raise ProtocolError(f"continuation request nobody asked for: {_preview(first)}")
            response = Response(Kind.CONTINUATION, "", None, None, None, rest)
        else:
            if head != self._tag:
                if not _TAG.fullmatch(head):
                    raise ProtocolError(f"malformed response {_preview(first)}")
                if self._tag is None:
                    raise ProtocolError(
                        f"tagged response with no command in flight: {_preview(first)}"
                    )
                raise ProtocolError(
                    f"tagged response for the wrong tag (expected {self._tag.decode()}): "
                    f"{_preview(first)}"
                )
            status, _, text = rest.partition(b" ")
            status_text = status.decode("ascii", "replace").upper()
            if status_text not in TAGGED_STATUS:
                raise ProtocolError(f"malformed tagged response {_preview(first)}")
            code, text = _code(text)
            response = Response(Kind.TAGGED, status_text, head.decode(), None, code, text, literals)
            self._tag = None  # the command is complete
            self._continuation = False
        self._ready.append(response)


def _untagged(
    first: bytes, rest: bytes, more: Sequence[bytes], literals: tuple[bytes, ...]
) -> Response:
    word, _, after = rest.partition(b" ")
    number = None
    if word.isdigit() and len(word) <= 10:
        number = int(word)
        word, _, after = after.partition(b" ")
    # isalpha() is ASCII-only on bytes, and true for nearly every keyword: the regex is
    # only for the rest (X-GM-..., digits).
    if not (word.isalpha() and len(word) <= 64) and not _KEYWORD.fullmatch(word):
        raise ProtocolError(f"malformed untagged response {_preview(first)}")
    keyword = word.decode("ascii").upper()
    if more:  # literal announcements stay in place; their octets are in literals
        after = b"".join([after, *more])
    if number is None and keyword in STATUS:
        code, text = _code(after)
        return Response(Kind.UNTAGGED, keyword, None, None, code, text, literals)
    return Response(Kind.UNTAGGED, keyword, None, number, None, after, literals)


def _code(text: bytes) -> tuple[str | None, bytes]:
    """Split ``[CODE args] text`` into the code and the text."""
    if not text.startswith(b"["):
        return None, text
    end = text.find(b"]")
    if end == -1:
        return None, text
    return text[1:end].decode("utf-8", "replace"), text[end + 1 :].lstrip(b" ")


def clean(raw: bytes | str, limit: int = MAX_TEXT) -> str:
    """Server text made safe to show: decoded, control characters replaced, clipped."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if not text.isprintable():
        text = _CONTROL.sub("?", text)
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _preview(raw: bytes, limit: int = 40) -> str:
    return repr(clean(raw[:limit]) + ("..." if len(raw) > limit else ""))
