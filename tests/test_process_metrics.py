"""The exporter's own process on /metrics (process_*, python_info, as client_python's
collectors write them), and --web.disable-exporter-metrics turning them off, as in
node_exporter. Run as a user runs it: the CLI in a subprocess, scraped over HTTP."""

from __future__ import annotations

import gzip
import platform
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter.embedded import free_port
from exporter.selfmetrics import PROCESS_METRICS

from .exporter_harness import wait_for

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def exporter(tmp_path: Path, *flags: str) -> Iterator[tuple[int, int]]:
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        "modules: {plain: {tls: none, timeout: 1s}}\n"
        f"targets: [{{target: '127.0.0.1:{free_port()}', module: plain, interval: 1s}}]\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "exporter", "--config.file", str(cfg)),
            *("--web.listen-address", f"127.0.0.1:{port}", *flags),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: scrape(port) is not None, 20)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(20)


def scrape(port: int, gzipped: bool = False) -> dict[str, dict[tuple, float]] | None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if gzipped:
        req.add_header("Accept-Encoding", "gzip")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
            if resp.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
    except OSError:
        return None
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(samples: dict[str, dict[tuple, float]], name: str) -> float:
    (value,) = samples[name].values()
    return value


def test_process_metrics_present(tmp_path):
    before = time.time()
    with exporter(tmp_path) as (port, pid):
        for gzipped in (False, True):
            s = scrape(port, gzipped)
            assert s is not None
            assert set(PROCESS_METRICS) <= set(s), sorted(set(PROCESS_METRICS) - set(s))
            # They describe the exporter's process, not the test's.
            start = one(s, "process_start_time_seconds")
            assert before - 60 <= start <= time.time()
            assert one(s, "process_cpu_seconds_total") > 0
            with open(f"/proc/{pid}/limits") as limits:
                soft = next(ln.split()[3] for ln in limits if ln.startswith("Max open files"))
            assert one(s, "process_max_fds") == float(soft)
            assert one(s, "process_resident_memory_bytes") > 1 << 20
            open_fds = one(s, "process_open_fds")
            assert open_fds >= 3  # stdio and the listening socket, at least
            assert open_fds < one(s, "process_max_fds")
            ((labels, value),) = s["python_info"].items()
            assert value == 1 and dict(labels)["version"] == platform.python_version()
            assert "smtp_exporter_build_info" in s


def test_disable_exporter_metrics(tmp_path):
    with exporter(tmp_path, "--web.disable-exporter-metrics") as (port, _):
        for gzipped in (False, True):
            s = scrape(port, gzipped)
            assert s is not None
            leaked = sorted(n for n in s if n.startswith(("process_", "python_")))
            assert leaked == []
            # Only the process and interpreter go: the exporter's own health stays.
            assert one(s, "smtp_exporter_config_last_reload_successful") == 1


def test_process_metrics_documented():
    doc = (ROOT / "docs" / "metrics.md").read_text()
    for name in PROCESS_METRICS:
        assert f"`{name}`" in doc, name
    assert "--web.disable-exporter-metrics" in doc
