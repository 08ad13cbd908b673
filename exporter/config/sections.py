"""The exporter's config tree, validated section by section into the model's dataclasses.

No YAML here (``loader`` parses the text): the input is the plain tree of dicts and lists.
Allowed keys and defaults come from the model's fields (``config_keys`` / ``default_of``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .features import FeatureSections
from .model import (
    AUTH_MECHANISMS,
    IP_PROTOCOLS,
    MAILBOX_AUTH_MECHANISMS,
    PROTOCOLS,
    RESERVED_LABELS,
    AuthConfig,
    Config,
    Defaults,
    DNSConfig,
    Module,
    Target,
    TLSMode,
    config_keys,
    default_of,
    is_ip,
    parse_target,
)
from .validator import hint, join, type_name

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_EHLO = re.compile(r"[A-Za-z0-9.\-\[\]:_]{1,255}")
_MAILBOX = re.compile(r"[\x20-\x7e]{1,255}")
# Module keys that mean nothing for IMAP and POP3, refused rather than ignored, with why.
_SMTP_ONLY = {
    "ehlo_name": "IMAP and POP3 send no EHLO",
    "canary": "a canary is mail sent over SMTP; give it an SMTP module",
    "posture": "its checks are of an SMTP session",
    "domain": "mail-domain checks (MX, SPF, MTA-STS, DANE) belong to an SMTP module",
}


def _M(name: str) -> Any:
    return default_of(Module, name)


def validate(data: Any, *, file: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    """A config tree (dicts and lists, as YAML or code builds it) -> ``Config``; raises
    ``ConfigError`` listing every problem, one ``file: path.key: message`` line each."""
    v = ConfigValidator(file, os.environ if env is None else env)
    config = v.config(data)
    v.raise_if_any()
    return config


class ConfigValidator(FeatureSections):
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
                inherited = module_defaults
                if (raw or {}).get("protocol", "smtp") != "smtp":
                    # defaults.ehlo_name is for the SMTP modules: IMAP and POP3 send no EHLO.
                    inherited = {k: v for k, v in module_defaults.items() if k != "ehlo_name"}
                raw = {**inherited, **(raw or {})}
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
        protocol = self.choice(d, "protocol", path, PROTOCOLS, _M("protocol"))
        self.protocol_keys(d, path, protocol)
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
            "protocol": protocol,
            "tls": tls,
            "port": port,
            "tls_required": self.typed(d, "tls_required", path, bool, _M("tls_required")),
            "tls_verify": self.typed(d, "tls_verify", path, bool, _M("tls_verify")),
            "tls_ca_file": self.file_path(d, "tls_ca_file", path),
            "tls_server_name": server_name,
            "timeout": self.duration(d, "timeout", path, _M("timeout")),
            "ip_protocol": self.choice(d, "ip_protocol", path, IP_PROTOCOLS, _M("ip_protocol")),
            "auth": self.auth(d.get("auth"), join(path, "auth"), protocol) if "auth" in d else None,
            "canary": self.canary(d["canary"], join(path, "canary")) if "canary" in d else None,
            "posture": self.posture(d.get("posture"), join(path, "posture"), tls),
            "domain": self.domain(d["domain"], join(path, "domain")) if "domain" in d else None,
            "probe_allow": (
                self.probe_allow(d["probe_allow"], join(path, "probe_allow"))
                if d.get("probe_allow") is not None
                else None
            ),
            "metrics_detail": self.typed(d, "metrics_detail", path, bool, _M("metrics_detail")),
        }
        if ehlo:
            kwargs["ehlo_name"] = ehlo
        if protocol == "imap":
            mailbox = self.typed(d, "mailbox", path, str, _M("mailbox"))
            if not _MAILBOX.fullmatch(mailbox):
                self.error(
                    join(path, "mailbox"),
                    f"expected a mailbox name of 1-255 printable ASCII characters, got {mailbox!r}",
                )
            kwargs["mailbox"] = mailbox
            kwargs["mailbox_select"] = self.typed(
                d, "mailbox_select", path, bool, _M("mailbox_select")
            )
        return Module(**kwargs)

    def protocol_keys(self, d: dict[str, Any], path: str, protocol: str) -> None:
        """Refuse the keys the module's protocol has no use for (a key silently ignored
        would let an operator believe it is checked)."""
        if protocol != "smtp":
            for key, why in _SMTP_ONLY.items():
                if key in d:
                    self.error(join(path, key), f"not for protocol {protocol}: {why}")
        if protocol != "imap":
            why = "POP3 has one mailbox per login" if protocol == "pop3" else "IMAP's"
            for key in ("mailbox", "mailbox_select"):
                if key in d:
                    self.error(join(path, key), f"only for protocol imap ({why})")

    def auth(self, raw: Any, path: str, protocol: str = "smtp") -> AuthConfig | None:
        d = self.mapping(raw, path, config_keys(AuthConfig))
        username = self.typed(d, "username", path, str, None)
        if not username:
            self.error(join(path, "username"), "required")
        sources = [k for k in ("password_file", "password_env") if d.get(k) is not None]
        if len(sources) != 1:
            self.error(path, "set exactly one of password_file, password_env")
            return None
        secret = self.secret(d, sources[0], path)
        mechanisms = self.mechanisms(d.get("mechanism", "auto"), join(path, "mechanism"), protocol)
        allow = self.typed(
            d, "allow_insecure", path, bool, default_of(AuthConfig, "allow_insecure")
        )
        if username is None or secret is None:
            return None
        return AuthConfig(username, secret, mechanisms, allow)

    def mechanisms(self, raw: Any, path: str, protocol: str = "smtp") -> tuple[str, ...]:
        """One mechanism or a list of allowed ones, in order of preference."""
        items = raw if isinstance(raw, list) else [raw]
        allowed = AUTH_MECHANISMS if protocol == "smtp" else MAILBOX_AUTH_MECHANISMS
        where = "" if protocol == "smtp" else f" for protocol {protocol}"
        out: list[str] = []
        for item in items:
            if not isinstance(item, str) or item not in allowed:
                self.error(
                    path, f"expected one or a list of {', '.join(allowed)}{where}, got {item!r}"
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
            if mx and module.protocol != "smtp":
                self.error(
                    join(path, "target"),
                    f"mx: targets are probed over SMTP; module {mod_name!r} has protocol "
                    f"{module.protocol}: give the host, e.g. imap.example.com",
                )
                continue
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
