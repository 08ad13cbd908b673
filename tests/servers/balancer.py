"""A minimal HTTP load balancer for tests: what a Kubernetes Service does for /probe.

Each request goes to the next backend in turn, on a connection of its own (``Connection:
close``), so a backend can be taken out of rotation between two requests: ``remove`` stops
new requests reaching it and ``drain`` waits until its requests in flight are answered --
the endpoint removal and termination grace period of a rolling update. Binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable

from exporter.embedded import free_port

MAX_HEAD = 65536


class Balancer:
    def __init__(self) -> None:
        self.port = free_port()
        self.backends: list[int] = []
        self.in_flight: Counter[int] = Counter()
        self.served: Counter[int] = Counter()  # answers per backend port
        self.errors = 0
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._server: asyncio.Server | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def __enter__(self) -> Balancer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("balancer did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, fn: Callable[[], object]) -> None:
        # Run on the loop, so the rotation has one owner.
        asyncio.run_coroutine_threadsafe(_as_coro(fn), self._loop).result(5)

    def add(self, port: int) -> None:
        self._call(lambda: self.backends.append(port))

    def remove(self, port: int) -> None:
        self._call(lambda: self.backends.remove(port))

    def drain(self, port: int, timeout: float = 10.0) -> None:
        """Wait until ``port`` (out of rotation) has no request in flight."""
        deadline = time.monotonic() + timeout
        while self.in_flight[port] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not self.in_flight[port], f"backend {port} still busy after {timeout} s"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if len(head) > MAX_HEAD or not self.backends:
                self.errors += 1
                return
            port = self.backends[self._next % len(self.backends)]
            self._next += 1
            lines = head.decode("latin-1").split("\r\n")
            kept = [ln for ln in lines[1:] if ln and not ln.lower().startswith("connection:")]
            request = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode()
            self.in_flight[port] += 1
            try:
                b_reader, b_writer = await asyncio.open_connection("127.0.0.1", port)
                b_writer.write(request)
                answer = await asyncio.wait_for(b_reader.read(-1), 15)
                b_writer.close()
            finally:
                self.in_flight[port] -= 1
            if not answer:
                self.errors += 1
                return
            self.served[port] += 1
            writer.write(answer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            self.errors += 1
        finally:
            writer.close()


async def _as_coro(fn: Callable[[], object]) -> None:
    fn()
