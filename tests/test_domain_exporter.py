"""Mail-domain checks through the exporter: scheduled, exported as metrics, and in --once
(table, JSON, Nagios), against a real DNS server, HTTPS policy server and STARTTLS MX."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter import cli
from exporter.embedded import EmbeddedSMTPServer

from .domain_support import server_context_for, tlsa_3_1_1
from .exporter_harness import RunningExporter, wait_for
from .servers.https import HTTPSServer, Response


@dataclass
class Domain:
    config: Path
    mx_port: int


@pytest.fixture
def domain_setup(dns_server, ca, ca_file, tmp_path) -> Iterator[Domain]:
    """ex.test: MX mx1.ex.test (a STARTTLS server on loopback) with a matching TLSA record,
    SPF, DMARC p=none (a finding), TLS-RPT, an MTA-STS policy in enforce mode that names
    mx1, and the MX address listed on bl.test (127.0.0.2) but not on clean.test."""
    mx_ctx, leaf = server_context_for(ca, "mx1.ex.test")
    sts_ctx, _ = server_context_for(ca, "mta-sts.ex.test")
    policy = b"version: STSv1\nmode: enforce\nmx: mx1.ex.test\nmax_age: 604800\n"
    with (
        EmbeddedSMTPServer(tls="starttls", ssl_context=mx_ctx) as mx,
        HTTPSServer(sts_ctx, {"/.well-known/mta-sts.txt": Response(200, policy)}) as web,
    ):
        dns = dns_server(
            f"""
ex.test. 300 IN MX 10 mx1.ex.test.
mx1.ex.test. 300 IN A 127.0.0.1
ex.test. 300 IN TXT "v=spf1 mx include:_spf.ex.test -all"
_spf.ex.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.ex.test. 300 IN TXT "v=DMARC1; p=none; rua=mailto:d@ex.test"
_smtp._tls.ex.test. 300 IN TXT "v=TLSRPTv1; rua=mailto:tls@ex.test"
_mta-sts.ex.test. 300 IN TXT "v=STSv1; id=20261126;"
mta-sts.ex.test. 300 IN A 127.0.0.1
_25._tcp.mx1.ex.test. 300 IN TLSA {tlsa_3_1_1(leaf)}
1.0.0.127.bl.test. 300 IN A 127.0.0.2
""",
            ad=True,
        )
        config = tmp_path / "config.yml"
        config.write_text(
            f"""
dns: {{nameservers: ["{dns.address}:{dns.port}"], timeout: 1s}}
modules:
  m:
    tls: starttls
    tls_ca_file: {ca_file}
    tls_server_name: mx1.ex.test
    timeout: 2s
    domain:
      name: ex.test
      interval: 1m
      mta_sts: true
      dane: true
      dnsbl: [bl.test, clean.test]
      smtp_port: {mx.port}
      mta_sts_port: {web.port}
      tls_ca_file: {ca_file}
targets:
  - {{target: "127.0.0.1:{mx.port}", module: m, interval: 5s}}
