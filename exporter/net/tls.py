"""TLS facts from a finished handshake: version, cipher, the presented chain, whether it
verifies and whether it names the host.

The handshake itself never verifies (CERT_NONE): verification is done here afterwards with
``cryptography``'s X.509 path validation, so a broken certificate is described in full (expiry,
issuer, SANs) instead of ending the probe with an opaque handshake error. Whether a failed
verification fails the probe is the module's decision, made by the caller.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import os
import re
import ssl
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.verification import (
    Criticality,
    DNSName,
    ExtensionPolicy,
    IPAddress,
    PolicyBuilder,
    Store,
    VerificationError,
)

from ..config import ip_literal
from ..results import CertInfo, TLSInfo

# OpenSSL bounds the chain's size in bytes (max_cert_list); this bounds what we parse.
MAX_CHAIN = 10
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, BSD
)


@functools.cache
def client_context() -> ssl.SSLContext:
    """The handshake context: no verification here (see module docstring), modern protocols.
    One for the process: building an SSLContext costs more CPU than a loopback handshake,
    and this one holds no per-target state."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def inspect(obj: ssl.SSLObject, server_name: str, ca_file: str | None) -> TLSInfo:
    """Describe the session ``obj`` and check its chain against the trust store."""
    ders = tuple(chain_der(obj)[:MAX_CHAIN])
    infos, certs, parse_error = _parse_chain(ders)
    cipher = obj.cipher()
    hostname_match = bool(certs) and matches_hostname(server_name, infos[0].sans)
    if parse_error:
        verified, error = False, parse_error
    elif not certs:
        verified, error = False, "server presented no certificate"
    else:
        verified, error = _verdicts.verify(
            ders, certs, server_name if hostname_match else None, ca_file
        )
    return TLSInfo(
        version=obj.version() or "unknown",
        cipher=cipher[0] if cipher else "unknown",
        chain=tuple(infos),
        verified=verified,
        verify_error=error,
        hostname_match=hostname_match,
        server_name=server_name,
    )


def matches_hostname(name: str, sans: Sequence[str]) -> bool:
    """RFC 6125 matching against subjectAltName entries (the CN is not consulted, as in
    browsers). A wildcard stands for exactly one whole left-most label."""
    ip = ip_literal(name)
    if ip is not None:
        return any(san == f"IP:{ip}" for san in sans)
    host = name.lower().rstrip(".")
    for san in sans:
        if not san.startswith("DNS:"):
            continue
        pattern = san[4:].lower().rstrip(".")
        if pattern == host:
            return True
        if pattern.startswith("*.") and "." in host and host.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def hostname_mismatch(info: TLSInfo) -> str:
    """Why the certificate does not fit the name: the name checked and the names the
    certificate holds (its subjectAltNames, a few at most)."""
    sans = info.leaf.sans if info.leaf else ()
    held = ", ".join(san.split(":", 1)[1] for san in sans[:5]) or "no subjectAltName"
    more = f" and {len(sans) - 5} more" if len(sans) > 5 else ""
    return f"certificate does not match {info.server_name!r}: it names {held}{more}"


def chain_der(obj: ssl.SSLObject) -> list[bytes]:
    """The DER certificates the peer sent, leaf first, verified or not."""
    # Public from Python 3.13; the same call lives on the private _sslobj since 3.10.
    getter = getattr(obj, "get_unverified_chain", None)
    if getter is None:
        inner = getattr(obj, "_sslobj", None)
        getter = getattr(inner, "get_unverified_chain", None)
    chain = getter() if getter else None
    if not chain:
        leaf = obj.getpeercert(binary_form=True)
        return [leaf] if leaf else []
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]


# A fleet meets the same chains probe after probe, and parsing and verifying one costs about a
# tenth of a probe's CPU: both are cached, keyed by the chain's exact bytes.
CHAIN_CACHE_SIZE = 512
# How long a verdict is reused at most. It never outlives the next validity date of any
# certificate in the chain and is keyed by the trust store's modification time, so an
# expiring certificate or a changed CA file shows at the next probe all the same.
VERDICT_TTL = 300.0


