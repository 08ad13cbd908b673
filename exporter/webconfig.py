"""``--web.config.file``: TLS, basic auth and response headers for the metrics endpoint.

The format is the Prometheus exporter-toolkit's (its docs/web-configuration.md), so the file
node_exporter already uses can be shared. What is not implemented, or what Python's ``ssl``
cannot do, is refused by name rather than ignored: a file must never silently run with weaker
settings than its author wrote.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
import ssl
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import bcrypt
import yaml

from .config.validator import Validator
from .errors import ConfigError

_T = "tls_server_config"
_TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version")
_TLS_KEYS += ("max_version", "prefer_server_cipher_suites")
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH: dict[str, ssl.VerifyMode | None] = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    # Go can ask for a client certificate and then not verify it; Python's ssl cannot.
    "RequestClientCert": None,
    "RequireAnyClientCert": None,
}
# The toolkit's own allow-list (web/handler.go), so a file valid here is valid there too.
_HEADERS: dict[str, tuple[str, ...]] = {
    "Content-Security-Policy": (),
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
}
_UNSUPPORTED = {f"{_T}.{k}" for k in ("cert", "key", "client_ca", "client_allowed_sans")}
_UNSUPPORTED |= {f"{_T}.cipher_suites", f"{_T}.curve_preferences", "rate_limit"}
_BCRYPT = re.compile(r"\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}")
_CACHE_SIZE = 64


@dataclass(frozen=True)
class TLSServerConfig:
    """``tls_server_config``, with file paths resolved against the web config's directory."""

    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    prefer_server_cipher_suites: bool = True


class _Hashes(dict[str, bytes]):
    """Username -> bcrypt hash; the repr names the users, never the hashes."""

    def __repr__(self) -> str:
        return f"<bcrypt hashes for {sorted(self)!r}>"


class _AuthCache:
    """Bounded LRU of successful logins. Failures are never cached: guessing stays slow."""

    def __init__(self) -> None:
        # Keyed by an HMAC under a per-process key rather than a bare SHA-256 of the password,
        # so a memory dump holds no unsalted password hashes.
        self.secret = secrets.token_bytes(32)
        self.hits: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self.lock = threading.Lock()
        # One bcrypt at a time, as in the toolkit: a burst of bad logins burns one core, not all.
        self.bcrypt_lock = threading.Lock()


