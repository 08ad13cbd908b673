"""Generate the Grafana dashboard for smtp-health-exporter as reviewable Python.

``python dashboards/generate.py`` rewrites ``dashboards/smtp-health-exporter.json``;
``--check`` exits 1 when the committed JSON differs from what this file generates.

Plain dicts with small helpers rather than grafanalib (last released January 2024, old
panel models) or grafana-foundation-sdk (the PyPI release targets Grafana 10.1, alpha): the
classic dashboard JSON model is stable, and this keeps the project free of a dependency
that would only shape a JSON file. Output is deterministic: no timestamps, ids assigned in
order, keys in insertion order.

Every PromQL expression here uses metric names from docs/metrics.md, and
tests/test_dashboards.py runs each one against a real Prometheus scraping the exporter.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

UID = "smtp-health-exporter"
TITLE = "SMTP health"
# Classic JSON model as saved by Grafana 12.0/12.1; newer Grafana migrates it on load.
SCHEMA_VERSION = 41
OUTPUT = Path(__file__).resolve().with_name("smtp-health-exporter.json")

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Label matchers for the template variables. Histograms without a target label and the
# exporter's own metrics only take the job.
SEL = 'job=~"$job", target=~"$target"'
JOB = 'job=~"$job"'
# Mail-domain series carry domain and module, not target: they take the job only.
DOMAIN_LEGEND = "{{domain}} ({{module}})"
# An `mx:` target expands into one series per MX host (and address, and address family with
# `ip_protocol: both`): legends and tables show these labels, empty for plain targets.
EXPANSION = ["mx_host", "address", "ip_protocol"]
LEGEND = "{{target}} ({{module}}) {{mx_host}} {{address}} {{ip_protocol}}"

Json = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def columns(selector: str, *metrics: str) -> list[Json]:
    """Instant table queries of ``metrics`` under one selector: one column each (#A, #B, ...)."""
    return [query(f"{m}{{{selector}}}", instant=True, table=True) for m in metrics]


def values(n: int) -> list[str]:
    """The names Grafana gives the value columns of ``n`` merged table queries."""
    return [f"Value #{chr(ord('A') + i)}" for i in range(n)]


def query(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> Json:
    """One Prometheus query of a panel; refIds are assigned by :func:`panel`."""
    q: Json = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend or "__auto"}
    if table:
        q["format"] = "table"
    if instant:
        q["instant"] = True
        q["range"] = False
    else:
        q["range"] = True
    return q


def thresholds(*steps: tuple[str, float | None]) -> Json:
    """Absolute thresholds, the first step's value being the base (None)."""
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


def value_map(*entries: tuple[int, str, str]) -> list[Json]:
    """Value mappings: (value, text, color)."""
    return [
        {
            "type": "value",
            "options": {
                str(value): {"text": text, "color": color, "index": i}
                for i, (value, text, color) in enumerate(entries)
            },
        }
    ]


UP_DOWN = value_map((0, "down", "red"), (1, "up", "green"))
YES_NO = value_map((0, "no", "red"), (1, "yes", "green"))
RED_GREEN = thresholds(("red", None), ("green", 1))
# Counts of problems: 0 is good.
GREEN_RED = thresholds(("green", None), ("red", 1))
BARGAUGE = {
    "displayMode": "basic",
    "orientation": "horizontal",
    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    "showUnfilled": True,
}


class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping to a new line."""

    WIDTH = 24

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.line_height = 0
        self.next_id = 1

    def place(self, w: int, h: int) -> Json:
        """The gridPos of a w-by-h panel at the next free position."""
        if self.x + w > self.WIDTH:
            self.newline()
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.line_height = max(self.line_height, h)
        return pos

    def newline(self) -> None:
        """Start a new line below the tallest panel of the current one."""
        self.y += self.line_height
        self.x = 0
        self.line_height = 0

    def take_id(self) -> int:
        """The next panel id: ids are stable as long as the panel order is."""
        pid = self.next_id
        self.next_id += 1
        return pid


def row(layout: Layout, title: str) -> Json:
    """A (non-collapsed) row header across the full width."""
    if layout.x:
        layout.newline()
    pos = layout.place(Layout.WIDTH, 1)
    layout.newline()
    return {
        "collapsed": False,
        "gridPos": pos,
        "id": layout.take_id(),
        "panels": [],
        "title": title,
        "type": "row",
    }


def panel(
    layout: Layout,
    kind: str,
    title: str,
    description: str,
    targets: list[Json],
    *,
    size: tuple[int, int] = (12, 8),
    unit: str | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
    decimals: int | None = None,
    mappings: list[Json] | None = None,
    steps: Json | None = None,
    custom: Json | None = None,
    options: Json | None = None,
    transformations: list[Json] | None = None,
    interval: str | None = None,
) -> Json:
    """A panel of type ``kind`` with its queries, placed by ``layout``."""
    defaults: Json = {}
    if unit is not None:
        defaults["unit"] = unit
    if min_value is not None:
        defaults["min"] = min_value
    if max_value is not None:
        defaults["max"] = max_value
    if decimals is not None:
        defaults["decimals"] = decimals
    if mappings is not None:
        defaults["mappings"] = mappings
    if steps is not None:
        defaults["thresholds"] = steps
    if custom is not None:
        defaults["custom"] = custom
    out: Json = {
        "datasource": DATASOURCE,
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": layout.place(*size),
        "id": layout.take_id(),
    }
    if interval is not None:
        # Probes run every minute by default: a window of less than a few probe intervals
        # holds one or two results, and a histogram rate over it is often empty.
        out["interval"] = interval
    out["options"] = options or {}
    out["targets"] = [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)]
    out["title"] = title
    if transformations:
        out["transformations"] = transformations
    out["type"] = kind
    return out


def stat(layout: Layout, title: str, description: str, expr: str, **kw: Any) -> Json:
    """A single-number panel from an instant query."""
    options = {
        "colorMode": "background",
        "graphMode": "none",
        "justifyMode": "center",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": "value",
    }
    return panel(
        layout,
        "stat",
        title,
        description,
        [query(expr, instant=True)],
        size=kw.pop("size", (4, 8)),
        options=options,
        **kw,
    )


def timeseries(
    layout: Layout, title: str, description: str, targets: list[Json], **kw: Any
) -> Json:
    """A time series graph with a table legend."""
    options = {
        "legend": {"calcs": ["lastNotNull", "max"], "displayMode": "table", "placement": "bottom"},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    custom = {"drawStyle": "line", "fillOpacity": 0, "lineWidth": 1, "showPoints": "never"}
    return panel(
        layout, "timeseries", title, description, targets, options=options, custom=custom, **kw
    )


def state_timeline(
    layout: Layout,
    title: str,
    description: str,
    targets: list[Json],
    mappings: list[Json],
    *,
    steps: Json = RED_GREEN,
    **kw: Any,
) -> Json:
    """One coloured band per series: good for 0/1 gauges over time."""
    options = {
        "alignValue": "center",
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
        "mergeValues": True,
        "rowHeight": 0.8,
        "showValue": "auto",
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return panel(
        layout,
        "state-timeline",
        title,
        description,
        targets,
        options=options,
        mappings=mappings,
        steps=steps,
        **kw,
    )


def table(
    layout: Layout,
    title: str,
    description: str,
    targets: list[Json],
    *,
    keep: list[str],
    rename: dict[str, str],
    **kw: Any,
) -> Json:
    """An instant table showing only the ``keep`` columns, renamed per ``rename``."""
    transformations: list[Json] = []
    if len(targets) > 1:
        transformations.append({"id": "merge", "options": {}})
    transformations.append(
        {
            "id": "organize",
            "options": {
                "excludeByName": {},
                "includeByName": {name: True for name in keep},
                "indexByName": {name: i for i, name in enumerate(keep)},
                "renameByName": rename,
            },
        }
    )
    options = {"cellHeight": "sm", "showHeader": True, "sortBy": [{"displayName": keep[0]}]}
    return panel(
        layout,
        "table",
        title,
        description,
        targets,
        options=options,
        transformations=transformations,
        **kw,
    )


# --------------------------------------------------------------------------- the dashboard


def panels() -> list[Json]:
    """Every panel, in reading order."""
    L = Layout()
    out: list[Json] = []
    add = out.append

    # ---- overview
    add(row(L, "Overview"))
    add(
        stat(
            L,
            "Targets",
            "Targets probed (an mx: target counts once per MX host and address).",
            f"count(smtp_probe_success{{{SEL}}})",
            steps=thresholds(("blue", None)),
        )
    )
    add(
        stat(
            L,
            "Up",
            "Targets whose last probe passed every phase.",
            f"sum(smtp_probe_success{{{SEL}}})",
            steps=thresholds(("green", None)),
        )
    )
    add(
        stat(
            L,
            "Down",
            "Targets whose last probe failed in some phase.",
            f"sum(1 - smtp_probe_success{{{SEL}}})",
            steps=thresholds(("green", None), ("red", 1)),
        )
    )
    add(
        table(
            L,
            "Failing targets: phase, kind and last reply",
            "Targets whose last probe failed: the phase and failure kind (README, 'Phases and "
            "failure kinds') and the last SMTP reply code (empty: none).",
            [query(f"smtp_probe_failed_phase{{{SEL}}} == 1", instant=True, table=True)],
            keep=["target", "module", *EXPANSION, "phase", "kind", "reply_code"],
            rename={"reply_code": "reply code"},
            size=(12, 8),
        )
    )
    add(
        state_timeline(
            L,
            "Up / down per target",
            "smtp_probe_success: 1 if every phase of the last probe passed.",
            [query(f"smtp_probe_success{{{SEL}}}", LEGEND)],
            UP_DOWN,
            size=(24, 8),
        )
    )

    # ---- results over time
    add(row(L, "Probe results"))
    # From the gauge, not the counters: /probe answers carry no counters, and in scheduled
    # mode each result stands until the next probe, so this is the share of time the target
    # was up (per probe exactly when every scrape is a probe, as with /probe).
    ratio = f"avg_over_time(smtp_probe_success{{{SEL}}}[{{w}}])"
    add(
        timeseries(
            L,
            "Success ratio",
            "Share of the time each target's last probe had passed (with /probe: share of "
            "probes that passed).",
            [query(ratio.replace("{w}", "$__rate_interval"), LEGEND)],
            unit="percentunit",
            min_value=0,
            max_value=1,
            interval="5m",
        )
    )
    add(
        panel(
            L,
            "bargauge",
            "Success ratio over the dashboard's time range",
            "Share of the dashboard's time range each target's last probe had passed.",
            [query(ratio.replace("{w}", "$__range"), LEGEND, instant=True)],
            unit="percentunit",
            min_value=0,
            max_value=1,
            decimals=2,
            steps=thresholds(("red", None), ("orange", 0.95), ("green", 0.99)),
            options={
                "displayMode": "basic",
                "orientation": "horizontal",
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "showUnfilled": True,
            },
        )
    )
    add(
        timeseries(
            L,
            "Probe duration",
            "Duration of each target's last probe, resolve to QUIT.",
            [query(f"smtp_probe_duration_seconds{{{SEL}}}", LEGEND)],
            unit="s",
        )
    )
    add(
        timeseries(
            L,
            "Targets failing, by phase and kind",
            "How many targets' last probe failed, by failing phase and failure kind.",
            [
                query(
                    f"count by (phase, kind) (smtp_probe_failed_phase{{{SEL}}} == 1)",
                    "{{phase}} ({{kind}})",
                )
            ],
            unit="none",
            decimals=0,
        )
    )

    add(
        timeseries(
            L,
            "Failed probes",
            "smtp_probe_failures_total: failed probes per target in each interval, by failing "
            "phase for modules with metrics_detail. Shows intermittent failures that the last "
            "probe's gauges hide between scrapes; alert SMTPProbesFailingIntermittently. The "
            "phase and kind of the failures the scrapes saw: 'Targets failing, by phase and "
            "kind'.",
            [
                query(
                    f"increase(smtp_probe_failures_total{{{SEL}}}[$__rate_interval]) > 0",
                    f"{LEGEND} {{{{phase}}}}",
                )
            ],
            unit="none",
            min_value=0,
            interval="5m",
        )
    )
    add(
        table(
            L,
            "MX lookups of mx: targets",
            "Per mx: target, from its last MX lookup: whether it answered (0: NXDOMAIN, "
            "timeout or SERVFAIL; alert SMTPMXLookupFailing), a null MX (the domain accepts "
            "no mail, nothing is probed; alert SMTPNullMX), no MX records (its own address "
            "is probed) and the MX hosts found.",
            columns(
                SEL,
                "smtp_mx_lookup_success",
                "smtp_mx_null",
                "smtp_mx_implicit",
                "smtp_mx_hosts",
            ),
            keep=["target", "module", *values(4)],
            rename={
                "Value #A": "lookup answered",
                "Value #B": "null MX",
                "Value #C": "no MX (implicit)",
                "Value #D": "MX hosts",
            },
        )
    )

    # ---- latency
    add(row(L, "Latency"))
    hist = (
        "histogram_quantile({q}, sum by (le, module, phase) "
        f"(rate(smtp_probe_phase_seconds_bucket{{{JOB}}}[$__rate_interval])"
        f" and on (job, instance, module) smtp_probe_success{{{SEL}}}))"
    )
    for q, name in (("0.5", "p50"), ("0.95", "p95")):
        add(
            timeseries(
                L,
                f"Phase latency {name} by module",
                f"{name} of each phase from the smtp_probe_phase_seconds histogram, per module "
                "(the histogram has no target label), for the modules of the selected targets.",
                [query(hist.replace("{q}", q), "{{module}} {{phase}}")],
                unit="s",
                interval="5m",
            )
        )
    add(
        timeseries(
            L,
            "Phase durations per target (last probe)",
            "smtp_probe_phase_duration_seconds: each phase each target's last probe ran "
            "(a phase not reached has no value, so a gap, not a 0). mx_lookup: the MX lookup "
            "of an mx: target that failed.",
            [
                query(
                    f"smtp_probe_phase_duration_seconds{{{SEL}}}",
                    "{{target}} {{mx_host}} {{address}} {{phase}}",
                )
            ],
            unit="s",
        )
    )
    add(
        table(
            L,
            "Per-target phase latency over the time range",
            "p50 and p95 of each target's phase durations over the dashboard's time range "
            "(quantile_over_time on the last-probe gauge, sampled at every scrape).",
            [
                query(
                    f"quantile_over_time(0.5, smtp_probe_phase_duration_seconds{{{SEL}}}"
                    "[$__range])",
                    instant=True,
                    table=True,
                ),
                query(
                    f"quantile_over_time(0.95, smtp_probe_phase_duration_seconds{{{SEL}}}"
                    "[$__range])",
                    instant=True,
                    table=True,
                ),
            ],
            keep=["target", "module", *EXPANSION, "phase", "Value #A", "Value #B"],
            rename={"Value #A": "p50", "Value #B": "p95"},
            unit="s",
        )
    )

    # ---- TLS
    add(row(L, "TLS"))
    add(
        panel(
            L,
            "bargauge",
            "Days to certificate expiry",
            "Days until the earliest certificate of the chain each target presents expires "
            "(alerts at 14 and 3 days).",
            [
                query(
                    f"(smtp_tls_earliest_cert_expiry_timestamp_seconds{{{SEL}}} - time()) / 86400",
                    LEGEND,
                    instant=True,
                )
            ],
            unit="d",
            decimals=1,
            min_value=0,
            steps=thresholds(("red", None), ("orange", 3), ("yellow", 14), ("green", 30)),
            options={
                "displayMode": "basic",
                "orientation": "horizontal",
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "showUnfilled": True,
            },
        )
    )
    add(
        table(
            L,
            "TLS version, cipher and certificate",
            "Negotiated in each target's last probe, and the leaf certificate it presented.",
            [query(f"smtp_tls_info{{{SEL}}}", instant=True, table=True)],
            keep=["target", "module", *EXPANSION, "version", "cipher", "subject", "issuer"],
            rename={},
        )
    )
    add(
        state_timeline(
            L,
            "Certificate chain verified",
            "smtp_tls_chain_verified: the chain verified against the trust store (recorded even "
            "with tls_verify: false).",
            [query(f"smtp_tls_chain_verified{{{SEL}}}", LEGEND)],
            YES_NO,
        )
    )
    add(
        state_timeline(
            L,
            "Certificate names the host",
            "smtp_tls_hostname_match: the certificate's subjectAltNames name the host (or "
            "tls_server_name).",
            [query(f"smtp_tls_hostname_match{{{SEL}}}", LEGEND)],
            YES_NO,
        )
    )

    # ---- AUTH
    add(row(L, "AUTH"))
    add(
        state_timeline(
            L,
            "AUTH result",
            "smtp_auth_success for modules with auth: 1 if the login succeeded, 0 if it "
            "failed; no value when the probe failed before AUTH (that is no AUTH failure).",
            [
                query(
                    f"max without (mechanism) (smtp_auth_success{{{SEL}}})",
                    LEGEND,
                )
            ],
            value_map((0, "failed", "red"), (1, "ok", "green")),
        )
    )
    add(
        table(
            L,
            "Capabilities advertised",
            "Extensions and AUTH mechanisms the last EHLO offered (of the fixed lists in "
            "docs/metrics.md), and the SIZE limit in bytes.",
            [query(f"smtp_capabilities_info{{{SEL}}}", instant=True, table=True)],
            keep=["target", "module", *EXPANSION, "extensions", "mechanisms", "size_limit"],
            rename={"size_limit": "SIZE limit"},
        )
    )

    # ---- canary
    add(row(L, "Canary"))
    add(
        state_timeline(
            L,
            "Canary sent, mailbox read, delivered",
            "smtp_canary_send_success: the last canary was accepted; smtp_canary_imap_success: "
            "its IMAP session could read the mailbox (where it failed: "
            "smtp_canary_imap_failed_phase); smtp_canary_delivered: it was found over IMAP "
            "before its timeout (no value while the mailbox cannot be read: unknown).",
            [
                query(f"smtp_canary_send_success{{{SEL}}}", "{{target}} sent"),
                query(f"smtp_canary_imap_success{{{SEL}}}", "{{target}} mailbox read"),
                query(f"smtp_canary_delivered{{{SEL}}}", "{{target}} delivered"),
            ],
            YES_NO,
        )
    )
    add(
        table(
            L,
            "Canary mailbox: where reading it fails",
            "Per target: the IMAP phase and kind where the last canary session failed "
            "(smtp_canary_imap_failed_phase; alert SMTPCanaryIMAPAccessFailed). Empty phase "
            "and kind: the last session read the mailbox.",
            [query(f"smtp_canary_imap_failed_phase{{{SEL}}}", instant=True, table=True)],
            keep=["target", "module", *EXPANSION, "phase", "kind"],
            rename={},
        )
    )
    add(
        timeseries(
            L,
            "Canary round trip and send time",
            "Round trip: sending the last canary to finding it over IMAP (p50/p95 over the "
            "last hour from the histogram, and the last one). Send: connect, send and QUIT.",
            [
                query(
                    "histogram_quantile(0.95, sum by (le, target) "
                    f"(rate(smtp_canary_round_trip_seconds_bucket{{{SEL}}}[1h])))",
                    "{{target}} round trip p95",
                ),
                query(
                    "histogram_quantile(0.5, sum by (le, target) "
                    f"(rate(smtp_canary_round_trip_seconds_bucket{{{SEL}}}[1h])))",
                    "{{target}} round trip p50",
                ),
                query(
                    f"smtp_canary_last_round_trip_seconds{{{SEL}}}", "{{target}} last round trip"
                ),
                query(f"smtp_canary_send_duration_seconds{{{SEL}}}", "{{target}} send"),
            ],
            unit="s",
        )
    )
    add(
        timeseries(
            L,
            "Canaries late and swept",
            "Per hour: canaries the IMAP sweep found that arrived after their timeout "
            "(smtp_canary_late_arrivals_total), and stale canaries it deleted "
            "(smtp_canary_swept_total).",
            [
                query(f"increase(smtp_canary_late_arrivals_total{{{SEL}}}[1h])", "{{target}} late"),
                query(f"increase(smtp_canary_swept_total{{{SEL}}}[1h])", "{{target}} swept"),
            ],
        )
    )
    add(
        panel(
            L,
            "bargauge",
            "Time since a canary was last delivered",
            "Per target: since a canary was last found in the mailbox.",
            [
                query(
                    f"time() - smtp_canary_last_delivered_timestamp_seconds{{{SEL}}}",
                    LEGEND,
                    instant=True,
                )
            ],
            unit="s",
            min_value=0,
            steps=thresholds(("green", None), ("orange", 1800), ("red", 3600)),
            options={
                "displayMode": "basic",
                "orientation": "horizontal",
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "showUnfilled": True,
            },
            size=(24, 6),
        )
    )
    canary_verdict_panels(L, add)

    # ---- exporter
    add(row(L, "Exporter"))
    add(
        state_timeline(
            L,
            "Exporter scraped",
            "up: Prometheus could scrape the exporter.",
            # The job variable lists exporter jobs only, so plain `up` is the exporters'.
            [query(f"up{{{JOB}}}", "{{instance}}")],
            UP_DOWN,
            size=(8, 6),
        )
    )
    add(
        state_timeline(
            L,
            "Configuration reload",
            "smtp_exporter_config_last_reload_successful: a refused config leaves the previous "
            "one running.",
            [query(f"smtp_exporter_config_last_reload_successful{{{JOB}}}", "{{instance}}")],
            value_map((0, "failed", "red"), (1, "ok", "green")),
            size=(8, 6),
        )
    )
    add(
        timeseries(
            L,
            "/probe requests refused",
            "Per interval: /probe requests refused with 403 (forbidden: a module that carries "
            "credentials asked to probe a target it may not; alert SMTPExporterProbeForbidden) "
            "or 503 (busy: every /probe slot or resolver thread taken).",
            [
                query(
                    "sum by (instance, reason) (increase("
                    f"smtp_exporter_probe_requests_refused_total{{{JOB}}}[$__rate_interval]))",
                    "{{instance}} {{reason}}",
                )
            ],
            unit="none",
            min_value=0,
            size=(8, 6),
        )
    )
    add(
        table(
            L,
            "Exporter version and last good reload",
            "Version of each exporter and when it last loaded its configuration successfully.",
            # One query, so the table needs no merge: the reload time (ms, for Grafana's
            # date units) carrying the build's labels.
            [
                query(
                    f"smtp_exporter_config_last_reload_success_timestamp_seconds{{{JOB}}} * 1000"
                    " * on (job, instance) group_left (version, python_version)"
                    f" smtp_exporter_build_info{{{JOB}}}",
                    instant=True,
                    table=True,
                )
            ],
            keep=["instance", "version", "python_version", "Value"],
            rename={"Value": "last good reload"},
            unit="dateTimeFromNow",
            size=(8, 6),
        )
    )
    lag = (
        "histogram_quantile({q}, sum by (job, instance, le) "
        f"(rate(smtp_exporter_scheduler_lag_seconds_bucket{{{JOB}}}[$__rate_interval])))"
    )
    add(
        timeseries(
            L,
            "Scheduler lag",
            "How late probes start behind their schedule, including waiting for a concurrency "
            "slot (--probe.concurrency).",
            [
                query(lag.replace("{q}", "0.5"), "{{instance}} p50"),
                query(lag.replace("{q}", "0.95"), "{{instance}} p95"),
            ],
            unit="s",
            size=(8, 8),
        )
    )
    add(
        timeseries(
            L,
            "Skipped runs",
            "Scheduled runs not started: still_running (the previous one had not finished), "
            "missed (later than one interval).",
            [
                query(
                    "sum by (job, instance, reason) "
                    f"(rate(smtp_exporter_scheduler_skipped_runs_total{{{JOB}}}[$__rate_interval]))",
                    "{{instance}} {{reason}}",
                )
            ],
            unit="ops",
            size=(8, 8),
        )
    )
    add(
        timeseries(
            L,
            "Targets, probes in flight, /metrics render time",
            "Targets scheduled, probes running at scrape time, and the p95 time to render "
            "/metrics.",
            [
                query(f"smtp_exporter_targets{{{JOB}}}", "{{instance}} targets"),
                query(f"smtp_exporter_probes_in_flight{{{JOB}}}", "{{instance}} in flight"),
                query(
                    "histogram_quantile(0.95, sum by (job, instance, le) (rate("
                    f"smtp_exporter_metrics_render_seconds_bucket{{{JOB}}}[$__rate_interval])))",
                    "{{instance}} render p95 (s)",
                ),
            ],
            size=(8, 8),
        )
    )

    # Last, so the ids of the panels above stay what they were before these rows existed.
    posture_panels(L, add)
    domain_panels(L, add)
    slo_panels(L, add)
    mailbox_panels(L, add)
    return out


def canary_verdict_panels(L: Layout, add: Any) -> None:
    """Where the canary landed and what the receiving host thought of it (#19)."""
    add(
        state_timeline(
            L,
            "Canary placement and DKIM alignment",
            "Per route: the last canary was in the inbox (smtp_canary_placement "
            'placement="inbox"; no: in Junk or not delivered; alert SMTPCanaryLandedInJunk), '
            "its DKIM signature aligned with the From domain (smtp_canary_dkim_aligned; alert "
            "SMTPCanaryDKIMNotAligned), and it carried Authentication-Results of the route's "
            "authserv_id (smtp_canary_auth_results_found; alert SMTPCanaryNoAuthResults).",
            [
                query(
                    f'smtp_canary_placement{{{SEL}, placement="inbox"}}',
                    "{{target}} {{route}} in inbox",
                ),
                query(f"smtp_canary_dkim_aligned{{{SEL}}}", "{{target}} {{route}} DKIM aligned"),
                query(
                    f"smtp_canary_auth_results_found{{{SEL}}}",
                    "{{target}} {{route}} Authentication-Results",
                ),
            ],
            YES_NO,
        )
    )
    add(
        table(
            L,
            "Canary authentication at the receiver",
            "Per route: the SPF, DKIM and DMARC results the receiving host wrote into the "
            "last canary's Authentication-Results (smtp_canary_auth_result; alert "
            "SMTPCanaryAuthNotPass for anything but pass). Headers from other hosts, or "
            "forged below the receiver's, are not read.",
            [query(f"smtp_canary_auth_result{{{SEL}}} == 1", instant=True, table=True)],
            keep=["target", "module", "route", "method", "result"],
            rename={},
        )
    )
    add(
        table(
            L,
            "Canary DKIM verified by the exporter",
            "Per route: the exporter's own verification of the last canary's DKIM signature "
            "with the key in DNS (smtp_canary_local_dkim_result; alert "
            "SMTPCanaryLocalDKIMNotPass where the receiver reports no DKIM result), and "
            "whether a passing signature aligns with the From domain "
            "(smtp_canary_local_dkim_aligned).",
            [
                query(f"smtp_canary_local_dkim_result{{{SEL}}} == 1", instant=True, table=True),
                query(f"smtp_canary_local_dkim_aligned{{{SEL}}}", instant=True, table=True),
            ],
            keep=["target", "module", "route", "result", "Value #B"],
            rename={"Value #B": "aligned"},
        )
    )


def posture_panels(L: Layout, add: Any) -> None:
    """The TLS scan of each target (module option posture.tls_scan), AUTH before TLS and
    the relay test."""
    add(row(L, "Posture"))
    versions = state_timeline(
        L,
        "TLS versions accepted",
        "smtp_posture_tls_version_accepted: the server completed a handshake limited to this "
        "version. Accepting TLSv1 or TLSv1.1 is a finding (red); refusing them is green. "
        "Versions the exporter's OpenSSL cannot offer have no series.",
        [query(f"smtp_posture_tls_version_accepted{{{SEL}}}", f"{LEGEND} {{{{version}}}}")],
        value_map((0, "refused", "blue"), (1, "accepted", "green")),
        size=(12, 9),
    )
    # Legacy versions (legends ending in TLSv1 or TLSv1.1): accepting them is the problem.
    versions["fieldConfig"]["overrides"] = [
        {
            "matcher": {"id": "byRegexp", "options": "/ TLSv1(\\.1)?$/"},
            "properties": [
                {
                    "id": "mappings",
                    "value": value_map((0, "refused", "green"), (1, "accepted", "red")),
                },
                {"id": "thresholds", "value": GREEN_RED},
            ],
        }
    ]
    add(versions)
    add(
        timeseries(
            L,
            "TLS findings",
            "smtp_posture_tls_findings: weaknesses found by the TLS scan (TLS below 1.2 "
            "accepted, RSA key under 2048 bits, SHA-1 or MD5 signature); alert SMTPWeakTLS.",
            [query(f"smtp_posture_tls_findings{{{SEL}}}", LEGEND)],
            unit="none",
            decimals=0,
            min_value=0,
            size=(12, 9),
        )
    )
    add(
        table(
            L,
            "Leaf key, signature, forward secrecy, OCSP",
            "Per target, from its last TLS scan: the leaf certificate's key type and size, "
            "whether it is signed with SHA-1/MD5, whether the cipher the server chose when "
            "offered every cipher has forward secrecy, whether the server stapled an OCSP "
            "response (empty: not observable), and the number of findings.",
            columns(
                SEL,
                "smtp_posture_tls_key_size",
                "smtp_posture_tls_weak_signature",
                "smtp_posture_tls_forward_secrecy",
                "smtp_posture_tls_ocsp_stapled",
                "smtp_posture_tls_findings",
            ),
            keep=[
                "target",
                "module",
                *EXPANSION,
                "key_type",
                *values(5),
            ],
            rename={
                "key_type": "key",
                "Value #A": "key bits",
                "Value #B": "weak signature",
                "Value #C": "forward secrecy",
                "Value #D": "OCSP stapled",
                "Value #E": "findings",
            },
            size=(24, 8),
        )
    )

    add(
        table(
            L,
            "AUTH before TLS and open relay",
            "Per target with posture.auth_before_tls or posture.relay_test: AUTH advertised "
            "before STARTTLS, AUTH LOGIN accepted (334) before STARTTLS (alert "
            "SMTPAuthBeforeTLS), RCPT to an outside domain accepted without AUTH: an open "
            "relay (alert SMTPOpenRelay), and the reply code that decided the relay test.",
            columns(
                SEL,
                "smtp_posture_auth_advertised_before_tls",
                "smtp_posture_auth_accepted_before_tls",
                "smtp_posture_open_relay",
                "smtp_posture_relay_test_reply_code",
            ),
            keep=["target", "module", *EXPANSION, *values(4)],
            rename={
                "Value #A": "AUTH advertised before TLS",
                "Value #B": "AUTH accepted before TLS",
                "Value #C": "open relay",
                "Value #D": "relay test reply",
            },
            size=(24, 7),
        )
    )


def domain_panels(L: Layout, add: Any) -> None:
    """Checks of the mail domains (module option domain): one check per interval (1h)."""
    add(row(L, "Mail domain"))
    add(
        stat(
            L,
            "Domains with findings",
            "Domains (per module) with at least one finding in their last check.",
            f"count(max by (job, instance, domain, module) (smtp_domain_findings{{{JOB}}}) > 0)"
            " or vector(0)",
            steps=GREEN_RED,
        )
    )
    add(
        stat(
            L,
            "Domain checks failing",
            "Domains whose DNS could not be queried in the last check "
            "(smtp_domain_check_success 0).",
            f"sum(1 - smtp_domain_check_success{{{JOB}}}) or vector(0)",
            steps=GREEN_RED,
        )
    )
    add(
        stat(
            L,
            "DNSBL listings",
            "MX host addresses listed on a configured DNSBL zone.",
            f"sum(smtp_domain_dnsbl_listed{{{JOB}}}) or vector(0)",
            steps=GREEN_RED,
        )
    )
    add(
        panel(
            L,
            "bargauge",
            "Time since the last domain check",
            "Per domain: since its last check. Domain checks run every domain.interval (1h by "
            "default), so up to one interval is normal.",
            [
                query(
                    f"time() - smtp_domain_check_timestamp_seconds{{{JOB}}}",
                    DOMAIN_LEGEND,
                    instant=True,
                )
            ],
            unit="s",
            min_value=0,
            steps=thresholds(("green", None), ("orange", 5400), ("red", 10800)),
            options=BARGAUGE,
        )
    )
    add(
        state_timeline(
            L,
            "Findings per check",
            "smtp_domain_findings: findings of each enabled check of each domain (0: clean). "
            "Checks run every domain.interval; values hold between checks.",
            [query(f"smtp_domain_findings{{{JOB}}}", f"{DOMAIN_LEGEND} {{{{check}}}}")],
            value_map((0, "clean", "green")),
            steps=thresholds(("green", None), ("orange", 1)),
            size=(24, 9),
        )
    )
    add(
        table(
            L,
            "MX, SPF, DMARC and TLS-RPT records",
            "From each domain's last check: MX records (0 with a null MX), SPF valid and its "
            "DNS lookups (over 10 is a permerror), DMARC valid and its policy (empty without a "
            "valid record), TLS-RPT valid.",
            columns(
                JOB,
                "smtp_domain_mx_records",
                "smtp_domain_null_mx",
                "smtp_domain_spf_valid",
                "smtp_domain_spf_dns_lookups",
                "smtp_domain_dmarc_valid",
                "smtp_domain_dmarc_policy_info",
                "smtp_domain_tlsrpt_valid",
            ),
            keep=[
                "domain",
                "module",
                *values(5),
                "policy",
                "Value #G",
            ],
            rename={
                "Value #A": "MX records",
                "Value #B": "null MX",
                "Value #C": "SPF valid",
                "Value #D": "SPF lookups",
                "Value #E": "DMARC valid",
                "policy": "DMARC policy",
                "Value #G": "TLS-RPT valid",
            },
            size=(16, 8),
        )
    )
    add(
        panel(
            L,
            "bargauge",
            "SPF DNS lookups",
            "smtp_domain_spf_dns_lookups: DNS lookups evaluating the SPF record takes; "
            "receivers give up with a permerror past 10 (RFC 7208 4.6.4).",
            [query(f"smtp_domain_spf_dns_lookups{{{JOB}}}", DOMAIN_LEGEND, instant=True)],
            unit="none",
            decimals=0,
            min_value=0,
            max_value=10,
            steps=thresholds(("green", None), ("orange", 8), ("red", 11)),
            options=BARGAUGE,
            size=(8, 8),
        )
    )
    add(
        table(
            L,
            "MTA-STS policy",
            "Per domain: policy valid (TXT record present, policy fetched over verified HTTPS "
            "and parsed), its mode and max_age, and how often the TXT id changed (a new "
            "policy) over the dashboard's time range.",
            [
                query(f"smtp_domain_mta_sts_valid{{{JOB}}}", instant=True, table=True),
                query(f"smtp_domain_mta_sts_mode_info{{{JOB}}}", instant=True, table=True),
                query(f"smtp_domain_mta_sts_max_age_seconds{{{JOB}}}", instant=True, table=True),
                query(
                    f"increase(smtp_domain_mta_sts_policy_changes_total{{{JOB}}}[$__range])",
                    instant=True,
                    table=True,
                ),
            ],
            keep=["domain", "module", "Value #A", "mode", "Value #C", "Value #D"],
            rename={
                "Value #A": "valid",
                "Value #C": "max_age (s)",
                "Value #D": "policy changes",
            },
            size=(12, 8),
        )
    )
    add(
        state_timeline(
            L,
            "MX hosts matching the MTA-STS policy",
            "smtp_domain_mta_sts_mx_match: the MX host matches one of the policy's mx "
            "patterns. With mode enforce, senders refuse to deliver to a host that does not.",
            [
                query(
                    f"smtp_domain_mta_sts_mx_match{{{JOB}}}",
                    f"{DOMAIN_LEGEND} {{{{mx_host}}}}",
                )
            ],
            YES_NO,
            size=(12, 8),
        )
    )
    add(
        table(
            L,
            "DANE per MX host",
            "TLSA records at _25._tcp.<MX host>, whether the resolver validated them with "
            "DNSSEC (AD bit: validating senders only use validated records), and whether the "
            "MX host's certificate matches one of them (empty without records).",
            columns(
                JOB,
                "smtp_domain_dane_tlsa_records",
                "smtp_domain_dane_dnssec_validated",
                "smtp_domain_dane_match",
            ),
            keep=["domain", "module", "mx_host", "Value #A", "Value #B", "Value #C"],
            rename={
                "Value #A": "TLSA records",
                "Value #B": "DNSSEC validated",
                "Value #C": "certificate matches",
            },
            size=(12, 8),
        )
    )
    add(
        state_timeline(
            L,
            "DANE certificate match per MX host",
            "smtp_domain_dane_match: the MX host's certificate matches a TLSA record. A "
            "mismatch makes validating senders refuse to deliver.",
            [query(f"smtp_domain_dane_match{{{JOB}}}", f"{DOMAIN_LEGEND} {{{{mx_host}}}}")],
            YES_NO,
            size=(12, 8),
        )
    )
    add(
        table(
            L,
            "DNSBL listings",
            "MX host addresses listed on a configured DNSBL zone, with the zone's answer "
            "(its return code says why; see the list's documentation).",
            [query(f"smtp_domain_dnsbl_return_code_info{{{JOB}}}", instant=True, table=True)],
            keep=["domain", "module", "mx_host", "address", "zone", "code"],
            rename={"code": "return code"},
            size=(24, 7),
        )
    )
    add(
        table(
            L,
            "DKIM keys per selector",
            "The key record at <selector>._domainkey.<domain> of each configured selector "
            "(domain.dkim_selectors): present, usable (one well-formed record, not revoked, "
            "RSA at least 1024 bits), key type and size in bits (RSA under 2048 is weak), "
            "testing mode (t=y), revoked (empty p=).",
            columns(
                JOB,
                "smtp_domain_dkim_key_present",
                "smtp_domain_dkim_key_valid",
                "smtp_domain_dkim_key_size",
                "smtp_domain_dkim_testing",
                "smtp_domain_dkim_revoked",
            ),
            keep=["domain", "module", "selector", *values(3), "key_type", *values(5)[3:]],
            rename={
                "Value #A": "present",
                "Value #B": "usable",
                "Value #C": "bits",
                "key_type": "type",
                "Value #D": "testing",
                "Value #E": "revoked",
            },
            size=(12, 8),
        )
    )
    add(
        table(
            L,
            "Reverse DNS per address",
            "Each MX address (domain.reverse_dns, with its MX host) and configured sending "
            "address: a PTR record, forward-confirmed (a PTR name resolves back to the "
            "address), and for MX addresses whether the SMTP greeting and EHLO reply name "
            "that PTR name.",
            columns(
                JOB,
                "smtp_domain_ptr_present",
                "smtp_domain_ptr_forward_confirmed",
                "smtp_domain_ptr_greeting_match",
            ),
            keep=["domain", "module", "address", "mx_host", *values(3)],
            rename={
                "Value #A": "PTR",
                "Value #B": "forward-confirmed",
                "Value #C": "greeting names it",
            },
            size=(12, 8),
        )
    )


def slo_panels(L: Layout, add: Any) -> None:
    """The SLOs of alerting/slos.yml, from the recording rules in alerting/slo-rules.yml."""
    add(row(L, "SLOs (alerting/slo-rules.yml)"))
    legend = "{{target}} {{slo}} " + " ".join(f"{{{{{label}}}}}" for label in EXPANSION)
    add(
        panel(
            L,
            "bargauge",
            "Good share over 30 days",
            "Per target and SLO: share of good probes (or canaries) over the 30-day period, "
            "1 - slo:sli_error:ratio_rate30d. The objectives are in alerting/slos.yml.",
            [query(f"1 - slo:sli_error:ratio_rate30d{{{SEL}}}", legend, instant=True)],
            size=(8, 9),
            unit="percentunit",
            decimals=3,
            steps=thresholds(("red", None), ("orange", 0.99), ("green", 0.999)),
            options=BARGAUGE,
        )
    )
    add(
        panel(
            L,
            "bargauge",
            "Error budget remaining",
            "Share of the 30-day error budget not yet spent: 1 - error ratio / (1 - "
            "objective). Below 0: the objective is missed for the period.",
            [query(f"slo:error_budget_remaining:ratio{{{SEL}}}", legend, instant=True)],
            size=(8, 9),
            unit="percentunit",
            decimals=1,
            steps=thresholds(("red", None), ("orange", 0.25), ("green", 0.5)),
            options=BARGAUGE,
        )
    )
    add(
        timeseries(
            L,
            "Burn rate",
            "Error ratio as a multiple of the budget: 1 spends exactly the budget in 30 days. "
            "Pages at 14.4 over 1h (and 5m) or 6 over 6h (and 30m); tickets at 3 over 1d or 1 "
            "over 3d (docs/slo.md).",
            [
                query(f"slo:burn_rate:ratio_rate1h{{{SEL}}}", f"{legend} 1h"),
                query(f"slo:burn_rate:ratio_rate6h{{{SEL}}}", f"{legend} 6h"),
            ],
            size=(8, 9),
        )
    )


def both(template: str) -> str:
    """One query over the IMAP and POP3 families: ``template`` names ``{p}_...`` metrics;
    each side gets a ``protocol`` label (imap, pop3), as the Mailbox* alerts do."""
    sides = [
        f'label_replace({template.replace("{p}", p)}, "protocol", "{p}", "", "")'
        for p in ("imap", "pop3")
    ]
    return " or ".join(sides)


def mailbox_panels(L: Layout, add: Any) -> None:
    """IMAP and POP3 targets (modules with protocol: imap or pop3): the imap_* and pop3_*
    families, each panel over both."""
    add(row(L, "IMAP and POP3"))
    legend = "{{target}} ({{module}}, {{protocol}}) {{address}} {{ip_protocol}}"
    add(
        state_timeline(
            L,
            "IMAP / POP3 up / down per target",
            "imap_probe_success, pop3_probe_success: 1 if every phase of the last probe passed "
            "(connect, greeting, CAPABILITY / CAPA, STARTTLS / STLS, login, SELECT / STAT, "
            "LOGOUT / QUIT). Alert MailboxTargetDown.",
            [query(both(f"{{p}}_probe_success{{{SEL}}}"), legend)],
            UP_DOWN,
            size=(12, 8),
        )
    )
    add(
        table(
            L,
            "Failing IMAP / POP3 targets: phase and kind",
            "imap_probe_failed_phase, pop3_probe_failed_phase: where the last probe failed and "
            "why (reply: the server said NO, BAD, BYE or -ERR; --once shows its text).",
            [
                query(
                    both(f"{{p}}_probe_failed_phase{{{SEL}}} == 1"),
                    instant=True,
                    table=True,
                )
            ],
            keep=["target", "module", "protocol", "address", "ip_protocol", "phase", "kind"],
            rename={},
        )
    )
    add(
        panel(
            L,
            "bargauge",
            "IMAP / POP3 days to certificate expiry",
            "Days until the earliest certificate of the chain each IMAP or POP3 server presents "
            "expires (alerts MailboxCertificateExpiringSoon at 14, ...Critical at 3).",
            [
                query(
                    both(
                        f"(({{p}}_tls_earliest_cert_expiry_timestamp_seconds{{{SEL}}}"
                        " - time()) / 86400)"
                    ),
                    legend,
                    instant=True,
                )
            ],
            unit="d",
            decimals=1,
            min_value=0,
            steps=thresholds(("red", None), ("orange", 3), ("yellow", 14), ("green", 30)),
            options=BARGAUGE,
            size=(8, 8),
        )
    )
    add(
        state_timeline(
            L,
            "IMAP / POP3 certificate verified and names the host",
            "imap_tls_chain_verified, pop3_tls_chain_verified: the chain verified against the "
            "trust store; imap_tls_hostname_match, pop3_tls_hostname_match: it names the host "
            "(alerts MailboxTLSNotVerified, MailboxTLSHostnameMismatch).",
            [
                query(both(f"{{p}}_tls_chain_verified{{{SEL}}}"), f"{legend} verified"),
                query(both(f"{{p}}_tls_hostname_match{{{SEL}}}"), f"{legend} names host"),
            ],
            YES_NO,
            size=(8, 8),
        )
    )
    add(
        state_timeline(
            L,
            "IMAP / POP3 login",
            "imap_auth_success, pop3_auth_success for modules with auth: 1 if the login "
            "succeeded, 0 if it was refused (alert MailboxAuthFailing); no value when the "
            "probe failed before the login.",
            [query(both(f"max without (mechanism) ({{p}}_auth_success{{{SEL}}})"), legend)],
            value_map((0, "failed", "red"), (1, "ok", "green")),
            size=(8, 8),
        )
    )
    add(
        timeseries(
            L,
            "Messages in the mailbox",
            "imap_mailbox_messages: messages in the module's mailbox (SELECT / EXAMINE); "
            "pop3_mailbox_messages: messages in the maildrop (STAT). A mailbox that only grows "
            "is one nobody reads (or expunges).",
            [
                query(f"imap_mailbox_messages{{{SEL}}}", "{{target}} ({{module}}) {{mailbox}}"),
                query(f"pop3_mailbox_messages{{{SEL}}}", "{{target}} ({{module}})"),
            ],
            unit="none",
            min_value=0,
            size=(8, 8),
        )
    )
    add(
        timeseries(
            L,
            "IMAP / POP3 phase durations (last probe)",
            "imap_probe_phase_duration_seconds, pop3_probe_phase_duration_seconds: each phase "
            "each target's last probe ran (a phase not reached has no value).",
            [
                query(
                    both(f"{{p}}_probe_phase_duration_seconds{{{SEL}}}"),
                    "{{target}} ({{protocol}}) {{phase}}",
                )
            ],
            unit="s",
            size=(8, 8),
        )
    )
    add(
        timeseries(
            L,
            "IMAP / POP3 failed probes by phase",
            "imap_probe_failures_total, pop3_probe_failures_total: failed probes per target "
            "and failing phase in each interval (alert MailboxProbesFailingIntermittently).",
            [
                query(
                    both(f"increase({{p}}_probe_failures_total{{{SEL}}}[$__rate_interval]) > 0"),
                    f"{legend} {{{{phase}}}}",
                )
            ],
            unit="none",
            min_value=0,
            interval="5m",
            size=(8, 8),
        )
    )
    add(
        table(
            L,
            "IMAP / POP3 capabilities",
            "What each server announced (CAPABILITY / CAPA, after TLS) and the SASL mechanisms "
            "it offers, from fixed lists (imap_capabilities_info, pop3_capabilities_info).",
            [query(both(f"{{p}}_capabilities_info{{{SEL}}}"), instant=True, table=True)],
            keep=["target", "module", "protocol", "capabilities", "mechanisms"],
            rename={},
            size=(24, 7),
        )
    )


def variables() -> list[Json]:
    """Data source, job and target: job and target accept several values and All."""

    def query_var(name: str, label: str, definition: str) -> Json:
        return {
            "current": {},
            "datasource": DATASOURCE,
            "definition": definition,
            "hide": 0,
            "includeAll": True,
            "label": label,
            "multi": True,
            "name": name,
            "options": [],
            "query": definition,
            "refresh": 2,  # on time range change: targets come and go with reloads
            "regex": "",
            "skipUrlSync": False,
            "sort": 1,
            "type": "query",
        }

    return [
        {
            "current": {},
            "hide": 0,
            "includeAll": False,
            "label": "Data source",
            "multi": False,
            "name": "datasource",
            "options": [],
            "query": "prometheus",
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
            "type": "datasource",
        },
        # Jobs scraping /metrics (results and the exporter's health) and jobs scraping
        # /probe (results only), so both modes fill the dashboard.
        query_var(
            "job",
            "Job",
            'label_values({__name__=~"smtp_probe_success|imap_probe_success|pop3_probe_success'
            '|smtp_exporter_build_info"}, job)',
        ),
        query_var(
            "target",
            "Target",
            'label_values({__name__=~"smtp_probe_success|imap_probe_success|pop3_probe_success",'
            ' job=~"$job"}, target)',
        ),
    ]


# Links to the docs: BASE + page (+ "#" + alert name in lower case for a panel that
# shows what an alert fires on). The shipped JSON uses the default, relative to the
# repository root; ``--runbook-url-base`` sets where the docs are served when deploying,
# as for the alerts' runbook_url (alerting/runbooks.py says more).
DEFAULT_RUNBOOK_URL_BASE = "docs/"
DOC_LINKS = (("Runbook", "runbook.md"), ("Metrics", "metrics.md"), ("SLOs", "slo.md"))
PANEL_RUNBOOKS = {
    "Failing targets: phase, kind and last reply": "SMTPTargetDown",
    "MX lookups of mx: targets": "SMTPMXLookupFailing",
    "Days to certificate expiry": "SMTPCertificateExpiringSoon",
    "AUTH result": "SMTPAuthFailing",
    "Canary sent, mailbox read, delivered": "SMTPCanaryNotDelivered",
}


def doc_links(base: str) -> list[Json]:
    """The dashboard's links to the docs, opened beside it."""
    return [
        {
            "asDropdown": False,
            "icon": "doc",
            "includeVars": False,
            "keepTime": False,
            "tags": [],
            "targetBlank": True,
            "title": title,
            "tooltip": f"docs/{page}",
            "type": "link",
            "url": f"{base}{page}",
        }
        for title, page in DOC_LINKS
    ]


def link_runbooks(panel_list: list[Json], base: str) -> list[Json]:
    """Give each panel of PANEL_RUNBOOKS a link to its alert's runbook section."""
    seen = set()
    for panel in panel_list:
        for p in (panel, *panel.get("panels", [])):
            alert = PANEL_RUNBOOKS.get(p.get("title", ""))
            if alert is not None:
                seen.add(p["title"])
                p["links"] = [
                    {
                        "targetBlank": True,
                        "title": f"Runbook: {alert}",
                        "url": f"{base}runbook.md#{alert.lower()}",
                    }
                ]
    if missing := set(PANEL_RUNBOOKS) - seen:
        raise ValueError(f"PANEL_RUNBOOKS names panels that do not exist: {sorted(missing)}")
    return panel_list


def dashboard(runbook_url_base: str = DEFAULT_RUNBOOK_URL_BASE) -> Json:
    """The whole dashboard, as Grafana's classic JSON model; ``runbook_url_base``: the URL
    of the docs/ directory, for its links."""
    base = runbook_url_base.rstrip("/") + "/"
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": "SMTP servers probed by smtp-health-exporter: availability, failing "
        "phase, latency, TLS, AUTH, canary delivery, TLS posture, mail domain checks (SPF, "
        "DMARC, MTA-STS, DANE, DNSBL) and the exporter's own health.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": doc_links(base),
        "panels": link_runbooks(panels(), base),
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["smtp", "smtp-health-exporter"],
        "templating": {"list": variables()},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": TITLE,
        "uid": UID,
        "version": 1,
    }


def render(runbook_url_base: str = DEFAULT_RUNBOOK_URL_BASE) -> str:
    """The dashboard as committed (with the default base): two-space indented JSON with a
    final newline."""
    return json.dumps(dashboard(runbook_url_base), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the dashboard JSON, or with --check report whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument(
        "--runbook-url-base",
        default=DEFAULT_RUNBOOK_URL_BASE,
        help="URL of the docs/ directory for the dashboard's links (default: %(default)s, "
        "relative; see alerting/runbooks.py)",
    )
    args = parser.parse_args(argv)
    text = render(args.runbook_url_base)
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(
                f"{args.output} is out of date: run python dashboards/generate.py", file=sys.stderr
            )
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
