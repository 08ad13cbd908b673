"""From a configured target to the concrete targets probed.

- ``mx:example.com`` resolves the domain's MX records and probes every MX host (by address,
  checking the certificate against the MX host name), labelled ``mx_host`` and
  ``mx_preference``; it is resolved again when the shortest TTL runs out. A domain without
  MX records falls back to its own A/AAAA (RFC 5321 §5.1, labelled ``mx_implicit``); a null
  MX (RFC 7505: a single ``0 .``) means the domain accepts no mail, which is reported, not
  probed and not a failure of the exporter.
- ``ip_protocol: both`` probes IPv4 and IPv6 separately, labelled ``ip_protocol``.
- Anything else is probed as written.

A lookup that fails (NXDOMAIN, SERVFAIL, timeout, no address at all) and a null MX each
carry a result of their own (``Discovery.lookup``): a failed ``mx_lookup`` phase with a
kind and a reason, for the target as configured, so the domain shows as down on every
surface instead of as an empty report.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import replace

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from .config import DNSConfig, Target
from .results import FailureKind, Phase, PhaseTiming, ProbeResult
from .targets import Discovery, static_expansion, with_labels

MIN_TTL, MAX_TTL = 1.0, 86400.0


def _with_lookup(d: Discovery, seconds: float) -> Discovery:
    """``d`` with its duration and, when it failed or found a null MX, the result that
    stands for it: the target as configured, failed in phase ``mx_lookup``."""
    failure = d.failure
    if failure is None:
        return replace(d, seconds=seconds)
    t = d.target
    lookup = ProbeResult(
        target=t.name,
        module=t.module.name,
        host=t.host,
        port=t.port,
        started_at=d.resolved_at,
        duration_seconds=seconds,
        phases=(PhaseTiming(Phase.MX_LOOKUP, seconds),),
        failure=failure,
        labels=t.labels,
    )
    return replace(d, seconds=seconds, lookup=lookup)


def lookup_timed_out(
    target: Target, budget: float, seconds: float, previous: Discovery | None = None
) -> Discovery:
    """The expansion of ``target`` when its MX lookup did not end within the caller's
    ``budget`` (a /probe deadline shorter than the resolver's own)."""
    d = Discovery(
        target,
        previous.concrete if previous is not None else (),
        ok=False,
        error=f"MX lookup failed: timeout: no answer within {budget:g}s",
        kind=FailureKind.TIMEOUT,
        resolved_at=time.time() - seconds,
        expires=_expiry(30),
    )
    return _with_lookup(d, seconds)


def make_resolver(cfg: DNSConfig) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=not cfg.nameservers)
    if cfg.nameservers:
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(host, port) for host, port in cfg.nameservers
        ]
    resolver.lifetime = cfg.timeout
    resolver.timeout = cfg.timeout
    return resolver


async def expand(
    target: Target, resolver: dns.asyncresolver.Resolver, previous: Discovery | None = None
) -> Discovery:
    """Expand ``target``; never raises. On a lookup failure the previous concrete targets
    are kept (a DNS hiccup should not make MX hosts vanish from the metrics), and the
    failure is a result of its own (``Discovery.lookup``)."""
    if not target.mx:
        return Discovery(target, static_expansion(target), resolved_at=time.time())
    start = time.perf_counter()
    discovery = await _expand_mx(target, resolver, previous)
    return _with_lookup(discovery, time.perf_counter() - start)


async def expand_within(
    target: Target,
    resolver: dns.asyncresolver.Resolver,
    budget: float,
    previous: Discovery | None = None,
) -> Discovery:
    """``expand`` bounded by ``budget`` seconds: running out is a failed lookup (kind
    ``timeout``), never an empty expansion."""
    start = time.perf_counter()
    try:
        return await asyncio.wait_for(expand(target, resolver, previous), max(budget, 0.0))
    except TimeoutError:
        return lookup_timed_out(target, budget, time.perf_counter() - start, previous)


