"""The exporter's config tree, validated section by section into the model's dataclasses.

No YAML here (``loader`` parses the text): the input is the plain tree of dicts and lists.
Allowed keys and defaults come from the model's fields (``config_keys`` / ``default_of``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError
from .model import (
    AUTH_MECHANISMS,
    IP_PROTOCOLS,
    RESERVED_LABELS,
    AuthConfig,
    CanaryConfig,
    Config,
    Defaults,
    DNSConfig,
    DomainChecks,
    IMAPConfig,
    IMAPTLSMode,
    Module,
    PostureConfig,
    ProbeAllow,
    RelayTest,
    Target,
    TLSMode,
    config_keys,
    default_of,
    is_ip,
    parse_target,
)
from .validator import Validator, hint, join, type_name

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
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NO_PASSWORD = IMAPConfig.__dataclass_fields__["password"].default


def _M(name: str) -> Any:
    return default_of(Module, name)


def _D(name: str) -> Any:
    return default_of(DomainChecks, name)


def validate(data: Any, *, file: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    """A config tree (dicts and lists, as YAML or code builds it) -> ``Config``; raises
    ``ConfigError`` listing every problem, one ``file: path.key: message`` line each."""
    v = ConfigValidator(file, os.environ if env is None else env)
    config = v.config(data)
    v.raise_if_any()
    return config


class ConfigValidator(Validator):
    """The exporter's config tree, section by section: ``config(data) -> Config``."""

    def config(self, data: Any) -> Config:
        top = self.mapping(data, "", config_keys(Config))
        if data is None:
            self.error("", "config file is empty")
        defaults = self.mapping(top.get("defaults"), "defaults", config_keys(Defaults))
        interval = self.duration(defaults, "interval", "defaults", default_of(Defaults, "interval"))
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
                f"unknown module {default_module!r}{hint(default_module, modules)}",
            )
        targets = self.targets(top.get("targets"), modules, default_module, interval)
        dns = self.dns(top.get("dns"))
        return Config(MappingProxyType(modules), tuple(targets), self.file, default_module, dns)

    def dns(self, raw: Any) -> DNSConfig:
        d = self.mapping(raw, "dns", config_keys(DNSConfig))
        servers: list[tuple[str, int]] = []
        raw_servers = d.get("nameservers") or []
        if not isinstance(raw_servers, list):
            self.error("dns.nameservers", f"expected a list, got {type_name(raw_servers)}")
            raw_servers = []
        for i, item in enumerate(raw_servers):
            try:
                host, port = parse_target(str(item), 53)
                ipaddress.ip_address(host)
            except ValueError:
                self.error(f"dns.nameservers[{i}]", f"expected an IP address[:port], got {item!r}")
                continue
            servers.append((host, port))
        return DNSConfig(
            tuple(servers), self.duration(d, "timeout", "dns", default_of(DNSConfig, "timeout"))
        )

    def module(self, name: str, raw: Any, path: str) -> Module:
        d = self.mapping(raw, path, config_keys(Module))
        tls = TLSMode(self.choice(d, "tls", path, tuple(TLSMode), default_of(Module, "tls").value))
        port = self.typed(d, "port", path, int, None)
        if port is not None and not 0 < port < 65536:
            self.error(join(path, "port"), f"expected 1-65535, got {port}")
        ehlo = self.typed(d, "ehlo_name", path, str, None)
        if ehlo is not None and not _EHLO.fullmatch(ehlo):
            self.error(join(path, "ehlo_name"), f"not a valid host name: {ehlo!r}")
        server_name = self.typed(d, "tls_server_name", path, str, None)
        if server_name is not None and not _EHLO.fullmatch(server_name):
            self.error(join(path, "tls_server_name"), f"not a valid host name: {server_name!r}")
        kwargs: dict[str, Any] = {
            "name": name,
            "tls": tls,
            "port": port,
            "tls_required": self.typed(d, "tls_required", path, bool, _M("tls_required")),
            "tls_verify": self.typed(d, "tls_verify", path, bool, _M("tls_verify")),
            "tls_ca_file": self.file_path(d, "tls_ca_file", path),
            "tls_server_name": server_name,
            "timeout": self.duration(d, "timeout", path, _M("timeout")),
            "ip_protocol": self.choice(d, "ip_protocol", path, IP_PROTOCOLS, _M("ip_protocol")),
            "auth": self.auth(d.get("auth"), join(path, "auth")) if "auth" in d else None,
            "canary": self.canary(d["canary"], join(path, "canary")) if "canary" in d else None,
            "posture": self.posture(d.get("posture"), join(path, "posture"), tls),
            "domain": self.domain(d["domain"], join(path, "domain")) if "domain" in d else None,
            "probe_allow": (
                self.probe_allow(d["probe_allow"], join(path, "probe_allow"))
                if d.get("probe_allow") is not None
                else None
            ),
        }
        if ehlo:
            kwargs["ehlo_name"] = ehlo
        return Module(**kwargs)

    def probe_allow(self, raw: Any, path: str) -> ProbeAllow:
        d = self.mapping(raw, path, config_keys(ProbeAllow))
        hosts: list[tuple[str, int | None]] = []
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for key in ("hosts", "networks"):
            items = d.get(key)
            if items is None:
                continue
            if not isinstance(items, list):
                self.error(join(path, key), f"expected a list, got {type_name(items)}")
                continue
            for i, item in enumerate(items):
                where = f"{join(path, key)}[{i}]"
                if not isinstance(item, str):
                    self.error(where, f"expected a string, got {type_name(item)}")
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
        d = self.mapping(raw, path, config_keys(PostureConfig))
        before = self.typed(d, "auth_before_tls", path, bool, False)
        if before and tls is not TLSMode.STARTTLS:
            self.error(
                join(path, "auth_before_tls"),
                "needs tls: starttls (it looks at the session before STARTTLS)",
            )
        relay_from = relay_to = None
        if d.get("relay_test") is not None:
            rpath = join(path, "relay_test")
            r = self.mapping(d["relay_test"], rpath, config_keys(RelayTest))
            for key in ("from", "to"):
                value = self.typed(r, key, rpath, str, None)
                if not value or not _ADDRESS.fullmatch(value):
                    self.error(join(rpath, key), f"required: a plain email address, got {value!r}")
            relay_from, relay_to = r.get("from"), r.get("to")
        scan = self.typed(d, "tls_scan", path, bool, False)
        if scan and tls is TLSMode.NONE:
            self.error(join(path, "tls_scan"), "needs tls: starttls or implicit")
        fail = self.typed(d, "fail_on_findings", path, bool, False)
        return PostureConfig(bool(before), relay_from, relay_to, bool(scan), fail)

    def domain(self, raw: Any, path: str) -> DomainChecks:
        d = self.mapping(raw, path, config_keys(DomainChecks))
        name = self.typed(d, "name", path, str, None)
        if name is not None:
            name = name.rstrip(".").lower()
            if not _DOMAIN.fullmatch(name) or is_ip(name):
                self.error(join(path, "name"), f"expected a domain name, got {d['name']!r}")
                name = None
        interval = self.duration(d, "interval", path, _D("interval"))
        if interval < MIN_DOMAIN_INTERVAL:
            self.error(
                join(path, "interval"),
                f"{interval:g}s is shorter than the minimum 1m (DNS checks need not run often)",
            )
        zones: list[str] = []
        raw_zones = d.get("dnsbl")
        if raw_zones is not None and not isinstance(raw_zones, list):
            self.error(
                join(path, "dnsbl"), f"expected a list of DNS zones, got {type_name(raw_zones)}"
            )
            raw_zones = []
        for i, zone in enumerate(raw_zones or []):
            text = zone.rstrip(".").lower() if isinstance(zone, str) else None
            if text is None or not _DOMAIN.fullmatch(text) or is_ip(text):
                self.error(f"{join(path, 'dnsbl')}[{i}]", f"expected a DNS zone, got {zone!r}")
            elif text not in zones:
                zones.append(text)
        ports = {}
        for key in ("smtp_port", "mta_sts_port"):
            default = _D(key)
            ports[key] = self.typed(d, key, path, int, default)
            if not 0 < ports[key] < 65536:
                self.error(join(path, key), f"expected 1-65535, got {ports[key]}")
                ports[key] = default
        return DomainChecks(
            name=name,
            interval=interval,
            records=self.typed(d, "records", path, bool, _D("records")),
            mta_sts=self.typed(d, "mta_sts", path, bool, _D("mta_sts")),
            dane=self.typed(d, "dane", path, bool, _D("dane")),
            dnsbl=tuple(zones),
            smtp_port=ports["smtp_port"],
            mta_sts_port=ports["mta_sts_port"],
            tls_ca_file=self.file_path(d, "tls_ca_file", path),
        )

    def canary(self, raw: Any, path: str) -> CanaryConfig | None:
        d = self.mapping(raw, path, config_keys(CanaryConfig))
        addresses = {}
        for key in ("from", "to"):
            value = self.typed(d, key, path, str, None)
            if not value:
                self.error(join(path, key), "required: an email address")
            elif not _ADDRESS.fullmatch(value):
                self.error(join(path, key), f"not a plain email address: {value!r}")
            else:
                addresses[key] = value
        interval = self.duration(d, "interval", path, default_of(CanaryConfig, "interval"))
        timeout = self.duration(
            d, "timeout", path, min(default_of(CanaryConfig, "timeout"), interval)
        )
        if timeout > interval:
            self.error(
                join(path, "timeout"),
                f"{timeout:g}s is longer than the canary interval {interval:g}s",
            )
        imap = None
        if d.get("imap") is not None:
            try:
                imap = parse_imap_config(
                    d["imap"], join(path, "imap"), self.file, self.env, self.base
                )
            except ConfigError as exc:
                # Its lines already carry the file name; keep ours uniform.
                prefix = f"{self.file}: "
                self.errors += [line.removeprefix(prefix) for line in str(exc).splitlines()]
        if len(addresses) != 2:
            return None
        return CanaryConfig(addresses["from"], addresses["to"], interval, timeout, imap)

    def auth(self, raw: Any, path: str) -> AuthConfig | None:
        d = self.mapping(raw, path, config_keys(AuthConfig))
        username = self.typed(d, "username", path, str, None)
        if not username:
            self.error(join(path, "username"), "required")
        sources = [k for k in ("password_file", "password_env") if d.get(k) is not None]
        if len(sources) != 1:
            self.error(path, "set exactly one of password_file, password_env")
            return None
        secret = self.secret(d, sources[0], path)
        mechanisms = self.mechanisms(d.get("mechanism", "auto"), join(path, "mechanism"))
        allow = self.typed(
            d, "allow_insecure", path, bool, default_of(AuthConfig, "allow_insecure")
        )
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

    def targets(
        self, raw: Any, modules: Mapping[str, Module], default_module: str | None, interval: float
    ) -> list[Target]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.error("targets", f"expected a list, got {type_name(raw)}")
            return []
        out: list[Target] = []
        seen: set[tuple[str, str]] = set()
        for i, item in enumerate(raw):
            path = f"targets[{i}]"
            d = self.mapping(item, path, config_keys(Target))
            if not d:
                if isinstance(item, dict):
                    self.error(path, "empty target")
                continue
            name = self.typed(d, "target", path, str, None)
            mod_name = self.typed(d, "module", path, str, default_module)
            if name is None:
                self.error(join(path, "target"), "required")
            if mod_name is None:
                self.error(join(path, "module"), "required (no defaults.module)")
                continue
            module = modules.get(mod_name)
            if module is None:
                self.error(
                    join(path, "module"), f"unknown module {mod_name!r}{hint(mod_name, modules)}"
                )
                continue
            every = self.duration(d, "interval", path, interval)
            labels = self.labels(d.get("labels"), join(path, "labels"))
            if name is None:
                continue
            mx = name.startswith("mx:")
            try:
                host, port = parse_target(name[3:] if mx else name, module.default_port)
                if mx and is_ip(host):
                    raise ValueError("mx: takes a mail domain, not an address")
            except ValueError as exc:
                self.error(join(path, "target"), f"{exc}, got {name!r}")
                continue
            if module.timeout > every:
                self.error(
                    join(path, "interval"),
                    f"{every:g}s is shorter than module {mod_name!r} timeout {module.timeout:g}s",
                )
            if module.domain is not None and module.domain.name is None and not mx:
                self.error(
                    join(path, "target"),
                    f"module {mod_name!r} has domain: without name; set modules.{mod_name}"
                    ".domain.name or use an mx: target (whose domain is its own)",
                )
            if (name, mod_name) in seen:
                self.error(
                    join(path, "target"), f"duplicate target {name!r} with module {mod_name!r}"
                )
            seen.add((name, mod_name))
            out.append(Target(name, host, port, module, every, labels, mx))
        return out

    def labels(self, raw: Any, path: str) -> tuple[tuple[str, str], ...]:
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.error(path, f"expected a mapping of label names to values, got {type_name(raw)}")
            return ()
        out = []
        for key, value in raw.items():
            key_s = str(key)
            if not _LABEL.fullmatch(key_s) or key_s.startswith("__"):
                self.error(join(path, key_s), "invalid label name")
            elif key_s in RESERVED_LABELS:
                self.error(join(path, key_s), "reserved label name")
            elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
                self.error(join(path, key_s), f"expected a string value, got {type_name(value)}")
            else:
                out.append((key_s, str(value)))
        return tuple(sorted(out))


