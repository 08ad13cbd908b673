"""DNSBL: each MX address looked up in each configured zone (RFC 5782).

``2.0.0.127.zen.example`` A: NXDOMAIN (or NODATA) means not listed; an answer in
127.0.0.0/8 means listed, with that return code (and the zone's TXT reason); answers in
127.255.255.0/24 are Spamhaus-style errors ("query refused: public resolver", "over the
limit"), reported as errors, not as listings; so are timeouts and answers outside 127/8.
"""

from __future__ import annotations

import asyncio
import ipaddress

from ..probe.deadline import Deadline
from .dnscache import DNSCache, Status
from .records import _clip
from .results import DNSBLEntry, DomainCheck, Finding, MXHost

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
    entries = await asyncio.gather(*(_one(h, a, z, cache, deadline) for h, a, z in pairs))
    findings = []
    for e in entries:
        if e.listed:
            why = f": {e.reason}" if e.reason else ""
            reason = f"DNSBL: {e.address} listed in {e.zone} ({', '.join(e.codes)}){why}"
            findings.append(Finding(DomainCheck.DNSBL, _clip(reason, 300)))
        elif e.error:
            findings.append(
                Finding(DomainCheck.DNSBL, f"DNSBL: {e.zone} lookup of {e.address}: {e.error}")
            )
    return tuple(entries), findings


async def _one(
    mx_host: str, address: str, zone: str, cache: DNSCache, deadline: Deadline
) -> DNSBLEntry:
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
    reason = _clip(" ".join(txt.texts()), 200) if txt.status is Status.OK else None
    return DNSBLEntry(mx_host, address, zone, True, tuple(codes[:10]), reason)
