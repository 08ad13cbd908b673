"""Posture checks on the probe's SMTP session: credentials before TLS, open relay."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import probe
from exporter.config import AuthConfig, Module, PostureConfig, Secret, Target, TLSMode
from exporter.results import FailureKind, Phase

from .servers.policy import Policy, PolicyHandler

OUTSIDE = "relay-test@outside.example.net"


def target(port: int, ca_file: str, tls: TLSMode = TLSMode.STARTTLS, **posture) -> Target:
    module = Module(
        "posture", tls=tls, tls_ca_file=ca_file, timeout=5.0, posture=PostureConfig(**posture)
    )
    return Target(f"127.0.0.1:{port}", "127.0.0.1", port, module)


def test_auth_before_tls_found_and_cancelled(smtp_server, ca_file):
    weak = smtp_server(auth_require_tls=False)
    r = asyncio.run(probe.run(target(weak.port, ca_file, auth_before_tls=True)))
    assert r.success, r.failure  # a finding, not a failure
    assert r.posture.auth_advertised_before_tls and r.posture.auth_accepted_before_tls
    assert r.posture.findings
    hardened = smtp_server()  # aiosmtpd offers AUTH only after STARTTLS
    r = asyncio.run(probe.run(target(hardened.port, ca_file, auth_before_tls=True)))
    assert r.success and r.posture.auth_advertised_before_tls is False
    assert r.posture.auth_accepted_before_tls is False and not r.posture.findings


def test_auth_before_tls_can_fail_the_probe(smtp_server, ca_file):
    weak = smtp_server(auth_require_tls=False)
    r = asyncio.run(
        probe.run(target(weak.port, ca_file, auth_before_tls=True, fail_on_findings=True))
    )
    assert r.failure is not None
    # Blamed on the posture, not on STARTTLS: the session went on, every phase passed.
    assert (r.failure.phase, r.failure.kind) == (Phase.POSTURE, FailureKind.FINDING)
    assert "AUTH before TLS" in r.failure.detail
    ran = {t.phase for t in r.phases}
    assert {Phase.STARTTLS, Phase.TLS_HANDSHAKE, Phase.EHLO_TLS, Phase.NOOP, Phase.QUIT} <= ran
    assert r.tls is not None and r.tls.verified


def test_open_relay_fails_the_probe_in_its_own_phase(smtp_server, ca_file, tmp_path):
    """With fail_on_findings an open relay fails the probe as phase posture on every
    surface, while AUTH, NOOP and QUIT keep their success."""
    from exporter.metrics import render_target
    from exporter.store import Entry

    from .conftest import PASSWORD, USER, write_secret

    relay = smtp_server("none", auth_require_tls=False)
    posture = {"relay_from": "probe@example.com", "relay_to": OUTSIDE, "fail_on_findings": True}
    t = target(relay.port, ca_file, TLSMode.NONE, **posture)
    module = replace(
        t.module, auth=AuthConfig(USER, Secret(PASSWORD), ("auto",), allow_insecure=True)
    )
    t = replace(t, module=module)
    r = asyncio.run(probe.run(t))
    assert r.failure is not None
    assert (r.failure.phase, r.failure.kind) == (Phase.POSTURE, FailureKind.FINDING)
    assert r.auth.success and {Phase.AUTH, Phase.NOOP, Phase.QUIT} <= {p.phase for p in r.phases}
    text = "".join(render_target(Entry(t, r, probes=1, failures=((Phase.POSTURE, 1),))))
    got = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float | None:
        base = {"target": t.name, "module": t.module.name, **labels}
        return got.get((name, tuple(sorted(base.items()))))

    code = str(r.last_reply_code)
    assert value("smtp_probe_failed_phase", phase="posture", kind="finding", reply_code=code) == 1
    assert value("smtp_probe_failures_total") == 1
    assert value("smtp_auth_success", mechanism="PLAIN") == 1
    timed = {dict(k[1])["phase"] for k in got if k[0] == "smtp_probe_phase_duration_seconds"}
    assert timed == {"resolve", "connect", "greeting", "ehlo", "auth", "noop", "quit"}

    secret = write_secret(tmp_path)
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"""
modules:
  strict:
    tls: none
    timeout: 5s
    auth: {{username: {USER}, password_file: {secret}, allow_insecure: true}}
    posture: {{relay_test: {{from: probe@example.com, to: {OUTSIDE}}}, fail_on_findings: true}}
