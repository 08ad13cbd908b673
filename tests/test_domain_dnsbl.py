"""DNSBL lookups against a real DNS server serving a blocklist zone."""

from __future__ import annotations

import time

from exporter import report
from exporter.config import DomainChecks
from exporter.maildomain.dnsbl import query_name
from exporter.maildomain.results import DNSBLEntry, DomainCheck

from .domain_support import reasons, run_check

ZONE = """
d.test. 300 IN MX 10 mx1.d.test.
d.test. 300 IN MX 20 mx2.d.test.
mx1.d.test. 300 IN A 192.0.2.1
mx2.d.test. 300 IN A 192.0.2.2
mx2.d.test. 300 IN AAAA 2001:db8::25
bl.test. 300 IN SOA ns.bl.test. admin.bl.test. 1 3600 600 86400 60
1.2.0.192.bl.test. 300 IN A 127.0.0.2
1.2.0.192.bl.test. 300 IN A 127.0.0.4
1.2.0.192.bl.test. 300 IN TXT "Listed: see https://bl.test/lookup?ip=192.0.2.1"
2.0.0.127.bl.test. 300 IN A 127.0.0.2
2.2.0.192.refusing.test. 300 IN A 127.255.255.254
1.2.0.192.refusing.test. 300 IN A 127.255.255.255
1.2.0.192.odd.test. 300 IN A 192.0.2.99
other.test. 300 IN A 127.0.0.1
"""


def test_listed_and_not_listed_per_zone(dns_server):
    dns = dns_server(ZONE)
    checks = DomainChecks(records=False, dnsbl=("bl.test", "other.test"))
    r = run_check(dns, "d.test", checks)
    assert r.success and r.enabled == (DomainCheck.DNSBL,)
    by_key = {(e.mx_host, e.address, e.zone): e for e in r.dnsbl or ()}
    assert set(by_key) == {
        (h, a, z)
        for h, a in (
            ("mx1.d.test", "192.0.2.1"),
            ("mx2.d.test", "192.0.2.2"),
            ("mx2.d.test", "2001:db8::25"),
        )
        for z in ("bl.test", "other.test")
    }
    listed = by_key[("mx1.d.test", "192.0.2.1", "bl.test")]
    assert listed == DNSBLEntry(
        "mx1.d.test",
        "192.0.2.1",
        "bl.test",
        True,
        ("127.0.0.2", "127.0.0.4"),
        "Listed: see https://bl.test/lookup?ip=192.0.2.1",
    )
    assert [e for e in r.dnsbl if e.listed] == [listed]
    assert all(e.error is None for e in r.dnsbl)
    assert reasons(r) == [
        "DNSBL: 192.0.2.1 listed in bl.test (127.0.0.2, 127.0.0.4): "
        "Listed: see https://bl.test/lookup?ip=192.0.2.1"
    ]
    asked = {q for q in dns.queries if q[0].endswith("bl.test.")}
    assert (
        "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test.",
        "A",
    ) in asked


def test_refusals_and_odd_answers_are_errors_not_listings(dns_server):
    r = run_check(
        dns_server(ZONE), "d.test", DomainChecks(records=False, dnsbl=("refusing.test", "odd.test"))
    )
    errors = {(e.address, e.zone): e.error for e in r.dnsbl or () if e.error}
    assert errors == {
        ("192.0.2.2", "refusing.test"): "127.255.255.254: query via a public/open resolver refused",
        (
            "192.0.2.1",
            "refusing.test",
        ): "127.255.255.255: too many queries (over the free-use limit)",
        ("192.0.2.1", "odd.test"): "unexpected answer 192.0.2.99 (not 127/8)",
    }
    assert not any(e.listed for e in r.dnsbl or ())
    assert (
        "DNSBL: refusing.test lookup of 192.0.2.2: "
        "127.255.255.254: query via a public/open resolver refused" in reasons(r)
    )


def test_a_blocklist_that_drops_queries_is_an_error_by_the_deadline(dns_server):
    dns = dns_server(ZONE, drop=["1.2.0.192.bl.test."])
    start = time.monotonic()
    r = run_check(
        dns, "d.test", DomainChecks(records=False, dnsbl=("bl.test",)), timeout=1.5, dns_timeout=10
    )
    assert time.monotonic() - start < 2.5
    assert r.success
    entry = next(e for e in r.dnsbl or () if e.address == "192.0.2.1")
    assert not entry.listed and entry.error is not None
    assert any(x.startswith("DNSBL: bl.test lookup of 192.0.2.1: ") for x in reasons(r))


def test_no_zones_no_queries(dns_server):
    dns = dns_server(ZONE)
    r = run_check(dns, "d.test", DomainChecks(records=False))
    assert r.dnsbl is None and r.enabled == ()
    assert not [q for q in dns.queries if "bl.test" in q[0]]


def test_query_names():
    assert query_name("192.0.2.1", "zen.example") == "1.2.0.192.zen.example"
    assert query_name("2001:db8::1", "z.example") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.z.example"
    )


SHARED = """
s.test. 300 IN MX 10 mx1.s.test.
s.test. 300 IN MX 20 mx2.s.test.
mx1.s.test. 300 IN A 192.0.2.7
mx2.s.test. 300 IN A 192.0.2.7
7.2.0.192.bl.test. 300 IN A 127.0.0.2
"""


def test_mx_hosts_sharing_a_listed_address_make_one_finding(dns_server):
    """Two MX hosts on one address: one lookup and one finding naming both hosts; each
    host keeps its entry (its own series)."""
    dns = dns_server(SHARED)
    r = run_check(dns, "s.test", DomainChecks(records=False, dnsbl=("bl.test",)))
    assert sorted((e.mx_host, e.address, e.listed) for e in r.dnsbl or ()) == [
        ("mx1.s.test", "192.0.2.7", True),
        ("mx2.s.test", "192.0.2.7", True),
    ]
    assert reasons(r) == [
        "DNSBL: 192.0.2.7 (shared by MX hosts mx1.s.test, mx2.s.test) listed in bl.test (127.0.0.2)"
    ]
    assert r.finding_counts()[DomainCheck.DNSBL] == 1
    asked = [q for q in dns.queries if q == ("7.2.0.192.bl.test.", "A")]
    assert len(asked) == 1, dns.queries
    # The table counts listings, not hosts (DNSBL is the 9th column).
    assert report.domain_row(r)[8] == "LISTED x1"
    assert report.domain_table([r]).count("192.0.2.7") == 1
