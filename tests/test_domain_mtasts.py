"""MTA-STS against a real DNS server and a real HTTPS server (trustme certificate)."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
import trustme

from exporter.config import DomainChecks
from exporter.maildomain.mtasts import mx_matches, parse_policy, parse_sts_txt
from exporter.maildomain.results import DomainCheck

from .domain_support import reasons, run_check
from .servers.https import HTTPSServer, Response

PATH = "/.well-known/mta-sts.txt"
ZONE = """
example.test. 300 IN MX 10 mx1.example.test.
example.test. 300 IN MX 20 mx2.example.test.
mx1.example.test. 300 IN A 127.0.0.1
mx2.example.test. 300 IN A 127.0.0.1
_mta-sts.example.test. 300 IN TXT "v=STSv1; id=20240101T0000;"
mta-sts.example.test. 300 IN A 127.0.0.1
"""
POLICY = (
    b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmx: *.example.test\r\n"
    b"max_age: 604800\r\n"
)


def context_for(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def sts_context(ca) -> ssl.SSLContext:
    return context_for(ca, "mta-sts.example.test")


@pytest.fixture
def https():
    started: list[HTTPSServer] = []

    def start(ctx: ssl.SSLContext, response: Response | None = None, path: str = PATH):
        server = HTTPSServer(ctx, {path: response or Response(200, POLICY)}).start()
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


def sts(server, ca_file: str | None, **kw) -> DomainChecks:
    return DomainChecks(
        records=False, mta_sts=True, mta_sts_port=server.port, tls_ca_file=ca_file, **kw
    )


def test_good_policy(dns_server, https, sts_context, ca_file):
    server = https(sts_context)
    r = run_check(dns_server(ZONE), "example.test", sts(server, ca_file))
    assert r.success and r.enabled == (DomainCheck.MTA_STS,)
    assert reasons(r) == []
    m = r.mta_sts
    assert m is not None and m.valid
    assert (m.policy_id, m.mode, m.max_age, m.policy_changed) == (
        "20240101T0000",
        "enforce",
        604800,
        False,
    )
    assert m.mx_patterns == ("mx1.example.test", "*.example.test")
    assert m.mx_match == (("mx1.example.test", True), ("mx2.example.test", True))
    assert server.requests == [(PATH, f"mta-sts.example.test:{server.port}")]
    assert server.errors == []


def test_mx_not_covered_by_the_policy(dns_server, https, sts_context, ca_file):
    policy = b"version: STSv1\nmode: enforce\nmx: mx1.example.test\nmax_age: 604800\n"
    server = https(sts_context, Response(200, policy, "text/plain; charset=utf-8"))
    r = run_check(dns_server(ZONE), "example.test", sts(server, ca_file))
    assert r.mta_sts is not None and r.mta_sts.valid
    assert r.mta_sts.mx_match == (("mx1.example.test", True), ("mx2.example.test", False))
    assert reasons(r) == ["MTA-STS: policy mx patterns do not match mx2.example.test"]


def test_testing_mode_and_short_max_age_are_findings(dns_server, https, sts_context, ca_file):
    policy = b"version: STSv1\nmode: testing\nmx: *.example.test\nmax_age: 3600\n"
    server = https(sts_context, Response(200, policy, chunked=True))
    r = run_check(dns_server(ZONE), "example.test", sts(server, ca_file))
    assert r.mta_sts is not None and r.mta_sts.valid and r.mta_sts.mode == "testing"
    assert reasons(r) == [
        "MTA-STS: mode testing (failures are only reported)",
        "MTA-STS: max_age 3600s is under a day (RFC 8461 suggests weeks)",
    ]


URL = "https://mta-sts.example.test:{port}/.well-known/mta-sts.txt"


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (
            Response(301, b"", None, (("Location", "https://elsewhere.test/p"),)),
            "HTTP 301 to https://elsewhere.test/p (redirects are not followed, RFC 8461 §3.3)",
        ),
        (Response(404, b"nope"), "HTTP 404 (expected 200)"),
        (Response(200, POLICY, "text/html"), "Content-Type is 'text/html', expected text/plain"),
        (Response(200, POLICY, None), "Content-Type is 'missing', expected text/plain"),
        (Response(200, b"x" * 70000), "policy larger than 64 KiB"),
        (Response(200, b"x" * 70000, chunked=True), "policy larger than 64 KiB"),
        (Response(200, b"version: STSv1\n\xff\xfe"), "policy is not UTF-8"),
    ],
)
def test_bad_http_answers_are_findings(dns_server, https, sts_context, ca_file, response, why):
    server = https(sts_context, response)
    r = run_check(dns_server(ZONE), "example.test", sts(server, ca_file))
    assert r.success and r.mta_sts is not None and not r.mta_sts.valid
    assert r.mta_sts.policy_id == "20240101T0000"
    url = URL.format(port=server.port)
    assert reasons(r) == [f"MTA-STS: policy fetch from {url} failed: {why}"]


def test_certificate_must_verify(dns_server, https, sts_context, ca, ca_file):
    dns = dns_server(ZONE)
    server = https(sts_context)
    r = run_check(dns, "example.test", sts(server, None))  # system store: trustme unknown
    assert r.mta_sts is not None and not r.mta_sts.valid
    (why,) = reasons(r)
    assert "certificate not valid for mta-sts.example.test:" in why
    assert "unable to get local issuer certificate" in why
    wrong_name = https(context_for(ca, "www.example.test"))
    r = run_check(dns, "example.test", sts(wrong_name, ca_file))
    (why,) = reasons(r)
    assert "certificate not valid for mta-sts.example.test: Hostname mismatch" in why


def test_no_txt_record_means_no_fetch(dns_server, https, sts_context, ca_file):
    server = https(sts_context)
    zone = "\n".join(line for line in ZONE.splitlines() if "_mta-sts" not in line)
    r = run_check(dns_server(zone), "example.test", sts(server, ca_file))
    assert r.mta_sts is not None and not r.mta_sts.valid and r.mta_sts.policy_id is None
    assert reasons(r) == ["MTA-STS: no record at _mta-sts.example.test"]
    assert server.requests == []


def test_malformed_txt_and_policy_are_findings(dns_server, https, sts_context, ca_file):
    policy = b"version: STSv2\nmode: sometimes\nmax_age: forever\nmx: bad pattern!\njunk\n"
    server = https(sts_context, Response(200, policy))
    zone = ZONE.replace('"v=STSv1; id=20240101T0000;"', '"v=STSv1; id=not-alnum!;"')
    r = run_check(dns_server(zone), "example.test", sts(server, ca_file))
    m = r.mta_sts
    assert r.success and m is not None and not m.valid and m.policy_id is None
    assert m.mode is None and m.max_age is None
    assert reasons(r) == [
        "MTA-STS: TXT record: id=not-alnum! is not 1-32 letters and digits",
        "MTA-STS: policy: mx pattern 'bad pattern!' is not a host name",
        "MTA-STS: policy: malformed line 'junk'",
        "MTA-STS: policy: version is 'STSv2', expected STSv1",
        "MTA-STS: policy: mode is 'sometimes', expected enforce, testing or none",
        "MTA-STS: policy: max_age is 'forever', expected seconds",
    ]


def test_policy_id_change_is_noticed(dns_server, https, sts_context, ca_file):
    dns = dns_server(ZONE)
    server = https(sts_context)
    checks = sts(server, ca_file)
    first = run_check(dns, "example.test", checks)
    same = run_check(dns, "example.test", checks, previous=first)
    assert same.mta_sts is not None and not same.mta_sts.policy_changed
    dns.set_zone(ZONE.replace("id=20240101T0000", "id=20250202"))
    changed = run_check(dns, "example.test", checks, previous=same)
    assert changed.mta_sts is not None and changed.mta_sts.policy_changed
    assert changed.mta_sts.policy_id == "20250202"


def test_policy_host_without_address(dns_server, ca_file):
    zone = "\n".join(line for line in ZONE.splitlines() if not line.startswith("mta-sts."))
    r = run_check(dns_server(zone), "example.test", DomainChecks(records=False, mta_sts=True))
    url = "https://mta-sts.example.test/.well-known/mta-sts.txt"
    assert reasons(r) == [
        f"MTA-STS: policy fetch from {url} failed: mta-sts.example.test: no A/AAAA record"
    ]


def test_a_silent_policy_server_ends_by_the_deadline(dns_server, ca_file):
    """TCP accepted (backlog) but no TLS ever: the check ends at its deadline."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        port = silent.getsockname()[1]
        checks = DomainChecks(records=False, mta_sts=True, mta_sts_port=port, tls_ca_file=ca_file)
        start = time.monotonic()
        r = run_check(dns_server(ZONE), "example.test", checks, timeout=1.0)
        assert time.monotonic() - start < 2.0
    assert r.success and r.mta_sts is not None and not r.mta_sts.valid
    (why,) = reasons(r)
    assert why.endswith("failed: no answer by the deadline")


