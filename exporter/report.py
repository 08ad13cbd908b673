"""Renderers for ``--once``: a readable table, JSON lines, and the Nagios plugin format.

Pure functions from results to text; nothing here touches the network. Secrets cannot
appear: results hold none (failure details are masked by the probe).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import results
from .results import Phase, ProbeResult

if TYPE_CHECKING:
    from .canary import CanaryResult

Canaries = dict[tuple[str, str], "CanaryResult"]

_PHASE_ABBREV = {
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


def table(results: Sequence[ProbeResult], canaries: Canaries | None = None) -> str:
    """Two aligned tables: outcome per target, then per-phase milliseconds."""
    canaries = canaries or {}
    header = ["TARGET", "MODULE", "RESULT", "TOTAL", "TLS", "CERT", "VERIFY", "AUTH"]
    rows = [[*header, *(["CANARY"] if canaries else []), "FAILURE"]]
    for r in results:
        c = canaries.get((r.target, r.module))
        days = cert_days(r)
        verify = "-"
        if r.tls is not None:
            verify = (
                "ok"
                if r.tls.verified and r.tls.hostname_match
                else ("no-chain" if not r.tls.verified else "no-name")
            )
        rows.append(
            [
                display_name(r),
                r.module,
                "ok" if r.success else "FAIL",
                f"{r.duration_seconds * 1000:.0f}ms",
                r.tls.version if r.tls else "-",
                f"{math.floor(days)}d" if days is not None else "-",
                verify,
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
    return _align(rows) + "\n\nphase durations (ms)\n" + _align(timing) + "\n"


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
        "delivered": c.delivered if c.checked else None,
        "round_trip_seconds": c.round_trip_seconds,
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
            "findings": list(r.posture.findings),
        },
    }


def json_lines(results: Sequence[ProbeResult], canaries: Canaries | None = None) -> str:
    canaries = canaries or {}
    return "".join(
        json.dumps(as_dict(r, canaries.get((r.target, r.module)))) + "\n" for r in results
    )


@dataclass(frozen=True, slots=True)
class NagiosThresholds:
    warning_cert_days: float = 14
    critical_cert_days: float = 7
    warning_latency: float = 5.0
    critical_latency: float = 10.0


OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
_STATE = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


def nagios(
    results: Sequence[ProbeResult], th: NagiosThresholds, canaries: Canaries | None = None
) -> tuple[str, int]:
    """Monitoring-plugins output: a status line with perfdata, then one line per target.
    Returns the text and the exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)."""
    if not results:
        return "SMTP UNKNOWN - no targets configured\n", UNKNOWN
    canaries = canaries or {}
    states = [_nagios_state(r, th, canaries.get((r.target, r.module))) for r in results]
    worst = max(s for s, _ in states)
    perf: list[str] = []
    for r in results:
        key = _perf_label(r.target, len(results))
        perf.append(
            f"'{key}time'={r.duration_seconds:.6f}s;{th.warning_latency:g};"
            f"{th.critical_latency:g};0;"
        )
        days = cert_days(r)
        if days is not None:
            perf.append(
                f"'{key}cert_days'={days:.1f};{th.warning_cert_days:g};{th.critical_cert_days:g};;"
            )
    if len(results) == 1:
        summary = states[0][1]
    else:
        bad = sum(1 for s, _ in states if s != OK)
        summary = f"{len(results) - bad} of {len(results)} targets OK"
    lines = [f"SMTP {_STATE[worst]} - {summary} | {' '.join(perf)}"]
    if len(results) > 1:
        lines += [f"[{_STATE[s]}] {text}" for s, text in states]
    return "\n".join(lines) + "\n", worst


def _nagios_state(
    r: ProbeResult, th: NagiosThresholds, canary: CanaryResult | None = None
) -> tuple[int, str]:
    if r.failure is not None:
        f = r.failure
        return CRITICAL, f"{r.target}: {f.phase} failed: {f.kind}: {f.detail}".replace("|", "/")
    days = cert_days(r)
    notes = [f"{r.duration_seconds:.3f}s"]
    state = OK
    if days is not None:
        notes.append(f"certificate expires in {math.floor(days)} days")
        if days < th.critical_cert_days:
            state = CRITICAL
        elif days < th.warning_cert_days:
            state = max(state, WARNING)
    if r.duration_seconds >= th.critical_latency:
        state = CRITICAL
    elif r.duration_seconds >= th.warning_latency:
        state = max(state, WARNING)
    if r.auth.attempted:
        notes.append(f"AUTH {r.auth.mechanism} ok")
    if r.posture.relay_accepted:
        state = CRITICAL
    elif r.posture.findings:
        state = max(state, WARNING)
    notes += r.posture.findings
    if canary is not None:
        if canary.success:
            notes.append(f"canary {canary_text(canary)}")
        else:
            state = CRITICAL
            notes.append(f"canary {canary.reason}".replace("|", "/"))
    return state, f"{r.target}: " + ", ".join(notes)


def _perf_label(target: str, count: int) -> str:
    # Perfdata labels may not contain '=' or quotes.
    return "" if count == 1 else target.replace("'", "").replace("=", "_") + "_"
