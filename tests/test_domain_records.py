"""MX, SPF, DMARC and TLS-RPT checks against a real DNS server on loopback (dnslib)."""

from __future__ import annotations

import time

import pytest

from exporter.config import DomainChecks
from exporter.maildomain.records import parse_dmarc, parse_tlsrpt
from exporter.maildomain.results import DomainCheck
from exporter.maildomain.spf import parse_spf

from .domain_support import reasons, run_check

GOOD = """
example.test. 300 IN MX 10 mx1.example.test.
example.test. 300 IN MX 20 mx2.example.test.
mx1.example.test. 300 IN A 127.0.0.1
mx2.example.test. 300 IN A 127.0.0.2
mx2.example.test. 300 IN AAAA ::1
example.test. 300 IN TXT "v=spf1 mx include:_spf.example.test " "ip4:192.0.2.0/24 -all"
example.test. 300 IN TXT "google-site-verification=abc"
_spf.example.test. 300 IN TXT "v=spf1 a:out.example.test ip6:2001:db8::/32 ~all"
_dmarc.example.test. 300 IN TXT "v=DMARC1; p=reject; rua=mailto:d@example.test; pct=100"
_smtp._tls.example.test. 300 IN TXT "v=TLSRPTv1; rua=mailto:tls@example.test,https://r.example.test/x"
"""


def test_a_well_configured_domain_has_no_findings(dns_server):
    dns = dns_server(GOOD)
    r = run_check(dns, "Example.Test.")
    assert r.success and r.error is None, r
    assert r.findings == ()
    assert r.domain == "example.test"
    assert r.enabled == (DomainCheck.MX, DomainCheck.SPF, DomainCheck.DMARC, DomainCheck.TLSRPT)
    assert r.finding_counts() == dict.fromkeys(r.enabled, 0)
    assert r.mx is not None and r.mx.records == 2 and not r.mx.null_mx
    assert [(h.preference, h.host, h.addresses) for h in r.mx.hosts] == [
        (10, "mx1.example.test", ("127.0.0.1",)),
        (20, "mx2.example.test", ("127.0.0.2", "::1")),
    ]
    assert r.records is not None
    spf, dmarc, tlsrpt = r.records.spf, r.records.dmarc, r.records.tlsrpt
    # mx + include here, a: in the included record: 3 (strings of one record are joined)
    assert (spf.valid, spf.lookups, spf.void_lookups) == (True, 3, 0)
    assert spf.record == "v=spf1 mx include:_spf.example.test ip4:192.0.2.0/24 -all"
    assert (dmarc.valid, dmarc.policy) == (True, "reject")
    assert tlsrpt.valid
    assert r.mta_sts is None and r.dane is None and r.dnsbl is None
    assert 0 < r.duration_seconds < 5 and abs(r.started_at - time.time()) < 10


def test_records_off_leaves_only_the_mx_lookup(dns_server):
    dns = dns_server(GOOD)
    r = run_check(dns, "example.test", DomainChecks(records=False))
    assert r.success and r.enabled == () and r.records is None and r.findings == ()
    assert {q for q in dns.queries if q[1] == "TXT"} == set()


def test_null_mx(dns_server):
    dns = dns_server('nomail.test. 300 IN MX 0 .\nnomail.test. 300 IN TXT "v=spf1 -all"\n')
    r = run_check(dns, "nomail.test")
    assert r.success and r.mx is not None and r.mx.null_mx and r.mx.records == 0
    assert r.mx.hosts == ()
    assert not reasons(r, "mx") and reasons(r, "dmarc") == [
        "DMARC: no record at _dmarc.nomail.test"
    ]
    assert reasons(r, "tlsrpt") == ["TLS-RPT: no record at _smtp._tls.nomail.test"]


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("other.test. 300 IN A 127.0.0.1\n", "MX: nxd.test does not exist (NXDOMAIN)"),
        ("nxd.test. 300 IN A 127.0.0.1\n", "MX: no MX records (senders fall back"),
        (
            "nxd.test. 300 IN MX 0 .\nnxd.test. 300 IN MX 10 mx.nxd.test.\n"
            "mx.nxd.test. 300 IN A 127.0.0.1\n",
            "MX: null MX mixed with other MX records (RFC 7505 §3)",
        ),
        ("nxd.test. 300 IN MX 10 gone.nxd.test.\n", "MX: gone.nxd.test has no A/AAAA address"),
    ],
)
def test_mx_findings(dns_server, zone, expected):
    r = run_check(dns_server(zone), "nxd.test")
    assert r.success
    assert any(x.startswith(expected) for x in reasons(r, "mx")), reasons(r)


