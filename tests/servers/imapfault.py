"""A small, deliberately hostile IMAP server (plain text, no TLS) for testing the canary's
IMAP client.

It runs a raw asyncio server in its own thread and event loop, like aiosmtpd's
``Controller``, and misbehaves in one chosen way from ``BEHAVIOURS``; outside that fault it
speaks just enough IMAP4rev1 (CAPABILITY, LOGIN, AUTHENTICATE PLAIN, SELECT, NOOP, UID
SEARCH/FETCH/STORE/EXPUNGE, EXPUNGE, LOGOUT) for a client to reach the phase under test.

Mailbox contents are ``messages``: UID -> value of the X-SMTP-Health-Canary header. Like
real servers, SEARCH HEADER matches substrings, case-insensitively; SEARCH UNDELETED leaves
out flagged messages. ``flagged`` starts as ``deleted`` (messages another client flagged
``\\Deleted``); a plain EXPUNGE removes every flagged message, UID EXPUNGE only those named.
FETCH answers INTERNALDATE from ``arrived`` (UID -> unix seconds; default: server start).

Typical use::

    with IMAPFaultServer("drip_greeting") as server:
        check = asyncio.run(find_and_delete(cfg_for(server.port), token, Deadline.after(2)))
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import imaplib
import random
import re
import threading
import time
from collections import deque
from types import TracebackType
from typing import Self

LINE_LIMIT = 4096  # the server protects itself from a flooding client
HEADER = "X-SMTP-Health-Canary"
GREETING = b"* OK fault.test IMAP4rev1 ready\r\n"

BEHAVIOURS: dict[str, str] = {
    "normal": "Ordinary IMAP; no fault.",
    "tarpit": "Accept, never send a byte or close.",
    "drip_greeting": "The greeting, one byte per second.",
    "garbage_greeting": "Random bytes (NUL, 0xff, bare CR) in CRLF-terminated lines, then silence.",
    "endless_line": "Greeting '* OK ' then 'A' forever at socket speed, never a CRLF.",
    # Lines of 1 KiB: the client's cap is on bytes, and parsing 8-byte lines took it over a
    # second on a loaded machine, close to the tests' 2 s budget.
    "endless_untagged": "After a successful login, 1 KiB '* OK' lines forever, never the reply.",
    "search_tarpit": "UID SEARCH never answered.",
    "search_tarpit_later": "The first UID SEARCH of a session answered, every later one never.",
    "huge_literal": "SELECT answered with a FETCH announcing a 2 GB literal, then silence.",
    "login_echo": "Login refused with a reply echoing the credentials, raw and base64.",
}


class _Session:
    def __init__(
        self, server: IMAPFaultServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server, self.reader, self.writer = server, reader, writer
        self.behaviour = server.behaviour
        self.rng = random.Random(1)
        self.searches = 0

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def hang(self) -> None:
        await asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        if self.behaviour == "tarpit":
            await self.hang()
        if self.behaviour == "drip_greeting":
            for byte in GREETING:
                await self.send(bytes([byte]))
                await asyncio.sleep(1.0)
        elif self.behaviour == "garbage_greeting":
            for _ in range(10):
                noise = bytes(b if b not in (10, 13) else 0 for b in self.rng.randbytes(90))
                await self.send(b"\x00\xff\xfe\r" + noise + b"\r\n")
            await self.hang()
        elif self.behaviour == "endless_line":
            await self.send(b"* OK ")
            while True:
                await self.send(b"A" * 65536)
        else:
            await self.send(GREETING)
        while line := await self.reader.readline():
            self.server.record(line)
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            command, _, args = rest.partition(b" ")
            if not await self.command(tag, command.upper(), args):
                break

    async def command(self, tag: bytes, command: bytes, args: bytes) -> bool:
        """Answer one command; False ends the session."""
        server = self.server
        if command == b"CAPABILITY":
            caps = b"IMAP4rev1" + (b" AUTH=PLAIN" if server.auth_plain else b"")
            caps += b" UIDPLUS" if server.uidplus else b""
            await self.send(b"* CAPABILITY " + caps + b"\r\n" + tag + b" OK done\r\n")
        elif command in (b"LOGIN", b"AUTHENTICATE"):
            raw, (user, password) = args, _login_args(args)
            if command == b"AUTHENTICATE":
                await self.send(b"+ \r\n")
                raw = (await self.reader.readline()).strip()
                with contextlib.suppress(binascii.Error, ValueError):
                    _, user, password = base64.b64decode(raw).decode().split("\0")
            ok = server.users.get(user) == password
            if self.behaviour == "login_echo":
                echo = raw + b" " + base64.b64encode(password.encode()) + b" " + password.encode()
                await self.send(tag + b" NO [AUTHENTICATIONFAILED] bad " + echo + b"\r\n")
            elif not ok:
                await self.send(tag + b" NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
            elif self.behaviour == "endless_untagged":
                while True:
                    await self.send((b"* OK " + b"x" * 1019 + b"\r\n") * 64)
            else:
                await self.send(tag + b" OK Logged in\r\n")
        elif command == b"SELECT":
            if self.behaviour == "huge_literal":
                await self.send(b"* 1 FETCH (BODY[] {2000000000}\r\nxx")
                await self.hang()
            await self.send(
                f"* {len(server.messages)} EXISTS\r\n".encode() + tag + b" OK [READ-WRITE] done\r\n"
            )
        elif command == b"UID":
            await self.uid(tag, args)
        elif command == b"EXPUNGE":
            server.expunge(None)
            await self.send(tag + b" OK done\r\n")
        elif command == b"LOGOUT":
            await self.send(b"* BYE\r\n" + tag + b" OK bye\r\n")
            return False
        else:
            await self.send(tag + b" OK done\r\n")
        return True

    async def uid(self, tag: bytes, args: bytes) -> None:
        server = self.server
        sub, _, rest = args.partition(b" ")
        sub = sub.upper()
        if sub == b"SEARCH":
            self.searches += 1
            if self.behaviour == "search_tarpit" or (
                self.behaviour == "search_tarpit_later" and self.searches > 1
            ):
                await self.hang()
            needle = re.search(rb'"([^"]*)"\s*$', rest)
            want = needle.group(1).decode().lower() if needle else ""
            undeleted = b"UNDELETED" in rest.upper()
            with server.lock:
                hits = [
                    uid
                    for uid, value in server.messages.items()
                    if want in value.lower() and not (undeleted and uid in server.flagged)
                ]
            found = " ".join(map(str, hits))
            await self.send(f"* SEARCH {found}\r\n".encode() + tag + b" OK done\r\n")
        elif sub == b"FETCH":
            out = b""
            for seq, uid in enumerate(_uids(rest), 1):
                if uid in server.messages:
                    body = f"{HEADER}: {server.messages[uid]}\r\n\r\n".encode()
                    date = b""
                    if b"INTERNALDATE" in rest.upper():
                        when = server.arrived.get(uid, server.started)
                        date = b" INTERNALDATE " + imaplib.Time2Internaldate(when).encode()
                    out += (
                        f"* {seq} FETCH (UID {uid}".encode()
                        + date
                        + f" BODY[HEADER.FIELDS ({HEADER.upper()})]".encode()
                        + f" {{{len(body)}}}\r\n".encode()
                        + body
                        + b")\r\n"
                    )
            await self.send(out + tag + b" OK done\r\n")
        elif sub == b"STORE":
            server.flag(_uids(rest))
            await self.send(tag + b" OK done\r\n")
        elif sub == b"EXPUNGE":
            server.expunge(_uids(rest))
            await self.send(tag + b" OK done\r\n")
        else:
            await self.send(tag + b" BAD unknown\r\n")


def _uids(args: bytes) -> list[int]:
    return [int(u) for u in args.split(b" ", 1)[0].split(b",") if u.isdigit()]


def _login_args(args: bytes) -> tuple[str, str]:
    words = [a or b for a, b in re.findall(rb'"((?:[^"\\]|\\.)*)"|(\S+)', args)]
    words = [re.sub(rb"\\(.)", rb"\1", w) for w in words]
    user, password, *_ = [*words, b"", b""]
    return user.decode(), password.decode()


class IMAPFaultServer:
    """A hostile IMAP server on 127.0.0.1:<ephemeral>, in its own thread and event loop."""

    def __init__(
        self,
        behaviour: str = "normal",
        *,
        users: dict[str, str] | None = None,
        messages: dict[int, str] | None = None,
        uidplus: bool = True,
        auth_plain: bool = False,
        deleted: set[int] | None = None,
        arrived: dict[int, float] | None = None,
    ) -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; see BEHAVIOURS")
        self.behaviour = behaviour
        self.users = users if users is not None else {"canary": "canary-pass"}
        self.messages: dict[int, str] = dict(messages or {})
        self.uidplus = uidplus
        self.auth_plain = auth_plain
        self.port = 0
        self.flagged: set[int] = set(deleted or ())
        self.expunged: list[int] = []
        self.arrived: dict[int, float] = dict(arrived or {})
        self.started = time.time()
        self.lock = threading.Lock()
        self._received: deque[bytes] = deque(maxlen=200)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def received(self) -> list[bytes]:
        """The last command lines received (at most 200), CRLF included."""
        with self.lock:
            return list(self._received)

    def record(self, line: bytes) -> None:
        with self.lock:
            self._received.append(line)

    def flag(self, uids: list[int]) -> None:
        with self.lock:
            self.flagged.update(u for u in uids if u in self.messages)

    def expunge(self, uids: list[int] | None) -> None:
        with self.lock:
            for uid in sorted(self.flagged if uids is None else self.flagged & set(uids)):
                self.messages.pop(uid, None)
                self.flagged.discard(uid)
                self.expunged.append(uid)

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._main, name="imapfault", daemon=True)
        self._thread.start()
        if not self._ready.wait(5.0):
            raise RuntimeError("IMAP fault server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=LINE_LIMIT)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await _Session(self, reader, writer).run()
        except (OSError, asyncio.IncompleteReadError, ValueError, asyncio.LimitOverrunError):
            pass  # what a client that gives up or floods causes
        except asyncio.CancelledError:
            pass  # stop(): end quietly, or asyncio logs every cancelled handler
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()
