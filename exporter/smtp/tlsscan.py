"""TLS strength (posture.tls_scan): which protocol versions a server accepts, the cipher it
picks, its certificate's key and signature, and whether it staples an OCSP response.

One new connection per version (STARTTLS modules: greeting, EHLO, STARTTLS first), with a
context pinned to exactly that version at ``@SECLEVEL=0``, so that OpenSSL 3 still offers
TLS 1.0 and 1.1 and accepts any key: this is about what the server accepts, not about
trust, so nothing is verified. Versions this OpenSSL cannot offer at all are reported as
untestable, not as refused.

Python's ssl module cannot ask for a stapled OCSP response, so that check sends a minimal
TLS 1.2 ClientHello of its own with the status_request extension and reads the server's
plaintext handshake messages up to ServerHelloDone: stapled means a CertificateStatus
message came. In TLS 1.3 that status travels encrypted, so a server that refuses TLS 1.2
gives no answer (``ocsp_stapled`` None, with the reason in ``ocsp_note``).

Everything shares the probe's one deadline; ``scan`` never raises (except cancellation).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
import struct
import time
import warnings

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from ..config import Target, TLSMode, is_ip
from ..deadline import Deadline
from ..errors import ProbeError, TLSError
from ..net.tls import chain_der
from ..results import SCAN_VERSIONS, FailureKind, Phase, TLSScan
from .transport import Connection, RawConnection, resolve

__all__ = ["client_hello", "scan", "untestable_versions"]

log = logging.getLogger(__name__)

MAX_HANDSHAKE_BYTES = 65536  # what the OCSP check reads at most, records included
_DETAIL = 200

_PINNED = {
    "SSLv3": (ssl.HAS_SSLv3, "SSLv3"),
    "TLSv1": (ssl.HAS_TLSv1, "TLSv1"),
    "TLSv1.1": (ssl.HAS_TLSv1_1, "TLSv1_1"),
    "TLSv1.2": (ssl.HAS_TLSv1_2, "TLSv1_2"),
    "TLSv1.3": (ssl.HAS_TLSv1_3, "TLSv1_3"),
}
# SSL alerts and errors that mean "the server will not do this version or these ciphers":
# a refusal, not a fault.
_REFUSALS = (
    "ALERT",
    "UNSUPPORTED_PROTOCOL",
    "NO_PROTOCOLS_AVAILABLE",
    "NO_SHARED_CIPHER",
    "NO_CIPHERS_AVAILABLE",
    "NO_SUITABLE_SIGNATURE_ALGORITHM",
    "UNSAFE_LEGACY_RENEGOTIATION_DISABLED",
    "closed",
)


@functools.cache
def _version_context(version: str) -> tuple[ssl.SSLContext | None, str | None]:
    """A client context offering exactly ``version``, or None and why this OpenSSL cannot."""
    compiled, attr = _PINNED[version]
    if not compiled:
        return None, "not compiled into this OpenSSL"
    try:
        with warnings.catch_warnings():  # ssl.TLSVersion.TLSv1 & co. are deprecated names
            warnings.simplefilter("ignore", DeprecationWarning)
            pinned = getattr(ssl.TLSVersion, attr)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_ciphers("ALL:@SECLEVEL=0")
            ctx.minimum_version = pinned
            ctx.maximum_version = pinned
    except (ValueError, ssl.SSLError, AttributeError) as exc:
        return None, f"cannot configure: {exc}"
    # Configurable is not enough (a build or policy may still offer nothing): make a
    # ClientHello into memory and see.
    obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=False)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        return ctx, None
    except ssl.SSLError as exc:
        return None, str(exc.reason or exc)
    return None, "no ClientHello produced"


def untestable_versions() -> dict[str, str]:
    """The versions this process's OpenSSL cannot offer, each with the reason."""
    out = {}
    for version in SCAN_VERSIONS:
        ctx, why = _version_context(version)
        if ctx is None:
            out[version] = why or "unknown"
    return out


class _Refused(Exception):
    """The server refused the pinned version (alert, or closed the connection)."""


async def scan(target: Target, deadline: Deadline) -> TLSScan:
    """Probe the TLS strength of ``target`` by ``deadline``. Never raises except
    ``CancelledError``; what went wrong is in ``TLSScan.error``."""
    start = time.perf_counter()
    state = _State()
    try:
        async with asyncio.timeout_at(deadline.at):
            await _scan(target, state)
    except TimeoutError:
        state.error = f"deadline reached during {state.step}"
    except Exception as exc:  # a bug of ours must not take the probe down
        log.exception("internal error in the TLS scan of %s", target.name)
        state.error = f"internal error: {type(exc).__name__}"
    return state.result(time.perf_counter() - start)