@dataclass(frozen=True)
class WebConfig:
    """A loaded web config file: TLS settings, basic-auth users and extra response headers."""

    tls: TLSServerConfig | None
    basic_auth_users: Mapping[str, bytes]
    headers: Mapping[str, str]
    source: str
    _cache: _AuthCache = field(default_factory=_AuthCache, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        users = MappingProxyType(_Hashes(self.basic_auth_users))
        object.__setattr__(self, "basic_auth_users", users)
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    def ssl_context(self) -> ssl.SSLContext | None:
        """A new server-side context, or None without TLS. Call again to re-read renewed certs."""
        tls = self.tls
        if tls is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version, ctx.maximum_version = tls.min_version, tls.max_version
        if tls.prefer_server_cipher_suites:
            ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
        except (OSError, _EncryptedKey) as exc:  # ssl.SSLError is an OSError
            why = "key_file is encrypted" if isinstance(exc, _EncryptedKey) else str(exc)
            msg = f"cannot load certificate/key: {why}"
            raise ConfigError(msg, file=self.source, path=_T) from exc
        if tls.client_ca_file is not None:
            try:
                ctx.load_verify_locations(cafile=tls.client_ca_file)
            except OSError as exc:
                where = f"{_T}.client_ca_file"
                raise ConfigError(f"cannot load: {exc}", file=self.source, path=where) from exc
        ctx.verify_mode = _CLIENT_AUTH[tls.client_auth_type] or ssl.CERT_NONE
        return ctx

    def keep_logins(self, old: WebConfig) -> None:
        """Carry over ``old``'s cached logins of users whose hash did not change, so a reload
        does not send every scraper back through bcrypt (behind a flood, or into 429s)."""
        same = {u for u, h in self.basic_auth_users.items() if old.basic_auth_users.get(u) == h}
        new, prev = self._cache, old._cache
        with prev.lock:
            kept = [key for key in prev.hits if key[0] in same]
        with new.lock:
            new.secret = prev.secret  # the keys are HMACs under it
            new.hits = OrderedDict.fromkeys(kept)

    def check_basic_auth_cached(self, authorization_header: str | None) -> bool | None:
        """The answer of ``check_basic_auth`` when it needs no bcrypt (no users configured, no
        or malformed credentials, or credentials that passed recently), else None. Cheap
        enough for the event loop; a None means: call ``check_basic_auth`` in a thread."""
        if not self.basic_auth_users:
            return True
        creds = _parse_basic(authorization_header)
        if creds is None:
            return False
        user, password = creds
        cache = self._cache
        key = (user, hmac.digest(cache.secret, password, "sha256"))
        with cache.lock:
            if key in cache.hits:
                cache.hits.move_to_end(key)
                return True
        return None

    def check_basic_auth(self, authorization_header: str | None) -> bool:
        """True if no users are configured or the header carries a configured user's password.
        Takes bcrypt's time (tens of milliseconds) unless the answer is cached."""
        cached = self.check_basic_auth_cached(authorization_header)
        if cached is not None:
            return cached
        creds = _parse_basic(authorization_header)
        assert creds is not None
        user, password = creds
        cache = self._cache
        key = (user, hmac.digest(cache.secret, password, "sha256"))
        hashed = self.basic_auth_users.get(user)
        # An unknown user is checked against the costliest real hash, so an unknown name is
        # never answered faster than a known one: the time does not tell which names exist.
        decoy = max(self.basic_auth_users.values(), key=_cost)
        with cache.bcrypt_lock:
            try:
                # bcrypt 5 raises past 72 bytes; Go's bcrypt (and htpasswd) ignore the excess.
                ok = bcrypt.checkpw(password[:72], hashed or decoy) and hashed is not None
            except ValueError:  # a malformed hash given to the constructor directly
                ok = False
        if ok:
            with cache.lock:
                cache.hits[key] = None
                if len(cache.hits) > _CACHE_SIZE:
                    cache.hits.popitem(last=False)
        return ok


def _cost(hashed: bytes) -> int:
    """A bcrypt hash's cost (``$2y$12$...`` -> 12); 0 if it is malformed."""
    cost = hashed[4:6]
    return int(cost) if cost.isdigit() else 0


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key's passphrase.
    raise _EncryptedKey


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    scheme, _, param = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(param.strip(), validate=True).partition(b":")
        return (user.decode("utf-8"), password) if sep else None
    except (binascii.Error, ValueError):  # UnicodeDecodeError and non-ASCII str are ValueErrors
        return None


def load(path: str) -> WebConfig:
    """Read and validate a web config file, loading its certificates too.

    Raises ``ConfigError`` naming the file and the key path of the first problem.
    """
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=path) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("not UTF-8", file=path) from exc
    except yaml.YAMLError as exc:
        # str(exc) quotes the offending source line, which may hold a password hash.
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"invalid YAML: {where}{getattr(exc, 'problem', '')}", file=path) from exc
    p = _Parser(path)
    top = p.mapping(data, "", (_T, "http_server_config", "basic_auth_users"))
    http = p.mapping(top.get("http_server_config"), "http_server_config", ("headers", "http2"))
    p.get(http, "http_server_config", "http2", bool)  # HTTP/1.1 only here: checked, unused
    config = WebConfig(
        tls=p.tls(top.get(_T)),
        basic_auth_users=p.users(top.get("basic_auth_users")),
        headers=p.headers(http.get("headers")),
        source=path,
    )
    config.ssl_context()  # fail at startup, not on the first scrape
    return config


