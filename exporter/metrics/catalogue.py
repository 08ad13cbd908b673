"""The metric catalogue: every family the exporter serves, with its type, help and labels.

``METRICS`` is the single list: the renderer writes HELP/TYPE from it and docs/metrics.md
is checked against it. Nothing here renders or reads a result.
"""

from __future__ import annotations

from dataclasses import dataclass

# Advertised extensions reported as 0/1: a fixed list, so a server's EHLO can never create
# new series.
EXTENSIONS = (
    "STARTTLS",
    "AUTH",
    "SIZE",
    "PIPELINING",
    "8BITMIME",
    "SMTPUTF8",
    "CHUNKING",
    "BINARYMIME",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "REQUIRETLS",
)
MECHANISMS = (
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "XOAUTH2",
    "OAUTHBEARER",
)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    type: str  # gauge | counter | histogram
    help: str
    labels: tuple[str, ...] = ()  # beyond target, module and the target's extra labels
    # Served only for modules with ``metrics_detail: true``: the per-flag and per-phase
    # series whose facts the default series carry in fewer series (docs/metrics.md).
    detail: bool = False


PER_TARGET: tuple[MetricSpec, ...] = (
    MetricSpec("smtp_probe_success", "gauge", "1 if every phase of the last probe passed."),
    MetricSpec("smtp_probe_duration_seconds", "gauge", "Duration of the last probe."),
    MetricSpec(
        "smtp_probe_phase_duration_seconds",
        "gauge",
        "Duration of each phase the last probe ran (absent for phases not reached).",
        ("phase",),
    ),
    MetricSpec(
        "smtp_probe_failed_phase",
        "gauge",
        "1 with the phase, kind and last reply code of the last probe's failure; 0 with "
        "empty labels after a success.",
        ("phase", "kind", "reply_code"),
    ),
    MetricSpec("smtp_probe_ip_protocol", "gauge", "IP version of the address probed (4 or 6)."),
    MetricSpec("smtp_probe_timestamp_seconds", "gauge", "When the last probe started."),
    MetricSpec(
        "smtp_tls_info",
        "gauge",
        "TLS version and cipher of the last probe, and the leaf certificate presented.",
        ("version", "cipher", "subject", "issuer", "serial", "fingerprint_sha256"),
    ),
    MetricSpec(
        "smtp_tls_leaf_cert_expiry_timestamp_seconds",
        "gauge",
        "notAfter of the leaf certificate.",
        detail=True,
    ),
    MetricSpec(
        "smtp_tls_earliest_cert_expiry_timestamp_seconds",
        "gauge",
        "Earliest notAfter in the presented chain.",
    ),
    MetricSpec(
        "smtp_tls_chain_verified",
        "gauge",
        "1 if the presented chain verified against the trust store.",
    ),
    MetricSpec(
        "smtp_tls_hostname_match",
        "gauge",
        "1 if the certificate names the host (or tls_server_name).",
    ),
    MetricSpec(
        "smtp_auth_success",
        "gauge",
        "1 if AUTH succeeded in the last probe (modules with auth only).",
        ("mechanism",),
    ),
    MetricSpec(
        "smtp_capabilities_info",
        "gauge",
        "Extensions and AUTH mechanisms the last EHLO (after STARTTLS, if any) advertised, "
        "of a fixed list, sorted, space-separated; the SIZE limit in bytes.",
        ("extensions", "mechanisms", "size_limit"),
    ),
    MetricSpec(
        "smtp_extension_advertised",
        "gauge",
        "1 if the last EHLO (after STARTTLS, if any) advertised the extension.",
        ("extension",),
        detail=True,
    ),
    MetricSpec(
        "smtp_auth_mechanism_advertised",
        "gauge",
        "1 if the last EHLO advertised the AUTH mechanism.",
        ("mechanism",),
        detail=True,
    ),
    MetricSpec(
        "smtp_size_limit_bytes",
        "gauge",
        "Message size limit advertised with SIZE.",
        detail=True,
    ),
    MetricSpec(
        "smtp_posture_auth_advertised_before_tls",
        "gauge",
        "1 if EHLO advertised AUTH before STARTTLS (posture.auth_before_tls).",
    ),
    MetricSpec(
        "smtp_posture_auth_accepted_before_tls",
        "gauge",
        "1 if the server answered AUTH LOGIN with 334 before TLS.",
    ),
    MetricSpec(
        "smtp_posture_open_relay",
        "gauge",
        "1 if RCPT to an outside domain was accepted without AUTH (posture.relay_test).",
    ),
    MetricSpec(
        "smtp_posture_relay_test_reply_code",
        "gauge",
        "Reply code that decided the relay test (RCPT, or MAIL when refused).",
    ),
    MetricSpec(
        "smtp_posture_tls_version_accepted",
        "gauge",
        "1 if a handshake pinned to the TLS version succeeded (posture.tls_scan).",
        ("version",),
    ),
    MetricSpec(
        "smtp_posture_tls_forward_secrecy",
        "gauge",
        "1 if the cipher chosen at the highest accepted version has forward secrecy.",
    ),
    MetricSpec(
        "smtp_posture_tls_key_size",
        "gauge",
        # In bits, as key sizes are always given; promtool's lint would have a name ending
        # in _bits use bytes, and a 2048-bit key read as 256 helps nobody.
        "Size of the leaf certificate's public key in bits (RSA 2048, EC 256).",
        ("key_type",),
    ),
    MetricSpec(
        "smtp_posture_tls_weak_signature",
        "gauge",
        "1 if the leaf certificate is signed with SHA-1 or MD5.",
    ),
    MetricSpec(
        "smtp_posture_tls_ocsp_stapled",
        "gauge",
        "1 if the server stapled an OCSP response when asked.",
    ),
    MetricSpec(
        "smtp_posture_tls_findings",
        "gauge",
        "TLS weaknesses found: TLS < 1.2 accepted, RSA < 2048 bits, SHA-1/MD5 signature.",
    ),
    MetricSpec(
        "smtp_canary_send_success",
        "gauge",
        "1 if the last canary was accepted for every recipient.",
        ("route",),
    ),
    MetricSpec(
        "smtp_canary_send_duration_seconds",
        "gauge",
        "Time to connect, send the last canary and quit.",
        ("route",),
    ),
    MetricSpec(
        "smtp_canary_last_sent_timestamp_seconds",
        "gauge",
        "When the last canary was sent.",
        ("route",),
    ),
    MetricSpec(
        "smtp_canary_imap_success",
        "gauge",
        "1 if the last canary's IMAP session connected, logged in and searched the mailbox "
        "(and deleted what it found); 0 if it could not, and delivery is then unknown.",
        ("route",),
    ),
    MetricSpec(
        "smtp_canary_imap_failed_phase",
        "gauge",
        "1 with the phase and kind of the last IMAP session's failure; 0 with empty labels "
        "after a success.",
        ("route", "phase", "kind"),
    ),
    MetricSpec(
        "smtp_canary_delivered",
        "gauge",
        "1 if the last canary was found in the IMAP mailbox before its deadline; 0 if the "
        "mailbox was read and it was not there.",
        ("route",),
    ),
    MetricSpec(
        "smtp_canary_last_round_trip_seconds",
        "gauge",
        "From sending the last canary to finding it over IMAP.",
        ("route",),
    ),
    MetricSpec(
        "smtp_canary_last_delivered_timestamp_seconds",
        "gauge",
        "When a canary was last found in the mailbox.",
        ("route",),
    ),
    MetricSpec(
        "smtp_canary_round_trip_seconds",
        "histogram",
        "Canary round trips (sending to finding it over IMAP) since the exporter started.",
        ("route",),
    ),
    MetricSpec(
        "smtp_canary_late_arrivals_total",
        "counter",
        "Canaries the IMAP sweep found that the server received after their timeout.",
        ("route",),
    ),
    MetricSpec(
        "smtp_canary_swept_total",
        "counter",
        "Stale canaries (older than the timeout, never found in time) the IMAP sweep deleted.",
        ("route",),
    ),
    MetricSpec(
        "smtp_canary_placement",
        "gauge",
        "1 for the folder the last canary was found in (inbox: the configured one; junk: "
        "the Junk folder); 0 for the other, both 0 when it was not delivered.",
        ("route", "placement"),
    ),
    MetricSpec(
        "smtp_canary_auth_results_found",
        "gauge",
        "1 if the last canary carried an Authentication-Results header of the route's "
        "authserv_id; 0 if it had none (no verdicts).",
        ("route",),
    ),
    MetricSpec(
        "smtp_canary_auth_results_ignored",
        "gauge",
        "Authentication-Results headers on the last canary not trusted: another "
        "authserv_id, or below the receiving host's (forged by a sender, or an earlier hop).",
        ("route",),
    ),
    MetricSpec(
        "smtp_canary_auth_result",
        "gauge",
        "1 with the result (pass, fail, softfail, none, neutral, temperror, permerror, policy) "
        "of each method (spf, dkim, dmarc) the receiving host reported for the last canary.",
        ("route", "method", "result"),
    ),
    MetricSpec(
        "smtp_canary_dkim_aligned",
        "gauge",
        "1 if a DKIM signature that passed at the receiving host aligns with the canary's "
        "From domain (DMARC relaxed alignment); 0 if none does.",
        ("route",),
    ),
    MetricSpec(
        "smtp_canary_local_dkim_result",
        "gauge",
        "1 with the result of the exporter's own verification of the last canary's DKIM "
        "signatures (pass if any passed, else the first one's).",
        ("route", "result"),
    ),
    MetricSpec(
        "smtp_canary_local_dkim_aligned",
        "gauge",
        "1 if a signature that passed the exporter's own verification aligns with the "
        "canary's From domain; 0 if none does.",
        ("route",),
    ),
    MetricSpec("smtp_probes_total", "counter", "Probes completed since the exporter started."),
    # One series per target; with metrics_detail, one per phase the target can fail in
    # (``sum without (phase)`` reads both shapes alike).
    MetricSpec(
        "smtp_probe_failures_total",
        "counter",
        "Failed probes (by failing phase with metrics_detail).",
        ("phase",),
    ),
)
DISCOVERY: tuple[MetricSpec, ...] = (
    MetricSpec(
        "smtp_mx_lookup_success",
        "gauge",
        "1 if the last MX lookup of an mx: target answered (records, no records, or "
        "null MX); 0 on NXDOMAIN or a failed lookup.",
    ),
    MetricSpec(
        "smtp_mx_null",
        "gauge",
        "1 if the domain publishes a null MX (RFC 7505): it accepts no mail.",
    ),
    MetricSpec(
        "smtp_mx_implicit",
        "gauge",
        "1 if the domain has no MX records and its own address is used (RFC 5321 5.1).",
    ),
    MetricSpec("smtp_mx_hosts", "gauge", "MX hosts found in the last lookup."),
    MetricSpec(
        "smtp_mx_lookup_timestamp_seconds", "gauge", "When the MX records were last looked up."
    ),
)
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
# --- IMAP and POP3 (issue #18): families of their own, rendered by metrics/mailbox.py ------
# Shapes mirror smtp_*'s, so an IMAP dashboard query reads as its SMTP twin; each family's
# phase and kind values are exact for its protocol. Capability names from a fixed list.
IMAP_CAPABILITIES = (
    "IMAP4REV1",
    "IMAP4REV2",
    "STARTTLS",
    "LOGINDISABLED",
    "SASL-IR",
    "IDLE",
    "NAMESPACE",
    "UIDPLUS",
    "MOVE",
    "CONDSTORE",
    "QRESYNC",
    "ENABLE",
    "LITERAL+",
    "LITERAL-",
    "SPECIAL-USE",
    "UTF8=ACCEPT",
    "COMPRESS=DEFLATE",
    "QUOTA",
    "ID",
)
POP3_CAPABILITIES = (
    "USER",
    "SASL",
    "STLS",
    "TOP",
    "UIDL",
    "PIPELINING",
    "RESP-CODES",
    "AUTH-RESP-CODE",
    "EXPIRE",
    "LOGIN-DELAY",
    "UTF8",
)


