"""The test DNS server answers real dnspython resolvers correctly, over UDP and TCP.

Later tests trust ``DNSServer`` as their resolver, so every behaviour they rely
on is proved here with the same client library the exporter uses.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from tests.servers.dns import DNSServer

pytestmark = pytest.mark.fixture_selftest

TLSA_HASH = "0123456789abcdef" * 4

ZONE = f"""
; A comment line, as zone files have them.
example.test.              300 IN MX   10 mx1.example.test.
example.test.              300 IN MX   20 mx2.example.test.
example.test.              300 IN TXT  "v=spf1 ip4:127.0.0.1 -all"
mx1.example.test.          300 IN A    127.0.0.1
mx1.example.test.          300 IN AAAA ::1
mx2.example.test.          60  IN A    127.0.0.2
mx2.example.test.          60  IN A    127.0.0.3
null.test.                 300 IN MX   0 .
_mta-sts.example.test.     300 IN TXT  "v=STSv1; id=20240101"
_dmarc.example.test.       300 IN TXT  "v=DMARC1; p=reject; " "rua=mailto:d@example.test"
quoted.example.test.       300 IN TXT  "say \\"hi\\"; then leave" "second"
_25._tcp.mx1.example.test. 3600 IN TLSA 3 1 1 {TLSA_HASH}
2.0.0.127.zen.test.        30  IN A    127.0.0.2
dropped.test.              300 IN A    127.0.0.9
slow.test.                 300 IN A    127.0.0.10
"""

TRANSPORTS = [pytest.param(False, id="udp"), pytest.param(True, id="tcp")]


def resolver_for(server: DNSServer, lifetime: float = 2.0) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.address]
    resolver.port = server.port
    resolver.lifetime = lifetime
    return resolver


@pytest.fixture(scope="module")
def server() -> Iterator[DNSServer]:
    with DNSServer(ZONE, drop=["Dropped.Test"], delay={"slow.test.": 0.3}) as dns_server:
        yield dns_server
        assert dns_server.errors == []


@pytest.fixture
def fresh() -> Iterator[DNSServer]:
    """A server of its own, for tests that change zone or flags."""
    with DNSServer(ZONE) as dns_server:
        yield dns_server
        assert dns_server.errors == []


@pytest.mark.parametrize("tcp", TRANSPORTS)
def test_mx_answers_with_preference_and_exchange(server: DNSServer, tcp: bool) -> None:
    answer = resolver_for(server).resolve("example.test.", "MX", tcp=tcp)
    mx = sorted((r.preference, r.exchange.to_text()) for r in answer)
    assert mx == [(10, "mx1.example.test."), (20, "mx2.example.test.")]
    assert answer.response.flags & dns.flags.AA


@pytest.mark.parametrize("tcp", TRANSPORTS)
def test_a_and_aaaa(server: DNSServer, tcp: bool) -> None:
    resolver = resolver_for(server)
    assert [r.address for r in resolver.resolve("mx1.example.test.", "A", tcp=tcp)] == ["127.0.0.1"]
    assert [r.address for r in resolver.resolve("mx1.example.test.", "AAAA", tcp=tcp)] == ["::1"]
    two = resolver.resolve("mx2.example.test.", "A", tcp=tcp)
    assert sorted(r.address for r in two) == ["127.0.0.2", "127.0.0.3"]


@pytest.mark.parametrize("tcp", TRANSPORTS)
def test_dnsbl_style_listing(server: DNSServer, tcp: bool) -> None:
    resolver = resolver_for(server)
    listed = resolver.resolve("2.0.0.127.zen.test.", "A", tcp=tcp)
    assert [r.address for r in listed] == ["127.0.0.2"]
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("3.0.0.127.zen.test.", "A", tcp=tcp)


@pytest.mark.parametrize("tcp", TRANSPORTS)
def test_txt_strings_quotes_and_semicolons(server: DNSServer, tcp: bool) -> None:
    resolver = resolver_for(server)

    def strings(name: str) -> list[tuple[bytes, ...]]:
        return [tuple(r.strings) for r in resolver.resolve(name, "TXT", tcp=tcp)]

    assert strings("example.test.") == [(b"v=spf1 ip4:127.0.0.1 -all",)]
    assert strings("_mta-sts.example.test.") == [(b"v=STSv1; id=20240101",)]
    # Several strings in one record stay separate, for the caller to join.
    assert strings("_dmarc.example.test.") == [
        (b"v=DMARC1; p=reject; ", b"rua=mailto:d@example.test")
    ]
    assert strings("quoted.example.test.") == [(b'say "hi"; then leave', b"second")]


@pytest.mark.parametrize("tcp", TRANSPORTS)
def test_tlsa_fields(server: DNSServer, tcp: bool) -> None:
    answer = resolver_for(server).resolve("_25._tcp.mx1.example.test.", "TLSA", tcp=tcp)
    (tlsa,) = list(answer)
    assert (tlsa.usage, tlsa.selector, tlsa.mtype) == (3, 1, 1)
    assert tlsa.cert == bytes.fromhex(TLSA_HASH)


@pytest.mark.parametrize("tcp", TRANSPORTS)
def test_noanswer_and_nxdomain_are_distinguished(server: DNSServer, tcp: bool) -> None:
    resolver = resolver_for(server)
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("mx1.example.test.", "MX", tcp=tcp)
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("nope.example.test.", "MX", tcp=tcp)
    # A parent of records with none of its own exists (empty non-terminal).
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("_tcp.mx1.example.test.", "TXT", tcp=tcp)


@pytest.mark.parametrize("tcp", TRANSPORTS)
def test_null_mx(server: DNSServer, tcp: bool) -> None:
    (mx,) = list(resolver_for(server).resolve("null.test.", "MX", tcp=tcp))
    assert mx.preference == 0
    assert mx.exchange == dns.name.root


@pytest.mark.parametrize("tcp", TRANSPORTS)
def test_dropped_name_times_out_within_lifetime(server: DNSServer, tcp: bool) -> None:
    resolver = resolver_for(server, lifetime=0.5)
    started = time.monotonic()
    with pytest.raises(dns.resolver.LifetimeTimeout):
        resolver.resolve("dropped.test.", "A", tcp=tcp)
    assert time.monotonic() - started < 1.5
    # Other names are still answered meanwhile.
    assert resolver.resolve("mx1.example.test.", "A", tcp=tcp)


def test_delay_holds_only_that_name(server: DNSServer) -> None:
    resolver = resolver_for(server)
    started = time.monotonic()
    assert [r.address for r in resolver.resolve("slow.test.", "A")] == ["127.0.0.10"]
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    resolver.resolve("mx1.example.test.", "A")
    assert time.monotonic() - started < 0.3


@pytest.mark.parametrize("tcp", TRANSPORTS)
def test_ttls_as_written(server: DNSServer, tcp: bool) -> None:
    resolver = resolver_for(server)
    assert resolver.resolve("mx1.example.test.", "A", tcp=tcp).rrset.ttl == 300
    assert resolver.resolve("mx2.example.test.", "A", tcp=tcp).rrset.ttl == 60
    assert resolver.resolve("_25._tcp.mx1.example.test.", "TLSA", tcp=tcp).rrset.ttl == 3600


def test_names_are_case_insensitive(server: DNSServer) -> None:
    answer = resolver_for(server).resolve("MX1.Example.TEST.", "A")
    assert [r.address for r in answer] == ["127.0.0.1"]


@pytest.mark.parametrize("tcp", TRANSPORTS)
def test_ad_bit_follows_the_flag(fresh: DNSServer, tcp: bool) -> None:
    resolver = resolver_for(fresh)
    assert not resolver.resolve("example.test.", "MX", tcp=tcp).response.flags & dns.flags.AD
    fresh.ad = True
    assert resolver.resolve("example.test.", "MX", tcp=tcp).response.flags & dns.flags.AD
    with DNSServer(ZONE, ad=True) as validating:
        answer = resolver_for(validating).resolve("example.test.", "MX", tcp=tcp)
        assert answer.response.flags & dns.flags.AD


def test_set_zone_takes_effect(fresh: DNSServer) -> None:
    resolver = resolver_for(fresh)
    assert [r.address for r in resolver.resolve("mx1.example.test.", "A")] == ["127.0.0.1"]
    fresh.set_zone("mx1.example.test. 30 IN A 127.0.0.42\n")
    answer = resolver.resolve("mx1.example.test.", "A")
    assert [r.address for r in answer] == ["127.0.0.42"]
    assert answer.rrset.ttl == 30
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("null.test.", "MX")
    # Its MX records are gone, but as the parent of mx1 the name still exists.
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("example.test.", "MX")


def test_bad_zone_is_rejected_and_keeps_the_old_one(fresh: DNSServer) -> None:
    with pytest.raises(ValueError, match="zone"):
        fresh.set_zone("a.test. 300 IN A not-an-address\n")
    assert resolver_for(fresh).resolve("mx1.example.test.", "A")
    with pytest.raises(ValueError):
        DNSServer("a.test. 300 IN MX ten mx.test.\n")


def test_queries_records_what_was_asked(fresh: DNSServer) -> None:
    # start()'s own readiness check is not counted.
    assert fresh.queries == []
    resolver = resolver_for(fresh)
    resolver.resolve("example.test.", "MX")
    resolver.resolve("_25._tcp.MX1.example.test.", "TLSA", tcp=True)
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("missing.test.", "AAAA")
    assert fresh.queries == [
        ("example.test.", "MX"),
        ("_25._tcp.mx1.example.test.", "TLSA"),
        ("missing.test.", "AAAA"),
    ]
    fresh.clear_queries()
    assert fresh.queries == []


def test_queries_are_bounded(fresh: DNSServer) -> None:
    query = dns.message.make_query("example.test.", "A")
    for _ in range(1010):
        dns.query.tcp(query, fresh.address, port=fresh.port, timeout=2.0)
    assert len(fresh.queries) == 1000


def test_negative_answers_carry_the_soa_when_the_zone_has_one(fresh: DNSServer) -> None:
    fresh.set_zone(
        "test. 3600 IN SOA ns.test. hostmaster.test. 1 7200 900 86400 120\n"
        "a.test. 300 IN A 127.0.0.1\n"
    )
    query = dns.message.make_query("b.test.", "A")
    response = dns.query.udp(query, fresh.address, port=fresh.port, timeout=2.0)
    assert response.rcode() == dns.rcode.NXDOMAIN
    (soa,) = response.authority
    # RFC 2308: the negative TTL is the smaller of the SOA's TTL and its minimum.
    assert (soa.name.to_text(), soa.rdtype, soa.ttl) == ("test.", dns.rdatatype.SOA, 120)


def test_big_answer_is_truncated_over_udp_and_resolver_retries_tcp(fresh: DNSServer) -> None:
    fresh.set_zone("".join(f'big.test. 300 IN TXT "{i:03d}{"x" * 200}"\n' for i in range(10)))
    query = dns.message.make_query("big.test.", "TXT")
    response = dns.query.udp(query, fresh.address, port=fresh.port, timeout=2.0)
    assert response.flags & dns.flags.TC
    assert len(resolver_for(fresh).resolve("big.test.", "TXT")) == 10
    # EDNS clients with a big enough buffer get it all over UDP.
    query = dns.message.make_query("big.test.", "TXT", use_edns=0, payload=4096)
    response = dns.query.udp(query, fresh.address, port=fresh.port, timeout=2.0)
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 10


def test_servers_get_distinct_ports_and_stop_releases_them() -> None:
    with DNSServer(ZONE) as one, DNSServer(ZONE) as two:
        assert one.port != two.port
        port = one.port
    started = time.monotonic()
    one.stop()  # a second stop() is harmless
    assert time.monotonic() - started < 0.5
    # Both sockets were closed, so the port can be bound again at once.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", port))


def test_stop_with_an_open_tcp_connection_and_a_pending_delay() -> None:
    server = DNSServer(ZONE, delay={"slow.test.": 30}).start()
    query = dns.message.make_query("slow.test.", "A").to_wire()
    with socket.create_connection((server.address, server.port), timeout=2.0) as sock:
        sock.sendall(len(query).to_bytes(2, "big") + query)
        # Stop only once the question is in, so the server is inside its 30 s delay.
        deadline = time.monotonic() + 5
        while ("slow.test.", "A") not in server.queries and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ("slow.test.", "A") in server.queries, server.queries
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2.0
        assert sock.recv(2) == b""  # closed, never answered
    assert server.errors == []
