"""Result -> samples: one target's entry as text lines, one string per ``PER_TARGET`` family.

``render_target`` runs once per recorded result (the renderer caches its output), so each
feature's samples (probe, TLS, capabilities, posture, canary) are written by a function of
its own into one ``_Lines`` buffer.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from prometheus_client.utils import floatToGoString

from ..results import PROBE_PHASES, CanaryResult, Phase, Placement, Posture, ProbeResult, TLSInfo
from ..results.verdicts import AuthVerdicts
from ..store import CANARY_BUCKETS, Entry, RouteCanary
from ..targets import Discovery
from .aggregate import discovery_text
from .catalogue import EXTENSIONS, MECHANISMS, PER_TARGET
from .mailbox import render_mailbox
from .text import escape, fmt

_INDEX = {spec.name: i for i, spec in enumerate(PER_TARGET)}
# The histogram's ``le`` labels in Go's spelling, formatted once rather than per target.
_CANARY_LE = tuple(floatToGoString(bound) for bound in CANARY_BUCKETS)


def phase_plan(entry: Entry) -> tuple[Phase, ...]:
    """The phases this target can fail in, so each per-phase failure counter (with
    ``metrics_detail``) exists from the start. (Durations are exported only for the phases
    a probe did run.)"""
    if is_lookup(entry):
        return (Phase.MX_LOOKUP,)
    module = entry.target.module
    skip = set()
    if module.tls.value == "none":
        skip |= {Phase.STARTTLS, Phase.TLS_HANDSHAKE, Phase.EHLO_TLS}
    elif module.tls.value == "implicit":
        skip |= {Phase.STARTTLS, Phase.EHLO_TLS}
    if module.auth is None:
        skip.add(Phase.AUTH)
    plan = tuple(p for p in PROBE_PHASES if p not in skip)
    return (*plan, Phase.POSTURE) if module.posture.fail_on_findings else plan


def is_lookup(entry: Entry) -> bool:
    """The entry that stands for an mx: target's failed lookup (or null MX): the target as
    configured, not one of its MX hosts."""
    return entry.target.mx and "mx_host" not in dict(entry.target.labels)


class _Lines:
    """One target's lines, family by family, each line carrying the target's labels."""

    __slots__ = ("base", "out")

    def __init__(self, entry: Entry) -> None:
        t = entry.target
        self.base = f'target="{escape(t.name)}",module="{escape(t.module.name)}"' + "".join(
            f',{k}="{escape(v)}"' for k, v in t.labels
        )
        self.out: list[list[str]] = [[] for _ in PER_TARGET]

    def add(self, name: str, value: float, extra: str = "") -> None:
        self.out[_INDEX[name]].append(f"{name}{{{self.base}{extra}}} {fmt(value)}\n")


def render_target(entry: Entry, *, counters: bool = True) -> tuple[str, ...]:
    """One string per PER_TARGET family (possibly empty) for this target; without
    ``counters`` (the /probe answer), the counter and histogram families and the probe's
    timestamp stay empty (what /probe leaves out, not worth formatting at every request).
    The module's ``metrics_detail`` adds the per-flag and per-phase families."""
    lines = _Lines(entry)
    if entry.target.module.protocol != "smtp":  # IMAP, POP3: imap_* / pop3_* (mailbox.py)
        render_mailbox(lines, entry, counters)
        return tuple("".join(family) for family in lines.out)
    plan = phase_plan(entry)
    detail = entry.target.module.metrics_detail
    if counters:
        lines.add("smtp_probes_total", entry.probes)
        failures = dict(entry.failures)
        if detail:
            for phase in plan:
                lines.add("smtp_probe_failures_total", failures.get(phase, 0), f',phase="{phase}"')
        else:
            # One series from the start: increase() sees every failure, the first one too
            # (a series born at 1 would hide it). The failing phase of the last probe is in
            # smtp_probe_failed_phase.
            lines.add("smtp_probe_failures_total", sum(failures.values()))
    r = entry.result
    if r is not None:
        _probe(lines, r, plan, counters)
        if r.tls is not None:
            _tls(lines, r.tls, detail)
        _capabilities(lines, entry, r, detail)
        _posture(lines, r.posture)
    for route in entry.routes:
        _canary(lines, route.canary)
    _canary_history(lines, entry, counters)
    return tuple("".join(family) for family in lines.out)


def _probe(lines: _Lines, r: ProbeResult, plan: tuple[Phase, ...], scheduled: bool) -> None:
    lines.add("smtp_probe_success", 1 if r.success else 0)
    lines.add("smtp_probe_duration_seconds", r.duration_seconds)
    # Only the phases that ran: a 0 for a phase never reached would read as a result and
    # drag latency percentiles down. (The relay test's mail and rcpt steps stay out:
    # posture, not health.)
    for timing in r.phases:
        if timing.phase in plan:
            lines.add(
                "smtp_probe_phase_duration_seconds", timing.seconds, f',phase="{timing.phase}"'
            )
    f = r.failure
    # The reply code goes with the failure: after a success it is always QUIT's 221.
    lines.add(
        "smtp_probe_failed_phase",
        1 if f else 0,
        f',phase="{f.phase}",kind="{f.kind}",reply_code="{r.last_reply_code or ""}"'
        if f
        else ',phase="",kind="",reply_code=""',
    )
    if r.address:
        lines.add("smtp_probe_ip_protocol", 6 if ":" in r.address else 4)
    if scheduled:
        # /probe probes when it is scraped: the sample's own timestamp says when.
        lines.add("smtp_probe_timestamp_seconds", r.started_at)


