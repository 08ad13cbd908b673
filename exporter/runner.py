"""One run of a configured target: expand (MX discovery, address families) -> probe each
concrete target -> which canary is due. The scheduler, ``/probe`` and ``--once`` all run
targets through here, so a rule changes in one place.

An ``mx:`` target whose lookup fails (NXDOMAIN, SERVFAIL, timeout) or that publishes a null
MX is not an empty answer: its ``Discovery.lookup`` result (phase ``mx_lookup``) comes first
among ``Run.results``, followed by the probes of whatever hosts there are. The scheduler
keeps its expansions between runs (``probe_expansion`` of a cached ``Discovery``) and
records the lookup result once per lookup, through ``ResultStore.set_expansion``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import dns.asyncresolver

from .config import Target
from .discovery import expand, expand_within
from .results import ProbeResult
from .targets import Discovery

Prober = Callable[[Target], Awaitable[ProbeResult]]


@dataclass(frozen=True, slots=True)
class Run:
    """What one run of a configured target found."""

    target: Target
    discovery: Discovery
    probed: tuple[tuple[Target, ProbeResult], ...]  # each concrete target and its probe
    refused: str | None = None  # why ``admit`` refused what the lookup found: nothing probed

    @property
    def results(self) -> tuple[tuple[Target, ProbeResult], ...]:
        """Every result in report order: the failed lookup (or null MX) first, if any."""
        return (*lookup_results(self.discovery), *self.probed)

    @property
    def canary_target(self) -> Target | None:
        """Where a canary goes after this run, if the module has one: through the target as
        configured, and only when that is what was probed (not an ``mx:`` domain's hosts,
        not each family of ``ip_protocol: both``) and the probe passed. The one rule the
        scheduler and ``--once`` follow; whether it is *due* (its interval) is theirs."""
        module = self.target.module
        # The config refuses a canary on IMAP and POP3 modules; a Module built in code is
        # held to the same: a canary is SMTP mail.
        if module.canary is None or module.protocol != "smtp" or len(self.probed) != 1:
            return None
        concrete, result = self.probed[0]
        return self.target if concrete == self.target and result.success else None


class RefusalKind(StrEnum):
    """Why an on-demand run (``/probe``) was not made; the HTTP layer maps each to a status."""

    INVALID = "invalid"  # the request names no usable module, target or timeout
    BUSY = "busy"  # no on-demand slot or resolver thread free now; never queued
    FORBIDDEN = "forbidden"  # the module may not probe that target


@dataclass(frozen=True, slots=True)
class Refusal:
    """An on-demand run refused before probing: the kind and a message for the caller."""

    kind: RefusalKind
    message: str


def lookup_results(discovery: Discovery) -> list[tuple[Target, ProbeResult]]:
    """The failed lookup (or null MX) as a (target as configured, result) pair, if any."""
    if discovery.lookup is None:
        return []
    return [(discovery.target, discovery.lookup)]


async def discover(
    target: Target, resolver: dns.asyncresolver.Resolver, budget: float | None = None
) -> Discovery:
    """Expand ``target`` (within ``budget`` seconds, if given); never raises."""
    if budget is None:
        return await expand(target, resolver)
    return await expand_within(target, resolver, budget)


async def probe_expansion(
    discovery: Discovery,
    probe_one: Prober,
    *,
    admit: Callable[[Discovery], str | None] | None = None,
) -> Run:
    """Probe what ``discovery`` expanded its target to, concurrently. ``admit`` sees the
    expansion first and may refuse it (``/probe``'s allow-list: the MX hosts a lookup found
    decide whether a module's credentials may go to them); then nothing is probed."""
    target = discovery.target
    if admit is not None and (why := admit(discovery)) is not None:
        return Run(target, discovery, (), refused=why)
    concrete = discovery.concrete
    if len(concrete) == 1:  # the usual case: no task to spawn
        probed = [(concrete[0], await probe_one(concrete[0]))]
    else:
        results = await asyncio.gather(*(probe_one(c) for c in concrete))
        probed = list(zip(concrete, results, strict=True))
    return Run(target, discovery, tuple(probed))


async def run_target(
    target: Target,
    resolver: dns.asyncresolver.Resolver,
    probe_one: Prober,
    budget: float | None = None,
    *,
    admit: Callable[[Discovery], str | None] | None = None,
) -> Run:
    """Expand ``target`` and probe what it expands to: ``discover`` then
    ``probe_expansion``. Never raises but for cancellation."""
    discovery = await discover(target, resolver, budget)
    return await probe_expansion(discovery, probe_one, admit=admit)
