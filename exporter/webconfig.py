"""``--web.config.file``: TLS, basic auth and response headers for the metrics endpoint.

The file format is the Prometheus exporter-toolkit's (docs/web-configuration.md there), so the
file node_exporter already uses can be shared. Where Python's ``ssl`` cannot do what Go does, or
a feature is not implemented, the key is refused by name rather than ignored: a file must never
silently run with weaker settings than its author wrote.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import bcrypt
import yaml

from .errors import ConfigError

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Go can ask for a client certificate and then not verify it; Python's ssl has no such mode.
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
# The toolkit's own allow-list (web/handler.go), so a file valid here is valid there too.
_HEADERS: dict[str, tuple[str, ...]] = {
    "Content-Security-Policy": (),
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
}
_UNSUPPORTED = {"rate_limit"} | {
    f"tls_server_config.{k}"
    for k in (
        "cert",
        "key",
        "client_ca",
        "client_allowed_sans",
        "cipher_suites",
        "curve_preferences",
    )
}
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


class _Hashes(Mapping[str, bytes]):
    """Read-only username -> bcrypt hash map whose repr names the users, never the hashes."""

    def __init__(self, users: Mapping[str, bytes | str]) -> None:
        self._users = {u: h.encode() if isinstance(h, str) else bytes(h) for u, h in users.items()}

    def __getitem__(self, user: str) -> bytes:
        return self._users[user]

    def __iter__(self) -> Iterator[str]:
        return iter(self._users)

    def __len__(self) -> int:
        return len(self._users)

    def __repr__(self) -> str:
        return f"<bcrypt hashes for {sorted(self._users)!r}>"


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
        object.__setattr__(self, "basic_auth_users", _Hashes(self.basic_auth_users))
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
            raise ConfigError(
                f"cannot load certificate/key: {why}", file=self.source, path="tls_server_config"
            ) from exc
        if tls.client_ca_file is not None:
            try:
                ctx.load_verify_locations(cafile=tls.client_ca_file)
            except OSError as exc:
                raise ConfigError(
                    f"cannot load CA certificates: {exc}",
                    file=self.source,
                    path="tls_server_config.client_ca_file",
                ) from exc
        ctx.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
        return ctx

    def check_basic_auth(self, authorization_header: str | None) -> bool:
        """True if no users are configured or the header carries a configured user's password."""
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
        hashed = self.basic_auth_users.get(user)
        # An unknown user is checked against a real user's hash: same bcrypt cost, so response
        # time does not reveal which usernames exist.
        decoy = next(iter(self.basic_auth_users.values()))
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
    """Read and validate a web config file, including loading its certificates.

    Raises ``ConfigError`` naming the file and the key path of the first problem.
    """
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read web config file: {exc.strerror}", file=path) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("web config file is not UTF-8", file=path) from exc
    except yaml.YAMLError as exc:
        # str(exc) quotes the offending source line, which may hold a password hash.
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"invalid YAML: {where}{getattr(exc, 'problem', '')}", file=path) from exc
    p = _Parser(path)
    top = p.mapping(data, "", ("tls_server_config", "http_server_config", "basic_auth_users"))
    http = p.mapping(top.get("http_server_config"), "http_server_config", ("headers", "http2"))
    p.typed(http, "http2", "http_server_config", bool)  # HTTP/1.1 only here: checked, unused
    config = WebConfig(
        tls=p.tls(top.get("tls_server_config")),
        basic_auth_users=p.users(top.get("basic_auth_users")),
        headers=p.headers(http.get("headers")),
        source=path,
    )
    config.ssl_context()  # fail at startup, not on the first scrape
    return config


