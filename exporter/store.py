"""Latest result and running counts per target, plus latency histograms per module and phase.

Written from the scheduler's event loop, read by HTTP threads. Each target's ``Entry`` is
immutable and replaced whole, so a reader holding one sees a consistent view; listeners
(the renderer) hear of every new entry, and ``layout_version`` tells them when to look at
all of them again.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from .config import Target
from .results import CanaryResult, FailureKind, Phase, ProbeResult
from .results.domain import DomainResult
from .targets import Discovery, static_expansion

# Probe phases on loopback take well under a millisecond; over the Internet, seconds.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# A canary's round trip, sending to finding it over IMAP: seconds to many minutes.
CANARY_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

# A configured target is (name, module); the concrete targets it expands to (MX hosts,
# address families) share those and differ in their labels.
Origin = tuple[str, str]
TargetKey = tuple[str, str, tuple[tuple[str, str], ...]]


# Past results kept per target for the landing page: a few, packed into bytes (``_RING``:
# time, duration, failed phase and kind) rather than objects: 10,000 targets' rings take
# ~2 MB where Outcome objects took 8-14 MB (bench/memory.py, "+ring").
RECENT = 10
_RING = struct.Struct("<dfBB")  # started_at, duration_seconds, phase, kind (NONE: passed)
_PHASES = tuple(Phase)
_KINDS = tuple(FailureKind)
_PHASE_INDEX = {p: i for i, p in enumerate(_PHASES)}
_KIND_INDEX = {k: i for i, k in enumerate(_KINDS)}
_NONE = 255


@dataclass(frozen=True, slots=True)
class Outcome:
    """One past probe as the landing page shows it: when, how long, what failed. ``detail``
    is kept for the last failure only; the ring keeps the phase and kind."""

    started_at: float  # unix seconds
    duration_seconds: float
    phase: Phase | None = None  # None: it passed
    kind: FailureKind | None = None
    detail: str = ""

    @property
    def success(self) -> bool:
        return self.phase is None


def key_of(target: Target) -> TargetKey:
    return (target.name, target.module.name, target.labels)


def origin_of(target: Target) -> Origin:
    return (target.name, target.module.name)


@dataclass(frozen=True, slots=True)
class RouteCanary:
    """The last canary of one route and what the store keeps across its canaries."""

    canary: CanaryResult
    last_delivered: float | None = None  # kept across canaries that fail
    # Counts since the exporter started: round trips by CANARY_BUCKETS (cumulative, empty
    # until the first), their sum, and canaries the IMAP sweep found stale / late.
    round_trip_buckets: tuple[int, ...] = ()
    round_trip_sum: float = 0.0
    round_trip_count: int = 0
    canaries_swept: int = 0
    canaries_late: int = 0

    @property
    def route(self) -> str:
        return self.canary.route

    def after(self, canary: CanaryResult) -> RouteCanary:
        """This route's history with ``canary`` as its last."""
        delivered = canary.delivered_at if canary.delivered else self.last_delivered
        buckets, total, count = self.round_trip_buckets, self.round_trip_sum, self.round_trip_count
        rt = canary.round_trip_seconds
        if rt is not None:
            counts = buckets or (0,) * len(CANARY_BUCKETS)
            buckets = tuple(
                n + (rt <= bound) for n, bound in zip(counts, CANARY_BUCKETS, strict=True)
            )
            total, count = total + rt, count + 1
        return RouteCanary(
            canary,
            delivered,
            buckets,
            total,
            count,
            self.canaries_swept + canary.swept,
            self.canaries_late + canary.late,
        )


