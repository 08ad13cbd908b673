"""A deliberately hostile SMTP server for testing the probe client.

``FaultServer`` runs a raw asyncio server in its own thread with its own event
loop (the idea behind aiosmtpd's ``Controller``) and misbehaves in one chosen
way, named in ``BEHAVIOURS``. Outside the fault under test it speaks just
enough ordinary ESMTP for a client to reach the phase being tested.

The server is test equipment, not the thing under test, so it protects itself:
command lines are capped at ``LINE_LIMIT`` bytes, only the last
``RECEIVED_MAX`` of them are kept, every endless behaviour waits for the
socket to drain and yields to the event loop, and ``stop()`` aborts every
connection and cancels every task.

Typical use::

    with FaultServer("drip_greeting") as server:
        result = probe("127.0.0.1", server.port, deadline=2.0)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import random
import socket
import ssl
import struct
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import NoReturn, Self

from .lifecycle import LoopThread

# Far above any legal SMTP command (RFC 5321 caps them at 512 octets) but
# small enough that a flooding client cannot grow the server.
LINE_LIMIT = 4096
RECEIVED_MAX = 200
ERRORS_MAX = 50
HUGE_SIZE = 10 * 1024 * 1024
CHUNK_SIZE = 64 * 1024
DRIP_GREETING_INTERVAL = 1.0
DRIP_INTERVAL = 0.5
MANY_REPLIES = 10_000
GARBAGE_CHUNKS = 10
GARBAGE_CHUNK_SIZE = 100
# Long enough for any honest client, short enough that a stalled handshake
# never outlives a test by much even if stop() is forgotten.
HANDSHAKE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 1.0
START_TIMEOUT = 5.0
STOP_TIMEOUT = 2.0

GREETING = b"220 fault.test ESMTP\r\n"
INVALID_UTF8_GREETING = b"220 \xff\xfe\x00bad\x1b[31m ESMTP\r\n"
# Appended to reply texts by invalid_utf8_text: bytes that are never UTF-8,
# a truncated sequence, NUL, and an ANSI escape that would recolour a log.
INVALID_UTF8_JUNK = b" \xff\xfe\x00bad\x1b[31m\xc3\x28"
DRIP_FOREVER_LINE = b"220-aaaaaaaa\r\n"
ENDLESS_MULTILINE_LINE = b"250-xxxxxxxx\r\n"
SLOW_MULTILINE_LINE = b"250-slow\r\n"
STARTTLS_INJECTION = b"220 go ahead\r\n250 injected\r\n"
TLS_GARBAGE_PREFIX = b"HTTP/1.1 200 OK\r\n"
# A plausible TLS record header (handshake, TLS 1.2, 16 KiB body): a TLS
# library accepts it and then waits for the body, which tls_drip never
# finishes. Pure random bytes would be rejected after five bytes instead.
TLS_DRIP_HEADER = b"\x16\x03\x03\x40\x00"
# A fatal handshake_failure alert, what a real server sends when it shares
# no cipher or protocol version with the client.
TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x28"
IMPLICIT_PLAINTEXT_GREETING = b"220 plain\r\n"

BEHAVIOURS: dict[str, str] = {
    # Baselines, so a test can show the client passes when nothing is wrong.
    "normal": "Ordinary ESMTP with no fault; STARTTLS offered only when ssl_context is given.",
    "implicit_tls": "TLS from the first byte (needs ssl_context), then ordinary ESMTP inside it.",
    # Connect and greeting.
    "slow_accept_close": "Accept, then close (FIN) at once without sending anything.",
    "tarpit_greeting": "Accept, never send a byte or close; lines the client sends are recorded.",
    "drip_greeting": "Valid greeting sent one byte per second, then ordinary ESMTP.",
    "drip_forever": "Endless '220-aaaaaaaa' continuation lines, one byte per 0.5 s, no final line.",
    "huge_greeting_line": "Greeting '220 ' plus 10 MB of 'A', no CRLF, then silence, kept open.",
    "endless_greeting_line": "Greeting '220-' plus 'A' forever at socket speed, never a CRLF.",
    "garbage_greeting": "1000 random bytes (NUL, 0xff, bad UTF-8, bare CR), CRLF every 100; open.",
    "greeting_554": "Greeting '554 5.3.2 No service'; 503 to everything but QUIT.",
    "close_after_greeting": "Valid greeting, then close (FIN).",
    "invalid_utf8_text": "Valid exchange; reply texts hold bad UTF-8 and control chars; must pass.",
    "bare_lf": "Valid exchange with bare LF line endings; a lenient client may pass.",
    # EHLO.
    "ehlo_502_helo_ok": "EHLO gets '502 5.5.2 Command not recognised', HELO gets 250.",
    "ehlo_550": "EHLO gets '550 5.7.1 go away' (no HELO fallback allowed); HELO would get 250.",
    "code_change": "EHLO reply changes code mid-reply: '250-fault.test' then '251 OK'.",
    "bad_separator": "EHLO reply lines with no valid separator: '250Xhello' then '25'.",
    "bare_code_final": "Valid EHLO reply ending in a bare '250' line with no text; must pass.",
    "endless_multiline": "EHLO answered by '250-xxxxxxxx' lines forever at socket speed.",
    "slow_multiline": "EHLO answered by complete '250-slow' lines, one per 0.5 s, forever.",
    "huge_line": "EHLO answered by '250-' plus 10 MB of 'A' with no CRLF, then silence, kept open.",
    "many_replies": "EHLO answered by 10,000 complete '250 ok' replies in one burst.",
    "reset_mid_reply": "EHLO answered by '250-fault.test\\r\\n250-PIPEL', then RST.",
    "reset_after_ehlo": "Normal EHLO reply; the next command gets RST.",
    # STARTTLS.
    "no_starttls": "EHLO never advertises STARTTLS; STARTTLS gets 502.",
    "starttls_454": "STARTTLS gets '454 4.7.0 TLS not available due to temporary reason'.",
    "close_after_starttls": "STARTTLS gets 220, then close (FIN).",
    "tls_stall": "STARTTLS gets 220, then the server neither sends nor reads anything.",
    "tls_garbage": "STARTTLS: 220; the ClientHello gets 'HTTP/1.1 200 OK' + random bytes; open.",
    "tls_drip": "STARTTLS: 220; the ClientHello gets a record header + random bytes, 1 per 0.5 s.",
    "tls_alert": "STARTTLS: 220; the ClientHello gets a fatal handshake_failure alert; open.",
    "starttls_injection": "STARTTLS gets '220 go ahead' + '250 injected' in one write, then TLS.",
    "tls_ok_then_tarpit": "STARTTLS and handshake succeed (needs ssl_context), then total silence.",
    # Implicit TLS (for a client that starts TLS on connect).
    "implicit_plaintext": "Plaintext '220 plain' and random bytes at once instead of TLS; open.",
    "implicit_tarpit": "Accept, never send or read anything, so the TLS handshake hangs.",
    "implicit_tls_tarpit": "TLS handshake succeeds (needs ssl_context), then no greeting ever.",
    # AUTH.
    "auth_535": "AUTH of any kind gets '535 5.7.8 Authentication credentials invalid'.",
    "auth_echo": "AUTH fails with a reply echoing the client's credentials, raw and decoded.",
    "auth_tarpit": "AUTH never gets a reply.",
    "auth_endless_challenge": "AUTH gets a fresh 334 challenge for every answer, forever.",
    # NOOP and QUIT.
    "noop_500": "NOOP gets '500 5.5.1 no'.",
    "quit_no_reply": "QUIT gets no 221; the server closes (FIN).",
    "quit_tarpit": "QUIT never gets a reply and the connection is never closed.",
}

# These cannot misbehave as described without a certificate to hand out.
NEEDS_SSL_CONTEXT = frozenset(
    {"implicit_tls", "implicit_tls_tarpit", "starttls_injection", "tls_ok_then_tarpit"}
)
# These fail STARTTLS on purpose, so they advertise it even without a context.
_STARTTLS_WITHOUT_CONTEXT = frozenset(
    {"starttls_454", "close_after_starttls", "tls_stall", "tls_garbage", "tls_drip", "tls_alert"}
)
_VERBS = frozenset({"EHLO", "HELO", "STARTTLS", "AUTH", "NOOP", "QUIT"})

# Errors a hostile or impatient client is expected to cause; anything else
# is a bug in this server and is kept in FaultServer.errors.
_EXPECTED_ERRORS = (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError)


class _EndSession(Exception):
    """Ends a session from anywhere inside it; the handler then frees the socket."""


def _random_bytes(rng: random.Random) -> Iterator[int]:
    """Yield random byte values forever."""
    while True:
        yield rng.randrange(256)


def garbage_greeting_bytes(rng: random.Random) -> bytes:
    """Build the garbage_greeting payload.

    The nasty bytes are placed in every chunk rather than left to chance, and
    CR/LF are kept out of the random part so that each chunk is exactly one
    CRLF-terminated line holding one bare CR.
    """
    nasty = b"\x00\xff\xfe\xc3\x28\r"
    random_size = GARBAGE_CHUNK_SIZE - len(nasty) - 2
    chunks = []
    for _ in range(GARBAGE_CHUNKS):
        noise = bytes(b if b not in (0x0A, 0x0D) else 0x00 for b in rng.randbytes(random_size))
        chunks.append(nasty + noise + b"\r\n")
    return b"".join(chunks)


def _printable_echo(data: bytes) -> bytes:
    """Make client data safe to echo inside one reply line.

    Only CR and LF are replaced, so the echo cannot forge extra reply lines;
    everything else, secrets included, goes back verbatim.
    """
    return data.replace(b"\r", b"?").replace(b"\n", b"?")


def _b64decode(data: bytes) -> bytes:
    """Decode base64 the way a careless server would, falling back to the raw bytes."""
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return data


class _Session:
    """One client connection, driven by the hooks of the server's behaviour."""

    def __init__(
        self, server: FaultServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.behaviour = server.behaviour
        self.context = server.ssl_context
        self.reader = reader
        self.writer = writer
        self.eol = b"\n" if self.behaviour == "bare_lf" else b"\r\n"
        self.tls_active = False
        self.seen_ehlo = False
        # Seeded so that a failing test sees the same bytes on every run.
        self.rng = random.Random(self.behaviour)
        self.hooks = _HOOKS[self.behaviour]

    async def run(self) -> None:
        """Greet, then answer commands until the client leaves or a hook ends it."""
        await self._dispatch("CONNECT", b"")
        while True:
            line = await self.read_line()
            verb, _, arg = line.partition(b" ")
            name = verb.upper().decode("ascii", "replace")
            before = self.hooks.get("BEFORE_COMMAND")
            if before is not None:
                await before(self, line)
            await self._dispatch(name if name in _VERBS else "OTHER", arg.strip())

    async def _dispatch(self, name: str, arg: bytes) -> None:
        hook = self.hooks.get(name) or _DEFAULT_HOOKS[name]
        await hook(self, arg)

    # -- primitives ---------------------------------------------------------

    async def read_line(self) -> bytes:
        """Read one command line (CRLF or bare LF) and record it."""
        try:
            raw = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise _EndSession from None
        except asyncio.LimitOverrunError:
            await self.send(b"500 5.5.2 Line too long\r\n")
            await self.close()
        line = raw[:-1].removesuffix(b"\r")
        self.server._record(line)
        return line

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def reply(self, code: int, *texts: bytes) -> bytes:
        """Format a reply, multiline if given several texts, with this session's EOL."""
        head = str(code).encode()
        last = len(texts) - 1
        return b"".join(
            head + (b" " if i == last else b"-") + text + self.eol for i, text in enumerate(texts)
        )

    def text(self, text: bytes) -> bytes:
        """Reply text, spoiled with invalid UTF-8 when that is the behaviour."""
        if self.behaviour == "invalid_utf8_text":
            return text + INVALID_UTF8_JUNK
        return text

    async def drip(self, data: Iterable[int], interval: float) -> None:
        """Send one byte, then wait interval, for each byte of data."""
        for byte in data:
            await self.send(bytes((byte,)))
            await asyncio.sleep(interval)

    async def flood(self, chunk: bytes, total: int | None) -> None:
        """Send chunk repeatedly, total bytes or forever, as fast as the client reads."""
        sent = 0
        while total is None or sent < total:
            piece = chunk if total is None else chunk[: total - sent]
            self.writer.write(piece)
            await self.writer.drain()
            # drain() returns without yielding while the kernel accepts every
            # write, so a fast enough reader could starve the loop (and stop()).
            await asyncio.sleep(0)
            sent += len(piece)

    async def hang(self) -> NoReturn:
        """Keep the connection open, sending and reading nothing, until stop()."""
        # Not reading means the client's writes eventually block too, and
        # nothing it sends (a ClientHello, say) is ever consumed.
        self.writer.transport.pause_reading()
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable: the future above is never resolved")

    async def read_forever(self) -> NoReturn:
        """Record whatever lines the client sends, never answering, until it leaves."""
        while True:
            await self.read_line()

    async def close(self) -> NoReturn:
        """Close gracefully (FIN after any pending data) and end the session."""
        self.writer.close()
        with contextlib.suppress(*_EXPECTED_ERRORS):
            await asyncio.wait_for(self.writer.wait_closed(), CLOSE_TIMEOUT)
        raise _EndSession

    async def reset(self) -> NoReturn:
        """Abort the connection with a TCP RST and end the session."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            # Linger on with a zero timeout turns close() into an RST.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        raise _EndSession

    async def upgrade(self) -> None:
        """Run the server side of a TLS handshake on this connection."""
        if self.context is None:
            raise RuntimeError(f"behaviour {self.behaviour!r} needs an ssl_context")
        await self.writer.start_tls(self.context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        self.tls_active = True

    def offers_starttls(self) -> bool:
        if self.tls_active or self.behaviour == "no_starttls":
            return False
        return self.context is not None or self.behaviour in _STARTTLS_WITHOUT_CONTEXT

    def ehlo_lines(self) -> list[bytes]:
        lines = [self.text(b"fault.test"), b"PIPELINING", b"SIZE 10240000"]
        if self.offers_starttls():
            lines.append(b"STARTTLS")
        lines += [b"AUTH PLAIN LOGIN", b"8BITMIME"]
        return lines

    async def ready_for_tls(self) -> None:
        await self.send(self.reply(220, self.text(b"2.0.0 Ready to start TLS")))

    async def answer_client_hello(self) -> None:
        """Say 220 to STARTTLS and wait for the client's first TLS bytes: a broken TLS
        server answers the ClientHello. (Bytes sent before it are plaintext injection,
        a different fault, and would race the client's reading of the 220.)"""
        await self.ready_for_tls()
        await self.reader.read(1)

    # -- ordinary ESMTP -----------------------------------------------------

    async def greet(self, _arg: bytes) -> None:
        await self.send(self.reply(220, self.text(b"fault.test ESMTP")))

    async def ehlo(self, _arg: bytes) -> None:
        self.seen_ehlo = True
        await self.send(self.reply(250, *self.ehlo_lines()))

    async def helo(self, _arg: bytes) -> None:
        await self.send(self.reply(250, self.text(b"fault.test")))

    async def starttls(self, _arg: bytes) -> None:
        if self.tls_active:
            await self.send(self.reply(503, b"5.5.1 TLS already active"))
        elif self.context is None or self.behaviour == "no_starttls":
            await self.other(b"")
        else:
            await self.ready_for_tls()
            await self.upgrade()

    async def auth(self, arg: bytes) -> None:
        mechanism, _, initial = arg.partition(b" ")
        mechanism = mechanism.upper()
        if mechanism == b"PLAIN":
            if not initial:
                await self.send(self.reply(334, b""))
                if await self.read_line() == b"*":
                    await self.send(self.reply(501, b"5.7.0 Authentication cancelled"))
                    return
        elif mechanism == b"LOGIN":
            prompts = [b"VXNlcm5hbWU6", b"UGFzc3dvcmQ6"]  # "Username:", "Password:"
            for prompt in prompts[1:] if initial else prompts:
                await self.send(self.reply(334, prompt))
                if await self.read_line() == b"*":
                    await self.send(self.reply(501, b"5.7.0 Authentication cancelled"))
                    return
        else:
            await self.send(self.reply(504, b"5.5.4 Unrecognized authentication type"))
            return
        await self.send(self.reply(235, self.text(b"2.7.0 Authentication successful")))

    async def noop(self, _arg: bytes) -> None:
        await self.send(self.reply(250, self.text(b"2.0.0 OK")))

    async def quit(self, _arg: bytes) -> NoReturn:
        await self.send(self.reply(221, self.text(b"2.0.0 Bye")))
        await self.close()

    async def other(self, _arg: bytes) -> None:
        await self.send(self.reply(502, b"5.5.2 Command not recognised"))

    # -- faults: connect and greeting ---------------------------------------

    async def close_at_once(self, _arg: bytes) -> NoReturn:
        await self.close()

    async def tarpit_greeting(self, _arg: bytes) -> NoReturn:
        await self.read_forever()

    async def drip_greeting(self, _arg: bytes) -> None:
        await self.drip(GREETING, DRIP_GREETING_INTERVAL)

    async def drip_forever(self, _arg: bytes) -> NoReturn:
        await self.drip(itertools.cycle(DRIP_FOREVER_LINE), DRIP_INTERVAL)
        raise AssertionError("unreachable: cycle() never ends")

    async def huge_greeting_line(self, _arg: bytes) -> NoReturn:
        await self.send(b"220 ")
        await self.flood(b"A" * CHUNK_SIZE, HUGE_SIZE)
        await self.hang()

    async def endless_greeting_line(self, _arg: bytes) -> NoReturn:
        await self.send(b"220-")
        await self.flood(b"A" * CHUNK_SIZE, None)
        raise AssertionError("unreachable: an endless flood never returns")

    async def garbage_greeting(self, _arg: bytes) -> NoReturn:
        await self.send(garbage_greeting_bytes(self.rng))
        await self.read_forever()

    async def greeting_554(self, _arg: bytes) -> None:
        await self.send(self.reply(554, b"5.3.2 No service"))

    async def refuse(self, _arg: bytes) -> None:
        # RFC 5321 3.1: after a 554 greeting the server waits for QUIT and
        # answers anything else with 503.
        await self.send(self.reply(503, b"5.5.1 No service, please QUIT"))

    async def close_after_greeting(self, _arg: bytes) -> NoReturn:
        await self.greet(b"")
        await self.close()

    async def invalid_utf8_greeting(self, _arg: bytes) -> None:
        await self.send(INVALID_UTF8_GREETING)

    # -- faults: EHLO -------------------------------------------------------

    async def ehlo_502(self, _arg: bytes) -> None:
        await self.send(self.reply(502, b"5.5.2 Command not recognised"))

    async def ehlo_550(self, _arg: bytes) -> None:
        await self.send(self.reply(550, b"5.7.1 go away"))

    async def code_change(self, _arg: bytes) -> None:
        await self.send(b"250-fault.test\r\n251 OK\r\n")

    async def bad_separator(self, _arg: bytes) -> None:
        await self.send(b"250Xhello\r\n25\r\n")

    async def bare_code_ehlo(self, _arg: bytes) -> None:
        self.seen_ehlo = True
        lines = self.ehlo_lines()
        await self.send(b"".join(b"250-" + line + self.eol for line in lines) + b"250" + self.eol)

    async def bare_code_noop(self, _arg: bytes) -> None:
        await self.send(b"250" + self.eol)

    async def endless_multiline(self, _arg: bytes) -> NoReturn:
        await self.flood(ENDLESS_MULTILINE_LINE * (CHUNK_SIZE // len(ENDLESS_MULTILINE_LINE)), None)
        raise AssertionError("unreachable: an endless flood never returns")

    async def slow_multiline(self, _arg: bytes) -> NoReturn:
        while True:
            await self.send(SLOW_MULTILINE_LINE)
            await asyncio.sleep(DRIP_INTERVAL)

    async def huge_line(self, _arg: bytes) -> NoReturn:
        await self.send(b"250-")
        await self.flood(b"A" * CHUNK_SIZE, HUGE_SIZE)
        await self.hang()

    async def many_replies(self, _arg: bytes) -> None:
        await self.send(b"250 ok\r\n" * MANY_REPLIES)

    async def reset_mid_reply(self, _arg: bytes) -> NoReturn:
        await self.send(b"250-fault.test\r\n250-PIPEL")
        # An RST discards data the kernel has not yet sent; give loopback a
        # moment so the client really receives half a reply before the reset.
        await asyncio.sleep(0.05)
        await self.reset()

    async def reset_if_after_ehlo(self, _line: bytes) -> None:
        if self.seen_ehlo:
            await self.reset()

    # -- faults: STARTTLS ---------------------------------------------------

    async def starttls_454(self, _arg: bytes) -> None:
        await self.send(self.reply(454, b"4.7.0 TLS not available due to temporary reason"))

    async def close_after_starttls(self, _arg: bytes) -> NoReturn:
        await self.ready_for_tls()
        await self.close()

    async def tls_stall(self, _arg: bytes) -> NoReturn:
        await self.ready_for_tls()
        await self.hang()

    async def tls_garbage(self, _arg: bytes) -> NoReturn:
        await self.answer_client_hello()
        await self.send(TLS_GARBAGE_PREFIX + self.rng.randbytes(512))
        await self.hang()

    async def tls_drip(self, _arg: bytes) -> NoReturn:
        await self.answer_client_hello()
        await self.drip(itertools.chain(TLS_DRIP_HEADER, _random_bytes(self.rng)), DRIP_INTERVAL)
        raise AssertionError("unreachable: the random byte stream never ends")

    async def tls_alert(self, _arg: bytes) -> NoReturn:
        await self.answer_client_hello()
        await self.send(TLS_ALERT)
        await self.hang()

    async def starttls_injection(self, _arg: bytes) -> None:
        # One write, so the injected reply sits in the client's buffer before
        # the handshake starts: the CVE-2011-0411 class of bug.
        await self.send(STARTTLS_INJECTION)
        await self.upgrade()

    async def tls_ok_then_tarpit(self, _arg: bytes) -> NoReturn:
        await self.ready_for_tls()
        await self.upgrade()
        await self.hang()

    # -- faults: implicit TLS -----------------------------------------------

    async def implicit_plaintext(self, _arg: bytes) -> NoReturn:
        await self.send(IMPLICIT_PLAINTEXT_GREETING + self.rng.randbytes(256))
        await self.hang()

    async def silent(self, _arg: bytes) -> NoReturn:
        await self.hang()

    async def implicit_tls(self, _arg: bytes) -> None:
        await self.upgrade()
        await self.greet(b"")

    async def implicit_tls_tarpit(self, _arg: bytes) -> NoReturn:
        await self.upgrade()
        await self.hang()

    # -- faults: AUTH, NOOP, QUIT -------------------------------------------

    async def auth_535(self, _arg: bytes) -> None:
        await self.send(self.reply(535, b"5.7.8 Authentication credentials invalid"))

    async def auth_echo(self, arg: bytes) -> None:
        mechanism, _, initial = arg.partition(b" ")
        mechanism = mechanism.upper()
        if mechanism == b"LOGIN":
            if initial:
                user = initial
            else:
                await self.send(self.reply(334, b"VXNlcm5hbWU6"))
                user = await self.read_line()
            decoded_user = _printable_echo(_b64decode(user))
            # Still valid base64, so a client carries on and sends the password.
            prompt = base64.b64encode(b"Password for " + decoded_user + b":")
            await self.send(self.reply(334, prompt))
            password = await self.read_line()
            echo = (
                b"user="
                + decoded_user
                + b" pass="
                + _printable_echo(_b64decode(password))
                + b" raw="
                + _printable_echo(user)
                + b" "
                + _printable_echo(password)
            )
        else:
            if not initial:
                await self.send(self.reply(334, b""))
                initial = await self.read_line()
            # Both forms: masking only the base64 a client sent is not enough.
            decoded = _b64decode(initial).replace(b"\x00", b" ")
            echo = _printable_echo(initial) + b" [" + _printable_echo(decoded) + b"]"
        await self.send(self.reply(535, b"5.7.8 bad credentials " + echo))

    async def auth_endless_challenge(self, _arg: bytes) -> NoReturn:
        while True:
            await self.send(self.reply(334, base64.b64encode(self.rng.randbytes(12))))
            await self.read_line()

    async def noop_500(self, _arg: bytes) -> None:
        await self.send(self.reply(500, b"5.5.1 no"))


Hook = Callable[[_Session, bytes], Awaitable[None]]

_DEFAULT_HOOKS: dict[str, Hook] = {
    "CONNECT": _Session.greet,
    "EHLO": _Session.ehlo,
    "HELO": _Session.helo,
    "STARTTLS": _Session.starttls,
    "AUTH": _Session.auth,
    "NOOP": _Session.noop,
    "QUIT": _Session.quit,
    "OTHER": _Session.other,
}

# Each behaviour overrides only the events it spoils; the rest is ordinary
# ESMTP. "BEFORE_COMMAND" runs before every command with the whole line.
_HOOKS: dict[str, dict[str, Hook]] = {
    "normal": {},
    "implicit_tls": {"CONNECT": _Session.implicit_tls},
    "slow_accept_close": {"CONNECT": _Session.close_at_once},
    "tarpit_greeting": {"CONNECT": _Session.tarpit_greeting},
    "drip_greeting": {"CONNECT": _Session.drip_greeting},
    "drip_forever": {"CONNECT": _Session.drip_forever},
    "huge_greeting_line": {"CONNECT": _Session.huge_greeting_line},
    "endless_greeting_line": {"CONNECT": _Session.endless_greeting_line},
    "garbage_greeting": {"CONNECT": _Session.garbage_greeting},
    "greeting_554": {
        "CONNECT": _Session.greeting_554,
        **{verb: _Session.refuse for verb in ("EHLO", "HELO", "STARTTLS", "AUTH", "NOOP")},
        "OTHER": _Session.refuse,
    },
    "close_after_greeting": {"CONNECT": _Session.close_after_greeting},
    "invalid_utf8_text": {"CONNECT": _Session.invalid_utf8_greeting},
    "bare_lf": {},
    "ehlo_502_helo_ok": {"EHLO": _Session.ehlo_502},
    "ehlo_550": {"EHLO": _Session.ehlo_550},
    "code_change": {"EHLO": _Session.code_change},
    "bad_separator": {"EHLO": _Session.bad_separator},
    "bare_code_final": {"EHLO": _Session.bare_code_ehlo, "NOOP": _Session.bare_code_noop},
    "endless_multiline": {"EHLO": _Session.endless_multiline},
    "slow_multiline": {"EHLO": _Session.slow_multiline},
    "huge_line": {"EHLO": _Session.huge_line},
    "many_replies": {"EHLO": _Session.many_replies},
    "reset_mid_reply": {"EHLO": _Session.reset_mid_reply},
    "reset_after_ehlo": {"BEFORE_COMMAND": _Session.reset_if_after_ehlo},
    "no_starttls": {},
    "starttls_454": {"STARTTLS": _Session.starttls_454},
    "close_after_starttls": {"STARTTLS": _Session.close_after_starttls},
    "tls_stall": {"STARTTLS": _Session.tls_stall},
    "tls_garbage": {"STARTTLS": _Session.tls_garbage},
    "tls_drip": {"STARTTLS": _Session.tls_drip},
    "tls_alert": {"STARTTLS": _Session.tls_alert},
    "starttls_injection": {"STARTTLS": _Session.starttls_injection},
    "tls_ok_then_tarpit": {"STARTTLS": _Session.tls_ok_then_tarpit},
    "implicit_plaintext": {"CONNECT": _Session.implicit_plaintext},
    "implicit_tarpit": {"CONNECT": _Session.silent},
    "implicit_tls_tarpit": {"CONNECT": _Session.implicit_tls_tarpit},
    "auth_535": {"AUTH": _Session.auth_535},
    "auth_echo": {"AUTH": _Session.auth_echo},
    "auth_tarpit": {"AUTH": _Session.silent},
    "auth_endless_challenge": {"AUTH": _Session.auth_endless_challenge},
    "noop_500": {"NOOP": _Session.noop_500},
    "quit_no_reply": {"QUIT": _Session.close_at_once},
    "quit_tarpit": {"QUIT": _Session.silent},
}

if _HOOKS.keys() != BEHAVIOURS.keys():  # pragma: no cover - caught at import time
    raise RuntimeError("BEHAVIOURS and _HOOKS disagree")


class FaultServer(LoopThread):
    """A hostile SMTP server on 127.0.0.1, run in its own thread and event loop.

    ``start()`` makes one real TCP connection of its own to prove the server
    answers. That probe connection is NOT counted in ``connections``; it is
    counted in ``probe_connections`` instead, so ``connections`` is exactly
    the number of connections made by the code under test.
    """

    def __init__(
        self,
        behaviour: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """Configure (but do not start) a server with one behaviour from BEHAVIOURS.

        ``ssl_context`` is a server-side context, used for STARTTLS and for
        implicit TLS; behaviours in ``NEEDS_SSL_CONTEXT`` refuse to run without it.
        """
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; see BEHAVIOURS")
        if behaviour in NEEDS_SSL_CONTEXT and ssl_context is None:
            raise ValueError(f"behaviour {behaviour!r} needs an ssl_context")
        self.behaviour = behaviour
        self.ssl_context = ssl_context
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._counted = threading.Condition(self._lock)
        self._connections = 0
        self._probe_connections = 0
        self._probe_ports: set[int] = set()
        self._received: deque[bytes] = deque(maxlen=RECEIVED_MAX)
        self._errors: deque[str] = deque(maxlen=ERRORS_MAX)
        super().__init__()
        self._stopping = False  # the server thread's, once it runs

    # -- observation (safe from any thread) ----------------------------------

    @property
    def connections(self) -> int:
        """Connections accepted so far, not counting start()'s probe connection."""
        with self._lock:
            return self._connections

    @property
    def probe_connections(self) -> int:
        """Connections start() made itself to check the server answers (normally 1)."""
        with self._lock:
            return self._probe_connections

    @property
    def received(self) -> list[bytes]:
        """The last RECEIVED_MAX command lines from clients, without line endings."""
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

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> Self:
        """Bind, start the server thread and check a real connection is answered.

        Raises whatever binding raised (e.g. OSError), or RuntimeError when
        the server does not come up within START_TIMEOUT seconds.
        """
        if self._thread is not None:
            raise RuntimeError("FaultServer already started")
        self._ready.clear()
        self._start_error = None
        self._thread = threading.Thread(
            target=self._run, name=f"FaultServer-{self.behaviour}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self.stop()
            raise RuntimeError("FaultServer did not start in time")
        if self._start_error is not None:
            self._thread.join(STOP_TIMEOUT)
            self._thread = None
            raise self._start_error
        try:
            self._probe()
        except BaseException:
            self.stop()
            raise
        return self

    # -- internals --------------------------------------------------------------

    def _probe(self) -> None:
        """Connect once and wait for the server to close the probe connection.

        Waiting for that FIN (rather than just for connect() to succeed, which
        the kernel's backlog would grant anyway) proves the event loop runs
        connection handlers. The probe's source port is registered first so
        the handler can tell the probe from a real client before doing
        anything behaviour-specific.
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(START_TIMEOUT)
            sock.bind((self.host, 0))
            port = sock.getsockname()[1]
            with self._lock:
                self._probe_ports.add(port)
            try:
                sock.connect((self.host, self.port))
                if sock.recv(1) != b"":
                    raise RuntimeError("FaultServer sent data on its probe connection")
            finally:
                with self._lock:
                    self._probe_ports.discard(port)

    def _record(self, line: bytes) -> None:
        with self._lock:
            self._received.append(line)

    def _record_error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # the starting thread must see even KeyboardInterrupt
            if self._ready.is_set():
                self._record_error(f"server loop crashed: {exc!r}")
            else:
                self._start_error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_exception)
        self._loop = loop
        self._stop_requested = asyncio.Event()
        self._stopping = False
        server = await asyncio.start_server(self._handle, self.host, 0, limit=LINE_LIMIT)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            self._stopping = True
            server.close()
            await self._close_connections()
            await server.wait_closed()

    async def _close_connections(self) -> None:
        # Connections accepted just before server.close() may not have
        # reached _handle yet; a short pause lets them arrive, see _stopping
        # and leave, so none is cancelled before its first step (3.11's
        # done-callback would log the CancelledError).
        await asyncio.sleep(0.01)
        while self._tasks:
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # abort() releases sockets in a later loop iteration; let that happen
        # before asyncio.run() closes the loop.
        await asyncio.sleep(0)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        exc = context.get("exception")
        if isinstance(exc, _EXPECTED_ERRORS):
            return
        self._record_error(f"{context.get('message')}: {exc!r}")

    def _is_probe(self, writer: asyncio.StreamWriter) -> bool:
        peer = writer.get_extra_info("peername")
        if not peer:
            return False
        with self._lock:
            if peer[1] in self._probe_ports:
                # One use only: the kernel may hand the same port to a real
                # client later.
                self._probe_ports.discard(peer[1])
                self._probe_connections += 1
                return True
        return False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            if self._stopping:
                return
            if self._is_probe(writer):
                writer.close()
                with contextlib.suppress(*_EXPECTED_ERRORS):
                    await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
                return
            with self._counted:
                self._connections += 1
                self._counted.notify_all()
            await _Session(self, reader, writer).run()
        except (_EndSession, *_EXPECTED_ERRORS):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels; ending normally keeps 3.11's done-callback
            # (which calls task.exception()) from logging the cancellation.
            pass
        except Exception as exc:  # a server bug must not kill the loop
            self._record_error(f"session {self.behaviour!r} failed: {exc!r}")
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
