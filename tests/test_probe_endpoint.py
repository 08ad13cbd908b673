"""Probe on demand (/probe, the multi-target exporter pattern) and sharding."""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Module, Target
from exporter.scheduler import in_shard

from .conftest import USER, _in_ci, write_secret
from .exporter_harness import RunningExporter, wait_for


@pytest.fixture
def exporter(tmp_path, ca_file):
    started: list[RunningExporter] = []

    def start(targets: str = "targets: []", **kw) -> RunningExporter:
        secret = write_secret(tmp_path)
        cfg = tmp_path / "c.yml"
        cfg.write_text(f"""
defaults: {{module: sub}}
modules:
  sub: {{tls: starttls, tls_ca_file: {ca_file}, timeout: 10s,
         auth: {{username: {USER}, password_file: {secret}}},
         probe_allow: {{networks: [127.0.0.0/8]}}}}
  plain: {{tls: none, timeout: 10s}}
{targets}
""")
        exp = RunningExporter(cfg, **kw).start()
        started.append(exp)
        return exp

    yield start
    for exp in started:
        exp.stop()


def probe(exp: RunningExporter, query: str, timeout_header: str | None = None):
    req = urllib.request.Request(f"{exp.url}/probe?{query}")
    if timeout_header:
        req.add_header("X-Prometheus-Scrape-Timeout-Seconds", timeout_header)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def values(text: str) -> dict[str, float]:
    return {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name != "smtp_probe_phase_duration_seconds"
    }


def test_probe_endpoint_success_and_failure(exporter, smtp_server):
    good, bad = smtp_server(), smtp_server(users={USER: "other"})
    exp = exporter()
    status, text = probe(exp, f"target=127.0.0.1:{good.port}&module=sub")
    assert status == 200
    v = values(text)
    assert v["smtp_probe_success"] == 1 and v["smtp_tls_chain_verified"] == 1
    assert "smtp_probes_total" not in v  # counters mean nothing for one probe
    status, text = probe(exp, f"target=127.0.0.1:{bad.port}")  # defaults.module
    assert status == 200 and values(text)["smtp_probe_success"] == 0
    assert 'phase="auth",kind="reply"' in text


def test_probe_endpoint_bad_requests(exporter):
    exp = exporter()
    assert probe(exp, "module=sub")[0] == 400
    status, body = probe(exp, "target=a:1&module=nope")
    assert status == 400 and "unknown module" in body
    assert probe(exp, "target=a:99999&module=sub")[0] == 400
    assert probe(exp, "target=a:1", timeout_header="soon")[0] == 400


def test_probe_honours_scrape_timeout(exporter, server_context):
    from .servers.fault import FaultServer

    exp = exporter()
    with FaultServer("tarpit_greeting", ssl_context=server_context) as tarpit:
        start = time.monotonic()
        status, text = probe(exp, f"target=127.0.0.1:{tarpit.port}&module=plain", "2")
        elapsed = time.monotonic() - start
    assert status == 200
    assert values(text)["smtp_probe_success"] == 0
    assert 'phase="greeting",kind="timeout"' in text
    # 2 s scrape timeout minus the 0.5 s offset, not the module's 10 s.
    assert 1.4 <= elapsed < 2.0, elapsed


def test_real_prometheus_drives_probes_through_relabelling(exporter, smtp_server, tmp_path):
    from .servers.prometheus import prometheus, prometheus_available

    reason = prometheus_available()
    if reason:
        if _in_ci():
            pytest.fail(reason)
        pytest.skip(f"SKIPPING real-Prometheus test -- {reason}")
    good, bad = smtp_server(), smtp_server(users={USER: "other"})
    exp = exporter()
    scrape = f"""  - job_name: smtp_probe
    metrics_path: /probe
    params: {{module: [sub]}}
    static_configs:
      - targets: ['127.0.0.1:{good.port}', '127.0.0.1:{bad.port}']
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: 127.0.0.1:{exp.port}
"""
    with prometheus(tmp_path / "prom", scrape) as prom:
        assert wait_for(lambda: len(prom.query("smtp_probe_success")) == 2, 20), prom.log()
        got = {r["metric"]["instance"]: r["value"][1] for r in prom.query("smtp_probe_success")}
        assert got == {f"127.0.0.1:{good.port}": "1", f"127.0.0.1:{bad.port}": "0"}
        assert all(t["health"] == "up" for t in prom.targets())


def test_shards_cover_every_target_exactly_once():
    module = Module("m")
    targets = [
        Target(f"host{i}.example.com:25", f"host{i}.example.com", 25, module) for i in range(2000)
    ]
    for n in (1, 2, 3, 5, 8):
        owners = [[i for i in range(n) if in_shard(t, (i, n))] for t in targets]
        assert all(len(o) == 1 for o in owners)
        sizes = [sum(1 for o in owners if o == [i]) for i in range(n)]
        assert min(sizes) > len(targets) / n * 0.8  # roughly even


def test_sharded_exporters_split_the_targets(exporter, smtp_server):
    servers = [smtp_server("none") for _ in range(6)]
    targets = "targets:\n" + "".join(
        f'  - {{target: "127.0.0.1:{s.port}", module: plain, interval: 10s}}\n' for s in servers
    )
    shards = [exporter(targets, shard=(i, 3)) for i in range(3)]
    seen: list[str] = []
    for exp in shards:
        count = exp.value("smtp_exporter_targets")
        assert count is not None
        names = [dict(k[1])["target"] for k in exp.samples() if k[0] == "smtp_probes_total"]
        assert len(names) == count
        seen += names
    assert sorted(seen) == sorted(f"127.0.0.1:{s.port}" for s in servers)
