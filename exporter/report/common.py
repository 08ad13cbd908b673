"""What every --once format says the same way: names, reasons, certificate days, canary text."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .. import results
from ..results import Phase, ProbeResult

if TYPE_CHECKING:
    from ..results import CanaryResult
    from ..results.verdicts import DKIMSignature


# The last canary of each route, by (target, module); one route unless `routes` is set.
Canaries = dict[tuple[str, str], tuple["CanaryResult", ...]]

PHASE_ABBREV = {
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
    Phase.CAPABILITY: "cap",
    Phase.CAPABILITY_TLS: "cap2",
    Phase.SELECT: "select",
    Phase.STAT: "stat",
    Phase.LOGOUT: "logout",
}


def display_name(r: ProbeResult) -> str:
    return results.display_name(r.target, r.labels)


def cert_days(result: ProbeResult, now: float | None = None) -> float | None:
    """Days until the earliest expiry in the presented chain (negative once expired)."""
    if result.tls is None or result.tls.earliest_not_after is None:
        return None
    return (result.tls.earliest_not_after - (time.time() if now is None else now)) / 86400


def mailbox_text(r: ProbeResult) -> str:
    """What an IMAP SELECT / EXAMINE or a POP3 STAT counted: ``3 messages in INBOX``,
    ``3 messages (2048 B)``; ``-`` when the probe did not get that far (or is SMTP's)."""
    box = r.mailbox
    if box is None:
        return "-"
    size = f" ({box.size_bytes} B)" if box.size_bytes is not None else ""
    noun = "message" if box.messages == 1 else "messages"
    return f"{box.messages} {noun}{size}" + (f" in {box.name}" if box.name else "")


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


def auth_text(result: ProbeResult) -> str:
    """``-`` when no AUTH was tried, else ``ok``/``FAIL`` and the mechanism."""
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
        text = f"delivered {_seconds(c.round_trip_seconds)}"
        if c.placement is not None:
            text += f" {c.placement.upper() if c.placement == 'junk' else c.placement}"
        v = c.verdicts
        if v is not None:
            auth = " ".join(f"{m}={getattr(v, m) or '-'}" for m in ("spf", "dkim", "dmarc"))
            text += f" {auth}" if v.found else " no-auth-results"
            if v.dkim_aligned is False:
                text += " dkim-unaligned"
        if c.local_dkim:
            text += f" local-dkim={local_dkim(c.local_dkim)}"
        return text
    return "NOT delivered"


def canaries_text(canaries: tuple[CanaryResult, ...]) -> str:
    """The CANARY cell: one canary as ``canary_text``; several, each after its route."""
    if not canaries:
        return "-"
    if len(canaries) == 1 and canaries[0].route == "default":
        return canary_text(canaries[0])
    return "; ".join(f"{c.route}: {canary_text(c)}" for c in canaries)


def canary_findings(c: CanaryResult) -> list[str]:
    """What the receiving side made of a delivered canary, when it is not all well: landed
    in Junk, no Authentication-Results of the route's authserv_id, a method that did not
    pass, a passing DKIM signature not aligned with the From domain."""
    out = []
    if c.placement == "junk":
        out.append(f"landed in Junk ({c.folder})")
    v = c.verdicts
    if v is not None:
        if not v.found:
            out.append("no Authentication-Results from the receiving host")
        for method in ("spf", "dkim", "dmarc"):
            result = getattr(v, method)
            if result is not None and result != "pass":
                out.append(f"{method.upper()} {result}")
        if v.dkim_aligned is False:
            out.append("DKIM not aligned with the From domain")
    # Our own verification speaks where the receiver said nothing of DKIM.
    if c.local_dkim and (v is None or v.dkim is None):
        result = local_dkim(c.local_dkim)
        if result != "pass":
            out.append(f"DKIM {result} (verified by the exporter)")
    return out


def local_dkim(signatures: tuple[DKIMSignature, ...]) -> str:
    """One verdict of the exporter's own DKIM verification: pass if any signature passed."""
    if any(s.result == "pass" for s in signatures):
        return "pass"
    return str(signatures[0].result)


def failure_text(r: ProbeResult, c: CanaryResult | None) -> str:
    if r.failure is not None:
        return f"{r.failure.phase}: {reason(r)}"
    if c is not None and c.reason:
        return f"canary: {c.reason}"
    if c is not None and (findings := canary_findings(c)):
        return "canary: " + "; ".join(findings)
    if r.posture.findings:
        return "finding: " + "; ".join(r.posture.findings)
    return "-"
