"""The config sections of a module's optional features: ``probe_allow``, ``posture``,
``domain``, ``canary`` and its ``imap`` mailbox. ``ConfigValidator`` (``sections``) builds
on ``FeatureSections``."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .model import (
    AUTH_MECHANISMS,
    CanaryConfig,
    CanaryRoute,
    DomainChecks,
    IMAPConfig,
    IMAPTLSMode,
    PostureConfig,
    ProbeAllow,
    RelayTest,
    TLSMode,
    config_keys,
    default_of,
    is_ip,
    parse_target,
)
from .validator import Validator, join, type_name

_ADDRESS = re.compile(r"[^\s<>@\"]{1,64}@[A-Za-z0-9.\-\[\]:]{1,255}")
_DOMAIN = re.compile(
    r"(?=.{1,253}$)(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
_HOSTNAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,252})")
MIN_DOMAIN_INTERVAL = 60.0
# RFC 6376 §3.1: a selector is one or more DNS labels.
_SELECTOR = re.compile(
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*"
)
MAX_SENDING_ADDRESSES = 32
MAX_DKIM_SELECTORS = 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ROUTE = re.compile(r"[a-z0-9_-]{1,32}")
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")  # RFC 5322 ftext
# Headers the canary writes itself; one of these in ``headers`` would make two.
_OWN_HEADERS = frozenset(
    {"from", "to", "subject", "date", "message-id", "x-smtp-health-canary", "sender"}
)
_NO_PASSWORD = IMAPConfig.__dataclass_fields__["password"].default


def _D(name: str) -> Any:
    return default_of(DomainChecks, name)


class FeatureSections(Validator):
    """Sections of the optional features, each into its model dataclass."""

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
        selectors = self._list(d, "dkim_selectors", path, "a DKIM selector", _SELECTOR.fullmatch)
        if len(selectors) > MAX_DKIM_SELECTORS:
            self.error(
                join(path, "dkim_selectors"),
                f"{len(selectors)} selectors; at most {MAX_DKIM_SELECTORS}",
            )
        sending = self._list(d, "sending_addresses", path, "an IP address", is_ip)
        if len(sending) > MAX_SENDING_ADDRESSES:
            self.error(
                join(path, "sending_addresses"),
                f"{len(sending)} addresses; at most {MAX_SENDING_ADDRESSES}",
            )
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
            dkim_selectors=tuple(dict.fromkeys(s.lower() for s in selectors)),
            reverse_dns=self.typed(d, "reverse_dns", path, bool, _D("reverse_dns")),
            sending_addresses=tuple(dict.fromkeys(str(ipaddress.ip_address(a)) for a in sending)),
        )

    def _list(
        self, d: dict[str, Any], key: str, path: str, what: str, ok: Callable[[str], object]
    ) -> list[str]:
        """A list of strings each ``ok`` accepts, without repeats; errors name the item."""
        raw = d.get(key)
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.error(join(path, key), f"expected a list, got {type_name(raw)}")
            return []
        out: list[str] = []
        for i, item in enumerate(raw):
            if not isinstance(item, str) or not ok(item):
                self.error(f"{join(path, key)}[{i}]", f"expected {what}, got {item!r}")
            elif item not in out:
                out.append(item)
        return out

    def canary(self, raw: Any, path: str) -> CanaryConfig | None:
        d = self.mapping(raw, path, config_keys(CanaryConfig))
        sender = self._address(d, "from", path)
        single = [k for k in ("to", "imap", "authserv_id") if d.get(k) is not None]
        routes: tuple[CanaryRoute, ...] = ()
        if d.get("routes") is not None:
            for k in single:
                self.error(join(path, k), "not allowed beside routes: set it in each route")
            routes = self._routes(d["routes"], join(path, "routes"))
            recipient, imap, authserv_id = "", None, None
        else:
            recipient = self._address(d, "to", path)
            imap = self._imap(d.get("imap"), join(path, "imap"))
            authserv_id = self._authserv_id(d, path)
        interval = self.duration(d, "interval", path, default_of(CanaryConfig, "interval"))
        timeout = self.duration(
            d, "timeout", path, min(default_of(CanaryConfig, "timeout"), interval)
        )
        if timeout > interval:
            self.error(
                join(path, "timeout"),
                f"{timeout:g}s is longer than the canary interval {interval:g}s",
            )
        headers = self._headers(d.get("headers"), join(path, "headers"))
        if sender is None or (recipient is None) or (d.get("routes") is not None and not routes):
            return None
        return CanaryConfig(
            sender, recipient, interval, timeout, imap, authserv_id, headers, routes
        )

    def _address(self, d: dict[str, Any], key: str, path: str) -> str | None:
        value = self.typed(d, key, path, str, None)
        if not value:
            self.error(join(path, key), "required: an email address")
        elif not _ADDRESS.fullmatch(value):
            self.error(join(path, key), f"not a plain email address: {value!r}")
        else:
            return value
        return None

    def _imap(self, raw: Any, path: str) -> IMAPConfig | None:
        if raw is None:
            return None
        try:
            return parse_imap_config(raw, path, self.file, self.env, self.base)
        except ConfigError as exc:
            # Its lines already carry the file name; keep ours uniform.
            prefix = f"{self.file}: "
            self.errors += [line.removeprefix(prefix) for line in str(exc).splitlines()]
            return None

    def _authserv_id(self, d: dict[str, Any], path: str) -> str | None:
        """The receiving host's authserv-id: a host name, ``*.`` + one (one label stands
        for any), or "" for headers without one (Microsoft 365)."""
        value = self.typed(d, "authserv_id", path, str, None)
        if value is None or value == "":
            return value
        name = value.lower().removeprefix("*.").rstrip(".")
        if not _DOMAIN.fullmatch(name):
            self.error(join(path, "authserv_id"), f"not a host name: {value!r}")
            return None
        return value.lower().rstrip(".")

    def _routes(self, raw: Any, path: str) -> tuple[CanaryRoute, ...]:
        if not isinstance(raw, list) or not raw:
            got = "an empty list" if raw == [] else type_name(raw)
            self.error(path, f"expected a non-empty list of routes, got {got}")
            return ()
        out: list[CanaryRoute] = []
        names: set[str] = set()
        for i, item in enumerate(raw):
            here = f"{path}[{i}]"
            d = self.mapping(item, here, config_keys(CanaryRoute))
            name = self.typed(d, "name", here, str, None)
            if not name or not _ROUTE.fullmatch(name):
                self.error(join(here, "name"), f"expected [a-z0-9_-]{{1,32}}, got {name!r}")
                name = None
            elif name in names:
                self.error(join(here, "name"), f"route {name!r} is defined twice")
                name = None
            else:
                names.add(name)
            recipient = self._address(d, "to", here)
            imap = self._imap(d.get("imap"), join(here, "imap"))
            authserv_id = self._authserv_id(d, here)
            if name is not None and recipient is not None:
                out.append(CanaryRoute(name, recipient, imap, authserv_id))
        return tuple(out) if len(out) == len(raw) else ()

    def _headers(self, raw: Any, path: str) -> tuple[tuple[str, str], ...]:
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.error(path, f"expected a mapping of header name to value, got {type_name(raw)}")
            return ()
        out: list[tuple[str, str]] = []
        for name, value in raw.items():
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                self.error(join(path, str(name)), "not a header field name")
            elif name.lower() in _OWN_HEADERS:
                self.error(join(path, name), "set by the canary itself")
            elif not isinstance(value, str) or _CONTROL.search(value) or len(value) > 200:
                self.error(join(path, name), "expected one line of text, at most 200 characters")
            else:
                out.append((name, value))
        return tuple(out)


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
    junk: tuple[str, ...] | None = None
    if d.get("junk_folders") is not None:
        raw_junk = d["junk_folders"]
        if not isinstance(raw_junk, list) or not all(
            isinstance(f, str) and f and f.isascii() and not _CONTROL.search(f) for f in raw_junk
        ):
            v.error(f"{path}.junk_folders", "expected a list of non-empty ASCII folder names")
        else:
            junk = tuple(dict.fromkeys(f for f in raw_junk if f != folder))
    raw_mech = d.get("mechanism", "auto")
    mechanisms = tuple(dict.fromkeys(raw_mech if isinstance(raw_mech, list) else [raw_mech]))
    if not mechanisms or any(m not in AUTH_MECHANISMS for m in mechanisms):
        v.error(
            f"{path}.mechanism",
            f"expected one or a list of {', '.join(AUTH_MECHANISMS)}, got {raw_mech!r}",
        )
        mechanisms = ("auto",)
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
        junk_folders=junk,
        mechanisms=mechanisms,
    )
    v.raise_if_any()
    return cfg
