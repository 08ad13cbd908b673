"""The readable table ``--once`` prints by default."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..results import Phase, ProbeResult, Protocol

if TYPE_CHECKING:
    from ..results.domain import DomainResult


from .common import (
    PHASE_ABBREV,
    Canaries,
    auth_text,
    canaries_text,
    canary_findings,
    cert_days,
    display_name,
    failure_text,
    mailbox_text,
    verify_text,
)


def table(
    results: Sequence[ProbeResult],
    canaries: Canaries | None = None,
    domains: Sequence[DomainResult] = (),
) -> str:
    """Aligned tables: outcome per target, per-phase milliseconds, then (if any module
    checks its mail domain) one row per domain and its findings."""
    canaries = canaries or {}
    # IMAP and POP3 targets (#18): which protocol, and the mailbox's count; an SMTP-only
    # report keeps its columns.
    mail = any(r.protocol is not Protocol.SMTP for r in results)
    header = ["TARGET", "MODULE", *(["PROTO"] if mail else []), "RESULT", "TOTAL", "TLS", "CERT"]
    header += ["VERIFY", "AUTH", *(["MAILBOX"] if mail else [])]
    rows = [[*header, *(["CANARY"] if canaries else []), "FAILURE"]]
    for r in results:
        routes = canaries.get((r.target, r.module), ())
        c = next(
            (x for x in routes if x.reason or canary_findings(x)), routes[0] if routes else None
        )
        days = cert_days(r)
        rows.append(
            [
                display_name(r),
                r.module,
                *([r.protocol.value] if mail else []),
                "ok" if r.success else "FAIL",
                f"{r.duration_seconds * 1000:.0f}ms",
                r.tls.version if r.tls else "-",
                f"{math.floor(days)}d" if days is not None else "-",
                verify_text(r),
                auth_text(r),
                *([mailbox_text(r)] if mail else []),
                *([canaries_text(routes)] if canaries else []),
                failure_text(r, c),
            ]
        )
    phases = [p for p in Phase if any(t.phase is p for r in results for t in r.phases)]
    timing = [["TARGET", *(PHASE_ABBREV[p] for p in phases)]]
    for r in results:
        secs = {t.phase: t.seconds for t in r.phases}
        timing.append(
            [display_name(r), *(f"{secs[p] * 1000:.1f}" if p in secs else "-" for p in phases)]
        )
    text = _align(rows) + "\n\nphase durations (ms)\n" + _align(timing) + "\n"
    checked = [r for r in results if _has_posture(r)]
    if checked:
        text += "\nposture\n" + posture_table(checked)
    if domains:
        text += "\nmail domains\n" + domain_table(domains)
    return text


def _has_posture(r: ProbeResult) -> bool:
    p = r.posture
    return any(
        v is not None
        for v in (p.auth_advertised_before_tls, p.relay_accepted, p.relay_code, p.tls_scan)
    )


def posture_table(checked: Sequence[ProbeResult]) -> str:
    """One row per target with posture checks: AUTH before TLS, relay, TLS strength."""
    rows = [["TARGET", "AUTH<TLS", "RELAY", "TLS VERSIONS", "CIPHER", "FS", "KEY", "SIG", "OCSP"]]
    for r in checked:
        p = r.posture
        before = "-"
        if p.auth_accepted_before_tls:
            before = "ACCEPTED"
        elif p.auth_advertised_before_tls:
            before = "advertised"
        elif p.auth_advertised_before_tls is not None:
            before = "no"
        relay = "-"
        if p.relay_accepted is not None:
            relay = f"{'OPEN' if p.relay_accepted else 'refused'} ({p.relay_code})"
        s = p.tls_scan
        versions = cipher = fs = key = sig = ocsp = "-"
        if s is not None:
            versions = ",".join(v.removeprefix("TLSv") for v in s.accepted) or "none"
            if s.error:
                versions += " (incomplete)"
            cipher = s.cipher or "-"
            fs = _flag(s.forward_secrecy, "yes", "NO")
            if s.key_type:
                key = f"{s.key_type} {s.key_bits}"
            sig = s.signature_hash or s.signature_algorithm or "-"
            ocsp = "n/a" if s.ocsp_stapled is None else ("stapled" if s.ocsp_stapled else "no")
        rows.append([display_name(r), before, relay, versions, cipher, fs, key, sig, ocsp])
    return _align(rows) + "\n"


def _flag(value: bool | None, good: str = "ok", bad: str = "FAIL") -> str:
    return "-" if value is None else (good if value else bad)


def domain_row(d: DomainResult) -> list[str]:
    """DOMAIN RESULT MX SPF DMARC TLS-RPT MTA-STS DANE DNSBL DKIM PTR: one cell per enabled
    check."""
    mx = "-"
    if d.mx is not None and d.mx.answered:
        mx = "null MX" if d.mx.null_mx else f"{d.mx.records} hosts"
    spf = dmarc = tlsrpt = "-"
    if d.records is not None:
        r = d.records
        spf = f"{'ok' if r.spf.valid else 'BAD'} ({r.spf.lookups} lookups)"
        dmarc = f"p={r.dmarc.policy}" if r.dmarc.valid else "BAD"
        tlsrpt = _flag(r.tlsrpt.valid, bad="BAD")
    sts = "-"
    if d.mta_sts is not None:
        m = d.mta_sts
        unmatched = sum(1 for _, ok in m.mx_match if not ok)
        sts = (
            f"{m.mode}" + (f", {unmatched} MX unmatched" if unmatched else "") if m.valid else "BAD"
        )
    dane = "-"
    if d.dane is not None:
        with_records = [h for h in d.dane if h.tlsa_records]
        matched = sum(1 for h in with_records if h.match)
        dane = f"{matched}/{len(with_records)} match" if with_records else "no TLSA"
    dnsbl = "-"
    if d.dnsbl is not None:
        # Per address and zone: MX hosts sharing a listed address are one listing.
        listed = len({(b.address, b.zone) for b in d.dnsbl if b.listed})
        dnsbl = f"LISTED x{listed}" if listed else "clean"
    result = "ok" if not d.findings else f"{len(d.findings)} findings"
    if not d.success:
        result = "FAIL"
    return [d.domain, result, mx, spf, dmarc, tlsrpt, sts, dane, dnsbl, _dkim(d), _ptr(d)]


def _dkim(d: DomainResult) -> str:
    """``2/3 ok, 1 MISSING``: selectors with a usable key, then what is wrong with others."""
    if d.dkim is None:
        return "-"
    bad: list[str] = []
    for k in d.dkim:
        if k.error is not None:
            bad.append(f"{k.selector} ERROR")
        elif not k.present:
            bad.append(f"{k.selector} MISSING")
        elif k.revoked:
            bad.append(f"{k.selector} REVOKED")
        elif not k.valid:
            bad.append(f"{k.selector} BAD")
        elif k.key_type == "rsa" and (k.key_size or 0) < 2048:
            bad.append(f"{k.selector} weak {k.key_size}")
        elif k.testing:
            bad.append(f"{k.selector} t=y")
    usable = sum(1 for k in d.dkim if k.valid)
    return ", ".join([f"{usable}/{len(d.dkim)} ok", *bad])


def _ptr(d: DomainResult) -> str:
    """``3/3 FCrDNS``, then addresses without PTR, not confirmed, or misnamed."""
    if d.reverse_dns is None:
        return "-"
    bad: list[str] = []
    for p in d.reverse_dns:
        if p.error is not None:
            bad.append(f"{p.address} ERROR")
        elif not p.ptr_names:
            bad.append(f"{p.address} NO PTR")
        elif not p.forward_confirmed:
            bad.append(f"{p.address} UNCONFIRMED")
        elif p.name_matches is False:
            bad.append(f"{p.address} greeting {p.greeting_name or '-'}")
    confirmed = sum(1 for p in d.reverse_dns if p.forward_confirmed)
    return ", ".join([f"{confirmed}/{len(d.reverse_dns)} FCrDNS", *bad])


def domain_table(domains: Sequence[DomainResult]) -> str:
    header = ["DOMAIN", "RESULT", "MX", "SPF", "DMARC", "TLS-RPT", "MTA-STS", "DANE", "DNSBL"]
    header += ["DKIM", "PTR"]
    text = _align([header, *(domain_row(d) for d in domains)]) + "\n"
    for d in domains:
        notes = ([f"check failed: {d.error}"] if d.error else []) + [
            f"{f.check}: {f.reason}" for f in d.findings
        ]
        text += "".join(f"  {d.domain}: {note}\n" for note in notes)
    return text


def _align(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
