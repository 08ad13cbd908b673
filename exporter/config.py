"""YAML configuration -> frozen ``Config``, validated completely before anything runs.

Every problem is reported at once, one line each, naming the file and the key path::

    config.yml: targets[3].module: unknown module 'submision' (did you mean 'submission'?)

Secrets are read here (``password_file`` / ``password_env``) and wrapped in ``Secret``, whose
``str`` and ``repr`` are ``***``, so no log line, label or report can show them by accident.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import os
import re
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml

from . import yamlguard
from .errors import ConfigError

if TYPE_CHECKING:  # imapcheck imports Secret from here
    from .imapcheck import IMAPConfig


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
AUTH_MECHANISMS = ("auto", "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2")
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


@dataclass(frozen=True, slots=True)
class AuthConfig:
    username: str
    password: Secret
    # The first of these the server offers; "auto" stands for PLAIN, then LOGIN.
    mechanisms: tuple[str, ...] = ("auto",)
    allow_insecure: bool = False  # send credentials without TLS (never, unless said)


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    """Send a marked message through the target now and then; optionally find it over IMAP."""

    sender: str
    recipient: str
    interval: float = 600.0  # between canaries, independent of the probe interval
    timeout: float = 300.0  # how long to look for it in the mailbox
    imap: IMAPConfig | None = None


@dataclass(frozen=True, slots=True)
class PostureConfig:
    """Security checks made on the probe's own SMTP session; each off unless turned on."""

    auth_before_tls: bool = False  # is AUTH offered / answered before STARTTLS?
    relay_from: str | None = None  # open-relay test: MAIL FROM / RCPT TO, never DATA
    relay_to: str | None = None
    tls_scan: bool = False  # one handshake per TLS version, key, signature, OCSP stapling
    fail_on_findings: bool = False  # a finding fails the probe, not only its metric


