"""Prometheus drives the fleet: /sd lists the targets, two Prometheus shards split them
with hashmod and send /probe to two exporters behind a load balancer; one exporter is
replaced in a rolling restart while they run.

"Exactly once per interval" is counted where the probes land: one SMTP listener per target
logs every connection, whichever exporter made it. A lost probe is a gap of more than one
interval between two connections to a target (a failed scrape makes no connection, or an
unfinished one: it is also counted from Prometheus's ``up``); a duplicate is a gap of
less than half an interval (a target both shards scrape).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.embedded import free_port

from .conftest import _in_ci
from .exporter_harness import RunningExporter, wait_for
from .servers.balancer import Balancer
from .servers.prometheus import prometheus, prometheus_available
from .servers.smtpcount import CountingSMTP

ROOT = Path(__file__).resolve().parents[1]
TARGETS = 200
INTERVAL = 3.0  # seconds between scrapes of a target
WINDOW = 5  # intervals measured, the restart in the middle of them


def write_config(path: Path, ports: list[int]) -> Path:
    lines = ["modules:", "  plain: {tls: none, timeout: 2s}", "targets:"]
    lines += [
        f'  - {{target: "127.0.0.1:{p}", module: plain, labels: {{rack: r{i % 4}}}}}'
        for i, p in enumerate(ports)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sd_lists_every_target_with_module_and_labels(tmp_path):
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        "modules:\n  a: {tls: none}\n  b: {tls: none}\n"
        "targets:\n"
        "  - {target: 'm1.example.com:25', module: a, labels: {site: par}}\n"
        "  - {target: 'm2.example.com:25', module: a, labels: {site: par}}\n"
        "  - {target: 'mx:example.org', module: b}\n"
    )
    exp = RunningExporter(cfg).start()
    try:
        status, body = exp.get("/sd")
    finally:
        exp.stop()
    assert status == 200
    assert json.loads(body) == [
        {
            "targets": ["m1.example.com:25", "m2.example.com:25"],
            "labels": {"module": "a", "__param_module": "a", "site": "par"},
        },
        {"targets": ["mx:example.org"], "labels": {"module": "b", "__param_module": "b"}},
    ]


def sample(url: str, name: str) -> float:
    """The value of the one sample called ``name`` at ``url``."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    (value,) = [
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    ]
    return value


def test_no_scheduler_lists_targets_but_probes_only_when_asked(tmp_path):
    with CountingSMTP(2) as smtp:
        cfg = tmp_path / "c.yml"
        cfg.write_text(
            "modules:\n  plain: {tls: none, timeout: 1s}\ntargets:\n"
            + "".join(
                f"  - {{target: '127.0.0.1:{p}', module: plain, interval: 1s}}\n"
                for p in smtp.ports
            )
        )
        with exporter_process(cfg, tmp_path) as port:
            url = f"http://127.0.0.1:{port}"
            time.sleep(2.5)  # two intervals and more: a scheduler would have probed both
            assert sum(len(v) for v in smtp.connections.values()) == 0
            with urllib.request.urlopen(f"{url}/sd", timeout=10) as r:
                listed = json.load(r)[0]["targets"]
            assert listed == [f"127.0.0.1:{p}" for p in smtp.ports]
            assert sample(f"{url}/metrics", "smtp_exporter_targets") == 0
            target = f"127.0.0.1:{smtp.ports[0]}"
            assert sample(f"{url}/probe?target={target}", "smtp_probe_success") == 1
            assert len(smtp.connections[smtp.ports[0]]) == 1