class _Parser:
    """Walks the YAML tree; the first problem raises with its key path."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.base = Path(file).parent

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

    def typed(self, d: dict[str, Any], key: str, path: str, kind: type) -> Any:
        value = d.get(key)
        if value is not None and not isinstance(value, kind):
            # Type names only: the value itself might be a secret put in the wrong place.
            raise self.fail(
                f"{path}.{key}", f"expected {kind.__name__}, got {type(value).__name__}"
            )
        return value

    def file(self, d: dict[str, Any], key: str) -> str | None:
        value = self.typed(d, key, "tls_server_config", str)
        if value is None:
            return None
        resolved = self.base / value  # an absolute value replaces the base
        if not resolved.exists():
            raise self.fail(f"tls_server_config.{key}", f"file {value!r} does not exist")
        return str(resolved)

    def tls(self, raw: Any) -> TLSServerConfig | None:
        keys = ("cert_file", "key_file", "client_auth_type", "client_ca_file")
        d = self.mapping(
            raw,
            "tls_server_config",
            (*keys, "min_version", "max_version", "prefer_server_cipher_suites"),
        )
        if not d:
            return None
        cert, key, ca = (
            self.file(d, "cert_file"),
            self.file(d, "key_file"),
            self.file(d, "client_ca_file"),
        )
        if cert is None or key is None:
            raise self.fail("tls_server_config", "cert_file and key_file are both required")
        auth = self.typed(d, "client_auth_type", "tls_server_config", str) or "NoClientCert"
        where = "tls_server_config.client_auth_type"
        if auth in _UNVERIFIED_CLIENT_AUTH:
            raise self.fail(
                where,
                f"{auth} is not supported (Python's ssl always verifies a "
                "client certificate it asks for); use VerifyClientCertIfGiven or "
                "RequireAndVerifyClientCert with client_ca_file",
            )
        if auth not in _CLIENT_AUTH:
            raise self.fail(where, f"expected one of {', '.join(_CLIENT_AUTH)}, got {auth!r}")
        if ca is not None and auth == "NoClientCert":
            raise self.fail(
                "tls_server_config.client_ca_file", "set, but client_auth_type is NoClientCert"
            )
        if ca is None and auth != "NoClientCert":
            # Go would fall back to the system roots: any publicly issued certificate would do.
            raise self.fail("tls_server_config.client_ca_file", f"required with {auth}")
        lo, hi = self.version(d, "min_version", "TLS12"), self.version(d, "max_version", "TLS13")
        if lo > hi:
            raise self.fail("tls_server_config.min_version", "greater than max_version")
        prefer = self.typed(d, "prefer_server_cipher_suites", "tls_server_config", bool)
        return TLSServerConfig(cert, key, auth, ca, lo, hi, prefer is not False)

    def version(self, d: dict[str, Any], key: str, default: str) -> ssl.TLSVersion:
        name = self.typed(d, key, "tls_server_config", str) or default
        if name not in _TLS_VERSIONS:
            raise self.fail(
                f"tls_server_config.{key}",
                f"expected one of {', '.join(_TLS_VERSIONS)}, got {name!r}",
            )
        return _TLS_VERSIONS[name]

    def users(self, raw: Any) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for user, hashed in self.mapping(raw, "basic_auth_users", None).items():
            where = f"basic_auth_users.{user}"
            # RFC 7617: the user-id of Basic auth cannot contain a colon; such a user could
            # never log in.
            if not user or ":" in user:
                raise self.fail(where, "username must be non-empty and contain no ':'")
            match = _BCRYPT.fullmatch(hashed) if isinstance(hashed, str) else None
            if match is None or not 4 <= int(match[1]) <= 31:
                raise self.fail(
                    where,
                    "not a valid bcrypt hash (make one with "
                    "`htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
                )
            out[user] = hashed.encode("ascii")
        return out

    def headers(self, raw: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in self.mapping(raw, "http_server_config.headers", None).items():
            where = f"http_server_config.headers.{name}"
            if name not in _HEADERS:
                raise self.fail(where, f"cannot be configured (allowed: {', '.join(_HEADERS)})")
            if not isinstance(value, str):
                raise self.fail(where, f"expected str, got {type(value).__name__}")
            if "\r" in value or "\n" in value:  # http.server would emit them: header injection
                raise self.fail(where, "must not contain line breaks")
            if _HEADERS[name] and value not in _HEADERS[name]:
                raise self.fail(
                    where, f"expected one of {', '.join(_HEADERS[name])}, got {value!r}"
                )
            if value:  # the toolkit documents a blank value as "unset"
                out[name] = value
        return out