def _mailbox_families(p: str, name: str) -> tuple[MetricSpec, ...]:
    """The per-target families of protocol ``p`` (``imap``/``pop3``), named ``p_*``."""
    return (
        MetricSpec(
            f"{p}_probe_success", "gauge", f"1 if every phase of the last {name} probe passed."
        ),
        MetricSpec(f"{p}_probe_duration_seconds", "gauge", f"Duration of the last {name} probe."),
        MetricSpec(
            f"{p}_probe_phase_duration_seconds",
            "gauge",
            f"Duration of each phase the last {name} probe ran (absent for phases not reached).",
            ("phase",),
        ),
        MetricSpec(
            f"{p}_probe_failed_phase",
            "gauge",
            f"1 with the phase and kind of the last {name} probe's failure; 0 with empty labels "
            "after a success.",
            ("phase", "kind"),
        ),
        MetricSpec(f"{p}_probe_ip_protocol", "gauge", "IP version of the address probed (4 or 6)."),
        MetricSpec(f"{p}_probe_timestamp_seconds", "gauge", f"When the last {name} probe started."),
        MetricSpec(
            f"{p}_tls_info",
            "gauge",
            f"TLS version and cipher of the last {name} probe, and the leaf certificate presented.",
            ("version", "cipher", "subject", "issuer", "serial", "fingerprint_sha256"),
        ),
        MetricSpec(
            f"{p}_tls_leaf_cert_expiry_timestamp_seconds",
            "gauge",
            "notAfter of the leaf certificate.",
            detail=True,
        ),
        MetricSpec(
            f"{p}_tls_earliest_cert_expiry_timestamp_seconds",
            "gauge",
            "Earliest notAfter in the presented chain.",
        ),
        MetricSpec(
            f"{p}_tls_chain_verified",
            "gauge",
            "1 if the presented chain verified against the trust store.",
        ),
        MetricSpec(
            f"{p}_tls_hostname_match",
            "gauge",
            "1 if the certificate names the host (or tls_server_name).",
        ),
        MetricSpec(
            f"{p}_auth_success",
            "gauge",
            f"1 if the {name} login succeeded in the last probe (modules with auth only).",
            ("mechanism",),
        ),
        MetricSpec(
            f"{p}_capabilities_info",
            "gauge",
            f"The {name} capabilities and SASL mechanisms the server announced (fixed lists).",
            ("capabilities", "mechanisms"),
        ),
    )


