"""Shared fixtures: real servers on 127.0.0.1, certificates made per session with trustme."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from exporter.config import AuthConfig, Module, Secret, Target, TLSMode
from exporter.embedded import EmbeddedSMTPServer
from tests.servers.dns import DNSServer
from tests.servers.mailstack import MailStack, mail_stack, postfix_available

USER, PASSWORD = "probe", "s3cret-Pa55word"


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs the CLI in process sets the root logger up (a handler writing to
    the stderr pytest captured for that test, closed after it): take that back, so a later
    test's log records do not land on a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    """Server-side context presenting a certificate for localhost and 127.0.0.1."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture
def smtp_server(server_context: ssl.SSLContext) -> Iterator[Callable[..., EmbeddedSMTPServer]]:
    """Factory for embedded aiosmtpd servers (STARTTLS by default, AUTH for USER)."""
    started: list[EmbeddedSMTPServer] = []

    def make(tls: str = "starttls", **kwargs: object) -> EmbeddedSMTPServer:
        kwargs.setdefault("users", {USER: PASSWORD})
        server = EmbeddedSMTPServer(
            tls=tls, ssl_context=None if tls == "none" else server_context, **kwargs
        ).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def dns_server() -> Iterator[Callable[..., DNSServer]]:
    """Start DNS servers on 127.0.0.1 from zone text (``dns_server(zone, ad=..., drop=...,
    delay=...)``); every one is stopped after the test."""
    servers: list[DNSServer] = []

    def start(zone: str, **kw: object) -> DNSServer:
        server = DNSServer(zone, **kw).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def make_target(
    port: int,
    *,
    host: str = "127.0.0.1",
    password: str | None = PASSWORD,
    mechanism: str = "auto",
    allow_insecure: bool = False,
    **module: object,
) -> Target:
    """A target with an AUTH module; module keyword arguments override the defaults."""
    auth = (
        AuthConfig(USER, Secret(password), (mechanism,), allow_insecure)
        if password is not None
        else None
    )
    module.setdefault("tls", TLSMode.STARTTLS)
    module.setdefault("timeout", 5.0)
    mod = Module(name="test", auth=auth, **module)  # type: ignore[arg-type]
    return Target(f"{host}:{port}", host, port, mod)


def write_secret(directory: Path, value: str = PASSWORD) -> Path:
    path = directory / "password"
    path.write_text(value + "\n")
    return path


# --------------------------------------------------------------------------- real Postfix + Dovecot


def _in_ci() -> bool:
    # CI=true is set by GitHub Actions, GitLab CI and most others; "0"/"false" count as unset.
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _world_traversable(path: Path) -> bool:
    return all(os.stat(p).st_mode & 0o001 for p in (path, *path.parents))


def _start_stack(tmp_path_factory: pytest.TempPathFactory, weak: bool) -> Iterator[MailStack]:
    reason = postfix_available()
    if reason is not None:
        msg = f"real Postfix/Dovecot mail stack unavailable: {reason}"
        if _in_ci():
            pytest.fail(f"{msg} (CI is set, so this fails instead of skipping)", pytrace=False)
        pytest.skip(f"SKIPPING REAL-SERVER TESTS -- {msg}")
    # The daemons run as postfix/dovecot/nobody and must traverse the work dir's parents.
    # pytest's basetemp (/tmp/pytest-of-<user>) is usually 0700: then mail_stack() uses a
    # fresh 0755 dir under /tmp and removes it afterwards (MAILSTACK_KEEP=1 keeps it).
    # A traversable --basetemp keeps the stack's logs alongside pytest's tmp dirs.
    base: Path | None = tmp_path_factory.getbasetemp()
    if base is not None and not _world_traversable(base):
        base = None
    with mail_stack(base, weak=weak) as stack:
        yield stack


@pytest.fixture(scope="session")
def mailstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailStack]:
    """A real Postfix + Dovecot on 127.0.0.1 (tests/servers/mailstack/), one per session.

    Skipped (loudly) when Postfix/Dovecot cannot run here; with CI set that is a failure
    instead, so a broken CI image cannot silently skip every real-server test.
    """
    yield from _start_stack(tmp_path_factory, weak=False)


@pytest.fixture(scope="session")
def weak_mailstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailStack]:
    """A second real Postfix + Dovecot, deliberately weak (``mail_stack(weak=True)``): AUTH
    before STARTTLS, open relay for loopback, TLS 1.0-1.2 preferring plain-RSA key exchange,
    a 1024-bit RSA certificate signed with SHA-1. Skipped or failed as ``mailstack``."""
    yield from _start_stack(tmp_path_factory, weak=True)
