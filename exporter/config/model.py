"""The configuration model: what to probe and how, as frozen dataclasses. No YAML here.

Each option a config file may set is declared once, as a field: its name (or the names in
its ``key(...)`` metadata) is the key the loader accepts, its default is the default the
loader applies, and docs/configuration.md's tables list exactly these keys (a test compares
them). ``DERIVED`` fields are filled in by the loader from other keys and are no key.

The loader (``exporter.config.loader``) turns a YAML file into these objects; the probe,
the scheduler and the send library use them without importing the parser.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


def key(*names: str) -> dict[str, tuple[str, ...]]:
    """Field metadata: the config key(s) a field is read from, when not its own name; two or
    more name alternatives (``password_file`` / ``password_env``)."""
    return {"key": names}


# Field metadata of a field the loader computes from other keys or from where the mapping
# stands (a module's name is its key under ``modules:``): no key of its own.
DERIVED: dict[str, tuple[str, ...]] = {"key": ()}


def config_keys(cls: type) -> tuple[str, ...]:
    """The keys a config mapping for ``cls`` may hold, in field order."""
    out: list[str] = []
    for f in dataclasses.fields(cls):
        key = f.metadata.get("key")
        out.extend((f.name,) if key is None else key)
    return tuple(out)


def default_of(cls: type, name: str) -> Any:
    """The declared default of ``cls.name`` (the loader's default for its key)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


class Secret:
    """A credential that refuses to be printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class TLSMode(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    IMPLICIT = "implicit"


DEFAULT_PORTS = {TLSMode.NONE: 25, TLSMode.STARTTLS: 587, TLSMode.IMPLICIT: 465}
# The usual ports of the other protocols, by TLS mode (RFC 8314: 993 and 995 for implicit TLS).
PROTOCOL_PORTS = {
    "imap": {TLSMode.NONE: 143, TLSMode.STARTTLS: 143, TLSMode.IMPLICIT: 993},
    "pop3": {TLSMode.NONE: 110, TLSMode.STARTTLS: 110, TLSMode.IMPLICIT: 995},
}
AUTH_MECHANISMS = ("auto", "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2")
# What the IMAP and POP3 probes log in with: SMTP's names, with LOGIN meaning IMAP's LOGIN
# command / POP3's USER and PASS (both clients speak every SASL mechanism SMTP's does).
MAILBOX_AUTH_MECHANISMS = AUTH_MECHANISMS
PROTOCOLS = ("smtp", "imap", "pop3")  # exporter.results.Protocol's values
IP_PROTOCOLS = ("auto", "ip4", "ip6", "both")
# Labels the exporter sets itself; a target's extra labels may not shadow them.
RESERVED_LABELS = frozenset(
    {
        "target",
        "module",
        "phase",
        "job",
        "instance",
        "le",
        "mx_host",
        "mx_preference",
        "mx_implicit",
        "ip_protocol",
        "address",
    }
)


class IMAPTLSMode(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    IMPLICIT = "implicit"


_NO_PASSWORD = Secret("")  # Secret is immutable, so one shared default is safe


@dataclass(frozen=True, slots=True)
class AuthConfig:
    username: str
    password: Secret = field(metadata=key("password_file", "password_env"))
    # The first of these the server offers; "auto" stands for PLAIN, then LOGIN.
    mechanisms: tuple[str, ...] = field(default=("auto",), metadata=key("mechanism"))
    allow_insecure: bool = False  # send credentials without TLS (never, unless said)


@dataclass(frozen=True, slots=True)
class IMAPConfig:
    """Where the canary mailbox is and how to log in to it."""

    host: str
    port: int  # default by mode in the loader: 143 / 993
    tls: IMAPTLSMode = IMAPTLSMode.IMPLICIT
    username: str = ""
    password: Secret = field(default=_NO_PASSWORD, metadata=key("password_file", "password_env"))
    folder: str = "INBOX"
    tls_verify: bool = True
    tls_ca_file: str | None = None
    poll_interval: float = 1.0
    # Where else to look, for the placement: None finds the \Junk special-use mailbox
    # (RFC 6154), else one named Junk or Spam; () looks in ``folder`` only.
    junk_folders: tuple[str, ...] | None = None
    # The first of these the server offers ("auto": PLAIN, then LOGIN); XOAUTH2 takes an
    # OAuth 2.0 access token as the password.
    mechanisms: tuple[str, ...] = field(default=("auto",), metadata=key("mechanism"))


@dataclass(frozen=True, slots=True)
class CanaryRoute:
    """One way a canary goes: to ``recipient``, read back from ``imap``, judged by the
    Authentication-Results of ``authserv_id`` (the receiving host's)."""

    name: str
    recipient: str = field(metadata=key("to"))
    imap: IMAPConfig | None = None
    authserv_id: str | None = None


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    """Send a marked message through the target now and then; optionally find it over IMAP."""

    sender: str = field(metadata=key("from"))
    recipient: str = field(metadata=key("to"))  # the "default" route's; "" with ``routes``
    interval: float = 600.0  # between canaries, independent of the probe interval
    timeout: float = 300.0  # how long to look for it in the mailbox
    imap: IMAPConfig | None = None
    authserv_id: str | None = None  # the "default" route's
    headers: tuple[tuple[str, str], ...] = ()  # added to every canary (a filter's marker)
    routes: tuple[CanaryRoute, ...] = ()  # several, each labelled; else the one above

    @property
    def all_routes(self) -> tuple[CanaryRoute, ...]:
        """The routes, or the single form's ``to``, ``imap``, ``authserv_id`` as "default"."""
        if self.routes:
            return self.routes
        return (CanaryRoute("default", self.recipient, self.imap, self.authserv_id),)


@dataclass(frozen=True, slots=True)
class PostureConfig:
    """Security checks made on the probe's own SMTP session; each off unless turned on."""

    auth_before_tls: bool = False  # is AUTH offered / answered before STARTTLS?
    # open-relay test: MAIL FROM / RCPT TO, never DATA
    relay_from: str | None = field(default=None, metadata=key("relay_test"))
    relay_to: str | None = field(default=None, metadata=DERIVED)  # relay_test.to
    tls_scan: bool = False  # one handshake per TLS version, key, signature, OCSP stapling
    fail_on_findings: bool = False  # a finding fails the probe, not only its metric


@dataclass(frozen=True, slots=True)
class RelayTest:
    """The keys of ``posture.relay_test`` (stored in ``PostureConfig.relay_from/_to``)."""

    sender: str = field(metadata=key("from"))
    recipient: str = field(metadata=key("to"))


@dataclass(frozen=True, slots=True)
class DomainChecks:
    """Checks on the mail domain (DNS records, MTA-STS, DANE, DNSBL, DKIM keys, reverse
    DNS); each off unless on.

    They run on their own, slower ``interval``; DNS answers are cached by TTL."""

    name: str | None = None  # None: the mx: target's own domain
    interval: float = 3600.0
    records: bool = True  # MX / null MX, SPF, DMARC, TLS-RPT
    mta_sts: bool = False
    dane: bool = False
    dnsbl: tuple[str, ...] = ()  # DNSBL zones; none queried unless configured
    smtp_port: int = 25  # where DANE connects to each MX for STARTTLS
    mta_sts_port: int = 443  # port of https://mta-sts.<domain>/
    tls_ca_file: str | None = None  # CA bundle for the MTA-STS fetch; None: system store
    dkim_selectors: tuple[str, ...] = ()  # key records at <selector>._domainkey.<domain>
    reverse_dns: bool = False  # PTR, FCrDNS and greeting name of each MX address
    sending_addresses: tuple[str, ...] = ()  # PTR and FCrDNS of each (outbound relays)


@dataclass(frozen=True, slots=True)
class ProbeAllow:
    """What ``/probe`` may probe with a module, besides the targets configured with it.

    ``hosts``: host names (``*.example.com`` stands for exactly one label), each optionally
    with ``:port``; ``networks``: the address actually connected to must lie in one."""

    hosts: tuple[tuple[str, int | None], ...] = ()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def host_allowed(self, host: str, port: int) -> bool:
        name = host.rstrip(".").lower()
        for pattern, want in self.hosts:
            if want is not None and want != port:
                continue
            if pattern.startswith("*."):
                head, _, rest = name.partition(".")
                if head and rest == pattern[2:]:
                    return True
            elif name == pattern:
                return True
        return False

    def address_allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


@dataclass(frozen=True, slots=True)
class Module:
    """How to probe: everything except where."""

    name: str = field(metadata=DERIVED)  # the key under ``modules:``
    protocol: str = "smtp"  # smtp | imap | pop3 (exporter.results.Protocol values)
    tls: TLSMode = TLSMode.STARTTLS
    port: int | None = None  # None: the TLS mode's usual port
    tls_required: bool = True
    tls_verify: bool = True
    tls_ca_file: str | None = None
    tls_server_name: str | None = None
    ehlo_name: str = field(default_factory=lambda: default_ehlo_name())
    timeout: float = 10.0  # seconds for the whole probe, not per operation
    ip_protocol: str = "auto"
    auth: AuthConfig | None = None
    canary: CanaryConfig | None = None
    posture: PostureConfig = field(default_factory=lambda: PostureConfig())
    domain: DomainChecks | None = None
    # None: /probe takes any target, unless the module carries credentials (then only its
    # configured targets); set: its configured targets and these.
    probe_allow: ProbeAllow | None = None
    # IMAP: the mailbox the probe opens (read-only, with EXAMINE, unless mailbox_select).
    mailbox: str = "INBOX"
    mailbox_select: bool = False
    # Also the per-flag and per-phase series (docs/metrics.md, "Series per target"): off,
    # the same facts come in fewer series.
    metrics_detail: bool = False

    @property
    def default_port(self) -> int:
        if self.port:
            return self.port
        ports = PROTOCOL_PORTS.get(self.protocol, DEFAULT_PORTS)
        return ports[self.tls]

    @property
    def carries_credentials(self) -> bool:
        """Whether a probe with this module sends a secret (AUTH, or the canary's IMAP)."""
        return self.auth is not None or self.canary is not None


@dataclass(frozen=True, slots=True)
class Target:
    name: str = field(metadata=key("target"))  # as written in the config; the ``target`` label
    host: str = field(metadata=DERIVED)
    port: int = field(metadata=DERIVED)
    module: Module  # by name; defaults.module when unset
    interval: float = 60.0
    labels: tuple[tuple[str, str], ...] = ()
    mx: bool = field(
        default=False, metadata=DERIVED
    )  # written as mx:DOMAIN: probe the domain's MX hosts

    @property
    def mail_domain(self) -> str | None:
        """The domain the module's ``domain:`` checks look at: its ``name``, else an mx:
        target's own domain; None when the module has no ``domain:``."""
        checks = self.module.domain
        if checks is None:
            return None
        return checks.name or (self.host.rstrip(".").lower() if self.mx else None)


@dataclass(frozen=True, slots=True)
class DNSConfig:
    """Resolver for MX discovery; default: the system's (/etc/resolv.conf)."""

    nameservers: tuple[tuple[str, int], ...] = ()
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class Defaults:
    """The keys of ``defaults:``; ``timeout`` and ``ehlo_name`` apply to every module."""

    module: str | None = None
    interval: float = 60.0
    timeout: float = 10.0
    ehlo_name: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    modules: Mapping[str, Module]
    targets: tuple[Target, ...]
    source: str = field(default="<none>", metadata=DERIVED)  # the file it was read from
    default_module: str | None = field(
        default=None, metadata=key("defaults")
    )  # for /probe without module
    dns: DNSConfig = field(default_factory=DNSConfig)


@functools.cache
def default_ehlo_name() -> str:
    # Once per process: where the host name is not in /etc/hosts, getfqdn() asks DNS, and
    # every module and target built (on the event loop, too) waited for it (5 s seen).
    # Strict servers reject a HELO name without a dot (reject_non_fqdn_helo_hostname).
    name = socket.getfqdn()
    return name if "." in name else "localhost.localdomain"


def is_ip(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address literal."""
    return ip_literal(host) is not None


@functools.lru_cache(maxsize=4096)
def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address if it is an IPv4 or IPv6 literal, else None. Cached: a probe
    asks it of the same name several times (admission, resolve, SNI, the certificate's
    name check), and the parse, failing twice for a host name, costs more than a lookup."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def parse_target(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("expected [ipv6]:port")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:
        host, port_text = text, ""
    else:
        host, _, port_text = text.partition(":")
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ValueError("expected host[:port]")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"invalid port {port_text!r}")
        return host, int(port_text)
    return host, default_port


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))")


def parse_duration(text: str) -> float:
    """Prometheus-style durations: ``500ms``, ``30s``, ``5m``, ``1h30m``. Seconds out."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}, expected e.g. '30s', '5m', '1h30m'")
    return sum(float(n) * units[u] for n, u in parts)
