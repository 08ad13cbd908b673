"""Renderers for ``--once``: a readable table, JSON lines, and the Nagios plugin format.

Pure functions from results to text; nothing here touches the network. Secrets cannot
appear: results hold none (failure details are masked by the probe).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import results
from .results import Phase, ProbeResult, TLSScan

if TYPE_CHECKING:
    from .results import CanaryResult
    from .results.domain import DomainResult

Canaries = dict[tuple[str, str], "CanaryResult"]

_PHASE_ABBREV = {
    Phase.MX_LOOKUP: "mx",
    Phase.RESOLVE: "dns",
    Phase.CONNECT: "conn",
    Phase.GREETING: "greet",
    Phase.EHLO: "ehlo",
    Phase.STARTTLS: "stls",
    Phase.TLS_HANDSHAKE: "tls",
    Phase.EHLO_TLS: "ehlo2",
    Phase.AUTH: "auth",
    Phase.NOOP: "noop",
    Phase.QUIT: "quit",
    Phase.POSTURE: "posture",
    Phase.MAIL: "mail",
    Phase.RCPT: "rcpt",
    Phase.DATA: "data",
}


def display_name(r: ProbeResult) -> str:
    return results.display_name(r.target, r.labels)


def cert_days(result: ProbeResult, now: float | None = None) -> float | None:
    """Days until the earliest expiry in the presented chain (negative once expired)."""
    if result.tls is None or result.tls.earliest_not_after is None:
        return None
    return (result.tls.earliest_not_after - (time.time() if now is None else now)) / 86400


def reason(result: ProbeResult) -> str:
    f = result.failure
    return "" if f is None else f"{f.kind}: {f.detail}"


def verify_text(r: ProbeResult) -> str:
    """The VERIFY column: ``ok``; ``expired`` or ``not-yet-valid`` when a presented
    certificate is out of its dates at the probe's time (whatever else is wrong, that is
    what to fix first, and it says nothing against the issuer); ``untrusted`` when the chain
    does not lead to a trusted root; ``no-name`` when it verifies but does not name the
    host."""
    t = r.tls
    if t is None:
        return "-"
    if not t.verified:
        if any(c.not_after < r.started_at for c in t.chain):
            return "expired"
        if any(c.not_before > r.started_at for c in t.chain):
            return "not-yet-valid"
        return "untrusted"
    return "ok" if t.hostname_match else "no-name"


def _auth_text(result: ProbeResult) -> str:
    a = result.auth
    if not a.attempted:
        return "-"
    return f"{'ok' if a.success else 'FAIL'} {a.mechanism}"


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.1f}s"


def canary_text(c: CanaryResult | None) -> str:
    if c is None:
        return "-"
    if not c.send_ok:
        return "FAIL send"
    if not c.checked:
        return f"sent {_seconds(c.send_seconds)}"
    if c.imap_failure is not None:
        return f"FAIL imap {c.imap_failure.phase}"
    if c.delivered and c.round_trip_seconds is not None:
        return f"delivered {_seconds(c.round_trip_seconds)}"
    return "NOT delivered"


def failure_text(r: ProbeResult, c: CanaryResult | None) -> str:
    if r.failure is not None:
        return f"{r.failure.phase}: {reason(r)}"
    if c is not None and c.reason:
        return f"canary: {c.reason}"
    if r.posture.findings:
        return "finding: " + "; ".join(r.posture.findings)
    return "-"


def table(
    results: Sequence[ProbeResult],
    canaries: Canaries | None = None,
    domains: Sequence[DomainResult] = (),
) -> str:
    """Aligned tables: outcome per target, per-phase milliseconds, then (if any module
    checks its mail domain) one row per domain and its findings."""
    canaries = canaries or {}
    header = ["TARGET", "MODULE", "RESULT", "TOTAL", "TLS", "CERT", "VERIFY", "AUTH"]
    rows = [[*header, *(["CANARY"] if canaries else []), "FAILURE"]]
    for r in results:
        c = canaries.get((r.target, r.module))
        days = cert_days(r)
        rows.append(
            [
                display_name(r),
                r.module,
                "ok" if r.success else "FAIL",
                f"{r.duration_seconds * 1000:.0f}ms",
                r.tls.version if r.tls else "-",
                f"{math.floor(days)}d" if days is not None else "-",
                verify_text(r),
                _auth_text(r),
                *([canary_text(c)] if canaries else []),
                failure_text(r, c),
            ]
        )
    phases = [p for p in Phase if any(t.phase is p for r in results for t in r.phases)]
    timing = [["TARGET", *(_PHASE_ABBREV[p] for p in phases)]]
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
    """DOMAIN RESULT MX SPF DMARC TLS-RPT MTA-STS DANE DNSBL: one cell per enabled check."""
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
    return [d.domain, result, mx, spf, dmarc, tlsrpt, sts, dane, dnsbl]


def domain_table(domains: Sequence[DomainResult]) -> str:
    header = ["DOMAIN", "RESULT", "MX", "SPF", "DMARC", "TLS-RPT", "MTA-STS", "DANE", "DNSBL"]
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


def canary_dict(c: CanaryResult | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "success": c.success,
        "token": c.token,
        "sent_at": c.sent_at,
        "send_ok": c.send_ok,
        "send_seconds": round(c.send_seconds, 6),
        "send_error": c.send_error,
        "checked": c.checked,
        "imap_ok": c.imap_ok,
        "imap_failure": (
            None
            if c.imap_failure is None
            else {
                "phase": str(c.imap_failure.phase),
                "kind": str(c.imap_failure.kind),
                "detail": c.imap_failure.detail,
            }
        ),
        "delivered": c.delivered,  # null: not checked, or the mailbox could not be read
        "round_trip_seconds": c.round_trip_seconds,
        "swept": c.swept,
        "late_arrivals": c.late,
        "error": c.reason,
    }


def as_dict(r: ProbeResult, canary: CanaryResult | None = None) -> dict[str, Any]:
    """The JSON shape of one result (documented in the README)."""
    tls = None
    if r.tls is not None:
        leaf = r.tls.leaf
        tls = {
            "version": r.tls.version,
            "cipher": r.tls.cipher,
            "verified": r.tls.verified,
            "verify_error": r.tls.verify_error,
            "hostname_match": r.tls.hostname_match,
            "server_name": r.tls.server_name,
            "cert_not_before": leaf.not_before if leaf else None,
            "cert_not_after": leaf.not_after if leaf else None,
            "chain_earliest_not_after": r.tls.earliest_not_after,
            "subject": leaf.subject if leaf else None,
            "issuer": leaf.issuer if leaf else None,
            "sans": list(leaf.sans) if leaf else [],
        }
    f = r.failure
    return {
        "target": r.target,
        "labels": dict(r.labels),
        "host": r.host,
        "module": r.module,
        "success": r.success,
        "failed_phase": f.phase.value if f else None,
        "failure_kind": f.kind.value if f else None,
        "reason": f.detail if f else None,
        "reply_code": f.code if f else None,
        "enhanced_status": f.enhanced if f else None,
        "duration_seconds": round(r.duration_seconds, 6),
        "phases": {t.phase.value: round(t.seconds, 6) for t in r.phases},
        "address": r.address,
        "started_at": r.started_at,
        "greeting_host": r.greeting_host,
        "extensions": list(r.extensions),
        "auth_mechanisms": list(r.auth_mechanisms),
        "size_limit": r.size_limit,
        "used_helo": r.used_helo,
        "last_reply_code": r.last_reply_code,
        "tls": tls,
        "auth": {
            "attempted": r.auth.attempted,
            "success": r.auth.success,
            "mechanism": r.auth.mechanism,
        },
        "canary": canary_dict(canary),
        "posture": {
            "auth_advertised_before_tls": r.posture.auth_advertised_before_tls,
            "auth_accepted_before_tls": r.posture.auth_accepted_before_tls,
            "open_relay": r.posture.relay_accepted,
            "relay_test_reply_code": r.posture.relay_code,
            "tls_scan": _scan_dict(r.posture.tls_scan),
            "findings": list(r.posture.findings),
        },
    }


def domain_dict(d: DomainResult) -> dict[str, Any]:
    """The JSON shape of one domain check: ``"type": "domain"`` tells it from a target's
    line; the rest is the result as it is (every field plain data)."""
    return {"type": "domain", **_plain(d)}


def _plain(value: Any) -> Any:
    """Dataclasses, tuples and enums as JSON values, keeping field names."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _scan_dict(scan: TLSScan | None) -> dict[str, Any] | None:
    if scan is None:
        return None
    return {
        **_plain(scan),
        "lowest": scan.lowest,
        "highest": scan.highest,
        "cipher": scan.cipher,
        "forward_secrecy": scan.forward_secrecy,
        "weak_signature": scan.weak_signature,
        "findings": list(scan.findings),
    }


