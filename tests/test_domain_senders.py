"""Checks for senders against a real DNS server on loopback (dnslib): DKIM key records of the
configured selectors, reverse DNS (PTR, forward-confirmed) of MX and sending addresses, and
the greeting / EHLO name of a real SMTP server compared with its PTR name."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exporter import cli
from exporter.config import DomainChecks
from exporter.embedded import EmbeddedSMTPServer, free_port
from exporter.maildomain.dkim import parse_key_record
from exporter.maildomain.results import DomainCheck

from .domain_support import reasons, run_check
from .exporter_harness import RunningExporter, wait_for
from .test_dashboards import require_tool

MX = """
s.test. 300 IN MX 10 mx1.s.test.
mx1.s.test. 300 IN A 127.0.0.1
"""


def rsa_p(bits: int) -> str:
    key = rsa.generate_private_key(65537, bits).public_key()
    return base64.b64encode(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).decode()


def small_rsa_p(bits: int = 512) -> str:
    """cryptography generates no keys under 1024 bits; a public key needs only a modulus."""
    key = rsa.RSAPublicNumbers(65537, (1 << (bits - 1)) | 0x1234567).public_key()
    return base64.b64encode(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).decode()


def ed25519_p() -> str:
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    return base64.b64encode(raw).decode()


def txt(text: str) -> str:
    """TXT rdata: strings of at most 255 characters (one record, RFC 6376 §3.6.2.2)."""
    return " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))


def key_zone(records: dict[str, str]) -> str:
    lines = [f"{sel}._domainkey.s.test. 300 IN TXT {txt(rec)}" for sel, rec in records.items()]
    return MX + "\n".join(lines) + "\n"


KEYS = {
    "rsa2048": lambda: f"v=DKIM1; k=rsa; p={rsa_p(2048)}",
    "rsa1024": lambda: f"v=DKIM1; p={rsa_p(1024)}",
    "rsa512": lambda: f"v=DKIM1; k=rsa; p={small_rsa_p()}",
    "ed": lambda: f"v=DKIM1; k=ed25519; p={ed25519_p()}",
    "testing": lambda: f"v=DKIM1; k=rsa; t=y; p={rsa_p(2048)}",
    "revoked": lambda: "v=DKIM1; k=rsa; p=",
    "garbage": lambda: "v=DKIM1; k=rsa; p=not-base64!!",
    "notakey": lambda: "v=DKIM1; k=rsa; p=" + base64.b64encode(b"\x30\x03\x02\x01\x05").decode(),
    "unknowntype": lambda: f"v=DKIM1; k=dsa; p={rsa_p(2048)}",
    "edspki": lambda: (
        "v=DKIM1; k=ed25519; p="
        + base64.b64encode(
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        ).decode()
    ),
    "sha1only": lambda: f"v=DKIM1; h=sha1; p={rsa_p(2048)}",
}


@pytest.fixture(scope="module")
def key_records() -> dict[str, str]:
    return {sel: make() for sel, make in KEYS.items()}


def test_dkim_selectors(dns_server, key_records):
    dns = dns_server(key_zone(key_records))
    selectors = (*KEYS, "missing")
    r = run_check(dns, "s.test", DomainChecks(records=False, dkim_selectors=selectors))
    assert r.success and r.enabled == (DomainCheck.DKIM,)
    assert r.dkim is not None
    got = {k.selector: k for k in r.dkim}
    assert list(got) == list(selectors)

    def row(sel: str) -> tuple:
        k = got[sel]
        return (k.present, k.valid, k.key_type, k.key_size, k.testing, k.revoked)

    assert row("rsa2048") == (True, True, "rsa", 2048, False, False)
    assert row("rsa1024") == (True, True, "rsa", 1024, False, False)  # weak, still usable
    assert row("rsa512") == (True, False, "rsa", 512, False, False)
    assert row("ed") == (True, True, "ed25519", 256, False, False)
    assert row("testing") == (True, True, "rsa", 2048, True, False)
    assert row("revoked") == (True, False, None, None, False, True)
    assert row("garbage") == (True, False, None, None, False, False)
    assert row("notakey") == (True, False, "rsa", None, False, False)
    assert row("unknowntype")[:2] == (True, False)
    assert row("edspki")[:2] == (True, False)
    assert row("sha1only")[:2] == (True, False)
    assert row("missing") == (False, False, None, None, False, False)
    assert got["rsa2048"].record == key_records["rsa2048"]  # the strings joined

    found = reasons(r, "dkim")
    expected = [
        "selector rsa1024: 1024-bit RSA key is weak (use 2048 bits, RFC 8301)",
        "rsa512._domainkey.s.test: 512-bit RSA key: verifiers refuse keys under 1024 bits",
        "selector testing has t=y (testing: receivers may ignore its results)",
        "selector revoked is revoked (empty p=): mail signed with it fails DKIM",
        "garbage._domainkey.s.test: p= is not base64",
        "notakey._domainkey.s.test: p= is not a DER public key",
        "unknowntype._domainkey.s.test: unknown key type k=dsa",
        "edspki._domainkey.s.test: ed25519 p= is 44 bytes, not the raw 32-byte key",
        "sha1only._domainkey.s.test: h= allows only sha1",
        "no key record at missing._domainkey.s.test (mail signed with selector missing",
    ]
    for text in expected:
        assert any(f.startswith("DKIM: " + text) for f in found), (text, found)
    assert len(found) == len(expected), found
    assert not any("rsa2048" in f or "selector ed " in f for f in found)
    # One TXT question per selector, through the cache.
    assert sorted(q for q in dns.queries if q[1] == "TXT") == sorted(
        (f"{s}._domainkey.s.test.", "TXT") for s in selectors
    )


def test_two_key_records_and_a_failed_lookup(dns_server, key_records):
    zone = key_zone({"two": key_records["rsa2048"]}) + (
        f"two._domainkey.s.test. 300 IN TXT {txt(key_records['ed'])}\n"
    )
    dns = dns_server(zone, servfail=["down._domainkey.s.test"])
    r = run_check(dns, "s.test", DomainChecks(records=False, dkim_selectors=("two", "down")))
    two, down = r.dkim
    assert (two.present, two.valid) == (True, False)
    assert (down.present, down.error) == (False, "no nameserver answered (SERVFAIL or refused)")
    assert reasons(r, "dkim") == [
        "DKIM: 2 TXT records at two._domainkey.s.test (verifiers need exactly one)",
        "DKIM: lookup of down._domainkey.s.test TXT failed: no nameserver answered "
        "(SERVFAIL or refused)",
    ]


@pytest.mark.parametrize(
    ("record", "problems"),
    [
        ("k=rsa; v=DKIM1; p=", ["v= must be first and DKIM1"]),
        ("v=DKIM1; k=rsa", ["no p= tag (required)"]),
        ("v=DKIM1; p=; p=", ["tag p= appears twice"]),
        ("v=DKIM1; h=md5; p=", ["h=md5 names no known hash (sha256)"]),
        ("v=DKIM1; bogus; p=", ["malformed tag 'bogus'"]),
        ("v=DKIM1; t=s:y; p=", []),
    ],
)
def test_parse_key_record_problems(record, problems):
    parsed = parse_key_record(record)
    assert parsed.problems == problems
    assert parsed.revoked == ("p=" in record)
    assert parsed.testing == ("t=s:y" in record)


def test_parse_key_record_accepts_folded_base64():
    p = rsa_p(2048)
    folded = " ".join(p[i : i + 60] for i in range(0, len(p), 60))
    parsed = parse_key_record(f"v=DKIM1;\tk=rsa;\r\n p={folded}")
    assert (parsed.problems, parsed.key_type, parsed.key_size) == ([], "rsa", 2048)


# --------------------------------------------------------------------------- reverse DNS

SENDERS = """
s.test. 300 IN MX 10 mx1.s.test.
mx1.s.test. 300 IN A 127.0.0.1
1.0.0.127.in-addr.arpa. 300 IN PTR {ptr}.
{ptr}. 300 IN A 127.0.0.1
2.2.0.192.in-addr.arpa. 300 IN PTR out.s.test.
out.s.test. 300 IN A 192.0.2.2
3.2.0.192.in-addr.arpa. 300 IN PTR liar.s.test.
liar.s.test. 300 IN A 192.0.2.99
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 300 IN PTR out6.s.test.
out6.s.test. 300 IN AAAA 2001:db8::1
"""


@pytest.fixture
def mx_server():
    # aiosmtpd names itself embedded.localhost in its greeting and EHLO reply.
    with EmbeddedSMTPServer(tls="none") as server:
        yield server


def test_sending_addresses(dns_server):
    dns = dns_server(SENDERS.format(ptr="mx1.s.test"))
    sending = ("192.0.2.2", "192.0.2.3", "192.0.2.4", "2001:db8::1")
    r = run_check(dns, "s.test", DomainChecks(records=False, sending_addresses=sending))
    assert r.success and r.enabled == (DomainCheck.REVERSE_DNS,)
    got = {x.address: x for x in r.reverse_dns}
    assert list(got) == list(sending)  # no MX addresses: reverse_dns is off
    ok, liar, none, v6 = (got[a] for a in sending)
    assert (ok.ptr_names, ok.forward_confirmed, ok.confirmed_name) == (
        ("out.s.test",),
        True,
        "out.s.test",
    )
    assert (liar.ptr_names, liar.forward_confirmed) == (("liar.s.test",), False)
    assert (none.ptr_names, none.forward_confirmed, none.error) == ((), False, None)
    assert (v6.forward_confirmed, v6.confirmed_name) == (True, "out6.s.test")
    assert all(x.mx_host is None and x.name_matches is None for x in r.reverse_dns)
    assert reasons(r, "reverse_dns") == [
        "reverse DNS: PTR of sending address 192.0.2.3 (liar.s.test) does not resolve back "
        "to it (not forward-confirmed)",
        "reverse DNS: sending address 192.0.2.4 has no PTR record (receivers refuse or junk "
        "its mail)",
    ]


def test_mx_greeting_matches_its_ptr_name(dns_server, mx_server):
    dns = dns_server(SENDERS.format(ptr="embedded.localhost"))
    checks = DomainChecks(records=False, reverse_dns=True, smtp_port=mx_server.port)
    r = run_check(dns, "s.test", checks)
    (mx,) = r.reverse_dns
    assert (mx.address, mx.mx_host, mx.confirmed_name) == (
        "127.0.0.1",
        "mx1.s.test",
        "embedded.localhost",
    )
    assert (mx.greeting_name, mx.ehlo_name, mx.name_matches) == (
        "embedded.localhost",
        "embedded.localhost",
        True,
    )
    assert r.findings == ()


def test_mx_greeting_name_mismatch(dns_server, mx_server):
    dns = dns_server(SENDERS.format(ptr="mx1.s.test"))
    checks = DomainChecks(
        records=False, reverse_dns=True, smtp_port=mx_server.port, sending_addresses=("192.0.2.2",)
    )
    r = run_check(dns, "s.test", checks)
    mx, out = r.reverse_dns
    assert (mx.forward_confirmed, mx.greeting_name, mx.name_matches) == (
        True,
        "embedded.localhost",
        False,
    )
    assert (out.address, out.forward_confirmed, out.name_matches) == ("192.0.2.2", True, None)
    assert reasons(r, "reverse_dns") == [
        "reverse DNS: 127.0.0.1 (MX mx1.s.test) names itself embedded.localhost in its "
        "greeting / EHLO, its forward-confirmed PTR name is mx1.s.test"
    ]


def test_mx_without_ptr_and_unreachable(dns_server):
    dns = dns_server(MX)
    checks = DomainChecks(records=False, reverse_dns=True, smtp_port=free_port("127.0.0.1"))
    r = run_check(dns, "s.test", checks)
    (mx,) = r.reverse_dns
    assert (mx.ptr_names, mx.forward_confirmed, mx.name_matches) == ((), False, None)
    assert mx.error is None and mx.greeting_error is not None
    assert mx.greeting_error.startswith("connect:")
    found = reasons(r, "reverse_dns")
    assert found[0] == (
        "reverse DNS: 127.0.0.1 (MX mx1.s.test) has no PTR record (receivers refuse or junk "
        "its mail)"
    )
    assert found[1].startswith("reverse DNS: no greeting from 127.0.0.1:")


# --------------------------------------------------------------------------- surfaces


@pytest.fixture
def senders_config(dns_server, key_records, tmp_path):
    """sender.test: MX mx1.sender.test at 127.0.0.1 (aiosmtpd, which says
    embedded.localhost), whose PTR is mx1.sender.test (forward-confirmed: the greeting names
    another host); DKIM selectors s1 (2048-bit RSA), old (revoked), weak (1024 bits, t=y);
    a sending address 192.0.2.9 without PTR."""
    weak = key_records["rsa1024"].replace("v=DKIM1;", "v=DKIM1; t=y;")
    with EmbeddedSMTPServer(tls="none") as mx:
        dns = dns_server(
            f"""
