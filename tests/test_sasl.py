"""AUTH mechanisms beyond PLAIN and LOGIN: RFC vectors, a hostile SCRAM server, aiosmtpd
with XOAUTH2, and the real Dovecot SASL behind Postfix with CRAM-MD5 and SCRAM."""

from __future__ import annotations

import asyncio

import pytest

from exporter import probe
from exporter.config import AuthConfig, Module, Secret, Target, TLSMode
from exporter.net import sasl
from exporter.results import FailureKind, Phase

from .servers.saslserver import SASLHandler

USER, PASSWORD, TOKEN = "probe", "s3cret-Pa55word", "ya29.test-token"


def test_rfc_vectors():
    # RFC 2195 section 2
    assert sasl.cram_md5(
        "tim", "tanstaaftanstaaf", b"<1896.697170952@postoffice.reston.mci.net>"
    ) == sasl.b64("tim b913a602c7eda7a495b4e6e7334d3890")
    # RFC 7677 section 3
    c = sasl.ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert c.first() == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert c.final(
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    ) == (
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    c.verify("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    # RFC 5802 section 5
    c = sasl.ScramClient("SCRAM-SHA-1", "user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
    assert c.final(
        "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    ).endswith("p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
    c.verify("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")


@pytest.mark.parametrize(
    ("server_first", "message"),
    [
        ("r=someone-elses-nonce,s=QSXCR+Q6sek8bf92,i=4096", "does not extend"),
        ("r=abcXYZ,s=QSXCR+Q6sek8bf92,i=1000000000", "out of bounds"),
        ("r=abcXYZ,s=!!!,i=4096", "not base64"),
        ("r=abcXYZ,i=4096", "lacks"),
    ],
)
def test_scram_rejects_bad_server_first(server_first, message):
    c = sasl.ScramClient("SCRAM-SHA-256", "u", "p", nonce="abc")
    with pytest.raises(sasl.SASLError, match=message):
        c.final(server_first)


def test_scram_username_escaping_and_choose():
    assert sasl.ScramClient("SCRAM-SHA-1", "a=b,c", "p", nonce="n").first() == "n,,n=a=3Db=2Cc,r=n"
    offered = ("LOGIN", "SCRAM-SHA-256", "XOAUTH2")
    assert sasl.choose(offered, ("auto",)) == "LOGIN"
    assert sasl.choose(offered, ("CRAM-MD5", "SCRAM-SHA-256")) == "SCRAM-SHA-256"
    assert sasl.choose(offered, ("CRAM-MD5",)) is None


def target(port: int, ca_file: str, mechanism: str, secret: str) -> Target:
    module = Module(
        "sasl",
        tls=TLSMode.STARTTLS,
        tls_ca_file=ca_file,
        timeout=5.0,
        auth=AuthConfig(USER, Secret(secret), (mechanism,)),
    )
    return Target(f"127.0.0.1:{port}", "127.0.0.1", port, module)


@pytest.fixture
def sasl_server(smtp_server):
    def make(**kw):
        handler = SASLHandler({USER: PASSWORD}, {USER: TOKEN}, **kw)
        return smtp_server("starttls", handler=handler, users={USER: PASSWORD})

    return make


@pytest.mark.parametrize(
    ("mechanism", "secret"),
    [
        ("CRAM-MD5", PASSWORD),
        ("SCRAM-SHA-256", PASSWORD),
        ("XOAUTH2", TOKEN),
    ],
)
def test_mechanisms_against_aiosmtpd(sasl_server, ca_file, mechanism, secret):
    server = sasl_server()
    ok = asyncio.run(probe.run(target(server.port, ca_file, mechanism, secret)))
    assert ok.success, ok.failure
    assert ok.auth.mechanism == mechanism and ok.auth.success
    bad = asyncio.run(probe.run(target(server.port, ca_file, mechanism, "wrong-" + secret)))
    assert bad.failure is not None and bad.failure.phase is Phase.AUTH
    assert bad.failure.code == 535
    assert secret not in repr(bad)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("bad_signature", "server signature does not match"),
        ("huge_iterations", "out of bounds"),
        ("foreign_nonce", "does not extend"),
        ("skip_final", "did not send its signature"),
        ("error", "server reported error"),
    ],
)
def test_hostile_scram_server(sasl_server, ca_file, fault, message):
    server = sasl_server(scram_fault=fault)
    r = asyncio.run(probe.run(target(server.port, ca_file, "SCRAM-SHA-256", PASSWORD)))
    assert r.failure is not None
    assert (r.failure.phase, r.failure.kind) == (Phase.AUTH, FailureKind.PROTOCOL)
    assert message in r.failure.detail
    assert r.duration_seconds < 2  # a billion PBKDF2 rounds were never computed


@pytest.mark.postfix
@pytest.mark.parametrize("mechanism", ["CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_dovecot_sasl_behind_postfix(mailstack, mechanism):
    good = target(
        mailstack.submission_port, str(mailstack.ca_file), mechanism, mailstack.users["probe"]
    )
    r = asyncio.run(probe.run(good))
    assert r.success, r.failure
    assert r.auth.mechanism == mechanism and mechanism in r.auth_mechanisms
    bad = target(mailstack.submission_port, str(mailstack.ca_file), mechanism, "wrong")
    r = asyncio.run(probe.run(bad))
    assert r.failure is not None and (r.failure.phase, r.failure.code) == (Phase.AUTH, 535)
