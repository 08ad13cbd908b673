"""The only place where socket and TLS exceptions become ``ProbeError``s.

``Connection`` is an asyncio protocol rather than a StreamReader: it feeds every chunk the
server sends straight into a bounded sans-IO ``Reader`` (so memory per probe is bounded by
construction, whatever the server sends), and STARTTLS can drop buffered plaintext exactly
at the switch to TLS. Time limits are not handled here: the caller runs the whole probe
under one ``asyncio.timeout_at``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Generic, Protocol, TypeVar

from ..errors import ProbeError, ProtocolError, TLSError
from ..results import FailureKind, Phase
from .describe import describe

_SSL_SHUTDOWN_SECONDS = 2.0
Item = TypeVar("Item")
_Co = TypeVar("_Co", covariant=True)


class Reader(Protocol[_Co]):
    """A sans-IO reader: bytes in, complete items out, bounded whatever it is fed."""

    def feed(self, data: bytes) -> None:
        """Take bytes from the server; raise ``ProtocolError`` when a bound is broken."""

    def pop(self) -> _Co | None:
        """The next complete item, if there is one."""

    @property
    def holds_data(self) -> bool:
        """Whether bytes were received that no popped item accounts for."""


async def connect(protocol: asyncio.Protocol, address: str, port: int) -> None:
    """Connect ``protocol``; a refusal or network error is the connect phase's failure."""
    try:
        await asyncio.get_running_loop().create_connection(lambda: protocol, address, port)
    except ConnectionRefusedError as exc:
        raise ProbeError(Phase.CONNECT, FailureKind.REFUSED, f"{address}:{port} refused") from exc
    except OSError as exc:
        raise ProbeError(Phase.CONNECT, FailureKind.NETWORK, describe(exc)) from exc


class _Closing(asyncio.Protocol):
    """Records why the connection ended (the first reason wins) and wakes the reader."""

    _closed: str | None

    def _wake(self) -> None:
        raise NotImplementedError

    def eof_received(self) -> bool:
        self._closed = self._closed or "connection closed by server"
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = self._closed or (
            f"connection lost: {describe(exc)}" if exc else "connection closed by server"
        )
        self._wake()


