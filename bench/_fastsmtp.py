"""A fast ESMTP responder and tarpit on many loopback listeners, in a process of its own.

    python bench/_fastsmtp.py SPEC.json

``SPEC.json``: ``{"listeners": [[host, port, "smtp" | "tarpit"], ...], "cert": PATH|null,
"key": PATH|null, "users": {name: password}, "max_seconds": N}``.

``smtp`` listeners speak just enough ESMTP for the exporter's probe: greeting, EHLO/HELO,
STARTTLS (when a certificate is given), AUTH PLAIN/LOGIN (users from the spec; after TLS when
TLS is available), NOOP, RSET, QUIT. ``tarpit`` listeners behave like
``tests/servers/fault.py``'s ``tarpit_greeting``: accept, read and discard, never send a byte
or close. Written on asyncio protocols (not streams) so one process answers thousands of
probes a second on one core and stays out of the exporter's process. Prints
``ready N listeners`` when every listener is bound; exits on SIGTERM/SIGINT or after
``max_seconds``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import resource
import signal
import ssl
import sys

LINE_LIMIT = 4096
GREETING = b"220 fast.bench ESMTP ready\r\n"


class SMTPProtocol(asyncio.Protocol):
    def __init__(self, ctx: ssl.SSLContext | None, users: dict[str, str]) -> None:
        self.ctx = ctx
        self.users = users
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.tls = False
        self.pending_auth: str | None = None  # "PLAIN" or "LOGIN:" / "LOGIN:user"
        self.upgrading = False
        self.early = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(GREETING)

    def data_received(self, data: bytes) -> None:
        if self.upgrading:
            # Decrypted data can arrive before start_tls() returns to upgrade(): keep it.
            self.early += data
            return
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.line(line.rstrip(b"\r"))
            if self.upgrading or self.transport is None:
                return
        if len(self.buf) > LINE_LIMIT:
            self.reply(b"500 5.5.2 line too long")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def reply(self, text: bytes) -> None:
        if self.transport is not None:
            self.transport.write(text + b"\r\n")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def ehlo_lines(self) -> list[bytes]:
        lines = [
            b"fast.bench",
            b"PIPELINING",
            b"SIZE 10240000",
            b"8BITMIME",
            b"ENHANCEDSTATUSCODES",
        ]
        if self.ctx is not None and not self.tls:
            lines.append(b"STARTTLS")
        if self.users and (self.tls or self.ctx is None):
            lines.append(b"AUTH PLAIN LOGIN")
        return lines

    def line(self, raw: bytes) -> None:
        if self.pending_auth is not None:
            self.auth_continue(raw)
            return
        verb, _, arg = raw.partition(b" ")
        verb = verb.upper()
        if verb == b"EHLO":
            lines = self.ehlo_lines()
            self.reply(b"\r\n".join(b"250-" + x for x in lines[:-1]) + b"\r\n250 " + lines[-1])
        elif verb == b"HELO":
            self.reply(b"250 fast.bench")
        elif verb in (b"NOOP", b"RSET"):
            self.reply(b"250 2.0.0 OK")
        elif verb == b"QUIT":
            self.reply(b"221 2.0.0 Bye")
            self.close()
        elif verb == b"STARTTLS" and self.ctx is not None and not self.tls:
            self.reply(b"220 2.0.0 Ready to start TLS")
            self.upgrading = True
            self.buf = b""
            asyncio.get_running_loop().create_task(self.upgrade())
        elif verb == b"AUTH" and b"AUTH PLAIN LOGIN" in self.ehlo_lines():
            mech, _, initial = arg.partition(b" ")
            if mech.upper() == b"PLAIN":
                if initial:
                    self.check_plain(initial)
                else:
                    self.pending_auth = "PLAIN"
                    self.reply(b"334 ")
            elif mech.upper() == b"LOGIN":
                self.pending_auth = "LOGIN:"
                self.reply(b"334 VXNlcm5hbWU6")
            else:
                self.reply(b"504 5.5.4 mechanism not supported")
        else:
            self.reply(b"502 5.5.1 command not implemented")

    def auth_continue(self, raw: bytes) -> None:
        state, self.pending_auth = self.pending_auth or "", None
        if state == "PLAIN":
            self.check_plain(raw)
        elif state == "LOGIN:":
            self.pending_auth = "LOGIN:" + _b64(raw)
            self.reply(b"334 UGFzc3dvcmQ6")
        else:
            self.verdict(state[6:], _b64(raw))

    def check_plain(self, initial: bytes) -> None:
        parts = _b64(initial).split("\0")
        self.verdict(parts[1] if len(parts) == 3 else "", parts[2] if len(parts) == 3 else "")

    def verdict(self, user: str, password: str) -> None:
        if self.users.get(user) == password and user:
            self.reply(b"235 2.7.0 Authentication successful")
        else:
            self.reply(b"535 5.7.8 Authentication credentials invalid")

    async def upgrade(self) -> None:
        loop = asyncio.get_running_loop()
        transport = self.transport
        if transport is None or self.ctx is None:
            return
        try:
            new = await loop.start_tls(transport, self, self.ctx, server_side=True)
        except (OSError, ssl.SSLError, ConnectionError):
            transport.abort()
            return
        if new is None:
            return
        self.transport = new
        self.tls = True
        self.upgrading = False
        early, self.early = self.early, b""
        if early:
            self.data_received(early)


class TarpitProtocol(asyncio.Protocol):
    """Accept, read and discard, never answer or close (the client's deadline ends it)."""

    def data_received(self, data: bytes) -> None:
        pass


def _b64(data: bytes) -> str:
    try:
        return base64.b64decode(data, validate=True).decode("utf-8", "replace")
    except ValueError:
        return ""


async def main(spec_path: str) -> None:
    with open(spec_path) as fh:
        spec = json.load(fh)
    listeners = spec["listeners"]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = None
    if spec.get("cert"):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(spec["cert"], spec["key"])
    users = dict(spec.get("users") or {})
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers = []
    for host, port, mode in listeners:
        factory = TarpitProtocol if mode == "tarpit" else (lambda: SMTPProtocol(ctx, users))
        servers.append(
            await loop.create_server(factory, host, port, reuse_address=True, backlog=512)
        )
    print(f"ready {len(servers)} listeners", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), spec.get("max_seconds", 900))
    except TimeoutError:
        print("max_seconds reached, exiting", flush=True)
    for s in servers:
        s.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
