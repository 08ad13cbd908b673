"""Prometheus text for the results in the store.

Rendering 10,000 targets through prometheus_client's per-sample objects costs over a second a
scrape. Instead each target's lines are rendered once per new result, when it is recorded,
and a scrape joins compressed shards of them family by family (the text format wants each
family's samples together); see ``Renderer``. ``METRICS`` is the single list of families: the
renderer writes HELP/TYPE from it and docs/metrics.md is checked against it.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client.utils import floatToGoString

from . import gzipjoin
from .discovery import Discovery
from .domain.results import DomainCheck
from .results import PROBE_PHASES, Phase, ProbeResult
from .scheduler import offset_fraction
from .store import (
    CANARY_BUCKETS,
    LATENCY_BUCKETS,
    DomainEntry,
    Entry,
    ResultStore,
    TargetKey,
    key_of,
)

# Advertised extensions reported as 0/1: a fixed list, so a server's EHLO can never create
# new series.
EXTENSIONS = (
    "STARTTLS",
    "AUTH",
    "SIZE",
    "PIPELINING",
    "8BITMIME",
    "SMTPUTF8",
    "CHUNKING",
    "BINARYMIME",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "REQUIRETLS",
)
MECHANISMS = (
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "XOAUTH2",
    "OAUTHBEARER",
)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    type: str  # gauge | counter | histogram
    help: str
    labels: tuple[str, ...] = ()  # beyond target, module and the target's extra labels


PER_TARGET: tuple[MetricSpec, ...] = (
    MetricSpec("smtp_probe_success", "gauge", "1 if every phase of the last probe passed."),
    MetricSpec("smtp_probe_duration_seconds", "gauge", "Duration of the last probe."),
    MetricSpec(
        "smtp_probe_phase_duration_seconds",
        "gauge",
        "Duration of each phase the last probe ran (absent for phases not reached).",
        ("phase",),
    ),
    MetricSpec(
        "smtp_probe_failed_phase",
        "gauge",
        "1 with the phase and kind of the last probe's failure; 0 with empty labels "
        "after a success.",
        ("phase", "kind"),
    ),
    MetricSpec(
        "smtp_probe_reply_code",
        "gauge",
        "Last SMTP reply code received in the last probe (0 if none).",
    ),
    MetricSpec("smtp_probe_ip_protocol", "gauge", "IP version of the address probed (4 or 6)."),
    MetricSpec("smtp_probe_timestamp_seconds", "gauge", "When the last probe started."),
    MetricSpec(
        "smtp_tls_info", "gauge", "TLS version and cipher of the last probe.", ("version", "cipher")
    ),
    MetricSpec(
        "smtp_tls_cert_info",
        "gauge",
        "The leaf certificate presented.",
        ("subject", "issuer", "serial", "fingerprint_sha256"),
    ),
    MetricSpec(
        "smtp_tls_leaf_cert_expiry_timestamp_seconds", "gauge", "notAfter of the leaf certificate."
    ),
    MetricSpec(
        "smtp_tls_earliest_cert_expiry_timestamp_seconds",
        "gauge",
        "Earliest notAfter in the presented chain.",
    ),
    MetricSpec(
        "smtp_tls_chain_verified",
        "gauge",
        "1 if the presented chain verified against the trust store.",
    ),
    MetricSpec(
        "smtp_tls_hostname_match",
        "gauge",
        "1 if the certificate names the host (or tls_server_name).",
    ),
    MetricSpec(
        "smtp_auth_success",
        "gauge",
        "1 if AUTH succeeded in the last probe (modules with auth only).",
        ("mechanism",),
    ),
    MetricSpec(
        "smtp_extension_advertised",
        "gauge",
        "1 if the last EHLO (after STARTTLS, if any) advertised the extension.",
        ("extension",),
    ),
    MetricSpec(
        "smtp_auth_mechanism_advertised",
        "gauge",
        "1 if the last EHLO advertised the AUTH mechanism.",
        ("mechanism",),
    ),
    MetricSpec("smtp_size_limit_bytes", "gauge", "Message size limit advertised with SIZE."),
    MetricSpec(
        "smtp_posture_auth_advertised_before_tls",
        "gauge",
        "1 if EHLO advertised AUTH before STARTTLS (posture.auth_before_tls).",
    ),
    MetricSpec(
        "smtp_posture_auth_accepted_before_tls",
        "gauge",
        "1 if the server answered AUTH LOGIN with 334 before TLS.",
    ),
    MetricSpec(
        "smtp_posture_open_relay",
        "gauge",
        "1 if RCPT to an outside domain was accepted without AUTH (posture.relay_test).",
    ),
    MetricSpec(
        "smtp_posture_relay_test_reply_code",
        "gauge",
        "Reply code that decided the relay test (RCPT, or MAIL when refused).",
    ),
    MetricSpec(
        "smtp_posture_tls_version_accepted",
        "gauge",
        "1 if a handshake pinned to the TLS version succeeded (posture.tls_scan).",
        ("version",),
    ),
    MetricSpec(
        "smtp_posture_tls_forward_secrecy",
        "gauge",
        "1 if the cipher chosen at the highest accepted version has forward secrecy.",
    ),
    MetricSpec(
        "smtp_posture_tls_key_size",
        "gauge",
        # In bits, as key sizes are always given; promtool's lint would have a name ending
        # in _bits use bytes, and a 2048-bit key read as 256 helps nobody.
        "Size of the leaf certificate's public key in bits (RSA 2048, EC 256).",
        ("key_type",),
    ),
    MetricSpec(
        "smtp_posture_tls_weak_signature",
        "gauge",
        "1 if the leaf certificate is signed with SHA-1 or MD5.",
    ),
    MetricSpec(
        "smtp_posture_tls_ocsp_stapled",
        "gauge",
        "1 if the server stapled an OCSP response when asked.",
    ),
    MetricSpec(
        "smtp_posture_tls_findings",
        "gauge",
        "TLS weaknesses found: TLS < 1.2 accepted, RSA < 2048 bits, SHA-1/MD5 signature.",
    ),
    MetricSpec(
        "smtp_canary_send_success",
        "gauge",
        "1 if the last canary was accepted for every recipient.",
    ),
    MetricSpec(
        "smtp_canary_send_duration_seconds",
        "gauge",
        "Time to connect, send the last canary and quit.",
    ),
    MetricSpec(
        "smtp_canary_last_sent_timestamp_seconds", "gauge", "When the last canary was sent."
    ),
    MetricSpec(
        "smtp_canary_imap_success",
        "gauge",
        "1 if the last canary's IMAP session connected, logged in and searched the mailbox "
        "(and deleted what it found); 0 if it could not, and delivery is then unknown.",
    ),
    MetricSpec(
        "smtp_canary_imap_failed_phase",
        "gauge",
        "1 with the phase and kind of the last IMAP session's failure; 0 with empty labels "
        "after a success.",
        ("phase", "kind"),
    ),
    MetricSpec(
        "smtp_canary_delivered",
        "gauge",
        "1 if the last canary was found in the IMAP mailbox before its deadline; 0 if the "
        "mailbox was read and it was not there.",
    ),
    MetricSpec(
        "smtp_canary_last_round_trip_seconds",
        "gauge",
        "From sending the last canary to finding it over IMAP.",
    ),
    MetricSpec(
        "smtp_canary_last_delivered_timestamp_seconds",
        "gauge",
        "When a canary was last found in the mailbox.",
    ),
    MetricSpec(
        "smtp_canary_round_trip_seconds",
        "histogram",
        "Canary round trips (sending to finding it over IMAP) since the exporter started.",
    ),
    MetricSpec(
        "smtp_canary_late_arrivals_total",
        "counter",
        "Canaries the IMAP sweep found that the server received after their timeout.",
    ),
    MetricSpec(
        "smtp_canary_swept_total",
        "counter",
        "Stale canaries (older than the timeout, never found in time) the IMAP sweep deleted.",
    ),
    MetricSpec("smtp_probes_total", "counter", "Probes completed since the exporter started."),
    MetricSpec(
        "smtp_probe_failures_total", "counter", "Failed probes by failing phase.", ("phase",)
    ),
)
DISCOVERY: tuple[MetricSpec, ...] = (
    MetricSpec(
        "smtp_mx_lookup_success",
        "gauge",
        "1 if the last MX lookup of an mx: target answered (records, no records, or "
        "null MX); 0 on NXDOMAIN or a failed lookup.",
    ),
    MetricSpec(
        "smtp_mx_null",
        "gauge",
        "1 if the domain publishes a null MX (RFC 7505): it accepts no mail.",
    ),
    MetricSpec(
        "smtp_mx_implicit",
        "gauge",
        "1 if the domain has no MX records and its own address is used (RFC 5321 5.1).",
    ),
    MetricSpec("smtp_mx_hosts", "gauge", "MX hosts found in the last lookup."),
    MetricSpec(
        "smtp_mx_lookup_timestamp_seconds", "gauge", "When the MX records were last looked up."
    ),
)
DOMAIN: tuple[MetricSpec, ...] = (
    MetricSpec(
        "smtp_domain_check_success",
        "gauge",
        "1 if the domain's DNS could be queried in the last check; 0 when lookups failed.",
    ),
    MetricSpec("smtp_domain_check_duration_seconds", "gauge", "Duration of the last check."),
    MetricSpec("smtp_domain_check_timestamp_seconds", "gauge", "When the domain was last checked."),
    MetricSpec(
        "smtp_domain_findings",
        "gauge",
        "Findings of each enabled check in the last check (0 = clean).",
        ("check",),
    ),
    MetricSpec("smtp_domain_mx_records", "gauge", "MX records of the domain (0 for a null MX)."),
    MetricSpec("smtp_domain_null_mx", "gauge", "1 if the domain publishes a null MX (RFC 7505)."),
    MetricSpec(
        "smtp_domain_spf_valid",
        "gauge",
        "1 if the domain has one SPF record, known mechanisms only, at most 10 DNS lookups.",
    ),
    MetricSpec(
        "smtp_domain_spf_dns_lookups", "gauge", "DNS lookups evaluating the SPF record takes."
    ),
    MetricSpec("smtp_domain_dmarc_valid", "gauge", "1 if _dmarc.<domain> has one valid record."),
    MetricSpec(
        "smtp_domain_dmarc_policy_info", "gauge", "The DMARC record's policy (p=).", ("policy",)
    ),
    MetricSpec(
        "smtp_domain_tlsrpt_valid", "gauge", "1 if _smtp._tls.<domain> has a valid TLS-RPT record."
    ),
    MetricSpec(
        "smtp_domain_mta_sts_valid",
        "gauge",
        "1 if the _mta-sts TXT record is present and the policy was fetched over verified "
        "HTTPS and parsed.",
    ),
    MetricSpec("smtp_domain_mta_sts_mode_info", "gauge", "The MTA-STS policy's mode.", ("mode",)),
    MetricSpec("smtp_domain_mta_sts_max_age_seconds", "gauge", "The MTA-STS policy's max_age."),
    MetricSpec(
        "smtp_domain_mta_sts_policy_changes_total",
        "counter",
        "Times the _mta-sts TXT record's id changed since the exporter started.",
    ),
    MetricSpec(
        "smtp_domain_mta_sts_mx_match",
        "gauge",
        "1 if the MX host matches one of the MTA-STS policy's mx patterns.",
        ("mx_host",),
    ),
    MetricSpec(
        "smtp_domain_dane_tlsa_records",
        "gauge",
        "TLSA records at _25._tcp.<mx_host>.",
        ("mx_host",),
    ),
    MetricSpec(
        "smtp_domain_dane_dnssec_validated",
        "gauge",
        "1 if the resolver set the AD bit on the TLSA answer.",
        ("mx_host",),
    ),
    MetricSpec(
        "smtp_domain_dane_match",
        "gauge",
        "1 if the MX host's certificate matches one of its TLSA records.",
        ("mx_host",),
    ),
    MetricSpec(
        "smtp_domain_dnsbl_listed",
        "gauge",
        "1 if the MX host's address is listed on the DNSBL zone.",
        ("mx_host", "address", "zone"),
    ),
    MetricSpec(
        "smtp_domain_dnsbl_return_code_info",
        "gauge",
        "The address a DNSBL zone answered for a listed MX address.",
        ("mx_host", "address", "zone", "code"),
    ),
)
HISTOGRAM = MetricSpec(
    "smtp_probe_phase_seconds",
    "histogram",
    "Phase durations over time, per module (per-target quantiles: quantile_over_time on "
    "smtp_probe_phase_duration_seconds).",
    ("phase",),
)
METRICS = (*PER_TARGET, *DISCOVERY, *DOMAIN, HISTOGRAM)
_INDEX = {spec.name: i for i, spec in enumerate(PER_TARGET)}


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    """A sample value as the text format writes it: integers without a fraction (most of
    our values), Go's spellings of the infinities and NaN. repr() of a float is the
    shortest text that parses back to it, which is all the format asks."""
    if value.__class__ is int or value.__class__ is bool:
        return str(int(value))
    if value == value and value not in (math.inf, -math.inf):
        return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")


def phase_plan(entry: Entry) -> tuple[Phase, ...]:
    """The phases this target can fail in, so each failure counter exists from the start.
    (Durations are exported only for the phases a probe did run.)"""
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


# The histogram's ``le`` labels in Go's spelling, formatted once rather than per target.
_CANARY_LE = tuple(floatToGoString(bound) for bound in CANARY_BUCKETS)


def render_target(entry: Entry, *, counters: bool = True) -> tuple[str, ...]:
    """One string per PER_TARGET family (possibly empty) for this target; without
    ``counters``, the counter and histogram families stay empty (what /probe leaves out,
    not worth formatting at every request)."""
    out: list[list[str]] = [[] for _ in PER_TARGET]
    t = entry.target
    base = f'target="{escape(t.name)}",module="{escape(t.module.name)}"' + "".join(
        f',{k}="{escape(v)}"' for k, v in t.labels
    )

    def add(name: str, value: float, extra: str = "") -> None:
        out[_INDEX[name]].append(f"{name}{{{base}{extra}}} {_fmt(value)}\n")

    plan = phase_plan(entry)
    if counters:
        add("smtp_probes_total", entry.probes)
        failures = dict(entry.failures)
        for phase in plan:
            add("smtp_probe_failures_total", failures.get(phase, 0), f',phase="{phase}"')
    r: ProbeResult | None = entry.result
    if r is not None:
        add("smtp_probe_success", 1 if r.success else 0)
        add("smtp_probe_duration_seconds", r.duration_seconds)
        # Only the phases that ran: a 0 for a phase never reached would read as a result
        # and drag latency percentiles down.
        # (The relay test's mail and rcpt steps stay out, as before: posture, not health.)
        for timing in r.phases:
            if timing.phase in plan:
                add(
                    "smtp_probe_phase_duration_seconds",
                    timing.seconds,
                    f',phase="{timing.phase}"',
                )
        f = r.failure
        add(
            "smtp_probe_failed_phase",
            1 if f else 0,
            f',phase="{f.phase}",kind="{f.kind}"' if f else ',phase="",kind=""',
        )
        add("smtp_probe_reply_code", r.last_reply_code or 0)
        if r.address:
            add("smtp_probe_ip_protocol", 6 if ":" in r.address else 4)
        add("smtp_probe_timestamp_seconds", r.started_at)
        if r.tls is not None:
            tls = r.tls
            add(
                "smtp_tls_info",
                1,
                f',version="{escape(tls.version)}",cipher="{escape(tls.cipher)}"',
            )
            leaf = tls.leaf
            if leaf is not None:
                add(
                    "smtp_tls_cert_info",
                    1,
                    f',subject="{escape(leaf.subject)}",issuer="{escape(leaf.issuer)}",'
                    f'serial="{leaf.serial}",fingerprint_sha256="{leaf.sha256}"',
                )
                add("smtp_tls_leaf_cert_expiry_timestamp_seconds", leaf.not_after)
            if tls.earliest_not_after is not None:
                add("smtp_tls_earliest_cert_expiry_timestamp_seconds", tls.earliest_not_after)
            add("smtp_tls_chain_verified", 1 if tls.verified else 0)
            add("smtp_tls_hostname_match", 1 if tls.hostname_match else 0)
        if t.module.auth is not None and any(p.phase is Phase.AUTH for p in r.phases):
            # Only when the AUTH phase ran: a probe that failed before it did not fail AUTH.
            add(
                "smtp_auth_success",
                1 if r.auth.success else 0,
                f',mechanism="{r.auth.mechanism or ""}"',
            )
        if r.extensions or r.failure is None:
            for ext in EXTENSIONS:
                add(
                    "smtp_extension_advertised",
                    1 if ext in r.extensions else 0,
                    f',extension="{ext}"',
                )
            for mech in MECHANISMS:
                add(
                    "smtp_auth_mechanism_advertised",
                    1 if mech in r.auth_mechanisms else 0,
                    f',mechanism="{mech}"',
                )
        if r.size_limit is not None:
            add("smtp_size_limit_bytes", r.size_limit)
    if r is not None:
        p = r.posture
        for name, value in (
            ("smtp_posture_auth_advertised_before_tls", p.auth_advertised_before_tls),
            ("smtp_posture_auth_accepted_before_tls", p.auth_accepted_before_tls),
            ("smtp_posture_open_relay", p.relay_accepted),
            ("smtp_posture_relay_test_reply_code", p.relay_code),
        ):
            if value is not None:
                add(name, float(value))
        scan = p.tls_scan
        if scan is not None:
            for version in scan.tested:
                add(
                    "smtp_posture_tls_version_accepted",
                    1 if version in scan.accepted else 0,
                    f',version="{version}"',
                )
            fs = scan.forward_secrecy
            if fs is not None:
                add("smtp_posture_tls_forward_secrecy", 1 if fs else 0)
            if scan.key_type is not None and scan.key_bits is not None:
                add("smtp_posture_tls_key_size", scan.key_bits, f',key_type="{scan.key_type}"')
            weak = scan.weak_signature
            if weak is not None:
                add("smtp_posture_tls_weak_signature", 1 if weak else 0)
            if scan.ocsp_stapled is not None:
                add("smtp_posture_tls_ocsp_stapled", 1 if scan.ocsp_stapled else 0)
            add("smtp_posture_tls_findings", len(scan.findings))
    c = entry.canary
    if c is not None:
        add("smtp_canary_send_success", 1 if c.send_ok else 0)
        add("smtp_canary_send_duration_seconds", c.send_seconds)
        add("smtp_canary_last_sent_timestamp_seconds", c.sent_at)
        if c.checked:
            f = c.imap_failure
            add("smtp_canary_imap_success", 0 if f else 1)
            add(
                "smtp_canary_imap_failed_phase",
                1 if f else 0,
                f',phase="{f.phase}",kind="{f.kind}"' if f else ',phase="",kind=""',
            )
        if c.delivered is not None:  # None: the mailbox could not be read
            add("smtp_canary_delivered", 1 if c.delivered else 0)
        if c.round_trip_seconds is not None:
            add("smtp_canary_last_round_trip_seconds", c.round_trip_seconds)
    if entry.last_delivered is not None:
        add("smtp_canary_last_delivered_timestamp_seconds", entry.last_delivered)
    canary = t.module.canary
    if counters and canary is not None and canary.imap is not None:
        # Counters and the histogram from the start, so rates and quantiles never flicker.
        add("smtp_canary_late_arrivals_total", entry.canaries_late)
        add("smtp_canary_swept_total", entry.canaries_swept)
        name = "smtp_canary_round_trip_seconds"
        lines = out[_INDEX[name]]
        counts = entry.round_trip_buckets or (0,) * len(CANARY_BUCKETS)
        for le, n in zip(_CANARY_LE, counts, strict=True):
            lines.append(f'{name}_bucket{{{base},le="{le}"}} {n}\n')
        lines.append(f'{name}_bucket{{{base},le="+Inf"}} {entry.round_trip_count}\n')
        lines.append(f"{name}_sum{{{base}}} {_fmt(entry.round_trip_sum)}\n")
        lines.append(f"{name}_count{{{base}}} {entry.round_trip_count}\n")
    return tuple("".join(lines) for lines in out)


# Targets per shard: small enough that rebuilding the few shards a scrape interval's results
# touch is cheap, large enough that a scrape joins few pieces (10,000 targets: 40 shards).
SHARD_SIZE = 256
Block = tuple[bytes, ...]  # one per PER_TARGET family


class Renderer:
    """The /metrics body, kept ready between scrapes.

    A target's block is rendered when its result is recorded (the store calls ``update`` on
    the event loop), never by a scrape. Targets are grouped into shards in schedule order
    (the scheduler's stable offset), so the results that arrive between two scrapes fall in
    a few neighbouring shards; each shard keeps one compressed piece per family, rebuilt only
    when one of its targets changed. A scrape joins those pieces into one gzip member
    without touching the rest (``gzipjoin``), or inflates them one by one for a plain
    answer. Neither builds the whole text in memory.
    """

    def __init__(self, store: ResultStore) -> None:
        self._store = store
        self._lock = threading.Lock()  # _blocks and _dirty: the loop and scrapes share them
        self._scrape_lock = threading.Lock()  # one scrape (re)builds shards at a time
        self._blocks: dict[TargetKey, tuple[Entry, Block]] = {}
        self._dirty: set[int] = set()
        self._layout = -1
        self._shard_of: dict[TargetKey, int] = {}
        self._shards: list[list[TargetKey]] = []
        self._pieces: list[list[gzipjoin.Piece]] = []  # per shard, one per family
        store.listen(self.update)

    def update(self, entry: Entry) -> None:
        """Render a new entry now, in the recording thread."""
        block = _encode(render_target(entry))
        key = key_of(entry.target)
        with self._lock:
            self._blocks[key] = (entry, block)
            shard = self._shard_of.get(key)
            if shard is not None:
                self._dirty.add(shard)

    def pieces(self) -> list[gzipjoin.Piece]:
        """Every family in order: its HELP/TYPE piece, then each shard's piece."""
        with self._scrape_lock:
            with self._lock:
                if self._layout != self._store.layout_version:
                    self._relayout()
                dirty = {i: [self._blocks[k][1] for k in self._shards[i]] for i in self._dirty}
                self._dirty.clear()
            for i, blocks in dirty.items():
                # The shard's samples family by family (a shard is never empty).
                families = zip(*blocks, strict=True)
                self._pieces[i] = [gzipjoin.deflate(b"".join(f)) for f in families]
            out: list[gzipjoin.Piece] = []
            for f, header in enumerate(_headers()):
                out.append(header)
                out.extend(shard[f] for shard in self._pieces)
            tail = (
                _discovery_text(self._store)
                + _domain_text(self._store.domains())
                + _histogram_text(self._store)
            )
            out.append(gzipjoin.deflate(tail.encode()))
            return out

    def render(self) -> str:
        """The whole text at once (tests and benchmarks; the server streams pieces)."""
        return b"".join(gzipjoin.inflate(p) for p in self.pieces()).decode()

    def _relayout(self) -> None:
        """Targets came or went: regroup every entry into shards. Caller holds both locks;
        entries unchanged since their last render keep their blocks."""
        version = self._store.layout_version  # read first: a change after it relayouts again
        entries = self._store.entries()
        blocks: dict[TargetKey, tuple[Entry, Block]] = {}
        for entry in entries:
            key = key_of(entry.target)
            hit = self._blocks.get(key)
            blocks[key] = (
                hit
                if hit is not None and hit[0] is entry
                else (entry, _encode(render_target(entry)))
            )
        order = sorted(entries, key=lambda e: offset_fraction(e.target))
        keys = [key_of(e.target) for e in order]
        self._shards = [keys[i : i + SHARD_SIZE] for i in range(0, len(keys), SHARD_SIZE)]
        self._shard_of = {k: i // SHARD_SIZE for i, k in enumerate(keys)}
        self._pieces = [[] for _ in self._shards]
        self._dirty = set(range(len(self._shards)))
        self._blocks = blocks
        self._layout = version


def _encode(block: tuple[str, ...]) -> Block:
    return tuple(text.encode() for text in block)


@functools.cache
def _headers() -> tuple[gzipjoin.Piece, ...]:
    return tuple(
        gzipjoin.deflate(f"# HELP {s.name} {s.help}\n# TYPE {s.name} {s.type}\n".encode())
        for s in PER_TARGET
    )


def _discovery_text(store: ResultStore) -> str:
    return discovery_text(store.discoveries())


def discovery_text(discoveries: Sequence[Discovery]) -> str:
    """The smtp_mx_* families of these MX lookups (few: one set per mx: target)."""
    if not discoveries:
        return ""
    out: list[str] = []
    for spec in DISCOVERY:
        out.append(f"# HELP {spec.name} {spec.help}\n# TYPE {spec.name} {spec.type}\n")
        for d in discoveries:
            t = d.target
            labels = f'target="{escape(t.name)}",module="{escape(t.module.name)}"' + "".join(
                f',{k}="{escape(v)}"' for k, v in t.labels
            )
            value = {
                "smtp_mx_lookup_success": 1 if d.ok else 0,
                "smtp_mx_null": 1 if d.null_mx else 0,
                "smtp_mx_implicit": 1 if d.implicit else 0,
                "smtp_mx_hosts": d.mx_hosts,
                "smtp_mx_lookup_timestamp_seconds": d.resolved_at,
            }[spec.name]
            out.append(f"{spec.name}{{{labels}}} {_fmt(value)}\n")
    return "".join(out)


def domain_samples(entry: DomainEntry) -> list[tuple[str, str, float]]:
    """(metric, extra labels, value) of one checked domain, in DOMAIN order per metric."""
    r = entry.result
    if r is None:
        return []
    out: list[tuple[str, str, float]] = [
        ("smtp_domain_check_success", "", 1 if r.success else 0),
        ("smtp_domain_check_duration_seconds", "", r.duration_seconds),
        ("smtp_domain_check_timestamp_seconds", "", r.started_at),
    ]
    for check, count in r.finding_counts().items():
        out.append(("smtp_domain_findings", f',check="{check}"', count))
    if r.mx is not None and DomainCheck.MX in r.enabled:
        out.append(("smtp_domain_mx_records", "", r.mx.records))
        out.append(("smtp_domain_null_mx", "", 1 if r.mx.null_mx else 0))
    if r.records is not None:
        spf, dmarc, tlsrpt = r.records.spf, r.records.dmarc, r.records.tlsrpt
        out.append(("smtp_domain_spf_valid", "", 1 if spf.valid else 0))
        if spf.record is not None:
            out.append(("smtp_domain_spf_dns_lookups", "", spf.lookups))
        out.append(("smtp_domain_dmarc_valid", "", 1 if dmarc.valid else 0))
        if dmarc.valid and dmarc.policy:
            out.append(("smtp_domain_dmarc_policy_info", f',policy="{escape(dmarc.policy)}"', 1))
        out.append(("smtp_domain_tlsrpt_valid", "", 1 if tlsrpt.valid else 0))
    if DomainCheck.MTA_STS in r.enabled:
        m = r.mta_sts
        out.append(("smtp_domain_mta_sts_valid", "", 1 if m is not None and m.valid else 0))
        out.append(("smtp_domain_mta_sts_policy_changes_total", "", entry.policy_changes))
        if m is not None and m.valid:
            if m.mode:
                out.append(("smtp_domain_mta_sts_mode_info", f',mode="{escape(m.mode)}"', 1))
            if m.max_age is not None:
                out.append(("smtp_domain_mta_sts_max_age_seconds", "", m.max_age))
            for host, ok in m.mx_match:
                out.append(("smtp_domain_mta_sts_mx_match", f',mx_host="{escape(host)}"', ok))
    for d in r.dane or ():
        host = f',mx_host="{escape(d.mx_host)}"'
        out.append(("smtp_domain_dane_tlsa_records", host, d.tlsa_records))
        out.append(("smtp_domain_dane_dnssec_validated", host, 1 if d.dnssec_validated else 0))
        if d.match is not None:
            out.append(("smtp_domain_dane_match", host, 1 if d.match else 0))
    for b in r.dnsbl or ():
        labels = (
            f',mx_host="{escape(b.mx_host)}",address="{escape(b.address)}",zone="{escape(b.zone)}"'
        )
        out.append(("smtp_domain_dnsbl_listed", labels, 1 if b.listed else 0))
        if b.listed:
            for code in b.codes:
                out.append(
                    ("smtp_domain_dnsbl_return_code_info", f'{labels},code="{escape(code)}"', 1)
                )
    return out


def _domain_text(entries: list[DomainEntry]) -> str:
    """Few series (one set per checked domain), so rendered at each scrape."""
    by_metric: dict[str, list[str]] = {spec.name: [] for spec in DOMAIN}
    for entry in entries:
        base = f'domain="{escape(entry.domain)}",module="{escape(entry.module)}"'
        for name, extra, value in domain_samples(entry):
            by_metric[name].append(f"{name}{{{base}{extra}}} {_fmt(value)}\n")
    out: list[str] = []
    for spec in DOMAIN:
        lines = by_metric[spec.name]
        if lines:
            out.append(f"# HELP {spec.name} {spec.help}\n# TYPE {spec.name} {spec.type}\n")
            out.extend(lines)
    return "".join(out)


def _histogram_text(store: ResultStore) -> str:
    name = HISTOGRAM.name
    lines = [f"# HELP {name} {HISTOGRAM.help}\n# TYPE {name} histogram\n"]
    for module, phase, buckets, total, count in store.histograms():
        labels = f'module="{escape(module)}",phase="{phase}"'
        for bound, n in zip(LATENCY_BUCKETS, buckets, strict=True):
            lines.append(f'{name}_bucket{{{labels},le="{floatToGoString(bound)}"}} {n}\n')
        lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {count}\n')
        lines.append(f"{name}_sum{{{labels}}} {_fmt(total)}\n")
        lines.append(f"{name}_count{{{labels}}} {count}\n")
    return "".join(lines)


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
