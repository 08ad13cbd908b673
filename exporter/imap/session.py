"""The IMAP health check as a state machine over one connection (RFC 9051 / 3501):

resolve -> connect -> [implicit TLS] -> greeting -> [CAPABILITY] -> [STARTTLS -> TLS ->
CAPABILITY] -> [LOGIN / AUTHENTICATE -> SELECT or EXAMINE] -> NOOP -> LOGOUT

Each phase is timed; CAPABILITY only when a command is sent (a greeting's ``[CAPABILITY
...]`` code answers it for free). The first failure ends the session with a ``ProbeError``
naming the phase; ``probe.run`` turns it into the result's ``Failure``. A tagged ``NO`` or
``BAD`` and an unasked ``BYE`` are ``reply`` failures carrying the server's text; the
reader's refusals (wrong tag, endless responses, huge literals) are ``protocol`` ones.

Once authenticated, ``command`` runs any further command (the canary's SEARCH, FETCH,
STORE): ``exporter.imap.mailbox`` has those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import count

from ..config import Target, TLSMode
from ..errors import ProbeError, ProtocolError
from ..net import phases, sasl
from ..net.connection import Connection
from ..net.resolve import resolve
from ..results import AuthInfo, FailureKind, MailboxInfo, Phase, PhaseTiming, TLSInfo
from .reader import IMAPReader, Kind, Response, clean
from .syntax import (
    astring,
    challenge,
    choose,
    mailbox_name,
    masked_command,
    parse_capabilities,
    response_text,
    secret_forms,
)

LITERAL_MINUS_MAX = 4096  # RFC 7888: the largest non-synchronizing literal LITERAL- allows


@dataclass(frozen=True, slots=True)
class Completion:
    """A command's tagged completion and the untagged responses that came before it."""

    done: Response
    untagged: tuple[Response, ...]

    @property
    def ok(self) -> bool:
        return self.done.keyword == "OK"


