"""HTTP endpoints: /metrics, /probe, a landing page, /-/healthy, /-/ready, POST /-/reload.

A small HTTP/1.1 server on the exporter's event loop (asyncio streams, keep-alive, TLS and
basic auth from --web.config.file). On the loop, a /probe request awaits its probe in its
own coroutine, as a scheduled probe does: no thread hand-offs (which cost /probe a third of
its CPU when it was served from threads). /metrics is built on the loop too: compressing the
shards that changed takes ~30-50 ms at 10,000 targets, once per scrape, and a worker thread
measured slower (zlib hands the GIL to the busy loop and back hundreds of times a scrape).
bcrypt checks, tens of milliseconds each, run in a thread unless the credentials passed
recently, and a plain (uncompressed) /metrics is inflated in a thread a few MB at a time.

Every client is bounded: the request line and each header by ``MAX_LINE``, headers by
count, bodies by size, and reading a request or writing an answer by ``CLIENT_TIMEOUT``;
connections beyond ``MAX_CONNECTIONS`` are closed at once.
"""

from __future__ import annotations

import asyncio
import gzip
import html
import logging
import ssl
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

from . import __version__, gzipjoin
from .metrics import Renderer
from .results import display_name
from .selfmetrics import ExporterMetrics
from .store import ResultStore

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A slow or stalled client must not hold a connection for ever.
CLIENT_TIMEOUT = 30.0
MAX_LINE = 16384
MAX_HEADERS = 100
MAX_BODY = 65536
MAX_CONNECTIONS = 512
PLAIN_BATCH = 4 << 20  # bytes of text inflated at a time for an uncompressed /metrics


class WebAuth(Protocol):
    headers: Any

    def check_basic_auth(self, authorization_header: str | None) -> bool: ...

    def check_basic_auth_cached(self, authorization_header: str | None) -> bool | None: ...


class App(Protocol):
    """What the HTTP layer needs from the running exporter (all called on its loop)."""

    store: ResultStore
    own: ExporterMetrics
    ready: bool

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


class Server:
    def __init__(
        self,
        app: App,
        address: tuple[str, int],
        web: WebAuth | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.address = address
        self.renderer = Renderer(app.store)
        self.web = web
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        host, port = self.address
        self._server = await asyncio.start_server(
            self._connection,
            host or "0.0.0.0",  # ":port" means every interface, as in Prometheus
            port,
            ssl=self.ssl_context,
            ssl_handshake_timeout=CLIENT_TIMEOUT if self.ssl_context else None,
            limit=MAX_LINE,
            reuse_address=True,
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

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
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._connections.add(task)
        graceful = False
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for wraps the read in a
                    # task of its own, a task per request.
                    async with asyncio.timeout(CLIENT_TIMEOUT):
                        request = await _read_request(reader)
                except BadRequest as exc:
                    await self._send(writer, None, exc.status, f"{exc}\n", keep_alive=False)
                    return
                if request is None or not await self._handle(request, writer):
                    graceful = True
                    return
        except (TimeoutError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass  # the client went away or stalled: nothing to answer
        except Exception:
            log.exception("error serving an HTTP client")
        finally:
            self._connections.discard(task)
            # Closing flushes what is still buffered; a client that stalled or failed gets
            # no such courtesy.
            if graceful:
                writer.close()
            else:
                writer.transport.abort()

    async def _handle(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is to be closed."""
        keep = request.keep_alive
        if request.method not in ("GET", "HEAD", "POST"):
            await self._send(writer, request, HTTPStatus.NOT_IMPLEMENTED, "Unsupported method\n")
            return keep
        if not await self._authorized(request):
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

    async def _authorized(self, request: Request) -> bool:
        if self.web is None:
            return True
        header = request.headers.get("authorization")
        cached = self.web.check_basic_auth_cached(header)
        if cached is not None:
            return cached
        return await asyncio.to_thread(self.web.check_basic_auth, header)

    async def _metrics(self, request: Request, writer: asyncio.StreamWriter) -> None:
        gzipped = _accepts_gzip(request.headers.get("accept-encoding", ""))
        pieces = self.metrics_pieces()
        extra = {"Vary": "Accept-Encoding"}
        if gzipped:
            extra["Content-Encoding"] = "gzip"
            chunks = gzipjoin.join(pieces)
            length = sum(map(len, chunks))
        else:
            length = sum(p.length for p in pieces)
        writer.write(self._head(request, 200, CONTENT_TYPE, length, extra))
        if request.method == "HEAD":
            await asyncio.wait_for(writer.drain(), CLIENT_TIMEOUT)
            return
        if gzipped:
            # One write: ~4 MB at 10,000 targets. A drain per piece would hand the loop
            # to the probes a thousand times in the middle of the answer.
            writer.write(b"".join(chunks))
            await asyncio.wait_for(writer.drain(), CLIENT_TIMEOUT)
            return
        # Plain (a human with curl): inflate a few MB at a time in a thread, not on the loop.
        for batch in _batches(pieces, PLAIN_BATCH):
            writer.write(await asyncio.to_thread(_inflate_all, batch))
            await asyncio.wait_for(writer.drain(), CLIENT_TIMEOUT)

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
        async with asyncio.timeout(CLIENT_TIMEOUT):  # no task per answer, as above
            await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection, None at a clean end of it."""
    try:
        line = await reader.readline()
    except (ValueError, asyncio.LimitOverrunError) as exc:
        raise BadRequest(HTTPStatus.REQUEST_URI_TOO_LONG, "Request line too long") from exc
    if not line:
        return None
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "Malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        try:
            raw = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError) as exc:
            raise BadRequest(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Header line too long"
            ) from exc
        if not raw:
            raise asyncio.IncompleteReadError(raw, None)
        text = raw.decode("latin-1").rstrip("\r\n")
        if not text:
            break
        name, sep, value = text.partition(":")
        if not sep or not name.strip() or name != name.strip():
            raise BadRequest(HTTPStatus.BAD_REQUEST, "Malformed header line")
        headers[name.lower()] = value.strip()
    else:
        raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many header lines")
    if "transfer-encoding" in headers:
        raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "Chunked request bodies are not accepted")
    try:
        length = int(headers.get("content-length") or 0)
    except ValueError as exc:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "Malformed Content-Length") from exc
    if length < 0 or length > MAX_BODY:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Body too large")
    if length:
        await reader.readexactly(length)  # read and ignore, so the next request lines up
    path, _, query = target.partition("?")
    return Request(method, path, query, version, headers)


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


def _batches(pieces: list[gzipjoin.Piece], size: int) -> Iterable[list[gzipjoin.Piece]]:
    batch: list[gzipjoin.Piece] = []
    total = 0
    for piece in pieces:
        batch.append(piece)
        total += piece.length
        if total >= size:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


def _inflate_all(pieces: list[gzipjoin.Piece]) -> bytes:
    return b"".join(map(gzipjoin.inflate, pieces))


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
