"""Plain, frozen result objects: what a probe found, with no knowledge of Prometheus.

Every closed set (phases, failure kinds) is an enum whose values are the label values used
downstream, so a server's free text can never become a metric label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Phase(StrEnum):
    """The steps of one SMTP health check, in the order they run."""

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
    # Mail transaction steps, used by the send library and the canary, never by the probe.
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


PROBE_PHASES = tuple(p for p in Phase if p not in (Phase.MAIL, Phase.RCPT, Phase.DATA))


class FailureKind(StrEnum):
    """Why a phase failed, as a small closed set."""

    TIMEOUT = "timeout"  # the probe's single deadline passed
    DNS = "dns"  # name did not resolve
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


@dataclass(frozen=True, slots=True)
class Posture:
    """What the session-level security checks found; None where a check did not run."""

    auth_advertised_before_tls: bool | None = None
    auth_accepted_before_tls: bool | None = None  # AUTH LOGIN answered 334 in clear
    relay_accepted: bool | None = None  # RCPT to an outside domain got 2xx without AUTH
    relay_code: int | None = None  # the reply that decided it (RCPT, or MAIL if refused)

    @property
    def findings(self) -> tuple[str, ...]:
        out = []
        if self.auth_accepted_before_tls:
            out.append("server answers AUTH before TLS (credentials could be sent in clear)")
        elif self.auth_advertised_before_tls:
            out.append("server advertises AUTH before TLS")
        if self.relay_accepted:
            out.append(f"open relay: RCPT to an outside domain accepted ({self.relay_code})")
        return tuple(out)


@dataclass(frozen=True, slots=True)
class AuthInfo:
    attempted: bool = False
    success: bool = False
    mechanism: str | None = None


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

    @property
    def success(self) -> bool:
        return self.failure is None

    def phase_seconds(self) -> dict[str, float]:
        return {p.phase.value: p.seconds for p in self.phases}


# Labels that tell apart the concrete targets one configured target expands to.
EXPANSION_LABELS = ("mx_host", "address", "ip_protocol")


def display_name(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    """The target as configured plus what tells its expansions apart (MX host, family)."""
    found = dict(labels)
    return " ".join([name, *(found[k] for k in EXPANSION_LABELS if k in found)])
