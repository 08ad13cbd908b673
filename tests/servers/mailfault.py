"""Deliberately hostile IMAP and POP3 servers for testing the mailbox probes.

``IMAPFault`` and ``POP3Fault`` run a raw asyncio server on 127.0.0.1 in a thread of its
own (like ``fault.FaultServer`` for SMTP) and misbehave in one chosen way, named in
``IMAP_BEHAVIOURS`` / ``POP3_BEHAVIOURS``. Outside the fault they speak just enough
ordinary IMAP4rev1 (CAPABILITY, STARTTLS, LOGIN, AUTHENTICATE PLAIN, SELECT/EXAMINE,
NOOP, LOGOUT) or POP3 (CAPA, STLS, USER/PASS, AUTH PLAIN, STAT, QUIT) for a client to
reach the phase under test; any credentials are accepted.

Every behaviour is a ``Behaviour``: what the server does, and what a correct probe must
report against it (the phase and the failure kinds, as the string values of
``exporter.results.Phase`` / ``FailureKind``; the server does not import the exporter),
for the TLS mode the expectation holds in (``Behaviour.tls``, the mode both the server
and the probe's module use). ``bounded`` marks behaviours a correct probe ends by one of
its memory bounds, long before its deadline, rather than by the deadline.

TLS (``tls="starttls"`` or ``"implicit"``) needs a server ``ssl_context``;
``FaultCerts.make(directory)`` makes one with the mail stack's test CA
(tests/servers/mailstack/certs.py).

The servers are test equipment, not the thing under test, so they protect themselves:
client lines are capped at ``LINE_LIMIT`` bytes, only the last ``RECEIVED_MAX`` are kept,
every endless behaviour waits for the socket to drain and yields to the event loop, and
``stop()`` aborts every connection and cancels every task.

Typical use::

    with IMAPFault("endless_untagged", tls="starttls", ssl_context=ctx) as server:
        result = asyncio.run(probe.run(target_for(server.port)))
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import random
import re
import socket
import ssl
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NoReturn, Self

from .lifecycle import LoopThread
from .mailstack.certs import make_certs

LINE_LIMIT = 8192
RECEIVED_MAX = 200
ERRORS_MAX = 50
CHUNK_SIZE = 64 * 1024
DRIP_INTERVAL = 1.0
HANDSHAKE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 1.0
START_TIMEOUT = 5.0

# What a healthy mailbox holds, so a probe's counts can be checked.
MESSAGES = 3
MAILBOX_SIZE = 4500

# Bytes no server text should carry into a report: NUL, ESC (an ANSI colour sequence),
# DEL, a bare CR and invalid UTF-8.
CONTROL_JUNK = b"\x00\x1b[31mred\x7f\rcr\xff\xfe\xc3\x28"
HUGE_LITERAL = 16 * 1024 * 1024  # announced and really sent by huge_literal
FLOOD_LITERAL = 60 * 1024  # under a 64 KiB literal cap: only a per-command cap stops these
HUGE_LINE = 1024 * 1024
ENDLESS_CAPABILITY_NAMES = 400
LATE_FLOOD_DELAY = 1.8
LATE_FLOOD_INTERVAL = 0.1
BATCH = 256  # short lines sent per write by the endless behaviours
TLS_VALUES = (None, "starttls", "implicit")

_EXPECTED_ERRORS = (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError)

CLOSED = ("connection_closed", "network")  # FIN or RST: which one a client sees is a race


@dataclass(frozen=True)
class Behaviour:
    """One fault, and what a correct probe reports against it."""

    doc: str
    phase: str | None  # the failed phase a correct probe reports; None: the probe succeeds
    kinds: tuple[str, ...] = ()  # acceptable failure kinds
    tls: str | None = "starttls"  # the TLS mode (server and probe) the expectation is for
    bounded: bool = False  # ended by a bound of the probe, well before its deadline
    # SASL (IMAP AUTH=PLAIN / POP3 SASL PLAIN) offered: an auto probe uses it, else
    # IMAP LOGIN / POP3 USER+PASS.
    sasl: bool = True


def _b(doc: str, phase: str | None, *kinds: str, **kw: object) -> Behaviour:
    return Behaviour(doc, phase, tuple(kinds), **kw)  # type: ignore[arg-type]


IMAP_BEHAVIOURS: dict[str, Behaviour] = {
    # Baselines: the probe passes when nothing is wrong.
    "normal": _b("Ordinary IMAP, STARTTLS then AUTHENTICATE PLAIN; INBOX holds 3.", None),
    "normal_implicit": _b("Ordinary IMAP over implicit TLS.", None, tls="implicit"),
    "normal_login": _b("Ordinary IMAP, no AUTH=PLAIN: the probe uses LOGIN.", None, sasl=False),
    "preauth": _b(
        "Over implicit TLS, a '* PREAUTH' greeting: already logged in, so LOGIN and "
        "AUTHENTICATE get BAD; a probe goes straight to EXAMINE and passes.",
        None,
        tls="implicit",
    ),
    "lowercase": _b(
        "Valid but unusual: status words, keywords and tags' replies in lower case "
        "('* ok', 'a1 ok', '* 3 exists'), as IMAP allows; the probe passes.",
        None,
    ),
    # Greeting.
    "tarpit": _b("Accept, never send a byte or close.", "greeting", "timeout"),
    "drip_greeting": _b("The greeting, one byte per second.", "greeting", "timeout"),
    "bye_greeting": _b("Greeting '* BYE Too many connections', then FIN.", "greeting", "reply"),
    "endless_line": _b(
        "Greeting '* OK ' then 'A' forever at socket speed, never a CRLF.",
        "greeting",
        "protocol",
        bounded=True,
    ),
    "rst_after_greeting": _b(
        "Valid greeting; the first command gets a TCP RST.", "capability", *CLOSED
    ),
    # CAPABILITY.
    "capability_bad": _b("CAPABILITY gets 'BAD Command unknown'.", "capability", "reply"),
    "endless_capability": _b(
        "CAPABILITY gets '* CAPABILITY' lines of 400 names (5 KB) each, forever.",
        "capability",
        "protocol",
        bounded=True,
    ),
    "wrong_tag": _b(
        "CAPABILITY is answered with a tagged OK for a tag never sent, then silence.",
        "capability",
        "protocol",
    ),
    "continuation_out_of_place": _b(
        "CAPABILITY gets a '+ go ahead' continuation request, then silence.",
        "capability",
        "protocol",
    ),
    # STARTTLS.
    "starttls_not_offered": _b(
        "CAPABILITY never lists STARTTLS; STARTTLS gets BAD.", "starttls", "tls_unavailable"
    ),
    "starttls_refused": _b(
        "STARTTLS advertised, then answered 'NO [UNAVAILABLE] TLS not available'.",
        "starttls",
        "reply",
    ),
    "starttls_injection": _b(
        "STARTTLS gets its OK and '* OK injected' in one write, then TLS.",
        "tls_handshake",
        "protocol",
        bounded=True,
    ),
    "starttls_stall": _b(
        "STARTTLS gets its OK, then the server neither reads nor sends anything.",
        "tls_handshake",
        "timeout",
    ),
    "tls_then_tarpit": _b(
        "STARTTLS and its handshake succeed, then the server never answers again.",
        "capability_tls",
        "timeout",
    ),
    "implicit_plaintext": _b(
        "On the implicit-TLS port, a plaintext '* OK' greeting instead of TLS; open after.",
        "tls_handshake",
        "tls",
        "protocol",
        tls="implicit",
        bounded=True,
    ),
    # Authentication.
    "logindisabled": _b(
        "Over implicit TLS, CAPABILITY says LOGINDISABLED and offers no AUTH=.",
        "auth",
        "not_offered",
        tls="implicit",
        bounded=True,
    ),
    "login_no": _b(
        "LOGIN and AUTHENTICATE get 'NO [AUTHENTICATIONFAILED] Authentication failed.'",
        "auth",
        "reply",
    ),
    "login_echo": _b(
        "LOGIN / AUTHENTICATE get NO echoing the credentials: raw, base64 and decoded.",
        "auth",
        "reply",
    ),
    "login_echo_login": _b(
        "As login_echo, with no AUTH=PLAIN offered, so the probe sends LOGIN.",
        "auth",
        "reply",
        sasl=False,
    ),
    "authenticate_loop": _b(
        "AUTHENTICATE gets a fresh '+ <base64>' continuation for every line, forever.",
        "auth",
        "protocol",
        "reply",
    ),
    "control_bytes": _b(
        "Greeting, CAPABILITY and the final NO to authentication carry NUL, ESC, DEL, bare "
        "CR and invalid UTF-8 in their text.",
        "auth",
        "reply",
    ),
    # SELECT / EXAMINE.
    "credential_replay": _b(
        "Remembers the password of each login; later connections list it (and 'X-' plus "
        "it) among the capabilities, in the greeting's [CAPABILITY] code and in CAPABILITY "
        "before and after TLS. Logins succeed: the probe passes, and must show no form of "
        "the password (capability names are upper-cased) anywhere in its result.",
        None,
    ),
    "bye_at_select": _b(
        "SELECT / EXAMINE get '* BYE Server shutting down', then FIN: the BYE is the reason.",
        "select",
        "reply",
    ),
    "select_no": _b(
        "SELECT / EXAMINE get 'NO [NONEXISTENT] Mailbox doesn't exist'.", "select", "reply"
    ),
    "endless_untagged": _b(
        "SELECT / EXAMINE get short '* OK [ALERT]' lines forever, never the tagged reply.",
        "select",
        "protocol",
        bounded=True,
    ),
    "late_flood": _b(
        "SELECT / EXAMINE get one '* OK [ALERT]' line every 0.1 s for 1.8 s (just short of "
        "a 2 s deadline), then endless_untagged's flood: the deadline must hold while the "
        "probe is busy with the flood (the bound may win the race).",
        "select",
        "timeout",
        "protocol",
    ),
    "literal_4g": _b(
        "SELECT / EXAMINE get '* 1 FETCH (BODY[] {4294967295}', a few bytes, then silence.",
        "select",
        "protocol",
        bounded=True,
    ),
    "huge_literal": _b(
        "SELECT / EXAMINE get a FETCH with a 16 MiB literal, announced and really sent.",
        "select",
        "protocol",
        bounded=True,
    ),
    "literal_flood": _b(
        "SELECT / EXAMINE get FETCH responses with 60 KiB literals, forever.",
        "select",
        "protocol",
        bounded=True,
    ),
    "close_mid_literal": _b(
        "SELECT / EXAMINE get a FETCH announcing a 100-byte literal; 10 bytes, then FIN.",
        "select",
        *CLOSED,
    ),
    # NOOP and LOGOUT.
    "noop_bad": _b("NOOP gets 'BAD no'.", "noop", "reply"),
    "logout_silent": _b(
        "LOGOUT is never answered and the connection stays open.", "logout", "timeout"
    ),
}

POP3_BEHAVIOURS: dict[str, Behaviour] = {
    # Baselines.
    "normal": _b("Ordinary POP3, STLS then AUTH PLAIN; 3 messages, 4500 bytes.", None),
    "normal_implicit": _b("Ordinary POP3 over implicit TLS.", None, tls="implicit"),
    "normal_user": _b(
        "Ordinary POP3, no SASL in CAPA: the probe uses USER/PASS.", None, sasl=False
    ),
    # Greeting.
    "silent": _b("Accept, never send a byte or close.", "greeting", "timeout"),
    "drip_greeting": _b("The greeting, one byte per second.", "greeting", "timeout"),
    "err_greeting": _b("Greeting '-ERR [SYS/TEMP] too busy', then FIN.", "greeting", "reply"),
    "endless_line": _b(
        "Greeting '+OK ' then 'A' forever at socket speed, never a CRLF.",
        "greeting",
        "protocol",
        bounded=True,
    ),
    "rst_after_greeting": _b(
        "Valid greeting; the first command gets a TCP RST.", "capability", *CLOSED
    ),
    # CAPA.
    "capa_no_dot": _b(
        "CAPA's multi-line answer never gets its terminating '.'; silence after.",
        "capability",
        "timeout",
    ),
    "capa_endless": _b(
        "CAPA's multi-line answer grows forever: 'X-CAP-<n>' lines at socket speed.",
        "capability",
        "protocol",
        bounded=True,
    ),
    "capa_endless_line": _b(
        "CAPA's multi-line answer: '+OK', 'USER', then one capability line that never ends "
        "('X' at socket speed, no CRLF).",
        "capability",
        "protocol",
        bounded=True,
    ),
    "huge_line": _b(
        "CAPA gets '+OK ' plus 1 MiB of 'A' and a CRLF.",
        "capability",
        "protocol",
        bounded=True,
    ),
    "close_mid_response": _b(
        "CAPA gets '+OK', 'USER', 'ST' and a FIN in the middle of the list.",
        "capability",
        *CLOSED,
    ),
    # STLS.
    "stls_not_offered": _b("CAPA never lists STLS; STLS gets -ERR.", "starttls", "tls_unavailable"),
    "stls_refused": _b(
        "STLS advertised, then answered '-ERR TLS not available now'.", "starttls", "reply"
    ),
    "stls_injection": _b(
        "STLS gets '+OK Begin TLS' and '+OK injected' in one write, then TLS.",
        "tls_handshake",
        "protocol",
        bounded=True,
    ),
    "stls_stall": _b(
        "STLS gets its +OK, then the server neither reads nor sends anything.",
        "tls_handshake",
        "timeout",
    ),
    "tls_then_tarpit": _b(
        "STLS and its handshake succeed, then the server never answers again.",
        "capability_tls",
        "timeout",
    ),
    "implicit_plaintext": _b(
        "On the implicit-TLS port, a plaintext '+OK' greeting instead of TLS; open after.",
        "tls_handshake",
        "tls",
        "protocol",
        tls="implicit",
        bounded=True,
    ),
    # Authentication.
    "credential_replay": _b(
        "Remembers the password of each login; later connections list it as a CAPA line "
        "('X-' plus it) and as a SASL mechanism. Logins succeed: the probe passes, and must "
        "show no form of the password anywhere in its result.",
        None,
    ),
    "err_user": _b("USER gets '-ERR [AUTH] no such user'.", "auth", "reply", sasl=False),
    "err_pass_echo": _b(
        "PASS gets '-ERR [AUTH] bad password' followed by the password it was sent.",
        "auth",
        "reply",
        sasl=False,
    ),
    "err_auth_echo": _b(
        "AUTH PLAIN gets -ERR echoing the client's base64 response, raw and decoded.",
        "auth",
        "reply",
    ),
    "auth_continuation_loop": _b(
        "AUTH gets a fresh '+ <base64>' continuation for every line, forever.",
        "auth",
        "protocol",
        "reply",
    ),
    # STAT.
    "err_stat": _b(
        "STAT gets '-ERR [IN-USE] mailbox locked' with NUL, ESC and bad UTF-8 in the text.",
        "stat",
        "reply",
    ),
    "stat_garbage": _b("STAT gets '+OK lots of mail'.", "stat", "protocol"),
    "stat_unicode_digits": _b(
        "STAT gets '+OK \u00b2 \u0664\u0665' (superscript two, Arabic-Indic digits): "
        "digits to str.isdigit(), not to POP3 or int().",
        "stat",
        "protocol",
    ),
    # QUIT.
    "quit_silent": _b("QUIT is never answered and the connection stays open.", "quit", "timeout"),
    "quit_close": _b("QUIT gets no +OK: the server closes (FIN).", "quit", *CLOSED),
}


@dataclass(frozen=True)
class FaultCerts:
    """The mail stack's test CA and its good leaf (names localhost and 127.0.0.1)."""

    ca_file: Path
    key: Path
    cert: Path

    @classmethod
    def make(cls, directory: Path) -> FaultCerts:
        """Create the CA and leaves in ``directory``/ca (which must not exist yet)."""
        certs = make_certs(directory / "ca")
        return cls(certs.ca, *certs.good)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