IMAP: tuple[MetricSpec, ...] = (
    *_mailbox_families("imap", "IMAP"),
    MetricSpec(
        "imap_mailbox_messages",
        "gauge",
        "Messages in the mailbox, as SELECT / EXAMINE reported them (EXISTS).",
        ("mailbox",),
    ),
    MetricSpec("imap_probes_total", "counter", "IMAP probes completed since the exporter started."),
    MetricSpec(
        "imap_probe_failures_total",
        "counter",
        "Failed IMAP probes (by failing phase with metrics_detail).",
        ("phase",),
    ),
)
POP3: tuple[MetricSpec, ...] = (
    *_mailbox_families("pop3", "POP3"),
    MetricSpec(
        "pop3_mailbox_messages", "gauge", "Messages in the maildrop, as STAT reported them."
    ),
    MetricSpec("pop3_mailbox_size_bytes", "gauge", "Size of the maildrop, as STAT reported it."),
    MetricSpec("pop3_probes_total", "counter", "POP3 probes completed since the exporter started."),
    MetricSpec(
        "pop3_probe_failures_total",
        "counter",
        "Failed POP3 probes (by failing phase with metrics_detail).",
        ("phase",),
    ),
)
# A target's block holds every per-target family, whatever its protocol.
PER_TARGET = (*PER_TARGET, *IMAP, *POP3)

HISTOGRAM = MetricSpec(
    "smtp_probe_phase_seconds",
    "histogram",
    "Phase durations over time, per module (per-target quantiles: quantile_over_time on "
    "smtp_probe_phase_duration_seconds).",
    ("phase",),
)
METRICS = (*PER_TARGET, *DISCOVERY, *DOMAIN, HISTOGRAM)
