"""DANE against a real DNS server (TLSA records computed from the test certificates, AD
bit on and off) and real SMTP servers with STARTTLS (aiosmtpd)."""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Callable

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exporter.config import DomainChecks
from exporter.embedded import EmbeddedSMTPServer
from exporter.maildomain.dane import tlsa_matches, tlsa_problem
from exporter.maildomain.results import DomainCheck

from .domain_support import reasons, run_check

MX = "mx1.d.test"
TLSA_NAME = f"_25._tcp.{MX}."


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def tlsa(usage: int, selector: int, mtype: int, cert_der: bytes) -> str:
    data = cert_der
    if selector == 1:
        key = x509.load_der_x509_certificate(cert_der).public_key()
        data = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return f"{usage} {selector} {mtype} {data.hex()}"


class Certs:
    """A leaf for the MX host, the CA that issued it, and an unrelated leaf."""

    def __init__(self, ca: trustme.CA, tmp_path) -> None:
        self.ca = ca
        self.leaf = ca.issue_cert(MX)
        self.leaf_der = der(self.leaf.cert_chain_pems[0].bytes())
        self.ca_der = der(ca.cert_pem.bytes())
        self.other_der = der(trustme.CA().issue_cert(MX).cert_chain_pems[0].bytes())
        self.tmp_path = tmp_path

    def context(self, *, with_ca: bool = False, leaf: trustme.LeafCert | None = None):
        leaf = leaf or self.leaf
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        path = self.tmp_path / f"chain-{id(leaf)}-{with_ca}.pem"
        blob = leaf.private_key_and_cert_chain_pem.bytes()
        if with_ca:
            blob += self.ca.cert_pem.bytes()  # DANE-TA: the server sends its trust anchor
        path.write_bytes(blob)
        ctx.load_cert_chain(str(path))
        return ctx


@pytest.fixture
def certs(ca, tmp_path) -> Certs:
    return Certs(ca, tmp_path)


@pytest.fixture
def mx_server():
    started: list[EmbeddedSMTPServer] = []

    def start(ctx: ssl.SSLContext | None, tls: str = "starttls") -> EmbeddedSMTPServer:
        server = EmbeddedSMTPServer(tls=tls, ssl_context=ctx).start()
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


def zone(*records: str) -> str:
    lines = [f"d.test. 300 IN MX 10 {MX}.", f"{MX}. 300 IN A 127.0.0.1"]
    lines += [f"{TLSA_NAME} 300 IN TLSA {r}" for r in records]
    return "\n".join(lines) + "\n"


def dane(port: int) -> DomainChecks:
    return DomainChecks(records=False, dane=True, smtp_port=port)


Record = Callable[[Certs], str]
CASES: list[tuple[str, Record, bool, bool]] = [
    # (name, TLSA record from the certificates, server sends the CA too, matches)
    ("3 1 1 leaf SPKI SHA-256", lambda c: tlsa(3, 1, 1, c.leaf_der), False, True),
    ("3 0 1 leaf cert SHA-256", lambda c: tlsa(3, 0, 1, c.leaf_der), False, True),
    ("3 1 2 leaf SPKI SHA-512", lambda c: tlsa(3, 1, 2, c.leaf_der), False, True),
    ("3 1 0 leaf SPKI exact", lambda c: tlsa(3, 1, 0, c.leaf_der), False, True),
    ("3 0 0 leaf cert exact", lambda c: tlsa(3, 0, 0, c.leaf_der), False, True),
    ("2 0 1 CA cert, sent", lambda c: tlsa(2, 0, 1, c.ca_der), True, True),
    ("2 1 1 CA SPKI, sent", lambda c: tlsa(2, 1, 1, c.ca_der), True, True),
    ("2 0 1 CA cert, not sent", lambda c: tlsa(2, 0, 1, c.ca_der), False, False),
    ("3 1 1 another cert", lambda c: tlsa(3, 1, 1, c.other_der), False, False),
    ("3 1 1 of the CA (not the leaf)", lambda c: tlsa(3, 1, 1, c.ca_der), True, False),
    ("2 0 1 on the leaf itself", lambda c: tlsa(2, 0, 1, c.leaf_der), False, False),
]


