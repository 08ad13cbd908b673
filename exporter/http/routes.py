"""Routing: what each path answers, and how an answer is written (headers, gzip)."""

from __future__ import annotations

import asyncio
import gzip
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

from .. import __version__, gzipjoin, httpsd
from ..config import Config
from ..httplimits import WRITE_CHUNK, inflated, write_chunks
from ..metrics import Renderer
from ..runner import Refusal, RefusalKind
from ..selfmetrics import ExporterMetrics
from ..store import ResultStore
from .page import landing_page
from .request import Request, accepts_gzip

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RESPONSE_TIMEOUT = 60.0  # writing one whole answer (4 MB gzip at 10,000 targets: 70 kB/s)
YIELD_EVERY = 1 << 16  # plain /metrics: let other work run after each 64 KiB written
# bcrypt checks: one at a time in their own thread (a flood of bad logins must not starve
# the loop's default pool, which config reloads use), and at most this many waiting.
AUTH_QUEUE = 4
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
    renderer: Renderer  # the /metrics body, rendered as results are recorded
    own: ExporterMetrics
    ready: bool
    config: Config | None  # its targets are listed on /sd

    async def reload(self) -> str | None:
        """Reload the config; None on success, else the error message."""
        ...

    async def probe(
        self, target: str, module: str | None, scrape_timeout: str | None, debug: bool = False
    ) -> str | Refusal: ...


_REFUSAL_STATUS = {
    RefusalKind.INVALID: HTTPStatus.BAD_REQUEST,
    RefusalKind.BUSY: HTTPStatus.SERVICE_UNAVAILABLE,
    RefusalKind.FORBIDDEN: HTTPStatus.FORBIDDEN,
}


@dataclass(eq=False, slots=True)
class _Rendered:
    """One rendering of /metrics, shared by the requests of a burst (``SHARE_RENDER``)."""

    pieces: list[gzipjoin.Piece]
    made: float  # loop time
    writing: int = 0  # answers being written from it
    gzipped: list[bytes] | None = None  # the pieces joined, once a request asked for gzip


class Routes:
    """The answers of the HTTP server (``Server`` adds the connections): one method per
    path, and ``_send`` / ``_head`` to write an answer."""

    app: App
    web: WebAuth | None
    _auth_pool: ThreadPoolExecutor | None
    _auth_waiting: int
    _rendered: _Rendered | None

    def metrics_pieces(self) -> list[gzipjoin.Piece]:
        """The /metrics body as compressed pieces: the targets', then the exporter's own."""
        start = time.perf_counter()
        pieces = self.app.renderer.pieces()
        self.app.own.render_time.observe(time.perf_counter() - start)
        pieces.append(gzipjoin.deflate(self.app.own.text().encode()))
        return pieces

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
            await self._send(
                writer,
                request,
                200,
                landing_page(self.app.store, self.app.config),
                "text/html; charset=utf-8",
            )
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
        gzipped = accepts_gzip(request.headers.get("accept-encoding", ""))
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
        # As blackbox_exporter: debug=true answers the transcript, metrics and module.
        debug = (params.get("debug") or [""])[0].lower() == "true"
        answer = await self.app.probe(
            target, module, request.headers.get("x-prometheus-scrape-timeout-seconds"), debug
        )
        if isinstance(answer, Refusal):
            status = _REFUSAL_STATUS[answer.kind]
            await self._send(writer, request, status, answer.message, "text/plain")
        elif debug:
            await self._send(writer, request, HTTPStatus.OK, answer)  # text/plain, utf-8
        else:
            await self._send(writer, request, HTTPStatus.OK, answer, CONTENT_TYPE)

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
        if len(data) > 1024 and accepts_gzip(accept):
            data = gzip.compress(data, compresslevel=1)
            extra["Content-Encoding"] = "gzip"
        head = self._head(request, status, content_type, len(data), extra, keep_alive=keep_alive)
        writer.write(head if request is not None and request.method == "HEAD" else head + data)
        async with asyncio.timeout(RESPONSE_TIMEOUT):  # wait_for would make a task per answer
            await writer.drain()
