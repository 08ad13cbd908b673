"""An IMAP or POP3 target's entry -> its ``imap_*`` / ``pop3_*`` lines (issue #18).

Families of their own rather than a ``protocol`` label on ``smtp_*``: every existing
``smtp_*`` query keeps its meaning, and each family's phase and kind values are those of one
protocol. The shapes are SMTP's (``samples``), so a query or alert reads like its SMTP twin.
``samples.render_target`` hands an IMAP or POP3 entry here with its line buffer.

The series budget of #17 applies as to SMTP: one failure counter (by phase with the
module's ``metrics_detail``), the leaf certificate on ``<p>_tls_info`` (its own expiry with
``metrics_detail``), the capability inventory as one ``_info`` series, and no timestamp in
a ``/probe`` answer (the probe ran at the scrape).
"""

from __future__ import annotations

from typing import Protocol as _Protocol

from ..results import PHASES_OF, Phase, ProbeResult, Protocol, TLSInfo
from ..store import Entry
from .catalogue import IMAP_CAPABILITIES, MECHANISMS, POP3_CAPABILITIES
from .text import escape

CAPABILITIES = {Protocol.IMAP: IMAP_CAPABILITIES, Protocol.POP3: POP3_CAPABILITIES}


class Lines(_Protocol):
    """The line buffer ``samples`` keeps per target (one list per family)."""

    def add(self, name: str, value: float, extra: str = "") -> None: ...


def phase_plan(entry: Entry) -> tuple[Phase, ...]:
    """The phases an IMAP or POP3 target can fail in (its failure counters exist from the
    start): TLS phases by the module's ``tls``, and the login and what needs it (SELECT,
    STAT) only with ``auth``."""
    module = entry.target.module
    protocol = Protocol(module.protocol)
    skip = set()
    if module.tls.value == "none":
        skip |= {Phase.STARTTLS, Phase.TLS_HANDSHAKE, Phase.CAPABILITY_TLS}
    elif module.tls.value == "implicit":
        # TLS from the first byte: the one CAPABILITY is already asked over TLS.
        skip |= {Phase.STARTTLS, Phase.CAPABILITY_TLS}
    if module.auth is None:
        skip |= {Phase.AUTH, Phase.SELECT, Phase.STAT}
    return tuple(p for p in PHASES_OF[protocol] if p not in skip)


def render_mailbox(lines: Lines, entry: Entry, counters: bool) -> None:
    """Every ``<protocol>_*`` sample of an IMAP or POP3 target into ``lines``; without
    ``counters`` (a /probe answer), no counter and no timestamp."""
    p = entry.target.module.protocol
    detail = entry.target.module.metrics_detail
    if counters:
        lines.add(f"{p}_probes_total", entry.probes)
        failures = dict(entry.failures)
        if detail:
            plan = phase_plan(entry)
            # A failure in a phase outside the plan (IMAP PREAUTH skips the login, say)
            # still counts: its series appears with the first one.
            for phase in (*plan, *(f for f in failures if f not in plan)):
                lines.add(f"{p}_probe_failures_total", failures.get(phase, 0), f',phase="{phase}"')
        else:
            # One series from the start, so increase() sees the first failure too.
            lines.add(f"{p}_probe_failures_total", sum(failures.values()))
    r = entry.result
    if r is None:
        return
    _probe(lines, p, r, counters)
    if r.tls is not None:
        _tls(lines, p, r.tls, detail)
    _session(lines, p, entry, r)


def _probe(lines: Lines, p: str, r: ProbeResult, scheduled: bool) -> None:
    lines.add(f"{p}_probe_success", 1 if r.success else 0)
    lines.add(f"{p}_probe_duration_seconds", r.duration_seconds)
    # Only the phases that ran, as for SMTP: a 0 for a phase never reached reads as a result.
    for timing in r.phases:
        lines.add(f"{p}_probe_phase_duration_seconds", timing.seconds, f',phase="{timing.phase}"')
    f = r.failure
    lines.add(
        f"{p}_probe_failed_phase",
        1 if f else 0,
        f',phase="{f.phase}",kind="{f.kind}"' if f else ',phase="",kind=""',
    )
    if r.address:
        lines.add(f"{p}_probe_ip_protocol", 6 if ":" in r.address else 4)
    if scheduled:  # /probe probes when it is scraped: the sample's own timestamp says when
        lines.add(f"{p}_probe_timestamp_seconds", r.started_at)


def _tls(lines: Lines, p: str, tls: TLSInfo, detail: bool) -> None:
    # One info series for the session and its leaf: they change together.
    leaf = tls.leaf
    cert = (
        f',subject="{escape(leaf.subject)}",issuer="{escape(leaf.issuer)}",'
        f'serial="{leaf.serial}",fingerprint_sha256="{leaf.sha256}"'
        if leaf is not None
        else ',subject="",issuer="",serial="",fingerprint_sha256=""'
    )
    lines.add(
        f"{p}_tls_info", 1, f',version="{escape(tls.version)}",cipher="{escape(tls.cipher)}"{cert}'
    )
    if leaf is not None and detail:
        lines.add(f"{p}_tls_leaf_cert_expiry_timestamp_seconds", leaf.not_after)
    if tls.earliest_not_after is not None:
        lines.add(f"{p}_tls_earliest_cert_expiry_timestamp_seconds", tls.earliest_not_after)
    lines.add(f"{p}_tls_chain_verified", 1 if tls.verified else 0)
    lines.add(f"{p}_tls_hostname_match", 1 if tls.hostname_match else 0)


def _session(lines: Lines, p: str, entry: Entry, r: ProbeResult) -> None:
    """The login's outcome, the capability inventory and the mailbox's counts."""
    if entry.target.module.auth is not None and any(t.phase is Phase.AUTH for t in r.phases):
        # Only when the login ran: a probe that failed before it did not fail the login.
        lines.add(
            f"{p}_auth_success",
            1 if r.auth.success else 0,
            f',mechanism="{r.auth.mechanism or ""}"',
        )
    if r.extensions or r.failure is None:
        # One series for the whole inventory; names outside the fixed lists are left out, so
        # a server's announcement can neither add series nor put free text in a label.
        # Sorted, space-separated, as smtp_capabilities_info: the same set reads the same.
        offered = set(r.extensions)
        caps = " ".join(sorted(c for c in CAPABILITIES[Protocol(p)] if c in offered))
        mechs = " ".join(sorted(m for m in MECHANISMS if m in r.auth_mechanisms))
        lines.add(f"{p}_capabilities_info", 1, f',capabilities="{caps}",mechanisms="{mechs}"')
    box = r.mailbox
    if box is None:
        return
    if p == Protocol.IMAP:
        lines.add("imap_mailbox_messages", box.messages, f',mailbox="{escape(box.name)}"')
    else:
        lines.add("pop3_mailbox_messages", box.messages)
        if box.size_bytes is not None:
            lines.add("pop3_mailbox_size_bytes", box.size_bytes)