def json_lines(
    results: Sequence[ProbeResult],
    canaries: Canaries | None = None,
    domains: Sequence[DomainResult] = (),
) -> str:
    canaries = canaries or {}
    lines = [json.dumps(as_dict(r, canaries.get((r.target, r.module)))) for r in results]
    lines += [json.dumps(domain_dict(d)) for d in domains]
    return "".join(line + "\n" for line in lines)


@dataclass(frozen=True, slots=True)
class NagiosThresholds:
    """Alert when the certificate has fewer days left than ``*_cert_days`` (ranges ``14:``
    and ``7:``) or the probe took longer than ``*_latency`` seconds (ranges ``5`` and
    ``10``), as the Monitoring Plugins guidelines define ranges."""

    warning_cert_days: float = 14
    critical_cert_days: float = 7
    warning_latency: float = 5.0
    critical_latency: float = 10.0


OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
_STATE = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# Problems named in the status line before "and N more": the line stays readable on a
# dashboard, and the long output below it lists them all.
_SUMMARY_PROBLEMS = 3


@dataclass(frozen=True, slots=True)
class _Verdict:
    """One target's or domain's state, who it is, and what is wrong (each problem names
    the threshold or check that made it so), then the other facts."""

    state: int
    name: str
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    sep: str = ", "  # "; " between domain findings, which hold commas themselves

    def text(self) -> str:
        return f"{self.name}: " + self.sep.join((*self.problems, *self.notes))