def test_parsers():
    assert parse_sts_txt("v=STSv1; id=abc123") == ("abc123", [])
    assert parse_sts_txt("v=STSv1;") == (None, ["no id= (required)"])
    assert parse_sts_txt("id=1; v=STSv1")[1] == ["record must start with v=STSv1"]
    policy, problems = parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n")
    assert problems == [] and policy == {"mode": "none", "max_age": 86400, "mx": ()}
    _, problems = parse_policy("version: STSv1\nmode: enforce\nmax_age: 31557601\nmx: a.test\n")
    assert problems == ["max_age 31557601 exceeds 31557600 (RFC 8461 §3.2)"]
    _, problems = parse_policy("version: STSv1\nmode: enforce\nmode: none\nmax_age: 1\n")
    assert problems == ["'mode' given twice", "no mx patterns"]


@pytest.mark.parametrize(
    ("host", "pattern", "ok"),
    [
        ("mx1.example.test", "mx1.example.test", True),
        ("MX1.Example.Test.", "mx1.example.test", True),
        ("mx1.example.test", "*.example.test", True),
        ("a.b.example.test", "*.example.test", False),  # one label only
        ("example.test", "*.example.test", False),
        ("mx1.example.test", "mx2.example.test", False),
    ],
)
def test_mx_pattern_matching(host, pattern, ok):
    assert mx_matches(host, pattern) is ok