@contextmanager
def exporter_process(config: Path, workdir: Path) -> Iterator[int]:
    """``python -m exporter --no-scheduler`` on a free port, ready; SIGTERM at the end."""
    port = free_port()
    log = (workdir / f"exporter-{port}.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--no-scheduler",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        assert wait_for(ready, 30), (workdir / f"exporter-{port}.log").read_text()
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def shard_scrape_config(shard: int, lb_port: int) -> str:
    """Shard ``shard`` of 2: targets from /sd and /probe requests, both through the
    balancer (the Kubernetes Service), so a replica's restart interrupts neither."""
    return f"""\
  - job_name: smtp_probe
    scrape_interval: {INTERVAL:g}s
    scrape_timeout: 2s
    metrics_path: /probe
    http_sd_configs:
      - url: http://127.0.0.1:{lb_port}/sd
        refresh_interval: 5s
    relabel_configs:
      - source_labels: [__address__]
        modulus: 2
        target_label: __tmp_shard
        action: hashmod
      - source_labels: [__tmp_shard]
        regex: '{shard}'
        action: keep
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: 127.0.0.1:{lb_port}
"""


def test_two_shards_probe_every_target_once_per_interval_across_a_restart(tmp_path):
    reason = prometheus_available()
    if reason:
        if _in_ci():
            pytest.fail(f"{reason} (CI is set)", pytrace=False)
        pytest.skip(f"SKIPPING -- {reason}")
    with ExitStack() as stack:
        smtp = stack.enter_context(CountingSMTP(TARGETS))
        config = write_config(tmp_path / "config.yml", smtp.ports)
        lb = stack.enter_context(Balancer())
        e0 = stack.enter_context(exporter_process(config, tmp_path))
        e1 = ExitStack()
        e1_port = e1.enter_context(exporter_process(config, tmp_path))
        lb.add(e0)
        lb.add(e1_port)
        shards = [
            stack.enter_context(prometheus(tmp_path / f"prom{i}", shard_scrape_config(i, lb.port)))
            for i in range(2)
        ]

        def all_scraped() -> bool:
            return all(len(smtp.connections[p]) >= 2 for p in smtp.ports)

        assert wait_for(all_scraped, 30), "not every target probed twice within 30 s"
        # Each target belongs to exactly one shard.
        per_shard = [
            {t["labels"]["instance"] for t in prom.targets() if t["health"] == "up"}
            for prom in shards
        ]
        assert not per_shard[0] & per_shard[1]
        assert len(per_shard[0] | per_shard[1]) == TARGETS
        assert min(map(len, per_shard)) > TARGETS // 4  # hashmod spread them

        start = time.time()
        time.sleep(INTERVAL * WINDOW / 2 - INTERVAL)
        # Rolling restart of e1: out of rotation, drained, stopped, a new one started and
        # put back in, as a Deployment does it with readiness and a preStop delay.
        restart_at = time.time()
        served_before = lb.served[e1_port]
        lb.remove(e1_port)
        lb.drain(e1_port)
        e1.close()
        new_port = e1.enter_context(exporter_process(config, tmp_path))
        lb.add(new_port)
        restarted_at = time.time()
        time.sleep(max(0.0, start + INTERVAL * WINDOW - time.time()))
        end = time.time()
        time.sleep(INTERVAL)  # the probe after the window, so every gap inside is closed
        errors = lb.errors
        lb.remove(new_port)
        lb.drain(new_port)
        e1.close()
        # Failed scrapes over the window, in each Prometheus: scrapes minus successes.
        span, ago = int(end - start) + 1, int(time.time() - end)
        window = f'up{{job="smtp_probe"}}[{span}s] offset {ago}s'
        failed = [
            prom.query(f"sum(count_over_time({window}) - sum_over_time({window}))")
            for prom in shards
        ]

    lost, duplicated, counts = [], [], []
    for port in smtp.ports:
        times = [t for t in smtp.connections[port] if start - INTERVAL <= t <= end + INTERVAL]
        inside = [t for t in times if start <= t < end]
        counts.append(len(inside))
        for a, b in itertools.pairwise(times):
            if b - a > 1.5 * INTERVAL:
                lost.append((port, a, b))
            elif b - a < 0.5 * INTERVAL:
                duplicated.append((port, a, b))
    print(
        f"\n{TARGETS} targets, {INTERVAL:g}s interval, {end - start:.1f}s window: probes per "
        f"target {min(counts)}..{max(counts)}; restart took {restarted_at - restart_at:.1f}s; "
        f"old replica served {served_before}, new {lb.served[new_port]}; lost {len(lost)}, "
        f"duplicated {len(duplicated)}; balancer errors {errors}"
    )
    assert lb.served[new_port] > 0 and served_before > 0
    assert lost == [] and duplicated == []
    assert min(counts) >= WINDOW - 1 and max(counts) <= WINDOW + 1
    assert errors == 0
    assert [float(r["value"][1]) for result in failed for r in result] == [0, 0], failed
