"""The IMAP and POP3 probes' families (``imap_*``, ``pop3_*``), rendered by
``metrics/mailbox.py``."""

from __future__ import annotations

from .spec import MetricSpec

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