"""
        )
        yield Domain(config, mx.port)


def test_domain_checks_are_scheduled_and_exported(domain_setup):
    exporter = RunningExporter(domain_setup.config).start()
    try:
        base = {"domain": "ex.test", "module": "m"}
        assert wait_for(
            lambda: exporter.value("smtp_domain_check_success", **base) == 1, timeout=20
        )
        samples = exporter.samples()

        def value(name: str, **labels: str) -> float | None:
            want = {**base, **labels}
            for (n, lab), v in samples.items():
                if n == name and set(want.items()) <= set(lab):
                    return v
            return None

        assert value("smtp_domain_mx_records") == 1
        assert value("smtp_domain_null_mx") == 0
        assert value("smtp_domain_spf_valid") == 1
        assert value("smtp_domain_spf_dns_lookups") == 2  # mx + include
        assert value("smtp_domain_dmarc_valid") == 1
        assert value("smtp_domain_dmarc_policy_info", policy="none") == 1
        assert value("smtp_domain_tlsrpt_valid") == 1
        assert value("smtp_domain_mta_sts_valid") == 1
        assert value("smtp_domain_mta_sts_mode_info", mode="enforce") == 1
        assert value("smtp_domain_mta_sts_max_age_seconds") == 604800
        assert value("smtp_domain_mta_sts_mx_match", mx_host="mx1.ex.test") == 1
        assert value("smtp_domain_mta_sts_policy_changes_total") == 0
        assert value("smtp_domain_dane_tlsa_records", mx_host="mx1.ex.test") == 1
        assert value("smtp_domain_dane_dnssec_validated", mx_host="mx1.ex.test") == 1
        assert value("smtp_domain_dane_match", mx_host="mx1.ex.test") == 1
        listed = {"mx_host": "mx1.ex.test", "address": "127.0.0.1"}
        assert value("smtp_domain_dnsbl_listed", zone="bl.test", **listed) == 1
        assert value("smtp_domain_dnsbl_listed", zone="clean.test", **listed) == 0
        assert (
            value("smtp_domain_dnsbl_return_code_info", zone="bl.test", code="127.0.0.2", **listed)
            == 1
        )
        findings = {
            dict(labels)["check"]: v
            for (name, labels), v in samples.items()
            if name == "smtp_domain_findings"
        }
        assert findings == {
            "mx": 0,
            "spf": 0,
            "dmarc": 1,  # p=none
            "tlsrpt": 0,
            "mta_sts": 0,
            "dane": 0,
            "dnsbl": 1,
        }
        # The target itself is probed as usual beside its domain.
        assert exporter.value("smtp_probe_success", module="m") == 1
    finally:
        exporter.stop()


def test_once_reports_the_domain_in_every_format(domain_setup, capsys):
    args = ["--config.file", str(domain_setup.config), "--once"]
    assert cli.main(args) == 0  # findings are not failures
    table = capsys.readouterr().out
    assert "mail domains" in table
    row = next(line for line in table.splitlines() if line.startswith("ex.test"))
    for cell in ("2 findings", "1 hosts", "ok (2 lookups)", "p=none", "enforce", "1/1 match"):
        assert cell in row, (cell, row)
    assert "LISTED x1" in row
    assert "ex.test: dnsbl: " in table and "bl.test" in table

    assert cli.main([*args, "--output", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (domain,) = [obj for obj in lines if obj.get("type") == "domain"]
    assert domain["domain"] == "ex.test" and domain["success"] is True
    assert domain["mta_sts"]["mode"] == "enforce"
    assert domain["dnsbl"][0]["codes"] == ["127.0.0.2"]
    assert {f["check"] for f in domain["findings"]} == {"dmarc", "dnsbl"}

    # A DNSBL listing stops mail: CRITICAL.
    assert cli.main([*args, "--output", "nagios"]) == 2
    nagios = capsys.readouterr().out
    assert nagios.startswith("SMTP CRITICAL - 1 of 1 targets OK, 0 of 1 domains OK")
    assert "[CRITICAL] ex.test: " in nagios


def test_once_fails_when_the_domain_cannot_be_checked(tmp_path, capsys):
    """A resolver that never answers: the domain check fails (exit 1), on time."""
    from .servers.dns import DNSServer

    with DNSServer("", drop=["down.test"]) as dns:
        config = tmp_path / "config.yml"
        config.write_text(
            f"""
dns: {{nameservers: ["{dns.address}:{dns.port}"], timeout: 1s}}
modules:
  m: {{tls: none, timeout: 1s, domain: {{name: down.test}}}}
targets:
  - {{target: "127.0.0.1:9", module: m}}
"""
        )
        assert cli.main(["--config.file", str(config), "--once"]) == 1
    out = capsys.readouterr().out
    assert "down.test" in out and "check failed" in out
