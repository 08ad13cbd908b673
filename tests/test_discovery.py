"""MX discovery and address families against a real DNS server on loopback (dnslib) and
real SMTP servers (aiosmtpd)."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest

from exporter import config, probe
from exporter.discovery import expand, make_resolver

from .exporter_harness import RunningExporter, wait_for
from .servers.dns import DNSServer


def cfg_text(
    dns: DNSServer,
    port: int,
    target: str,
    *,
    tls: str = "none",
    extra: str = "",
    interval: str = "1m",
) -> str:
    return f"""
dns: {{nameservers: ["127.0.0.1:{dns.port}"], timeout: 1s}}
modules:
  mx: {{tls: {tls}, port: {port}, timeout: 1s{extra}}}
targets:
  - {{target: "{target}", module: mx, interval: {interval}}}
"""


def discover(text: str):
    cfg = config.parse(text)
    (target,) = cfg.targets
    return target, asyncio.run(expand(target, make_resolver(cfg.dns)))


def test_mx_hosts_probed_by_address_with_labels(dns_server, smtp_server):
    server = smtp_server("none")
    dns = dns_server("""
example.test. 300 IN MX 20 mx2.example.test.
example.test. 300 IN MX 10 mx1.example.test.
mx1.example.test. 300 IN A 127.0.0.1
mx2.example.test. 60 IN A 127.0.0.1
""")
    _, d = discover(cfg_text(dns, server.port, "mx:example.test"))
    assert d.ok and d.mx_hosts == 2 and not d.null_mx and not d.implicit
    assert [dict(c.labels) for c in d.concrete] == [
        {"mx_host": "mx1.example.test", "mx_preference": "10"},
        {"mx_host": "mx2.example.test", "mx_preference": "20"},
    ]
    assert {c.host for c in d.concrete} == {"127.0.0.1"}
    assert [c.module.tls_server_name for c in d.concrete] == [
        "mx1.example.test",
        "mx2.example.test",
    ]
    assert 55 < d.expires - time.monotonic() <= 60  # the shortest TTL
    results = [asyncio.run(probe.run(c)) for c in d.concrete]
    assert all(r.success for r in results)


def test_certificate_checked_against_the_mx_host_name(dns_server, smtp_server, ca, ca_file):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx1.example.test").configure_cert(ctx)
    from exporter.embedded import EmbeddedSMTPServer

    with EmbeddedSMTPServer(tls="starttls", ssl_context=ctx) as server:
        dns = dns_server(
            "example.test. 300 IN MX 10 mx1.example.test.\nmx1.example.test. 300 IN A 127.0.0.1\n"
        )
        _, d = discover(
            cfg_text(
                dns,
                server.port,
                "mx:example.test",
                tls="starttls",
                extra=f", tls_ca_file: {ca_file}",
            )
        )
        (c,) = d.concrete
        r = asyncio.run(probe.run(c))
    assert r.success, r.failure
    assert r.tls is not None and r.tls.hostname_match and r.tls.server_name == "mx1.example.test"


def test_no_mx_falls_back_to_the_domain_address(dns_server, smtp_server):
    server = smtp_server("none")
    dns = dns_server('plain.test. 300 IN A 127.0.0.1\nplain.test. 300 IN TXT "v=spf1 -all"\n')
    _, d = discover(cfg_text(dns, server.port, "mx:plain.test"))
    assert d.ok and d.implicit and d.mx_hosts == 1
    (c,) = d.concrete
    assert dict(c.labels) == {"mx_host": "plain.test", "mx_preference": "0", "mx_implicit": "true"}
    assert asyncio.run(probe.run(c)).success


def test_null_mx_is_reported_not_probed(dns_server):
    dns = dns_server("nomail.test. 300 IN MX 0 .\n")
    _, d = discover(cfg_text(dns, 25, "mx:nomail.test"))
    assert d.ok and d.null_mx and d.concrete == () and d.error is None


def test_nxdomain(dns_server):
    dns = dns_server("other.test. 300 IN A 127.0.0.1\n")
    _, d = discover(cfg_text(dns, 25, "mx:missing.invalid"))
    assert not d.ok and d.concrete == () and "NXDOMAIN" in (d.error or "")


def test_dns_timeout_keeps_previous_hosts(dns_server):
    dns = dns_server(
        "example.test. 300 IN MX 10 mx1.example.test.\nmx1.example.test. 300 IN A 127.0.0.1\n"
    )
    text = cfg_text(dns, 25, "mx:example.test")
    cfg = config.parse(text)
    (target,) = cfg.targets
    resolver = make_resolver(cfg.dns)
    first = asyncio.run(expand(target, resolver))
    dns.drop = ["example.test."]
    start = time.monotonic()
    second = asyncio.run(expand(target, resolver, first))
    elapsed = time.monotonic() - start
    assert not second.ok and "timeout" in (second.error or "")
    assert second.concrete == first.concrete
    assert elapsed < 1.5  # dns.timeout is 1 s


def test_both_families_probed_and_labelled(dns_server):
    from exporter.embedded import EmbeddedSMTPServer, free_port

    port = free_port()
    with (
        EmbeddedSMTPServer(tls="none", port=port) as v4,
        EmbeddedSMTPServer(tls="none", host="::1", port=port) as v6,
    ):
        dns = dns_server(
            "dual.test. 300 IN MX 10 mx.dual.test.\n"
            "mx.dual.test. 300 IN A 127.0.0.1\nmx.dual.test. 300 IN AAAA ::1\n"
        )
        _, d = discover(cfg_text(dns, port, "mx:dual.test", extra=", ip_protocol: both"))
        families = {dict(c.labels)["ip_protocol"]: c for c in d.concrete}
        assert set(families) == {"ip4", "ip6"}
        r4 = asyncio.run(probe.run(families["ip4"]))
        r6 = asyncio.run(probe.run(families["ip6"]))
        assert v4 and v6
    assert r4.success and r4.address == "127.0.0.1"
    assert r6.success and r6.address == "::1"


def test_static_target_with_both_families(smtp_server, tmp_path):
    """Without DNS: 127.0.0.1 is IPv4 only, so the ip6 probe fails in resolve, labelled."""
    server = smtp_server("none")
    path = tmp_path / "c.yml"
    path.write_text(f"""
