"""One configured target, expanded and probed: the rule ``--once`` and ``/probe`` share.

An ``mx:`` target whose lookup fails (NXDOMAIN, SERVFAIL, timeout) or that publishes a null
MX is not an empty answer: its ``Discovery.lookup`` result (phase ``mx_lookup``) comes first
among the results, followed by the probes of whatever hosts there are. The scheduler keeps
its expansions between runs, so it records the lookup result through
``ResultStore.set_expansion`` instead of calling this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import dns.asyncresolver

from .config import Target
from .discovery import expand, expand_within
from .results import ProbeResult
from .targets import Discovery

Prober = Callable[[Target], Awaitable[ProbeResult]]


@dataclass(frozen=True, slots=True)
class Run:
    """What one run of a configured target found, in report order."""

    target: Target
    discovery: Discovery
    results: tuple[tuple[Target, ProbeResult], ...]  # the lookup's first, if it failed
    refused: str | None = None  # why ``admit`` refused what the lookup found: nothing probed


def lookup_results(discovery: Discovery) -> list[tuple[Target, ProbeResult]]:
    """The failed lookup (or null MX) as a (target as configured, result) pair, if any."""
    if discovery.lookup is None:
        return []
    return [(discovery.target, discovery.lookup)]


async def run_target(
    target: Target,
    resolver: dns.asyncresolver.Resolver,
    probe_one: Prober,
    budget: float | None = None,
    *,
    admit: Callable[[Discovery], str | None] | None = None,
) -> Run:
    """Expand ``target`` (within ``budget`` seconds, if given) and probe what it expands to.
    ``admit`` sees the expansion first and may refuse it (``/probe``'s allow-list: the MX
    hosts a lookup found decide whether a module's credentials may go to them); then nothing
    is probed. Never raises but for cancellation; the probes run concurrently."""
    if budget is None:
        discovery = await expand(target, resolver)
    else:
        discovery = await expand_within(target, resolver, budget)
    if admit is not None and (why := admit(discovery)) is not None:
        return Run(target, discovery, (), refused=why)
    concrete = discovery.concrete
    if len(concrete) == 1:  # the usual case: no task to spawn
        probed = [(concrete[0], await probe_one(concrete[0]))]
    else:
        results = await asyncio.gather(*(probe_one(c) for c in concrete))
        probed = list(zip(concrete, results, strict=True))
    return Run(target, discovery, tuple(lookup_results(discovery) + probed))
