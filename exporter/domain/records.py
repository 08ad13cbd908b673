"""MX (null MX, RFC 7505), SPF (RFC 7208), DMARC (RFC 7489) and TLS-RPT (RFC 8460).

Parsers are pure functions (text in, problems out); the async parts only fetch TXT
records through the ``DNSCache``. Malformed records become findings, never exceptions.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from ..probe.deadline import Deadline
from .dnscache import DNSCache, Lookup, Status
from .results import (
    DMARCResult,
    DomainCheck,
    Finding,
    MXHost,
    MXResult,
    SPFResult,
    TLSRPTResult,
)

MAX_MX_HOSTS = 10  # MX hosts looked at (by preference); more are ignored
MAX_ADDRESSES = 4  # addresses kept per MX host and family
SPF_LOOKUP_LIMIT = 10  # RFC 7208 §4.6.4
SPF_VOID_LIMIT = 2
SPF_MAX_FETCHES = 25  # SPF records fetched while following include/redirect, in all
SPF_MAX_TERMS = 200  # per record
MAX_RECORD_SHOWN = 512


# --- MX -------------------------------------------------------------------------------------


async def lookup_mx(
    domain: str, cache: DNSCache, deadline: Deadline
) -> tuple[MXResult, list[Finding], str | None]:
    """The domain's MX hosts with their addresses; the error says why DNS gave no answer."""
    lookup = await cache.query(domain, "MX", deadline)
    findings: list[Finding] = []
    if lookup.status is Status.ERROR:
        return MXResult(answered=False), findings, f"MX lookup failed: {lookup.error}"
    if lookup.status is Status.NXDOMAIN:
        findings.append(Finding(DomainCheck.MX, f"MX: {domain} does not exist (NXDOMAIN)"))
        return MXResult(answered=True, exists=False), findings, None
    if lookup.status is Status.NODATA:
        findings.append(
            Finding(
                DomainCheck.MX,
                "MX: no MX records (senders fall back to the domain's own address, RFC 5321 §5.1)",
            )
        )
        return MXResult(answered=True), findings, None
    pairs = sorted(
        (r.preference, r.exchange.to_text(omit_final_dot=True).lower()) for r in lookup.records
    )
    nulls = [p for p in pairs if p[1] in ("", ".")]
    if nulls:
        if len(pairs) == 1 and pairs[0][0] == 0:
            return MXResult(answered=True, records=0, null_mx=True), findings, None
        findings.append(
            Finding(DomainCheck.MX, "MX: null MX mixed with other MX records (RFC 7505 §3)")
        )
    hosts: list[MXHost] = []
    for preference, host in [p for p in pairs if p not in nulls][:MAX_MX_HOSTS]:
        addresses = await host_addresses(host, cache, deadline)
        if not addresses:
            findings.append(Finding(DomainCheck.MX, f"MX: {host} has no A/AAAA address"))
        hosts.append(MXHost(preference, host, addresses))
    return MXResult(answered=True, hosts=tuple(hosts), records=len(pairs)), findings, None


async def host_addresses(host: str, cache: DNSCache, deadline: Deadline) -> tuple[str, ...]:
    out: list[str] = []
    for rdtype in ("A", "AAAA"):
        lookup = await cache.query(host, rdtype, deadline)
        out += [r.address for r in lookup.records[:MAX_ADDRESSES]]
    return tuple(out)


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
                rec.problems.append(f"'{_clip(term, 60)}': invalid domain")
            elif name == "redirect":
                rec.redirect = value
            continue
        mech = _MECHANISM.fullmatch(term)
        name = mech.group(2).lower() if mech else ""
        if mech is None or name not in _MECHANISMS:
            rec.problems.append(f"unknown mechanism '{_clip(term, 60)}'")
            continue
        qualifier, rest = mech.group(1), mech.group(3)
        problem = _check_mechanism(name, rest)
        if problem:
            rec.problems.append(f"'{_clip(term, 60)}': {problem}")
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
        return SPFResult(valid=False, lookups=0, record=_clip(records[0], MAX_RECORD_SHOWN)), out
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
        SPFResult(valid, walk.lookups, walk.voids, _clip(records[0], MAX_RECORD_SHOWN)),
        out,
    )


class _SPFWalk:
    """Depth-first through include and redirect, bounded by SPF_MAX_FETCHES."""

    def __init__(self, cache: DNSCache, deadline: Deadline, finding) -> None:  # type: ignore[no-untyped-def]
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


# --- DMARC ----------------------------------------------------------------------------------

_TAG = re.compile(r"\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*", re.S)
DMARC_POLICIES = ("none", "quarantine", "reject")


