"""An mx: target whose domain does not resolve (NXDOMAIN, SERVFAIL, no answer) or publishes a
null MX is a failed result of its own, phase mx_lookup, on every surface: --once (table,
JSON, Nagios, exit code), /probe, /metrics, the landing page. Against the dnslib server on
loopback and, for the healthy neighbour, aiosmtpd."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.discovery import expand, make_resolver
from exporter.metrics import Renderer
from exporter.results import FailureKind, Phase
from exporter.scheduler import offset_fraction
from exporter.store import ResultStore

from .exporter_harness import RunningExporter, wait_for
from .servers.dns import DNSServer

DNS_TIMEOUT = 1.0


@dataclass(frozen=True)
class Case:
    target: str
    kind: FailureKind
    lookup_success: int  # smtp_mx_lookup_success: a null MX is an answer
    reason: str  # in the failure's detail


CASES = {
    "nxdomain": Case("mx:missing.test", FailureKind.NXDOMAIN, 0, "NXDOMAIN"),
    "servfail": Case("mx:broken.test", FailureKind.DNS, 0, "SERVFAIL"),
    "timeout": Case("mx:silent.test", FailureKind.TIMEOUT, 0, "no answer within 1s"),
    "null_mx": Case("mx:nomail.test", FailureKind.NULL_MX, 1, "accepts no mail"),
}
ZONE = """
nomail.test. 300 IN MX 0 .
good.test. 300 IN MX 10 mx1.good.test.
mx1.good.test. 300 IN A 127.0.0.1
"""


@pytest.fixture
def dns(dns_server) -> DNSServer:
    return dns_server(ZONE, servfail=["broken.test"], drop=["silent.test"])


def config_text(dns: DNSServer, targets: list[str], *, port: int = 25, interval: str = "1s") -> str:
    lines = "".join(f'  - {{target: "{t}", module: mx, interval: {interval}}}\n' for t in targets)
    return (
        f'dns: {{nameservers: ["127.0.0.1:{dns.port}"], timeout: {DNS_TIMEOUT:g}s}}\n'
        f"modules:\n  mx: {{tls: none, port: {port}, timeout: 1s}}\n"
        f"targets:\n{lines}"
    )


def once(path: Path, output: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "--once",
            "--config.file",
            str(path),
            "--output",
            output,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def lookup_samples(text: str, target: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of ``target`` as configured (not of any MX host), labels but target,
    module and job-level ones."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = dict(s.labels)
            if labels.pop("target", None) != target or "mx_host" in labels:
                continue
            labels.pop("module", None)
            out[(s.name, tuple(sorted(labels.items())))] = s.value
    return out


# --------------------------------------------------------------------------- --once


@pytest.mark.parametrize("name", CASES)
def test_once_reports_a_failed_lookup_on_every_output(name, dns, tmp_path):
    case = CASES[name]
    path = tmp_path / "c.yml"
    path.write_text(config_text(dns, [case.target]))

    table = once(path, "table")
    assert table.returncode == 1, table.stdout + table.stderr
    (row,) = [line for line in table.stdout.splitlines() if line.startswith(case.target)][:1]
    assert " FAIL " in row and f"mx_lookup: {case.kind}: " in row and case.reason in row, row

    out = once(path, "json")
    assert out.returncode == 1, out.stderr
    (obj,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert obj["target"] == case.target and obj["success"] is False
    assert (obj["failed_phase"], obj["failure_kind"]) == ("mx_lookup", case.kind.value)
    assert case.reason in obj["reason"]
    assert list(obj["phases"]) == ["mx_lookup"]  # the only phase that ran
    assert obj["auth"]["attempted"] is False and obj["tls"] is None

    nagios = once(path, "nagios")
    assert nagios.returncode == 2, nagios.stdout  # CRITICAL, never "no targets configured"
    first = nagios.stdout.splitlines()[0]
    assert first.startswith(f"SMTP CRITICAL - {case.target}: mx_lookup failed: {case.kind}: ")
    assert case.reason in first


def test_once_a_failed_lookup_beside_a_healthy_domain(dns, smtp_server, tmp_path):
    """One bad domain among good ones still fails the run, and the good one stays ok."""
    server = smtp_server("none")
    path = tmp_path / "c.yml"
    path.write_text(config_text(dns, ["mx:good.test", "mx:missing.test"], port=server.port))
    out = once(path, "json")
    assert out.returncode == 1, out.stderr
    objs = {
        (o["target"], o["labels"].get("mx_host")): o
        for o in map(json.loads, out.stdout.splitlines())
    }
    assert objs[("mx:good.test", "mx1.good.test")]["success"] is True
    assert objs[("mx:missing.test", None)]["failure_kind"] == "nxdomain"
    assert len(objs) == 2  # no lookup row for the domain that resolved


# --------------------------------------------------------------------------- exporter


def probe(
    exp: RunningExporter, target: str, scrape_timeout: float | None = None
) -> tuple[int, str]:
    req = urllib.request.Request(f"{exp.url}/probe?target={target}&module=mx")
    if scrape_timeout is not None:
        req.add_header("X-Prometheus-Scrape-Timeout-Seconds", str(scrape_timeout))
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read().decode()


def test_exporter_shows_every_failed_lookup(dns, smtp_server, tmp_path):
    """/metrics, /probe and the landing page, for each case and a healthy mx: neighbour."""
    server = smtp_server("none")
    path = tmp_path / "c.yml"
    targets = [c.target for c in CASES.values()]
    path.write_text(config_text(dns, [*targets, "mx:good.test"], port=server.port))
    exp = RunningExporter(path).start()
    try:

        def every_lookup_recorded() -> bool:
            text = exp.get("/metrics")[1]
            return (
                all(
                    lookup_samples(text, t).get(("smtp_probe_success", ())) is not None
                    for t in targets
                )
                and exp.value("smtp_probe_success", mx_host="mx1.good.test") == 1
            )

        assert wait_for(every_lookup_recorded, 15)
        text = exp.get("/metrics")[1]
        for name, case in CASES.items():
            got = lookup_samples(text, case.target)
            failed = (
                "smtp_probe_failed_phase",
                (("kind", case.kind.value), ("phase", "mx_lookup"), ("reply_code", "")),
            )
            assert got[("smtp_probe_success", ())] == 0, name
            assert got[failed] == 1, name
            assert got[("smtp_mx_lookup_success", ())] == case.lookup_success, name
            assert got[("smtp_mx_null", ())] == (1 if name == "null_mx" else 0), name
            assert got[("smtp_probe_failures_total", ())] == 1, name
            durations = {k[1] for k in got if k[0] == "smtp_probe_phase_duration_seconds"}
            assert durations == {(("phase", "mx_lookup"),)}, (name, durations)
            assert ("smtp_auth_success", (("mechanism", ""),)) not in got
        # A healthy domain raises nothing: no series for it as configured but the lookup's.
        good = lookup_samples(text, "mx:good.test")
        assert {k[0] for k in good} == {
            "smtp_mx_lookup_success",
            "smtp_mx_null",
            "smtp_mx_implicit",
            "smtp_mx_hosts",
            "smtp_mx_lookup_timestamp_seconds",
        }
        assert good[("smtp_mx_lookup_success", ())] == 1

        status, page = exp.get("/")
        assert status == 200
        for case in CASES.values():
            assert f"<td>{case.target}</td>" in page
            assert f"mx_lookup: {case.kind}: " in page
        assert "mx:good.test mx1.good.test" in page

        for name, case in CASES.items():
            status, body = probe(exp, case.target)
            assert status == 200 and body, name
            got = lookup_samples(body, case.target)
            assert got[("smtp_probe_success", ())] == 0, name
            assert (
                got[
                    (
                        "smtp_probe_failed_phase",
                        (("kind", case.kind.value), ("phase", "mx_lookup"), ("reply_code", "")),
                    )
                ]
                == 1
            ), name
            assert got[("smtp_mx_lookup_success", ())] == case.lookup_success, name
            assert got[("smtp_mx_null", ())] == (1 if name == "null_mx" else 0), name
        status, body = probe(exp, "mx:good.test")
        assert lookup_samples(body, "mx:good.test")[("smtp_mx_lookup_success", ())] == 1
        assert 'smtp_probe_success{target="mx:good.test",module="mx",mx_host=' in body
        assert "smtp_probe_failed_phase" in body and 'phase="mx_lookup"' not in body
    finally:
        exp.stop()
    assert not dns.errors


def test_probe_lookup_cut_by_the_scrape_timeout(dns_server, tmp_path):
    """A lookup longer than Prometheus's scrape timeout allows fails as a timeout within
    it, not as an empty answer."""
    dns = dns_server(ZONE, drop=["silent.test"])
    path = tmp_path / "c.yml"
    text = config_text(dns, ["mx:good.test"], interval="1h").replace(
        f"timeout: {DNS_TIMEOUT:g}s}}", "timeout: 5s}", 1
    )
    path.write_text(text)
    exp = RunningExporter(path).start()
    exp.exporter.timeout_offset = 0.5
    try:
        start = time.monotonic()
        status, body = probe(exp, "mx:silent.test", scrape_timeout=1.5)
        elapsed = time.monotonic() - start
    finally:
        exp.stop()
    assert status == 200
    got = lookup_samples(body, "mx:silent.test")
    assert got[("smtp_probe_success", ())] == 0
    failed = (("kind", "timeout"), ("phase", "mx_lookup"), ("reply_code", ""))
    assert got[("smtp_probe_failed_phase", failed)] == 1
    assert got[("smtp_mx_lookup_success", ())] == 0
    assert elapsed < 4.0  # 1 s budget (+ slack), not the resolver's 5 s


def test_landing_page_lists_mx_targets_not_looked_up_yet(dns, tmp_path):
    target = "mx:good.test"
    cfg = config.parse(config_text(dns, [target], interval="1h"))
    # Its first run is this far into the hour: long after the page is read.
    assert offset_fraction(cfg.targets[0]) * 3600 > 60
    path = tmp_path / "c.yml"
    path.write_text(config_text(dns, [target], interval="1h"))
    exp = RunningExporter(path).start()
    try:
        page = exp.get("/")[1]
    finally:
        exp.stop()
    assert f"<tr class=pending><td>{target}</td><td>mx</td><td>pending</td>" in page


def test_lookup_result_goes_when_the_domain_resolves_again(dns):
    """Scheduler path: the store records a failed lookup at once and drops it when a later
    lookup succeeds; the renderer follows."""
    cfg = config.parse(config_text(dns, ["mx:late.test"], port=2525))
    (target,) = cfg.targets
    resolver = make_resolver(cfg.dns)
    store = ResultStore()
    renderer = Renderer(store)
    store.set_targets([target])
    failed = asyncio.run(expand(target, resolver))
    assert failed.lookup is not None and failed.lookup.failure is not None
    assert failed.lookup.failure.phase is Phase.MX_LOOKUP
    store.set_expansion(failed)
    text = renderer.render()
    assert lookup_samples(text, "mx:late.test")[("smtp_probe_success", ())] == 0
    dns.set_zone(ZONE + "late.test. 300 IN MX 10 mx1.good.test.\n")
    found = asyncio.run(expand(target, resolver, failed))
    assert found.ok and found.lookup is None
    store.set_expansion(found)
    text = renderer.render()
    assert ("smtp_probe_success", ()) not in lookup_samples(text, "mx:late.test")
    assert [dict(e.target.labels).get("mx_host") for e in store.entries()] == ["mx1.good.test"]