def nagios(
    results: Sequence[ProbeResult],
    th: NagiosThresholds,
    canaries: Canaries | None = None,
    domains: Sequence[DomainResult] = (),
) -> tuple[str, int]:
    """Output of a plugin by the Monitoring Plugins development guidelines: a status line
    that says what is wrong and where, perfdata ``'label'=value[UOM];warn;crit;min;max``
    with one unique label per expanded target (MX host, address, address family) and
    thresholds in range syntax, then one line per target (and per checked domain).
    Returns the text and the exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)."""
    if not results:
        return "SMTP UNKNOWN - no targets configured\n", UNKNOWN
    canaries = canaries or {}
    names = _unique_names(results)
    verdicts = [
        _nagios_state(r, th, canaries.get((r.target, r.module)), name)
        for r, name in zip(results, names, strict=True)
    ]
    domain_verdicts = [_nagios_domain_state(d) for d in domains]
    every = verdicts + domain_verdicts
    worst = max(v.state for v in every)
    perf: list[str] = []
    for r, name in zip(results, names, strict=True):
        prefix = "" if len(results) == 1 else f"{name} "
        perf.append(
            _perfdata(
                f"{prefix}time",
                f"{r.duration_seconds:.6f}s",
                _num(th.warning_latency),
                _num(th.critical_latency),
                "0",
            )
        )
        days = cert_days(r)
        if days is not None:
            perf.append(
                _perfdata(
                    f"{prefix}cert_days",
                    f"{days:.1f}",
                    f"{_num(th.warning_cert_days)}:",
                    f"{_num(th.critical_cert_days)}:",
                )
            )
    if len(every) == 1:
        summary = every[0].text()
    else:
        bad = sum(1 for v in verdicts if v.state != OK)
        summary = f"{len(results) - bad} of {len(results)} targets OK"
        if domains:
            bad_domains = sum(1 for v in domain_verdicts if v.state != OK)
            summary += f", {len(domains) - bad_domains} of {len(domains)} domains OK"
        failing = sorted((v for v in every if v.state != OK), key=lambda v: -v.state)
        if failing:
            shown = [f"{v.name}: {v.problems[0]}" for v in failing[:_SUMMARY_PROBLEMS]]
            more = len(failing) - _SUMMARY_PROBLEMS
            summary += "; " + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
    lines = [f"SMTP {_STATE[worst]} - {_plain_text(summary)} | {' '.join(perf)}"]
    if len(every) > 1:
        lines += [f"[{_STATE[v.state]}] {_plain_text(v.text())}" for v in every]
    return "\n".join(lines) + "\n", worst


