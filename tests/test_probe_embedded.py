"""The probe against a real SMTP server (aiosmtpd): every TLS mode, both AUTH mechanisms."""

from __future__ import annotations

import asyncio
import time

import pytest

from exporter import probe
from exporter.config import TLSMode
from exporter.results import FailureKind, Phase

from .conftest import PASSWORD, make_target

ALL_PHASES_STARTTLS = [
    "resolve",
    "connect",
    "greeting",
    "ehlo",
    "starttls",
    "tls_handshake",
    "ehlo_tls",
    "auth",
    "noop",
    "quit",
]


def run(target):
    return asyncio.run(probe.run(target))


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_starttls_auth_succeeds(smtp_server, ca_file, mechanism):
    server = smtp_server("starttls")
    r = run(make_target(server.port, tls_ca_file=ca_file, mechanism=mechanism))
    assert r.failure is None, r.failure
    assert r.success
    assert [p.phase.value for p in r.phases] == ALL_PHASES_STARTTLS
    assert all(p.seconds >= 0 for p in r.phases)
    assert r.auth.attempted and r.auth.success and r.auth.mechanism == mechanism
    assert r.tls is not None and r.tls.version.startswith("TLSv1.")
    assert r.tls.verified and r.tls.hostname_match and r.tls.verify_error is None
    assert r.tls.leaf is not None and "IP:127.0.0.1" in r.tls.leaf.sans
    assert r.tls.earliest_not_after > time.time()
    # After STARTTLS only the post-TLS extension list counts (RFC 3207 4.2): aiosmtpd offers
    # AUTH only once TLS is up, and no longer offers STARTTLS.
    assert "AUTH" in r.extensions and "STARTTLS" not in r.extensions
    assert set(r.auth_mechanisms) == {"PLAIN", "LOGIN"}
    assert r.size_limit == 33554432
    assert r.greeting_host == "embedded.localhost"
    assert r.address == "127.0.0.1"
    assert r.last_reply_code == 221


def test_implicit_tls_succeeds(smtp_server, ca_file):
    server = smtp_server("implicit")
    r = run(make_target(server.port, tls=TLSMode.IMPLICIT, tls_ca_file=ca_file))
    assert r.success, r.failure
    phases = [p.phase.value for p in r.phases]
    assert phases[:4] == ["resolve", "connect", "tls_handshake", "greeting"]
    assert "starttls" not in phases and r.tls is not None and r.tls.verified


def test_plaintext_succeeds_without_auth(smtp_server):
    server = smtp_server("none")
    r = run(make_target(server.port, tls=TLSMode.NONE, password=None))
    assert r.success, r.failure
    assert r.tls is None and not r.auth.attempted


def test_plaintext_auth_only_when_allowed(smtp_server):
    server = smtp_server("none", auth_require_tls=False)
    refused = run(make_target(server.port, tls=TLSMode.NONE))
    assert refused.failure is not None
    assert (refused.failure.phase, refused.failure.kind) == (Phase.AUTH, FailureKind.INSECURE)
    assert not refused.auth.attempted
    allowed = run(make_target(server.port, tls=TLSMode.NONE, allow_insecure=True))
    assert allowed.success, allowed.failure
    assert allowed.auth.success


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_wrong_password_fails_auth_with_535_578(smtp_server, ca_file, mechanism):
    server = smtp_server("starttls")
    r = run(make_target(server.port, tls_ca_file=ca_file, password="wrong", mechanism=mechanism))
    f = r.failure
    assert f is not None
    assert (f.phase, f.kind, f.code, f.enhanced) == (Phase.AUTH, FailureKind.REPLY, 535, "5.7.8")
    assert r.auth.attempted and not r.auth.success
    assert r.tls is not None and r.tls.verified  # what was learnt before the failure is kept


def test_untrusted_certificate_reported_and_enforced(smtp_server):
    server = smtp_server("starttls")
    # No CA file: the trustme CA is not in the system store.
    strict = run(make_target(server.port))
    assert strict.failure is not None
    assert (strict.failure.phase, strict.failure.kind) == (
        Phase.TLS_HANDSHAKE,
        FailureKind.TLS_VERIFY,
    )
    assert strict.tls is not None and not strict.tls.verified and strict.tls.leaf is not None
    lenient = run(make_target(server.port, tls_verify=False))
    assert lenient.success, lenient.failure
    assert lenient.tls is not None and not lenient.tls.verified  # still recorded


def test_hostname_mismatch_reported_and_enforced(smtp_server, ca_file):
    server = smtp_server("starttls")
    strict = run(make_target(server.port, tls_ca_file=ca_file, tls_server_name="mail.example.org"))
    assert strict.failure is not None
    assert strict.failure.kind is FailureKind.TLS_HOSTNAME
    assert strict.tls is not None and strict.tls.verified and not strict.tls.hostname_match
    lenient = run(
        make_target(
            server.port, tls_ca_file=ca_file, tls_verify=False, tls_server_name="mail.example.org"
        )
    )
    assert lenient.success and lenient.tls is not None and not lenient.tls.hostname_match


def test_starttls_missing_required_vs_reported(smtp_server):
    server = smtp_server("none", auth_require_tls=False)
    required = run(make_target(server.port, password=None))
    assert required.failure is not None
    assert (required.failure.phase, required.failure.kind) == (
        Phase.STARTTLS,
        FailureKind.TLS_UNAVAILABLE,
    )
    optional = run(make_target(server.port, password=None, tls_required=False))
    assert optional.success and optional.tls is None


def test_mechanism_not_offered(smtp_server, ca_file):
    server = smtp_server("starttls")
    r = run(make_target(server.port, tls_ca_file=ca_file, mechanism="CRAM-MD5"))
    assert r.failure is not None
    assert (r.failure.phase, r.failure.kind) == (Phase.AUTH, FailureKind.NOT_OFFERED)


def test_connection_refused_is_connect_phase():
    from exporter.embedded import free_port

    r = run(make_target(free_port()))
    assert r.failure is not None
    assert (r.failure.phase, r.failure.kind) == (Phase.CONNECT, FailureKind.REFUSED)


def test_unresolvable_host_is_resolve_phase():
    r = run(make_target(25, host="no-such-host.invalid"))
    assert r.failure is not None
    assert (r.failure.phase, r.failure.kind) == (Phase.RESOLVE, FailureKind.DNS)


def test_password_never_in_result(smtp_server, ca_file):
    server = smtp_server("starttls")
    r = run(make_target(server.port, tls_ca_file=ca_file, password="wrong-" + PASSWORD))
    assert PASSWORD not in repr(r)