class _Parser(Validator):
    """Walks the YAML tree with the shared validator's state (file, base directory); unlike
    the exporter's config, the first problem raises, as the Prometheus toolkit's parser
    does, and type names are Python's."""

    def __init__(self, file: str) -> None:
        super().__init__(file, {})

    def error(self, path: str, message: str) -> None:
        raise self.fail(path, message)

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, path=path or None)

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            where = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                raise self.fail(where, f"expected a string key, got {type(key).__name__}")
            if where in _UNSUPPORTED:
                raise self.fail(where, "not supported by smtp-health-exporter")
            if allowed is not None and key not in allowed:
                raise self.fail(where, f"unknown key (expected one of: {', '.join(allowed)})")
        return value

    def get(self, d: dict[str, Any], path: str, key: str, kind: type, options: Any = None) -> Any:
        """``d[key]`` checked for type and, given ``options``, membership; None when unset."""
        value, where = d.get(key), f"{path}.{key}"
        if value is None:
            return None
        if not isinstance(value, kind):
            # Type names only: the value might be a secret typed in the wrong place.
            raise self.fail(where, f"expected {kind.__name__}, got {type(value).__name__}")
        if options and value not in options:
            raise self.fail(where, f"expected one of {', '.join(options)}, got {value!r}")
        return value

    def tls_file(self, d: dict[str, Any], key: str) -> str | None:
        value = self.get(d, _T, key, str)
        if value is None:
            return None
        resolved = self.base / value  # an absolute value replaces the base
        if not resolved.exists():
            raise self.fail(f"{_T}.{key}", f"file {value!r} does not exist")
        return str(resolved)

    def tls(self, raw: Any) -> TLSServerConfig | None:
        d = self.mapping(raw, _T, _TLS_KEYS)
        if not d:
            return None
        cert, key, ca = (self.tls_file(d, k) for k in ("cert_file", "key_file", "client_ca_file"))
        if cert is None or key is None:
            raise self.fail(_T, "cert_file and key_file are both required")
        auth = self.get(d, _T, "client_auth_type", str, _CLIENT_AUTH) or "NoClientCert"
        if _CLIENT_AUTH[auth] is None:
            why = "Python's ssl verifies every client certificate it asks for"
            raise self.fail(f"{_T}.client_auth_type", f"{auth} is not supported ({why})")
        if (ca is None) != (auth == "NoClientCert"):
            # Go would verify against the system roots: any publicly issued cert would pass.
            need = "required" if ca is None else "not allowed"
            raise self.fail(f"{_T}.client_ca_file", f"{need} with client_auth_type {auth}")
        lo = _TLS_VERSIONS[self.get(d, _T, "min_version", str, _TLS_VERSIONS) or "TLS12"]
        hi = _TLS_VERSIONS[self.get(d, _T, "max_version", str, _TLS_VERSIONS) or "TLS13"]
        if lo > hi:
            raise self.fail(f"{_T}.min_version", "greater than max_version")
        prefer = self.get(d, _T, "prefer_server_cipher_suites", bool) is not False
        return TLSServerConfig(cert, key, auth, ca, lo, hi, prefer)

    def users(self, raw: Any) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for user, hashed in self.mapping(raw, "basic_auth_users", None).items():
            where = f"basic_auth_users.{user}"
            if not user or ":" in user:  # RFC 7617: such a user could never log in
                raise self.fail(where, "username must be non-empty and contain no ':'")
            match = _BCRYPT.fullmatch(hashed) if isinstance(hashed, str) else None
            if match is None or not 4 <= int(match[1]) <= 31:
                raise self.fail(where, "not a valid bcrypt hash (see `htpasswd -nBC 10 ''`)")
            out[user] = hashed.encode("ascii")
        return out

    def headers(self, raw: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        path = "http_server_config.headers"
        for name in self.mapping(raw, path, tuple(_HEADERS)):
            value = self.get(raw, path, name, str, _HEADERS[name])
            if value and ("\r" in value or "\n" in value):  # http.server would send them as-is
                raise self.fail(f"{path}.{name}", "must not contain line breaks")
            if value:  # the toolkit documents a blank value as "unset"
                out[name] = value
        return out