class _EndSession(Exception):
    """Ends a session from anywhere inside it; the handler then frees the socket."""


class _Session:
    """What IMAP and POP3 sessions share: sending, hanging, closing, TLS."""

    def __init__(
        self, server: _MailFault, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.behaviour = server.behaviour
        self.spec = server.spec
        self.reader = reader
        self.writer = writer
        self.tls_active = False
        # Seeded so that a failing test sees the same bytes on every run.
        self.rng = random.Random(self.behaviour)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_line(self) -> bytes:
        """One client line without its line ending, recorded."""
        try:
            raw = await self.reader.readuntil(b"\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            raise _EndSession from None
        line = raw[:-1].removesuffix(b"\r")
        self.server._record(line)
        return line

    async def drip(self, data: bytes) -> None:
        for byte in data:
            await self.send(bytes((byte,)))
            await asyncio.sleep(DRIP_INTERVAL)

    async def flood(self, make: Callable[[int], bytes]) -> NoReturn:
        """Send make(0), make(1), ... forever, as fast as the client reads."""
        n = 0
        while True:
            self.writer.write(make(n))
            await self.writer.drain()
            # drain() returns without yielding while the kernel takes every write, so a
            # fast reader could starve the loop (and stop()).
            await asyncio.sleep(0)
            n += 1

    async def hang(self) -> NoReturn:
        """Keep the connection open, sending and reading nothing, until stop()."""
        self.writer.transport.pause_reading()
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable: the future above is never resolved")

    async def close(self) -> NoReturn:
        """FIN after any pending data, and end the session."""
        self.writer.close()
        with contextlib.suppress(*_EXPECTED_ERRORS):
            await asyncio.wait_for(self.writer.wait_closed(), CLOSE_TIMEOUT)
        raise _EndSession

    async def reset(self) -> NoReturn:
        """Abort with a TCP RST and end the session."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            # Linger on with a zero timeout turns close() into an RST.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        raise _EndSession

    async def upgrade(self) -> None:
        context = self.server.ssl_context
        if context is None:
            raise RuntimeError(f"{self.behaviour!r} needs an ssl_context for TLS")
        await self.writer.start_tls(context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        self.tls_active = True

    def offers_starttls(self) -> bool:
        return self.server.tls == "starttls" and not self.tls_active

    def text(self, text: bytes) -> bytes:
        return text + b" " + CONTROL_JUNK if self.behaviour == "control_bytes" else text

    async def run(self) -> None:
        raise NotImplementedError


_IMAP_WORDS = re.compile(
    rb"\b(OK|NO|BAD|BYE|PREAUTH|CAPABILITY|EXISTS|RECENT|FLAGS|LOGOUT|NOOP|"
    rb"READ-ONLY|READ-WRITE|UIDVALIDITY|UIDNEXT)\b"
)


def _lower_words(data: bytes) -> bytes:
    """IMAP's status words, response keywords and codes in lower case (all legal)."""
    return _IMAP_WORDS.sub(lambda m: m.group(0).lower(), data)


def _numbered(line: bytes, n: int) -> bytes:
    """Batch n of BATCH numbered lines: one write each, or the server, not the client,
    would be what limits how fast they arrive (each write is a TLS record of its own)."""
    return b"".join(line % i for i in range(n * BATCH, (n + 1) * BATCH))


def _b64(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return data


def _one_line(data: bytes) -> bytes:
    """Client data made safe to echo in one reply line (secrets stay verbatim)."""
    return data.replace(b"\r", b"?").replace(b"\n", b"?")


_LITERAL = re.compile(rb"\{(\d+)(\+?)\}$")
_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"|(\S+)')


class _IMAPSession(_Session):
    async def run(self) -> None:
        await self.on_connect()
        while True:
            tag, command, args, raw = await self.read_command()
            name = command.decode("ascii", "replace").lower()
            handler = getattr(self, f"cmd_{name}", None) if name.isalpha() else None
            if handler is None:
                await self.send(tag + b" BAD Unknown command\r\n")
            else:
                await handler(tag, args, raw)

    async def read_command(self) -> tuple[bytes, bytes, list[bytes], bytes]:
        """(tag, command, arguments, whole command) with literals taken in line."""
        args: list[bytes] = []
        raw = b""
        first = True
        tag = command = b""
        while True:
            line = await self.read_line()
            raw += line
            literal = _LITERAL.search(line)
            body = line[: literal.start()] if literal else line
            if first:
                tag, _, rest = body.partition(b" ")
                command, _, body = rest.partition(b" ")
                command = command.upper()
                first = False
            args += [
                re.sub(rb"\\(.)", rb"\1", q) if q or not a else a for q, a in _TOKEN.findall(body)
            ]
            if literal is None:
                return tag, command, args, raw
            size = int(literal.group(1))
            if size > LINE_LIMIT:
                await self.send(tag + b" BAD literal too big\r\n")
                raise _EndSession
            if not literal.group(2):
                await self.send(b"+ go ahead\r\n")
            data = await self.reader.readexactly(size)
            self.server._record(data)
            raw += data
            args.append(data)

    def capabilities(self) -> bytes:
        caps = [b"IMAP4rev1", b"LITERAL+", b"ID"]
        b = self.behaviour
        if self.offers_starttls() and b != "starttls_not_offered":
            caps.append(b"STARTTLS")
        if b == "logindisabled" or self.offers_starttls():
            caps.append(b"LOGINDISABLED")
        elif self.spec.sasl:
            caps.append(b"AUTH=PLAIN")
        if b == "credential_replay":
            for secret in self.server.replayed():
                caps += [b"X-" + secret, secret, b"AUTH=" + secret]
        return b" ".join(caps)

    async def on_connect(self) -> None:
        b = self.behaviour
        if self.server.tls == "implicit":
            if b == "tarpit":
                await self.hang()
            if b == "implicit_plaintext":
                await self.send(b"* OK fault.test IMAP4rev1 ready\r\n")
                await self.hang()
            await self.upgrade()
        greeting = b"* OK fault.test IMAP4rev1 ready\r\n"
        if b == "tarpit":
            await self.hang()
        elif b == "drip_greeting":
            await self.drip(greeting)
        elif b == "bye_greeting":
            await self.send(b"* BYE Too many connections, try later\r\n")
            await self.close()
        elif b == "endless_line":
            await self.send(b"* OK ")
            await self.flood(lambda _n: b"A" * CHUNK_SIZE)
        elif b == "rst_after_greeting":
            await self.send(greeting)
            await self.read_line()
            await self.reset()
        elif b == "preauth":
            await self.send(b"* PREAUTH fault.test IMAP4rev1 logged in as probe\r\n")
        elif b == "lowercase":
            await self.send(b"* ok fault.test IMAP4rev1 ready\r\n")
        elif b == "credential_replay":
            caps = self.capabilities()
            await self.send(b"* OK [CAPABILITY " + caps + b"] fault.test ready\r\n")
        else:
            await self.send(self.text(b"* OK fault.test IMAP4rev1 ready") + b"\r\n")

    async def send(self, data: bytes) -> None:
        if self.behaviour == "lowercase":
            data = _lower_words(data)
        await super().send(data)

    async def cmd_capability(self, tag: bytes, _args: list[bytes], _raw: bytes) -> None:
        b = self.behaviour
        if b == "capability_bad":
            await self.send(tag + b" BAD Command unknown\r\n")
        elif b == "endless_capability":
            # About 5 KB a line: under any sane line cap, so only a cap on the whole
            # response (or on the names kept) can stop it.
            names = b" ".join(b"X-ENDLESS-%d" % i for i in range(ENDLESS_CAPABILITY_NAMES))
            await self.flood(lambda _n: b"* CAPABILITY IMAP4rev1 " + names + b"\r\n")
        elif b == "wrong_tag":
            await self.send(b"* CAPABILITY " + self.capabilities() + b"\r\nZZZZ9 OK done\r\n")
            await self.hang()
        elif b == "continuation_out_of_place":
            await self.send(b"+ go ahead\r\n")
            await self.hang()
        else:
            caps = self.text(b"* CAPABILITY " + self.capabilities())
            await self.send(caps + b"\r\n" + tag + b" OK CAPABILITY completed\r\n")

    async def cmd_starttls(self, tag: bytes, _args: list[bytes], _raw: bytes) -> None:
        b = self.behaviour
        if not self.offers_starttls() or b == "starttls_not_offered":
            await self.send(tag + b" BAD STARTTLS not available\r\n")
        elif b == "starttls_refused":
            await self.send(tag + b" NO [UNAVAILABLE] TLS not available\r\n")
        elif b == "starttls_injection":
            await self.send(tag + b" OK Begin TLS negotiation now\r\n* OK injected\r\n")
            await self.upgrade()
        elif b == "starttls_stall":
            await self.send(tag + b" OK Begin TLS negotiation now\r\n")
            await self.hang()
        elif b == "tls_then_tarpit":
            await self.send(tag + b" OK Begin TLS negotiation now\r\n")
            await self.upgrade()
            await self.hang()
        else:
            await self.send(tag + b" OK Begin TLS negotiation now\r\n")
            await self.upgrade()

    async def cmd_login(self, tag: bytes, args: list[bytes], raw: bytes) -> None:
        if self.behaviour == "credential_replay" and len(args) >= 2:
            self.server.remember(args[1])
        await self.authenticated(tag, raw, b" ".join(args[:2]))

    async def cmd_authenticate(self, tag: bytes, args: list[bytes], raw: bytes) -> None:
        if self.behaviour == "authenticate_loop":
            while True:
                await self.send(b"+ " + base64.b64encode(self.rng.randbytes(12)) + b"\r\n")
                await self.read_line()
        if self.behaviour == "preauth":
            await self.send(tag + b" BAD Already authenticated\r\n")
            return
        if len(args) >= 2:
            response = args[1]
        else:
            await self.send(b"+ \r\n")
            response = await self.read_line()
        if response == b"*":
            await self.send(tag + b" BAD Authentication cancelled\r\n")
            return
        if self.behaviour == "credential_replay":
            self.server.remember(_b64(response).rpartition(b"\x00")[2])
        await self.authenticated(tag, response, _b64(response).replace(b"\x00", b" "))

    async def authenticated(self, tag: bytes, raw: bytes, decoded: bytes) -> None:
        b = self.behaviour
        if b in ("login_no", "control_bytes"):
            text = self.text(b"NO [AUTHENTICATIONFAILED] Authentication failed.")
            await self.send(tag + b" " + text + b"\r\n")
        elif b in ("login_echo", "login_echo_login"):
            echo = _one_line(raw) + b" [" + _one_line(decoded) + b"]"
            await self.send(tag + b" NO [AUTHENTICATIONFAILED] bad credentials " + echo + b"\r\n")
        elif b == "logindisabled":
            await self.send(tag + b" NO [PRIVACYREQUIRED] Login disabled\r\n")
        elif b == "preauth":
            await self.send(tag + b" BAD Already authenticated\r\n")
        else:
            await self.send(tag + b" OK Logged in\r\n")

    async def cmd_select(self, tag: bytes, args: list[bytes], raw: bytes) -> None:
        await self.open_mailbox(tag, b"SELECT", b"READ-WRITE")

    async def cmd_examine(self, tag: bytes, args: list[bytes], raw: bytes) -> None:
        await self.open_mailbox(tag, b"EXAMINE", b"READ-ONLY")

    async def open_mailbox(self, tag: bytes, verb: bytes, mode: bytes) -> None:
        b = self.behaviour
        if b == "select_no":
            await self.send(tag + b" NO [NONEXISTENT] Mailbox doesn't exist\r\n")
        elif b == "endless_untagged":
            await self.flood(lambda n: _numbered(b"* OK [ALERT] untagged %08d\r\n", n))
        elif b == "late_flood":
            for n in range(int(LATE_FLOOD_DELAY / LATE_FLOOD_INTERVAL)):
                await self.send(b"* OK [ALERT] slow %d\r\n" % n)
                await asyncio.sleep(LATE_FLOOD_INTERVAL)
            await self.flood(lambda n: _numbered(b"* OK [ALERT] untagged %08d\r\n", n))
        elif b == "literal_4g":
            await self.send(b"* 1 FETCH (BODY[] {4294967295}\r\nxxxx")
            await self.hang()
        elif b == "huge_literal":
            await self.send(b"* 1 FETCH (BODY[] {%d}\r\n" % HUGE_LITERAL)
            chunk = b"A" * CHUNK_SIZE
            for _ in range(HUGE_LITERAL // CHUNK_SIZE):
                await self.send(chunk)
                await asyncio.sleep(0)
            await self.send(b")\r\n" + tag + b" OK done\r\n")
        elif b == "literal_flood":
            body = b"B" * FLOOD_LITERAL
            await self.flood(
                lambda n: b"* %d FETCH (BODY[] {%d}\r\n" % (n + 1, len(body)) + body + b")\r\n"
            )
        elif b == "bye_at_select":
            await self.send(b"* BYE Server shutting down\r\n")
            await self.close()
        elif b == "close_mid_literal":
            await self.send(b"* 1 FETCH (BODY[] {100}\r\n0123456789")
            await self.close()
        else:
            await self.send(
                b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
                b"* %d EXISTS\r\n* 0 RECENT\r\n"
                b"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n"
                b"* OK [UIDNEXT %d] Predicted next UID\r\n"
                % (MESSAGES, MESSAGES + 1)
                + tag
                + b" OK ["
                + mode
                + b"] "
                + verb
                + b" completed\r\n"
            )

    async def cmd_noop(self, tag: bytes, _args: list[bytes], _raw: bytes) -> None:
        if self.behaviour == "noop_bad":
            await self.send(tag + b" BAD no\r\n")
        else:
            await self.send(tag + b" OK NOOP completed\r\n")

    async def cmd_logout(self, tag: bytes, _args: list[bytes], _raw: bytes) -> None:
        if self.behaviour == "logout_silent":
            await self.hang()
        await self.send(b"* BYE Logging out\r\n" + tag + b" OK LOGOUT completed\r\n")
        await self.close()


class _POP3Session(_Session):
    async def run(self) -> None:
        await self.on_connect()
        while True:
            line = await self.read_line()
            verb, _, arg = line.partition(b" ")
            name = verb.decode("ascii", "replace").lower()
            handler = getattr(self, f"cmd_{name}", None) if name.isalpha() else None
            if handler is None:
                await self.send(b"-ERR Unknown command\r\n")
            else:
                await handler(arg.strip())

    async def on_connect(self) -> None:
        b = self.behaviour
        if self.server.tls == "implicit":
            if b == "silent":
                await self.hang()
            if b == "implicit_plaintext":
                await self.send(b"+OK fault.test POP3 ready\r\n")
                await self.hang()
            await self.upgrade()
        greeting = b"+OK fault.test POP3 ready <1896.697170952@fault.test>\r\n"
        if b == "silent":
            await self.hang()
        elif b == "drip_greeting":
            await self.drip(greeting)
        elif b == "err_greeting":
            await self.send(b"-ERR [SYS/TEMP] too busy\r\n")
            await self.close()
        elif b == "endless_line":
            await self.send(b"+OK ")
            await self.flood(lambda _n: b"A" * CHUNK_SIZE)
        elif b == "rst_after_greeting":
            await self.send(greeting)
            await self.read_line()
            await self.reset()
        else:
            await self.send(greeting)

    def capa(self) -> list[bytes]:
        lines = [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING", b"USER"]
        if self.offers_starttls() and self.behaviour != "stls_not_offered":
            lines.append(b"STLS")
        if self.spec.sasl:
            lines.append(b"SASL PLAIN")
        if self.behaviour == "credential_replay":
            for secret in self.server.replayed():
                lines += [b"X-" + secret, b"SASL " + secret, secret]
        return lines

    async def cmd_capa(self, _arg: bytes) -> None:
        b = self.behaviour
        if b == "capa_no_dot":
            await self.send(b"+OK Capability list follows\r\nUSER\r\nSTLS\r\n")
            await self.hang()
        elif b == "capa_endless":
            await self.send(b"+OK Capability list follows\r\n")
            await self.flood(lambda n: _numbered(b"X-CAP-%d\r\n", n))
        elif b == "capa_endless_line":
            await self.send(b"+OK Capability list follows\r\nUSER\r\nX-")
            await self.flood(lambda _n: b"X" * CHUNK_SIZE)
        elif b == "huge_line":
            await self.send(b"+OK " + b"A" * HUGE_LINE + b"\r\n")
            await self.hang()
        elif b == "close_mid_response":
            await self.send(b"+OK Capability list follows\r\nUSER\r\nST")
            await self.close()
        else:
            body = b"".join(line + b"\r\n" for line in self.capa())
            await self.send(b"+OK Capability list follows\r\n" + body + b".\r\n")

    async def cmd_stls(self, _arg: bytes) -> None:
        b = self.behaviour
        if not self.offers_starttls() or b == "stls_not_offered":
            await self.send(b"-ERR STLS not available\r\n")
        elif b == "stls_refused":
            await self.send(b"-ERR TLS not available now\r\n")
        elif b == "stls_injection":
            await self.send(b"+OK Begin TLS negotiation\r\n+OK injected\r\n")
            await self.upgrade()
        elif b == "stls_stall":
            await self.send(b"+OK Begin TLS negotiation\r\n")
            await self.hang()
        elif b == "tls_then_tarpit":
            await self.send(b"+OK Begin TLS negotiation\r\n")
            await self.upgrade()
            await self.hang()
        else:
            await self.send(b"+OK Begin TLS negotiation\r\n")
            await self.upgrade()

    async def cmd_user(self, _arg: bytes) -> None:
        if self.behaviour == "err_user":
            await self.send(b"-ERR [AUTH] no such user\r\n")
        else:
            await self.send(b"+OK\r\n")

    async def cmd_pass(self, arg: bytes) -> None:
        if self.behaviour == "credential_replay":
            self.server.remember(arg)
        if self.behaviour == "err_pass_echo":
            await self.send(b"-ERR [AUTH] bad password " + _one_line(arg) + b"\r\n")
        else:
            await self.send(b"+OK Logged in.\r\n")

    async def cmd_auth(self, arg: bytes) -> None:
        b = self.behaviour
        mechanism, _, initial = arg.partition(b" ")
        if not mechanism:
            await self.send(b"+OK\r\nPLAIN\r\n.\r\n")
            return
        if b == "auth_continuation_loop":
            while True:
                await self.send(b"+ " + base64.b64encode(self.rng.randbytes(12)) + b"\r\n")
                await self.read_line()
        if mechanism.upper() != b"PLAIN":
            await self.send(b"-ERR Unsupported mechanism\r\n")
            return
        if not initial:
            await self.send(b"+ \r\n")
            initial = await self.read_line()
        if b == "credential_replay":
            self.server.remember(_b64(initial).rpartition(b"\x00")[2])
        if initial == b"*":
            await self.send(b"-ERR Authentication cancelled\r\n")
        elif b == "err_auth_echo":
            echo = _one_line(initial) + b" [" + _one_line(_b64(initial).replace(b"\x00", b" "))
            await self.send(b"-ERR [AUTH] bad credentials " + echo + b"]\r\n")
        else:
            await self.send(b"+OK Logged in.\r\n")

    async def cmd_stat(self, _arg: bytes) -> None:
        b = self.behaviour
        if b == "err_stat":
            await self.send(b"-ERR [IN-USE] mailbox locked " + CONTROL_JUNK + b"\r\n")
        elif b == "stat_garbage":
            await self.send(b"+OK lots of mail\r\n")
        elif b == "stat_unicode_digits":
            await self.send("+OK \u00b2 \u0664\u0665\r\n".encode())
        else:
            await self.send(b"+OK %d %d\r\n" % (MESSAGES, MAILBOX_SIZE))

    async def cmd_noop(self, _arg: bytes) -> None:
        await self.send(b"+OK\r\n")

    async def cmd_quit(self, _arg: bytes) -> None:
        b = self.behaviour
        if b == "quit_silent":
            await self.hang()
        if b == "quit_close":
            await self.close()
        await self.send(b"+OK Bye\r\n")
        await self.close()


class _MailFault(LoopThread):
    """The server loop shared by IMAPFault and POP3Fault."""

    BEHAVIOURS: ClassVar[dict[str, Behaviour]]
    SESSION: ClassVar[type[_Session]]

    def __init__(
        self,
        behaviour: str,
        tls: str | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """Configure (not start) a server with one behaviour; ``tls`` None, "starttls"
        (offered, and taken when asked) or "implicit" (TLS from the first byte). TLS needs
        ``ssl_context``, a server-side context (see FaultCerts)."""
        if behaviour not in self.BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; see {type(self).__name__}")
        if tls not in TLS_VALUES:
            raise ValueError(f"tls must be one of {TLS_VALUES}, not {tls!r}")
        if tls is not None and ssl_context is None:
            raise ValueError(f"tls={tls!r} needs an ssl_context")
        self.behaviour = behaviour
        self.spec = self.BEHAVIOURS[behaviour]
        self.tls = tls
        self.ssl_context = ssl_context
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._connections = 0
        self._received: deque[bytes] = deque(maxlen=RECEIVED_MAX)
        self._remembered: deque[bytes] = deque(maxlen=RECEIVED_MAX)
        self._errors: deque[str] = deque(maxlen=ERRORS_MAX)
        self._counted = threading.Condition(self._lock)
        super().__init__()
        self._stopping = False  # the server thread's, once it runs

    @property
    def connections(self) -> int:
        """Client connections accepted (start()'s own check is not one)."""
        with self._lock:
            return self._connections

    @property
    def received(self) -> list[bytes]:
        """The last RECEIVED_MAX client lines (and literals), without line endings."""
        with self._lock:
            return list(self._received)

    @property
    def errors(self) -> list[str]:
        """Unexpected exceptions inside the server; a healthy run leaves this empty."""
        with self._lock:
            return list(self._errors)

    def wait_for_connections(self, count: int, timeout: float) -> bool:
        """Block until at least count connections were accepted; False on timeout."""
        with self._counted:
            return self._counted.wait_for(lambda: self._connections >= count, timeout)

    def _record(self, line: bytes) -> None:
        with self._lock:
            self._received.append(line)

    def remember(self, secret: bytes) -> None:
        """Keep a password a client sent (credential_replay), at most RECEIVED_MAX."""
        with self._lock:
            if secret and secret not in self._remembered:
                self._remembered.append(secret)

    def replayed(self) -> list[bytes]:
        """The passwords remembered so far (only credential_replay remembers any)."""
        with self._lock:
            return list(self._remembered)

    def start(self) -> Self:
        """Bind and start the server thread; RuntimeError if it is not up in time."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._thread = threading.Thread(
            target=self._run, name=f"{type(self).__name__}-{self.behaviour}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"{type(self).__name__} did not start in time")
        if self._start_error is not None:
            self._thread.join(START_TIMEOUT)
            self._thread = None
            raise self._start_error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # the starting thread must see even KeyboardInterrupt
            if self._ready.is_set():
                with self._lock:
                    self._errors.append(f"server loop crashed: {exc!r}")
            else:
                self._start_error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_exception)
        self._loop = loop
        self._stop_requested = asyncio.Event()
        server = await asyncio.start_server(self._handle, self.host, 0, limit=LINE_LIMIT)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            self._stopping = True
            server.close()
            await asyncio.sleep(0.01)  # connections accepted a moment ago reach _handle
            while self._tasks:
                for writer in list(self._writers):
                    writer.transport.abort()
                tasks = list(self._tasks)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)  # abort() frees sockets one iteration later
            await server.wait_closed()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        exc = context.get("exception")
        if isinstance(exc, _EXPECTED_ERRORS):
            return
        with self._lock:
            self._errors.append(f"{context.get('message')}: {exc!r}")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            if self._stopping:
                return  # accepted while stopping: no session may outlive stop()
            with self._counted:
                self._connections += 1
                self._counted.notify_all()
            await self.SESSION(self, reader, writer).run()
        except (_EndSession, *_EXPECTED_ERRORS, asyncio.CancelledError):
            pass  # the client left, was reset, or stop() cancelled the session
        except Exception as exc:  # a server bug must not kill the loop
            with self._lock:
                self._errors.append(f"session {self.behaviour!r} failed: {exc!r}")
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)


class IMAPFault(_MailFault):
    """A hostile IMAP server on 127.0.0.1:<ephemeral>; behaviours in IMAP_BEHAVIOURS."""

    BEHAVIOURS = IMAP_BEHAVIOURS
    SESSION = _IMAPSession


class POP3Fault(_MailFault):
    """A hostile POP3 server on 127.0.0.1:<ephemeral>; behaviours in POP3_BEHAVIOURS."""

    BEHAVIOURS = POP3_BEHAVIOURS
    SESSION = _POP3Session
