"""Checks on a mail domain (DNS records, MTA-STS, DANE, DNSBL), as a plain engine: no
metrics, no scheduling. ``check()`` always returns a ``DomainResult`` and never raises, except
``CancelledError``.

- records: MX (null MX), DMARC, TLS-RPT; SPF                (records.py, spf.py)
- mta_sts: ``_mta-sts`` TXT, the HTTPS policy, MX matching  (mtasts.py)
- dane:    TLSA per MX, AD bit, certificate match          (dane.py)
- dnsbl:   each MX address in each configured zone          (dnsbl.py)
- dkim:    key records of the configured selectors          (dkim.py)
- reverse_dns: PTR, FCrDNS, greeting name of MX / sending addresses (ptr.py)

DNS goes through a ``DNSCache`` (dnscache.py): answers are kept for their TTL, so pass the
same cache to every check of a domain and re-checks within the TTL ask nothing again.
One ``Deadline`` bounds the whole check; the checks after the MX lookup run concurrently.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import dns.asyncresolver

from ..config import DomainChecks, Target, default_ehlo_name
from ..deadline import Deadline
from ..results.domain import (
    RECORD_CHECKS,
    DomainCheck,
    DomainResult,
    Finding,
    RecordsResult,
)
from .dane import check_dane
from .dkim import check_dkim
from .dnsbl import check_dnsbl
from .dnscache import DNSCache
from .mtasts import check_mta_sts
from .ptr import check_reverse_dns
from .records import check_dmarc, check_tlsrpt, lookup_mx
from .spf import check_spf

__all__ = [
    "DNSCache",
    "DomainResult",
    "DomainSpec",
    "Finding",
    "check",
    "check_domain",
    "domain_checks",
    "enabled_checks",
]

log = logging.getLogger(__name__)
GRACE = 1.0  # seconds past the deadline before the safety net cuts a check off
_ORDER = {c: i for i, c in enumerate(DomainCheck)}


def enabled_checks(checks: DomainChecks) -> tuple[DomainCheck, ...]:
    """The checks a module turned on, in ``DomainCheck`` order (one findings series each)."""
    on: set[DomainCheck] = set()
    if checks.records:
        on.update(RECORD_CHECKS)
    if checks.mta_sts:
        on.add(DomainCheck.MTA_STS)
    if checks.dane:
        on.add(DomainCheck.DANE)
    if checks.dnsbl:
        on.add(DomainCheck.DNSBL)
    if checks.dkim_selectors:
        on.add(DomainCheck.DKIM)
    if checks.reverse_dns or checks.sending_addresses:
        on.add(DomainCheck.REVERSE_DNS)
    return tuple(c for c in DomainCheck if c in on)


@functools.cache
def _ehlo_name() -> str:
    return default_ehlo_name()


async def check(
    domain: str,
    checks: DomainChecks,
    resolver: DNSCache | dns.asyncresolver.Resolver,
    deadline: Deadline,
    previous: DomainResult | None = None,
    *,
    ehlo_name: str | None = None,
) -> DomainResult:
    """Run the enabled checks on ``domain`` by ``deadline``.

    ``resolver``: a ``DNSCache`` kept between checks (answers cached by TTL), or a plain
    dnspython resolver (then only this check shares answers). ``previous``: the last
    result for this domain, to notice an MTA-STS policy id change. ``ehlo_name``: sent by
    the DANE check's SMTP sessions (default: this host's FQDN).
    """
    domain = domain.rstrip(".").lower()
    cache = resolver if isinstance(resolver, DNSCache) else DNSCache(resolver)
    started_at, start = time.time(), time.perf_counter()
    enabled = enabled_checks(checks)
    run = _Run(domain, checks, cache, deadline, previous, ehlo_name)
    error: str | None = None
    try:
        async with asyncio.timeout_at(deadline.at + GRACE):
            error = await run.execute()
    except TimeoutError:
        error = f"not finished within the {deadline.budget:g}s deadline"
    except Exception as exc:  # a bug of ours must not take the exporter down
        log.exception("internal error checking domain %s", domain)
        error = f"internal error: {type(exc).__name__}"
    return DomainResult(
        domain=domain,
        success=error is None,
        started_at=started_at,
        duration_seconds=time.perf_counter() - start,
        enabled=enabled,
        # In DomainCheck order (sub-checks finish in any order), stable within a check.
        findings=tuple(sorted(run.findings, key=lambda f: _ORDER[f.check])),
        error=error,
        mx=run.mx,
        records=run.records,
        mta_sts=run.mta_sts,
        dane=run.dane,
        dnsbl=run.dnsbl,
        dkim=run.dkim,
        reverse_dns=run.reverse_dns,
    )


class _Run:
    """The state of one check; sub-checks fill it in as they finish."""

    def __init__(
        self,
        domain: str,
        checks: DomainChecks,
        cache: DNSCache,
        deadline: Deadline,
        previous: DomainResult | None,
        ehlo_name: str | None,
    ) -> None:
        self.domain, self.checks, self.cache, self.deadline = domain, checks, cache, deadline
        self.previous, self.ehlo_name = previous, ehlo_name
        self.findings: list[Finding] = []
        self.mx = None
        self.records: RecordsResult | None = None
        self.mta_sts = None
        self.dane = None
        self.dnsbl = None
        self.dkim = None
        self.reverse_dns = None

    async def execute(self) -> str | None:
        """The MX lookup, then the enabled checks concurrently; the error if DNS failed."""
        mx, findings, error = await lookup_mx(self.domain, self.cache, self.deadline)
        self.mx = mx
        if self.checks.records:
            self.findings += findings
        if error is not None:
            return error
        jobs: list[Awaitable[None]] = []
        if self.checks.records:
            jobs.append(self._guard(DomainCheck.SPF, self._records()))
        if self.checks.mta_sts:
            jobs.append(self._guard(DomainCheck.MTA_STS, self._mta_sts()))
        if self.checks.dane:
            jobs.append(self._guard(DomainCheck.DANE, self._dane()))
        if self.checks.dnsbl:
            jobs.append(self._guard(DomainCheck.DNSBL, self._dnsbl()))
        if self.checks.dkim_selectors:
            jobs.append(self._guard(DomainCheck.DKIM, self._dkim()))
        if self.checks.reverse_dns or self.checks.sending_addresses:
            jobs.append(self._guard(DomainCheck.REVERSE_DNS, self._reverse_dns()))
        await asyncio.gather(*jobs)
        return None

    async def _guard(self, which: DomainCheck, job: Awaitable[None]) -> None:
        try:
            await job
        except Exception as exc:
            log.exception("internal error in the %s check of %s", which, self.domain)
            self.findings.append(Finding(which, f"internal error: {type(exc).__name__}"))

    async def _records(self) -> None:
        (spf, f1), (dmarc, f2), (tlsrpt, f3) = await asyncio.gather(
            check_spf(self.domain, self.cache, self.deadline),
            check_dmarc(self.domain, self.cache, self.deadline),
            check_tlsrpt(self.domain, self.cache, self.deadline),
        )
        self.records = RecordsResult(spf, dmarc, tlsrpt)
        self.findings += [*f1, *f2, *f3]

    async def _mta_sts(self) -> None:
        assert self.mx is not None
        prev = self.previous.mta_sts if self.previous is not None else None
        self.mta_sts, findings = await check_mta_sts(
            self.domain,
            self.mx.hosts,
            self.cache,
            self.deadline,
            port=self.checks.mta_sts_port,
            ca_file=self.checks.tls_ca_file,
            previous_id=prev.policy_id if prev is not None else None,
        )
        self.findings += findings

    async def _dane(self) -> None:
        assert self.mx is not None
        self.dane, findings = await check_dane(
            self.mx.hosts,
            self.cache,
            self.deadline,
            port=self.checks.smtp_port,
            ehlo_name=self.ehlo_name or _ehlo_name(),
        )
        self.findings += findings

    async def _dnsbl(self) -> None:
        assert self.mx is not None
        self.dnsbl, findings = await check_dnsbl(
            self.mx.hosts, self.checks.dnsbl, self.cache, self.deadline
        )
        self.findings += findings

    async def _dkim(self) -> None:
        self.dkim, findings = await check_dkim(
            self.domain, self.checks.dkim_selectors, self.cache, self.deadline
        )
        self.findings += findings

    async def _reverse_dns(self) -> None:
        assert self.mx is not None
        self.reverse_dns, findings = await check_reverse_dns(
            self.mx.hosts if self.checks.reverse_dns else (),
            self.checks.sending_addresses,
            self.cache,
            self.deadline,
            greeting=self.checks.reverse_dns,
            port=self.checks.smtp_port,
            ehlo_name=self.ehlo_name or _ehlo_name(),
        )
        self.findings += findings


# A domain check makes dozens of DNS queries, an HTTPS fetch (MTA-STS) and a STARTTLS
# session per MX host (DANE): more than one SMTP probe's budget.
DOMAIN_CHECK_BUDGET = 30.0


@dataclass(frozen=True, slots=True)
class DomainSpec:
    """One domain to check, and how: the checks and EHLO name of the module asking."""

    domain: str
    checks: DomainChecks
    ehlo_name: str


def domain_checks(targets: Sequence[Target]) -> dict[tuple[str, str], DomainSpec]:
    """(domain, module) -> what to check, for the targets whose module has ``domain:``."""
    out: dict[tuple[str, str], DomainSpec] = {}
    for t in targets:
        name = t.mail_domain
        if name is not None and t.module.domain is not None:
            out.setdefault(
                (name, t.module.name), DomainSpec(name, t.module.domain, t.module.ehlo_name)
            )
    return out


async def check_domain(
    spec: DomainSpec,
    resolver: DNSCache | dns.asyncresolver.Resolver,
    previous: DomainResult | None = None,
) -> DomainResult:
    """Check ``spec``'s domain within ``DOMAIN_CHECK_BUDGET``."""
    return await check(
        spec.domain,
        spec.checks,
        resolver,
        Deadline.after(DOMAIN_CHECK_BUDGET),
        previous,
        ehlo_name=spec.ehlo_name,
    )
