"""A real Prometheus (Debian package) on 127.0.0.1 for tests, with its own config and TSDB."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from exporter.embedded import free_port


def prometheus_available() -> str | None:
    return None if shutil.which("prometheus") else "prometheus binary not installed"


class Prometheus:
    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as resp:
            return json.load(resp)["data"]["activeTargets"]

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-3000:]

    def rule_evaluations(self) -> int:
        """How many times the least-evaluated rule group has been evaluated, from
        Prometheus's own /metrics: wait for this to grow instead of sleeping through
        "a few evaluations"."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        counts = [
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "prometheus_rule_group_iterations_total"
        ]
        return int(min(counts)) if counts else 0


@contextmanager
def prometheus(
    workdir: Path, scrape_configs: str, rule_files: tuple[Path, ...] = ()
) -> Iterator[Prometheus]:
    """Start Prometheus scraping per ``scrape_configs`` (YAML list items, indented two
    spaces) and evaluating ``rule_files``, wait until it is ready, stop it afterwards."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "prometheus.yml"
    rules = "".join(f"  - '{path}'\n" for path in rule_files)
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        + (f"rule_files:\n{rules}" if rules else "")
        + "scrape_configs:\n"
        + scrape_configs
    )
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={cfg}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    prom = Prometheus(port, workdir)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {proc.returncode}: {prom.log()}")
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready after 30 s: {prom.log()}")
            time.sleep(0.2)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
