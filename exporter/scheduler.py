"""Runs each target's probe at its interval on APScheduler's asyncio scheduler.

- Each target's first run is offset by a stable fraction of its interval (a hash of its
  name), so a fleet's probes spread evenly instead of firing together; the offset survives
  restarts, so a target keeps its slot.
- ``max_instances=1``: never two probes of one target at once; ``coalesce``: runs missed
  while the loop was busy collapse into one.
- Semaphores bound probes in flight, in two lanes: a target whose last probe ran into its
  deadline (a tarpit, a dead host that drops SYNs) waits for a slot in the small slow lane,
  so however many targets hang, they only delay each other; healthy targets keep the main
  lane. Every probe ends by its deadline, so no slot is held longer than one timeout.
  /probe requests have slots and system-resolver threads of their own, and are refused
  (503) rather than queued when those are taken, so they cannot delay a scheduled probe.
- Mail-domain checks (a module's ``domain:``) are jobs of their own, one per (domain,
  module), at the module's ``domain.interval``; they share one TTL cache of DNS answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import dns.asyncresolver
from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from . import maildomain, probe
from .canary import run_canaries
from .config import Config, DNSConfig, Target
from .deadline import Deadline
from .discovery import expand, make_resolver
from .maildomain import DomainSpec, check_domain, domain_checks
from .net.resolve import ResolverLane, resolver_lane
from .results import FailureKind, ProbeResult
from .runner import probe_expansion
from .selfmetrics import ExporterMetrics
from .store import DomainKey, ResultStore
from .targets import Discovery, in_shard, offset_fraction, static_expansion

log = logging.getLogger(__name__)
DEFAULT_CONCURRENCY = 1000
SLOW_LANE_SHARE = 4  # the slow lane gets 1/4 of the slots (at least one)
ON_DEMAND_SHARE = 4  # /probe requests in flight: 1/4 of --probe.concurrency (at least one)
ON_DEMAND_RESOLVER_THREADS = 16  # system-resolver threads for /probe, apart from scheduled


def job_id(target: Target) -> str:
    """One job per configured target (all its MX hosts / address families run together)."""
    return f"{target.name}|{target.module.name}"


class ProbeScheduler:
    def __init__(
        self,
        store: ResultStore,
        own: ExporterMetrics,
        concurrency: int = DEFAULT_CONCURRENCY,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self._store = store
        self._own = own
        self._shard = shard
        self._fast = asyncio.Semaphore(concurrency)
        self._slow = asyncio.Semaphore(max(1, concurrency // SLOW_LANE_SHARE))
        # /probe has slots and resolver threads of its own: a flood of requests (tarpits,
        # names whose DNS never answers) is refused with 503 when they are taken, and
        # cannot delay a scheduled probe.
        self.on_demand_limit = max(1, concurrency // ON_DEMAND_SHARE)
        self._on_demand = asyncio.Semaphore(self.on_demand_limit)
        self.on_demand_lane = ResolverLane("on_demand", ON_DEMAND_RESOLVER_THREADS)
        self._slow_targets: set[str] = set()
        self._canaries: dict[str, asyncio.Task[None]] = {}
        self._discovery: dict[str, Discovery] = {}
        self._resolver = make_resolver(DNSConfig())
        self._last_canary: dict[str, float] = {}
        self._targets: dict[str, Target] = {}
        self._scheduled: dict[str, float] = {}  # job id -> when APScheduler meant it to run
        self._domains: dict[str, tuple[DomainKey, DomainSpec]] = {}
        self._dns_cache = maildomain.DNSCache(self._resolver)
        self._scheduler = AsyncIOScheduler(
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=dt.UTC,
        )
        self._scheduler.add_listener(
            self._on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for task in self._canaries.values():
            task.cancel()

    def apply(self, config: Config) -> None:
        """Make the scheduled jobs match ``config``: add new targets, reschedule changed ones,
        remove the rest. Unchanged targets keep their schedule."""
        mine = [t for t in config.targets if in_shard(t, self._shard)]
        wanted = {job_id(t): t for t in mine}
        self._resolver = make_resolver(config.dns)
        self._dns_cache = maildomain.DNSCache(self._resolver)
        self._apply_domains(mine)
        for jid in list(self._targets):
            if jid not in wanted:
                self._scheduler.remove_job(jid)
                del self._targets[jid]
                self._scheduled.pop(jid, None)
                self._slow_targets.discard(jid)
                self._last_canary.pop(jid, None)
                self._discovery.pop(jid, None)
                task = self._canaries.pop(jid, None)
                if task is not None:
                    task.cancel()
        now = time.time()
        for jid, target in wanted.items():
            if self._targets.get(jid) == target:
                continue
            self._discovery.pop(jid, None)  # changed: expand afresh
            start = now + offset_fraction(target) * target.interval
            self._scheduler.add_job(
                self._run,
                IntervalTrigger(
                    seconds=target.interval, start_date=dt.datetime.fromtimestamp(start, dt.UTC)
                ),
                args=[jid],
                id=jid,
                replace_existing=True,
                # A run later than one interval is dropped in favour of the next.
                misfire_grace_time=max(1, int(target.interval)),
            )
            self._targets[jid] = target
        self._store.set_targets(mine)
        self._own.targets.set(len(wanted))

    def _apply_domains(self, mine: list[Target]) -> None:
        wanted = {f"domain|{k[0]}|{k[1]}": (k, spec) for k, spec in domain_checks(mine).items()}
        for jid in list(self._domains):
            if jid not in wanted:
                self._scheduler.remove_job(jid)
                del self._domains[jid]
        now = time.time()
        for jid, (key, spec) in wanted.items():
            if self._domains.get(jid) == (key, spec):
                continue
            interval = spec.checks.interval
            fraction = int.from_bytes(hashlib.sha256(jid.encode()).digest()[:8], "big") / 2**64
            # The first check soon after start (spread over 10 s), then at the interval.
            start = now + fraction * min(interval, 10.0)
            self._scheduler.add_job(
                self._run_domain,
                IntervalTrigger(
                    seconds=interval, start_date=dt.datetime.fromtimestamp(start, dt.UTC)
                ),
                args=[jid],
                id=jid,
                replace_existing=True,
                misfire_grace_time=max(1, int(interval)),
            )
            self._domains[jid] = (key, spec)
        self._store.set_domains(key for key, _ in wanted.values())

    async def _run_domain(self, jid: str) -> None:
        entry = self._domains.get(jid)
        if entry is None:
            return
        key, spec = entry
        try:
            result = await check_domain(spec, self._dns_cache, self._store.domain_result(key))
        except asyncio.CancelledError:
            return
        if self._domains.get(jid) != entry:  # removed or changed meanwhile
            return
        previous = self._store.record_domain(key, result)
        before = previous.result if previous is not None else None
        if not result.success and (before is None or before.success):
            log.warning("domain check of %s (module %s) failed: %s", key[0], key[1], result.error)
        elif result.findings and (before is None or before.findings != result.findings):
            log.info(
                "domain %s (module %s): %s",
                key[0],
                key[1],
                "; ".join(f.reason for f in result.findings),
            )

    def _on_event(self, event: JobSubmissionEvent | JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_SUBMITTED:
            assert isinstance(event, JobSubmissionEvent)
            self._scheduled[event.job_id] = event.scheduled_run_times[-1].timestamp()
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            self._own.skipped.labels("still_running").inc()
        elif event.code == EVENT_JOB_MISSED:
            self._own.skipped.labels("missed").inc()

    async def _run(self, jid: str) -> None:
        try:
            await self._run_target(jid)
        except asyncio.CancelledError:
            # Shutdown cancels runs in flight; APScheduler would log each as a failed job.
            return

    async def _run_target(self, jid: str) -> None:
        target = self._targets.get(jid)
        if target is None:
            return
        scheduled = self._scheduled.get(jid)
        if scheduled is not None:
            self._own.lag.observe(max(0.0, time.time() - scheduled))
        discovery = await self._expand(jid, target)
        if discovery is None:  # removed or changed while resolving
            return
        run = await probe_expansion(discovery, lambda c: self._probe(jid, c))
        if any(
            r.failure is not None and r.failure.kind is FailureKind.TIMEOUT for _, r in run.probed
        ):
            self._slow_targets.add(jid)
        else:
            self._slow_targets.discard(jid)
        for c, result in run.probed:
            previous = self._store.record(c, result)
            if previous is not None:
                log_transition(c, previous.result, result)
        if (through := run.canary_target) is not None:
            self._maybe_canary(jid, through)

    async def _probe(self, jid: str, target: Target) -> ProbeResult:
        lane = self._slow if jid in self._slow_targets else self._fast
        return await self._probe_in(lane, target, None)

    async def _probe_in(
        self, lane: asyncio.Semaphore, target: Target, deadline: Deadline | None
    ) -> ProbeResult:
        async with lane:
            self._own.in_flight.inc()
            try:
                return await probe.run(target, deadline)
            finally:
                self._own.in_flight.dec()

    @property
    def resolver(self) -> dns.asyncresolver.Resolver:
        """The resolver of the applied config (built once per config, not per request)."""
        return self._resolver

    def on_demand_refusal(self, needs_resolver: bool) -> str | None:
        """Why a /probe request cannot be admitted now (None: it can). Requests are never
        queued: time spent waiting would be taken from the probe's deadline."""
        if self._on_demand.locked():
            return (
                f"too many /probe requests in flight (limit {self.on_demand_limit}, a quarter "
                "of --probe.concurrency); try again later\n"
            )
        if needs_resolver and self.on_demand_lane.full:
            return (
                f"all {self.on_demand_lane.threads} resolver threads for /probe are busy "
                "(lookups that do not answer); try again later, or probe by address\n"
            )
        return None

    @contextlib.asynccontextmanager
    async def on_demand(self) -> AsyncIterator[None]:
        """Hold one /probe slot; host names resolve on the /probe resolver lane inside.
        Check ``on_demand_refusal`` first: with a free slot this never waits."""
        async with self._on_demand:
            with resolver_lane(self.on_demand_lane):
                yield

    async def probe_on_demand(
        self, target: Target, deadline: Deadline, wire: Callable[[str], None] | None = None
    ) -> ProbeResult:
        """A /probe request's probe, inside ``on_demand()``: its slot is the request's.
        ``wire``: the debug transcript's sink (``/probe?debug=true``), if any."""
        self._own.in_flight.inc()
        try:
            return await probe.run(target, deadline, wire)
        finally:
            self._own.in_flight.dec()

    async def _expand(self, jid: str, target: Target) -> Discovery | None:
        """The target's expansion; an mx: target's is kept between runs and looked up again
        when its TTL runs out. None when the target was removed or changed while resolving."""
        if not target.mx:  # no DNS: built afresh (cheaper than keeping 10,000 of them)
            return Discovery(target, static_expansion(target))
        previous = self._discovery.get(jid)
        if previous is not None and time.monotonic() < previous.expires:
            return previous
        discovery = await expand(target, self._resolver, previous)
        if self._targets.get(jid) != target:
            return None
        self._discovery[jid] = discovery
        self._store.set_expansion(discovery)
        failure = discovery.failure  # recorded by set_expansion as a result of its own
        if failure and (previous is None or previous.failure != failure):
            log.warning("MX lookup for %s: %s: %s", target.name, failure.kind, failure.detail)
        return discovery

    def _maybe_canary(self, jid: str, target: Target) -> None:
        """Start a canary when one is due: after a successful probe, at the canary's own
        interval, never two at once for a target. It runs beside the probes; waiting for
        delivery can take minutes."""
        canary = target.module.canary
        assert canary is not None
        now = time.monotonic()
        if jid in self._canaries or now - self._last_canary.get(jid, -1e18) < canary.interval:
            return
        self._last_canary[jid] = now

        async def run() -> None:
            try:
                results = await run_canaries(target, canary, self._dns_cache)
                self._store.record_canary(target, *results)
                for result in results:
                    if not result.success:
                        log.warning(
                            "canary failed: %s (module %s, route %s): %s",
                            target.name,
                            target.module.name,
                            result.route,
                            result.reason,
                        )
            except Exception:  # a canary bug must not leave the task's error unobserved
                log.exception("canary for %s failed unexpectedly", target.name)
            finally:
                self._canaries.pop(jid, None)

        self._canaries[jid] = asyncio.get_running_loop().create_task(run())


def log_transition(target: Target, before: ProbeResult | None, after: ProbeResult) -> None:
    """Log when a target goes down or recovers, not on every probe."""
    was_ok = None if before is None else before.success
    if after.success and was_ok is not True:
        log.info(
            "target up: %s (module %s)%s",
            target.name,
            target.module.name,
            "" if was_ok is None else ", recovered",
        )
    elif not after.success and was_ok is not False:
        f = after.failure
        assert f is not None
        log.warning(
            "target down: %s (module %s): %s failed: %s: %s",
            target.name,
            target.module.name,
            f.phase,
            f.kind,
            f.detail,
        )
