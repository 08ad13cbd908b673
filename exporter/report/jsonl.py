"""``--output json``: one JSON object per line, per target and per mail domain."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..results import ProbeResult, TLSScan

if TYPE_CHECKING:
    from ..results import CanaryResult
    from ..results.domain import DomainResult
    from ..results.verdicts import AuthVerdicts


from .common import Canaries


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
        "route": c.route,
        "placement": None if c.placement is None else str(c.placement),  # null: not found
        "folder": c.folder,
        "verdicts": verdicts_dict(c.verdicts),
        # The exporter's own DKIM verification: null when not verified; [] when unsigned.
        "local_dkim": None
        if c.local_dkim is None
        else [
            {
                "result": str(s.result),
                "domain": s.domain,
                "selector": s.selector,
                "aligned": s.aligned,
                "reason": s.reason,
            }
            for s in c.local_dkim
        ],
    }


def verdicts_dict(v: AuthVerdicts | None) -> dict[str, Any] | None:
    """The receiving host's verdicts; null when not read (not found, no authserv_id)."""
    if v is None:
        return None
    return {
        "found": v.found,  # an Authentication-Results header of the authserv_id was there
        "authserv_id": v.authserv_id,
        "spf": None if v.spf is None else str(v.spf),
        "dkim": None if v.dkim is None else str(v.dkim),
        "dmarc": None if v.dmarc is None else str(v.dmarc),
        "dkim_aligned": v.dkim_aligned,
        "from_domain": v.from_domain,
        "spf_domain": v.spf_domain,
        "ignored_headers": v.ignored,
    }


def as_dict(
    r: ProbeResult, canary: CanaryResult | None = None, routes: tuple[CanaryResult, ...] = ()
) -> dict[str, Any]:
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
        "protocol": r.protocol.value,
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
        # IMAP: SELECT / EXAMINE's count; POP3: STAT's count and size. null: SMTP, or not
        # reached.
        "mailbox": None if r.mailbox is None else _plain(r.mailbox),
        "canary": canary_dict(canary),  # the first route's (the only one without routes)
        "canaries": [canary_dict(c) for c in routes or ((canary,) if canary else ())],
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
    lines = []
    for r in results:
        routes = canaries.get((r.target, r.module), ())
        lines.append(json.dumps(as_dict(r, routes[0] if routes else None, routes)))
    lines += [json.dumps(domain_dict(d)) for d in domains]
    return "".join(line + "\n" for line in lines)
