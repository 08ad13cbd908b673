"""DANE for SMTP (RFC 7672): TLSA records at ``_25._tcp.<mx>``, whether the resolver
validated them (AD bit), and whether the certificate the MX presents after STARTTLS
matches one of them.

The STARTTLS session is the SMTP client's own (``smtp.session.Session``) with certificate
verification off: DANE is the check. Usages 3 (DANE-EE: the leaf) and 2 (DANE-TA: a
certificate of the presented chain that issued it, and the leaf names the MX host) are
matched, with selectors 0 (certificate) / 1 (SubjectPublicKeyInfo) and matching types
0 (exact) / 1 (SHA-256) / 2 (SHA-512). Usages 0 and 1 (PKIX) are not used for SMTP
(RFC 7672 §3.1.3) and are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..config import Module, Target, TLSMode
from ..deadline import Deadline
from ..errors import ProbeError
from ..net.tls import chain_der, matches_hostname
from ..results.domain import DANEHost, DomainCheck, Finding, MXHost
from ..smtp.session import Session
from .dnscache import DNSCache, Status

MAX_TLSA = 20  # TLSA records looked at per MX host
_DIGEST_SIZE = {1: 32, 2: 64}
_USAGE_NAMES = {0: "PKIX-TA", 1: "PKIX-EE", 2: "DANE-TA", 3: "DANE-EE"}


def tlsa_problem(usage: int, selector: int, mtype: int, data: bytes) -> str | None:
    """Why a TLSA record cannot be used for SMTP, or None."""
    if usage in (0, 1):
        return f"usage {usage} ({_USAGE_NAMES[usage]}) is not used for SMTP (RFC 7672 §3.1.3)"
    if usage not in (2, 3):
        return f"unknown usage {usage}"
    if selector not in (0, 1):
        return f"unknown selector {selector}"
    if mtype not in (0, 1, 2):
        return f"unknown matching type {mtype}"
    if mtype in _DIGEST_SIZE and len(data) != _DIGEST_SIZE[mtype]:
        need = _DIGEST_SIZE[mtype]
        return f"{len(data)}-byte digest for matching type {mtype} (needs {need})"
    if mtype == 0 and not data:
        return "empty certificate data"
    return None


def selected_records(der: bytes, selector: int) -> bytes | None:
    if selector == 0:
        return der
    try:
        cert = x509.load_der_x509_certificate(der)
        return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except (ValueError, TypeError):
        return None


def _digest(data: bytes, mtype: int) -> bytes:
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    return data


def _matches_one(der: bytes, selector: int, mtype: int, data: bytes) -> bool:
    selected = selected_records(der, selector)
    return selected is not None and _digest(selected, mtype) == data


def tlsa_matches(
    usage: int, selector: int, mtype: int, data: bytes, chain: list[bytes], mx_host: str
) -> bool:
    """Does the presented ``chain`` (DER, leaf first) satisfy this TLSA record?"""
    if not chain or tlsa_problem(usage, selector, mtype, data) is not None:
        return False
    if usage == 3:
        return _matches_one(chain[0], selector, mtype, data)
    for i in range(1, len(chain)):
        if _matches_one(chain[i], selector, mtype, data):
            return _issued_by_chain(chain[: i + 1]) and _names_host(chain[0], mx_host)
    return False


def _issued_by_chain(ders: list[bytes]) -> bool:
    """Each certificate is signed by the next: the trust anchor really issued the leaf."""
    try:
        certs = [x509.load_der_x509_certificate(d) for d in ders]
        for child, parent in itertools.pairwise(certs):
            child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _names_host(der: bytes, host: str) -> bool:
    """RFC 7672 §3.2.2: with DANE-TA the leaf must name the MX host."""
    try:
        ext = x509.load_der_x509_certificate(der).extensions
        sans = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    names = [f"DNS:{n}" for n in sans.get_values_for_type(x509.DNSName)]
    return matches_hostname(host, names)


async def check_dane(
    mx_hosts: tuple[MXHost, ...],
    cache: DNSCache,
    deadline: Deadline,
    *,
    port: int = 25,
    ehlo_name: str = "localhost.localdomain",
) -> tuple[tuple[DANEHost, ...], list[Finding]]:
    """One ``DANEHost`` per MX host, checked concurrently, each ending by ``deadline``."""
    results = await asyncio.gather(
        *(_check_host(mx, cache, deadline, port, ehlo_name) for mx in mx_hosts)
    )
    hosts = tuple(h for h, _ in results)
    findings = [f for _, fs in results for f in fs]
    return hosts, findings


async def _check_host(
    mx: MXHost, cache: DNSCache, deadline: Deadline, port: int, ehlo_name: str
) -> tuple[DANEHost, list[Finding]]:
    name = f"_25._tcp.{mx.host}"
    out: list[Finding] = []

    def finding(reason: str) -> None:
        out.append(Finding(DomainCheck.DANE, f"DANE: {reason}"))

    lookup = await cache.query(name, "TLSA", deadline)
    if lookup.status is Status.ERROR:
        finding(f"TLSA lookup of {name} failed: {lookup.error}")
        return DANEHost(mx.host, 0, False, None, error=lookup.error), out
    if lookup.status is not Status.OK:
        finding(f"no TLSA records at {name}")
        return DANEHost(mx.host, 0, lookup.ad, None), out
    records = lookup.records[:MAX_TLSA]
    if not lookup.ad:
        finding(f"TLSA records at {name} are not DNSSEC-validated (no AD bit)")
    usable = []
    for r in records:
        problem = tlsa_problem(r.usage, r.selector, r.mtype, r.cert)
        if problem:
            finding(f"{name} TLSA {r.usage} {r.selector} {r.mtype}: {problem}")
        else:
            usable.append(r)
    host = DANEHost(mx.host, len(lookup.records), lookup.ad, False)
    if not usable:
        finding(f"no usable TLSA record for {mx.host}")
        return host, out
    if not mx.addresses:
        finding(f"{mx.host} has no address to connect to")
        return DANEHost(mx.host, host.tlsa_records, host.dnssec_validated, False), out
    address = mx.addresses[0]
    chain, error = await presented_chain(mx.host, address, port, ehlo_name, deadline)
    if error is not None:
        finding(f"no certificate from {mx.host} ({address}:{port}): {error}")
        return DANEHost(
            mx.host, host.tlsa_records, host.dnssec_validated, False, address, error
        ), out
    match = any(tlsa_matches(r.usage, r.selector, r.mtype, r.cert, chain, mx.host) for r in usable)
    if not match:
        finding(f"certificate of {mx.host} matches no TLSA record")
    return DANEHost(mx.host, host.tlsa_records, host.dnssec_validated, match, address), out


async def presented_chain(
    mx_host: str, address: str, port: int, ehlo_name: str, deadline: Deadline
) -> tuple[list[bytes], str | None]:
    """Connect, EHLO, STARTTLS (SNI = the MX host), take the chain, QUIT. Never raises."""
    module = Module(
        name="dane",
        tls=TLSMode.STARTTLS,
        port=port,
        tls_verify=False,
        tls_server_name=mx_host,
        ehlo_name=ehlo_name,
        timeout=max(deadline.remaining(), 0.001),
    )
    session = Session(Target(f"{mx_host}:{port}", address, port, module))
    try:
        async with asyncio.timeout_at(deadline.at):
            await session.establish()
            obj = session.conn.tls_object if session.conn is not None else None
            chain = chain_der(obj) if obj is not None else []
            with contextlib.suppress(ProbeError):  # the certificate is what we came for
                await session.quit()
    except TimeoutError:
        return [], f"no answer by the deadline ({session.phase})"
    except ProbeError as exc:
        return [], f"{exc.phase}: {exc.detail}"[:200]
    finally:
        session.close()
    if not chain:
        return [], "no certificate presented"
    return chain, None