class _State:
    """What the scan has learnt so far; readable whatever ended it."""

    def __init__(self) -> None:
        self.step = "start"
        self.tested: list[str] = []
        self.accepted: list[tuple[str, str]] = []  # (version, cipher)
        self.untestable = tuple(untestable_versions())
        self.leaf: dict[str, object] = {}
        self.ocsp: bool | None = None
        self.ocsp_note: str | None = None
        self.errors: list[str] = []
        self.error: str | None = None

    def result(self, seconds: float) -> TLSScan:
        error = self.error
        if self.errors:
            error = "; ".join([*self.errors, *([error] if error else [])])
        return TLSScan(
            tested=tuple(self.tested),
            accepted=tuple(v for v, _ in self.accepted),
            untestable=self.untestable,
            ciphers=tuple(self.accepted),
            ocsp_stapled=self.ocsp,
            ocsp_note=self.ocsp_note,
            error=_clip(error) if error else None,
            seconds=seconds,
            **self.leaf,  # type: ignore[arg-type]
        )


async def _scan(target: Target, state: _State) -> None:
    module = target.module
    state.step = "resolve"
    address = await resolve(target.host, target.port, module.ip_protocol)
    server_name = module.tls_server_name or target.host
    sni = None if is_ip(server_name) else server_name
    for version in SCAN_VERSIONS:
        ctx, _ = _version_context(version)
        if ctx is None:
            continue
        state.step = f"the {version} handshake"
        state.tested.append(version)
        try:
            cipher, leaf = await _handshake(target, address, ctx, sni, version)
        except _Refused:
            continue
        except ProbeError as exc:
            state.errors.append(f"{version}: {exc.phase}: {exc.detail}")
            continue
        state.accepted.append((version, cipher))
        if leaf is not None:
            state.leaf = _describe_key(leaf)
    state.step = "the OCSP status request"
    if "TLSv1.2" not in (v for v, _ in state.accepted):
        state.ocsp_note = "server refuses TLS 1.2; in TLS 1.3 a stapled status is encrypted"
        return
    try:
        state.ocsp = await _ocsp_stapled(target, address, sni)
    except ProbeError as exc:
        state.ocsp_note = _clip(f"{exc.phase}: {exc.detail}")


async def _plaintext_until_tls(target: Target, address: str) -> Connection:
    """Connect and, for STARTTLS, get as far as the 220 to STARTTLS."""
    conn = await Connection.open(address, target.port)
    if target.module.tls is TLSMode.STARTTLS:
        try:
            await _expect(conn, None, 220, Phase.GREETING)
            await _expect(conn, f"EHLO {target.module.ehlo_name}", 250, Phase.EHLO)
            await _expect(conn, "STARTTLS", 220, Phase.STARTTLS)
        except BaseException:
            conn.close(graceful=False)
            raise
    return conn


async def _expect(conn: Connection, line: str | None, code: int, phase: Phase) -> None:
    reply = await (conn.read_reply(phase) if line is None else conn.command(line, phase))
    if reply.code != code:
        raise ProbeError(phase, FailureKind.REPLY, _clip(str(reply)))


async def _handshake(
    target: Target, address: str, ctx: ssl.SSLContext, sni: str | None, version: str
) -> tuple[str, bytes | None]:
    """One handshake offering only ``version``: (cipher, leaf DER) if the server took it."""
    conn = await _plaintext_until_tls(target, address)
    try:
        try:
            obj = await conn.start_tls(ctx, sni)
        except TLSError as exc:
            if any(mark in exc.detail for mark in _REFUSALS):
                raise _Refused from exc
            raise
        except ProbeError as exc:
            if exc.phase is Phase.TLS_HANDSHAKE and "closed" in exc.detail:
                raise _Refused from exc
            raise
        got = obj.version()
        if got != version:
            raise ProbeError(
                Phase.TLS_HANDSHAKE, FailureKind.REPLY, f"asked for {version} only, got {got}"
            )
        cipher = obj.cipher()
        ders = chain_der(obj)
        return (cipher[0] if cipher else "unknown"), (ders[0] if ders else None)
    finally:
        conn.close(graceful=False)


