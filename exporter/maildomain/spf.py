"""SPF (RFC 7208): one ``v=spf1`` record, known mechanisms with valid arguments, and the
DNS lookups it causes, counted through include and redirect (§4.6.4), with void lookups
and loops. ``parse_spf`` is pure; ``check_spf`` fetches records through the ``DNSCache``,
bounded in records fetched and terms read, so a hostile zone cannot make it run away.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..deadline import Deadline
from ..results.domain import DomainCheck, Finding, SPFResult
from .dnscache import DNSCache, Status
from .records import MAX_RECORD_SHOWN, clip

SPF_LOOKUP_LIMIT = 10  # RFC 7208 §4.6.4
SPF_VOID_LIMIT = 2
SPF_MAX_FETCHES = 25  # SPF records fetched while following include/redirect, in all
SPF_MAX_TERMS = 200  # per record

# --- SPF ------------------------------------------------------------------------------------

_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_LOOKUP_MECHANISMS = frozenset({"include", "a", "mx", "ptr", "exists"})
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.\-]*)=(.*)", re.S)
_MECHANISM = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9_.\-]*)(.*)", re.S)
_MACRO = r"%\{[slodiphcrtvSLODIPHCRTV]\d*[rR]?[.\-+,/_=]*\}|%[%_\-]"
_DOMAIN_SPEC = re.compile(rf"(?:{_MACRO}|[\x21-\x24\x26-\x7e])+")
_HOSTNAME = re.compile(r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,62})?\.)+[A-Za-z0-9\-]{1,63}\.?")
_DUAL_CIDR = re.compile(r"(?:/(\d{1,2}))?(?://(\d{1,3}))?$")


@dataclass(slots=True)
class SPFRecord:
    """One parsed record: what it asks DNS for, and what is wrong with it."""

    lookups: int = 0  # terms of this record that query DNS
    includes: list[str] = field(default_factory=list)  # literal include targets
    redirect: str | None = None  # followed only when the record has no "all"
    problems: list[str] = field(default_factory=list)
    plus_all: bool = False


def is_spf(text: str) -> bool:
    head = text.strip().split(" ", 1)[0].lower()
    return head == "v=spf1"


def parse_spf(text: str) -> SPFRecord:
    """Check one SPF record's syntax (RFC 7208 §12) and collect its DNS-querying terms."""
    rec = SPFRecord()
    if not text.isascii():
        rec.problems.append("record is not ASCII")
        return rec
    terms = text.split()
    if not terms or terms[0].lower() != "v=spf1":
        rec.problems.append("record does not start with v=spf1")
        return rec
    if len(terms) > SPF_MAX_TERMS:
        rec.problems.append(f"{len(terms)} terms (stopped at {SPF_MAX_TERMS})")
        terms = terms[:SPF_MAX_TERMS]
    has_all = False
    seen_modifiers: set[str] = set()
    for term in terms[1:]:
        modifier = _MODIFIER.fullmatch(term)
        if modifier:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name not in ("redirect", "exp"):
                continue  # unknown modifiers are ignored (RFC 7208 §6)
            if name in seen_modifiers:
                rec.problems.append(f"'{name}' appears twice (RFC 7208 §6)")
            seen_modifiers.add(name)
            if not _valid_domain_spec(value):
                rec.problems.append(f"'{clip(term, 60)}': invalid domain")
            elif name == "redirect":
                rec.redirect = value
            continue
        mech = _MECHANISM.fullmatch(term)
        name = mech.group(2).lower() if mech else ""
        if mech is None or name not in _MECHANISMS:
            rec.problems.append(f"unknown mechanism '{clip(term, 60)}'")
            continue
        qualifier, rest = mech.group(1), mech.group(3)
        problem = _check_mechanism(name, rest)
        if problem:
            rec.problems.append(f"'{clip(term, 60)}': {problem}")
            continue
        if name in _LOOKUP_MECHANISMS:
            rec.lookups += 1
        if name == "include":
            rec.includes.append(rest[1:])
        if name == "all":
            has_all = True
            rec.plus_all = rec.plus_all or qualifier in ("", "+")
    if has_all:
        rec.redirect = None  # RFC 7208 §6.1: redirect is ignored when "all" is present
    elif rec.redirect is not None:
        rec.lookups += 1
    return rec


def _check_mechanism(name: str, rest: str) -> str | None:
    if name == "all":
        return "takes no argument" if rest else None
    if name in ("include", "exists"):
        if not rest.startswith(":") or not _valid_domain_spec(rest[1:]):
            return "needs ':domain'"
        return None
    if name in ("ip4", "ip6"):
        if not rest.startswith(":"):
            return f"needs ':{'address' if name == 'ip4' else 'ipv6-address'}[/prefix]'"
        return _check_network(name, rest[1:])
    if name == "ptr":
        if rest and (rest[0] != ":" or not _valid_domain_spec(rest[1:])):
            return "bad domain"
        return None
    # a and mx: [":" domain-spec] [ "/" ip4-cidr ] [ "//" ip6-cidr ]
    cidr = _DUAL_CIDR.search(rest)
    assert cidr is not None  # the pattern matches the empty string at the end
    v4, v6 = cidr.group(1), cidr.group(2)
    if (v4 and int(v4) > 32) or (v6 and int(v6) > 128):
        return "prefix length out of range"
    domain = rest[: cidr.start()]
    if domain and (domain[0] != ":" or not _valid_domain_spec(domain[1:])):
        return "bad domain"
    return None


