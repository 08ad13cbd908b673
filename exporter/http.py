"""HTTP endpoints: /metrics, /probe, a landing page, /-/healthy, /-/ready, POST /-/reload.

A small HTTP/1.1 server on the exporter's event loop (asyncio streams, keep-alive, TLS and
basic auth from --web.config.file). On the loop, a /probe request awaits its probe in its
own coroutine, as a scheduled probe does: no thread hand-offs (which cost /probe a third of
its CPU when it was served from threads). /metrics is built on the loop too: compressing the
shards that changed takes ~30-50 ms at 10,000 targets, once per scrape, and a worker thread
measured slower (zlib hands the GIL to the busy loop and back hundreds of times a scrape).
bcrypt checks, tens of milliseconds each, run in a pool of their own unless the credentials
passed recently; a plain (uncompressed) /metrics is inflated on the loop 16 KiB at a time,
each piece written only once the client has taken the one before.

Limits protect memory and file descriptors without locking anyone out (issue #14): an idle
connection costs a few KiB, so many are allowed (a cap sized from RLIMIT_NOFILE), and when
the cap is reached the connection idle the longest is closed to make room. A connection
must deliver its first complete request (TLS handshake included) within
``FIRST_REQUEST_TIMEOUT``; a kept-alive one may wait ``KEEPALIVE_TIMEOUT`` for its next,
which then has ``REQUEST_TIMEOUT``. A request's line and headers are bounded per line, in
count and in bytes (``MAX_HEADER_BYTES``, 431), and all requests being read together by
``HEADER_BUDGET`` (503); an answer is written in ``WRITE_CHUNK`` pieces with backpressure
and must be taken within ``RESPONSE_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import html
import logging
import re
import socket
import ssl
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

from . import __version__, gzipjoin, httpsd
from .config import Config
from .httplimits import (
    CONNECTIONS_CEILING,
    TLS_CONNECTIONS_CEILING,
    WRITE_CHUNK,
    HeaderBudget,
    connection_cap,
    inflated,
    linger,
    malloc_trim,
    raise_fd_limit,
    write_chunks,
)
from .metrics import Renderer
from .results import display_name
from .selfmetrics import ExporterMetrics
from .store import ResultStore

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A slow or stalled client must not hold a connection for ever.
FIRST_REQUEST_TIMEOUT = 10.0  # accept -> TLS handshake and the first request's headers
KEEPALIVE_TIMEOUT = 90.0  # a kept-alive connection's wait for its next request
REQUEST_TIMEOUT = 10.0  # the first byte of a later request -> its headers and body
RESPONSE_TIMEOUT = 60.0  # writing one whole answer (4 MB gzip at 10,000 targets: 70 kB/s)
MAX_LINE = 16384
MAX_HEADERS = 100
MAX_HEADER_BYTES = 65536  # request line + headers; Go allows 1 MB
HEADER_BUDGET = 32 << 20  # header bytes held by all requests being read at once
MAX_BODY = 65536
RESERVED_FDS = 256  # for config and certificate files, DNS, the scheduler (besides probes)
# Per connection, in the kernel (which doubles it): 512 KiB in flight is 10 MB/s at 50 ms.
SEND_BUFFER = 256 << 10
YIELD_EVERY = 1 << 16  # plain /metrics: let other work run after each 64 KiB written
# bcrypt checks: one at a time in their own thread (a flood of bad logins must not starve
# the loop's default pool, which config reloads use), and at most this many waiting.
AUTH_QUEUE = 4
# After a surge of connections (an attack, a stampede) has gone, hand the freed memory back
# to the system: glibc keeps freed heap pages otherwise, and RSS stayed at 700 MB+.
TRIM_AFTER_PEAK = 64  # connections at the surge's peak
TRIM_DELAY = 1.0  # seconds after the surge fell to a quarter of its peak
# A /metrics request arriving while another one's answer is still being written, at most
# this long after that one's rendering, gets the same rendering: a burst of requests (500
# at once) costs one rendering, not one each (the process collectors' /proc reads, the
# changed shards' compression), which kept the loop busy for a second. Requests that do not
# overlap (every scraper, each test) always get a fresh one; so an answer is at most this
# old, far below any scrape interval.
SHARE_RENDER = 0.25


class WebAuth(Protocol):
    headers: Any

    def check_basic_auth(self, authorization_header: str | None) -> bool: ...

    def check_basic_auth_cached(self, authorization_header: str | None) -> bool | None: ...


class App(Protocol):
    """What the HTTP layer needs from the running exporter (all called on its loop)."""

    store: ResultStore
    own: ExporterMetrics
    ready: bool
    config: Config | None  # its targets are listed on /sd

    async def reload(self) -> str | None:
        """Reload the config; None on success, else the error message."""
        ...

    async def probe(
        self, target: str, module: str | None, scrape_timeout: str | None
    ) -> tuple[int, str]: ...


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


@dataclass(eq=False, slots=True)
class _Conn:
    """One client connection; ``Server._idle`` holds it while it waits for a request."""

    writer: asyncio.StreamWriter
    task: asyncio.Task[None]


@dataclass(eq=False, slots=True)
class _Rendered:
    """One rendering of /metrics, shared by the requests of a burst (``SHARE_RENDER``)."""

    pieces: list[gzipjoin.Piece]
    made: float  # loop time
    writing: int = 0  # answers being written from it
    gzipped: list[bytes] | None = None  # the pieces joined, once a request asked for gzip


class Server:
    """The HTTP server. ``web`` and ``ssl_context`` may be replaced at any time (a reload):
    each new connection and each request uses the ones set then."""

    def __init__(
        self,
        app: App,
        address: tuple[str, int],
        web: WebAuth | None = None,
        ssl_context: ssl.SSLContext | None = None,
        *,
        reserved_fds: int = RESERVED_FDS,
    ) -> None:
        self.app = app
        self.address = address
        self.renderer = Renderer(app.store)
        self.web = web
        self.ssl_context = ssl_context
        self.reserved_fds = reserved_fds
        self.max_connections = CONNECTIONS_CEILING  # set from RLIMIT_NOFILE by start()
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        # Connections waiting for a request, the one idle the longest first.
        self._idle: OrderedDict[_Conn, None] = OrderedDict()
        self._headers = HeaderBudget(HEADER_BUDGET)
        self._auth_pool: ThreadPoolExecutor | None = None
        self._auth_waiting = 0
        self._trim = malloc_trim()
        self._peak = 0  # most connections open at once since the last trim
        self._trim_handle: asyncio.TimerHandle | None = None
        self._rendered: _Rendered | None = None  # while an answer is written from it

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        host, port = self.address
        self.max_connections = connection_cap(raise_fd_limit(), self.reserved_fds)
        self._auth_pool = ThreadPoolExecutor(1, thread_name_prefix="bcrypt")
        # TLS is started by each connection itself (_connection), so the handshake counts
        # against the first request's deadline, a connection stuck in it can be closed to
        # make room, and a reload's new certificate applies to the next connection.
        self._server = await asyncio.start_server(
            self._connection,
            host or "0.0.0.0",  # ":port" means every interface, as in Prometheus
            port,
            limit=MAX_LINE,
            reuse_address=True,
            backlog=1024,  # a burst of connections must not overflow the accept queue
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        tasks = [conn.task for conn in self._conns]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        if self._auth_pool is not None:
            self._auth_pool.shutdown(wait=False, cancel_futures=True)
        if self._trim_handle is not None:
            self._trim_handle.cancel()

    def metrics_pieces(self) -> list[gzipjoin.Piece]:
        """The /metrics body as compressed pieces: the targets', then the exporter's own."""
        start = time.perf_counter()
        pieces = self.renderer.pieces()
        self.app.own.render_time.observe(time.perf_counter() - start)
        pieces.append(gzipjoin.deflate(self.app.own.text().encode()))
        return pieces

    def landing_page(self) -> str:
        rows = []
        for entry in sorted(self.app.store.entries(), key=lambda e: e.target.name):
            r = entry.result
            if r is None:
                status, detail = "pending", ""
            elif r.success:
                status, detail = "up", f"{r.duration_seconds * 1000:.0f} ms"
            else:
                assert r.failure is not None
                status = "down"
                detail = f"{r.failure.phase}: {r.failure.kind}: {r.failure.detail}"
            c = entry.canary
            if status == "up" and c is not None and not c.success:
                status, detail = "down", f"canary: {c.reason}"
            name = display_name(entry.target.name, entry.target.labels)
            rows.append(
                f"<tr class={status}><td>{html.escape(name)}</td>"
                f"<td>{html.escape(entry.target.module.name)}</td><td>{status}</td>"
                f"<td>{html.escape(detail)}</td></tr>"
            )
        # An mx: target has no entry until its MX records are looked up: list it anyway.
        for t in sorted(self.app.store.unexpanded(), key=lambda t: t.name):
            rows.append(
                f"<tr class=pending><td>{html.escape(t.name)}</td>"
                f"<td>{html.escape(t.module.name)}</td><td>pending</td>"
                "<td>MX lookup not run yet</td></tr>"
            )
        return _PAGE.format(
            version=__version__, rows="\n".join(rows) or "<tr><td colspan=4>no targets</td></tr>"
        )

    # --- connections ------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        cap = self.max_connections
        if self.ssl_context is not None:
            cap = min(cap, TLS_CONNECTIONS_CEILING)
        if len(self._conns) >= cap and not self._evict_idle():
            writer.transport.abort()  # every connection is busy answering: no room
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # The kernel's send buffer grows to 4 MB by default: a client that reads nothing
            # had the loop inflate and copy that much for it before backpressure began.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        conn = _Conn(writer, task)
        self._conns.add(conn)
        self._idle[conn] = None
        self._peak = max(self._peak, len(self._conns))
        graceful = False
        loop = asyncio.get_running_loop()
        deadline: float | None = loop.time() + FIRST_REQUEST_TIMEOUT
        try:
            ctx = self.ssl_context
            if ctx is not None:
                # No await before this: the client's hello must not reach the plain reader.
                async with asyncio.timeout_at(deadline):
                    await writer.start_tls(ctx, ssl_handshake_timeout=FIRST_REQUEST_TIMEOUT)
            first = b""
            while True:
                if deadline is None:  # kept alive: wait for the next request's first byte
                    async with asyncio.timeout(KEEPALIVE_TIMEOUT):
                        first = await reader.read(1)
                    if not first:
                        graceful = True
                        return
                    deadline = loop.time() + REQUEST_TIMEOUT
                try:
                    async with asyncio.timeout_at(deadline):
                        request = await _read_request(reader, writer, first, self._headers)
                except BadRequest as exc:
                    self._idle.pop(conn, None)
                    await self._send(writer, None, exc.status, f"{exc}\n", keep_alive=False)
                    await linger(reader, writer)
                    return
                if request is None:
                    graceful = True
                    return
                self._idle.pop(conn, None)  # busy: not to be closed for room
                if not await self._handle(request, writer):
                    graceful = True
                    return
                self._idle[conn] = None  # idle again, and now the most recently
                deadline = None
        except (TimeoutError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass  # the client went away or stalled: nothing to answer
        except Exception:
            log.exception("error serving an HTTP client")
        finally:
            self._conns.discard(conn)
            self._idle.pop(conn, None)
            self._maybe_trim()
            # Closing flushes what is still buffered; a client that stalled or failed gets
            # no such courtesy.
            if graceful:
                writer.close()
            else:
                writer.transport.abort()

    def _maybe_trim(self) -> None:
        if (
            self._trim is None
            or self._trim_handle is not None
            or self._peak < TRIM_AFTER_PEAK
            or len(self._conns) > self._peak // 4
        ):
            return

        def trim() -> None:
            self._trim_handle = None
            self._peak = len(self._conns)
            assert self._trim is not None
            # Aborted connections leave cycles (exception, traceback, frame, future) that
            # hold their buffers until a full collection, which may not come for long.
            gc.collect()
            self._trim()

        self._trim_handle = asyncio.get_running_loop().call_later(TRIM_DELAY, trim)

    def _evict_idle(self) -> bool:
        """Close the connection idle the longest to make room; False if none is idle."""
        if not self._idle:
            return False
        conn, _ = self._idle.popitem(last=False)
        self._conns.discard(conn)
        # The abort alone ends its task (its read or handshake fails at once). Cancelling it
        # made asyncio 3.11 log an error with a traceback for each (streams.py asks a
        # cancelled task for its exception): a flood of evictions filled the log.
        conn.writer.transport.abort()
        return True

    async def _handle(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is to be closed."""
        keep = request.keep_alive
        if request.method not in ("GET", "HEAD", "POST"):
            await self._send(writer, request, HTTPStatus.NOT_IMPLEMENTED, "Unsupported method\n")
            return keep
        authorized = await self._authorized(request)
        if authorized is None:
            await self._send(
                writer,
                request,
                HTTPStatus.TOO_MANY_REQUESTS,
                "Too many password checks waiting; try again\n",
                extra={"Retry-After": "1"},
                keep_alive=False,
            )
            return False
        if not authorized:
            await self._send(
                writer,
                request,
                HTTPStatus.UNAUTHORIZED,
                "Unauthorized\n",
                extra={"WWW-Authenticate": 'Basic realm="smtp-health-exporter"'},
            )
            return keep
        path = request.path
        if request.method == "POST":
            if path != "/-/reload":
                await self._send(writer, request, HTTPStatus.NOT_FOUND, "Not found\n")
            else:
                error = await self.app.reload()
                if error is None:
                    await self._send(writer, request, 200, "Reloaded\n")
                else:
                    await self._send(
                        writer,
                        request,
                        HTTPStatus.INTERNAL_SERVER_ERROR,
                        f"failed to reload config: {error}\n",
                    )
            return keep
        if path == "/metrics":
            await self._metrics(request, writer)
        elif path == "/probe":
            await self._probe(request, writer)
        elif path == "/sd":
            body = httpsd.render(self.app.config)
            await self._send(writer, request, 200, body, "application/json")
        elif path == "/":
            await self._send(writer, request, 200, self.landing_page(), "text/html; charset=utf-8")
        elif path == "/-/healthy":
            await self._send(writer, request, 200, "Healthy\n")
        elif path == "/-/ready":
            if self.app.ready:
                await self._send(writer, request, 200, "Ready\n")
            else:
                await self._send(writer, request, HTTPStatus.SERVICE_UNAVAILABLE, "Not ready\n")
        elif path == "/-/reload":
            await self._send(
                writer,
                request,
                HTTPStatus.METHOD_NOT_ALLOWED,
                "Use POST to reload\n",
                extra={"Allow": "POST"},
            )
        else:
            await self._send(writer, request, HTTPStatus.NOT_FOUND, "Not found\n")
        return keep

    async def _authorized(self, request: Request) -> bool | None:
        """Whether the request may pass; None when too many password checks are waiting."""
        web = self.web
        if web is None:
            return True
        header = request.headers.get("authorization")
        cached = web.check_basic_auth_cached(header)
        if cached is not None:
            return cached
        if self._auth_waiting >= AUTH_QUEUE or self._auth_pool is None:
            return None
        self._auth_waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._auth_pool, web.check_basic_auth, header)
        finally:
            self._auth_waiting -= 1

    def _rendering(self) -> _Rendered:
        """The rendering for a new /metrics answer: the one being written, if recent, else a
        new one. The caller counts itself in ``writing`` and must call ``_done`` after."""
        now = asyncio.get_running_loop().time()
        r = self._rendered
        if r is None or r.writing == 0 or now - r.made > SHARE_RENDER:
            r = self._rendered = _Rendered(self.metrics_pieces(), now)
        r.writing += 1
        return r

    def _done(self, r: _Rendered) -> None:
        r.writing -= 1
        if r.writing == 0 and self._rendered is r:
            self._rendered = None  # hold no copy between scrapes

    async def _metrics(self, request: Request, writer: asyncio.StreamWriter) -> None:
        rendered = self._rendering()
        try:
            await self._write_metrics(request, writer, rendered)
        finally:
            self._done(rendered)

    async def _write_metrics(
        self, request: Request, writer: asyncio.StreamWriter, rendered: _Rendered
    ) -> None:
        gzipped = _accepts_gzip(request.headers.get("accept-encoding", ""))
        pieces = rendered.pieces
        extra = {"Vary": "Accept-Encoding"}
        body: Iterator[bytes]
        if gzipped:
            extra["Content-Encoding"] = "gzip"
            if rendered.gzipped is None:
                rendered.gzipped = gzipjoin.join(pieces)
            chunks = rendered.gzipped
            length = sum(map(len, chunks))
            body = write_chunks(chunks)
        else:
            length = sum(p.length for p in pieces)
            body = inflated(pieces)
        async with asyncio.timeout(RESPONSE_TIMEOUT):
            writer.write(self._head(request, 200, CONTENT_TYPE, length, extra))
            if request.method == "HEAD":
                await writer.drain()
                return
            # A piece at a time, each once the client has taken most of the one before:
            # a slow reader then holds ~WRITE_CHUNK of its answer, not all of it (500 slow
            # readers of 6 MB answers took RSS from 83 MB to 1.5 GB). drain() returns at
            # once while the transport's buffer is low, so a fast reader costs no extra
            # trips through the loop.
            sent = 0
            writer.transport.set_write_buffer_limits(high=WRITE_CHUNK)
            for chunk in body:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                if sent >= YIELD_EVERY:  # inflating is CPU on the loop: let probes in
                    sent = 0
                    await asyncio.sleep(0)

    async def _probe(self, request: Request, writer: asyncio.StreamWriter) -> None:
        params = urllib.parse.parse_qs(request.query)
        target = (params.get("target") or [""])[0]
        if not target:
            await self._send(
                writer, request, HTTPStatus.BAD_REQUEST, "target parameter is missing\n"
            )
            return
        module = (params.get("module") or [None])[0]
        status, body = await self.app.probe(
            target, module, request.headers.get("x-prometheus-scrape-timeout-seconds")
        )
        await self._send(
            writer, request, status, body, CONTENT_TYPE if status == 200 else "text/plain"
        )

    def _head(
        self,
        request: Request | None,
        status: int,
        content_type: str,
        length: int,
        extra: dict[str, str],
        *,
        keep_alive: bool | None = None,
    ) -> bytes:
        if keep_alive is None:
            keep_alive = request is not None and request.keep_alive
        phrase = HTTPStatus(status).phrase
        headers = {
            "Server": f"smtp-health-exporter/{__version__}",
            "Date": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
            "Content-Type": content_type,
            "Content-Length": str(length),
            **(self.web.headers if self.web else {}),
            **extra,
        }
        if not keep_alive:
            headers["Connection"] = "close"
        lines = [f"HTTP/1.1 {int(status)} {phrase}"] + [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        request: Request | None,
        status: int,
        body: str,
        content_type: str = "text/plain; charset=utf-8",
        extra: dict[str, str] | None = None,
        *,
        keep_alive: bool | None = None,
    ) -> None:
        data = body.encode("utf-8")
        extra = dict(extra or {})
        accept = request.headers.get("accept-encoding", "") if request else ""
        if len(data) > 1024 and _accepts_gzip(accept):
            data = gzip.compress(data, compresslevel=1)
            extra["Content-Encoding"] = "gzip"
        head = self._head(request, status, content_type, len(data), extra, keep_alive=keep_alive)
        writer.write(head if request is not None and request.method == "HEAD" else head + data)
        async with asyncio.timeout(RESPONSE_TIMEOUT):  # wait_for would make a task per answer
            await writer.drain()


_VERSION = re.compile(r"HTTP/1\.[0-9]")
_DIGITS = re.compile(r"[0-9]+")


async def _read_request(
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


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>SMTP health exporter</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 10px;text-align:left}}
.up td:nth-child(3){{color:green}} .down td:nth-child(3){{color:#b00}}</style></head>
<body><h1>SMTP health exporter</h1><p>version {version} &middot;
<a href="metrics">metrics</a> &middot; <a href="-/healthy">healthy</a> &middot;
<a href="-/ready">ready</a></p>
<table><tr><th>target</th><th>module</th><th>status</th><th>last probe</th></tr>
{rows}
</table></body></html>
"""


def _accepts_gzip(header: str) -> bool:
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