def _tls(lines: _Lines, tls: TLSInfo, detail: bool) -> None:
    # One info series for the session and its leaf: they change together, at a new
    # certificate or a server upgrade.
    leaf = tls.leaf
    cert = (
        f',subject="{escape(leaf.subject)}",issuer="{escape(leaf.issuer)}",'
        f'serial="{leaf.serial}",fingerprint_sha256="{leaf.sha256}"'
        if leaf is not None
        else ',subject="",issuer="",serial="",fingerprint_sha256=""'
    )
    lines.add(
        "smtp_tls_info",
        1,
        f',version="{escape(tls.version)}",cipher="{escape(tls.cipher)}"{cert}',
    )
    if leaf is not None and detail:
        lines.add("smtp_tls_leaf_cert_expiry_timestamp_seconds", leaf.not_after)
    if tls.earliest_not_after is not None:
        lines.add("smtp_tls_earliest_cert_expiry_timestamp_seconds", tls.earliest_not_after)
    lines.add("smtp_tls_chain_verified", 1 if tls.verified else 0)
    lines.add("smtp_tls_hostname_match", 1 if tls.hostname_match else 0)


def _capabilities(lines: _Lines, entry: Entry, r: ProbeResult, detail: bool) -> None:
    """AUTH outcome, advertised extensions and mechanisms, SIZE."""
    if entry.target.module.auth is not None and any(p.phase is Phase.AUTH for p in r.phases):
        # Only when the AUTH phase ran: a probe that failed before it did not fail AUTH.
        lines.add(
            "smtp_auth_success",
            1 if r.auth.success else 0,
            f',mechanism="{r.auth.mechanism or ""}"',
        )
    if not (r.extensions or r.failure is None):
        return  # no EHLO answered: nothing is known about the server's capabilities
    size = "" if r.size_limit is None else str(r.size_limit)
    lines.add(
        "smtp_capabilities_info",
        1,
        f',extensions="{capability_list(EXTENSIONS, r.extensions)}"'
        f',mechanisms="{capability_list(MECHANISMS, r.auth_mechanisms)}",size_limit="{size}"',
    )
    if not detail:
        return
    for ext in EXTENSIONS:
        lines.add(
            "smtp_extension_advertised", 1 if ext in r.extensions else 0, f',extension="{ext}"'
        )
    for mech in MECHANISMS:
        lines.add(
            "smtp_auth_mechanism_advertised",
            1 if mech in r.auth_mechanisms else 0,
            f',mechanism="{mech}"',
        )
    if r.size_limit is not None:
        lines.add("smtp_size_limit_bytes", r.size_limit)


def capability_list(known: Sequence[str], advertised: Collection[str]) -> str:
    """The advertised names that are on the ``known`` list, sorted, space-separated: a
    server's EHLO can add no label value outside the 2^len(known) combinations, and the
    same set always reads the same. (A space: no name on the lists contains one.)"""
    return " ".join(sorted(name for name in known if name in advertised))


def _posture(lines: _Lines, p: Posture) -> None:
    for name, value in (
        ("smtp_posture_auth_advertised_before_tls", p.auth_advertised_before_tls),
        ("smtp_posture_auth_accepted_before_tls", p.auth_accepted_before_tls),
        ("smtp_posture_open_relay", p.relay_accepted),
        ("smtp_posture_relay_test_reply_code", p.relay_code),
    ):
        if value is not None:
            lines.add(name, float(value))
    scan = p.tls_scan
    if scan is None:
        return
    for version in scan.tested:
        lines.add(
            "smtp_posture_tls_version_accepted",
            1 if version in scan.accepted else 0,
            f',version="{version}"',
        )
    if scan.forward_secrecy is not None:
        lines.add("smtp_posture_tls_forward_secrecy", 1 if scan.forward_secrecy else 0)
    if scan.key_type is not None and scan.key_bits is not None:
        lines.add("smtp_posture_tls_key_size", scan.key_bits, f',key_type="{scan.key_type}"')
    if scan.weak_signature is not None:
        lines.add("smtp_posture_tls_weak_signature", 1 if scan.weak_signature else 0)
    if scan.ocsp_stapled is not None:
        lines.add("smtp_posture_tls_ocsp_stapled", 1 if scan.ocsp_stapled else 0)
    lines.add("smtp_posture_tls_findings", len(scan.findings))


