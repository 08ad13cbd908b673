"""Server-side TLS for the HTTP server, over memory BIOs, between the socket's transport and
the connection's stream protocol (as ``smtp.transport._TLS`` does for the probe's client side).

asyncio's own TLS layer (``loop.start_tls``, ``SSLProtocol``) gives every connection a
256 KiB read buffer (a zero-filled ``bytearray``, so resident), an ``SSLObject`` and a dozen
Python objects before the client has sent a byte: 2,000 idle TLS connections took 400 MB at
the peak, and the ~9 KiB of small Python objects each left CPython's allocator holding
10 MiB of 1 MiB arenas after they had gone (an arena is returned only once empty, and the
objects made meanwhile pin some of them). Here a connection that has sent nothing costs what
a plain one costs; the ``SSLObject`` is made when the first bytes (the ClientHello) arrive,
and records are read from the socket's own ``data_received`` bytes, with no buffer of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any


class TLSConnection(asyncio.Transport, asyncio.Protocol):
    """The protocol of the socket's transport, and the transport of the stream protocol
    (``app``) above it: ciphertext in and out below, plaintext above. The handshake runs as
    records arrive; the connection's first-request deadline, kept by its reader, covers it.
    A failed handshake or a broken record aborts the connection, which the reader above sees
    as a lost connection."""

    __slots__ = ("_app", "_closing", "_context", "_in", "_obj", "_out", "_paused", "_raw", "_ready")

    def __init__(self, context: ssl.SSLContext, app: asyncio.Protocol) -> None:
        # No super().__init__(): it would give each connection an ``_extra`` dict, and
        # get_extra_info below answers without one.
        self._context = context
        self._app = app
        self._raw: asyncio.Transport | None = None
        self._in: ssl.MemoryBIO | None = None
        self._out: ssl.MemoryBIO | None = None
        self._obj: ssl.SSLObject | None = None
        self._ready = False  # handshake done
        self._closing = False
        self._paused = False  # the socket's transport asked us to stop writing

    # --- below: the socket's transport calls these --------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        self._app.connection_made(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._obj is None:  # the ClientHello's first bytes: only now the TLS state
            self._in = ssl.MemoryBIO()
            self._out = ssl.MemoryBIO()
            self._obj = self._context.wrap_bio(self._in, self._out, server_side=True)
        assert self._in is not None
        self._in.write(data)
        try:
            if not self._ready:
                try:
                    self._obj.do_handshake()
                except ssl.SSLWantReadError:
                    return
                finally:
                    self._flush()
                self._ready = True
            plain = self._read()
        except ssl.SSLError:
            self.abort()  # a failed handshake or a broken record: nothing to answer
            return
        if plain:
            self._app.data_received(plain)

    def _read(self) -> bytes:
        """The application data the records received so far carry; at the client's
        close_notify the stream protocol gets its end of file."""
        assert self._obj is not None
        chunks = []
        while True:
            try:
                chunk = self._obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            if not chunk:
                self._flush()
                data = b"".join(chunks)
                if data:
                    self._app.data_received(data)
                self._app.eof_received()
                self.close()
                return b""
            chunks.append(chunk)
        self._flush()  # what OpenSSL answers on its own (a key update, session tickets)
        return b"".join(chunks)

    def eof_received(self) -> bool:
        self._app.eof_received()
        return False  # no half-closed TLS: the socket's transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        # Let go of the TLS state and the socket's transport at once: the connection above
        # and this one refer to each other, and a cycle waits for a full collection (after a
        # flood of 2,000 TLS connections, such garbage held 8 MiB for as long).
        self._obj = self._in = self._out = None
        self._raw = None
        self._app.connection_lost(exc)

    def pause_writing(self) -> None:
        self._paused = True
        self._app.pause_writing()

    def resume_writing(self) -> None:
        self._paused = False
        self._app.resume_writing()

    # --- above: the stream protocol (its reader and writer) calls these -----------------
    def _flush(self) -> None:
        if self._out is not None and self._out.pending and self._raw is not None:
            self._raw.write(self._out.read())

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._obj is None or not self._ready:
            return  # nothing is written before a request has been read
        try:
            self._obj.write(data)
        except ssl.SSLError:
            self.abort()
            return
        self._flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close")

    def close(self) -> None:
        """Send close_notify, then close once what is buffered has been sent (the client's
        own close_notify is not waited for, as HTTP servers do)."""
        if self._closing:
            return
        self._closing = True
        if self._obj is not None and self._ready:
            # SSLWantReadError: ours is sent, the client's is not waited for.
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._obj.unwrap()
            self._flush()
        if self._raw is not None:
            self._raw.close()

    def abort(self) -> None:
        self._closing = True
        if self._raw is not None:
            self._raw.abort()

    def is_closing(self) -> bool:
        return self._closing or (self._raw is not None and self._raw.is_closing())

    def pause_reading(self) -> None:
        if self._raw is not None:
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if self._raw is not None:
            self._raw.resume_reading()

    def is_reading(self) -> bool:
        return self._raw is not None and self._raw.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size() if self._raw is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        assert self._raw is not None
        return self._raw.get_write_buffer_limits()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sslcontext":
            return self._context
        if name == "ssl_object":
            return self._obj
        if name == "peercert":
            return self._obj.getpeercert() if self._obj is not None and self._ready else default
        if name == "cipher":
            return self._obj.cipher() if self._obj is not None and self._ready else default
        return self._raw.get_extra_info(name, default) if self._raw is not None else default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._app = protocol
        if self._paused:  # the new protocol must see the pause its resume will end
            protocol.pause_writing()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._app