def _zone(spf: list[str] | str, extra: str = "", dmarc: str | None = None) -> str:
    spfs = [spf] if isinstance(spf, str) else spf
    lines = ["d.test. 300 IN MX 10 mx.d.test.", "mx.d.test. 300 IN A 127.0.0.1"]
    lines += [f"d.test. 300 IN TXT {s}" for s in spfs]
    if dmarc is not None:
        lines.append(f"_dmarc.d.test. 300 IN TXT {dmarc}")
    return "\n".join(lines) + "\n" + extra


def _includes(n: int, prefix: str = "i") -> str:
    """A chain: i0 includes i1 ... each with one 'a' term."""
    out = []
    for k in range(n):
        nxt = f" include:{prefix}{k + 1}.d.test" if k + 1 < n else ""
        out.append(f'{prefix}{k}.d.test. 300 IN TXT "v=spf1 a{nxt} -all"')
    return "\n".join(out) + "\n"


@pytest.mark.parametrize(
    ("spf", "extra", "valid", "lookups", "expected"),
    [
        (
            ['"v=spf1 -all"', '"v=spf1 mx -all"'],
            "",
            False,
            0,
            "SPF: 2 records (RFC 7208 allows one)",
        ),
        (
            '"v=spf1 include:i0.d.test -all"',
            _includes(6),
            False,
            12,
            "SPF: 12 DNS lookups (limit 10)",
        ),
        ('"v=spf1 include:i0.d.test -all"', _includes(4), True, 8, None),
        ('"v=spf1 a mx foo:bar -all"', "", False, 2, "SPF: unknown mechanism 'foo:bar'"),
        (
            '"v=spf1 ip4:192.0.2.300 -all"',
            "",
            False,
            0,
            "SPF: 'ip4:192.0.2.300': not an IP address",
        ),
        ('"v=spf1 ip4:192.0.2.0/33 -all"', "", False, 0, "SPF: 'ip4:192.0.2.0/33': prefix length"),
        ('"v=spf1 ip6:192.0.2.1 -all"', "", False, 0, "SPF: 'ip6:192.0.2.1': not an IPv6 address"),
        ('"v=spf1 a/24//129 -all"', "", False, 0, "SPF: 'a/24//129': prefix length out of range"),
        ('"v=spf1 include -all"', "", False, 0, "SPF: 'include': needs ':domain'"),
        ('"v=spf1 all:x"', "", False, 0, "SPF: 'all:x': takes no argument"),
        (
            '"v=spf1 redirect=a.d.test redirect=b.d.test"',
            "",
            False,
            1,
            "SPF: 'redirect' appears twice",
        ),
        ('"v=spf1 +all"', "", True, 0, "SPF: '+all' lets any host send mail as the domain"),
        (
            '"v=spf1 include:none.d.test -all"',
            "none.d.test. 300 IN A 127.0.0.1\n",
            False,
            1,
            "SPF: include:none.d.test has no SPF record",
        ),
        (
            '"v=spf1 include:loop.d.test -all"',
            'loop.d.test. 300 IN TXT "v=spf1 include:d.test"\n',
            False,
            2,
            "SPF: include:d.test loops back (via d.test -> loop.d.test)",
        ),
        (
            '"v=spf1 include:i0.d.test -all"',
            _includes(3, "i").replace('"v=spf1 a -all"', '"v=spf1 bogus"'),
            False,
            5,
            "SPF: in i2.d.test: unknown mechanism 'bogus'",
        ),
        ('"v=spf1 redirect=r.d.test"', 'r.d.test. 300 IN TXT "v=spf1 mx -all"\n', True, 2, None),
        ('"v=spf1 mx redirect=r.d.test -all"', "", True, 1, None),  # redirect ignored with all
        ('"v=spf1 exists:%{i}.%{h}._spf.d.test mx:%{d} -all"', "", True, 2, None),
        ('"v=spf1 exists:%{q}.x.test -all"', "", False, 0, "SPF: 'exists:%{q}.x.test': needs"),
        ('"v=spf1 ptr a:mail.d.test/24 mx//64 ~all"', "", True, 3, None),
        ('"v=spf1 unknownmod=x -all"', "", True, 0, None),  # unknown modifiers are ignored
    ],
)
def test_spf(dns_server, spf, extra, valid, lookups, expected):
    r = run_check(dns_server(_zone(spf, extra)), "d.test")
    assert r.success and r.records is not None
    got = reasons(r, "spf")
    assert (r.records.spf.valid, r.records.spf.lookups) == (valid, lookups), got
    if expected is None:
        assert got == []
    else:
        assert any(g.startswith(expected) for g in got), got


