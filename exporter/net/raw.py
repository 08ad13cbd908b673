"""Connecting, the end-of-connection bookkeeping every client protocol shares, and a
byte-level connection for handshakes written by hand."""

from __future__ import annotations

import asyncio

from ..errors import ProbeError
from ..results import FailureKind, Phase
from .describe import describe


async def connect(protocol: asyncio.Protocol, address: str, port: int) -> None:
    """Connect ``protocol``; a refusal or network error is the connect phase's failure."""
    try:
        await asyncio.get_running_loop().create_connection(lambda: protocol, address, port)
    except ConnectionRefusedError as exc:
        raise ProbeError(Phase.CONNECT, FailureKind.REFUSED, f"{address}:{port} refused") from exc
    except OSError as exc:
        raise ProbeError(Phase.CONNECT, FailureKind.NETWORK, describe(exc)) from exc


class Closing(asyncio.Protocol):
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


class RawConnection(Closing):
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
