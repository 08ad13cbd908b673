"""Shared helpers for the domain-check tests: a check runner and the TLS pieces (server
contexts, TLSA data) the DNS zones refer to. The `dns_server` fixture is in conftest."""

from __future__ import annotations

import asyncio
import hashlib
import ssl

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exporter.config import DNSConfig, DomainChecks
from exporter.deadline import Deadline
from exporter.discovery import make_resolver
from exporter.maildomain import DNSCache, check
from exporter.maildomain.results import DomainResult

from .servers.dns import DNSServer

EHLO = "probe.example.test"


def resolver_for(dns: DNSServer, timeout: float = 1.0):
    return make_resolver(DNSConfig(((dns.address, dns.port),), timeout))


def run_check(
    dns: DNSServer | DNSCache,
    domain: str,
    checks: DomainChecks | None = None,
    *,
    timeout: float = 5.0,
    previous: DomainResult | None = None,
    dns_timeout: float = 1.0,
) -> DomainResult:
    resolver = dns if isinstance(dns, DNSCache) else resolver_for(dns, dns_timeout)
    return asyncio.run(
        check(
            domain,
            checks or DomainChecks(),
            resolver,
            Deadline.after(timeout),
            previous,
            ehlo_name=EHLO,
        )
    )


def reasons(result: DomainResult, check: str | None = None) -> list[str]:
    return [f.reason for f in result.findings if check is None or f.check == check]


def tlsa_3_1_1(cert: trustme.LeafCert) -> str:
    """DANE-EE, SubjectPublicKeyInfo, SHA-256: the TLSA record data matching ``cert``."""
    spki = (
        x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    return f"3 1 1 {hashlib.sha256(spki).hexdigest()}"


def server_context_for(ca: trustme.CA, *names: str) -> tuple[ssl.SSLContext, trustme.LeafCert]:
    """A server-side TLS context with a fresh certificate from ``ca`` for ``names``."""
    cert = ca.issue_cert(*names)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx, cert