@functools.lru_cache(maxsize=CHAIN_CACHE_SIZE)
def _parse_chain(
    ders: tuple[bytes, ...],
) -> tuple[tuple[CertInfo, ...], tuple[x509.Certificate, ...], str | None]:
    """The chain's facts and parsed certificates, up to the first unparseable one."""
    certs: list[x509.Certificate] = []
    infos: list[CertInfo] = []
    for der in ders:
        try:
            cert = x509.load_der_x509_certificate(der)
            infos.append(_describe(cert))
        except ValueError as exc:
            return tuple(infos), tuple(certs), f"unparseable certificate: {exc}"
        certs.append(cert)
    return tuple(infos), tuple(certs), None


class _Verdicts:
    """Recent (verified, error) answers per (chain, name, trust store); thread-safe, since
    the send library probes from worker threads too. ``clock`` is the wall clock the
    verdicts are checked and expire by (a test passes its own to step past a date)."""

    def __init__(
        self, size: int = CHAIN_CACHE_SIZE, clock: Callable[[], float] = time.time
    ) -> None:
        self._size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[object, ...], tuple[float, bool, str | None]] = (
            OrderedDict()
        )

    def verify(
        self,
        ders: tuple[bytes, ...],
        certs: tuple[x509.Certificate, ...],
        server_name: str | None,
        ca_file: str | None,
    ) -> tuple[bool, str | None]:
        bundle = ca_file or _system_bundle()
        try:
            mtime = _mtime(bundle)
        except OSError as exc:
            return False, f"cannot load trust store: {exc}"
        key = (ders, server_name, bundle, mtime)
        now = self._clock()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and now < hit[0]:
                self._entries.move_to_end(key)
                return hit[1], hit[2]
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        verified, error = _verify(list(certs), server_name, ca_file, at)
        # Valid until the first date at which any certificate of the chain changes state.
        until = now + VERDICT_TTL
        for cert in certs:
            for moment in (cert.not_valid_before_utc, cert.not_valid_after_utc):
                if moment.timestamp() > now:
                    until = min(until, moment.timestamp())
        with self._lock:
            self._entries[key] = (until, verified, error)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return verified, error


_verdicts = _Verdicts()


def _describe(cert: x509.Certificate) -> CertInfo:
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans += [f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName)]
        sans += [f"IP:{a}" for a in ext.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=tuple(sans[:100]),
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        serial=format(cert.serial_number, "x"),
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def _verify(
    certs: list[x509.Certificate], server_name: str | None, ca_file: str | None, now: dt.datetime
) -> tuple[bool, str | None]:
    try:
        store = _store(ca_file or _system_bundle(), _mtime(ca_file or _system_bundle()))
    except (OSError, ValueError) as exc:
        return False, f"cannot load trust store: {exc}"
    # The chain is checked on its own; whether it names the host is matches_hostname's job.
    # When it does not, validate the path against a name the leaf does carry.
    subject = _subject(server_name) if server_name else _any_name(certs[0])
    if subject is None:
        return False, "certificate has no subjectAltName"

    def verify_at(when: dt.datetime) -> str | None:
        verifier = (
            PolicyBuilder()
            .store(store)
            .time(when)
            .extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_EE_POLICY
            )
            .build_server_verifier(subject)
        )
        try:
            verifier.verify(certs[0], certs[1:])
        except VerificationError as exc:
            return _tidy(str(exc), certs, ca_file)
        except ValueError as exc:
            return f"invalid certificate: {str(exc)[:300]}"
        return None

    error = verify_at(now)
    if error is None:
        return True, None
    dates = _dates_problem(certs, now)
    if dates is None:
        return False, error
    # Out of its dates: say whether the chain is otherwise sound, so an expired certificate
    # from a trusted CA does not read like one from an unknown issuer.
    moment = _inside_validity(certs)
    other = verify_at(moment) if moment is not None else None
    if other is not None and other.startswith("no path"):
        other = "no path to a trusted root either (see tls_ca_file, --tls-ca-file)"
    return False, dates if other is None else f"{dates}; {other}"