def test_spf_void_lookups_counted(dns_server):
    spf = '"v=spf1 include:v1.d.test include:v2.d.test include:v3.d.test -all"'
    r = run_check(dns_server(_zone(spf)), "d.test")
    assert r.records is not None and r.records.spf.void_lookups == 3
    assert "SPF: 3 void lookups (limit 2)" in reasons(r, "spf")


def test_no_spf_record(dns_server):
    r = run_check(dns_server(_zone('"google-site-verification=x"')), "d.test")
    assert r.records is not None and not r.records.spf.valid
    assert reasons(r, "spf") == ["SPF: no SPF record at d.test"]


def test_hostile_spf_cannot_run_away(dns_server):
    """A long include chain and a huge record: bounded fetches and terms, prompt answer."""
    text = "v=spf1 " + " ".join(f"ip4:192.0.2.{i % 250}" for i in range(250)) + " -all"
    huge = " ".join(f'"{text[i : i + 200]}"' for i in range(0, len(text), 200))
    extra = _includes(60) + f"huge.d.test. 300 IN TXT {huge}\n"
    dns = dns_server(_zone('"v=spf1 include:huge.d.test include:i0.d.test -all"', extra))
    start = time.monotonic()
    r = run_check(dns, "d.test")
    assert time.monotonic() - start < 5
    assert r.records is not None and not r.records.spf.valid
    got = reasons(r, "spf")
    assert any(g.startswith("SPF: more than ") and g.endswith("(limit 10)") for g in got), got
    txt_queries = [q for q in dns.queries if q[1] == "TXT"]
    assert len(txt_queries) <= 30
    assert any("252 terms (stopped at 200)" in g for g in got), got


@pytest.mark.parametrize(
    ("dmarc", "valid", "policy", "expected"),
    [
        ('"v=DMARC1; p=quarantine; sp=reject; adkim=s"', True, "quarantine", None),
        (
            '"v=DMARC1; p=none; rua=mailto:x@d.test"',
            True,
            "none",
            "DMARC: p=none (monitoring only)",
        ),
        ('"v=DMARC1; rua=mailto:x@d.test"', False, None, "DMARC: no p= tag (required)"),
        ('"v=DMARC1; p=block"', False, None, "DMARC: p=block is not none, quarantine or reject"),
        ('"v=DMARC1; p=reject; pct=150"', False, None, "DMARC: pct=150 is not 0-100"),
        ('"p=reject; v=DMARC1"', False, None, "DMARC: no record at _dmarc.d.test"),
        ('"v=dmarc1; p=reject"', False, None, "DMARC: record must start with v=DMARC1"),
        ('"v=DMARC1; p=reject; garbage"', False, None, "DMARC: malformed tag 'garbage'"),
    ],
)
def test_dmarc(dns_server, dmarc, valid, policy, expected):
    r = run_check(dns_server(_zone('"v=spf1 -all"', dmarc=dmarc)), "d.test")
    assert r.records is not None
    assert (r.records.dmarc.valid, r.records.dmarc.policy) == (valid, policy)
    got = reasons(r, "dmarc")
    assert got == ([] if expected is None else [expected])


