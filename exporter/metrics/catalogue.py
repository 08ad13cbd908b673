"""The metric catalogue: every family the exporter serves, with its type, help and labels
(the SMTP probe's and MX discovery's here; the mail domain's and IMAP / POP3's in
``catalogue_domain`` and ``catalogue_mailbox``).

``METRICS`` is the single list: the renderer writes HELP/TYPE from it and docs/metrics.md
is checked against it. Nothing here renders or reads a result.
"""

from __future__ import annotations

from .catalogue_domain import DOMAIN
from .catalogue_mailbox import IMAP, POP3
from .spec import MetricSpec

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
