"""An SMTP client for sending, built on the probe's session (same connect, TLS and AUTH code)
with mail transactions on top. Async, one connection, not thread-safe."""

from __future__ import annotations

import asyncio
import datetime
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..config import Target
from ..errors import ProbeError, ReplyError
from ..results import FailureKind, Phase
from ..smtp.session import Session
from .config import SMTPConfig
from .message import Envelope, dot_stuff

wire_log = logging.getLogger("exporter.send.wire")
# Failures worth another try: the server said "later" (4xx) or the connection went away.
_TRANSIENT_KINDS = {
    FailureKind.TIMEOUT,
    FailureKind.REFUSED,
    FailureKind.NETWORK,
    FailureKind.CLOSED,
    FailureKind.PROTOCOL,
}


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome for one recipient of one message."""

    to: str
    ok: bool
    error: str | None = None
    code: int | None = None
    enhanced: str | None = None
    transient: bool = False  # worth retrying: 4xx, connection lost, timeout
    message_id: str | None = None
    attempts: int = 1
    dry_run: bool = False

    def __str__(self) -> str:
        """``"addr: OK"`` or ``"addr: FAIL <error>"``, as the seed printed them."""
        if self.ok:
            return f"{self.to}: OK"
        return f"{self.to}: FAIL {self.error}" if self.error else f"{self.to}: FAIL"


class SendFailure(Exception):
    """Why a whole transaction (or the connection) failed."""

    def __init__(
        self,
        text: str,
        code: int | None = None,
        enhanced: str | None = None,
        transient: bool = False,
        delivered_unknown: bool = False,
    ) -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.enhanced = enhanced
        self.transient = transient
        # Lost after the final "." went out: the server may have taken the message, so it
        # must not be sent again blindly.
        self.delivered_unknown = delivered_unknown

    def result(self, to: str, message_id: str | None) -> SendResult:
        return SendResult(
            to, False, self.text, self.code, self.enhanced, self.transient, message_id
        )

    @classmethod
    def from_probe(cls, exc: ProbeError | TimeoutError, phase: Phase) -> SendFailure:
        if isinstance(exc, TimeoutError):
            return cls(f"{phase}: timeout", transient=True)
        if isinstance(exc, ReplyError):
            # The detail is the server's reply as received, code and enhanced status
            # included ("535 5.7.8 ..."): adding the code again would repeat it.
            return cls(
                f"{exc.phase}: {exc.detail}".strip(),
                exc.code,
                exc.enhanced,
                transient=400 <= exc.code < 500,
            )
        return cls(f"{exc.phase}: {exc.kind}: {exc.detail}", transient=exc.kind in _TRANSIENT_KINDS)


def wire_sink(debug: int) -> Callable[[str], None] | None:
    """Where ``SMTPConfig.debug`` sends the (already redacted) dialogue: the
    ``exporter.send.wire`` logger when the application has it at DEBUG, else printed to
    stderr as smtplib's ``set_debuglevel`` does (2: with a timestamp). Never both, so an
    application that logs at DEBUG does not see each line twice."""
    if not debug:
        return None

    def sink(line: str) -> None:
        if wire_log.isEnabledFor(logging.DEBUG):
            wire_log.debug("%s", line)
        elif debug >= 2:
            print(datetime.datetime.now().time(), line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    return sink


class SMTPClient:
    def __init__(self, cfg: SMTPConfig, target: Target | None = None) -> None:
        """``target`` overrides where and how to connect (the canary passes the probed
        target, so it sends exactly as the probe connects); ``cfg`` still sets timeouts."""
        self.cfg = cfg
        self.target = target or cfg.target()
        self.session: Session | None = None
        self.sent_on_connection = 0

    @property
    def connected(self) -> bool:
        return self.session is not None

    async def connect(self) -> None:
        session = Session(self.target, wire_sink(self.cfg.debug))
        try:
            async with asyncio.timeout(self.cfg.timeout):
                await session.establish()
        except (ProbeError, TimeoutError) as exc:
            session.close()
            raise SendFailure.from_probe(exc, session.phase) from exc
        self.session = session
        self.sent_on_connection = 0

    async def close(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        try:
            async with asyncio.timeout(self.cfg.timeout):
                await session.quit()
        except (ProbeError, TimeoutError):
            pass  # the transactions are over; a rude goodbye changes nothing
        finally:
            session.close()

    def _drop(self) -> None:
        if self.session is not None:
            self.session.close()
        self.session = None

    async def _step(self, line: str | None, phase: Phase, data: bytes | None = None):  # type: ignore[no-untyped-def]
        assert self.session is not None and self.session.conn is not None
        async with asyncio.timeout(self.cfg.timeout):
            if data is not None:
                await self.session.conn.send_data(data, phase)
                return await self.session.read(phase)
            assert line is not None
            return await self.session.command(line, phase)

    async def send(
        self, env: Envelope, recipients: tuple[str, ...] | None = None
    ) -> list[SendResult]:
        """One transaction. Refusals become results; a lost connection raises SendFailure
        (with ``delivered_unknown`` once the body has been sent)."""
        assert self.session is not None
        rcpts = env.recipients if recipients is None else recipients
        mid = env.message_id
        ext = self.session.extensions
        if not rcpts:
            return []
        if env.smtputf8 and not ext.has("SMTPUTF8"):
            return [
                SendResult(r, False, "non-ASCII address but server lacks SMTPUTF8", message_id=mid)
                for r in rcpts
            ]
        params = []
        if ext.has("SIZE"):
            params.append(f"SIZE={len(env.data)}")
        if ext.has("8BITMIME") and not env.data.isascii():
            params.append("BODY=8BITMIME")
        if env.smtputf8:
            params.append("SMTPUTF8")
        body_sent = False
        phase = Phase.MAIL
        try:
            reply = await self._step(" ".join([f"MAIL FROM:<{env.sender}>", *params]), Phase.MAIL)
            if reply.code != 250:
                await self._rset()
                return [_refused(r, reply, mid) for r in rcpts]
            phase = Phase.RCPT
            results: dict[str, SendResult] = {}
            accepted: list[str] = []
            for r in rcpts:
                reply = await self._step(f"RCPT TO:<{r}>", Phase.RCPT)
                if reply.code in (250, 251):
                    accepted.append(r)
                else:
                    results[r] = _refused(r, reply, mid)
            if not accepted:
                await self._rset()
                return [results[r] for r in rcpts]
            phase = Phase.DATA
            reply = await self._step("DATA", Phase.DATA)
            if reply.code != 354:
                await self._rset()
                return [results.get(r) or _refused(r, reply, mid) for r in rcpts]
            body_sent = True
            reply = await self._step(None, Phase.DATA, dot_stuff(env.data))
            self.sent_on_connection += 1
            for r in accepted:
                results[r] = (
                    SendResult(r, True, message_id=mid)
                    if reply.code == 250
                    else _refused(r, reply, mid)
                )
            return [results[r] for r in rcpts]
        except (ProbeError, TimeoutError, ValueError) as exc:
            self._drop()
            if isinstance(exc, ValueError):  # CR/LF in an address: never sent
                raise SendFailure(f"invalid address: {exc}") from exc
            failure = SendFailure.from_probe(exc, phase)
            failure.delivered_unknown = body_sent
            if body_sent:
                failure.text = "connection lost after the message was sent; delivery unknown"
            raise failure from exc

    async def _rset(self) -> None:
        reply = await self._step("RSET", Phase.MAIL)
        if reply.code != 250:
            self._drop()


def _refused(to: str, reply, mid: str | None) -> SendResult:  # type: ignore[no-untyped-def]
    return SendResult(
        to, False, str(reply)[:256], reply.code, reply.enhanced, 400 <= reply.code < 500, mid
    )


def with_attempts(result: SendResult, attempts: int) -> SendResult:
    return replace(result, attempts=attempts)