def _canary(lines: _Lines, c: CanaryResult) -> None:
    """The last canary's outcome, on its route."""
    route = f',route="{escape(c.route)}"'
    lines.add("smtp_canary_send_success", 1 if c.send_ok else 0, route)
    lines.add("smtp_canary_send_duration_seconds", c.send_seconds, route)
    lines.add("smtp_canary_last_sent_timestamp_seconds", c.sent_at, route)
    if c.checked:
        f = c.imap_failure
        lines.add("smtp_canary_imap_success", 0 if f else 1, route)
        lines.add(
            "smtp_canary_imap_failed_phase",
            1 if f else 0,
            route + (f',phase="{f.phase}",kind="{f.kind}"' if f else ',phase="",kind=""'),
        )
    if c.delivered is not None:  # None: the mailbox could not be read
        lines.add("smtp_canary_delivered", 1 if c.delivered else 0, route)
        for place in Placement:  # both 0 when it was not there
            lines.add(
                "smtp_canary_placement",
                1 if c.placement is place else 0,
                f'{route},placement="{place}"',
            )
    if c.round_trip_seconds is not None:
        lines.add("smtp_canary_last_round_trip_seconds", c.round_trip_seconds, route)
    _verdicts(lines, c.verdicts, route)
    if c.local_dkim:  # None: not verified; (): unsigned
        # As canary_verdicts.dkim_summary (not imported: it would load dkimpy here).
        passed = [s for s in c.local_dkim if s.result == "pass"]
        verdict = "pass" if passed else c.local_dkim[0].result
        lines.add("smtp_canary_local_dkim_result", 1, f'{route},result="{verdict}"')
        lines.add(
            "smtp_canary_local_dkim_aligned", 1 if any(s.aligned for s in passed) else 0, route
        )


def _verdicts(lines: _Lines, v: AuthVerdicts | None, route: str) -> None:
    """The receiving host's Authentication-Results; none when they were not read."""
    if v is None:
        return
    lines.add("smtp_canary_auth_results_found", 1 if v.found else 0, route)
    lines.add("smtp_canary_auth_results_ignored", v.ignored, route)
    for method in ("spf", "dkim", "dmarc"):
        result = getattr(v, method)
        if result is not None:  # the receiver did not report this method
            lines.add("smtp_canary_auth_result", 1, f'{route},method="{method}",result="{result}"')
    if v.found and v.dkim_aligned is not None:
        lines.add("smtp_canary_dkim_aligned", 1 if v.dkim_aligned else 0, route)


def _canary_history(lines: _Lines, entry: Entry, counters: bool) -> None:
    """What the store keeps across canaries, per route: last delivery, counters, round-trip
    histogram."""
    canary = entry.target.module.canary
    if canary is None:
        return
    known = {r.route: r for r in entry.routes}
    for spec in canary.all_routes:
        history = known.get(spec.name)
        route = f',route="{escape(spec.name)}"'
        if history is not None and history.last_delivered is not None:
            lines.add("smtp_canary_last_delivered_timestamp_seconds", history.last_delivered, route)
        if not counters or spec.imap is None:
            continue
        # Counters and the histogram from the start, so rates and quantiles never flicker.
        history = history or RouteCanary(CanaryResult(spec.name, 0.0, False, 0.0))
        lines.add("smtp_canary_late_arrivals_total", history.canaries_late, route)
        lines.add("smtp_canary_swept_total", history.canaries_swept, route)
        name, base = "smtp_canary_round_trip_seconds", lines.base + route
        out = lines.out[_INDEX[name]]
        counts = history.round_trip_buckets or (0,) * len(CANARY_BUCKETS)
        for le, n in zip(_CANARY_LE, counts, strict=True):
            out.append(f'{name}_bucket{{{base},le="{le}"}} {n}\n')
        out.append(f'{name}_bucket{{{base},le="+Inf"}} {history.round_trip_count}\n')
        out.append(f"{name}_sum{{{base}}} {fmt(history.round_trip_sum)}\n")
        out.append(f"{name}_count{{{base}}} {history.round_trip_count}\n")


# Counts since the exporter started (counters, the canary histogram) mean nothing for one probe.
_COUNTERS = {i for i, spec in enumerate(PER_TARGET) if spec.type in ("counter", "histogram")}


def render_probe(entries: list[Entry], discoveries: Sequence[Discovery] = ()) -> str:
    """The /probe answer: these results' gauges (counters mean nothing for one probe), and
    for an mx: target its lookup's."""
    blocks = [render_target(e, counters=False) for e in entries]
    out = []
    for i, head in _PROBE_HEADS:
        lines = blocks[0][i] if len(blocks) == 1 else "".join(b[i] for b in blocks)
        if lines:
            out.append(head)
            out.append(lines)
    return "".join(out) + discovery_text(discoveries)


# (family index, HELP and TYPE lines) of the families a /probe answer may hold: the gauges.
_PROBE_HEADS = tuple(
    (i, f"# HELP {spec.name} {spec.help}\n# TYPE {spec.name} {spec.type}\n")
    for i, spec in enumerate(PER_TARGET)
    if i not in _COUNTERS
)
