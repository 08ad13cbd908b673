"""A phase that did not run has no value: a probe failing at the TLS handshake exports no
duration for ehlo_tls, auth, noop or quit and no AUTH verdict (AUTH not attempted is not
an AUTH failure), on /metrics, /probe and in the histogram. Against aiosmtpd with
certificates from a CA the module does not trust."""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path

import trustme
from prometheus_client.parser import text_string_to_metric_families

from exporter import probe
from exporter.config import TLSMode
from exporter.embedded import free_port
from exporter.metrics import render_target
from exporter.results import FailureKind, Phase
from exporter.store import Entry

from .conftest import USER, make_target, write_secret
from .exporter_harness import RunningExporter, wait_for

LATER = {"ehlo_tls", "auth", "noop", "quit"}
REACHED = {"resolve", "connect", "greeting", "ehlo", "starttls", "tls_handshake"}


def samples(text: str, **want: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if want.items() <= s.labels.items():
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def values(got: dict, name: str, **want: str) -> list[float]:
    return [
        v for (n, labels), v in got.items() if n == name and want.items() <= dict(labels).items()
    ]


def phases_of(got: dict, name: str) -> set[str]:
    return {dict(labels)["phase"] for n, labels in got if n == name}


def test_tls_handshake_failure_exports_no_later_phase(smtp_server, ca_file, tmp_path: Path):
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    secret = write_secret(tmp_path)
    good, bad = smtp_server(), smtp_server()
    auth = f"auth: {{username: {USER}, password_file: {secret}}}"
    path = tmp_path / "c.yml"
    path.write_text(
        "modules:\n"
        f"  right: {{tls: starttls, tls_ca_file: {ca_file}, timeout: 1s, {auth}}}\n"
        # metrics_detail: the failure counter by phase, every phase from the start
        f"  wrongca: {{tls: starttls, tls_ca_file: {other_ca}, timeout: 1s, {auth},"
        " metrics_detail: true}\n"
        "targets:\n"
        f'  - {{target: "127.0.0.1:{good.port}", module: right, interval: 1s}}\n'
        f'  - {{target: "127.0.0.1:{bad.port}", module: wrongca, interval: 1s}}\n'
    )
    exp = RunningExporter(path).start()
    try:
        assert wait_for(
            lambda: (
                exp.value("smtp_probes_total", module="wrongca") not in (None, 0)
                and exp.value("smtp_probes_total", module="right") not in (None, 0)
            ),
            15,
        )
        text = exp.get("/metrics")[1]
        target = urllib.parse.quote(f"127.0.0.1:{bad.port}")
        status, probed = exp.get(f"/probe?target={target}&module=wrongca")
    finally:
        exp.stop()
    assert status == 200
    for where, body in (("/metrics", text), ("/probe", probed)):
        got = samples(body, module="wrongca")
        assert values(got, "smtp_probe_failed_phase", phase="tls_handshake") == [1], where
        # Only the phases that ran have a duration: none of them 0 for "not reached".
        assert phases_of(got, "smtp_probe_phase_duration_seconds") == REACHED, where
        assert not [k for k in got if k[0] == "smtp_auth_success"], where
    bad_metrics = samples(text, module="wrongca")
    # The failure counters still exist for every phase the module runs (at 0).
    assert values(bad_metrics, "smtp_probe_failures_total", phase="auth") == [0]
    assert values(bad_metrics, "smtp_probe_failures_total", phase="tls_handshake")[0] >= 1
    # The histogram saw only the phases that ran.
    hist = {dict(k[1])["phase"] for k in bad_metrics if k[0] == "smtp_probe_phase_seconds_count"}
    assert hist == REACHED
    # The healthy neighbour keeps every phase and its AUTH verdict; without metrics_detail
    # its one failure counter has no phase.
    good_metrics = samples(text, module="right")
    assert [
        dict(k[1]).get("phase") for k in good_metrics if k[0] == "smtp_probe_failures_total"
    ] == [None]
    assert phases_of(good_metrics, "smtp_probe_phase_duration_seconds") == REACHED | LATER
    assert values(good_metrics, "smtp_auth_success", mechanism="PLAIN") == [1]


def test_auth_that_ran_and_failed_keeps_its_zero(smtp_server, ca_file):
    """The other side of the rule: AUTH that ran and was refused is an AUTH failure."""
    server = smtp_server(users={USER: "another-password"})
    target = make_target(server.port, tls=TLSMode.STARTTLS, tls_ca_file=ca_file)
    r = asyncio.run(probe.run(target))
    assert r.failure is not None
    assert (r.failure.phase, r.failure.kind, r.failure.code) == (Phase.AUTH, FailureKind.REPLY, 535)
    got = samples("".join(render_target(Entry(target, r, probes=1))))
    assert values(got, "smtp_auth_success", mechanism="PLAIN") == [0]
    assert phases_of(got, "smtp_probe_phase_duration_seconds") == REACHED | {"ehlo_tls", "auth"}


def test_connect_refused_has_no_protocol_phases():
    """Nothing listens: resolve and connect ran, nothing else did."""
    port = free_port()  # bound and closed again: nothing listens there
    target = make_target(port, tls=TLSMode.NONE, allow_insecure=True)
    r = asyncio.run(probe.run(target))
    assert r.failure is not None and r.failure.phase is Phase.CONNECT
    got = samples("".join(render_target(Entry(target, r, probes=1))))
    assert phases_of(got, "smtp_probe_phase_duration_seconds") == {"resolve", "connect"}
    assert not [k for k in got if k[0] == "smtp_auth_success"]
