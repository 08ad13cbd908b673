"""Shared fixtures: real servers on 127.0.0.1, certificates made per session with trustme."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from exporter.config import AuthConfig, Module, Secret, Target, TLSMode
from exporter.embedded import EmbeddedSMTPServer

USER, PASSWORD = "probe", "s3cret-Pa55word"


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
        AuthConfig(USER, Secret(password), mechanism, allow_insecure)
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
