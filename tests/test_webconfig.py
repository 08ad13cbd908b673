"""--web.config.file: toolkit-format files load, bad ones name their key, TLS really serves."""

from __future__ import annotations

import base64
import http.client
import shutil
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bcrypt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from exporter import webconfig
from exporter.errors import ConfigError
from exporter.webconfig import WebConfig

PASSWORD = "correct horse battery staple"
# Cost 4, the minimum, keeps each check about a millisecond; production hashes use 10+.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
BOB_HASH = bcrypt.hashpw(b"bobs password", bcrypt.gensalt(rounds=4)).decode()


@dataclass(frozen=True)
class PKI:
    server_ca: trustme.CA
    client_ca: trustme.CA
    client_cert: trustme.LeafCert
    stranger_cert: trustme.LeafCert  # a client certificate from the wrong CA
    files: Path  # server.crt, server.key, client_ca.crt, encrypted.key


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server = server_ca.issue_cert("127.0.0.1", "localhost")
    files = tmp_path_factory.mktemp("webconfig-pki")
    server.cert_chain_pems[0].write_to_path(str(files / "server.crt"))
    server.private_key_pem.write_to_path(str(files / "server.key"))
    client_ca.cert_pem.write_to_path(str(files / "client_ca.crt"))
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    (files / "encrypted.key").write_bytes(encrypted)
    return PKI(
        server_ca,
        client_ca,
        client_ca.issue_cert("scraper@example.com"),
        server_ca.issue_cert("stranger@example.com"),
        files,
    )


@pytest.fixture
def write(pki: PKI, tmp_path: Path) -> Callable[[str], str]:
    """Write web.yml next to copies of the certificates, so relative paths resolve to them."""
    for f in pki.files.iterdir():
        shutil.copy(f, tmp_path / f.name)

    def _write(text: str) -> str:
        path = tmp_path / "web.yml"
        path.write_text(text)
        return str(path)

    return _write


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def error(path: str) -> str:
    """The message of the ConfigError that loading ``path`` raises, without the file prefix."""
    with pytest.raises(ConfigError) as info:
        webconfig.load(path)
    assert str(info.value).startswith(f"{path}: ")
    return str(info.value).removeprefix(f"{path}: ")


# --- loading -------------------------------------------------------------------------------


def test_empty_file_means_plain_http_and_no_auth(write: Callable[[str], str]) -> None:
    cfg = webconfig.load(write(""))
    assert (cfg.tls, dict(cfg.basic_auth_users), dict(cfg.headers)) == (None, {}, {})
    assert cfg.ssl_context() is None
    assert cfg.check_basic_auth(None) and cfg.check_basic_auth("Bearer anything")