@dataclass(frozen=True, slots=True)
class Entry:
    target: Target
    result: ProbeResult | None = None
    probes: int = 0
    failures: tuple[tuple[Phase, int], ...] = ()  # phase -> count, only phases that failed
    routes: tuple[RouteCanary, ...] = ()  # the last canary of each route, in config order
    # The last RECENT results, oldest first (``recent``), and the last failure, kept however
    # many successes follow it (blackbox_exporter's history keeps failures apart the same way).
    ring: bytes = b""
    last_failure: Outcome | None = None

    @property
    def recent(self) -> tuple[Outcome, ...]:
        """The last RECENT results, oldest first."""
        return tuple(
            Outcome(
                at,
                seconds,
                None if p == _NONE else _PHASES[p],
                None if k == _NONE else _KINDS[k],
            )
            for at, seconds, p, k in _RING.iter_unpack(self.ring)
        )

    def recorded(self, result: ProbeResult) -> Entry:
        """This entry with ``result`` as the latest: counts, ring and last failure."""
        failures = dict(self.failures)
        f = result.failure
        last = self.last_failure
        if f is None:
            packed = _RING.pack(result.started_at, result.duration_seconds, _NONE, _NONE)
        else:
            failures[f.phase] = failures.get(f.phase, 0) + 1
            packed = _RING.pack(
                result.started_at,
                result.duration_seconds,
                _PHASE_INDEX[f.phase],
                _KIND_INDEX[f.kind],
            )
            last = Outcome(result.started_at, result.duration_seconds, f.phase, f.kind, f.detail)
        return replace(
            self,
            result=result,
            probes=self.probes + 1,
            failures=tuple(failures.items()),
            ring=(self.ring + packed)[-RECENT * _RING.size :],
            last_failure=last,
        )

    @property
    def canary(self) -> CanaryResult | None:
        """The last canary of the first route (the only one, without ``routes``)."""
        return self.routes[0].canary if self.routes else None

    @property
    def canaries(self) -> tuple[CanaryResult, ...]:
        return tuple(r.canary for r in self.routes)


# The history of a route before its first canary (``after`` gives it one).
_NO_ROUTE = RouteCanary(CanaryResult("", 0.0, False, 0.0))


