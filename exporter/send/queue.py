"""``SMTPQueue``: a thread-safe, queue-backed sender with worker threads.

Each worker keeps one connection open while there is work (closing it when idle) and runs
its own event loop. An exception while sending becomes a result, never the end of a worker.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from email.message import Message

from .api import deliver, dry_results, outgoing, refused
from .client import SendResult, SMTPClient
from .config import SMTPConfig

log = logging.getLogger(__name__)
IDLE_CLOSE_SECONDS = 5.0
_POLL = 0.1


class SMTPQueue:
    """``SMTPQueue(cfg, workers=1).start()``, then ``enqueue(msg)`` from any thread,
    ``stop(timeout=30.0)`` and ``drain_results()``: a snapshot of every result so far."""

    def __init__(
        self, cfg: SMTPConfig, workers: int = 1, *, dry_run: bool = False, max_queued: int = 10_000
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.cfg = cfg
        self.dry_run = dry_run
        self._queue: queue.Queue[Message] = queue.Queue(max_queued)
        self._results: list[SendResult] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._accepting = False
        self._busy = 0
        self._next_slot = 0.0  # shared rate limit across workers
        self._threads = [
            threading.Thread(target=self._work, name=f"smtp-queue-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self) -> SMTPQueue:
        """Start the workers; returns the queue, so ``q = SMTPQueue(cfg).start()`` works."""
        self._accepting = True
        for t in self._threads:
            t.start()
        return self

    def enqueue(self, msg: Message) -> None:
        """Queue a message; raises RuntimeError once stopped, queue.Full when full."""
        if not isinstance(msg, Message):
            raise TypeError(f"expected an email.message.Message, got {type(msg).__name__}")
        if not self._accepting:
            raise RuntimeError("queue is not running")
        self._queue.put_nowait(msg)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def drain_results(self, *, clear: bool = False) -> list[SendResult]:
        """A copy of the results gathered so far, in the order they completed; calling it
        again returns them again, plus any new ones. ``clear=True`` also forgets them, so a
        long-running queue does not hold every result it ever had."""
        with self._lock:
            out = list(self._results)
            if clear:
                self._results.clear()
        return out

    def stop(self, timeout: float = 30.0, *, drain: bool = True) -> list[Message]:
        """Stop accepting; with ``drain``, give the workers until ``timeout`` to send what is
        queued. Returns within ``timeout`` with the messages that were never attempted. A
        message in flight at that moment finishes in the background; its results still
        arrive through ``drain_results``."""
        deadline = time.monotonic() + timeout
        self._accepting = False
        while drain and time.monotonic() < deadline and (self._queue.qsize() or self._busy):
            time.sleep(_POLL / 2)
        self._stopping.set()
        left: list[Message] = []
        while True:
            try:
                left.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return left

    def _take(self) -> Message | None:
        try:
            msg = self._queue.get(timeout=_POLL)
        except queue.Empty:
            return None
        with self._lock:
            self._busy += 1
        return msg

    def _wait_for_slot(self) -> None:
        if not self.cfg.rate_limit:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_slot)
            self._next_slot = start + 1.0 / self.cfg.rate_limit
        time.sleep(max(0.0, start - now))

    def _work(self) -> None:
        loop = asyncio.new_event_loop()
        client = SMTPClient(self.cfg)
        idle_since = time.monotonic()
        try:
            while not self._stopping.is_set():
                msg = self._take()
                if msg is None:
                    if client.connected and time.monotonic() - idle_since > IDLE_CLOSE_SECONDS:
                        loop.run_until_complete(client.close())
                    continue
                try:
                    results = self._send(loop, client, msg)
                except Exception as exc:  # a worker must outlive any one message
                    log.exception("send failed unexpectedly")
                    results = [
                        SendResult(
                            _header(msg, "To"),
                            False,
                            f"internal error: {type(exc).__name__}",
                            message_id=_header(msg, "Message-ID") or None,
                        )
                    ]
                    client = SMTPClient(self.cfg)
                with self._lock:
                    self._results.extend(results)
                    self._busy -= 1
                idle_since = time.monotonic()
        finally:
            try:
                loop.run_until_complete(client.close())
            finally:
                loop.close()

    def _send(
        self, loop: asyncio.AbstractEventLoop, client: SMTPClient, msg: Message
    ) -> list[SendResult]:
        env = outgoing(msg, self.cfg)
        if self.dry_run or env.problem:
            return dry_results(env) if self.dry_run else refused(env)
        self._wait_for_slot()
        return loop.run_until_complete(deliver(client, env))


def _header(msg: Message, name: str) -> str:
    try:
        return str(msg.get(name, ""))
    except Exception:  # a broken message must not break the error path too
        return ""
