"""The probe boundary: ``run(target)`` always returns a ``ProbeResult`` and never raises
(except cancellation, which must pass through). It imports neither prometheus_client nor
apscheduler; a probe knows nothing of how its result is shown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol as Interface

from ..config import Target
from ..deadline import Deadline
from ..errors import ProbeError, ReplyError
from ..imap.session import IMAPSession
from ..net.phases import without_secrets
from ..pop3.session import POP3Session
from ..results import (
    AuthInfo,
    Failure,
    FailureKind,
    MailboxInfo,
    Phase,
    PhaseTiming,
    ProbeResult,
    Protocol,
    TLSInfo,
)
from ..smtp.session import Session

__all__ = ["Deadline", "run"]

log = logging.getLogger(__name__)
MAX_DETAIL = 256


async def run(
    target: Target,
    deadline: Deadline | None = None,
    wire: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Probe ``target`` once, ending by ``deadline`` (default: the module's timeout).
    ``wire``, if given, hears the redacted transcript (``/probe?debug=true``)."""
    deadline = deadline or Deadline.after(target.module.timeout)
    if target.module.protocol == Protocol.POP3:
        return await _run_mailbox(POP3Session(target, wire), Protocol.POP3, target, deadline)
    if target.module.protocol == Protocol.IMAP:
        return await _run_mailbox(IMAPSession(target, wire), Protocol.IMAP, target, deadline)
    started_at = time.time()
    start = time.perf_counter()
    session = Session(target, wire)
    failure = await _execute(session, target, deadline)
    if failure is not None and wire is not None:
        session.note(f"failed in phase {failure.phase}: {failure.kind}: {failure.detail}")
    if _should_scan(target, session, failure):
        await session.tls_scan(deadline)
        scan = session.posture.tls_scan
        if wire is not None and scan is not None:
            session.note(
                f"TLS scan: tried {' '.join(scan.tested) or 'none'}, accepted "
                f"{' '.join(scan.accepted) or 'none'}; key {scan.key_type} {scan.key_bits} "
                f"bits; signature {scan.signature_algorithm}"
                + (f"; incomplete: {scan.error}" if scan.error else "")
            )
    findings = session.posture.findings
    if wire is not None and findings:
        session.note("posture findings: " + "; ".join(findings))
    if failure is None and findings and target.module.posture.fail_on_findings:
        # Every protocol phase passed: the posture is what failed, in a phase of its own,
        # so the failure is not blamed on the handshake or STARTTLS that worked.
        failure = Failure(Phase.POSTURE, FailureKind.FINDING, _clip("; ".join(findings)))
    ext = session.extensions
    return ProbeResult(
        target=target.name,
        module=target.module.name,
        host=target.host,
        port=target.port,
        started_at=started_at,
        duration_seconds=time.perf_counter() - start,
        phases=tuple(session.timings),
        failure=failure,
        address=session.address,
        tls=session.tls,
        greeting_host=session.greeting_host,
        extensions=without_secrets(ext.keywords, session.secrets),
        auth_mechanisms=without_secrets(ext.auth_mechanisms, session.secrets),
        size_limit=ext.size_limit,
        used_helo=session.used_helo,
        auth=session.auth,
        last_reply_code=session.last_code,
        labels=target.labels,
        posture=session.posture,
    )


class Runnable(Interface):
    """What ``_execute`` needs of any protocol's session."""

    phase: Phase

    async def execute(self) -> None: ...

    def redact(self, text: str) -> str: ...

    def close(self) -> None: ...


class MailboxSession(Runnable, Interface):
    """What ``run`` reads of an IMAP or POP3 session (the surface both clients share)."""

    secrets: tuple[str, ...]
    timings: list[PhaseTiming]
    address: str | None
    tls: TLSInfo | None
    auth: AuthInfo
    mailbox: MailboxInfo | None

    @property
    def extensions(self) -> tuple[str, ...]: ...

    @property
    def auth_mechanisms(self) -> tuple[str, ...]: ...


async def _run_mailbox(
    session: MailboxSession, protocol: Protocol, target: Target, deadline: Deadline
) -> ProbeResult:
    """An IMAP or POP3 probe: the session's phases under the one deadline, then its result
    (no posture checks, no reply codes: a NO, BAD or -ERR is a ``reply`` failure with the
    server's text)."""
    started_at = time.time()
    start = time.perf_counter()
    failure = await _execute(session, target, deadline)
    return ProbeResult(
        target=target.name,
        module=target.module.name,
        host=target.host,
        port=target.port,
        started_at=started_at,
        duration_seconds=time.perf_counter() - start,
        phases=tuple(session.timings),
        failure=failure,
        address=session.address,
        tls=session.tls,
        extensions=without_secrets(session.extensions, session.secrets),
        auth_mechanisms=without_secrets(session.auth_mechanisms, session.secrets),
        auth=session.auth,
        labels=target.labels,
        protocol=protocol,
        mailbox=session.mailbox,
    )


async def _execute(session: Runnable, target: Target, deadline: Deadline) -> Failure | None:
    """Run a session's dialogue under the one deadline and close it: the first thing that
    went wrong as a ``Failure`` (a timeout blamed on the phase that was running, details
    redacted and clipped), or None. Only cancellation passes through."""
    try:
        async with asyncio.timeout_at(deadline.at):
            await session.execute()
    except TimeoutError:
        return Failure(
            session.phase,
            FailureKind.TIMEOUT,
            f"no answer within the probe's {deadline.budget:g}s deadline",
        )
    except ReplyError as exc:  # SMTP's: a reply code and its enhanced status
        return Failure(
            exc.phase, exc.kind, _clip(session.redact(exc.detail)), exc.code, exc.enhanced
        )
    except ProbeError as exc:
        return Failure(exc.phase, exc.kind, _clip(session.redact(exc.detail)))
    except Exception as exc:  # a bug of ours must not take the exporter down
        log.exception("internal error probing %s", target.name)
        return Failure(session.phase, FailureKind.INTERNAL, type(exc).__name__)
    finally:
        session.close()
    return None


def _should_scan(target: Target, session: Session, failure: Failure | None) -> bool:
    """The TLS scan runs once the health check has shown the server speaks TLS (its own
    handshake completed), whatever came after, unless the deadline has passed already."""
    return (
        target.module.posture.tls_scan
        and session.tls is not None
        and (failure is None or failure.kind is not FailureKind.TIMEOUT)
    )


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."
