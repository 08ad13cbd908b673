"""A client TLS session over memory BIOs, driven by the connection's protocol callbacks."""

from __future__ import annotations

import asyncio
import ssl

from .describe import describe

_SSL_SHUTDOWN_SECONDS = 2.0


class MemoryTLS:
    """A client TLS session over memory BIOs, on top of a plain transport: records in
    through ``received``, out as soon as OpenSSL produces them. Errors are recorded
    (``error`` during the handshake, ``closed`` after it), never raised, so the connection's
    reader reports them in the phase that was reading."""

    __slots__ = ("_in", "_out", "_shutdown_timer", "_transport", "closed", "error", "obj", "ready")

    def __init__(
        self, context: ssl.SSLContext, server_name: str | None, transport: asyncio.Transport
    ) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._transport = transport
        self.obj = context.wrap_bio(self._in, self._out, server_hostname=server_name)
        self.ready = False
        self.error: ssl.SSLError | None = None
        self.closed: str | None = None
        self._shutdown_timer: asyncio.TimerHandle | None = None

    def _flush(self) -> None:
        if self._out.pending and not self._transport.is_closing():
            self._transport.write(self._out.read())

    def handshake(self) -> None:
        """One step of the handshake, with whatever records have arrived."""
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            self.error = exc
        else:
            self.ready = True
        self._flush()

    def received(self, data: bytes) -> bytes:
        """Feed records from the server; the application bytes they carried."""
        if self.error is not None or self.closed is not None:
            return b""  # nothing more is read: nothing more is buffered
        if data:
            self._in.write(data)
        if not self.ready:
            self.handshake()
            return b""
        if self._shutdown_timer is not None:
            self._finish_shutdown()
            return b""
        chunks = []
        while True:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            except ssl.SSLError as exc:
                self.closed = f"connection lost: {describe(exc)}"
                break
            if not chunk:  # the server's close_notify
                self.closed = "connection closed by server"
                break
            chunks.append(chunk)
        self._flush()  # anything OpenSSL answers on its own (a key update, an alert)
        return b"".join(chunks)

    def send(self, data: bytes | memoryview) -> None:
        try:
            self.obj.write(data)
        except ssl.SSLError as exc:
            self.closed = self.closed or f"connection lost: {describe(exc)}"
            return
        self._flush()

    def shutdown(self) -> None:
        """Send close_notify; close the transport once the server has answered with its
        own, or closed, or after _SSL_SHUTDOWN_SECONDS."""
        self._shutdown_timer = asyncio.get_running_loop().call_later(
            _SSL_SHUTDOWN_SECONDS, self._transport.abort
        )
        self._finish_shutdown()

    def _finish_shutdown(self) -> None:
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            self._flush()  # our close_notify; the server's is still to come
            return
        except (ssl.SSLError, ValueError):
            self.stop_shutdown_timer()
            self._transport.abort()
            return
        self._flush()
        self.stop_shutdown_timer()
        self._transport.close()

    def stop_shutdown_timer(self) -> None:
        if self._shutdown_timer is not None:
            self._shutdown_timer.cancel()
