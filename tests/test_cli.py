"""``--once`` end to end, as a user runs it: a subprocess against real embedded servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PASSWORD, USER, write_secret


def once(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "--once", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    return write_secret(tmp_path)


def adhoc(port: int, ca_file: str, secret: Path, *extra: str) -> list[str]:
    return [
        "--target",
        f"127.0.0.1:{port}",
        "--tls",
        "starttls",
        "--tls-ca-file",
        ca_file,
        "--auth-user",
        USER,
        "--auth-password-file",
        str(secret),
        "--log.level",
        "debug",
        *extra,
    ]


def test_table_success_exit_0(smtp_server, ca_file, secret):
    server = smtp_server()
    proc = once(*adhoc(server.port, ca_file, secret))
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.splitlines()[:2]
    assert header.split()[:3] == ["TARGET", "MODULE", "RESULT"]
    assert f"127.0.0.1:{server.port}" in row and " ok " in row and "TLSv1.3" in row
    assert "ok PLAIN" in row
    assert "phase durations (ms)" in proc.stdout
    assert PASSWORD not in proc.stdout + proc.stderr


def test_json_has_documented_fields(smtp_server, ca_file, secret):
    server = smtp_server()
    proc = once(*adhoc(server.port, ca_file, secret), "--output", "json")
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    obj = json.loads(line)
    assert obj["success"] is True and obj["failed_phase"] is None
    assert obj["module"] == "adhoc" and obj["target"] == f"127.0.0.1:{server.port}"
    assert set(obj["phases"]) >= {"connect", "greeting", "tls_handshake", "auth", "quit"}
    assert obj["duration_seconds"] >= sum(obj["phases"].values()) * 0.9
    assert obj["tls"]["verified"] is True and obj["tls"]["hostname_match"] is True
    assert isinstance(obj["tls"]["cert_not_after"], float)
    assert obj["auth"] == {"attempted": True, "success": True, "mechanism": "PLAIN"}


def test_wrong_password_exit_1_and_secret_never_shown(smtp_server, ca_file, tmp_path):
    server = smtp_server()
    wrong = write_secret(tmp_path, "not-the-" + PASSWORD)
    for output in ("table", "json"):
        proc = once(*adhoc(server.port, ca_file, wrong), "--output", output)
        assert proc.returncode == 1
        assert "535" in proc.stdout and "auth" in proc.stdout
        assert "not-the-" not in proc.stdout + proc.stderr
    obj = json.loads(once(*adhoc(server.port, ca_file, wrong), "--output", "json").stdout)
    assert (obj["failed_phase"], obj["reply_code"], obj["enhanced_status"]) == (
        "auth",
        535,
        "5.7.8",
    )


def test_nagios_states(smtp_server, ca_file, secret, tmp_path):
    server = smtp_server()
    ok = once(*adhoc(server.port, ca_file, secret), "--output", "nagios")
    assert ok.returncode == 0 and ok.stdout.startswith("SMTP OK - ")
    assert "'time'=" in ok.stdout and "'cert_days'=" in ok.stdout
    # trustme certificates outlive us all (~1000 years): a million-day threshold warns.
    warn = once(
        *adhoc(server.port, ca_file, secret),
        "--output",
        "nagios",
        "--warning.cert-days",
        "1000000",
        "--critical.cert-days",
        "1",
    )
    assert warn.returncode == 1 and warn.stdout.startswith("SMTP WARNING")
    bad = once(*adhoc(server.port, ca_file, write_secret(tmp_path, "x")), "--output", "nagios")
    assert bad.returncode == 2 and bad.stdout.startswith("SMTP CRITICAL") and "auth" in bad.stdout
    unknown = once("--config.file", str(tmp_path / "missing.yml"), "--output", "nagios")
    assert unknown.returncode == 3 and unknown.stdout.startswith("SMTP UNKNOWN")


def test_config_file_mixed_results(smtp_server, ca_file, secret, tmp_path):
    good, plain = smtp_server(), smtp_server("none")
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"""
modules:
  sub: {{tls: starttls, tls_ca_file: {ca_file}, timeout: 3s,
         auth: {{username: {USER}, password_file: {secret}}}}}
targets:
  - {{target: "127.0.0.1:{good.port}", module: sub}}
  - {{target: "127.0.0.1:{plain.port}", module: sub}}
""")
    proc = once("--config.file", str(cfg), "--output", "json")
    assert proc.returncode == 1
    first, second = (json.loads(line) for line in proc.stdout.splitlines())
    assert first["success"] is True
    assert (second["failed_phase"], second["failure_kind"]) == ("starttls", "tls_unavailable")


def test_config_error_exit_2_names_file_and_key(tmp_path):
    cfg = tmp_path / "bad.yml"
    cfg.write_text("modules: {m: {}}\ntargets: [{target: a, module: submision}]\n")
    proc = once("--config.file", str(cfg))
    assert proc.returncode == 2
    assert f"{cfg}: targets[0].module: unknown module 'submision'" in proc.stderr


def test_usage_error_exit_2():
    assert once().returncode == 2
    assert once("--target", "a:1", "--tls", "bogus").returncode == 2


def test_password_env(smtp_server, ca_file):
    import os

    server = smtp_server()
    env = {**os.environ, "PROBE_PW": PASSWORD}
    proc = once(
        "--target",
        f"127.0.0.1:{server.port}",
        "--tls-ca-file",
        ca_file,
        "--auth-user",
        USER,
        "--auth-password-env",
        "PROBE_PW",
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_demo_once():
    proc = once("--demo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo-password" not in proc.stdout + proc.stderr
