"""HTTP/1.1 request parsing: one request off an asyncio stream, strictly and within limits."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from http import HTTPStatus

from ..httplimits import HeaderBudget

MAX_LINE = 16384
MAX_HEADERS = 100
MAX_HEADER_BYTES = 65536  # request line + headers; Go allows 1 MB
MAX_BODY = 65536


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str]  # names lower-cased

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


_VERSION = re.compile(r"HTTP/1\.[0-9]")
_DIGITS = re.compile(r"[0-9]+")


async def read_request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    first: bytes,
    budget: HeaderBudget,
) -> Request | None:
    """The next request on the connection, None at a clean end of it. ``first``: its first
    byte, if already read. Strict where a lenient parser would let a proxy in front and this
    server disagree about where a request ends (request smuggling): Content-Length is digits
    only, and given twice it must agree."""
    held = 0
    try:
        try:
            line = first + await reader.readline()
        except (ValueError, asyncio.LimitOverrunError) as exc:
            raise BadRequest(HTTPStatus.REQUEST_URI_TOO_LONG, "Request line too long") from exc
        if not line:
            return None
        held = len(line)
        if not budget.take(held):
            held = 0
            raise BadRequest(HTTPStatus.SERVICE_UNAVAILABLE, "Too many requests being read")
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not _VERSION.fullmatch(parts[2]):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "Malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        lengths: set[str] = set()
        for _ in range(MAX_HEADERS + 1):
            try:
                raw = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError) as exc:
                raise BadRequest(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Header line too long"
                ) from exc
            if not raw:
                raise asyncio.IncompleteReadError(raw, None)
            if held + len(raw) > MAX_HEADER_BYTES:
                raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Headers too large")
            if not budget.take(len(raw)):
                raise BadRequest(HTTPStatus.SERVICE_UNAVAILABLE, "Too many requests being read")
            held += len(raw)
            text = raw.decode("latin-1").rstrip("\r\n")
            if not text:
                break
            name, sep, value = text.partition(":")
            if not sep or not name.strip() or name != name.strip():
                raise BadRequest(HTTPStatus.BAD_REQUEST, "Malformed header line")
            key = name.lower()
            if key == "content-length":
                lengths.add(value.strip())
            headers[key] = value.strip()
        else:
            raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many header lines")
        if "transfer-encoding" in headers:
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "Chunked request bodies are not accepted")
        if len(lengths) > 1 or not all(_DIGITS.fullmatch(v) for v in lengths):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "Malformed Content-Length")
        length = int(lengths.pop()) if lengths else 0
        if length > MAX_BODY:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Body too large")
        expect = headers.get("expect", "").lower()
        if expect and expect != "100-continue":
            raise BadRequest(HTTPStatus.EXPECTATION_FAILED, "Unsupported Expect")
        if length:
            if expect and version != "HTTP/1.0":
                # The client waits for this before sending the body (RFC 9110 10.1.1).
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await reader.readexactly(length)  # read and ignore, so the next request lines up
        path, _, query = target.partition("?")
        return Request(method, path, query, version, headers)
    finally:
        budget.give(held)


def accepts_gzip(header: str) -> bool:
    """Whether Accept-Encoding allows gzip (and not with q=0, RFC 9110 12.5.3)."""
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().lower()
            return not (q.startswith("q=") and _q_is_zero(q[2:]))
    return False


def _q_is_zero(value: str) -> bool:
    try:
        return float(value) == 0
    except ValueError:
        return False