modules: {{m: {{tls: none, timeout: 1s, ip_protocol: both}}}}
targets: [{{target: "127.0.0.1:{server.port}", module: m, interval: 1s}}]
""")
    exp = RunningExporter(path).start()
    try:
        assert wait_for(lambda: exp.value("smtp_probe_success", ip_protocol="ip6") is not None)
        assert exp.value("smtp_probe_success", ip_protocol="ip4") == 1
        assert exp.value("smtp_probe_success", ip_protocol="ip6") == 0
        assert exp.value("smtp_probe_failed_phase", ip_protocol="ip6", phase="resolve") == 1
    finally:
        exp.stop()


def test_exporter_reresolves_after_ttl_and_reports_discovery(dns_server, smtp_server, tmp_path):
    server = smtp_server("none")
    dns = dns_server(
        "example.test. 1 IN MX 10 mx1.example.test.\n"
        "mx1.example.test. 1 IN A 127.0.0.1\n"
        "nomail.test. 300 IN MX 0 .\n"
    )
    path = tmp_path / "c.yml"
    path.write_text(
        cfg_text(dns, server.port, "mx:example.test", interval="1s")
        + '  - {target: "mx:nomail.test", module: mx, interval: 1s}\n'
        + '  - {target: "mx:gone.invalid", module: mx, interval: 1s}\n'
    )
    exp = RunningExporter(path).start()
    try:
        assert wait_for(lambda: exp.value("smtp_probe_success", mx_host="mx1.example.test") == 1)
        assert exp.value("smtp_mx_hosts", target="mx:example.test") == 1
        assert wait_for(
            lambda: (
                exp.value("smtp_mx_lookup_success", target="mx:gone.invalid") is not None
                and exp.value("smtp_mx_null", target="mx:nomail.test") is not None
            )
        )
        assert exp.value("smtp_mx_null", target="mx:nomail.test") == 1
        assert exp.value("smtp_mx_lookup_success", target="mx:nomail.test") == 1
        assert exp.value("smtp_mx_lookup_success", target="mx:gone.invalid") == 0
        # Neither is an empty report: each is a failed result of its own, phase mx_lookup.
        assert exp.value("smtp_probe_success", target="mx:nomail.test") == 0
        assert exp.value("smtp_probe_failed_phase", target="mx:nomail.test", phase="mx_lookup") == 1
        assert exp.value("smtp_probe_success", target="mx:gone.invalid") == 0
        dns.set_zone(
            "example.test. 1 IN MX 10 mx1.example.test.\n"
            "example.test. 1 IN MX 20 mx2.example.test.\n"
            "mx1.example.test. 1 IN A 127.0.0.1\nmx2.example.test. 1 IN A 127.0.0.1\n"
        )
        assert wait_for(
            lambda: exp.value("smtp_probe_success", mx_host="mx2.example.test") == 1, 10
        )
        assert exp.value("smtp_mx_hosts", target="mx:example.test") == 2
        # Back to one MX host: the other's series disappear.
        dns.set_zone(
            "example.test. 1 IN MX 20 mx2.example.test.\nmx2.example.test. 1 IN A 127.0.0.1\n"
        )
        assert wait_for(
            lambda: exp.value("smtp_probes_total", mx_host="mx1.example.test") is None, 10
        )
    finally:
        exp.stop()
    assert not dns.errors


def test_bad_mx_targets_rejected_in_config():
    with pytest.raises(config.ConfigError, match="mx: takes a mail domain"):
        config.parse("modules: {m: {}}\ntargets: [{target: 'mx:192.0.2.1', module: m}]")
    with pytest.raises(config.ConfigError, match=r"dns.nameservers\[0\]"):
        config.parse("dns: {nameservers: [not-an-ip]}")


def test_probe_endpoint_expands_mx(dns_server, smtp_server, tmp_path):
    import urllib.request

    server = smtp_server("none")
    dns = dns_server(
        "example.test. 300 IN MX 10 mx1.example.test.\n"
        "example.test. 300 IN MX 20 mx2.example.test.\n"
        "mx1.example.test. 300 IN A 127.0.0.1\nmx2.example.test. 300 IN A 127.0.0.1\n"
    )
    path = tmp_path / "c.yml"
    path.write_text(cfg_text(dns, server.port, "mx:example.test"))
    exp = RunningExporter(path).start()
    try:
        url = f"{exp.url}/probe?target=mx:example.test&module=mx"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
    finally:
        exp.stop()
    assert (
        'smtp_probe_success{target="mx:example.test",module="mx",mx_host="mx1.example.test"' in text
    )
    assert text.count("smtp_probe_success{") == 2
