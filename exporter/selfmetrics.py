"""The exporter's own health, with ordinary prometheus_client instrumentation: build info,
config reloads, scheduler lag and skipped runs, probes in flight, render time; and, unless
``--web.disable-exporter-metrics``, the process and the interpreter as client_python's
default collectors describe them (``process_*``, ``python_info``, ``python_gc_*``)."""

from __future__ import annotations

import platform

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from . import __version__

OWN_METRICS = (
    "smtp_exporter_build_info",
    "smtp_exporter_config_last_reload_successful",
    "smtp_exporter_config_last_reload_success_timestamp_seconds",
    "smtp_exporter_targets",
    "smtp_exporter_probes_in_flight",
    "smtp_exporter_scheduler_lag_seconds",
    "smtp_exporter_scheduler_skipped_runs_total",
    "smtp_exporter_metrics_render_seconds",
    "smtp_exporter_probe_requests_refused_total",
)


# client_python's process and platform families, as node_exporter's --web.disable-exporter-
# metrics turns off its go_* and process_* ones.
PROCESS_METRICS = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "python_info",
)


class ExporterMetrics:
    """The exporter's own metrics; ``process=False`` leaves out process and Python metrics."""

    def __init__(self, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            r.register(GC_COLLECTOR)
        build = Gauge(
            "smtp_exporter_build_info",
            "Version of the exporter and of Python.",
            ["version", "python_version"],
            registry=r,
        )
        build.labels(__version__, platform.python_version()).set(1)
        self.reload_ok = Gauge(
            "smtp_exporter_config_last_reload_successful",
            "1 if the last configuration (re)load succeeded.",
            registry=r,
        )
        self.reload_time = Gauge(
            "smtp_exporter_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
            registry=r,
        )
        self.targets = Gauge("smtp_exporter_targets", "Targets scheduled.", registry=r)
        self.in_flight = Gauge("smtp_exporter_probes_in_flight", "Probes running now.", registry=r)
        self.lag = Histogram(
            "smtp_exporter_scheduler_lag_seconds",
            "How late probes start behind their schedule.",
            registry=r,
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.skipped = Counter(
            "smtp_exporter_scheduler_skipped_runs",
            "Scheduled runs not started: the previous run of the target "
            "was still going, or the run was missed entirely.",
            ["reason"],
            registry=r,
        )
        for reason in ("still_running", "missed"):
            self.skipped.labels(reason)
        self.render_time = Histogram(
            "smtp_exporter_metrics_render_seconds",
            "Time to render /metrics.",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )
        self.probe_refused = Counter(
            "smtp_exporter_probe_requests_refused",
            "/probe requests refused: forbidden (a target the module may not probe) or "
            "busy (no free /probe slot or resolver thread).",
            ["reason"],
            registry=r,
        )
        for reason in ("forbidden", "busy"):
            self.probe_refused.labels(reason)

    def text(self) -> str:
        return generate_latest(self.registry).decode("utf-8")
