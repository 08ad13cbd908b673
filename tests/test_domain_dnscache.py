"""The TTL cache in front of the resolver, against a real DNS server on loopback."""

from __future__ import annotations

import asyncio

from exporter.deadline import Deadline
from exporter.maildomain.dnscache import DNSCache, Status

from .domain_support import resolver_for, run_check

ZONE = """
c.test. 300 IN SOA ns.c.test. admin.c.test. 1 3600 600 86400 30
c.test. 60 IN MX 10 mx.c.test.
mx.c.test. 120 IN A 127.0.0.1
short.c.test. 5 IN A 127.0.0.9
zero.c.test. 0 IN A 127.0.0.8
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ask(cache: DNSCache, *questions: tuple[str, str]):
    async def go():
        return [await cache.query(n, t, Deadline.after(3)) for n, t in questions]

    return asyncio.run(go())


def test_answers_are_kept_for_their_ttl(dns_server):
    dns = dns_server(ZONE)
    clock = Clock()
    cache = DNSCache(resolver_for(dns), clock=clock)
    (mx,) = ask(cache, ("c.test", "MX"))
    assert mx.status is Status.OK and mx.ttl == 60 and not mx.ad
    assert [str(r.exchange) for r in mx.records] == ["mx.c.test."]
    ask(cache, ("C.TEST.", "mx"), ("c.test", "MX"))
    assert dns.queries.count(("c.test.", "MX")) == 1 and cache.sent == 1
    clock.now += 59
    ask(cache, ("c.test", "MX"))
    assert cache.sent == 1
    clock.now += 2  # past the TTL
    ask(cache, ("c.test", "MX"))
    assert dns.queries.count(("c.test.", "MX")) == 2


def test_negative_answers_use_the_soa_negative_ttl(dns_server):
    dns = dns_server(ZONE)
    clock = Clock()
    cache = DNSCache(resolver_for(dns), clock=clock)
    nx, nodata = ask(cache, ("nope.c.test", "A"), ("c.test", "TXT"))
    assert nx.status is Status.NXDOMAIN and nx.empty and nx.ttl == 30
    assert nodata.status is Status.NODATA and nodata.ttl == 30
    clock.now += 29
    ask(cache, ("nope.c.test", "A"), ("c.test", "TXT"))
    assert cache.sent == 2
    clock.now += 2
    ask(cache, ("nope.c.test", "A"))
    assert cache.sent == 3


def test_ttl_zero_and_errors_are_not_cached(dns_server):
    dns = dns_server(ZONE, drop=["slow.c.test."])
    cache = DNSCache(resolver_for(dns, timeout=0.3))
    ask(cache, ("zero.c.test", "A"), ("zero.c.test", "A"))
    assert cache.sent == 2
    a, _ = ask(cache, ("slow.c.test", "A"), ("slow.c.test", "A"))
    assert a.status is Status.ERROR and a.error == "timeout" and not a.answered
    assert cache.sent == 4 and len(cache) == 0


def test_bounded_size_drops_least_recently_used(dns_server):
    dns = dns_server(ZONE)
    cache = DNSCache(resolver_for(dns), max_entries=2)
    ask(cache, ("c.test", "MX"), ("mx.c.test", "A"), ("c.test", "MX"), ("short.c.test", "A"))
    assert len(cache) == 2 and cache.sent == 3
    ask(cache, ("c.test", "MX"))  # kept: used more recently than mx.c.test
    assert cache.sent == 3
    ask(cache, ("mx.c.test", "A"))  # dropped
    assert cache.sent == 4


def test_ad_bit_is_read_and_do_is_asked(dns_server):
    dns = dns_server(ZONE, ad=True)
    cache = DNSCache(resolver_for(dns))
    (a,) = ask(cache, ("mx.c.test", "A"))
    assert a.ad
    assert cache.resolver.edns == 0 and cache.resolver.ednsflags & 0x8000  # DO


def test_concurrent_identical_questions_are_sent_once(dns_server):
    dns = dns_server(ZONE, delay={"mx.c.test.": 0.2})
    cache = DNSCache(resolver_for(dns))

    async def go():
        d = Deadline.after(3)
        return await asyncio.gather(*(cache.query("mx.c.test", "A", d) for _ in range(5)))

    results = asyncio.run(go())
    assert all(r.status is Status.OK for r in results)
    assert dns.queries.count(("mx.c.test.", "A")) == 1


def test_a_recheck_within_the_ttl_asks_nothing_again(dns_server):
    dns = dns_server(
        ZONE + 'c.test. 300 IN TXT "v=spf1 mx -all"\n'
        '_dmarc.c.test. 300 IN TXT "v=DMARC1; p=reject"\n'
        '_smtp._tls.c.test. 300 IN TXT "v=TLSRPTv1; rua=mailto:r@c.test"\n'
    )
    cache = DNSCache(resolver_for(dns))
    first = run_check(cache, "c.test")
    asked = len(dns.queries)
    second = run_check(cache, "c.test")
    assert first.findings == second.findings == ()
    assert len(dns.queries) == asked


def test_names_dns_cannot_carry_are_errors_not_exceptions(dns_server):
    cache = DNSCache(resolver_for(dns_server(ZONE)))
    long_label, too_long = ("a" * 64 + ".test", ".".join(["abcdefghi"] * 30))
    for lookup in ask(cache, (long_label, "A"), (too_long, "TXT"), ("a..b.test", "MX")):
        assert lookup.status is Status.ERROR and lookup.error
    assert len(cache) == 0
