"""The families rendered at every scrape, being few: MX lookups (one set per ``mx:``
target), mail-domain checks (one set per domain) and the per-module phase histogram."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.utils import floatToGoString

from ..results.domain import DomainCheck
from ..store import LATENCY_BUCKETS, DomainEntry, ResultStore
from ..targets import Discovery
from .catalogue import DISCOVERY, DOMAIN, HISTOGRAM
from .text import escape, fmt


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
            out.append(f"{spec.name}{{{labels}}} {fmt(value)}\n")
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
    for k in r.dkim or ():
        if k.error is not None:  # the lookup failed: the finding says why, nothing is known
            continue
        sel = f',selector="{escape(k.selector)}"'
        out.append(("smtp_domain_dkim_key_present", sel, 1 if k.present else 0))
        if not k.present:
            continue
        out.append(("smtp_domain_dkim_key_valid", sel, 1 if k.valid else 0))
        if k.key_size is not None and k.key_type is not None:
            kt = f'{sel},key_type="{escape(k.key_type)}"'
            out.append(("smtp_domain_dkim_key_size", kt, k.key_size))
        out.append(("smtp_domain_dkim_testing", sel, 1 if k.testing else 0))
        out.append(("smtp_domain_dkim_revoked", sel, 1 if k.revoked else 0))
    for p in r.reverse_dns or ():
        labels = f',address="{escape(p.address)}"'
        if p.mx_host is not None:
            labels += f',mx_host="{escape(p.mx_host)}"'
        if p.error is None:  # else the lookup failed: the finding says why
            out.append(("smtp_domain_ptr_present", labels, 1 if p.ptr_names else 0))
            out.append(("smtp_domain_ptr_forward_confirmed", labels, p.forward_confirmed))
        if p.name_matches is not None:
            out.append(("smtp_domain_ptr_greeting_match", labels, p.name_matches))
    return out


def domain_text(entries: list[DomainEntry]) -> str:
    """Few series (one set per checked domain), so rendered at each scrape."""
    by_metric: dict[str, list[str]] = {spec.name: [] for spec in DOMAIN}
    for entry in entries:
        base = f'domain="{escape(entry.domain)}",module="{escape(entry.module)}"'
        for name, extra, value in domain_samples(entry):
            by_metric[name].append(f"{name}{{{base}{extra}}} {fmt(value)}\n")
    out: list[str] = []
    for spec in DOMAIN:
        lines = by_metric[spec.name]
        if lines:
            out.append(f"# HELP {spec.name} {spec.help}\n# TYPE {spec.name} {spec.type}\n")
            out.extend(lines)
    return "".join(out)


def histogram_text(store: ResultStore) -> str:
    name = HISTOGRAM.name
    lines = [f"# HELP {name} {HISTOGRAM.help}\n# TYPE {name} histogram\n"]
    for module, phase, buckets, total, count in store.histograms():
        labels = f'module="{escape(module)}",phase="{phase}"'
        for bound, n in zip(LATENCY_BUCKETS, buckets, strict=True):
            lines.append(f'{name}_bucket{{{labels},le="{floatToGoString(bound)}"}} {n}\n')
        lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {count}\n')
        lines.append(f"{name}_sum{{{labels}}} {fmt(total)}\n")
        lines.append(f"{name}_count{{{labels}}} {count}\n")
    return "".join(lines)
