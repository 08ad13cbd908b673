"""The SMTP connection: the shared ``net.Connection`` with the bounded reply reader, and
SMTP's rule for replies nobody asked for."""

from __future__ import annotations

from ..errors import ProtocolError, ReplyError
from ..net.connection import Connection as _Connection
from ..net.raw import RawConnection, connect
from ..net.resolve import addresses, resolve
from ..results import Phase
from .reply import Reply, ReplyReader

__all__ = ["Connection", "RawConnection", "addresses", "resolve"]


class Connection(_Connection[Reply]):
    """One SMTP client connection: send command lines, await complete replies."""

    def __init__(self) -> None:
        super().__init__(ReplyReader())

    @classmethod
    async def open(cls, address: str, port: int) -> Connection:  # type: ignore[override]
        conn = cls()
        await connect(conn, address, port)
        return conn

    async def read_reply(self, phase: Phase) -> Reply:
        """The next complete reply, or the ``ProbeError`` that explains why there is none."""
        return await self.read(phase)

    async def command(self, line: str, phase: Phase) -> Reply:
        self.send(line, phase)
        return await self.read(phase)

    def send(self, line: str, phase: Phase) -> None:
        if "\r" in line or "\n" in line:
            raise ValueError("SMTP command must not contain CR or LF")
        # We never pipeline, so a reply waiting before we ask is unsolicited. Only 421
        # (service closing, RFC 5321 3.8) may come unasked; anything else would be read
        # as the answer to our command.
        early = self._reader.pop()
        if early is not None:
            if early.code == 421:
                raise ReplyError(phase, early.code, early.enhanced, str(early))
            raise ProtocolError(f"unsolicited reply before command: {str(early)[:60]!r}", phase)
        self.send_line(line, phase)

    async def send_data(self, data: bytes, phase: Phase) -> None:
        """Write a message body with flow control (``send_bytes``)."""
        await self.send_bytes(data, phase)
