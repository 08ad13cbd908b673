"""Plain, frozen result objects: what a probe found, with no knowledge of Prometheus.

Every closed set (phases, failure kinds) is an enum whose values are the label values used
downstream, so a server's free text can never become a metric label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .verdicts import AuthVerdicts, DKIMSignature


class Protocol(StrEnum):
    """The protocol a module probes (``protocol:``); SMTP unless a module says otherwise."""

    SMTP = "smtp"
    IMAP = "imap"
    POP3 = "pop3"


class Phase(StrEnum):
    """The steps of one health check, in the order they run: SMTP's, then the steps only
    IMAP and POP3 have (those share connect, greeting, starttls, tls_handshake, auth, noop
    and quit with SMTP, so a phase means the same thing whatever the protocol)."""

    MX_LOOKUP = "mx_lookup"  # an mx: target's MX records, before any host is probed
    RESOLVE = "resolve"
    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    TLS_HANDSHAKE = "tls_handshake"
    EHLO_TLS = "ehlo_tls"
    AUTH = "auth"
    NOOP = "noop"
    QUIT = "quit"
    # Not a protocol step: the posture checks' verdict once the session is over, so a
    # finding (with fail_on_findings) is never blamed on a phase that passed.
    POSTURE = "posture"
    # Mail transaction steps, used by the send library and the canary, never by the probe.
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    # IMAP and POP3 only.
    CAPABILITY = "capability"  # IMAP CAPABILITY, POP3 CAPA
    CAPABILITY_TLS = "capability_tls"  # the same, asked again over TLS
    SELECT = "select"  # IMAP SELECT / EXAMINE of the configured mailbox
    STAT = "stat"  # POP3 STAT
    LOGOUT = "logout"  # IMAP LOGOUT (POP3 ends with QUIT, as SMTP does)


# The SMTP session's own steps (what a concrete target's probe times).
PROBE_PHASES = (
    Phase.RESOLVE,
    Phase.CONNECT,
    Phase.GREETING,
    Phase.EHLO,
    Phase.STARTTLS,
    Phase.TLS_HANDSHAKE,
    Phase.EHLO_TLS,
    Phase.AUTH,
    Phase.NOOP,
    Phase.QUIT,
)
# The IMAP and POP3 probes' steps, in order (implicit TLS: tls_handshake right after connect).
IMAP_PHASES = (
    Phase.RESOLVE,
    Phase.CONNECT,
    Phase.GREETING,
    Phase.CAPABILITY,
    Phase.STARTTLS,
    Phase.TLS_HANDSHAKE,
    Phase.CAPABILITY_TLS,
    Phase.AUTH,
    Phase.SELECT,
    Phase.NOOP,
    Phase.LOGOUT,
)
POP3_PHASES = (
    Phase.RESOLVE,
    Phase.CONNECT,
    Phase.GREETING,
    Phase.CAPABILITY,
    Phase.STARTTLS,
    Phase.TLS_HANDSHAKE,
    Phase.CAPABILITY_TLS,
    Phase.AUTH,
    Phase.STAT,
    Phase.QUIT,
)
PHASES_OF = {Protocol.SMTP: PROBE_PHASES, Protocol.IMAP: IMAP_PHASES, Protocol.POP3: POP3_PHASES}


class FailureKind(StrEnum):
    """Why a phase failed, as a small closed set."""

    TIMEOUT = "timeout"  # the probe's single deadline passed
    DNS = "dns"  # name did not resolve (SERVFAIL, no address, refused)
    NXDOMAIN = "nxdomain"  # the domain does not exist
    NULL_MX = "null_mx"  # the domain publishes a null MX (RFC 7505): it accepts no mail
    REFUSED = "connection_refused"
    NETWORK = "network"  # reset, unreachable, other socket errors
    CLOSED = "connection_closed"  # the server closed the connection (EOF)
    PROTOCOL = "protocol"  # malformed, oversized or unexpected data from the server
    REPLY = "reply"  # a well-formed reply with a code we did not want
    TLS = "tls"  # handshake failed
    TLS_VERIFY = "tls_verify"  # chain did not verify against the trust store
    TLS_HOSTNAME = "tls_hostname"  # certificate does not name the host
    TLS_UNAVAILABLE = "tls_unavailable"  # STARTTLS required but not advertised
    NOT_OFFERED = "not_offered"  # no usable AUTH mechanism advertised
    INSECURE = "insecure"  # credentials withheld because the session is not encrypted
    FINDING = "finding"  # a posture check found a weakness and the module fails on findings
    INTERNAL = "internal"  # a bug in the exporter


@dataclass(frozen=True, slots=True)
class Failure:
    """The first thing that went wrong. ``detail`` is truncated and has secrets masked."""

    phase: Phase
    kind: FailureKind
    detail: str
    code: int | None = None
    enhanced: str | None = None


@dataclass(frozen=True, slots=True)
class PhaseTiming:
    phase: Phase
    seconds: float


@dataclass(frozen=True, slots=True)
class CertInfo:
    """One certificate of the presented chain, as parsed (not as trusted)."""

    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_before: float  # unix seconds
    not_after: float  # unix seconds
    serial: str
    sha256: str


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """What the TLS handshake showed, recorded whether or not the module verifies."""

    version: str
    cipher: str
    chain: tuple[CertInfo, ...]  # leaf first, as the server sent it
    verified: bool  # the chain builds to a trust anchor (system store or module CA file)
    verify_error: str | None
    hostname_match: bool
    server_name: str  # the name checked against the certificate

    @property
    def leaf(self) -> CertInfo | None:
        return self.chain[0] if self.chain else None

    @property
    def earliest_not_after(self) -> float | None:
        return min((c.not_after for c in self.chain), default=None)


# Protocol versions a TLS scan can try, oldest first, as Python's SSLObject.version() names them.
SCAN_VERSIONS = ("SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
WEAK_VERSIONS = frozenset({"SSLv3", "TLSv1", "TLSv1.1"})
WEAK_HASHES = frozenset({"md5", "sha1"})
MIN_RSA_BITS = 2048
MIN_EC_BITS = 224


@dataclass(frozen=True, slots=True)
class TLSScan:
    """What separate handshakes, one per protocol version, showed a server accepts.

    Small by design (the exporter holds one per target): names and numbers, no DER."""

    tested: tuple[str, ...] = ()  # versions a handshake was tried with, oldest first
    accepted: tuple[str, ...] = ()  # versions the server completed a handshake with
    untestable: tuple[str, ...] = ()  # versions the local OpenSSL cannot offer at all
    ciphers: tuple[tuple[str, str], ...] = ()  # (version, cipher) per accepted version
    key_type: str | None = None  # "RSA", "EC", "Ed25519", "Ed448", "DSA" (leaf public key)
    key_bits: int | None = None
    signature_algorithm: str | None = None  # e.g. "sha256WithRSAEncryption", "ed25519"
    signature_hash: str | None = None  # "sha256", "sha1", ...; None for Ed25519/Ed448
    ocsp_stapled: bool | None = None  # None: not observable (see ocsp_note)
    ocsp_note: str | None = None  # why ocsp_stapled is None
    error: str | None = None  # why the scan is incomplete (deadline, reset, garbage)
    seconds: float = 0.0

    @property
    def lowest(self) -> str | None:
        return self.accepted[0] if self.accepted else None

    @property
    def highest(self) -> str | None:
        return self.accepted[-1] if self.accepted else None

    @property
    def cipher(self) -> str | None:
        """The cipher of the handshake at the highest accepted version."""
        return self.ciphers[-1][1] if self.ciphers else None

    @property
    def forward_secrecy(self) -> bool | None:
        """Does the cipher at the highest accepted version use an ephemeral key exchange?"""
        if not self.ciphers:
            return None
        version, cipher = self.ciphers[-1]
        return version == "TLSv1.3" or cipher.startswith(("ECDHE-", "DHE-", "EDH-"))

    @property
    def weak_signature(self) -> bool | None:
        return None if self.signature_algorithm is None else self.signature_hash in WEAK_HASHES

    @property
    def findings(self) -> tuple[str, ...]:
        out = [f"accepts {v}" for v in self.accepted if v in WEAK_VERSIONS]
        if self.key_type in ("RSA", "DSA") and (self.key_bits or 0) < MIN_RSA_BITS:
            out.append(f"{self.key_type} key of {self.key_bits} bits")
        if self.key_type == "EC" and (self.key_bits or 0) < MIN_EC_BITS:
            out.append(f"EC key of {self.key_bits} bits")
        if self.weak_signature:
            name = "SHA-1" if self.signature_hash == "sha1" else str(self.signature_hash).upper()
            out.append(f"certificate signed with {name}")
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Posture:
    """What the session-level security checks found; None where a check did not run."""

    auth_advertised_before_tls: bool | None = None
    auth_accepted_before_tls: bool | None = None  # AUTH LOGIN answered 334 in clear
    relay_accepted: bool | None = None  # RCPT to an outside domain got 2xx without AUTH
    relay_code: int | None = None  # the reply that decided it (RCPT, or MAIL if refused)
    tls_scan: TLSScan | None = None  # posture.tls_scan: versions, key, signature, OCSP

    @property
    def findings(self) -> tuple[str, ...]:
        out = []
        if self.auth_accepted_before_tls:
            out.append("server answers AUTH before TLS (credentials could be sent in clear)")
        elif self.auth_advertised_before_tls:
            out.append("server advertises AUTH before TLS")
        if self.relay_accepted:
            out.append(f"open relay: RCPT to an outside domain accepted ({self.relay_code})")
        if self.tls_scan is not None:
            out.extend(self.tls_scan.findings)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class AuthInfo:
    attempted: bool = False
    success: bool = False
    mechanism: str | None = None


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    """What an IMAP SELECT / EXAMINE or a POP3 STAT reported about the mailbox."""

    name: str  # the IMAP mailbox selected; "" for POP3 (which has one)
    messages: int
    size_bytes: int | None = None  # POP3 STAT's octet count; IMAP does not say


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Everything one probe of one target found. ``success`` is true only if every
    configured phase passed."""

    target: str
    module: str
    host: str
    port: int
    started_at: float  # unix seconds
    duration_seconds: float
    phases: tuple[PhaseTiming, ...]
    failure: Failure | None
    address: str | None = None
    tls: TLSInfo | None = None
    greeting_host: str | None = None
    extensions: tuple[str, ...] = ()
    auth_mechanisms: tuple[str, ...] = ()
    size_limit: int | None = None
    used_helo: bool = False
    auth: AuthInfo = field(default_factory=AuthInfo)
    last_reply_code: int | None = None
    labels: tuple[tuple[str, str], ...] = ()  # the target's labels (mx_host, ip_protocol, ...)
    posture: Posture = field(default_factory=Posture)
    # IMAP and POP3 probes: ``extensions`` holds the CAPABILITY / CAPA names (upper case) and
    # ``auth_mechanisms`` the SASL mechanisms offered; ``last_reply_code`` stays None.
    protocol: Protocol = Protocol.SMTP
    mailbox: MailboxInfo | None = None

    @property
    def success(self) -> bool:
        return self.failure is None


