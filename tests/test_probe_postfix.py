"""The probe against a real Postfix (submission with Dovecot SASL, implicit TLS, an expired
and a wrong-host certificate, a plain MX port), started on loopback by the fixture."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from exporter import probe
from exporter.config import AuthConfig, Module, Secret, Target, TLSMode
from exporter.results import FailureKind, Phase
from tests.servers.mailstack import MailStack

pytestmark = pytest.mark.postfix


def target(
    stack: MailStack,
    port: int,
    *,
    user: str | None = "probe",
    password: str | None = None,
    mechanism: str = "auto",
    **module: object,
) -> Target:
    auth = None
    if user is not None:
        auth = AuthConfig(user, Secret(password or stack.users[user]), (mechanism,))
    module.setdefault("tls", TLSMode.STARTTLS)
    module.setdefault("tls_ca_file", str(stack.ca_file))
    module.setdefault("timeout", 10.0)
    mod = Module(name="postfix", auth=auth, **module)  # type: ignore[arg-type]
    return Target(f"{stack.host}:{port}", stack.host, port, mod)


def run(t: Target):
    return asyncio.run(probe.run(t))


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_submission_starttls_sasl(mailstack, mechanism):
    r = run(target(mailstack, mailstack.submission_port, mechanism=mechanism))
    assert r.success, r.failure
    assert r.auth.success and r.auth.mechanism == mechanism
    assert r.tls is not None and r.tls.verified and r.tls.hostname_match
    assert r.tls.version in ("TLSv1.2", "TLSv1.3")
    # Postfix with smtpd_tls_auth_only offers AUTH only after STARTTLS.
    assert "AUTH" in r.extensions and "STARTTLS" not in r.extensions
    assert r.size_limit is not None and r.size_limit > 0
    assert r.greeting_host


def test_submission_offers_no_auth_before_tls(mailstack):
    r = run(target(mailstack, mailstack.submission_port, tls=TLSMode.NONE))
    assert r.failure is not None
    # Our own guard fires first: no credentials without TLS.
    assert (r.failure.phase, r.failure.kind) == (Phase.AUTH, FailureKind.INSECURE)
    insecure = Module(
        name="x",
        tls=TLSMode.NONE,
        timeout=10.0,
        auth=AuthConfig("probe", Secret("probe-pass"), allow_insecure=True),
    )
    r = run(Target("t", mailstack.host, mailstack.submission_port, insecure))
    assert r.failure is not None
    assert (r.failure.phase, r.failure.kind) == (Phase.AUTH, FailureKind.NOT_OFFERED)


def test_wrong_password_535(mailstack):
    r = run(target(mailstack, mailstack.submission_port, password="wrong"))
    f = r.failure
    assert f is not None
    assert (f.phase, f.kind, f.code, f.enhanced) == (Phase.AUTH, FailureKind.REPLY, 535, "5.7.8")
    assert "wrong" not in f.detail


def test_implicit_tls(mailstack):
    r = run(target(mailstack, mailstack.smtps_port, tls=TLSMode.IMPLICIT))
    assert r.success, r.failure
    assert [p.phase for p in r.phases][:3] == [Phase.RESOLVE, Phase.CONNECT, Phase.TLS_HANDSHAKE]


def test_expired_certificate(mailstack):
    strict = run(target(mailstack, mailstack.expired_port))
    f = strict.failure
    assert f is not None and (f.phase, f.kind) == (Phase.TLS_HANDSHAKE, FailureKind.TLS_VERIFY)
    assert "expired" in f.detail.lower()
    assert strict.tls is not None and strict.tls.leaf is not None
    assert strict.tls.leaf.not_after < time.time()
    assert strict.tls.earliest_not_after == strict.tls.leaf.not_after
    lenient = run(target(mailstack, mailstack.expired_port, tls_verify=False))
    assert lenient.success, lenient.failure
    assert lenient.tls is not None and not lenient.tls.verified and lenient.tls.hostname_match


def test_wrong_host_certificate(mailstack):
    strict = run(target(mailstack, mailstack.wronghost_port))
    f = strict.failure
    assert f is not None and (f.phase, f.kind) == (Phase.TLS_HANDSHAKE, FailureKind.TLS_HOSTNAME)
    assert strict.tls is not None and strict.tls.verified and not strict.tls.hostname_match
    assert strict.tls.leaf is not None and strict.tls.leaf.sans == ("DNS:wrong.example",)
    named = run(target(mailstack, mailstack.wronghost_port, tls_server_name="wrong.example"))
    assert named.success, named.failure


def test_mx_port_starttls_without_auth(mailstack):
    r = run(target(mailstack, mailstack.mx_port, user=None))
    assert r.success, r.failure
    assert r.tls is not None and r.tls.verified
    with_auth = run(target(mailstack, mailstack.mx_port))
    assert with_auth.failure is not None
    assert (with_auth.failure.phase, with_auth.failure.kind) == (
        Phase.AUTH,
        FailureKind.NOT_OFFERED,
    )


def test_once_against_postfix(mailstack, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(mailstack.users["probe"] + "\n")
    cfg = tmp_path / "postfix.yml"
    cfg.write_text(f"""
defaults: {{timeout: 10s}}
modules:
  submission:
    tls: starttls
    tls_ca_file: {mailstack.ca_file}
    auth: {{username: probe, password_file: {pw}}}
  smtps:
    tls: implicit
    tls_ca_file: {mailstack.ca_file}
    auth: {{username: probe, password_file: {pw}}}
targets:
  - {{target: "127.0.0.1:{mailstack.submission_port}", module: submission}}
  - {{target: "127.0.0.1:{mailstack.smtps_port}", module: smtps}}
  - {{target: "127.0.0.1:{mailstack.expired_port}", module: submission}}
  - {{target: "127.0.0.1:{mailstack.wronghost_port}", module: submission}}
""")
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "--once", "--config.file", str(cfg), "--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["success"] for r in rows] == [True, True, False, False]
    assert rows[2]["failure_kind"] == "tls_verify" and rows[3]["failure_kind"] == "tls_hostname"
    assert mailstack.users["probe"] not in proc.stdout + proc.stderr
    table = subprocess.run(
        [sys.executable, "-m", "exporter", "--once", "--config.file", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(table.stdout)  # shown with -s; the README's sample output comes from here
