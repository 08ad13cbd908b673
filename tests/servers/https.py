"""A small HTTPS server on 127.0.0.1 for tests (stdlib http.server + ssl).

Serves fixed answers per path, e.g. an MTA-STS policy::

    routes = {"/.well-known/mta-sts.txt": Response(200, b"version: STSv1\\n...")}
    with HTTPSServer(server_context, routes) as server:
        ...  # https://mta-sts.example.test:{server.port}/.well-known/mta-sts.txt

Unknown paths get 404. The TLS handshake runs in the connection's own thread (never in
the accept loop), every socket operation has a timeout, and ``stop()`` joins the thread,
so a client that goes quiet cannot hang a test. ``requests`` records (path, Host header)
of each request; ``errors`` what went wrong on the server side (failed handshakes...).
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from .lifecycle import Startable

ADDRESS = "127.0.0.1"
SOCKET_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
MAX_RECORDED = 200


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str | None = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()
    chunked: bool = False  # send the body with Transfer-Encoding: chunked


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT

    def setup(self) -> None:
        self.request.settimeout(SOCKET_TIMEOUT)
        self.request = self.server.context.wrap_socket(self.request, server_side=True)
        super().setup()

    def do_GET(self) -> None:
        owner = self.server.owner
        owner._record(self.path, self.headers.get("Host", ""))
        response = owner.routes.get(self.path, Response(404, b"not found\n"))
        self.send_response(response.status)
        if response.content_type is not None:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)
        if response.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if response.chunked:
            for i in range(0, len(response.body), 1000):
                part = response.body[i : i + 1000]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(response.body)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: HTTPSServer
    context: ssl.SSLContext

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        self.owner._error(f"{type(exc).__name__}: {exc}")


class HTTPSServer(Startable):
    """HTTPS on 127.0.0.1, a free port, answers from ``routes`` (path -> Response)."""

    def __init__(
        self, context: ssl.SSLContext, routes: Mapping[str, Response] | None = None
    ) -> None:
        self.context = context
        self.routes = dict(routes or {})
        self.address = ADDRESS
        self.port = 0
        self._lock = threading.Lock()
        self._requests: list[tuple[str, str]] = []
        self._errors: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def requests(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._requests)

    @property
    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    def _record(self, path: str, host: str) -> None:
        with self._lock:
            if len(self._requests) < MAX_RECORDED:
                self._requests.append((path, host))

    def _error(self, text: str) -> None:
        with self._lock:
            if len(self._errors) < MAX_RECORDED:
                self._errors.append(text)

    def start(self) -> Self:
        server = _Server((ADDRESS, 0), _Handler)
        server.owner = self
        server.context = self.context
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        # The socket listens from the constructor on: connections made before the loop
        # runs wait in the backlog, so no readiness round trip is needed.
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
            if self._thread.is_alive():
                raise RuntimeError("HTTPSServer thread did not stop")
        self._server = None
