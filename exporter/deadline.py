"""One deadline for a whole probe (trio's cancel-scope idea): made once by the caller,
passed down, never extended. Per-socket timeouts cannot stop a server that drips a byte a
second; a single absolute deadline can."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Deadline:
    at: float  # time.monotonic() based, the clock asyncio's default loop uses
    budget: float  # seconds granted when it was made, for messages

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return max(self.at - time.monotonic(), 0.0)