def parse_tags(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """``tag=value; tag=value`` (DMARC, TLS-RPT, MTA-STS TXT): pairs in order, problems."""
    pairs: list[tuple[str, str]] = []
    problems: list[str] = []
    for part in text.split(";"):
        if not part.strip():
            continue
        m = _TAG.fullmatch(part)
        if m is None:
            problems.append(f"malformed tag '{_clip(part.strip(), 40)}'")
            continue
        pairs.append((m.group(1).lower(), m.group(2)))
    return pairs, problems


def parse_dmarc(text: str) -> tuple[str | None, list[str]]:
    """The policy (p=) of a valid DMARC record, or None; and the record's problems."""
    pairs, problems = parse_tags(text)
    if not pairs or pairs[0][0] != "v" or pairs[0][1] != "DMARC1":
        return None, ["record must start with v=DMARC1", *problems]
    tags: dict[str, str] = {}
    for tag, value in pairs[1:]:
        tags.setdefault(tag, value)
    policy = tags.get("p")
    if policy is None:
        problems.append("no p= tag (required)")
    elif policy.lower() not in DMARC_POLICIES:
        problems.append(f"p={_clip(policy, 30)} is not none, quarantine or reject")
    if "sp" in tags and tags["sp"].lower() not in DMARC_POLICIES:
        problems.append(f"sp={_clip(tags['sp'], 30)} is not none, quarantine or reject")
    pct = tags.get("pct")
    if pct is not None and not (pct.isdigit() and int(pct) <= 100):
        problems.append(f"pct={_clip(pct, 30)} is not 0-100")
    for key in ("adkim", "aspf"):
        if key in tags and tags[key].lower() not in ("r", "s"):
            problems.append(f"{key}={_clip(tags[key], 30)} is not r or s")
    for key in ("rua", "ruf"):
        for uri in filter(None, (u.strip() for u in tags.get(key, "").split(","))):
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+", uri):
                problems.append(f"{key}: '{_clip(uri, 60)}' is not a URI")
    if problems or policy is None:
        return None, problems
    return policy.lower(), problems


async def check_dmarc(
    domain: str, cache: DNSCache, deadline: Deadline
) -> tuple[DMARCResult, list[Finding]]:
    name = f"_dmarc.{domain}"
    out: list[Finding] = []
    lookup = await cache.query(name, "TXT", deadline)
    records = _selected(lookup, "v=dmarc")
    reason = _selection_problem("DMARC", name, lookup, records)
    if reason:
        return DMARCResult(valid=False), [Finding(DomainCheck.DMARC, reason)]
    record = records[0]
    policy, problems = parse_dmarc(record)
    out += [Finding(DomainCheck.DMARC, f"DMARC: {p}") for p in problems]
    if policy == "none":
        out.append(Finding(DomainCheck.DMARC, "DMARC: p=none (monitoring only)"))
    return DMARCResult(policy is not None, policy, _clip(record, MAX_RECORD_SHOWN)), out


# --- TLS-RPT --------------------------------------------------------------------------------


def parse_tlsrpt(text: str) -> list[str]:
    """Problems of a TLS-RPT record (RFC 8460 §3); empty when valid."""
    pairs, problems = parse_tags(text)
    if not pairs or pairs[0] != ("v", "TLSRPTv1"):
        return ["record must start with v=TLSRPTv1", *problems]
    rua = next((v for k, v in pairs if k == "rua"), None)
    if not rua:
        return [*problems, "no rua= (where reports go; required)"]
    for uri in (u.strip() for u in rua.split(",")):
        low = uri.lower()
        if not (
            (low.startswith("mailto:") and "@" in uri and " " not in uri)
            or (low.startswith("https://") and len(uri) > 8 and " " not in uri)
        ):
            problems.append(f"rua: '{_clip(uri, 60)}' is neither mailto: nor https:")
    return problems


async def check_tlsrpt(
    domain: str, cache: DNSCache, deadline: Deadline
) -> tuple[TLSRPTResult, list[Finding]]:
    name = f"_smtp._tls.{domain}"
    lookup = await cache.query(name, "TXT", deadline)
    records = _selected(lookup, "v=tlsrptv1")
    reason = _selection_problem("TLS-RPT", name, lookup, records)
    if reason:
        return TLSRPTResult(valid=False), [Finding(DomainCheck.TLSRPT, reason)]
    problems = parse_tlsrpt(records[0])
    findings = [Finding(DomainCheck.TLSRPT, f"TLS-RPT: {p}") for p in problems]
    return TLSRPTResult(not problems, _clip(records[0], MAX_RECORD_SHOWN)), findings


# --- shared ---------------------------------------------------------------------------------


def _selected(lookup: Lookup, prefix: str) -> list[str]:
    """TXT records whose first tag names the protocol (compared without case)."""
    return [t for t in lookup.texts() if t.strip().lower().replace(" ", "").startswith(prefix)]


def _selection_problem(what: str, name: str, lookup: Lookup, records: list[str]) -> str | None:
    if lookup.status is Status.ERROR:
        return f"{what}: lookup of {name} TXT failed: {lookup.error}"
    if not records:
        return f"{what}: no record at {name}"
    if len(records) > 1:
        return f"{what}: {len(records)} records at {name} (only one is allowed)"
    return None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