targets: [{{target: "127.0.0.1:{relay.port}", module: strict}}]
""")
    once = [sys.executable, "-m", "exporter", "--once", "--config.file", str(cfg)]
    table = subprocess.run(once, capture_output=True, text=True, timeout=30)
    assert table.returncode == 1, table.stderr
    row = table.stdout.splitlines()[1]
    assert "FAIL" in row and "ok PLAIN" in row and "posture: finding: open relay" in row, row
    nagios = subprocess.run(
        [*once, "--output", "nagios"], capture_output=True, text=True, timeout=30
    )
    assert nagios.returncode == 2
    assert "posture failed: finding: open relay" in nagios.stdout.splitlines()[0]


def test_open_relay_detected_never_sends_data(smtp_server, ca_file):
    relay = smtp_server("none")  # aiosmtpd accepts any recipient: an open relay
    r = asyncio.run(
        probe.run(
            target(
                relay.port, ca_file, TLSMode.NONE, relay_from="probe@example.com", relay_to=OUTSIDE
            )
        )
    )
    assert r.success and r.posture.relay_accepted and r.posture.relay_code == 250
    assert relay.messages == []  # MAIL, RCPT, RSET: never DATA
    closed = smtp_server("none", handler=PolicyHandler(Policy(reject_rcpt={OUTSIDE})))
    r = asyncio.run(
        probe.run(
            target(
                closed.port, ca_file, TLSMode.NONE, relay_from="probe@example.com", relay_to=OUTSIDE
            )
        )
    )
    assert r.success and r.posture.relay_accepted is False and r.posture.relay_code == 550


def test_posture_in_once_outputs_and_metrics(smtp_server, ca_file, tmp_path):
    relay = smtp_server("none")
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"""
modules:
  mx:
    tls: none
    timeout: 5s
    posture: {{relay_test: {{from: probe@example.com, to: {OUTSIDE}}}}}
targets: [{{target: "127.0.0.1:{relay.port}", module: mx}}]
""")
    once = [sys.executable, "-m", "exporter", "--once", "--config.file", str(cfg)]
    js = subprocess.run([*once, "--output", "json"], capture_output=True, text=True, timeout=30)
    obj = json.loads(js.stdout)
    assert obj["posture"]["open_relay"] is True and obj["posture"]["findings"]
    nagios = subprocess.run(
        [*once, "--output", "nagios"], capture_output=True, text=True, timeout=30
    )
    assert nagios.returncode == 2 and "open relay" in nagios.stdout
    from exporter.metrics import render_probe
    from exporter.store import Entry

    t = target(relay.port, ca_file, TLSMode.NONE, relay_from="probe@example.com", relay_to=OUTSIDE)
    text = render_probe([Entry(t, asyncio.run(probe.run(t)))])
    assert "smtp_posture_open_relay{target=" in text and "smtp_posture_auth" not in text


@pytest.mark.postfix
def test_hardened_postfix(mailstack):
    sub = target(mailstack.submission_port, str(mailstack.ca_file), auth_before_tls=True)
    r = asyncio.run(probe.run(sub))
    assert r.success, r.failure
    assert r.posture.auth_advertised_before_tls is False
    assert r.posture.auth_accepted_before_tls is False
    mx = target(
        mailstack.mx_port, str(mailstack.ca_file), relay_from="probe@example.com", relay_to=OUTSIDE
    )
    r = asyncio.run(probe.run(mx))
    assert r.success, r.failure
    assert r.posture.relay_accepted is False and r.posture.relay_code == 554
    assert not r.posture.findings


def test_posture_config_rules():
    from exporter import config

    with pytest.raises(config.ConfigError, match=r"posture\.auth_before_tls: needs tls: starttls"):
        config.parse("modules: {m: {tls: implicit, posture: {auth_before_tls: true}}}")
    with pytest.raises(config.ConfigError, match=r"posture.relay_test.to: required"):
        config.parse("modules: {m: {posture: {relay_test: {from: a@b.c}}}}")
