"""DNS answers for the domain checks, cached by TTL, asked with the DNSSEC OK bit.

``DNSCache.query(name, rdtype, deadline)`` never raises (except cancellation): it returns a
``Lookup`` saying records / NODATA / NXDOMAIN / error, and whether the resolver set the AD
bit (it validated the answer with DNSSEC). Answers are kept for their TTL (negative ones
for the SOA's negative TTL, RFC 2308), so the checks of one domain share lookups and a
re-check within the TTL asks nothing again. Errors are not cached. The cache is bounded
(least recently used entries go first), and identical queries in flight are sent once.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

from ..deadline import Deadline

MAX_ENTRIES = 4096
MAX_TTL = 86400.0
NEGATIVE_TTL = 60.0  # when a negative answer carries no SOA
MAX_RECORDS = 100  # records kept per answer; a hostile zone gets no more attention
EDNS_PAYLOAD = 1232


class Status(StrEnum):
    OK = "ok"
    NODATA = "nodata"  # the name exists, without records of this type
    NXDOMAIN = "nxdomain"
    ERROR = "error"  # timeout, SERVFAIL, refused, malformed: no answer to go on


@dataclass(frozen=True, slots=True)
class Lookup:
    name: str
    rdtype: str
    status: Status
    records: tuple[Any, ...] = ()  # dnspython rdata objects (immutable)
    ad: bool = False  # the resolver says it validated the answer (DNSSEC)
    error: str | None = None
    ttl: float = 0.0

    @property
    def answered(self) -> bool:
        return self.status is not Status.ERROR

    @property
    def empty(self) -> bool:
        """NODATA or NXDOMAIN: a void lookup in SPF's terms."""
        return self.status in (Status.NODATA, Status.NXDOMAIN)

    def texts(self) -> list[str]:
        """TXT records, each record's strings joined (RFC 7208 §3.3), decoded leniently."""
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self.records]


def dnssec_resolver(resolver: dns.asyncresolver.Resolver) -> dns.asyncresolver.Resolver:
    """A copy of ``resolver`` that asks with DO (EDNS0) and AD set, so a validating
    resolver reports validation in the AD bit of its answers (RFC 6840 §5.7)."""
    r = copy.copy(resolver)
    r.use_edns(0, dns.flags.DO, EDNS_PAYLOAD)
    r.flags = dns.flags.RD | dns.flags.AD
    return r


class DNSCache:
    """A bounded TTL cache in front of a dnspython async resolver."""

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        *,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolver = dnssec_resolver(resolver)
        self.max_entries = max_entries
        self.clock = clock
        self.sent = 0  # queries that reached the resolver (cache misses)
        self._entries: OrderedDict[tuple[str, str], tuple[float, Lookup]] = OrderedDict()
        self._inflight: dict[tuple[str, str], asyncio.Task[Lookup]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def query(self, name: str, rdtype: str, deadline: Deadline) -> Lookup:
        key = (name.rstrip(".").lower() + ".", rdtype.upper())
        hit = self._entries.get(key)
        if hit is not None:
            if hit[0] > self.clock():
                self._entries.move_to_end(key)
                return hit[1]
            del self._entries[key]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key, deadline))
            self._inflight[key] = task
            task.add_done_callback(lambda _t, k=key: self._inflight.pop(k, None))
        # Shielded: one caller giving up must not cancel the answer others wait for.
        return await asyncio.shield(task)

    async def _fetch(self, key: tuple[str, str], deadline: Deadline) -> Lookup:
        name, rdtype = key
        remaining = deadline.remaining()
        if remaining <= 0:
            return Lookup(name, rdtype, Status.ERROR, error="deadline passed")
        self.sent += 1
        try:
            answer = await self.resolver.resolve(
                name,
                rdtype,
                raise_on_no_answer=False,
                # The resolver's own lifetime (dns.timeout) caps each question.
                lifetime=min(self.resolver.lifetime, remaining),
                search=False,
            )
        except dns.resolver.NXDOMAIN as exc:
            response = _first_response(exc)
            lookup = Lookup(
                name, rdtype, Status.NXDOMAIN, ad=_ad(response), ttl=_negative_ttl(response)
            )
        except dns.exception.DNSException as exc:
            return Lookup(name, rdtype, Status.ERROR, error=describe(exc))
        except (ValueError, UnicodeError) as exc:  # a name dnspython cannot encode, etc.
            return Lookup(name, rdtype, Status.ERROR, error=f"{type(exc).__name__}: {exc}"[:200])
        else:
            response = answer.response
            if answer.rrset is None:
                lookup = Lookup(
                    name, rdtype, Status.NODATA, ad=_ad(response), ttl=_negative_ttl(response)
                )
            else:
                records = tuple(answer.rrset)[:MAX_RECORDS]
                ttl = min(float(answer.rrset.ttl), MAX_TTL)
                lookup = Lookup(name, rdtype, Status.OK, records, _ad(response), ttl=ttl)
        if lookup.ttl > 0:
            self._entries[key] = (self.clock() + lookup.ttl, lookup)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return lookup


def _first_response(exc: dns.resolver.NXDOMAIN) -> dns.message.Message | None:
    try:
        responses = exc.responses()
    except (AttributeError, KeyError, TypeError):
        return None
    return next(iter(responses.values()), None)


def _ad(response: dns.message.Message | None) -> bool:
    return response is not None and bool(response.flags & dns.flags.AD)


def _negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308 §5: the lesser of the SOA's TTL and its MINIMUM field."""
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                return float(min(rrset.ttl, rrset[0].minimum, MAX_TTL))
    return NEGATIVE_TTL


def describe(exc: BaseException) -> str:
    """A short description of a DNS error, for findings."""
    if isinstance(exc, dns.exception.Timeout):
        return "timeout"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "no nameserver answered (SERVFAIL or refused)"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