@dataclass(frozen=True, slots=True)
class DomainChecks:
    """Checks on the mail domain (DNS records, MTA-STS, DANE, DNSBL); each off unless on.

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

    name: str
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

    @property
    def default_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.tls]

    @property
    def carries_credentials(self) -> bool:
        """Whether a probe with this module sends a secret (AUTH, or the canary's IMAP)."""
        return self.auth is not None or self.canary is not None


@dataclass(frozen=True, slots=True)
class Target:
    name: str  # as written in the config; the ``target`` label
    host: str
    port: int
    module: Module
    interval: float = 60.0
    labels: tuple[tuple[str, str], ...] = ()
    mx: bool = False  # written as mx:DOMAIN: probe the domain's MX hosts

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
class Config:
    modules: Mapping[str, Module]
    targets: tuple[Target, ...]
    source: str = "<none>"
    default_module: str | None = None  # for /probe requests that name no module
    dns: DNSConfig = field(default_factory=DNSConfig)


@functools.cache
def default_ehlo_name() -> str:
    # Once per process: where the host name is not in /etc/hosts, getfqdn() asks DNS, and
    # every module and target built (on the event loop, too) waited for it (5 s seen).
    # Strict servers reject a HELO name without a dot (reject_non_fqdn_helo_hostname).
    name = socket.getfqdn()
    return name if "." in name else "localhost.localdomain"


# --- loading -------------------------------------------------------------------------------


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; raises ``ConfigError`` listing every problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", file=file) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("config file is not UTF-8", file=file) from exc
    return parse(text, file=file)


# libyaml's loader when PyYAML was built with it: 5x faster on a 10,000-target file and it
# leaves ~15 MB less of the pure-Python loader's node graph behind in the allocator.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError:
        # The pure-Python loader places errors where a reader looks for them (libyaml often
        # points past the end of the line), so a broken file is parsed again for the message.
        return yaml.safe_load(text)


def parse(text: str, *, file: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    problem = yamlguard.check(text, _YAML_LOADER)
    if problem is not None:
        raise ConfigError(problem, file=file)
    try:
        data = _load_yaml(text)
    # yamlguard bounds nesting and aliases; these are the last resort, so that a load or
    # reload always ends in a ConfigError (reload gauge 0, old config kept).
    except RecursionError as exc:
        raise ConfigError("nested too deeply", file=file) from exc
    except MemoryError as exc:
        raise ConfigError("too large to load", file=file) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {where}{problem}", file=file) from exc
    v = _Validator(file, os.environ if env is None else env)
    config = v.config(data)
    if v.errors:
        raise ConfigError("\n".join(f"{file}: {e}" for e in v.errors))
    return config


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
_ADDRESS = re.compile(r"[^\s<>@\"]{1,64}@[A-Za-z0-9.\-\[\]:]{1,255}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_EHLO = re.compile(r"[A-Za-z0-9.\-\[\]:_]{1,255}")
_DOMAIN = re.compile(
    r"(?=.{1,253}$)(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
_HOSTNAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,252})")
MIN_DOMAIN_INTERVAL = 60.0


def parse_duration(text: str) -> float:
    """Prometheus-style durations: ``500ms``, ``30s``, ``5m``, ``1h30m``. Seconds out."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}, expected e.g. '30s', '5m', '1h30m'")
    return sum(float(n) * units[u] for n, u in parts)


class _Validator:
    """Walks the YAML tree, collecting errors with key paths instead of stopping at one."""

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.errors: list[str] = []
        self.base = Path(file).parent if file and not file.startswith("<") else Path(".")

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}" if path else message)

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {_type(value)}")
            return {}
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                why = (
                    f"did you mean '{hint[0]}'?"
                    if hint
                    else f"expected one of: {', '.join(allowed)}"
                )
                self.error(_join(path, str(key)), f"unknown key ({why})")
        return value

    def typed(self, d: dict[str, Any], key: str, path: str, kind: type, default: Any) -> Any:
        if key not in d or d[key] is None:
            return default
        value = d[key]
        # bool is an int in Python; a YAML `yes` must not become port 1.
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            self.error(_join(path, key), f"expected {kind.__name__}, got {_type(value)}")
            return default
        return value

    def choice(
        self, d: dict[str, Any], key: str, path: str, choices: tuple[str, ...], default: str
    ) -> str:
        value = self.typed(d, key, path, str, default)
        if value not in choices:
            self.error(_join(path, key), f"expected one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def duration(self, d: dict[str, Any], key: str, path: str, default: float) -> float:
        if key not in d or d[key] is None:
            return default
        value = d[key]
        if not isinstance(value, str):
            self.error(
                _join(path, key),
                f"expected a duration like '30s' or '5m', got {_type(value)} {value!r}",
            )
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.error(_join(path, key), str(exc))
            return default
        if seconds <= 0:
            self.error(_join(path, key), "must be greater than zero")
            return default
        return seconds

    def file_path(self, d: dict[str, Any], key: str, path: str) -> str | None:
        value = self.typed(d, key, path, str, None)
        if value is None:
            return None
        resolved = value if os.path.isabs(value) else str(self.base / value)
        if not os.path.isfile(resolved):
            self.error(_join(path, key), f"file {value!r} does not exist")
            return None
        return resolved

    # --- sections ---------------------------------------------------------------------
    def config(self, data: Any) -> Config:
        top = self.mapping(data, "", ("defaults", "modules", "targets", "dns"))
        if data is None:
            self.error("", "config file is empty")
        defaults = self.mapping(
            top.get("defaults"), "defaults", ("module", "interval", "timeout", "ehlo_name")
        )
        interval = self.duration(defaults, "interval", "defaults", 60.0)
        module_defaults = {k: defaults[k] for k in ("timeout", "ehlo_name") if k in defaults}
        modules_raw = top.get("modules")
        if not isinstance(modules_raw, dict):
            self.mapping(modules_raw, "modules", ())
            modules_raw = {}
        modules: dict[str, Module] = {}
        for name, raw in modules_raw.items():
            path = f"modules.{name}"
            if not _NAME.fullmatch(str(name)):
                self.error(path, "module names may use letters, digits, '_', '-' and '.'")
            if raw is None or isinstance(raw, dict):
                raw = {**module_defaults, **(raw or {})}
            modules[str(name)] = self.module(str(name), raw, path)
        default_module = self.typed(defaults, "module", "defaults", str, None)
        if default_module is not None and default_module not in modules:
            self.error(
                "defaults.module",
                f"unknown module {default_module!r}{_hint(default_module, modules)}",
            )
        targets = self.targets(top.get("targets"), modules, default_module, interval)
        dns = self.dns(top.get("dns"))
        return Config(MappingProxyType(modules), tuple(targets), self.file, default_module, dns)

    def dns(self, raw: Any) -> DNSConfig:
        d = self.mapping(raw, "dns", ("nameservers", "timeout"))
        servers: list[tuple[str, int]] = []
        raw_servers = d.get("nameservers") or []
        if not isinstance(raw_servers, list):
            self.error("dns.nameservers", f"expected a list, got {_type(raw_servers)}")
            raw_servers = []
        for i, item in enumerate(raw_servers):
            try:
                host, port = parse_target(str(item), 53)
                ipaddress.ip_address(host)
            except ValueError:
                self.error(f"dns.nameservers[{i}]", f"expected an IP address[:port], got {item!r}")
                continue
            servers.append((host, port))
        return DNSConfig(tuple(servers), self.duration(d, "timeout", "dns", 5.0))

    def module(self, name: str, raw: Any, path: str) -> Module:
        keys = (
            "port",
            "tls",
            "tls_required",
            "tls_verify",
            "tls_ca_file",
            "tls_server_name",
            "ehlo_name",
            "timeout",
            "ip_protocol",
            "auth",
            "canary",
            "posture",
            "domain",
            "probe_allow",
        )
        d = self.mapping(raw, path, keys)
        tls = TLSMode(self.choice(d, "tls", path, tuple(TLSMode), TLSMode.STARTTLS.value))
        port = self.typed(d, "port", path, int, None)
        if port is not None and not 0 < port < 65536:
            self.error(_join(path, "port"), f"expected 1-65535, got {port}")
        ehlo = self.typed(d, "ehlo_name", path, str, None)
        if ehlo is not None and not _EHLO.fullmatch(ehlo):
            self.error(_join(path, "ehlo_name"), f"not a valid host name: {ehlo!r}")
        server_name = self.typed(d, "tls_server_name", path, str, None)
        if server_name is not None and not _EHLO.fullmatch(server_name):
            self.error(_join(path, "tls_server_name"), f"not a valid host name: {server_name!r}")
        kwargs: dict[str, Any] = {
            "name": name,
            "tls": tls,
            "port": port,
            "tls_required": self.typed(d, "tls_required", path, bool, True),
            "tls_verify": self.typed(d, "tls_verify", path, bool, True),
            "tls_ca_file": self.file_path(d, "tls_ca_file", path),
            "tls_server_name": server_name,
            "timeout": self.duration(d, "timeout", path, 10.0),
            "ip_protocol": self.choice(d, "ip_protocol", path, IP_PROTOCOLS, "auto"),
            "auth": self.auth(d.get("auth"), _join(path, "auth")) if "auth" in d else None,
            "canary": self.canary(d["canary"], _join(path, "canary")) if "canary" in d else None,
            "posture": self.posture(d.get("posture"), _join(path, "posture"), tls),
            "domain": self.domain(d["domain"], _join(path, "domain")) if "domain" in d else None,
            "probe_allow": (
                self.probe_allow(d["probe_allow"], _join(path, "probe_allow"))
                if d.get("probe_allow") is not None
                else None
            ),
        }
        if ehlo:
            kwargs["ehlo_name"] = ehlo
        return Module(**kwargs)

    def probe_allow(self, raw: Any, path: str) -> ProbeAllow:
        d = self.mapping(raw, path, ("hosts", "networks"))
        hosts: list[tuple[str, int | None]] = []
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for key in ("hosts", "networks"):
            items = d.get(key)
            if items is None:
                continue
            if not isinstance(items, list):
                self.error(_join(path, key), f"expected a list, got {_type(items)}")
                continue
            for i, item in enumerate(items):
                where = f"{_join(path, key)}[{i}]"
                if not isinstance(item, str):
                    self.error(where, f"expected a string, got {_type(item)}")
                elif key == "networks":
                    try:
                        networks.append(ipaddress.ip_network(item, strict=False))
                    except ValueError:
                        self.error(where, f"expected a network like 10.0.0.0/8, got {item!r}")
                else:
                    try:
                        host, port = parse_target(item, 0)
                    except ValueError as exc:
                        self.error(where, f"{exc}, got {item!r}")
                        continue
                    name = host.rstrip(".").lower()
                    bare = name.removeprefix("*.")
                    if not (_HOSTNAME.fullmatch(bare) or is_ip(bare)):
                        self.error(
                            where,
                            f"expected a host name, '*.domain' or an address, got {item!r}",
                        )
                        continue
                    hosts.append((name, port or None))
        return ProbeAllow(tuple(hosts), tuple(networks))

    def posture(self, raw: Any, path: str, tls: TLSMode) -> PostureConfig:
        d = self.mapping(
            raw, path, ("auth_before_tls", "relay_test", "tls_scan", "fail_on_findings")
        )
        before = self.typed(d, "auth_before_tls", path, bool, False)
        if before and tls is not TLSMode.STARTTLS:
            self.error(
                _join(path, "auth_before_tls"),
                "needs tls: starttls (it looks at the session before STARTTLS)",
            )
        relay_from = relay_to = None
        if d.get("relay_test") is not None:
            rpath = _join(path, "relay_test")
            r = self.mapping(d["relay_test"], rpath, ("from", "to"))
            for key in ("from", "to"):
                value = self.typed(r, key, rpath, str, None)
                if not value or not _ADDRESS.fullmatch(value):
                    self.error(_join(rpath, key), f"required: a plain email address, got {value!r}")
            relay_from, relay_to = r.get("from"), r.get("to")
        scan = self.typed(d, "tls_scan", path, bool, False)
        if scan and tls is TLSMode.NONE:
            self.error(_join(path, "tls_scan"), "needs tls: starttls or implicit")
        fail = self.typed(d, "fail_on_findings", path, bool, False)
        return PostureConfig(bool(before), relay_from, relay_to, bool(scan), fail)

    def domain(self, raw: Any, path: str) -> DomainChecks:
        keys = (
            "name",
            "interval",
            "records",
            "mta_sts",
            "dane",
            "dnsbl",
            "smtp_port",
            "mta_sts_port",
            "tls_ca_file",
        )
        d = self.mapping(raw, path, keys)
        name = self.typed(d, "name", path, str, None)
        if name is not None:
            name = name.rstrip(".").lower()
            if not _DOMAIN.fullmatch(name) or is_ip(name):
                self.error(_join(path, "name"), f"expected a domain name, got {d['name']!r}")
                name = None
        interval = self.duration(d, "interval", path, 3600.0)
        if interval < MIN_DOMAIN_INTERVAL:
            self.error(
                _join(path, "interval"),
                f"{interval:g}s is shorter than the minimum 1m (DNS checks need not run often)",
            )
        zones: list[str] = []
        raw_zones = d.get("dnsbl")
        if raw_zones is not None and not isinstance(raw_zones, list):
            self.error(
                _join(path, "dnsbl"), f"expected a list of DNS zones, got {_type(raw_zones)}"
            )
            raw_zones = []
        for i, zone in enumerate(raw_zones or []):
            text = zone.rstrip(".").lower() if isinstance(zone, str) else None
            if text is None or not _DOMAIN.fullmatch(text) or is_ip(text):
                self.error(f"{_join(path, 'dnsbl')}[{i}]", f"expected a DNS zone, got {zone!r}")
            elif text not in zones:
                zones.append(text)
        ports = {}
        for key, default in (("smtp_port", 25), ("mta_sts_port", 443)):
            ports[key] = self.typed(d, key, path, int, default)
            if not 0 < ports[key] < 65536:
                self.error(_join(path, key), f"expected 1-65535, got {ports[key]}")
                ports[key] = default
        return DomainChecks(
            name=name,
            interval=interval,
            records=self.typed(d, "records", path, bool, True),
            mta_sts=self.typed(d, "mta_sts", path, bool, False),
            dane=self.typed(d, "dane", path, bool, False),
            dnsbl=tuple(zones),
            smtp_port=ports["smtp_port"],
            mta_sts_port=ports["mta_sts_port"],
            tls_ca_file=self.file_path(d, "tls_ca_file", path),
        )

    def canary(self, raw: Any, path: str) -> CanaryConfig | None:
        d = self.mapping(raw, path, ("from", "to", "interval", "timeout", "imap"))
        addresses = {}
        for key in ("from", "to"):
            value = self.typed(d, key, path, str, None)
            if not value:
                self.error(_join(path, key), "required: an email address")
            elif not _ADDRESS.fullmatch(value):
                self.error(_join(path, key), f"not a plain email address: {value!r}")
            else:
                addresses[key] = value
        interval = self.duration(d, "interval", path, 600.0)
        timeout = self.duration(d, "timeout", path, min(300.0, interval))
        if timeout > interval:
            self.error(
                _join(path, "timeout"),
                f"{timeout:g}s is longer than the canary interval {interval:g}s",
            )
        imap = None
        if d.get("imap") is not None:
            from .imapcheck import parse_imap_config

            try:
                imap = parse_imap_config(
                    d["imap"], _join(path, "imap"), self.file, self.env, self.base
                )
            except ConfigError as exc:
                # Its lines already carry the file name; keep ours uniform.
                prefix = f"{self.file}: "
                self.errors += [line.removeprefix(prefix) for line in str(exc).splitlines()]
        if len(addresses) != 2:
            return None
        return CanaryConfig(addresses["from"], addresses["to"], interval, timeout, imap)

    def auth(self, raw: Any, path: str) -> AuthConfig | None:
        d = self.mapping(
            raw, path, ("username", "password_file", "password_env", "mechanism", "allow_insecure")
        )
        username = self.typed(d, "username", path, str, None)
        if not username:
            self.error(_join(path, "username"), "required")
        sources = [k for k in ("password_file", "password_env") if d.get(k) is not None]
        if len(sources) != 1:
            self.error(path, "set exactly one of password_file, password_env")
            return None
        secret = self.secret(d, sources[0], path)
        mechanisms = self.mechanisms(d.get("mechanism", "auto"), _join(path, "mechanism"))
        allow = self.typed(d, "allow_insecure", path, bool, False)
        if username is None or secret is None:
            return None
        return AuthConfig(username, secret, mechanisms, allow)

    def mechanisms(self, raw: Any, path: str) -> tuple[str, ...]:
        """One mechanism or a list of allowed ones, in order of preference."""
        items = raw if isinstance(raw, list) else [raw]
        out: list[str] = []
        for item in items:
            if not isinstance(item, str) or item not in AUTH_MECHANISMS:
                self.error(
                    path, f"expected one or a list of {', '.join(AUTH_MECHANISMS)}, got {item!r}"
                )
            elif item not in out:
                out.append(item)
        return tuple(out) or ("auto",)

    def secret(self, d: dict[str, Any], key: str, path: str) -> Secret | None:
        value = self.typed(d, key, path, str, None)
        if value is None:
            return None
        if key == "password_env":
            if not self.env.get(value):
                self.error(_join(path, key), f"environment variable {value!r} is not set or empty")
                return None
            return Secret(self.env[value])
        resolved = value if os.path.isabs(value) else str(self.base / value)
        # The value is never shown: a password typed where the path belongs must not end up
        # in --config.check output, the log or the /-/reload answer.
        text, problem = read_secret_file(resolved)
        if problem is not None:
            self.error(_join(path, key), f"{problem} (value not shown)")
            return None
        # Files written by editors and `echo` end in a newline that is not part of the password.
        text = text.removesuffix("\n").removesuffix("\r")
        if not text:
            self.error(_join(path, key), "secret file is empty (value not shown)")
            return None
        return Secret(text)

    def targets(
        self, raw: Any, modules: Mapping[str, Module], default_module: str | None, interval: float
    ) -> list[Target]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.error("targets", f"expected a list, got {_type(raw)}")
            return []
        out: list[Target] = []
        seen: set[tuple[str, str]] = set()
        for i, item in enumerate(raw):
            path = f"targets[{i}]"
            d = self.mapping(item, path, ("target", "module", "interval", "labels"))
            if not d:
                if isinstance(item, dict):
                    self.error(path, "empty target")
                continue
            name = self.typed(d, "target", path, str, None)
            mod_name = self.typed(d, "module", path, str, default_module)
            if name is None:
                self.error(_join(path, "target"), "required")
            if mod_name is None:
                self.error(_join(path, "module"), "required (no defaults.module)")
                continue
            module = modules.get(mod_name)
            if module is None:
                self.error(
                    _join(path, "module"), f"unknown module {mod_name!r}{_hint(mod_name, modules)}"
                )
                continue
            every = self.duration(d, "interval", path, interval)
            labels = self.labels(d.get("labels"), _join(path, "labels"))
            if name is None:
                continue
            mx = name.startswith("mx:")
            try:
                host, port = parse_target(name[3:] if mx else name, module.default_port)
                if mx and is_ip(host):
                    raise ValueError("mx: takes a mail domain, not an address")
            except ValueError as exc:
                self.error(_join(path, "target"), f"{exc}, got {name!r}")
                continue
            if module.timeout > every:
                self.error(
                    _join(path, "interval"),
                    f"{every:g}s is shorter than module {mod_name!r} timeout {module.timeout:g}s",
                )
            if module.domain is not None and module.domain.name is None and not mx:
                self.error(
                    _join(path, "target"),
                    f"module {mod_name!r} has domain: without name; set modules.{mod_name}"
                    ".domain.name or use an mx: target (whose domain is its own)",
                )
            if (name, mod_name) in seen:
                self.error(
                    _join(path, "target"), f"duplicate target {name!r} with module {mod_name!r}"
                )
            seen.add((name, mod_name))
            out.append(Target(name, host, port, module, every, labels, mx))
        return out

    def labels(self, raw: Any, path: str) -> tuple[tuple[str, str], ...]:
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.error(path, f"expected a mapping of label names to values, got {_type(raw)}")
            return ()
        out = []
        for key, value in raw.items():
            key_s = str(key)
            if not _LABEL.fullmatch(key_s) or key_s.startswith("__"):
                self.error(_join(path, key_s), "invalid label name")
            elif key_s in RESERVED_LABELS:
                self.error(_join(path, key_s), "reserved label name")
            elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
                self.error(_join(path, key_s), f"expected a string value, got {_type(value)}")
            else:
                out.append((key_s, str(value)))
        return tuple(sorted(out))


MAX_SECRET_FILE = 64 * 1024


def read_secret_file(path: str) -> tuple[str, str | None]:
    """The text of a secret file, or ("", why not). Only a regular file is read, opened
    non-blocking so that a FIFO or device given by mistake cannot hang a (re)load; a UTF-8
    byte-order mark is not part of the secret."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        return "", "no such file"
    except OSError as exc:
        return "", f"cannot open the secret file: {exc.strerror}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "", "not a regular file"
        data = os.read(fd, MAX_SECRET_FILE + 1)
    except OSError as exc:
        return "", f"cannot read the secret file: {exc.strerror}"
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_FILE:
        return "", f"secret file larger than {MAX_SECRET_FILE // 1024} KiB"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        return "", "secret file is not UTF-8"


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


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type(value: Any) -> str:
    return {
        dict: "mapping",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _hint(name: str, options: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
