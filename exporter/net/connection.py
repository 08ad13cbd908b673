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
from .memtls import MemoryTLS
from .raw import Closing, RawConnection, connect

Item = TypeVar("Item")
_YIELD_EVERY = 256
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


class Connection(Closing, Generic[Item]):
    """One client connection: send command lines, await complete items from a sans-IO
    ``Reader`` (SMTP replies, IMAP responses, POP3 responses) fed with every byte received.

    TLS runs in this protocol, over memory BIOs, rather than in asyncio's SSLProtocol
    (``loop.start_tls``): a probe's few short records do not need its buffering and flow
    control, which cost more CPU per probe than the rest of the dialogue's Python."""

    def __init__(self, reader: Reader[Item]) -> None:
        self._reader = reader
        self._ready_in_a_row = 0  # items read without waiting (see read)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._broken: str | None = None  # why the reader refused the server's bytes
        self._closed: str | None = None  # why the connection ended, once it has
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.tls_object: ssl.SSLObject | None = None
        self._tls: MemoryTLS | None = None
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
                self._ready_in_a_row += 1
                if self._ready_in_a_row >= _YIELD_EVERY:
                    # A server can send thousands of short responses in one read; a caller
                    # taking them all without awaiting would never let its deadline fire.
                    self._ready_in_a_row = 0
                    await asyncio.sleep(0)
                return item
            self._ready_in_a_row = 0
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
            tls = MemoryTLS(context, server_name, plain)
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