async def _expand_mx(
    target: Target, resolver: dns.asyncresolver.Resolver, previous: Discovery | None
) -> Discovery:
    now = time.time()
    stale = previous.concrete if previous is not None else ()
    try:
        answer = await resolver.resolve(target.host, "MX")
    except dns.resolver.NXDOMAIN:
        return Discovery(
            target,
            (),
            ok=False,
            error="NXDOMAIN: the domain does not exist",
            kind=FailureKind.NXDOMAIN,
            resolved_at=now,
            expires=_expiry(300),
        )
    except dns.resolver.NoAnswer:
        return await _implicit_mx(target, resolver, now, stale)
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.exception.DNSException) as exc:
        return Discovery(
            target,
            stale,
            ok=False,
            error=f"MX lookup failed: {_describe(exc, resolver.lifetime)}",
            kind=FailureKind.TIMEOUT if isinstance(exc, dns.exception.Timeout) else None,
            resolved_at=now,
            expires=_expiry(30),
        )
    records = sorted((r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer)
    ttl = float(answer.rrset.ttl) if answer.rrset is not None else 300.0
    if len(records) == 1 and records[0][1] in ("", "."):
        return Discovery(target, (), null_mx=True, resolved_at=now, expires=_expiry(ttl))
    concrete: list[Target] = []
    for preference, host in records:
        addresses, addr_ttl = await _addresses(resolver, host, target.module.ip_protocol)
        ttl = min(ttl, addr_ttl)
        concrete += _targets(target, host, preference, addresses)
    if not concrete:  # MX records, but nothing to connect to: no mail gets through either
        return Discovery(
            target,
            stale,
            ok=False,
            mx_hosts=len(records),
            error="no address for any MX host: " + ", ".join(h for _, h in records)[:200],
            kind=FailureKind.DNS,
            resolved_at=now,
            expires=_expiry(min(ttl, 300)),
        )
    return Discovery(
        target, tuple(concrete), mx_hosts=len(records), resolved_at=now, expires=_expiry(ttl)
    )


async def _implicit_mx(
    target: Target, resolver: dns.asyncresolver.Resolver, now: float, stale: tuple[Target, ...]
) -> Discovery:
    addresses, ttl = await _addresses(resolver, target.host, target.module.ip_protocol)
    if not addresses:
        return Discovery(
            target,
            stale,
            ok=False,
            implicit=True,
            resolved_at=now,
            error="no MX and no address records",
            expires=_expiry(min(ttl, 300)),
        )
    return Discovery(
        target,
        tuple(_targets(target, target.host, 0, addresses, implicit=True)),
        implicit=True,
        mx_hosts=1,
        resolved_at=now,
        expires=_expiry(ttl),
    )


async def _addresses(
    resolver: dns.asyncresolver.Resolver, host: str, ip_protocol: str
) -> tuple[list[str], float]:
    """Addresses of ``host`` for the module's family: ``auto`` takes IPv4 when there is
    some (as most MTAs still do), else IPv6; ``both`` takes all."""
    found: dict[str, list[str]] = {}
    ttl = MAX_TTL
    for rdtype in ("A", "AAAA"):
        if (ip_protocol, rdtype) in (("ip4", "AAAA"), ("ip6", "A")):
            continue
        try:
            answer = await resolver.resolve(host, rdtype)
        except dns.exception.DNSException:
            continue
        found[rdtype] = [r.to_text() for r in answer]
        if answer.rrset is not None:
            ttl = min(ttl, float(answer.rrset.ttl))
    if ip_protocol == "auto":
        return (found.get("A") or found.get("AAAA") or []), ttl
    return found.get("A", []) + found.get("AAAA", []), ttl


def _targets(
    target: Target, host: str, preference: int, addresses: list[str], *, implicit: bool = False
) -> list[Target]:
    module = target.module
    out = []
    both = module.ip_protocol == "both"
    families = ["ip6" if ipaddress.ip_address(a).version == 6 else "ip4" for a in addresses]
    for address, family in zip(addresses, families, strict=True):
        labels = with_labels(target.labels, ("mx_host", host), ("mx_preference", str(preference)))
        if implicit:
            labels = with_labels(labels, ("mx_implicit", "true"))
        if both:
            labels = with_labels(labels, ("ip_protocol", family))
        if families.count(family) > 1:  # several addresses: one series each
            labels = with_labels(labels, ("address", address))
        out.append(
            replace(
                target,
                host=address,
                labels=labels,
                # The certificate must name the MX host, not the address we connect to.
                module=replace(
                    module, tls_server_name=module.tls_server_name or host, ip_protocol=family
                ),
            )
        )
    return out


def _expiry(ttl: float) -> float:
    return time.monotonic() + min(max(ttl, MIN_TTL), MAX_TTL)


def _describe(exc: BaseException, lifetime: float) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return f"timeout: no answer within {lifetime:g}s"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
