"""What every protocol session does the same way: time its phases, upgrade to TLS with
the module's verification rules, keep credentials off clear connections, mask secrets.
(The sessions differ in their dialogue only.)"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..config import AuthConfig, Target, is_ip
from ..errors import ProbeError, TLSError
from ..results import FailureKind, Phase, PhaseTiming, TLSInfo
from . import tls
from .connection import Connection


class Timed(Protocol):
    """A session whose phases ``Step`` times: it names the phase running, keeps the
    timings and, with a transcript sink (``wire``), notes each phase's end."""

    phase: Phase
    timings: list[PhaseTiming]
    wire: Callable[[str], None] | None

    def note(self, text: str) -> None: ...


class Step:
    """A session's ``step(phase)`` context manager: the phase's duration is recorded when
    the ``with`` block ends, by an exception or not. A class rather than a
    @contextmanager generator, which costs several times as much, and a probe times ten
    phases."""

    __slots__ = ("_phase", "_session", "_start")

    def __init__(self, session: Timed, phase: Phase) -> None:
        self._session = session
        self._phase = phase
        self._start = 0.0

    def __enter__(self) -> None:
        self._session.phase = self._phase
        self._start = time.perf_counter()

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        seconds = time.perf_counter() - self._start
        self._session.timings.append(PhaseTiming(self._phase, seconds))
        if self._session.wire is not None:
            done = "ok" if exc_type is None else "failed"
            self._session.note(f"phase {self._phase} {done} in {seconds * 1000:.1f} ms")


async def handshake(conn: Connection[Any], target: Target) -> TLSInfo:
    """TLS on ``conn`` (after the server's yes to STARTTLS / STLS, or at once for implicit
    TLS): what the handshake showed. The caller keeps it before ``verify`` applies the
    module's rules, so a result reports the certificate of a server it then refused."""
    module = target.module
    server_name = module.tls_server_name or target.host
    sni = None if is_ip(server_name) else server_name
    obj = await conn.start_tls(tls.client_context(), sni)
    return tls.inspect(obj, server_name, module.tls_ca_file)


def verify(info: TLSInfo, target: Target, note: Callable[[str], None] | None = None) -> None:
    """Note the handshake in the transcript; raise if the module verifies and it fails."""
    if note is not None:
        note(tls_note(info))
    if not target.module.tls_verify:
        return
    if not info.verified:
        raise TLSError(
            Phase.TLS_HANDSHAKE,
            FailureKind.TLS_VERIFY,
            f"certificate did not verify: {info.verify_error}",
        )
    if not info.hostname_match:
        raise TLSError(Phase.TLS_HANDSHAKE, FailureKind.TLS_HOSTNAME, tls.hostname_mismatch(info))


def require_encryption(tls: TLSInfo | None, auth: AuthConfig) -> None:
    """Credentials go only over TLS, unless the module says ``allow_insecure``."""
    if tls is None and not auth.allow_insecure:
        raise ProbeError(
            Phase.AUTH,
            FailureKind.INSECURE,
            "refusing to send credentials over an unencrypted connection",
        )


def tls_note(info: TLSInfo) -> str:
    """The handshake in one transcript line."""
    leaf = info.leaf
    cert = "no certificate"
    if leaf is not None:
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(leaf.not_after))
        cert = f"certificate {leaf.subject!r} issued by {leaf.issuer!r}, expires {expires}"
    verified = "verified" if info.verified else f"not verified ({info.verify_error})"
    name = "matches" if info.hostname_match else "does not match"
    return f"TLS {info.version} {info.cipher}; {cert}; {verified}; {info.server_name} {name}"


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every form of a secret masked, whatever its case: a server may echo a
    password back upper-cased (as a capability name, say) as easily as verbatim."""
    if not secrets or not text:
        return text
    folded = text.casefold()
    if not any(s.casefold() in folded for s in secrets):
        return text
    for secret in secrets:  # longest first (the sessions sort them so)
        text = re.sub(re.escape(secret), "***", text, flags=re.IGNORECASE)
    return text


def without_secrets(names: tuple[str, ...], secrets: tuple[str, ...]) -> tuple[str, ...]:
    """The names (capabilities, mechanisms) a server listed, less any that carries a form
    of a secret: a hostile server can replay the password it saw as a capability."""
    if not secrets:
        return names
    forms = [s.casefold() for s in secrets]
    return tuple(n for n in names if not any(f in n.casefold() for f in forms))