# --- the canary --------------------------------------------------------------------------


class IMAPPhase(StrEnum):
    """The steps of one IMAP session, as label values."""

    TLS_SETUP = "tls_setup"
    CONNECT = "connect"
    TLS_HANDSHAKE = "tls_handshake"
    GREETING = "greeting"
    STARTTLS = "starttls"
    LOGIN = "login"
    LIST = "list"  # finding the Junk folder
    SELECT = "select"
    SEARCH = "search"
    DELETE = "delete"
    SWEEP = "sweep"
    LOGOUT = "logout"

    @property
    def text(self) -> str:
        return self.value.replace("_", " ")


@dataclass(frozen=True, slots=True)
class IMAPFailure:
    """Why the mailbox could not be read (or cleaned): ``detail`` is short and secret-free."""

    phase: IMAPPhase
    kind: FailureKind
    detail: str


class Placement(StrEnum):
    """Where a canary was found: the configured folder, or a Junk folder (label values)."""

    INBOX = "inbox"
    JUNK = "junk"


@dataclass(frozen=True, slots=True)
class CanaryResult:
    token: str
    sent_at: float  # unix seconds
    send_ok: bool
    send_seconds: float
    send_error: str | None = None
    checked: bool = False  # an IMAP session was attempted
    delivered: bool | None = None  # None: not checked, or the mailbox could not be read
    delivered_at: float | None = None
    round_trip_seconds: float | None = None
    check_error: str | None = None
    imap_failure: IMAPFailure | None = None  # the mailbox could not be read (or cleaned)
    swept: int = 0  # stale canaries of this target the session deleted
    late: int = 0  # of those, received by the server after their timeout
    route: str = "default"  # the canary route (recipient + mailbox) it went by
    placement: Placement | None = None  # where it was found; None: not found, or not looked
    folder: str | None = None  # the mailbox it was found in, as configured or listed
    # The receiving host's Authentication-Results verdicts; None when the canary was not
    # found, or the route names no authserv_id.
    verdicts: AuthVerdicts | None = None
    # Its DKIM signatures verified by the exporter (empty: unsigned); None when not
    # checked (not found, no DNS, or the message was too long to read whole).
    local_dkim: tuple[DKIMSignature, ...] | None = None

    @property
    def imap_ok(self) -> bool | None:
        """Was the mailbox read? None when no IMAP session was attempted."""
        return self.imap_failure is None if self.checked else None

    @property
    def success(self) -> bool:
        if not self.checked:
            return self.send_ok
        return self.imap_failure is None and self.delivered is True

    @property
    def reason(self) -> str | None:
        if not self.send_ok:
            return f"send failed: {self.send_error}"
        f = self.imap_failure
        if f is not None:
            known = "delivered" if self.delivered else "delivery unknown"
            return f"IMAP access failed in phase {f.phase} ({f.kind}): {f.detail}; {known}"
        if self.checked and not self.delivered:
            return f"not delivered: {self.check_error}"
        return None


# Labels that tell apart the concrete targets one configured target expands to.
EXPANSION_LABELS = ("mx_host", "address", "ip_protocol")


def display_name(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    """The target as configured plus what tells its expansions apart (MX host, family)."""
    found = dict(labels)
    return " ".join([name, *(found[k] for k in EXPANSION_LABELS if k in found)])
