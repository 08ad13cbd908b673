"""Latest result and running counts per target, plus latency histograms per module and phase.

Written from the scheduler's event loop, read by HTTP threads. Each target's ``Entry`` is
immutable and replaced whole, so a reader holding one sees a consistent view, and the
renderer can cache its text by the entry's identity.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from .canary import CanaryResult
from .config import Target
from .results import Phase, ProbeResult

# Probe phases on loopback take well under a millisecond; over the Internet, seconds.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

TargetKey = tuple[str, str]  # (target name, module name)


def key_of(target: Target) -> TargetKey:
    return (target.name, target.module.name)


@dataclass(frozen=True, slots=True)
class Entry:
    target: Target
    result: ProbeResult | None = None
    probes: int = 0
    failures: tuple[tuple[Phase, int], ...] = ()  # phase -> count, only phases that failed
    canary: CanaryResult | None = None
    last_delivered: float | None = None  # kept across canaries that fail


@dataclass(slots=True)
class Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(LATENCY_BUCKETS):
            if value <= bound:
                self.buckets[i] += 1
        self.total += value
        self.count += 1


class ResultStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[TargetKey, Entry] = {}
        self._histograms: dict[tuple[str, Phase], Histogram] = {}

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Keep the entries of targets still configured (with their history), add new ones,
        drop the rest: a removed target disappears from the next scrape."""
        with self._lock:
            entries: dict[TargetKey, Entry] = {}
            for t in targets:
                old = self._entries.get(key_of(t))
                # A changed module definition keeps the counters but not a stale result.
                entries[key_of(t)] = (
                    old
                    if old is not None and old.target == t
                    else Entry(t, None, old.probes if old else 0, old.failures if old else ())
                )
            self._entries = entries
            modules = {t.module.name for t in targets}
            self._histograms = {k: v for k, v in self._histograms.items() if k[0] in modules}

    def record(self, target: Target, result: ProbeResult) -> Entry | None:
        """Store a finished probe. Returns the previous entry (for state-change logging), or
        None when the target was removed while it was being probed."""
        key = key_of(target)
        with self._lock:
            old = self._entries.get(key)
            if old is None or old.target != target:
                return None
            failures = dict(old.failures)
            if result.failure is not None:
                failures[result.failure.phase] = failures.get(result.failure.phase, 0) + 1
            self._entries[key] = replace(
                old, result=result, probes=old.probes + 1, failures=tuple(failures.items())
            )
            for timing in result.phases:
                hist = self._histograms.setdefault((target.module.name, timing.phase), Histogram())
                hist.observe(timing.seconds)
            return old

    def record_canary(self, target: Target, canary: CanaryResult) -> None:
        key = key_of(target)
        with self._lock:
            old = self._entries.get(key)
            if old is not None and old.target == target:
                delivered = canary.delivered_at if canary.delivered else old.last_delivered
                self._entries[key] = replace(old, canary=canary, last_delivered=delivered)

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def histograms(self) -> list[tuple[str, Phase, tuple[int, ...], float, int]]:
        with self._lock:
            return [
                (m, p, tuple(h.buckets), h.total, h.count)
                for (m, p), h in sorted(self._histograms.items())
            ]

    def __len__(self) -> int:
        return len(self._entries)
