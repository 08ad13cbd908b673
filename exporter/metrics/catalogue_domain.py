"""The mail-domain checks' families (records, MTA-STS, DANE, DNSBL, DKIM keys, reverse
DNS): one set per checked domain, not per target."""

from __future__ import annotations

from .spec import MetricSpec

DOMAIN: tuple[MetricSpec, ...] = (
    MetricSpec(
        "smtp_domain_check_success",
        "gauge",
        "1 if the domain's DNS could be queried in the last check; 0 when lookups failed.",
    ),
    MetricSpec("smtp_domain_check_duration_seconds", "gauge", "Duration of the last check."),
    MetricSpec("smtp_domain_check_timestamp_seconds", "gauge", "When the domain was last checked."),
    MetricSpec(
        "smtp_domain_findings",
        "gauge",
        "Findings of each enabled check in the last check (0 = clean).",
        ("check",),
    ),
    MetricSpec("smtp_domain_mx_records", "gauge", "MX records of the domain (0 for a null MX)."),
    MetricSpec("smtp_domain_null_mx", "gauge", "1 if the domain publishes a null MX (RFC 7505)."),
    MetricSpec(
        "smtp_domain_spf_valid",
        "gauge",
        "1 if the domain has one SPF record, known mechanisms only, at most 10 DNS lookups.",
    ),
    MetricSpec(
        "smtp_domain_spf_dns_lookups", "gauge", "DNS lookups evaluating the SPF record takes."
    ),
    MetricSpec("smtp_domain_dmarc_valid", "gauge", "1 if _dmarc.<domain> has one valid record."),
    MetricSpec(
        "smtp_domain_dmarc_policy_info", "gauge", "The DMARC record's policy (p=).", ("policy",)
    ),
    MetricSpec(
        "smtp_domain_tlsrpt_valid", "gauge", "1 if _smtp._tls.<domain> has a valid TLS-RPT record."
    ),
    MetricSpec(
        "smtp_domain_mta_sts_valid",
        "gauge",
        "1 if the _mta-sts TXT record is present and the policy was fetched over verified "
        "HTTPS and parsed.",
    ),
    MetricSpec("smtp_domain_mta_sts_mode_info", "gauge", "The MTA-STS policy's mode.", ("mode",)),
    MetricSpec("smtp_domain_mta_sts_max_age_seconds", "gauge", "The MTA-STS policy's max_age."),
    MetricSpec(
        "smtp_domain_mta_sts_policy_changes_total",
        "counter",
        "Times the _mta-sts TXT record's id changed since the exporter started.",
    ),
    MetricSpec(
        "smtp_domain_mta_sts_mx_match",
        "gauge",
        "1 if the MX host matches one of the MTA-STS policy's mx patterns.",
        ("mx_host",),
    ),
    MetricSpec(
        "smtp_domain_dane_tlsa_records",
        "gauge",
        "TLSA records at _25._tcp.<mx_host>.",
        ("mx_host",),
    ),
    MetricSpec(
        "smtp_domain_dane_dnssec_validated",
        "gauge",
        "1 if the resolver set the AD bit on the TLSA answer.",
        ("mx_host",),
    ),
    MetricSpec(
        "smtp_domain_dane_match",
        "gauge",
        "1 if the MX host's certificate matches one of its TLSA records.",
        ("mx_host",),
    ),
    MetricSpec(
        "smtp_domain_dnsbl_listed",
        "gauge",
        "1 if the MX host's address is listed on the DNSBL zone.",
        ("mx_host", "address", "zone"),
    ),
    MetricSpec(
        "smtp_domain_dnsbl_return_code_info",
        "gauge",
        "The address a DNSBL zone answered for a listed MX address.",
        ("mx_host", "address", "zone", "code"),
    ),
    MetricSpec(
        "smtp_domain_dkim_key_present",
        "gauge",
        "1 if <selector>._domainkey.<domain> has a TXT record.",
        ("selector",),
    ),
    MetricSpec(
        "smtp_domain_dkim_key_valid",
        "gauge",
        "1 if the selector has exactly one well-formed key record with a usable key "
        "(not revoked, RSA at least 1024 bits).",
        ("selector",),
    ),
    MetricSpec(
        "smtp_domain_dkim_key_size",
        "gauge",
        "Size of the selector's public key in bits (RSA modulus; 256 for ed25519).",
        ("selector", "key_type"),
    ),
    MetricSpec(
        "smtp_domain_dkim_testing",
        "gauge",
        "1 if the selector's key record has t=y (testing mode).",
        ("selector",),
    ),
    MetricSpec(
        "smtp_domain_dkim_revoked",
        "gauge",
        "1 if the selector's key record has an empty p= (revoked key).",
        ("selector",),
    ),
    MetricSpec(
        "smtp_domain_ptr_present",
        "gauge",
        "1 if the address (an MX host's, or a configured sending address) has a PTR record.",
        ("address", "mx_host"),
    ),
    MetricSpec(
        "smtp_domain_ptr_forward_confirmed",
        "gauge",
        "1 if a PTR name of the address resolves back to it (forward-confirmed reverse DNS).",
        ("address", "mx_host"),
    ),
    MetricSpec(
        "smtp_domain_ptr_greeting_match",
        "gauge",
        "1 if the MX address's SMTP greeting and EHLO reply name its forward-confirmed PTR name.",
        ("address", "mx_host"),
    ),
)