# RFC 5280 path validation with the Web PKI rules for CA certificates, but without the Web
# PKI's checks of the leaf's extensions (criticality, EKU) beyond requiring subjectAltName:
# OpenSSL, and so the mail servers' own peers, accept those leaves, and private CAs (trustme
# among them) issue them.
_EE_POLICY = ExtensionPolicy.permit_all().require_present(
    x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
)


def _dates_problem(certs: list[x509.Certificate], now: dt.datetime) -> str | None:
    """Say which presented certificate is expired or not yet valid: operators act on that,
    while the verifier only says "not valid at validation time"."""
    for i, cert in enumerate(certs):
        which = "certificate" if i == 0 else f"chain certificate {i}"
        name = cert.subject.rfc4514_string()[:80]
        if cert.not_valid_after_utc < now:
            return f"{which} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ} ({name})"
        if cert.not_valid_before_utc > now:
            return (
                f"{which} not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%SZ} ({name})"
            )
    return None


def _inside_validity(certs: list[x509.Certificate]) -> dt.datetime | None:
    """A moment at which every presented certificate is within its dates, if there is one
    (the middle of the window they share)."""
    start = max(c.not_valid_before_utc for c in certs)
    end = min(c.not_valid_after_utc for c in certs)
    return start + (end - start) / 2 if start < end else None


_FORBIDDEN = re.compile(r"Forbidden signature algorithm: .*?params: (\w+)")
# What cryptography says when no candidate issuer leads to a trust anchor and nothing else
# went wrong on the way: the chain ends at an issuer the trust store does not hold.
_NO_PATH = "candidates exhausted: all candidates exhausted with no interior errors"


def _tidy(message: str, certs: list[x509.Certificate], ca_file: str | None) -> str:
    # cryptography appends a repr of the certificate it was processing; the subject is in
    # the result already. A forbidden signature comes as a Rust debug dump of the algorithm
    # identifier: keep its name (RsaWithSha1 -> "RSA with SHA-1").
    message = message.split(" (encountered processing", 1)[0]
    if _NO_PATH in message:
        store = "tls_ca_file" if ca_file else "the system trust store"
        issuer = certs[-1].issuer.rfc4514_string()[:60]
        return (
            f"no path to a trusted root: issuer {issuer!r} is not in {store}; "
            "set tls_ca_file (--tls-ca-file) to the CA that issued it"
        )
    forbidden = _FORBIDDEN.search(message)
    if forbidden:
        name = re.sub(r"([a-z])([A-Z])", r"\1 \2", forbidden.group(1))
        name = name.replace("Rsa", "RSA").replace("Ecdsa", "ECDSA").replace("Dsa", "DSA")
        name = re.sub(r"Sha(\d+)", r"SHA-\1", name).replace(" With ", " with ")
        message = message[: forbidden.start()] + f"signature algorithm not allowed ({name})"
    return message[:300]


def _subject(name: str) -> DNSName | IPAddress | None:
    try:
        return IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    try:
        return DNSName(name.rstrip("."))
    except ValueError:
        return None


def _any_name(cert: x509.Certificate) -> DNSName | IPAddress | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    for dns in ext.get_values_for_type(x509.DNSName):
        subject = _subject(dns.replace("*.", "wildcard.", 1))
        if subject is not None:
            return subject
    for ip in ext.get_values_for_type(x509.IPAddress):
        return IPAddress(ip)
    return None


def _system_bundle() -> str:
    paths = ssl.get_default_verify_paths()
    for candidate in (os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    for candidate in _SYSTEM_BUNDLES:
        if os.path.isfile(candidate):
            return candidate
    raise OSError("no system CA bundle found; set tls_ca_file")


def _mtime(path: str) -> float:
    return os.stat(path).st_mtime


@functools.lru_cache(maxsize=32)
def _store(path: str, mtime: float) -> Store:
    # Keyed by mtime so a renewed CA file is picked up without a restart.
    with open(path, "rb") as fh:
        data = fh.read()
    # Some system bundles carry old roots with non-positive serials; cryptography warns on
    # each load, which would repeat in the logs for nothing we can fix.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Store(x509.load_pem_x509_certificates(data))
