"""Connections: accept, TLS, keep-alive, deadlines, room for new clients, memory after a surge.
Each request read off a connection is answered by ``Routes``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import ssl
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from ..httplimits import (
    CONNECTIONS_CEILING,
    TLS_CONNECTIONS_CEILING,
    HeaderBudget,
    connection_cap,
    linger,
    malloc_trim,
    raise_fd_limit,
)
from .request import MAX_LINE, BadRequest, read_request
from .routes import App, Routes, WebAuth, _Rendered
from .tls import TLSConnection

log = logging.getLogger(__name__)
# A slow or stalled client must not hold a connection for ever.
FIRST_REQUEST_TIMEOUT = 10.0  # accept -> TLS handshake and the first request's headers
KEEPALIVE_TIMEOUT = 90.0  # a kept-alive connection's wait for its next request
REQUEST_TIMEOUT = 10.0  # the first byte of a later request -> its headers and body
HEADER_BUDGET = 32 << 20  # header bytes held by all requests being read at once
RESERVED_FDS = 256  # for config and certificate files, DNS, the scheduler (besides probes)
# Per connection, in the kernel (which doubles it): 512 KiB in flight is 10 MB/s at 50 ms.
SEND_BUFFER = 256 << 10
# After a surge of connections (an attack, a stampede) has gone, hand the freed memory back
# to the system: glibc keeps freed heap pages otherwise, and RSS stayed at 700 MB+.
TRIM_AFTER_PEAK = 64  # connections at the surge's peak
TRIM_DELAY = 1.0  # seconds after the surge fell to a quarter of its peak
# At most one trim per this many seconds: a full collection takes 0.1 s+ on a large heap,
# and a client opening and closing 64 connections in turn must not make the loop do it
# every second.
TRIM_EVERY = 10.0


class _Conn(asyncio.Protocol):
    """One client connection; ``Server._idle`` holds it while it waits for a request. Until
    its first bytes arrive (after the TLS handshake, with TLS) it is its transport's protocol
    and an idle connection costs the socket, the transport and this: no task, no streams
    (asyncio's ~5 KiB of small objects each, whose arenas CPython kept after a flood of idle
    connections had gone). Then ``Server._serve`` reads and answers its requests."""

    __slots__ = ("deadline", "server", "task", "timer", "transport")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.deadline = 0.0  # loop time by which its first request must have been read
        self.timer: asyncio.TimerHandle | None = None  # closes it at the deadline, until then
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._admit(self)

    def data_received(self, data: bytes) -> None:
        self.server._start(self, data)

    def eof_received(self) -> bool:
        return False  # closed before sending a byte: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._gone(self)  # only before _start, which hands the transport on


class Server(Routes):
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
        self._trimmed = float("-inf")  # loop time of the last trim
        self._rendered: _Rendered | None = None  # while an answer is written from it

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        host, port = self.address
        self.max_connections = connection_cap(raise_fd_limit(), self.reserved_fds)
        self._auth_pool = ThreadPoolExecutor(1, thread_name_prefix="bcrypt")
        loop = asyncio.get_running_loop()

        # TLS (when configured at the connection's accept: a reload's new certificate applies
        # to the next one) goes below the connection. The handshake counts against the first
        # request's deadline, and a connection stuck in it can be closed to make room, as any
        # idle one.
        def factory() -> asyncio.Protocol:
            conn = _Conn(self)
            ctx = self.ssl_context
            return conn if ctx is None else TLSConnection(ctx, conn)

        self._server = await loop.create_server(
            factory,
            host or "0.0.0.0",  # ":port" means every interface, as in Prometheus
            port,
            reuse_address=True,
            backlog=1024,  # a burst of connections must not overflow the accept queue
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        tasks = [conn.task for conn in self._conns if conn.task is not None]
        for task in tasks:
            task.cancel()
        for conn in list(self._conns):
            if conn.task is None and conn.transport is not None:
                conn.transport.abort()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        if self._auth_pool is not None:
            self._auth_pool.shutdown(wait=False, cancel_futures=True)
        if self._trim_handle is not None:
            self._trim_handle.cancel()

    # --- connections ------------------------------------------------------------------
    def _admit(self, conn: _Conn) -> None:
        """A new connection: room for it (closing the one idle the longest if need be), its
        send buffer, its first request's deadline."""
        transport = conn.transport
        assert transport is not None
        cap = self.max_connections
        if isinstance(transport, TLSConnection):
            cap = min(cap, TLS_CONNECTIONS_CEILING)
        if len(self._conns) >= cap and not self._evict_idle():
            transport.abort()  # every connection is busy answering: no room
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # The kernel's send buffer grows to 4 MB by default: a client that reads nothing
            # had the loop inflate and copy that much for it before backpressure began.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._conns.add(conn)
        self._idle[conn] = None
        self._peak = max(self._peak, len(self._conns))
        loop = asyncio.get_running_loop()
        conn.deadline = loop.time() + FIRST_REQUEST_TIMEOUT
        conn.timer = loop.call_at(conn.deadline, transport.abort)

    def _start(self, conn: _Conn, data: bytes) -> None:
        """A connection's first bytes: streams and a task to read and answer its requests."""
        transport = conn.transport
        assert transport is not None
        if conn.timer is not None:
            conn.timer.cancel()  # the task keeps the deadline from here
            conn.timer = None
        if conn not in self._conns:  # closed to make room while the bytes were on their way
            transport.abort()
            return
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(MAX_LINE, loop)
        stream = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport.set_protocol(stream)
        stream.connection_made(transport)
        writer = asyncio.StreamWriter(transport, stream, reader, loop)
        stream.data_received(data)
        conn.task = loop.create_task(self._serve(conn, reader, writer))

    def _gone(self, conn: _Conn) -> None:
        """A connection closed before its first bytes (by the client, its deadline, or to
        make room)."""
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        self._conns.discard(conn)
        self._idle.pop(conn, None)
        conn.transport = None  # no cycle through a TLS layer that refers back to conn
        self._maybe_trim()

    async def _serve(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        graceful = False
        loop = asyncio.get_running_loop()
        deadline: float | None = conn.deadline
        try:
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
                        request = await read_request(reader, writer, first, self._headers)
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

        loop = asyncio.get_running_loop()

        def trim() -> None:
            self._trim_handle = None
            self._trimmed = loop.time()
            self._peak = len(self._conns)
            assert self._trim is not None
            # Aborted connections leave cycles (exception, traceback, frame, future) that
            # hold their buffers until a full collection, which may not come for long.
            gc.collect()
            self._trim()

        delay = max(TRIM_DELAY, self._trimmed + TRIM_EVERY - loop.time())
        self._trim_handle = loop.call_later(delay, trim)

    def _evict_idle(self) -> bool:
        """Close the connection idle the longest to make room; False if none is idle."""
        if not self._idle:
            return False
        conn, _ = self._idle.popitem(last=False)
        self._conns.discard(conn)
        # The abort alone ends its task, if it has one (its read fails at once). Cancelling
        # it made asyncio 3.11 log an error with a traceback for each (streams.py asks a
        # cancelled task for its exception): a flood of evictions filled the log.
        if conn.transport is not None:
            conn.transport.abort()
        return True
