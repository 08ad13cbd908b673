"""Many tiny SMTP listeners on 127.0.0.1 that log when each was connected to.

Enough ESMTP for a probe with ``tls: none`` and no AUTH (greeting, EHLO, NOOP, QUIT), on
asyncio protocols in a thread of its own: one listener per target, so a target's probes
are counted by the port they reached, whichever exporter made them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict


class _SMTP(asyncio.Protocol):
    def __init__(self, log: list[float]) -> None:
        self.log = log
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.log.append(time.time())
        transport.write(b"220 count.test ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        if len(self.buf) > 4096:
            self.transport.close()
            return
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            verb = line.strip()[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.transport.write(b"250-count.test\r\n250 PIPELINING\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
                return
            else:
                self.transport.write(b"250 ok\r\n")


class CountingSMTP:
    """``n`` listeners; ``connections[port]`` lists the unix times each was connected to."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.ports: list[int] = []
        self.connections: dict[int, list[float]] = defaultdict(list)
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.Server] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            for _ in range(self.n):
                log: list[float] = []
                server = await self._loop.create_server(lambda log=log: _SMTP(log), "127.0.0.1", 0)
                port = server.sockets[0].getsockname()[1]
                self.connections[port] = log
                self.ports.append(port)
                self._servers.append(server)
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def __enter__(self) -> CountingSMTP:
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("listeners did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            self._loop.call_soon_threadsafe(server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