@pytest.mark.parametrize(
    ("record", "with_ca", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_tlsa_match(dns_server, mx_server, certs, record, with_ca, match):
    server = mx_server(certs.context(with_ca=with_ca))
    r = run_check(dns_server(zone(record(certs)), ad=True), "d.test", dane(server.port))
    assert r.success and r.enabled == (DomainCheck.DANE,)
    (host,) = r.dane
    assert (host.mx_host, host.tlsa_records, host.dnssec_validated) == (MX, 1, True)
    assert host.match is match and host.address == "127.0.0.1"
    if match:
        assert reasons(r) == []
    else:
        assert reasons(r) == [f"DANE: certificate of {MX} matches no TLSA record"]


def test_dane_ta_leaf_must_name_the_mx_host(dns_server, mx_server, certs):
    other_leaf = certs.ca.issue_cert("elsewhere.test")
    server = mx_server(certs.context(with_ca=True, leaf=other_leaf))
    r = run_check(
        dns_server(zone(tlsa(2, 0, 1, certs.ca_der)), ad=True), "d.test", dane(server.port)
    )
    assert r.dane is not None and r.dane[0].match is False


def test_without_ad_bit_the_records_are_not_validated(dns_server, mx_server, certs):
    server = mx_server(certs.context())
    r = run_check(
        dns_server(zone(tlsa(3, 1, 1, certs.leaf_der)), ad=False), "d.test", dane(server.port)
    )
    (host,) = r.dane
    assert host.match is True and host.dnssec_validated is False
    assert reasons(r) == [
        f"DANE: TLSA records at {TLSA_NAME.rstrip('.')} are not DNSSEC-validated (no AD bit)"
    ]


def test_no_tlsa_records(dns_server, mx_server, certs):
    server = mx_server(certs.context())
    dns = dns_server(zone(), ad=True)
    r = run_check(dns, "d.test", dane(server.port))
    (host,) = r.dane
    assert (host.tlsa_records, host.match, host.dnssec_validated) == (0, None, True)
    assert reasons(r) == [f"DANE: no TLSA records at {TLSA_NAME.rstrip('.')}"]


def test_pkix_usages_and_malformed_records_are_findings(dns_server, mx_server, certs):
    server = mx_server(certs.context())
    records = (
        tlsa(1, 1, 1, certs.leaf_der),
        "7 1 1 " + "00" * 32,
        "3 5 1 " + "00" * 32,
        "3 1 9 00",
        tlsa(3, 1, 1, certs.leaf_der),
    )
    r = run_check(dns_server(zone(*records), ad=True), "d.test", dane(server.port))
    (host,) = r.dane
    assert host.tlsa_records == 5 and host.match is True  # the good one still matches
    name = TLSA_NAME.rstrip(".")
    assert sorted(reasons(r)) == sorted(
        [
            f"DANE: {name} TLSA 1 1 1: usage 1 (PKIX-EE) is not used for SMTP (RFC 7672 §3.1.3)",
            f"DANE: {name} TLSA 7 1 1: unknown usage 7",
            f"DANE: {name} TLSA 3 5 1: unknown selector 5",
            f"DANE: {name} TLSA 3 1 9: unknown matching type 9",
        ]
    )


def test_an_unparseable_tlsa_answer_is_a_finding(dns_server, certs):
    """dnspython refuses a SHA-256 TLSA record of 2 bytes on the wire: the lookup fails,
    which is a finding, within the deadline."""
    start = time.monotonic()
    r = run_check(dns_server(zone("3 1 1 abcd"), ad=True), "d.test", dane(9), dns_timeout=0.5)
    assert time.monotonic() - start < 2
    (host,) = r.dane
    assert r.success and host.match is None and host.error is not None
    assert reasons(r)[0].startswith(f"DANE: TLSA lookup of {TLSA_NAME.rstrip('.')} failed:")
    assert tlsa_problem(3, 1, 1, b"\xab\xcd") == "2-byte digest for matching type 1 (needs 32)"


def test_only_unusable_records_means_no_match_and_no_connection(dns_server, certs):
    r = run_check(dns_server(zone("0 0 1 " + "00" * 32), ad=True), "d.test", dane(9))
    (host,) = r.dane
    assert host.match is False and host.address is None
    assert reasons(r)[-1] == f"DANE: no usable TLSA record for {MX}"


def test_mx_without_starttls(dns_server, mx_server, certs):
    server = mx_server(None, tls="none")
    r = run_check(
        dns_server(zone(tlsa(3, 1, 1, certs.leaf_der)), ad=True), "d.test", dane(server.port)
    )
    (host,) = r.dane
    assert host.match is False and host.error == "starttls: server does not advertise STARTTLS"
    assert reasons(r) == [
        f"DANE: no certificate from {MX} (127.0.0.1:{server.port}): "
        "starttls: server does not advertise STARTTLS"
    ]


def test_mx_that_never_answers_ends_by_the_deadline(dns_server, certs):
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        port = silent.getsockname()[1]
        start = time.monotonic()
        r = run_check(
            dns_server(zone(tlsa(3, 1, 1, certs.leaf_der)), ad=True),
            "d.test",
            dane(port),
            timeout=1.0,
        )
        assert time.monotonic() - start < 2.0
    (host,) = r.dane
    assert r.success and host.match is False
    assert host.error == "no answer by the deadline (greeting)"


def test_pure_matching():
    assert tlsa_problem(3, 1, 1, b"\0" * 32) is None
    assert tlsa_matches(3, 1, 1, b"\0" * 32, [], MX) is False
    assert tlsa_matches(3, 0, 0, b"not a cert", [b"not a cert"], MX) is True
    assert tlsa_matches(3, 1, 0, b"x", [b"garbage"], MX) is False  # unparseable: no match