def test_full_config_loads_with_paths_relative_to_the_file(
    write: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: client_ca.crt
  min_version: TLS13
http_server_config:
  http2: false
  headers: {{X-Frame-Options: deny, Strict-Transport-Security: max-age=31536000}}
basic_auth_users:
  alice: {HASH}
""")
    monkeypatch.chdir(tmp_path.parent)  # relative to web.yml, not to the working directory
    cfg = webconfig.load(path)
    assert cfg.tls is not None and cfg.source == path
    assert cfg.tls.cert_file == str(tmp_path / "server.crt")
    assert cfg.tls.client_ca_file == str(tmp_path / "client_ca.crt")
    assert (cfg.tls.min_version, cfg.tls.max_version) == (
        ssl.TLSVersion.TLSv1_3,
        ssl.TLSVersion.TLSv1_3,
    )
    assert dict(cfg.headers) == {
        "X-Frame-Options": "deny",
        "Strict-Transport-Security": "max-age=31536000",
    }
    assert dict(cfg.basic_auth_users) == {"alice": HASH.encode()}
    ctx = cfg.ssl_context()
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED


def test_absolute_paths_are_kept(write: Callable[[str], str], tmp_path: Path) -> None:
    crt = tmp_path / "server.crt"
    cfg = webconfig.load(write(f"tls_server_config: {{cert_file: {crt}, key_file: server.key}}"))
    assert cfg.tls is not None and cfg.tls.cert_file == str(crt)
    assert cfg.tls.client_auth_type == "NoClientCert"


def test_no_hash_in_repr(write: Callable[[str], str]) -> None:
    cfg = webconfig.load(write(f"basic_auth_users: {{alice: {HASH}, bob: {BOB_HASH}}}"))
    for text in (repr(cfg), str(cfg), repr(cfg.basic_auth_users)):
        assert HASH not in text and BOB_HASH not in text and "$2" not in text
        assert "alice" in text


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a list", "expected a mapping, got list"),
        ("tls_config: {}", "tls_config: unknown key (expected one of: tls_server_config, "),
        ("tls_server_config: server.crt", "tls_server_config: expected a mapping, got str"),
        ("tls_server_config: {certfile: x}", "tls_server_config.certfile: unknown key"),
        ("rate_limit: {burst: 5}", "rate_limit: not supported by smtp-health-exporter"),
        (TLS + "  client_allowed_sans: [a]", "tls_server_config.client_allowed_sans: not supp"),
        (
            "tls_server_config: {cert_file: x.crt, key_file: server.key}",
            "tls_server_config.cert_file: file 'x.crt' does not exist",
        ),
        (
            "tls_server_config: {cert_file: server.crt}",
            "tls_server_config: cert_file and key_file are both required",
        ),
        ("tls_server_config: {min_version: TLS12}", "tls_server_config: cert_file and key_file"),
        (
            TLS + "  client_auth_type: Sometimes",
            "tls_server_config.client_auth_type: expected one of NoClientCert, ",
        ),
        (
            TLS + "  client_auth_type: RequireAnyClientCert\n  client_ca_file: client_ca.crt",
            "tls_server_config.client_auth_type: RequireAnyClientCert is not supported",
        ),
        (
            TLS + "  client_auth_type: RequireAndVerifyClientCert",
            "tls_server_config.client_ca_file: required with client_auth_type "
            "RequireAndVerifyClientCert",
        ),
        (
            TLS + "  client_ca_file: client_ca.crt",
            "tls_server_config.client_ca_file: not allowed with client_auth_type NoClientCert",
        ),
        (TLS + "  min_version: TLS14", "tls_server_config.min_version: expected one of TLS10, "),
        (TLS + "  max_version: 1.2", "tls_server_config.max_version: expected str, got float"),
        (
            TLS + "  min_version: TLS13\n  max_version: TLS12",
            "tls_server_config.min_version: greater than max_version",
        ),
        (
            TLS.replace("server.key", "client_ca.crt"),
            "tls_server_config: cannot load certificate/key: [SSL] PEM lib",
        ),
        (
            TLS.replace("server.key", "encrypted.key"),
            "tls_server_config: cannot load certificate/key: key_file is encrypted",
        ),
        (
            TLS + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: server.key",
            "tls_server_config.client_ca_file: cannot load: [X509: NO_CERTIFICATE_OR_CRL_FOUND]",
        ),
        ("http_server_config: {http2: yes please}", "http_server_config.http2: expected bool"),
        (
            "http_server_config: {headers: {X-Custom: 1}}",
            "http_server_config.headers.X-Custom: unknown key (expected one of: Content-Security",
        ),
        (
            "http_server_config: {headers: {X-Frame-Options: allow}}",
            "http_server_config.headers.X-Frame-Options: expected one of deny, sameorigin, "
            "got 'allow'",
        ),
        (
            'http_server_config: {headers: {Content-Security-Policy: "a\\r\\nSet-Cookie: x"}}',
            "http_server_config.headers.Content-Security-Policy: must not contain line breaks",
        ),
        ("basic_auth_users: [alice]", "basic_auth_users: expected a mapping, got list"),
        (f'basic_auth_users: {{"a:b": {HASH}}}', "basic_auth_users.a:b: username must be non-"),
        ("basic_auth_users: {alice: 42}", "basic_auth_users.alice: not a valid bcrypt hash"),
        (
            f"basic_auth_users: {{alice: '{HASH.replace('$04$', '$99$')}'}}",
            "basic_auth_users.alice: not a valid bcrypt hash",
        ),
    ],
)
def test_bad_config_names_the_key(write: Callable[[str], str], text: str, expected: str) -> None:
    assert error(write(text)).startswith(expected)


@pytest.mark.parametrize(
    "text",
    [
        "basic_auth_users: {alice: hunter2-plaintext}",  # a password where a hash belongs
        "basic_auth_users:\n  alice: hunter2-plaintext\n bad: indent",  # YAML quotes the line
        "basic_auth_users: {alice: [hunter2-plaintext]}",
        "http_server_config: {http2: hunter2-plaintext}",
    ],
)
def test_no_secret_in_error_messages(write: Callable[[str], str], text: str) -> None:
    assert "hunter2" not in error(write(text))


def test_unreadable_file(tmp_path: Path) -> None:
    assert error(str(tmp_path / "absent.yml")) == "cannot read: No such file or directory"


# --- basic auth ----------------------------------------------------------------------------


@pytest.fixture
def users(write: Callable[[str], str]) -> WebConfig:
    return webconfig.load(write(f"basic_auth_users: {{alice: {HASH}, bob: '{BOB_HASH}'}}"))


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Records the hash of every bcrypt check made by the module."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", spy)
    return calls


def test_right_password_passes_and_wrong_ones_fail(users: WebConfig) -> None:
    assert users.check_basic_auth(basic("alice", PASSWORD))
    assert users.check_basic_auth(basic("bob", "bobs password"))
    assert users.check_basic_auth("basic " + basic("alice", PASSWORD).split()[1])  # any case
    assert not users.check_basic_auth(basic("alice", PASSWORD + "x"))
    assert not users.check_basic_auth(basic("alice", "bobs password"))  # bob's, not alice's
    assert not users.check_basic_auth(basic("Alice", PASSWORD))  # usernames are exact


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic",
        "Basic !!!not-base64",
        "Basic " + base64.b64encode(b"alice-without-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:" + PASSWORD.encode()).decode(),
        "Basic  ünïcode",
        "Bearer " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode(),
        "Digest username=alice",
    ],
)
def test_malformed_or_foreign_headers_fail(users: WebConfig, header: str | None) -> None:
    assert not users.check_basic_auth(header)


def test_unknown_user_still_pays_one_bcrypt(users: WebConfig, bcrypt_calls: list[bytes]) -> None:
    # Even with a configured user's password: existence must not be guessable from timing.
    assert not users.check_basic_auth(basic("mallory", PASSWORD))
    assert len(bcrypt_calls) == 1


def test_unknown_user_pays_the_costliest_hash(
    write: Callable[[str], str], bcrypt_calls: list[bytes]
) -> None:
    """Issue #14: with users of cost 4 and 5, an unknown name was checked against the first
    (cheap) hash and answered faster than a costly known one: user enumeration."""
    costly = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=5)).decode()
    users = webconfig.load(write(f"basic_auth_users: {{alice: '{HASH}', carol: '{costly}'}}"))
    assert not users.check_basic_auth(basic("mallory", "pw"))
    assert bcrypt_calls == [costly.encode()]


def test_success_is_cached_but_failure_is_not(users: WebConfig, bcrypt_calls: list[bytes]) -> None:
    for _ in range(3):
        assert users.check_basic_auth(basic("alice", PASSWORD))
        assert not users.check_basic_auth(basic("alice", "guess"))
    assert len(bcrypt_calls) == 1 + 3


def test_a_reload_keeps_the_logins_of_users_whose_hash_did_not_change(
    write: Callable[[str], str], bcrypt_calls: list[bytes]
) -> None:
    old = webconfig.load(write(f"basic_auth_users: {{alice: {HASH}, bob: '{BOB_HASH}'}}"))
    assert old.check_basic_auth(basic("alice", PASSWORD))
    assert old.check_basic_auth(basic("bob", "bobs password"))
    new_bob = bcrypt.hashpw(b"bobs password", bcrypt.gensalt(rounds=4)).decode()
    new = webconfig.load(write(f"basic_auth_users: {{alice: {HASH}, bob: '{new_bob}'}}"))
    new.keep_logins(old)
    del bcrypt_calls[:]
    assert new.check_basic_auth_cached(basic("alice", PASSWORD)) is True
    assert new.check_basic_auth_cached(basic("bob", "bobs password")) is None  # re-checked
    assert new.check_basic_auth(basic("bob", "bobs password"))
    assert bcrypt_calls == [new_bob.encode()]


def test_cache_is_bounded_lru(
    users: WebConfig, bcrypt_calls: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webconfig, "_CACHE_SIZE", 1)
    alice, bob = basic("alice", PASSWORD), basic("bob", "bobs password")
    for header in (alice, alice, bob, alice):
        assert users.check_basic_auth(header)
    assert bcrypt_calls == [HASH.encode(), BOB_HASH.encode(), HASH.encode()]


def test_passwords_past_72_bytes_behave_like_go(write: Callable[[str], str]) -> None:
    # Go's bcrypt ignores bytes after the 72nd; bcrypt 5 for Python raises instead.
    long_hash = bcrypt.hashpw(b"x" * 72, bcrypt.gensalt(rounds=4)).decode()
    cfg = webconfig.load(write(f"basic_auth_users: {{carol: '{long_hash}'}}"))
    assert cfg.check_basic_auth(basic("carol", "x" * 100))


# --- TLS on the wire -----------------------------------------------------------------------


@contextmanager
def serve(cfg: WebConfig) -> Iterator[int]:
    """A tiny HTTPS server on 127.0.0.1 guarded by ``cfg``; yields its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = cfg.check_basic_auth(self.headers.get("Authorization"))
            self.send_response(200 if ok else 401)
            for name, value in cfg.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

    ctx = cfg.ssl_context()
    assert ctx is not None
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def get(port: int, pki: PKI, cert: trustme.LeafCert | None = None, **headers: str) -> int:
    """Status of ``GET /`` over TLS, trusting the server CA and presenting ``cert`` if given."""
    ctx = ssl.create_default_context()
    pki.server_ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/", headers=headers)
        response = conn.getresponse()
        assert response.read() == b"ok"
        return response.status
    finally:
        conn.close()


def test_serves_tls_with_headers_and_basic_auth(write: Callable[[str], str], pki: PKI) -> None:
    cfg = webconfig.load(
        write(
            TLS + f"http_server_config: {{headers: {{X-Frame-Options: deny}}}}\n"
            f"basic_auth_users: {{alice: '{HASH}'}}"
        )
    )
    with serve(cfg) as port:
        assert get(port, pki) == 401
        assert get(port, pki, Authorization=basic("alice", PASSWORD)) == 200
        # The header reaches the client too.
        ctx = ssl.create_default_context()
        pki.server_ca.configure_trust(ctx)
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
        conn.request("GET", "/")
        assert conn.getresponse().getheader("X-Frame-Options") == "deny"
        conn.close()


def test_client_certificate_required(write: Callable[[str], str], pki: PKI) -> None:
    cfg = webconfig.load(
        write(
            TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
            "  client_ca_file: client_ca.crt\n"
        )
    )
    with serve(cfg) as port:
        # Under TLS 1.3 the client learns of the refusal only when it reads.
        # Whether the refusal surfaces as a TLS error or a reset is a race; never a timeout.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            get(port, pki)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            get(port, pki, cert=pki.stranger_cert)
        assert get(port, pki, cert=pki.client_cert) == 200


def test_min_version_is_enforced(write: Callable[[str], str], pki: PKI) -> None:
    cfg = webconfig.load(write(TLS + "  min_version: TLS13\n"))
    with serve(cfg) as port:
        ctx = ssl.create_default_context()
        pki.server_ca.configure_trust(ctx)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5).request(
                "GET", "/"
            )
        assert get(port, pki) == 200
