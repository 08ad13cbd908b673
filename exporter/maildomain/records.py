"""MX (null MX, RFC 7505), DMARC (RFC 7489) and TLS-RPT (RFC 8460); SPF is in spf.py.

Parsers are pure functions (text in, problems out); the async parts only fetch TXT
records through the ``DNSCache``. Malformed records become findings, never exceptions.
"""

from __future__ import annotations

import re

from ..deadline import Deadline
from ..results.domain import (
    DMARCResult,
    DomainCheck,
    Finding,
    MXHost,
    MXResult,
    TLSRPTResult,
)
from .dnscache import DNSCache, Lookup, Status

MAX_MX_HOSTS = 10  # MX hosts looked at (by preference); more are ignored
MAX_ADDRESSES = 4  # addresses kept per MX host and family
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
            problems.append(f"malformed tag '{clip(part.strip(), 40)}'")
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
        problems.append(f"p={clip(policy, 30)} is not none, quarantine or reject")
    if "sp" in tags and tags["sp"].lower() not in DMARC_POLICIES:
        problems.append(f"sp={clip(tags['sp'], 30)} is not none, quarantine or reject")
    pct = tags.get("pct")
    if pct is not None and not (pct.isdigit() and int(pct) <= 100):
        problems.append(f"pct={clip(pct, 30)} is not 0-100")
    for key in ("adkim", "aspf"):
        if key in tags and tags[key].lower() not in ("r", "s"):
            problems.append(f"{key}={clip(tags[key], 30)} is not r or s")
    for key in ("rua", "ruf"):
        for uri in filter(None, (u.strip() for u in tags.get(key, "").split(","))):
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+", uri):
                problems.append(f"{key}: '{clip(uri, 60)}' is not a URI")
    if problems or policy is None:
        return None, problems
    return policy.lower(), problems


async def check_dmarc(
    domain: str, cache: DNSCache, deadline: Deadline
) -> tuple[DMARCResult, list[Finding]]:
    name = f"_dmarc.{domain}"
    out: list[Finding] = []
    lookup = await cache.query(name, "TXT", deadline)
    records = selected_records(lookup, "v=dmarc")
    reason = selection_problem("DMARC", name, lookup, records)
    if reason:
        return DMARCResult(valid=False), [Finding(DomainCheck.DMARC, reason)]
    record = records[0]
    policy, problems = parse_dmarc(record)
    out += [Finding(DomainCheck.DMARC, f"DMARC: {p}") for p in problems]
    if policy == "none":
        out.append(Finding(DomainCheck.DMARC, "DMARC: p=none (monitoring only)"))
    return DMARCResult(policy is not None, policy, clip(record, MAX_RECORD_SHOWN)), out


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
            problems.append(f"rua: '{clip(uri, 60)}' is neither mailto: nor https:")
    return problems


async def check_tlsrpt(
    domain: str, cache: DNSCache, deadline: Deadline
) -> tuple[TLSRPTResult, list[Finding]]:
    name = f"_smtp._tls.{domain}"
    lookup = await cache.query(name, "TXT", deadline)
    records = selected_records(lookup, "v=tlsrptv1")
    reason = selection_problem("TLS-RPT", name, lookup, records)
    if reason:
        return TLSRPTResult(valid=False), [Finding(DomainCheck.TLSRPT, reason)]
    problems = parse_tlsrpt(records[0])
    findings = [Finding(DomainCheck.TLSRPT, f"TLS-RPT: {p}") for p in problems]
    return TLSRPTResult(not problems, clip(records[0], MAX_RECORD_SHOWN)), findings


# --- shared ---------------------------------------------------------------------------------


def selected_records(lookup: Lookup, prefix: str) -> list[str]:
    """TXT records whose first tag names the protocol (compared without case)."""
    return [t for t in lookup.texts() if t.strip().lower().replace(" ", "").startswith(prefix)]


def selection_problem(what: str, name: str, lookup: Lookup, records: list[str]) -> str | None:
    """Why ``records`` (selected from ``lookup``) is not exactly one record, or None."""
    if lookup.status is Status.ERROR:
        return f"{what}: lookup of {name} TXT failed: {lookup.error}"
    if not records:
        return f"{what}: no record at {name}"
    if len(records) > 1:
        return f"{what}: {len(records)} records at {name} (only one is allowed)"
    return None


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in ``...`` when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