def test_two_dmarc_records(dns_server):
    extra = '_dmarc.d.test. 300 IN TXT "v=DMARC1; p=none"\n'
    zone = _zone('"v=spf1 -all"', extra, dmarc='"v=DMARC1; p=reject"')
    r = run_check(dns_server(zone), "d.test")
    assert r.records is not None and not r.records.dmarc.valid
    assert reasons(r, "dmarc") == ["DMARC: 2 records at _dmarc.d.test (only one is allowed)"]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ('"v=TLSRPTv1; rua=https://reports.d.test/tlsrpt"', None),
        ('"v=TLSRPTv1;"', "TLS-RPT: no rua= (where reports go; required)"),
        ('"v=TLSRPTv1; rua=ftp://x"', "TLS-RPT: rua: 'ftp://x' is neither mailto: nor https:"),
        ('"v=TLSRPTv2; rua=mailto:a@d.test"', "TLS-RPT: no record at _smtp._tls.d.test"),
        ('"v=TLSRPTv1, rua=mailto:a@d.test"', "TLS-RPT: record must start with v=TLSRPTv1"),
    ],
)
def test_tlsrpt(dns_server, record, expected):
    extra = f"_smtp._tls.d.test. 300 IN TXT {record}\n"
    r = run_check(dns_server(_zone('"v=spf1 -all"', extra)), "d.test")
    assert r.records is not None
    assert r.records.tlsrpt.valid == (expected is None)
    assert reasons(r, "tlsrpt") == ([] if expected is None else [expected])


def test_dns_that_drops_queries_ends_by_the_deadline(dns_server):
    dns = dns_server(GOOD, drop=["example.test."])
    start = time.monotonic()
    r = run_check(
        dns,
        "example.test",
        DomainChecks(mta_sts=True, dane=True, dnsbl=("bl.test",)),
        timeout=1.5,
        dns_timeout=10.0,  # the check's deadline, not the resolver's timeout, ends it
    )
    elapsed = time.monotonic() - start
    assert 1.4 < elapsed < 1.5 + 1.0
    assert not r.success and r.error is not None and r.error.startswith("MX lookup failed")
    assert r.records is None


def test_a_slow_txt_answer_is_a_finding_not_a_failure(dns_server):
    dns = dns_server(GOOD, drop=["_dmarc.example.test."])
    r = run_check(dns, "example.test", timeout=2.0)
    assert r.success
    assert reasons(r, "dmarc") == ["DMARC: lookup of _dmarc.example.test TXT failed: timeout"]
    assert r.records is not None and r.records.spf.valid


# --- the pure parsers ---------------------------------------------------------------------


def test_parse_spf_counts_and_problems():
    rec = parse_spf("v=spf1 a mx ptr exists:x.test include:y.test redirect=z.test")
    assert (rec.lookups, rec.includes, rec.redirect, rec.problems) == (
        6,
        ["y.test"],
        "z.test",
        [],
    )
    assert parse_spf("v=spf1 -all\u00e9").problems == ["record is not ASCII"]
    assert parse_spf("spf1 -all").problems == ["record does not start with v=spf1"]


def test_parse_dmarc_and_tlsrpt():
    assert parse_dmarc("v=DMARC1;p=Reject") == ("reject", [])
    assert parse_dmarc("v=DMARC1; p=reject; rua=bad uri")[1] == ["rua: 'bad uri' is not a URI"]
    assert parse_tlsrpt("v=TLSRPTv1; rua=mailto:a@b.test") == []
    assert parse_tlsrpt("v=TLSRPTv1; rua=mailto:nobody") == [
        "rua: 'mailto:nobody' is neither mailto: nor https:"
    ]
