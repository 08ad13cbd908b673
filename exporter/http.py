"""HTTP endpoints: /metrics, a landing page, /-/healthy, /-/ready, POST /-/reload.

A threaded stdlib server: scrapes render from the store's snapshot without touching the
event loop; only /-/reload crosses into it. TLS and basic auth come from --web.config.file.
"""

from __future__ import annotations

import gzip
import html
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from . import __version__, gzipjoin
from .metrics import Renderer
from .results import display_name
from .selfmetrics import ExporterMetrics
from .store import ResultStore

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A slow or stalled client must not hold a handler thread for ever.
CLIENT_TIMEOUT = 30.0


class WebAuth(Protocol):
    headers: Any

    def check_basic_auth(self, authorization_header: str | None) -> bool: ...


class App(Protocol):
    """What the HTTP layer needs from the running exporter."""

    store: ResultStore
    own: ExporterMetrics
    ready: bool

    def reload_from_thread(self) -> str | None:
        """Reload the config; None on success, else the error message."""
        ...

    def probe_from_thread(
        self, target: str, module: str | None, scrape_timeout: str | None
    ) -> tuple[int, str]: ...


class Server:
    def __init__(
        self,
        app: App,
        address: tuple[str, int],
        web: WebAuth | None = None,
        ssl_context: Any = None,
    ) -> None:
        self.app = app
        self.renderer = Renderer(app.store)
        handler = _make_handler(self)
        self.httpd = ThreadingHTTPServer(address, handler)
        self.httpd.daemon_threads = True
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.web = web
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def metrics_body(self, gzipped: bool) -> tuple[int, Iterable[bytes]]:
        """The /metrics body as (length, chunks to write): the targets' pieces, then the
        exporter's own metrics. Compressed, it is one gzip member joined from cached pieces;
        plain, the pieces are inflated one at a time as they are written."""
        start = time.perf_counter()
        pieces = self.renderer.pieces()
        self.app.own.render_time.observe(time.perf_counter() - start)
        pieces.append(gzipjoin.deflate(self.app.own.text().encode()))
        if gzipped:
            chunks = gzipjoin.join(pieces)
            return sum(map(len, chunks)), chunks
        return sum(p.length for p in pieces), map(gzipjoin.inflate, pieces)

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
            name = display_name(entry.target.name, entry.target.labels)
            rows.append(
                f"<tr class={status}><td>{html.escape(name)}</td>"
                f"<td>{html.escape(entry.target.module.name)}</td><td>{status}</td>"
                f"<td>{html.escape(detail)}</td></tr>"
            )
        return _PAGE.format(
            version=__version__, rows="\n".join(rows) or "<tr><td colspan=4>no targets</td></tr>"
        )


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


def _make_handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = CLIENT_TIMEOUT
        server_version = f"smtp-health-exporter/{__version__}"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def setup(self) -> None:
            super().setup()
            # TLS handshakes happen here, in the handler thread, not in the accept loop,
            # so one client that never finishes its handshake cannot block the others.
            do_handshake = getattr(self.connection, "do_handshake", None)
            if do_handshake is not None:
                self.connection.settimeout(CLIENT_TIMEOUT)
                do_handshake()

        def _send(
            self,
            status: int,
            body: str,
            content_type: str = "text/plain; charset=utf-8",
            extra: dict[str, str] | None = None,
        ) -> None:
            data = body.encode("utf-8")
            headers = dict(extra or {})
            if len(data) > 1024 and _accepts_gzip(self.headers.get("Accept-Encoding", "")):
                data = gzip.compress(data, compresslevel=1)
                headers["Content-Encoding"] = "gzip"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in {**(server.web.headers if server.web else {}), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _metrics(self) -> None:
            gzipped = _accepts_gzip(self.headers.get("Accept-Encoding", ""))
            length, chunks = server.metrics_body(gzipped)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(length))
            headers = dict(server.web.headers if server.web else {})
            if gzipped:
                headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                for chunk in chunks:
                    self.wfile.write(chunk)

        def _authorized(self) -> bool:
            if server.web is None or server.web.check_basic_auth(self.headers.get("Authorization")):
                return True
            self._send(
                HTTPStatus.UNAUTHORIZED,
                "Unauthorized\n",
                extra={"WWW-Authenticate": 'Basic realm="smtp-health-exporter"'},
            )
            return False

        def do_GET(self) -> None:
            if not self._authorized():
                return
            path, _, query = self.path.partition("?")
            if path == "/probe":
                self._probe(query)
                return
            routes: dict[str, Callable[[], None]] = {
                "/": lambda: self._send(200, server.landing_page(), "text/html; charset=utf-8"),
                "/-/healthy": lambda: self._send(200, "Healthy\n"),
                "/-/ready": lambda: (
                    self._send(200, "Ready\n")
                    if server.app.ready
                    else self._send(HTTPStatus.SERVICE_UNAVAILABLE, "Not ready\n")
                ),
                "/-/reload": lambda: self._send(
                    HTTPStatus.METHOD_NOT_ALLOWED, "Use POST to reload\n", extra={"Allow": "POST"}
                ),
            }
            if path == "/metrics":
                self._metrics()
                return
            route = routes.get(path)
            if route is None:
                self._send(HTTPStatus.NOT_FOUND, "Not found\n")
            else:
                route()

        do_HEAD = do_GET

        def _probe(self, query: str) -> None:
            params = urllib.parse.parse_qs(query)
            target = (params.get("target") or [""])[0]
            if not target:
                self._send(HTTPStatus.BAD_REQUEST, "target parameter is missing\n")
                return
            module = (params.get("module") or [None])[0]
            status, body = server.app.probe_from_thread(
                target, module, self.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
            )
            self._send(status, body, CONTENT_TYPE if status == 200 else "text/plain")

        def do_POST(self) -> None:
            # Read (and ignore) a small body so the kept-alive connection stays in sync.
            length = int(self.headers.get("Content-Length") or 0)
            if length > 65536:
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Body too large\n")
                self.close_connection = True
                return
            if length:
                self.rfile.read(length)
            if not self._authorized():
                return
            if self.path.split("?", 1)[0] != "/-/reload":
                self._send(HTTPStatus.NOT_FOUND, "Not found\n")
                return
            error = server.app.reload_from_thread()
            if error is None:
                self._send(200, "Reloaded\n")
            else:
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, f"failed to reload config: {error}\n")

    return Handler


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