def _describe_key(der: bytes) -> dict[str, object]:
    """Key type and size and signature of the leaf, as TLSScan fields."""
    try:
        cert = x509.load_der_x509_certificate(der)
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return {}
    out: dict[str, object] = {}
    if isinstance(key, rsa.RSAPublicKey):
        out.update(key_type="RSA", key_bits=key.key_size)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        out.update(key_type="EC", key_bits=key.curve.key_size)
    elif isinstance(key, ed25519.Ed25519PublicKey):
        out.update(key_type="Ed25519", key_bits=256)
    elif isinstance(key, ed448.Ed448PublicKey):
        out.update(key_type="Ed448", key_bits=456)
    elif isinstance(key, dsa.DSAPublicKey):
        out.update(key_type="DSA", key_bits=key.key_size)
    oid = cert.signature_algorithm_oid
    out["signature_algorithm"] = getattr(oid, "_name", None) or oid.dotted_string
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        digest = None
    out["signature_hash"] = digest.name if digest is not None else None
    return out


# --- OCSP stapling: a TLS 1.2 ClientHello written by hand ---------------------------------

# ECDHE and plain-RSA suites every TLS 1.2 server has at least one of, then the
# renegotiation SCSV (RFC 5746).
_SUITES = (
    0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC009, 0xC013, 0xC00A, 0xC014,
    0x009E, 0x009F, 0x0033, 0x0039, 0x009C, 0x009D, 0x002F, 0x0035, 0x000A, 0x00FF,
)  # fmt: skip
_GROUPS = (0x001D, 0x0017, 0x0018, 0x0019, 0x0100)  # x25519, P-256, P-384, P-521, ffdhe2048
_SIGALGS = (
    0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0807, 0x0808,
    0x0401, 0x0501, 0x0601, 0x0203, 0x0201,
)  # fmt: skip
_HANDSHAKE, _ALERT = 22, 21
_SERVER_HELLO, _CERTIFICATE_STATUS, _SERVER_HELLO_DONE = 2, 22, 14


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def _u16s(values: tuple[int, ...]) -> bytes:
    return struct.pack(f"!H{len(values)}H", 2 * len(values), *values)


def client_hello(server_name: str | None) -> bytes:
    """A TLS 1.2 ClientHello record asking for a stapled OCSP response (status_request)."""
    exts = [
        _ext(5, b"\x01\x00\x00\x00\x00"),  # status_request: ocsp, no responder ids, no exts
        _ext(10, _u16s(_GROUPS)),
        _ext(11, b"\x01\x00"),  # ec_point_formats: uncompressed
        _ext(13, _u16s(_SIGALGS)),
        _ext(23, b""),  # extended_master_secret
        _ext(0xFF01, b"\x00"),  # renegotiation_info
    ]
    if server_name:
        name = server_name.encode("idna")
        entry = b"\x00" + struct.pack("!H", len(name)) + name
        exts.insert(0, _ext(0, struct.pack("!H", len(entry)) + entry))
    ext_bytes = b"".join(exts)
    body = (
        b"\x03\x03"
        + os.urandom(32)
        + b"\x00"  # no session id
        + _u16s(_SUITES)
        + b"\x01\x00"  # compression: null
        + struct.pack("!H", len(ext_bytes))
        + ext_bytes
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


async def _ocsp_stapled(target: Target, address: str, sni: str | None) -> bool:
    """Send our ClientHello; read handshake messages until ServerHelloDone."""
    if target.module.tls is TLSMode.STARTTLS:
        raw = (await _plaintext_until_tls(target, address)).detach()
    else:
        raw = await RawConnection.open(address, target.port, MAX_HANDSHAKE_BYTES)
    try:
        raw.write(client_hello(sni))
        return await _read_until_done(raw)
    finally:
        raw.close()


async def _read_until_done(raw: RawConnection) -> bool:
    phase = Phase.TLS_HANDSHAKE
    pending = b""  # handshake bytes not yet forming a whole message
    stapled = False
    first = True
    while True:
        kind, version, length = struct.unpack("!BHH", await raw.read_exactly(5, phase))
        if kind not in (_HANDSHAKE, _ALERT) or version >> 8 != 3 or length > 18432:
            raise ProbeError(phase, FailureKind.PROTOCOL, "not a TLS handshake record")
        payload = await raw.read_exactly(length, phase)
        if kind == _ALERT:
            what = payload[1] if len(payload) > 1 else -1
            raise ProbeError(phase, FailureKind.PROTOCOL, f"TLS alert {what} to our ClientHello")
        pending += payload
        while len(pending) >= 4:
            msg_type = pending[0]
            msg_len = int.from_bytes(pending[1:4], "big")
            if len(pending) < 4 + msg_len:
                break
            if first and msg_type != _SERVER_HELLO:
                raise ProbeError(phase, FailureKind.PROTOCOL, f"handshake message {msg_type} first")
            first = False
            if msg_type == _CERTIFICATE_STATUS:
                stapled = True
            if msg_type == _SERVER_HELLO_DONE:
                return stapled
            pending = pending[4 + msg_len :]


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL else text[: _DETAIL - 3] + "..."