def _nagios_state(
    r: ProbeResult, th: NagiosThresholds, canary: CanaryResult | None, name: str
) -> _Verdict:
    if r.failure is not None:
        f = r.failure
        return _Verdict(CRITICAL, name, (f"{f.phase} failed: {f.kind}: {f.detail}",))
    problems: list[tuple[int, str]] = []
    notes: list[str] = []
    seconds = r.duration_seconds
    took = f"probe took {seconds:.3f}s"
    # Range "5" alerts above 5 (guidelines, threshold format): > here, not >=.
    if seconds > th.critical_latency:
        problems.append((CRITICAL, f"{took} (critical above {_num(th.critical_latency)}s)"))
    elif seconds > th.warning_latency:
        problems.append((WARNING, f"{took} (warning above {_num(th.warning_latency)}s)"))
    else:
        notes.append(f"{seconds:.3f}s")
    days = cert_days(r)
    if days is not None:
        if days >= 0:
            left = f"certificate expires in {math.floor(days)} days"
        elif days > -1:
            left = "certificate expired less than a day ago"
        else:
            left = f"certificate expired {math.floor(-days)} days ago"
        # Range "14:" alerts below 14.
        if days < th.critical_cert_days:
            problems.append(
                (CRITICAL, f"{left} (critical below {_num(th.critical_cert_days)} days)")
            )
        elif days < th.warning_cert_days:
            problems.append((WARNING, f"{left} (warning below {_num(th.warning_cert_days)} days)"))
        else:
            notes.append(left)
    if r.auth.attempted:
        notes.append(f"AUTH {r.auth.mechanism} ok")
    for finding in r.posture.findings:
        # An open relay is abused within hours; the other findings weaken, not break.
        state = CRITICAL if finding.startswith("open relay") else WARNING
        problems.append((state, finding))
    if canary is not None:
        if canary.success:
            notes.append(f"canary {canary_text(canary)}")
        else:
            # Unreadable mailbox: the check is blind, which is not a lost message.
            blind = canary.send_ok and canary.imap_failure is not None
            problems.append((WARNING if blind else CRITICAL, f"canary {canary.reason}"))
    problems.sort(key=lambda p: -p[0])  # the worst first: it is the one the summary shows
    state = max((s for s, _ in problems), default=OK)
    return _Verdict(state, name, tuple(text for _, text in problems), tuple(notes))


def _nagios_domain_state(d: DomainResult) -> _Verdict:
    """A failed check or a finding that stops mail (a DNSBL listing, a DANE mismatch, an MX
    an enforced MTA-STS policy does not name) is CRITICAL; other findings WARNING."""
    if not d.success:
        return _Verdict(CRITICAL, d.domain, (f"domain check failed: {d.error}",))
    blocking = any(b.listed for b in d.dnsbl or ()) or any(h.match is False for h in d.dane or ())
    m = d.mta_sts
    if m is not None and m.valid and m.mode == "enforce":
        blocking = blocking or any(not ok for _, ok in m.mx_match)
    state = CRITICAL if blocking else (WARNING if d.findings else OK)
    found = tuple(f"{f.check}: {f.reason}" for f in d.findings)
    return _Verdict(state, d.domain, found, () if found else ("no findings",), "; ")


def _unique_names(results: Sequence[ProbeResult]) -> list[str]:
    """What names each result in the output: the target, then what tells its expansions
    apart (MX host, address, address family), then the module where one target is probed
    by several; a running number only if all that still repeats."""
    names = [display_name(r) for r in results]
    counts = Counter(names)
    names = [f"{n} {r.module}" if counts[n] > 1 else n for n, r in zip(names, results, strict=True)]
    counts = Counter(names)
    seen: Counter[str] = Counter()
    out = []
    for n in names:
        seen[n] += 1
        out.append(f"{n} #{seen[n]}" if counts[n] > 1 else n)
    return out


def _perfdata(label: str, value: str, warn: str = "", crit: str = "", lo: str = "") -> str:
    """``'label'=value[UOM];[warn];[crit];[min];[max]``: the label quoted, a quote in it
    doubled, ``=`` (which would end the label) and ``|`` (which would end the output)
    replaced."""
    label = _plain_text(label.replace("=", "_").replace("'", "''"))
    return f"'{label}'={value};{warn};{crit};{lo};"


def _num(value: float) -> str:
    # Plain decimals: perfdata parsers do not read exponents (1e+06).
    return format(value, "f").rstrip("0").rstrip(".") or "0"


def _plain_text(text: str) -> str:
    # "|" starts the perfdata: free text from servers must not contain it.
    return text.replace("|", "/")