class Connection(_Closing, Generic[Item]):
    """One client connection: send command lines, await complete items from a sans-IO
    ``Reader`` (SMTP replies, IMAP responses, POP3 responses) fed with every byte received.

    TLS runs in this protocol, over memory BIOs, rather than in asyncio's SSLProtocol
    (``loop.start_tls``): a probe's few short records do not need its buffering and flow
    control, which cost more CPU per probe than the rest of the dialogue's Python."""

    def __init__(self, reader: Reader[Item]) -> None:
        self._reader = reader
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._broken: str | None = None  # why the reader refused the server's bytes
        self._closed: str | None = None  # why the connection ended, once it has
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.tls_object: ssl.SSLObject | None = None
        self._tls: _TLS | None = None
        self._lost: Exception | None = None  # what connection_lost was given

    # --- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._broken is not None:
            return
        if self._tls is not None:
            data = self._tls.received(data)
            if self._tls.closed is not None:
                self._closed = self._closed or self._tls.closed
            if not data:
                self._wake()
                return
        self.data_received_plain(data)

    def _wake(self) -> None:
        for waiter in (self._waiter, self._drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc
        if self._tls is not None:
            self._tls.stop_shutdown_timer()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    # --- client API -------------------------------------------------------------------
    @classmethod
    async def open(cls, address: str, port: int, reader: Reader[Item]) -> Connection[Item]:
        conn = cls(reader)
        await connect(conn, address, port)
        return conn

    async def read(self, phase: Phase) -> Item:
        """The next complete item, or the ``ProbeError`` that explains why there is none."""
        while True:
            item = self._reader.pop()
            if item is not None:
                return item
            if self._broken is not None:
                raise ProtocolError(self._broken, phase)
            if self._closed is not None:
                kind = FailureKind.NETWORK if "lost" in self._closed else FailureKind.CLOSED
                raise ProbeError(phase, kind, self._closed)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def send_line(self, line: str, phase: Phase) -> None:
        """Write one command line; CRLF is added, and a CR or LF inside is refused (it
        would let a value smuggle in a command)."""
        if "\r" in line or "\n" in line:
            raise ValueError("a command line must not contain CR or LF")
        if self._transport is not None and not self._transport.is_closing():
            self._write(line.encode("utf-8") + b"\r\n")

    def _write(self, data: bytes | memoryview) -> None:
        assert self._transport is not None
        if self._tls is None:
            self._transport.write(data)
            return
        self._tls.send(data)
        if self._tls.closed is not None:  # the TLS session failed: the next read says so
            self._closed = self._closed or self._tls.closed
            self._transport.abort()

    async def send_bytes(self, data: bytes, phase: Phase) -> None:
        """Write a message body with flow control, so a server that reads slowly cannot make
        us buffer more than the transport's high-water mark beyond the message itself."""
        view = memoryview(data)
        for pos in range(0, len(view), 65536):
            if self._closed is not None or self._transport is None:
                raise ProbeError(phase, FailureKind.CLOSED, self._closed or "not connected")
            self._write(view[pos : pos + 65536])
            while self._write_paused and self._closed is None:
                self._drain_waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._drain_waiter
                finally:
                    self._drain_waiter = None

    async def start_tls(self, context: ssl.SSLContext, server_name: str | None) -> ssl.SSLObject:
        """Upgrade to TLS: after the server agreed to STARTTLS (or STLS), or for implicit TLS.

        A server cannot send TLS bytes before our ClientHello, so anything received after its
        yes is plaintext the server (or a man in the middle) slipped in: the STARTTLS
        injection of RFC 3207 §4.2 / CVE-2011-0411. We refuse to go on rather than quietly
        dropping it, so the monitor shows it."""
        plain = self._ready_for_tls()
        try:
            tls = _TLS(context, server_name, plain)
        except ssl.SSLError as exc:
            raise TLSError(Phase.TLS_HANDSHAKE, FailureKind.TLS, describe(exc)) from exc
        self._tls = tls
        tls.handshake()  # the ClientHello; data_received moves the handshake on from here
        while not tls.ready:
            if tls.error is not None:
                plain.abort()
                raise TLSError(Phase.TLS_HANDSHAKE, FailureKind.TLS, describe(tls.error))
            if self._closed is not None:
                raise ProbeError(Phase.TLS_HANDSHAKE, *self._cut_during_handshake())
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        # Records that came with the server's last flight (an implicit-TLS server's greeting,
        # say): into the reader, as any later data.
        pending = tls.received(b"")
        if pending:
            self.data_received_plain(pending)
        self.tls_object = tls.obj
        return tls.obj

    def _cut_during_handshake(self) -> tuple[FailureKind, str]:
        """The kind and detail of a connection that ended mid-handshake, worded as they
        were when asyncio's SSLProtocol ran the handshake (tlsscan tells a refusal by
        closing from a failure by them)."""
        exc = self._lost
        if exc is None:  # the server's FIN: SSLProtocol raised ConnectionResetError
            return FailureKind.CLOSED, "ConnectionResetError"
        if isinstance(exc, ConnectionError):
            return FailureKind.CLOSED, describe(exc)
        return FailureKind.NETWORK, describe(exc)

    def data_received_plain(self, data: bytes) -> None:
        """Plain (or already decrypted) bytes into the reader."""
        try:
            self._reader.feed(data)
        except ProtocolError as exc:
            self._broken = exc.detail
            if self._transport is not None:
                # Stop reading at once: the bound holds only if nothing more is buffered.
                self._transport.abort()
        self._wake()

    def close(self, *, graceful: bool) -> None:
        if self._transport is None:
            return
        if graceful and self._tls is not None and self._tls.ready:
            # close_notify, then the socket once the server's close_notify (or its FIN)
            # arrives, or after _SSL_SHUTDOWN_SECONDS: what loop.start_tls's transport did.
            self._tls.shutdown()
            return
        if graceful:
            self._transport.close()
        else:
            self._transport.abort()

    def detach(self) -> RawConnection:
        """Hand the (plaintext) connection over to a ``RawConnection``, after the yes to
        STARTTLS, for a TLS handshake written by hand. Refuses injected plaintext as
        ``start_tls`` does."""
        plain = self._ready_for_tls()
        raw = RawConnection()
        raw.connection_made(plain)
        plain.set_protocol(raw)
        self._transport = None
        return raw

    def _ready_for_tls(self) -> asyncio.Transport:
        """The plaintext transport, once it is safe to start TLS on it: nothing received
        after the server's yes (else injection, refused) and the connection still open."""
        assert self._transport is not None
        if self._reader.holds_data:
            self._transport.abort()
            raise ProtocolError(
                "server sent plaintext after agreeing to start TLS (possible injection)",
                Phase.TLS_HANDSHAKE,
            )
        if self._closed is not None or self._transport.is_closing():
            raise ProbeError(
                Phase.TLS_HANDSHAKE,
                FailureKind.CLOSED,
                self._closed or "connection closed by server",
            )
        return self._transport


class _TLS:
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


class RawConnection(_Closing):
    """Bytes in, bytes out, at most ``limit`` bytes buffered: for reading TLS records of a
    handshake that Python's ssl module cannot make (an OCSP status request)."""

    def __init__(self, limit: int = 65536) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._limit = limit
        self._received = 0
        self._closed: str | None = None
        self._waiter: asyncio.Future[None] | None = None

    @classmethod
    async def open(cls, address: str, port: int, limit: int = 65536) -> RawConnection:
        conn = cls(limit)
        await connect(conn, address, port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > self._limit:
            self._closed = f"server sent more than {self._limit} bytes"
            if self._transport is not None:
                self._transport.abort()
        else:
            self._buffer += data
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def read_exactly(self, n: int, phase: Phase) -> bytes:
        """The next ``n`` bytes, or the ``ProbeError`` that explains why they never came."""
        while len(self._buffer) < n:
            if self._closed is not None:
                kind = FailureKind.NETWORK if "lost" in self._closed else FailureKind.CLOSED
                if "more than" in self._closed:
                    kind = FailureKind.PROTOCOL
                raise ProbeError(phase, kind, self._closed)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()