def _check_network(name: str, value: str) -> str | None:
    address, _, prefix = value.partition("/")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if (ip.version == 4) != (name == "ip4"):
        return f"not an IPv{4 if name == 'ip4' else 6} address"
    if prefix and (not prefix.isdigit() or int(prefix) > (32 if ip.version == 4 else 128)):
        return "prefix length out of range"
    return None


def _valid_domain_spec(spec: str) -> bool:
    if not spec or not _DOMAIN_SPEC.fullmatch(spec):
        return False
    if "%" in spec:
        return re.sub(_MACRO, "", spec).count("%") == 0
    return bool(_HOSTNAME.fullmatch(spec))


async def check_spf(
    domain: str, cache: DNSCache, deadline: Deadline
) -> tuple[SPFResult, list[Finding]]:
    """Fetch the domain's SPF record and follow include/redirect to count DNS lookups."""
    out: list[Finding] = []

    def finding(reason: str) -> None:
        out.append(Finding(DomainCheck.SPF, f"SPF: {reason}"))

    records, error = await _spf_records(domain, cache, deadline)
    if error:
        finding(f"lookup of {domain} TXT failed: {error}")
        return SPFResult(valid=False, lookups=0), out
    if not records:
        finding(f"no SPF record at {domain}")
        return SPFResult(valid=False, lookups=0), out
    if len(records) > 1:
        finding(f"{len(records)} records (RFC 7208 allows one)")
        return SPFResult(valid=False, lookups=0, record=clip(records[0], MAX_RECORD_SHOWN)), out
    walk = _SPFWalk(cache, deadline, finding)
    await walk.visit(domain, records[0], (domain,))
    valid = not walk.invalid
    if walk.lookups > SPF_LOOKUP_LIMIT:
        more = "more than " if walk.truncated else ""
        finding(f"{more}{walk.lookups} DNS lookups (limit {SPF_LOOKUP_LIMIT})")
        valid = False
    if walk.voids > SPF_VOID_LIMIT:
        finding(f"{walk.voids} void lookups (limit {SPF_VOID_LIMIT})")
        valid = False
    return (
        SPFResult(valid, walk.lookups, walk.voids, clip(records[0], MAX_RECORD_SHOWN)),
        out,
    )


class _SPFWalk:
    """Depth-first through include and redirect, bounded by SPF_MAX_FETCHES."""

    def __init__(self, cache: DNSCache, deadline: Deadline, finding: Callable[[str], None]) -> None:
        self.cache, self.deadline, self.finding = cache, deadline, finding
        self.lookups = self.voids = self.fetches = 0
        self.invalid = self.truncated = False

    async def visit(self, domain: str, text: str, path: tuple[str, ...]) -> None:
        rec = parse_spf(text)
        where = "" if len(path) == 1 else f"in {domain}: "
        for problem in rec.problems:
            self.finding(f"{where}{problem}")
            self.invalid = True
        if rec.plus_all and len(path) == 1:
            self.finding("'+all' lets any host send mail as the domain")
        self.lookups += rec.lookups
        targets = [("include", t) for t in rec.includes]
        if rec.redirect is not None:
            targets.append(("redirect", rec.redirect))
        for kind, target in targets:
            if "%" in target:
                continue  # macros expand per message; nothing to follow statically
            target = target.rstrip(".").lower()
            if target in path:
                self.finding(f"{kind}:{target} loops back (via {' -> '.join(path)})")
                self.invalid = True
                continue
            if self.fetches >= SPF_MAX_FETCHES:
                self.truncated = True
                return
            self.fetches += 1
            records, error = await _spf_records(target, self.cache, self.deadline)
            if error:
                self.finding(f"{kind}:{target}: lookup failed: {error}")
                self.invalid = True
            elif not records:
                self.voids += 1
                self.finding(f"{kind}:{target} has no SPF record")
                self.invalid = True
            elif len(records) > 1:
                self.finding(f"{kind}:{target} has {len(records)} SPF records")
                self.invalid = True
            else:
                await self.visit(target, records[0], (*path, target))


async def _spf_records(
    domain: str, cache: DNSCache, deadline: Deadline
) -> tuple[list[str], str | None]:
    lookup = await cache.query(domain, "TXT", deadline)
    if lookup.status is Status.ERROR:
        return [], lookup.error
    return [t for t in lookup.texts() if is_spf(t)], None