# A mail domain is checked once per module that asks for it: (domain, module name).
DomainKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class DomainEntry:
    domain: str
    module: str
    result: DomainResult | None = None
    policy_changes: int = 0  # MTA-STS policy id changes seen since the exporter started


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
        self._discoveries: dict[Origin, Discovery] = {}
        self._mx_targets: dict[Origin, Target] = {}  # configured mx: targets
        self._histograms: dict[tuple[str, Phase], Histogram] = {}
        self._listeners: list[Callable[[Entry], None]] = []
        self._domains: dict[DomainKey, DomainEntry] = {}
        # Bumped whenever targets come or go or an entry is replaced other than by a result,
        # so a reader that caches per target (the renderer) knows to look at every entry.
        self.layout_version = 0

    def listen(self, listener: Callable[[Entry], None]) -> None:
        """Call ``listener`` with the new entry after each recorded result or canary, in
        the recording thread (the event loop), outside the store's lock."""
        self._listeners.append(listener)

    def _notify(self, entry: Entry) -> None:
        for listener in self._listeners:
            listener(entry)

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Keep the entries of targets still configured (with their history), add new ones,
        drop the rest: a removed target disappears from the next scrape. MX targets keep
        their last expansion until it is replaced (``set_expansion``)."""
        configured = list(targets)
        with self._lock:
            entries: dict[TargetKey, Entry] = {}
            keep_expanded = {origin_of(t) for t in configured if t.mx}
            for key, entry in self._entries.items():
                if key[:2] in keep_expanded:
                    entries[key] = entry
            for t in configured:
                if not t.mx:
                    for c in static_expansion(t):
                        entries[key_of(c)] = self._carry(c)
            self._entries = entries
            origins = {origin_of(t) for t in configured}
            self._mx_targets = {origin_of(t): t for t in configured if t.mx}
            self._discoveries = {k: v for k, v in self._discoveries.items() if k in origins}
            modules = {t.module.name for t in configured}
            self._histograms = {k: v for k, v in self._histograms.items() if k[0] in modules}
            self.layout_version += 1

    def set_expansion(self, discovery: Discovery) -> None:
        """Replace the concrete targets of one configured target with a new expansion. A
        failed lookup or a null MX is recorded at once as the result of the target as
        configured (beside any MX hosts kept from before); it goes when a lookup succeeds."""
        origin = origin_of(discovery.target)
        with self._lock:
            entries = {k: v for k, v in self._entries.items() if k[:2] != origin}
            for c in discovery.concrete:
                entries[key_of(c)] = self._carry(c)
            lookup = discovery.lookup
            if lookup is not None:
                t = discovery.target
                assert lookup.failure is not None
                entries[key_of(t)] = self._carry(t).recorded(lookup)
            self._entries = entries
            self._discoveries[origin] = discovery
            self.layout_version += 1

    def _carry(self, t: Target) -> Entry:
        """The entry for ``t``, keeping its history; a changed definition keeps the counters
        but not a stale result. Caller holds the lock."""
        old = self._entries.get(key_of(t))
        if old is None:
            return Entry(t)
        if old.target == t:
            return old
        return Entry(
            t, None, old.probes, old.failures, ring=old.ring, last_failure=old.last_failure
        )

    def set_domains(self, keys: Iterable[DomainKey]) -> None:
        """The mail domains now configured: new ones wait for their first check, removed
        ones disappear from the next scrape, the rest keep their result and counts."""
        with self._lock:
            self._domains = {
                k: self._domains.get(k) or DomainEntry(k[0], k[1]) for k in dict.fromkeys(keys)
            }

    def record_domain(self, key: DomainKey, result: DomainResult) -> DomainEntry | None:
        """Store a finished domain check; returns the previous entry, or None when the
        domain was removed meanwhile."""
        with self._lock:
            old = self._domains.get(key)
            if old is None:
                return None
            changed = result.mta_sts is not None and result.mta_sts.policy_changed
            self._domains[key] = replace(
                old, result=result, policy_changes=old.policy_changes + changed
            )
            return old

    def domain_result(self, key: DomainKey) -> DomainResult | None:
        with self._lock:
            entry = self._domains.get(key)
            return entry.result if entry is not None else None

    def domains(self) -> list[DomainEntry]:
        with self._lock:
            return list(self._domains.values())

    def discoveries(self) -> list[Discovery]:
        with self._lock:
            return list(self._discoveries.values())

    def unexpanded(self) -> list[Target]:
        """Configured mx: targets not looked up yet (no entries until their first run)."""
        with self._lock:
            return [t for o, t in self._mx_targets.items() if o not in self._discoveries]

    def record(self, target: Target, result: ProbeResult) -> Entry | None:
        """Store a finished probe. Returns the previous entry (for state-change logging), or
        None when the target was removed while it was being probed."""
        key = key_of(target)
        with self._lock:
            old = self._entries.get(key)
            if old is None or old.target != target:
                return None
            new = self._entries[key] = old.recorded(result)
            # smtp_probe_phase_seconds is SMTP's: IMAP and POP3 phases stay out of it (#18).
            phases = result.phases if target.module.protocol == "smtp" else ()
            for timing in phases:
                hist = self._histograms.setdefault((target.module.name, timing.phase), Histogram())
                hist.observe(timing.seconds)
        self._notify(new)
        return old

    def record_canary(self, target: Target, *canaries: CanaryResult) -> None:
        """Record the last canary of each route given; routes no longer configured go."""
        key = key_of(target)
        configured = target.module.canary.all_routes if target.module.canary else ()
        with self._lock:
            old = self._entries.get(key)
            if old is None or old.target != target:
                return
            known = {r.route: r for r in old.routes}
            for canary in canaries:
                known[canary.route] = known.get(canary.route, _NO_ROUTE).after(canary)
            routes = tuple(known[r.name] for r in configured if r.name in known)
            new = self._entries[key] = replace(old, routes=routes)
        self._notify(new)

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def last_canary(self, target: Target) -> Entry | None:
        """The entry holding the last canary of ``target`` as ``/probe`` builds it (same name
        and module; its MX host, address and family labels, if any, the same too), or None
        when that target is not scheduled here or has sent no canary yet."""
        origin, wanted = origin_of(target), target.labels
        with self._lock:
            for key, entry in self._entries.items():
                if key[:2] == origin and entry.routes:
                    labels = dict(key[2])
                    if all(labels.get(k) == v for k, v in wanted):
                        return entry
        return None

    def histograms(self) -> list[tuple[str, Phase, tuple[int, ...], float, int]]:
        with self._lock:
            return [
                (m, p, tuple(h.buckets), h.total, h.count)
                for (m, p), h in sorted(self._histograms.items())
            ]

    def __len__(self) -> int:
        return len(self._entries)
