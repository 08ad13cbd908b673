"""An embedded SMTP server (aiosmtpd) with STARTTLS or implicit TLS and AUTH, for ``--demo``
and for the tests: a newcomer's first metrics come from the same server the tests probe.

Certificates for the demo are generated at start with ``cryptography`` (a throwaway CA and a
leaf for localhost / 127.0.0.1), so verification really passes against the written CA file.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MAX_KEPT_MESSAGES = 1000
# aiosmtpd logs every command at INFO on "mail.log"; the demo and tests need none of it.
logging.getLogger("mail.log").setLevel(logging.ERROR)


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


class RecordingHandler:
    """Accepts every message and keeps the last ``MAX_KEPT_MESSAGES`` for inspection."""

    def __init__(self) -> None:
        self.messages: deque[ReceivedMessage] = deque(maxlen=MAX_KEPT_MESSAGES)
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self.lock:
            self.messages.append(
                ReceivedMessage(envelope.mail_from or "", tuple(envelope.rcpt_tos), content)
            )
        return "250 2.0.0 OK: queued"


class EmbeddedSMTPServer:
    """A real SMTP server on 127.0.0.1 in a background thread.

    ``tls``: ``"starttls"`` (offered on a plain port), ``"implicit"`` (TLS from the first
    byte) or ``"none"``. ``users`` are the AUTH credentials it accepts (PLAIN and LOGIN).
    """

    def __init__(
        self,
        *,
        tls: str = "starttls",
        ssl_context: ssl.SSLContext | None = None,
        users: dict[str, str] | None = None,
        auth_require_tls: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        handler: object | None = None,
    ) -> None:
        if tls != "none" and ssl_context is None:
            raise ValueError(f"tls={tls!r} needs an ssl_context")
        self.tls = tls
        self.host = host
        self.port = port or free_port(host)
        self.users = dict(users or {})
        # A custom handler (aiosmtpd hooks such as handle_RCPT) may replace the default one;
        # ``messages`` then reads its ``messages`` and ``lock`` if it has them.
        self._handler = handler if handler is not None else RecordingHandler()
        kwargs: dict[str, Any] = {
            "hostname": host,
            "port": self.port,
            "server_hostname": "embedded.localhost",
            "authenticator": self._authenticate if self.users else None,
            "auth_require_tls": auth_require_tls,
            "ready_timeout": 5.0,
        }
        if tls == "starttls":
            kwargs["tls_context"] = ssl_context
        elif tls == "implicit":
            kwargs["ssl_context"] = ssl_context
            # aiosmtpd only counts STARTTLS as TLS; under implicit TLS the session is already
            # encrypted, so AUTH may be offered from the start.
            kwargs["auth_require_tls"] = False
        self._controller = Controller(self._handler, **kwargs)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self.users.get(data.login.decode("utf-8", "replace")) is not None
            and self.users[data.login.decode("utf-8", "replace")].encode() == data.password
        )
        # handled=False makes aiosmtpd answer the failure itself: 535 5.7.8.
        return AuthResult(success=ok, handled=False)

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._handler.lock:  # type: ignore[attr-defined]
            return list(self._handler.messages)  # type: ignore[attr-defined]

    def start(self) -> EmbeddedSMTPServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> EmbeddedSMTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (aiosmtpd's Controller needs the number up front)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class DemoCertificates:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def make_certificates(directory: Path, names: tuple[str, ...] = ("localhost",)) -> DemoCertificates:
    """Write a throwaway CA and a leaf for ``names`` and 127.0.0.1, valid for 90 days."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp-health-exporter demo CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    out = DemoCertificates(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    out.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    out.key_file.touch(mode=0o600)
    out.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return out


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
