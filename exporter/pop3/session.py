"""The POP3 health check as a state machine over one connection:

resolve -> connect -> [implicit TLS] -> greeting -> CAPA -> [STLS -> TLS -> CAPA] ->
[USER/PASS or AUTH -> STAT] -> QUIT

Each phase is timed. The first failure ends the session with a ``ProbeError`` naming the
phase; ``probe.run`` turns it into the result's ``Failure``. A ``-ERR`` is a ``reply``
failure carrying the server's text (control characters replaced, every form of the password
masked; the probe boundary clips it).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..config import Target, TLSMode
from ..errors import ProbeError, ProtocolError
from ..net import phases, sasl
from ..net.connection import Connection
from ..net.resolve import resolve
from ..results import AuthInfo, FailureKind, MailboxInfo, Phase, PhaseTiming, TLSInfo
from .reader import POP3Reader, Response, Status, clean

MAX_CAPABILITIES = 64
MAX_MECHANISMS = 32
# RFC 2449 §4: a command line is at most 255 octets; RFC 5034 §4: a longer initial
# response is sent after the server's empty challenge instead.
MAX_COMMAND = 255
# RFC 1939 §7: the APOP timestamp is a msg-id, "<process-ID.clock@hostname>".
_APOP_TIMESTAMP = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")
_NAME = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,63}")  # a CAPA tag or a SASL mechanism name
# What "LOGIN" means for POP3: the USER and PASS commands of RFC 1939, not SASL LOGIN.
USER_PASS = "LOGIN"


class POP3Session:
    """State of one POP3 probe run. Everything it learns stays readable after a failure, so
    the result can report the certificate of a server whose login then failed."""

    def __init__(self, target: Target, wire: Callable[[str], None] | None = None) -> None:
        self.target = target
        self.module = target.module
        self.phase = Phase.RESOLVE
        self.timings: list[PhaseTiming] = []
        self.wire = wire  # debug transcript sink; lines are masked and redacted first
        self.conn: Connection[Response] | None = None
        self.reader = POP3Reader()
        self.address: str | None = None
        self.tls: TLSInfo | None = None
        self.auth = AuthInfo()
        self.apop = False  # the greeting carried an APOP timestamp
        # The CAPA tags (upper case), None while unknown: before CAPA, or when the server
        # answers CAPA with -ERR (RFC 2449 makes CAPA optional).
        self.capabilities: tuple[str, ...] | None = None
        self.sasl_mechanisms: tuple[str, ...] = ()
        self.mailbox: MailboxInfo | None = None
        self.quit_ok = False
        self.secrets = _secret_forms(target)

    # --- the surface probe.run reads --------------------------------------------------
    @property
    def extensions(self) -> tuple[str, ...]:
        """The CAPA tags, with APOP when the greeting offered it (at most
        ``MAX_CAPABILITIES``)."""
        names = list(self.capabilities or ())
        if self.apop and "APOP" not in names:
            names.append("APOP")
        return tuple(names[:MAX_CAPABILITIES])

    @property
    def auth_mechanisms(self) -> tuple[str, ...]:
        """The SASL mechanisms the server offers (CAPA's SASL tag)."""
        return self.sasl_mechanisms

    def note(self, text: str) -> None:
        """A note in the transcript (phase ends, the TLS handshake)."""
        if self.wire is not None:
            self.wire("* " + text)

    def step(self, phase: Phase) -> phases.Step:
        """Enter ``phase``; its duration is recorded when the ``with`` block ends."""
        return phases.Step(self, phase)

    async def execute(self) -> None:
        """The whole health check."""
        target, module = self.target, self.module
        with self.step(Phase.RESOLVE):
            self.address = await resolve(target.host, target.port, module.ip_protocol)
        with self.step(Phase.CONNECT):
            self.conn = await Connection.open(self.address, target.port, self.reader)
        if module.tls is TLSMode.IMPLICIT:
            with self.step(Phase.TLS_HANDSHAKE):
                await self._handshake()
        with self.step(Phase.GREETING):
            greeting = self.expect_ok(await self.read(Phase.GREETING), Phase.GREETING)
            self.apop = _APOP_TIMESTAMP.search(greeting.text) is not None
        with self.step(Phase.CAPABILITY):
            await self._capa(Phase.CAPABILITY)
        if module.tls is TLSMode.STARTTLS:
            await self._stls()
        if module.auth is not None:
            with self.step(Phase.AUTH):
                await self._auth()
            with self.step(Phase.STAT):
                await self._stat()
        with self.step(Phase.QUIT):
            self.expect_ok(await self.command("QUIT", Phase.QUIT), Phase.QUIT)
            self.quit_ok = True

    # --- phases -----------------------------------------------------------------------
    async def _capa(self, phase: Phase) -> None:
        response = await self.command("CAPA", phase, multiline=True)
        if response.status is Status.ERR:
            return  # no CAPA (RFC 2449 §5): nothing known, USER/PASS still works
        self.expect_ok(response, phase)
        names: list[str] = []
        mechanisms: list[str] = []
        for line in response.lines:
            words = line.upper().split()
            if not words or not _NAME.fullmatch(words[0]) or words[0] in names:
                continue
            if len(names) < MAX_CAPABILITIES:
                names.append(words[0])
            if words[0] == "SASL":
                for word in words[1:]:
                    if _NAME.fullmatch(word) and word not in mechanisms:
                        mechanisms.append(word)
        self.capabilities = tuple(names)
        self.sasl_mechanisms = tuple(mechanisms[:MAX_MECHANISMS])

    async def _stls(self) -> None:
        # None: no CAPA, so nothing says whether STLS exists.
        offered = None if self.capabilities is None else "STLS" in self.capabilities
        if offered is False:
            if self.module.tls_required:
                raise ProbeError(
                    Phase.STARTTLS, FailureKind.TLS_UNAVAILABLE, "server does not advertise STLS"
                )
            return
        with self.step(Phase.STARTTLS):
            response = await self.command("STLS", Phase.STARTTLS)
            if response.status is Status.ERR and offered is None:
                # No CAPA to say whether STLS exists: its -ERR is the answer.
                if self.module.tls_required:
                    raise ProbeError(
                        Phase.STARTTLS,
                        FailureKind.TLS_UNAVAILABLE,
                        f"server refuses STLS: {self.redact(str(response))}",
                    )
                return
            self.expect_ok(response, Phase.STARTTLS)
        with self.step(Phase.TLS_HANDSHAKE):
            await self._handshake()
        with self.step(Phase.CAPABILITY_TLS):
            # RFC 2595 §4: forget the capabilities learnt before TLS.
            self.capabilities = None
            self.sasl_mechanisms = ()
            await self._capa(Phase.CAPABILITY_TLS)

    async def _handshake(self) -> None:
        assert self.conn is not None
        self.tls = await phases.handshake(self.conn, self.target)
        phases.verify(self.tls, self.target, self.note if self.wire is not None else None)

    def _choose(self) -> str:
        """The first configured mechanism the server offers and we speak (``auto``:
        AUTH PLAIN, else USER/PASS; ``LOGIN`` is USER/PASS). Without CAPA nothing is
        offered for sure: ``auto`` means USER/PASS, a mechanism the module names is tried."""
        auth = self.module.auth
        assert auth is not None
        if self.capabilities is None:
            named = (m for m in auth.mechanisms if m != "auto")
            offered = (*named, USER_PASS)
        else:
            offered = tuple(m for m in self.sasl_mechanisms if m != USER_PASS)
            if "USER" in self.capabilities:
                offered += (USER_PASS,)
        mechanism = sasl.choose(offered, auth.mechanisms)
        if mechanism is None:
            shown = " ".join(m for m in offered if m != USER_PASS) or "none"
            user = "" if USER_PASS in offered else "; no USER"
            raise ProbeError(
                Phase.AUTH,
                FailureKind.NOT_OFFERED,
                f"no usable login (SASL offered: {shown}{user})",
            )
        return mechanism

    async def _auth(self) -> None:
        auth = self.module.auth
        assert auth is not None
        phases.require_encryption(self.tls, auth)
        mechanism = self._choose()
        self.auth = AuthInfo(attempted=True, mechanism=mechanism)
        password = auth.password.reveal()
        try:
            if mechanism == USER_PASS:
                response = await self._user_pass(auth.username, password)
            else:
                response = await self._sasl(mechanism, auth.username, password)
        except sasl.SASLError as exc:
            raise ProtocolError(f"{mechanism}: {exc}", Phase.AUTH) from exc
        self.expect_ok(response, Phase.AUTH)
        self.auth = AuthInfo(attempted=True, success=True, mechanism=mechanism)

    async def _user_pass(self, username: str, password: str) -> Response:
        if any(c in username + password for c in "\r\n\0"):
            raise ProbeError(
                Phase.AUTH,
                FailureKind.NOT_OFFERED,
                "USER/PASS cannot carry a line break or NUL in the username or password",
            )
        self.expect_ok(await self.command(f"USER {username}", Phase.AUTH), Phase.AUTH)
        return await self.command(f"PASS {password}", Phase.AUTH)

    async def _sasl(self, mechanism: str, username: str, password: str) -> Response:
        """One RFC 5034 exchange; the server's last response (+OK on success)."""
        if mechanism == "PLAIN":
            return await self._start(mechanism, sasl.plain(username, password))
        if mechanism == "CRAM-MD5":
            challenge = self._challenge(await self._start(mechanism, None))
            answer = sasl.cram_md5(username, password, sasl.unb64(challenge.text))
            return await self.command(answer, Phase.AUTH)
        if mechanism == "XOAUTH2":
            response = await self._start(mechanism, sasl.xoauth2(username, password))
            if response.status is Status.CONTINUE:  # an error report; an empty line ends it
                response = await self.command("", Phase.AUTH)
            return response
        scram = sasl.ScramClient(mechanism, username, password)
        server_first = self._challenge(await self._start(mechanism, sasl.b64(scram.first())))
        final = scram.final(sasl.unb64(server_first.text).decode("utf-8", "replace"))
        response = await self.command(sasl.b64(final), Phase.AUTH)
        if response.status is not Status.CONTINUE:
            # +OK here would skip the server's proof: accept no server that cannot give it.
            if response.ok:
                raise sasl.SASLError("server did not send its signature")
            return response
        scram.verify(sasl.unb64(response.text).decode("utf-8", "replace"))
        return await self.command("", Phase.AUTH)

    async def _start(self, mechanism: str, initial: str | None) -> Response:
        """AUTH with its initial response on the command line if it fits (``=`` for an
        empty one), else after the server's empty challenge (RFC 5034 §4)."""
        if initial is not None:
            line = f"AUTH {mechanism} {initial or '='}"
            if len(line) + 2 <= MAX_COMMAND:
                return await self.command(line, Phase.AUTH)
        response = await self.command(f"AUTH {mechanism}", Phase.AUTH)
        if initial is None or response.status is not Status.CONTINUE:
            return response
        return await self.command(initial, Phase.AUTH)

    def _challenge(self, response: Response) -> Response:
        """A response that must be a SASL challenge: ``-ERR`` is the server's refusal."""
        if response.status is Status.CONTINUE:
            return response
        self.expect_ok(response, Phase.AUTH)  # -ERR: the server's words
        raise ProtocolError("+OK before the SASL exchange was over", Phase.AUTH)

    async def _stat(self) -> None:
        response = self.expect_ok(await self.command("STAT", Phase.STAT), Phase.STAT)
        words = response.text.split()
        if len(words) < 2 or not all(w.isdecimal() and len(w) <= 20 for w in words[:2]):
            raise ProtocolError(f"malformed STAT response {response.text[:40]!r}", Phase.STAT)
        self.mailbox = MailboxInfo(name="", messages=int(words[0]), size_bytes=int(words[1]))

    # --- helpers ----------------------------------------------------------------------
    async def command(self, line: str, phase: Phase, *, multiline: bool = False) -> Response:
        """Send one command; its response. The reader learns what to expect first, so
        the response cannot arrive before it knows."""
        assert self.conn is not None
        self.reader.expect(multiline)
        if self.wire is not None:
            self.wire("C: " + self.redact(_masked(line, phase)))
        self.conn.send_line(line, phase)
        return await self.read(phase)

    async def read(self, phase: Phase) -> Response:
        assert self.conn is not None
        item = await self.conn.read(phase)
        assert isinstance(item, Response)
        if self.wire is not None:
            # A SASL challenge is as secret as the answer to it: its status only.
            shown = "+ ***" if item.status is Status.CONTINUE else str(item)
            self.wire("S: " + self.redact(shown))
            for line in item.lines:
                self.wire("S: " + self.redact(line))
        return item

    def expect_ok(self, response: Response, phase: Phase) -> Response:
        """``response`` if it is +OK; else the phase's failure with the server's text."""
        if response.ok:
            return response
        if response.status is Status.CONTINUE:
            raise ProtocolError("unexpected SASL continuation", phase)
        raise ProbeError(phase, FailureKind.REPLY, self.redact(str(response)))

    def redact(self, text: str) -> str:
        """Mask anything derived from our credentials that a server might echo back."""
        return phases.redact(text, self.secrets)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close(graceful=self.quit_ok)


def _secret_forms(target: Target) -> tuple[str, ...]:
    """Every form of the password a server could echo: as is, in base64, inside the PLAIN
    and XOAUTH2 responses, and as the reader would show each (control characters replaced).
    Every non-empty form is masked, however short: a leak matters more than legibility."""
    auth = target.module.auth
    if auth is None:
        return ()
    password = auth.password.reveal()
    if not password:
        return ()
    forms = {
        password,
        sasl.b64(password),
        sasl.b64(password).rstrip("="),
        sasl.plain(auth.username, password),
        sasl.xoauth2(auth.username, password),
    }
    forms |= {clean(f.encode("utf-8")) for f in forms}
    # Longest first, so a base64 form is masked whole rather than around an inner match.
    return tuple(sorted((f for f in forms if f), key=len, reverse=True))


def _masked(line: str, phase: Phase) -> str:
    """``line`` as the transcript shows it: in the login, the command (USER with its name,
    AUTH with its mechanism) but never a password, SASL payload or proof."""
    if phase is not Phase.AUTH:
        return line
    words = line.split(" ")
    verb = words[0].upper()
    if verb == "USER":
        return line
    if verb == "PASS":
        return "PASS ***"
    if verb == "AUTH" and len(words) >= 2:
        return " ".join(words[:2]) + (" ***" if len(words) > 2 else "")
    return "***" if line else ""