def parse_imap_config(
    raw: object, path: str, file: str, env: Mapping[str, str], base_dir: Path
) -> IMAPConfig:
    """Validate a module's ``canary.imap`` mapping; raise ``ConfigError`` listing every problem,
    one ``file: path.key: message`` line each."""
    v = Validator(file, env)
    v.base = base_dir
    d = v.mapping(raw, path, config_keys(IMAPConfig))
    if not isinstance(raw, dict):
        if raw is None:
            v.error(path, "expected a mapping with host, username and a password")
        v.raise_if_any()
    host = v.typed(d, "host", path, str, None)
    if not host or any(c.isspace() for c in host):
        v.error(f"{path}.host", "required" if not host else f"not a valid host: {host!r}")
    tls = IMAPTLSMode(v.choice(d, "tls", path, tuple(IMAPTLSMode), IMAPTLSMode.IMPLICIT.value))
    port = v.typed(d, "port", path, int, None)
    if port is not None and not 0 < port < 65536:
        v.error(f"{path}.port", f"expected 1-65535, got {port}")
    username = v.typed(d, "username", path, str, None)
    if not username:
        v.error(f"{path}.username", "required")
    elif _CONTROL.search(username):
        v.error(f"{path}.username", "control characters are not allowed")
    sources = [k for k in ("password_file", "password_env") if d.get(k) is not None]
    password = v.secret(d, sources[0], path) if len(sources) == 1 else None
    if len(sources) != 1:
        v.error(path, "set exactly one of password_file, password_env")
    folder = v.typed(d, "folder", path, str, "INBOX")
    if not folder or _CONTROL.search(folder) or not folder.isascii():
        v.error(f"{path}.folder", f"expected a non-empty ASCII folder name, got {folder!r}")
    interval = v.duration(d, "poll_interval", path, 1.0)
    if interval < 0.1:
        v.error(f"{path}.poll_interval", "must be at least 100ms")
    cfg = IMAPConfig(
        host=host or "",
        port=port or (993 if tls is IMAPTLSMode.IMPLICIT else 143),
        tls=tls,
        username=username or "",
        password=password or _NO_PASSWORD,
        folder=folder,
        tls_verify=v.typed(d, "tls_verify", path, bool, True),
        tls_ca_file=v.file_path(d, "tls_ca_file", path),
        poll_interval=interval,
    )
    v.raise_if_any()
    return cfg
