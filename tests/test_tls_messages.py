"""What a failed certificate check says, against real STARTTLS servers (aiosmtpd) with
trustme certificates: the message names what is wrong and what to do, and the table's
VERIFY column tells an expired certificate from an untrusted one."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import subprocess
import sys
from collections.abc import Iterator

import pytest
import trustme

from exporter import probe
from exporter.embedded import EmbeddedSMTPServer
from exporter.results import FailureKind, ProbeResult

from .conftest import make_target

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def expired_server(ca: trustme.CA) -> Iterator[EmbeddedSMTPServer]:
    """A certificate for 127.0.0.1 from the session's CA that expired 90 days ago."""
    leaf = ca.issue_cert(
        "127.0.0.1",
        "localhost",
        not_before=NOW - dt.timedelta(days=400),
        not_after=NOW - dt.timedelta(days=90),
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    with EmbeddedSMTPServer(tls="starttls", ssl_context=ctx, users={}) as server:
        yield server


def run(port: int, **module: object) -> ProbeResult:
    return asyncio.run(probe.run(make_target(port, password=None, **module)))


def detail(r: ProbeResult, kind: FailureKind) -> str:
    assert r.failure is not None and r.failure.kind is kind, r.failure
    return r.failure.detail


def test_untrusted_issuer_says_no_path_and_points_at_the_ca_file(smtp_server):
    server = smtp_server("starttls")
    text = detail(run(server.port), FailureKind.TLS_VERIFY)  # trustme's CA: not in the system
    assert "candidates exhausted" not in text
    assert "no path to a trusted root" in text and "system trust store" in text
    assert "tls_ca_file (--tls-ca-file)" in text
    assert "'OU=Testing CA #" in text  # the issuer the chain ends at (trustme's CA)
    assert len(text) <= 256  # whole, not clipped by the probe's detail limit


def test_expired_under_a_trusted_ca_says_expired_only(expired_server, ca_file):
    text = detail(run(expired_server.port, tls_ca_file=ca_file), FailureKind.TLS_VERIFY)
    assert "certificate expired on " in text and "no path" not in text, text
    assert "not trusted" not in text


def test_expired_and_untrusted_says_both(expired_server):
    text = detail(run(expired_server.port), FailureKind.TLS_VERIFY)
    assert "certificate expired on " in text and "no path to a trusted root either" in text


def test_hostname_mismatch_names_the_certificates_names(smtp_server, ca_file):
    server = smtp_server("starttls")
    r = run(server.port, tls_ca_file=ca_file, tls_server_name="mail.example.org")
    text = detail(r, FailureKind.TLS_HOSTNAME)
    assert text == "certificate does not match 'mail.example.org': it names localhost, 127.0.0.1"


def once_table(port: int, ca_file: str | None) -> str:
    args = [sys.executable, "-m", "exporter", "--once", "--target", f"127.0.0.1:{port}"]
    args += ["--tls", "starttls", *(["--tls-ca-file", ca_file] if ca_file else [])]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return proc.stdout.splitlines()[1]


def test_verify_column_tells_expired_from_untrusted(expired_server, smtp_server, ca_file):
    expired = once_table(expired_server.port, ca_file).split()
    assert expired[6] == "expired" and "no-chain" not in expired
    untrusted = once_table(smtp_server("starttls").port, None).split()
    assert untrusted[6] == "untrusted"