class IMAPSession:
    """State of one IMAP probe run. Everything it learns stays readable after a failure, so
    the result can report the certificate of a server whose login then failed."""

    def __init__(
        self,
        target: Target,
        wire: Callable[[str], None] | None = None,
        *,
        max_line: int | None = None,
    ) -> None:
        self.target = target
        self.wire = wire  # debug transcript sink; lines are redacted before it sees them
        self.module = target.module
        self.phase = Phase.RESOLVE
        self.timings: list[PhaseTiming] = []
        self.conn: Connection[Response] | None = None
        self.reader = IMAPReader() if max_line is None else IMAPReader(max_line=max_line)
        self.address: str | None = None
        self.tls: TLSInfo | None = None
        self.auth = AuthInfo()
        self.capabilities: tuple[str, ...] = ()  # as last advertised before authentication
        self.authenticated = False  # logged in, or PREAUTH
        self.after_login: tuple[str, ...] | None = None  # listed by the login's completion
        self.mailbox: MailboxInfo | None = None
        self.logout_ok = False
        self.logging_out = False
        self.secrets = secret_forms(target)
        self._tags = count(1)
        self._seen_capabilities: tuple[str, ...] | None = None  # from the last response

    # --- the surface probe.run uses ----------------------------------------------------------
    @property
    def extensions(self) -> tuple[str, ...]:
        """The CAPABILITY names (upper case), as the server listed them before login."""
        return self.capabilities

    @property
    def auth_mechanisms(self) -> tuple[str, ...]:
        """The SASL mechanisms offered (the ``AUTH=`` capabilities)."""
        return tuple(c[5:] for c in self.capabilities if c.startswith("AUTH="))

    def step(self, phase: Phase) -> phases.Step:
        """Enter ``phase``; its duration is recorded when the ``with`` block ends."""
        return phases.Step(self, phase)

    async def execute(self) -> None:
        """The whole health check."""
        await self.establish()
        if self.authenticated:
            await self.select()
        with self.step(Phase.NOOP):
            self.check(await self.command("NOOP", Phase.NOOP), Phase.NOOP)
        await self.logout()

    async def establish(self) -> None:
        """Everything up to an authenticated session (when the module has credentials):
        connect, greeting, CAPABILITY, TLS, login. Shared with the canary."""
        target, module = self.target, self.module
        with self.step(Phase.RESOLVE):
            self.address = await resolve(target.host, target.port, module.ip_protocol)
            self.note(f"resolved {target.host} to {self.address}")
        with self.step(Phase.CONNECT):
            self.conn = await Connection.open(self.address, target.port, self.reader)
            self.note(f"connected to {self.address} port {target.port}")
        if module.tls is TLSMode.IMPLICIT:
            with self.step(Phase.TLS_HANDSHAKE):
                await self._handshake()
        with self.step(Phase.GREETING):
            await self._greeting()
        if not self.capabilities:
            with self.step(Phase.CAPABILITY):
                self.capabilities = await self.capability(Phase.CAPABILITY)
        if module.tls is TLSMode.STARTTLS:
            await self._starttls()
        if module.auth is not None and not self.authenticated:
            with self.step(Phase.AUTH):
                await self._auth()

    async def select(self) -> None:
        """SELECT (``mailbox_select``) or EXAMINE the module's mailbox; its message count."""
        module = self.module
        verb = "SELECT" if module.mailbox_select else "EXAMINE"
        with self.step(Phase.SELECT):
            done = await self.command(f"{verb} {mailbox_name(module.mailbox)}", Phase.SELECT)
            self.check(done, Phase.SELECT)
            exists = [r.number for r in done.untagged if r.keyword == "EXISTS"]
            if not exists or exists[-1] is None:
                raise ProtocolError(f"{verb} completed without an EXISTS count", Phase.SELECT)
            self.mailbox = MailboxInfo(module.mailbox, exists[-1])

    async def logout(self) -> None:
        """LOGOUT: the server says BYE, then completes the command."""
        with self.step(Phase.LOGOUT):
            self.logging_out = True
            done = await self.command("LOGOUT", Phase.LOGOUT)
            self.check(done, Phase.LOGOUT)
            if not any(r.keyword == "BYE" for r in done.untagged):
                raise ProtocolError("LOGOUT completed without a BYE", Phase.LOGOUT)
            self.logout_ok = True

    # --- phases ------------------------------------------------------------------------------
    async def _greeting(self) -> None:
        greeting = await self.read(Phase.GREETING)
        if greeting.kind is not Kind.UNTAGGED or greeting.keyword not in ("OK", "PREAUTH", "BYE"):
            raise ProtocolError(f"unexpected greeting {clean(str(greeting), 60)!r}")
        if greeting.keyword == "BYE":
            raise ProbeError(
                Phase.GREETING, FailureKind.REPLY, self.redact(response_text(greeting))
            )
        self.authenticated = greeting.keyword == "PREAUTH"
        if greeting.code is not None and greeting.code.upper().startswith("CAPABILITY "):
            self.capabilities = parse_capabilities(greeting.code[11:])

    async def capability(self, phase: Phase) -> tuple[str, ...]:
        """Ask for the capabilities (CAPABILITY) and return them."""
        self._seen_capabilities = None
        self.check(await self.command("CAPABILITY", phase), phase)
        if self._seen_capabilities is None:
            raise ProtocolError("CAPABILITY completed without listing any", phase)
        return self._seen_capabilities

    async def _starttls(self) -> None:
        if self.authenticated:
            # STARTTLS is valid only before authentication (RFC 9051 §6.2.1): a PREAUTH
            # greeting takes TLS off the table, which an attacker can use to strip it.
            if self.module.tls_required:
                raise ProbeError(
                    Phase.STARTTLS,
                    FailureKind.TLS_UNAVAILABLE,
                    "server pre-authenticated the connection in clear: STARTTLS impossible",
                )
            return
        if "STARTTLS" not in self.capabilities:
            if self.module.tls_required:
                raise ProbeError(
                    Phase.STARTTLS, FailureKind.TLS_UNAVAILABLE, "not offered by the server"
                )
            return
        with self.step(Phase.STARTTLS):
            self.check(await self.command("STARTTLS", Phase.STARTTLS), Phase.STARTTLS)
        with self.step(Phase.TLS_HANDSHAKE):
            await self._handshake()
        with self.step(Phase.CAPABILITY_TLS):
            # RFC 9051 §6.2.1: forget everything learnt before TLS.
            self.capabilities = ()
            self.capabilities = await self.capability(Phase.CAPABILITY_TLS)

    async def _handshake(self) -> None:
        assert self.conn is not None
        self.tls = await phases.handshake(self.conn, self.target)
        phases.verify(self.tls, self.target, self.note if self.wire is not None else None)

    async def _auth(self) -> None:
        auth = self.module.auth
        assert auth is not None
        phases.require_encryption(self.tls, auth)
        mechanism = choose(self.capabilities, auth.mechanisms)
        if mechanism is None:
            offered = " ".join(self.auth_mechanisms) or "none"
            disabled = "LOGINDISABLED, " if "LOGINDISABLED" in self.capabilities else ""
            raise ProbeError(
                Phase.AUTH,
                FailureKind.NOT_OFFERED,
                f"no usable login method ({disabled}AUTHENTICATE offers: {offered})",
            )
        self.auth = AuthInfo(attempted=True, mechanism=mechanism)
        username, password = auth.username, auth.password.reveal()
        self._seen_capabilities = None
        try:
            if mechanism == "LOGIN":
                done = await self.command_parts(
                    ["LOGIN", astring(username), astring(password)], Phase.AUTH
                )
            else:
                done = await self._authenticate(mechanism, username, password)
        except sasl.SASLError as exc:
            raise ProtocolError(f"{mechanism}: {exc}", Phase.AUTH) from exc
        self.check(done, Phase.AUTH)
        self.auth = AuthInfo(attempted=True, success=True, mechanism=mechanism)
        self.authenticated = True
        # Servers list more once logged in (UIDPLUS, say), often in the OK itself.
        self.after_login = self._seen_capabilities

    async def _authenticate(self, mechanism: str, username: str, password: str) -> Completion:
        """One SASL exchange over AUTHENTICATE (RFC 9051 §6.2.2), with SASL-IR (RFC 4959)
        when offered; returns the tagged completion."""
        a = Phase.AUTH
        if mechanism == "PLAIN":
            step = await self._sasl_start(mechanism, sasl.plain(username, password))
        elif mechanism == "XOAUTH2":
            step = await self._sasl_start(mechanism, sasl.xoauth2(username, password))
            if isinstance(step, Response):  # an error report in JSON; an empty line ends it
                step = await self._sasl_send("", a)
        elif mechanism == "CRAM-MD5":
            step = await self._sasl_start(mechanism, None)
            if isinstance(step, Response):
                data = challenge(step)
                step = await self._sasl_send(sasl.cram_md5(username, password, data), a)
        else:
            scram = sasl.ScramClient(mechanism, username, password)
            step = await self._sasl_start(mechanism, sasl.b64(scram.first()))
            if isinstance(step, Response):
                final = scram.final(challenge(step).decode("utf-8", "replace"))
                step = await self._sasl_send(sasl.b64(final), a)
                if isinstance(step, Completion):
                    # An OK here would skip the server's proof: accept no server without it.
                    if step.ok:
                        raise sasl.SASLError("server did not send its signature")
                    return step
                scram.verify(challenge(step).decode("utf-8", "replace"))
                step = await self._sasl_send("", a)
            elif step.ok:
                raise sasl.SASLError("server did not send its signature")
        if isinstance(step, Response):
            raise ProtocolError(f"{mechanism}: unexpected challenge from the server", a)
        return step

    async def _sasl_start(self, mechanism: str, initial: str | None) -> Response | Completion:
        """AUTHENTICATE, with the initial response on the line when SASL-IR allows it: the
        first challenge (a continuation ``Response``) or the completion."""
        tag = self._next_tag()
        self.reader.expect(tag, continuation=True)
        line = f"{tag} AUTHENTICATE {mechanism}"
        if initial is not None and "SASL-IR" in self.capabilities:
            self._send(f"{line} {initial or '='}", Phase.AUTH)
            return await self._until(Phase.AUTH, stop_at_continuation=True)
        self._send(line, Phase.AUTH)
        step = await self._until(Phase.AUTH, stop_at_continuation=True)
        if initial is None or not isinstance(step, Response):
            return step
        return await self._sasl_send(initial, Phase.AUTH)

    async def _sasl_send(self, line: str, phase: Phase) -> Response | Completion:
        self._send(line, phase)
        return await self._until(phase, stop_at_continuation=True)

    # --- commands ----------------------------------------------------------------------------
    async def command(self, line: str, phase: Phase) -> Completion:
        """Send one command (without its tag) and read up to its completion."""
        tag = self._next_tag()
        self.reader.expect(tag)
        self._send(f"{tag} {line}", phase)
        step = await self._until(phase)
        assert isinstance(step, Completion)
        return step

    async def command_parts(self, parts: Sequence[str | bytes], phase: Phase) -> Completion:
        """A command whose arguments may be literals (``bytes`` parts): non-synchronizing
        with LITERAL+ (or LITERAL- when small), else sent once the server says ``+``."""
        tag = self._next_tag()
        plus = "LITERAL+" in self.capabilities or "IMAP4REV2" in self.capabilities
        minus = "LITERAL-" in self.capabilities

        def waits(part: bytes) -> bool:
            return not plus and not (minus and len(part) <= LITERAL_MINUS_MAX)

        literals = [p for p in parts if isinstance(p, bytes)]
        self.reader.expect(tag, continuation=any(map(waits, literals)))
        line = tag
        for part in parts:
            if isinstance(part, str):
                line += " " + part
                continue
            waits_for_server = waits(part)
            self._send(f"{line} {{{len(part)}{'' if waits_for_server else '+'}}}", phase)
            if waits_for_server:
                step = await self._until(phase, stop_at_continuation=True)
                if isinstance(step, Completion):  # the server refused the literal
                    return step
            assert self.conn is not None
            if self.wire is not None:
                self.wire(f"C: ({len(part)} octets, not shown)")
            await self.conn.send_bytes(part, phase)
            line = ""
        self._send(line, phase)
        step = await self._until(phase)
        assert isinstance(step, Completion)
        return step

    async def read(self, phase: Phase) -> Response:
        assert self.conn is not None
        response = await self.conn.read(phase)
        if self.wire is not None:
            if phase is Phase.AUTH and response.kind is Kind.CONTINUATION:
                self.wire("S: + ***")  # a SASL challenge: salts, nonces, our data echoed
            else:
                self.wire("S: " + self.redact(str(response)))
        return response

    async def _until(
        self, phase: Phase, *, stop_at_continuation: bool = False
    ) -> Response | Completion:
        """Read responses up to the command's completion (or, when asked, a continuation
        request), handling untagged ones on the way. The reader has checked the tag."""
        untagged: list[Response] = []
        while True:
            item = await self.read(phase)
            if item.kind is Kind.TAGGED:
                return Completion(item, tuple(untagged))
            if item.kind is Kind.CONTINUATION:
                if stop_at_continuation:
                    return item
                raise ProtocolError("continuation request nobody asked for", phase)
            if item.keyword == "BYE" and not self.logging_out:
                raise ProbeError(phase, FailureKind.REPLY, self.redact(response_text(item)))
            if item.keyword == "CAPABILITY":
                self._seen_capabilities = parse_capabilities(item.data)
            untagged.append(item)

    def check(self, done: Completion, phase: Phase) -> None:
        """A tagged NO or BAD fails ``phase`` with the server's text; a capability list in
        an OK's response code is noted."""
        response = done.done
        if response.keyword != "OK":
            raise ProbeError(phase, FailureKind.REPLY, self.redact(response_text(response)))
        if response.code is not None and response.code.upper().startswith("CAPABILITY "):
            self._seen_capabilities = parse_capabilities(response.code[11:])

    @property
    def seen_capabilities(self) -> tuple[str, ...] | None:
        """The capabilities the last CAPABILITY response (or response code) listed."""
        return self._seen_capabilities

    def _next_tag(self) -> str:
        return f"A{next(self._tags)}"

    def _send(self, line: str, phase: Phase) -> None:
        assert self.conn is not None
        if self.wire is not None:
            self.wire("C: " + self.redact(masked_command(line, phase)))
        self.conn.send_line(line, phase)

    def note(self, text: str) -> None:
        """A line of the debug transcript that is not on the wire (addresses, TLS, timings)."""
        if self.wire is not None:
            self.wire("* " + self.redact(text))

    def redact(self, text: str) -> str:
        """Mask anything derived from our credentials that a server might echo back."""
        return phases.redact(text, self.secrets)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close(graceful=self.logout_ok)


# --- pure helpers ------------------------------------------------------------------------------
