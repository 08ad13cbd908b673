"""The SMTP health check as a state machine over one connection:

resolve -> connect -> [implicit TLS] -> greeting -> EHLO -> [STARTTLS -> TLS -> EHLO] ->
[AUTH] -> NOOP -> QUIT

Each phase is timed. The first failure ends the session with a ``ProbeError`` naming the
phase; ``probe.run`` turns it into the result's ``Failure``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..config import Target, TLSMode
from ..deadline import Deadline
from ..errors import ProbeError, ProtocolError, ReplyError
from ..net import phases, sasl
from ..results import AuthInfo, FailureKind, Phase, PhaseTiming, Posture, TLSInfo
from . import tlsscan
from .esmtp import NO_EXTENSIONS, Extensions, parse_ehlo
from .reply import Reply
from .transport import Connection, resolve


class Session:
    """State of one probe run. Everything it learns stays readable after a failure, so the
    result can report the certificate of a server whose AUTH then failed."""

    def __init__(self, target: Target, wire: Callable[[str], None] | None = None) -> None:
        self.target = target
        self.wire = wire  # debug transcript sink; lines are redacted before it sees them
        self.module = target.module
        self.phase = Phase.RESOLVE
        self.timings: list[PhaseTiming] = []
        self.conn: Connection | None = None
        self.address: str | None = None
        self.greeting_host: str | None = None
        self.extensions: Extensions = NO_EXTENSIONS
        self.used_helo = False
        self.tls: TLSInfo | None = None
        self.auth = AuthInfo()
        self.last_code: int | None = None
        self.quit_ok = False
        self.posture = Posture()
        self.secrets = _secret_forms(target)

    def step(self, phase: Phase) -> phases.Step:
        """Enter ``phase``; its duration is recorded when the ``with`` block ends, by an
        exception or not."""
        return phases.Step(self, phase)

    async def execute(self) -> None:
        """The whole health check."""
        await self.establish()
        with self.step(Phase.NOOP):
            self.expect(await self.command("NOOP", Phase.NOOP), 250, Phase.NOOP)
        await self.quit()

    async def establish(self) -> None:
        """Everything up to a session ready for mail: connect, greeting, EHLO, TLS, AUTH.
        Shared with the send library, which goes on with MAIL FROM instead of NOOP."""
        target, module = self.target, self.module
        with self.step(Phase.RESOLVE):
            self.address = await resolve(target.host, target.port, module.ip_protocol)
            if self.wire is not None:
                self.note(f"resolved {target.host} to {self.address}")
        with self.step(Phase.CONNECT):
            self.conn = await Connection.open(self.address, target.port)
            if self.wire is not None:
                self.note(f"connected to {self.address} port {target.port}")
        if module.tls is TLSMode.IMPLICIT:
            with self.step(Phase.TLS_HANDSHAKE):
                await self._handshake()
        with self.step(Phase.GREETING):
            self.expect(await self.read(Phase.GREETING), 220, Phase.GREETING, greeting=True)
        with self.step(Phase.EHLO):
            self.extensions = await self._ehlo(Phase.EHLO)
        if module.tls is TLSMode.STARTTLS:
            await self._starttls()
        if module.posture.relay_from and module.posture.relay_to:
            await self._relay_test(module.posture.relay_from, module.posture.relay_to)
        if module.auth is not None:
            with self.step(Phase.AUTH):
                await self._auth()

    async def quit(self) -> None:
        with self.step(Phase.QUIT):
            self.expect(await self.command("QUIT", Phase.QUIT), 221, Phase.QUIT)
            self.quit_ok = True

    # --- phases -----------------------------------------------------------------------
    async def _ehlo(self, phase: Phase) -> Extensions:
        name = self.module.ehlo_name
        reply = await self.command(f"EHLO {name}", phase)
        if reply.code == 250:
            return parse_ehlo(reply)
        # RFC 5321 §3.2: fall back to HELO only when EHLO itself is not understood.
        if reply.code not in (500, 502):
            self.expect(reply, 250, phase)
        self.expect(await self.command(f"HELO {name}", phase), 250, phase)
        self.used_helo = True
        return NO_EXTENSIONS

    async def _auth_before_tls(self) -> None:
        """Does the server take credentials before TLS? Ask with AUTH LOGIN and, if it says
        334, cancel at once with "*" (RFC 4954 4): no credential is ever sent in clear."""
        advertised = self.extensions.has("AUTH")
        reply = await self.command("AUTH LOGIN", Phase.STARTTLS)
        accepted = reply.code == 334
        if accepted:
            await self.command("*", Phase.STARTTLS)  # 501 expected; any answer will do
        self.posture = replace(
            self.posture, auth_advertised_before_tls=advertised, auth_accepted_before_tls=accepted
        )

    async def _relay_test(self, sender: str, recipient: str) -> None:
        """Unauthenticated MAIL FROM and RCPT TO an outside domain, then RSET: never DATA,
        so nothing is ever sent. 2xx to RCPT means the server relays for anyone."""
        with self.step(Phase.MAIL):
            mail = await self.command(f"MAIL FROM:<{sender}>", Phase.MAIL)
        if mail.code // 100 != 2:
            self.posture = replace(self.posture, relay_code=mail.code)
            return
        with self.step(Phase.RCPT):
            rcpt = await self.command(f"RCPT TO:<{recipient}>", Phase.RCPT)
            accepted = rcpt.code // 100 == 2
            self.posture = replace(self.posture, relay_accepted=accepted, relay_code=rcpt.code)
            await self.command("RSET", Phase.RCPT)

    async def tls_scan(self, deadline: Deadline) -> None:
        """posture.tls_scan, after the health check: new connections, one per TLS version,
        by the same deadline. Findings never fail a protocol phase: with fail_on_findings
        the probe boundary fails the probe in phase ``posture`` once everything has run."""
        scan = await tlsscan.scan(self.target, deadline)
        self.posture = replace(self.posture, tls_scan=scan)

    async def _starttls(self) -> None:
        if self.module.posture.auth_before_tls:
            await self._auth_before_tls()
        if not self.extensions.has("STARTTLS"):
            if self.module.tls_required:
                raise ProbeError(
                    Phase.STARTTLS,
                    FailureKind.TLS_UNAVAILABLE,
                    "server does not advertise STARTTLS",
                )
            return
        with self.step(Phase.STARTTLS):
            self.expect(await self.command("STARTTLS", Phase.STARTTLS), 220, Phase.STARTTLS)
        with self.step(Phase.TLS_HANDSHAKE):
            await self._handshake()
        with self.step(Phase.EHLO_TLS):
            # RFC 3207 §4.2: forget everything learnt before TLS.
            self.extensions = NO_EXTENSIONS
            self.extensions = await self._ehlo(Phase.EHLO_TLS)

    async def _handshake(self) -> None:
        assert self.conn is not None
        self.tls = await phases.handshake(self.conn, self.target)
        phases.verify(self.tls, self.target, self.note if self.wire is not None else None)

    async def _auth(self) -> None:
        auth = self.module.auth
        assert auth is not None
        phases.require_encryption(self.tls, auth)
        if not self.extensions.has("AUTH"):
            raise ProbeError(Phase.AUTH, FailureKind.NOT_OFFERED, "server advertises no AUTH")
        mechanism = sasl.choose(self.extensions.auth_mechanisms, auth.mechanisms)
        if mechanism is None:
            offered = " ".join(self.extensions.auth_mechanisms) or "none"
            raise ProbeError(
                Phase.AUTH,
                FailureKind.NOT_OFFERED,
                f"no usable AUTH mechanism (offered: {offered})",
            )
        self.auth = AuthInfo(attempted=True, mechanism=mechanism)
        try:
            reply = await self._sasl(mechanism, auth.username, auth.password.reveal())
        except sasl.SASLError as exc:
            raise ProtocolError(f"{mechanism}: {exc}", Phase.AUTH) from exc
        self.expect(reply, 235, Phase.AUTH)
        self.auth = AuthInfo(attempted=True, success=True, mechanism=mechanism)

    async def _sasl(self, mechanism: str, username: str, password: str) -> Reply:
        """Run one SASL exchange; return the server's last reply (235 on success)."""
        a = Phase.AUTH
        if mechanism == "PLAIN":
            reply = await self.command(f"AUTH PLAIN {sasl.plain(username, password)}", a)
            if reply.code == 334:  # a server that ignores the initial response asks again
                reply = await self.command(sasl.plain(username, password), a)
            return reply
        if mechanism == "LOGIN":
            self.expect(await self.command("AUTH LOGIN", a), 334, a)
            self.expect(await self.command(sasl.b64(username), a), 334, a)
            return await self.command(sasl.b64(password), a)
        if mechanism == "CRAM-MD5":
            challenge = await self.command("AUTH CRAM-MD5", a)
            self.expect(challenge, 334, a)
            return await self.command(sasl.cram_md5(username, password, _data(challenge)), a)
        if mechanism == "XOAUTH2":
            reply = await self.command(f"AUTH XOAUTH2 {sasl.xoauth2(username, password)}", a)
            if reply.code == 334:  # an error report in JSON; an empty line ends the exchange
                reply = await self.command("", a)
            return reply
        scram = sasl.ScramClient(mechanism, username, password)
        server_first = await self.command(f"AUTH {mechanism} {sasl.b64(scram.first())}", a)
        self.expect(server_first, 334, a)
        final = scram.final(_data(server_first).decode("utf-8", "replace"))
        reply = await self.command(sasl.b64(final), a)
        if reply.code != 334:
            # A 235 here would skip the server's proof: accept no server that cannot give it.
            if reply.code == 235:
                raise sasl.SASLError("server did not send its signature")
            return reply
        scram.verify(_data(reply).decode("utf-8", "replace"))
        return await self.command("", a)

    # --- helpers ----------------------------------------------------------------------
    async def command(self, line: str, phase: Phase) -> Reply:
        assert self.conn is not None
        if self.wire is not None:
            self.wire("C: " + self.redact(_masked_command(line, phase)))
        self.conn.send(line, phase)
        return await self.read(phase)

    async def read(self, phase: Phase) -> Reply:
        assert self.conn is not None
        reply = await self.conn.read_reply(phase)
        self.last_code = reply.code
        if self.wire is not None:
            # Line by line, as sent: a multiline EHLO reply is one line per extension.
            last = len(reply.lines) - 1
            for i, text in enumerate(reply.lines or ("",)):
                if phase is Phase.AUTH and reply.code == 334:
                    text = "***"  # a SASL challenge: salts, nonces, or our own data echoed
                sep = "-" if i < last else " "
                self.wire(f"S: {reply.code}{sep}{self.redact(text)}".rstrip())
        return reply

    def note(self, text: str) -> None:
        """A line of the debug transcript that is not on the wire (addresses, TLS, timings)."""
        if self.wire is not None:
            self.wire("* " + self.redact(text))

    def expect(self, reply: Reply, code: int, phase: Phase, *, greeting: bool = False) -> None:
        if greeting and reply.lines:
            words = reply.lines[0].split()
            self.greeting_host = words[0][:255] if words else None
        if reply.code != code:
            raise ReplyError(phase, reply.code, reply.enhanced, self.redact(str(reply)))

    def redact(self, text: str) -> str:
        """Mask anything derived from our credentials that a server might echo back."""
        return phases.redact(text, self.secrets)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close(graceful=self.quit_ok)


def _masked_command(line: str, phase: Phase) -> str:
    """``line`` as the transcript shows it: in AUTH, the mechanism but never a payload
    (credentials, or a proof derived from them), whatever the mechanism."""
    if phase is not Phase.AUTH:
        return line
    words = line.split(" ", 2)
    if words[0].upper() == "AUTH":
        return " ".join(words[:2]) + (" ***" if len(words) > 2 else "")
    return "***" if line else ""


def _data(reply: Reply) -> bytes:
    """The base64 payload of a 334 challenge."""
    return sasl.unb64(reply.lines[0] if reply.lines else "")


def _secret_forms(target: Target) -> tuple[str, ...]:
    auth = target.module.auth
    if auth is None:
        return ()
    password = auth.password.reveal()
    forms = {
        password,
        sasl.b64(password),
        sasl.plain(auth.username, password),
        sasl.xoauth2(auth.username, password),
    }
    # Longest first, so a base64 form is masked whole rather than around an inner match.
    return tuple(sorted((f for f in forms if len(f) >= 3), key=len, reverse=True))
