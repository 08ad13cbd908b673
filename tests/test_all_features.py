"""One scrape with every feature on, checked by ``promtool check metrics``.

A real exporter (tests/exporter_harness.py) probes real servers: the Postfix + Dovecot
fixture through submission with AUTH, the posture checks (AUTH before TLS, TLS scan) and
a canary found over IMAP; an ``mx:`` target whose MX records a dnslib server publishes,
pointing at an aiosmtpd with STARTTLS (relay test), with every check of its mail domain
(records, MTA-STS from an HTTPS server, DANE, a DNSBL that lists it, a DKIM selector,
reverse DNS of the MX address and its greeting). The test waits until
every metric family docs/metrics.md documents is in the scrape, so a family that only
appears with some feature (or with ``metrics_detail``, on for the submission module) is
linted too, then runs promtool on that scrape.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path

import pytest

from exporter.embedded import EmbeddedSMTPServer

from .domain_support import server_context_for, tlsa_3_1_1
from .exporter_harness import RunningExporter, wait_for
from .servers.dns import DNSServer
from .servers.https import HTTPSServer, Response
from .test_dashboards import require_tool

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = "feat.test"


def documented_families() -> set[str]:
    """Every metric name in docs/metrics.md's tables."""
    rows = (ROOT / "docs" / "metrics.md").read_text().splitlines()
    return {m[1] for line in rows if (m := re.match(r"\| `(smtp_[a-z0-9_]+)` \|", line))}


def scrape_families(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", text, re.M))


@pytest.mark.postfix
def test_promtool_accepts_a_scrape_with_every_feature_on(mailstack, ca, ca_file, tmp_path):
    promtool = require_tool("promtool")
    mx_ctx, mx_cert = server_context_for(ca, "localhost", "127.0.0.1", f"mx1.{DOMAIN}")
    sts_ctx, _ = server_context_for(ca, f"mta-sts.{DOMAIN}")
    policy = f"version: STSv1\nmode: enforce\nmx: mx1.{DOMAIN}\nmax_age: 86400\n".encode()
    with contextlib.ExitStack() as stack:
        mx = stack.enter_context(EmbeddedSMTPServer(tls="starttls", ssl_context=mx_ctx))
        web = stack.enter_context(
            HTTPSServer(sts_ctx, {"/.well-known/mta-sts.txt": Response(200, policy)})
        )
        dns = stack.enter_context(
            DNSServer(
                f"{DOMAIN}. 300 IN MX 10 mx1.{DOMAIN}.\n"
                f"mx1.{DOMAIN}. 300 IN A 127.0.0.1\n"
                f'{DOMAIN}. 300 IN TXT "v=spf1 mx -all"\n'
                f'_dmarc.{DOMAIN}. 300 IN TXT "v=DMARC1; p=reject"\n'
                f'_smtp._tls.{DOMAIN}. 300 IN TXT "v=TLSRPTv1; rua=mailto:tls@{DOMAIN}"\n'
                f'_mta-sts.{DOMAIN}. 300 IN TXT "v=STSv1; id=1;"\n'
                f"mta-sts.{DOMAIN}. 300 IN A 127.0.0.1\n"
                f"_25._tcp.mx1.{DOMAIN}. 300 IN TLSA {tlsa_3_1_1(mx_cert)}\n"
                "1.0.0.127.bl.test. 300 IN A 127.0.0.2\n"
                f"s1._domainkey.{DOMAIN}. 300 IN TXT "
                '"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="\n'
                f"1.0.0.127.in-addr.arpa. 300 IN PTR mx1.{DOMAIN}.\n",
                ad=True,
            )
        )
        smtp_pw = tmp_path / "smtp-pw"
        smtp_pw.write_text(mailstack.users["probe"] + "\n")
        imap_pw = tmp_path / "imap-pw"
        imap_pw.write_text(mailstack.users["canary"] + "\n")
        config = tmp_path / "config.yml"
        config.write_text(
            f'dns: {{nameservers: ["{dns.address}:{dns.port}"], timeout: 1s}}\n'
            "modules:\n"
            "  submission:\n"
            f"    tls: starttls\n    tls_ca_file: {mailstack.ca_file}\n    timeout: 2s\n"
            f"    auth: {{username: probe, password_file: {smtp_pw}}}\n"
            "    posture: {auth_before_tls: true, tls_scan: true}\n"
            # The per-flag and per-phase families too, so promtool sees every family.
            "    metrics_detail: true\n"
            "    canary:\n"
            "      from: probe@localhost\n      to: canary@localhost\n"
            "      interval: 1m\n      timeout: 20s\n"
            "      imap:\n"
            f"        host: 127.0.0.1\n        port: {mailstack.imaps_port}\n"
            f"        tls: implicit\n        tls_ca_file: {mailstack.ca_file}\n"
            f"        username: canary\n        password_file: {imap_pw}\n"
            "        poll_interval: 200ms\n"
            "  mx:\n"
            f"    tls: starttls\n    port: {mx.port}\n    tls_ca_file: {ca_file}\n"
            "    timeout: 2s\n"
            "    posture: {relay_test: {from: probe@example.com, to: relay@outside.example}}\n"
            "    domain:\n"
            "      interval: 1h\n      mta_sts: true\n      dane: true\n"
            "      dnsbl: [bl.test]\n"
            "      dkim_selectors: [s1]\n      reverse_dns: true\n"
            f"      smtp_port: {mx.port}\n      mta_sts_port: {web.port}\n"
            f"      tls_ca_file: {ca_file}\n"
            "targets:\n"
            f'  - {{target: "127.0.0.1:{mailstack.submission_port}", module: submission,'
            " interval: 2s}\n"
            f'  - {{target: "mx:{DOMAIN}", module: mx, interval: 2s}}\n'
        )
        exp = RunningExporter(config).start()
        try:
            wanted = documented_families()
            text = ""

            def complete() -> bool:
                nonlocal text
                text = exp.get("/metrics")[1]
                return wanted <= scrape_families(text)

            assert wait_for(complete, 60), sorted(wanted - scrape_families(text))
        finally:
            exp.stop()
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"\n{len(scrape_families(text))} families, {len(text.splitlines())} lines: promtool OK")
