"""DNSBL: each MX address looked up in each configured zone (RFC 5782).

``2.0.0.127.zen.example`` A: NXDOMAIN (or NODATA) means not listed; an answer in
127.0.0.0/8 means listed, with that return code (and the zone's TXT reason); answers in
127.255.255.0/24 are Spamhaus-style errors ("query refused: public resolver", "over the
limit"), reported as errors, not as listings; so are timeouts and answers outside 127/8.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress

from ..deadline import Deadline
from ..results.domain import DNSBLEntry, DomainCheck, Finding, MXHost
from .dnscache import DNSCache, Status
from .records import clip

MAX_QUERIES = 200  # (address, zone) pairs per check
_ERROR_CODES = ipaddress.ip_network("127.255.255.0/24")
_LISTED_CODES = ipaddress.ip_network("127.0.0.0/8")
_SPAMHAUS_ERRORS = {
    "127.255.255.252": "typo in the zone name",
    "127.255.255.254": "query via a public/open resolver refused",
    "127.255.255.255": "too many queries (over the free-use limit)",
}


def query_name(address: str, zone: str) -> str:
    """``192.0.2.1`` -> ``1.2.0.192.<zone>``; IPv6 as 32 reversed nibbles."""
    pointer = ipaddress.ip_address(address).reverse_pointer
    return pointer.rsplit(".", 2)[0] + "." + zone


async def check_dnsbl(
    mx_hosts: tuple[MXHost, ...], zones: tuple[str, ...], cache: DNSCache, deadline: Deadline
) -> tuple[tuple[DNSBLEntry, ...], list[Finding]]:
    pairs = [
        (mx.host, address, zone) for mx in mx_hosts for address in mx.addresses for zone in zones
    ][:MAX_QUERIES]
    # MX hosts may share an address: it is looked up once per zone, and each host still
    # gets its entry (its series), but a listing is one finding, naming the hosts.
    unique = list(dict.fromkeys((a, z) for _, a, z in pairs))
    answers = await asyncio.gather(*(_one(a, z, cache, deadline) for a, z in unique))
    by_pair = dict(zip(unique, answers, strict=True))
    entries = tuple(dataclasses.replace(by_pair[(a, z)], mx_host=h) for h, a, z in pairs)
    hosts: dict[tuple[str, str], list[str]] = {}
    for h, a, z in pairs:
        hosts.setdefault((a, z), []).append(h)
    findings = []
    for (address, zone), e in by_pair.items():
        shared = hosts[(address, zone)]
        of = f" (shared by MX hosts {', '.join(shared)})" if len(shared) > 1 else ""
        if e.listed:
            why = f": {e.reason}" if e.reason else ""
            reason = f"DNSBL: {address}{of} listed in {zone} ({', '.join(e.codes)}){why}"
            findings.append(Finding(DomainCheck.DNSBL, clip(reason, 300)))
        elif e.error:
            findings.append(
                Finding(DomainCheck.DNSBL, f"DNSBL: {zone} lookup of {address}{of}: {e.error}")
            )
    return entries, findings


async def _one(address: str, zone: str, cache: DNSCache, deadline: Deadline) -> DNSBLEntry:
    """The answer for one address in one zone (``mx_host`` left empty: set per host)."""
    mx_host = ""
    name = query_name(address, zone)
    lookup = await cache.query(name, "A", deadline)
    if lookup.status is Status.ERROR:
        return DNSBLEntry(mx_host, address, zone, False, error=lookup.error)
    if lookup.status is not Status.OK:
        return DNSBLEntry(mx_host, address, zone, False)
    codes = sorted({r.address for r in lookup.records}, key=ipaddress.ip_address)
    errors = [c for c in codes if ipaddress.ip_address(c) in _ERROR_CODES]
    if errors:
        why = _SPAMHAUS_ERRORS.get(errors[0], "error code")
        return DNSBLEntry(mx_host, address, zone, False, error=f"{errors[0]}: {why}")
    if any(ipaddress.ip_address(c) not in _LISTED_CODES for c in codes):
        return DNSBLEntry(
            mx_host, address, zone, False, error=f"unexpected answer {codes[0]} (not 127/8)"
        )
    txt = await cache.query(name, "TXT", deadline)
    reason = clip(" ".join(txt.texts()), 200) if txt.status is Status.OK else None
    return DNSBLEntry(mx_host, address, zone, True, tuple(codes[:10]), reason)