sender.test. 300 IN MX 10 mx1.sender.test.
mx1.sender.test. 300 IN A 127.0.0.1
1.0.0.127.in-addr.arpa. 300 IN PTR mx1.sender.test.
s1._domainkey.sender.test. 300 IN TXT {txt(key_records["rsa2048"])}
old._domainkey.sender.test. 300 IN TXT {txt(key_records["revoked"])}
weak._domainkey.sender.test. 300 IN TXT {txt(weak)}
"""
        )
        config = tmp_path / "config.yml"
        config.write_text(
            f"""
dns: {{nameservers: ["{dns.address}:{dns.port}"], timeout: 1s}}
modules:
  m:
    tls: none
    tls_required: false
    timeout: 2s
    domain:
      name: sender.test
      interval: 1m
      records: false
      dkim_selectors: [s1, old, weak]
      reverse_dns: true
      sending_addresses: [192.0.2.9]
      smtp_port: {mx.port}
targets:
  - {{target: "127.0.0.1:{mx.port}", module: m, interval: 5s}}
"""
        )
        yield config


def test_sender_checks_in_metrics(senders_config):
    exporter = RunningExporter(senders_config).start()
    try:
        base = {"domain": "sender.test", "module": "m"}
        assert wait_for(
            lambda: exporter.value("smtp_domain_check_success", **base) == 1, timeout=20
        )
        samples = exporter.samples()

        def value(name: str, **labels: str) -> float | None:
            want = {**base, **labels}
            hits = [v for (n, lab), v in samples.items() if n == name and dict(lab) == want]
            assert len(hits) <= 1, (name, labels)
            return hits[0] if hits else None

        for sel, present, valid, testing, revoked in [
            ("s1", 1, 1, 0, 0),
            ("old", 1, 0, 0, 1),
            ("weak", 1, 1, 1, 0),
        ]:
            got = [
                value(f"smtp_domain_dkim_{m}", selector=sel)
                for m in ("key_present", "key_valid", "testing", "revoked")
            ]
            assert got == [present, valid, testing, revoked], sel
        assert value("smtp_domain_dkim_key_size", selector="s1", key_type="rsa") == 2048
        assert value("smtp_domain_dkim_key_size", selector="weak", key_type="rsa") == 1024
        assert not any(
            n == "smtp_domain_dkim_key_size" and dict(lab)["selector"] == "old"
            for n, lab in samples
        )
        mx = {"address": "127.0.0.1", "mx_host": "mx1.sender.test"}
        assert value("smtp_domain_ptr_present", **mx) == 1
        assert value("smtp_domain_ptr_forward_confirmed", **mx) == 1
        assert value("smtp_domain_ptr_greeting_match", **mx) == 0
        out = {"address": "192.0.2.9"}
        assert value("smtp_domain_ptr_present", **out) == 0
        assert value("smtp_domain_ptr_forward_confirmed", **out) == 0
        assert value("smtp_domain_ptr_greeting_match", **out) is None
        assert value("smtp_domain_findings", check="dkim") == 3  # revoked, weak, t=y
        assert value("smtp_domain_findings", check="reverse_dns") == 2  # no PTR, greeting
        # The PTR families mix series with and without mx_host: still a valid exposition.
        text = exporter.get("/metrics")[1]
        proc = subprocess.run(
            [require_tool("promtool"), "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        exporter.stop()


def test_sender_checks_in_once_output(senders_config, capsys):
    args = ["--config.file", str(senders_config), "--once"]
    assert cli.main(args) == 0  # findings are not failures
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("DOMAIN"))
    assert header.split()[-2:] == ["DKIM", "PTR"]
    row = next(line for line in table.splitlines() if line.startswith("sender.test"))
    assert "2/3 ok, old REVOKED, weak weak 1024" in row, row
    assert "1/2 FCrDNS, 127.0.0.1 greeting embedded.localhost, 192.0.2.9 NO PTR" in row, row
    assert "sender.test: reverse_dns: reverse DNS: sending address 192.0.2.9 has no PTR" in table
    assert "sender.test: dkim: DKIM: selector weak has t=y" in table

    assert cli.main([*args, "--output", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (domain,) = [obj for obj in lines if obj.get("type") == "domain"]
    assert [(k["selector"], k["valid"], k["key_size"]) for k in domain["dkim"]] == [
        ("s1", True, 2048),
        ("old", False, None),
        ("weak", True, 1024),
    ]
    assert [
        (p["address"], p["mx_host"], p["confirmed_name"], p["greeting_name"], p["name_matches"])
        for p in domain["reverse_dns"]
    ] == [
        ("127.0.0.1", "mx1.sender.test", "mx1.sender.test", "embedded.localhost", False),
        ("192.0.2.9", None, None, None, None),
    ]

    # A revoked key in use and an address without PTR stop mail: CRITICAL.
    assert cli.main([*args, "--output", "nagios"]) == 2
    nagios = capsys.readouterr().out
    assert nagios.startswith("SMTP CRITICAL - 1 of 1 targets OK, 0 of 1 domains OK")
    assert "[CRITICAL] sender.test: dkim: DKIM: selector old is revoked" in nagios


def test_mx_ptr_not_confirmed_skips_the_name_comparison(dns_server, mx_server):
    """The PTR name is what the greeting says, but it resolves elsewhere: one finding (not
    forward-confirmed), and no comparison with a name that does not count."""
    dns = dns_server(
        MX + "1.0.0.127.in-addr.arpa. 300 IN PTR embedded.localhost.\n"
        "embedded.localhost. 300 IN A 127.0.0.9\n"
    )
    checks = DomainChecks(records=False, reverse_dns=True, smtp_port=mx_server.port)
    r = run_check(dns, "s.test", checks)
    (mx,) = r.reverse_dns
    assert (mx.ptr_names, mx.forward_confirmed, mx.greeting_name, mx.name_matches) == (
        ("embedded.localhost",),
        False,
        "embedded.localhost",
        None,
    )
    assert reasons(r) == [
        "reverse DNS: PTR of 127.0.0.1 (MX mx1.s.test) (embedded.localhost) does not resolve "
        "back to it (not forward-confirmed)"
    ]
