"""An aiosmtpd handler that timestamps what it is sent, so a test waits for events instead of
counting them inside a fixed window.

A scheduling test then says what it means: "the 1 s target is probed about every second" is
checked on the gaps between real probe sessions, seen by the server, not on how many fitted
into a sleep on a busy machine.
"""

from __future__ import annotations

import itertools
import threading
import time

from aiosmtpd.smtp import SMTP, Envelope, Session

from exporter.embedded import RecordingHandler


class StampingHandler(RecordingHandler):
    """Keeps every message (as RecordingHandler does) and the ``time.monotonic()`` of every
    NOOP and every message.

    The probe sends exactly one NOOP per session that got that far (``[AUTH] -> NOOP ->
    QUIT``) and the send library, so the canary, sends none: NOOPs count probe sessions,
    messages count canaries.
    """

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition(self.lock)
        self._noops: list[float] = []
        self._data: list[float] = []

    async def handle_NOOP(
        self, server: SMTP, session: Session, envelope: Envelope, arg: str
    ) -> str:
        with self._changed:
            self._noops.append(time.monotonic())
            self._changed.notify_all()
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        status = await super().handle_DATA(server, session, envelope)
        with self._changed:
            self._data.append(time.monotonic())
            self._changed.notify_all()
        return status

    def noops(self) -> list[float]:
        with self._changed:
            return list(self._noops)

    def wait_noops(self, n: int, timeout: float) -> list[float]:
        """Block until at least ``n`` NOOPs arrived (or ``timeout`` s passed); return them all."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._noops) >= n, timeout)
            return list(self._noops)

    def wait_messages(self, n: int, timeout: float) -> list[float]:
        """Block until at least ``n`` messages arrived (or ``timeout`` s passed); return their
        arrival times."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._data) >= n, timeout)
            return list(self._data)


def gaps(stamps: list[float]) -> list[float]:
    """The time between consecutive stamps."""
    return [b - a for a, b in itertools.pairwise(stamps)]


def mean_gap(stamps: list[float]) -> float:
    """The average period over the stamps' whole span: with a fixed-rate schedule one late run
    moves a single stamp, not this, so it is the figure to hold against the interval."""
    assert len(stamps) >= 2, stamps
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)
