"""The whole domain check at once: every check on, one real DNS server, one HTTPS policy
server, one STARTTLS MX; and the engine's import boundary."""

from __future__ import annotations

from exporter import config
from exporter.embedded import EmbeddedSMTPServer
from exporter.maildomain import enabled_checks
from exporter.maildomain.results import DomainCheck

from .domain_support import reasons, run_check, server_context_for, tlsa_3_1_1
from .servers.https import HTTPSServer, Response

# RFC 8463's example public key (the raw 32 bytes, base64).
ED25519_P = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


def test_every_check_on_one_domain(dns_server, ca, ca_file, tmp_path):
    mx_ctx, mx_leaf = server_context_for(ca, "mx1.all.test")
    sts_ctx, _ = server_context_for(ca, "mta-sts.all.test")
    policy = b"version: STSv1\nmode: enforce\nmx: mx1.all.test\nmax_age: 1209600\n"
    with (
        EmbeddedSMTPServer(tls="starttls", ssl_context=mx_ctx) as mx,
        HTTPSServer(sts_ctx, {"/.well-known/mta-sts.txt": Response(200, policy)}) as web,
    ):
        dns = dns_server(
            f"""
all.test. 300 IN MX 10 mx1.all.test.
mx1.all.test. 300 IN A 127.0.0.1
all.test. 300 IN TXT "v=spf1 mx -all"
_dmarc.all.test. 300 IN TXT "v=DMARC1; p=none"
_smtp._tls.all.test. 300 IN TXT "v=TLSRPTv1; rua=mailto:tls@all.test"
_mta-sts.all.test. 300 IN TXT "v=STSv1; id=1;"
mta-sts.all.test. 300 IN A 127.0.0.1
_25._tcp.mx1.all.test. 300 IN TLSA {tlsa_3_1_1(mx_leaf)}
1.0.0.127.bl.test. 300 IN A 127.0.0.2
sel._domainkey.all.test. 300 IN TXT "v=DKIM1; k=ed25519; p={ED25519_P}"
1.0.0.127.in-addr.arpa. 300 IN PTR embedded.localhost.
embedded.localhost. 300 IN A 127.0.0.1
""",
            ad=True,
        )
        cfg = config.parse(
            f"""
modules:
  m:
    domain:
      mta_sts: true
      dane: true
      dnsbl: [bl.test, clean.test]
      smtp_port: {mx.port}
      mta_sts_port: {web.port}
      tls_ca_file: {ca_file}
      dkim_selectors: [sel]
      reverse_dns: true
      sending_addresses: [127.0.0.1]
targets:
  - {{target: "mx:all.test", module: m}}
"""
        )
        (target,) = cfg.targets
        checks = target.module.domain
        assert checks is not None and target.mail_domain == "all.test"
        r = run_check(dns, target.mail_domain, checks)
    assert r.success and r.error is None
    assert r.enabled == tuple(DomainCheck) == enabled_checks(checks)
    assert r.finding_counts() == {
        DomainCheck.MX: 0,
        DomainCheck.SPF: 0,
        DomainCheck.DMARC: 1,
        DomainCheck.TLSRPT: 0,
        DomainCheck.MTA_STS: 0,
        DomainCheck.DANE: 0,
        DomainCheck.DNSBL: 1,
        DomainCheck.DKIM: 0,
        DomainCheck.REVERSE_DNS: 0,
    }
    assert reasons(r) == [
        "DMARC: p=none (monitoring only)",
        "DNSBL: 127.0.0.1 listed in bl.test (127.0.0.2)",
    ]
    assert r.mx is not None and r.mx.records == 1
    assert r.records is not None and r.records.spf.lookups == 1
    assert r.records.dmarc.policy == "none"
    assert r.mta_sts is not None and r.mta_sts.valid
    assert r.mta_sts.mx_match == (("mx1.all.test", True),)
    assert r.dane is not None and [
        (d.mx_host, d.tlsa_records, d.dnssec_validated, d.match) for d in r.dane
    ] == [("mx1.all.test", 1, True, True)]
    assert r.dnsbl is not None and [(e.zone, e.listed, e.codes) for e in r.dnsbl] == [
        ("bl.test", True, ("127.0.0.2",)),
        ("clean.test", False, ()),
    ]
    assert r.findings_for(DomainCheck.DNSBL)[0].check is DomainCheck.DNSBL
    assert r.dkim is not None and [(k.selector, k.valid, k.key_type) for k in r.dkim] == [
        ("sel", True, "ed25519")
    ]
    # The MX address (greeting read: aiosmtpd says embedded.localhost) and the same address
    # as a sending address: one entry each.
    assert r.reverse_dns is not None and [
        (x.address, x.mx_host, x.confirmed_name, x.name_matches) for x in r.reverse_dns
    ] == [
        ("127.0.0.1", "mx1.all.test", "embedded.localhost", True),
        ("127.0.0.1", None, "embedded.localhost", None),
    ]


def test_null_mx_domain_with_every_check(dns_server):
    dns = dns_server('nomail.test. 300 IN MX 0 .\nnomail.test. 300 IN TXT "v=spf1 -all"\n')
    r = run_check(
        dns,
        "nomail.test",
        config.DomainChecks(mta_sts=True, dane=True, dnsbl=("bl.test",)),
    )
    assert r.success and r.mx is not None and r.mx.null_mx
    assert r.dane == () and r.dnsbl == ()
    assert r.mta_sts is not None and not r.mta_sts.valid
