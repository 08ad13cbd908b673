"""Self-tests of the hostile IMAP and POP3 servers in tests/servers/mailfault.py.

Standard-library clients only (imaplib and poplib for the baselines, raw sockets and ssl
for the faults), so they test the servers rather than our probes: each behaviour is driven
by a short script to the point of its fault, and the fault is shown to be what the
behaviour's documentation says. Every test must finish within a few seconds.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import poplib
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.results import FailureKind, Phase
from tests.servers.mailfault import (
    CHUNK_SIZE,
    CONTROL_JUNK,
    ENDLESS_CAPABILITY_NAMES,
    HUGE_LITERAL,
    IMAP_BEHAVIOURS,
    LATE_FLOOD_DELAY,
    LATE_FLOOD_INTERVAL,
    MAILBOX_SIZE,
    MESSAGES,
    POP3_BEHAVIOURS,
    FaultCerts,
    IMAPFault,
    POP3Fault,
)

pytestmark = pytest.mark.fixture_selftest

IO_TIMEOUT = 3.0
# Long enough for loopback to deliver anything already sent; "silent" claims are only
# this strong.
QUIET_WAIT = 0.3
SECRET = "fault-S3cret"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> FaultCerts:
    return FaultCerts.make(tmp_path_factory.mktemp("mailfault"))


@pytest.fixture(scope="module")
def server_ctx(certs: FaultCerts) -> ssl.SSLContext:
    return certs.server_context()


@pytest.fixture(scope="module")
def client_ctx(certs: FaultCerts) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.ca_file))


class Client:
    """A raw line client: just enough to walk a dialogue up to a fault."""

    def __init__(self, port: int, ctx: ssl.SSLContext, implicit: bool) -> None:
        self.ctx = ctx
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), IO_TIMEOUT)
        if implicit:
            self.starttls()
        self.buf = b""

    def starttls(self) -> None:
        self.sock = self.ctx.wrap_socket(self.sock, server_hostname="127.0.0.1")

    def send(self, line: bytes) -> None:
        self.sock.sendall(line + b"\r\n")

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"closed; pending {self.buf[:80]!r}")
        line, _, self.buf = self.buf.partition(b"\n")
        return line.removesuffix(b"\r")

    def expect(self, pattern: bytes) -> bytes:
        line = self.line()
        assert re.search(pattern, line), (pattern, line[:200])
        return line

    def until(self, pattern: bytes, limit: int = 50) -> bytes:
        """Skip lines until one matches pattern."""
        for _ in range(limit):
            line = self.line()
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in {limit}")

    def multiline(self) -> list[bytes]:
        """The lines of a POP3 multi-line response up to its terminating dot."""
        lines = []
        while (line := self.line()) != b".":
            lines.append(line)
        return lines

    def silent(self) -> None:
        """Nothing more arrives for QUIET_WAIT, and the connection stays open."""
        assert self.buf == b"", self.buf[:200]
        self.sock.settimeout(QUIET_WAIT)
        with pytest.raises((TimeoutError, socket.timeout)):
            data = self.sock.recv(1)
            raise AssertionError(f"unexpected {data!r}")
        self.sock.settimeout(IO_TIMEOUT)

    def closed(self) -> None:
        """The server ends the connection (FIN or RST) with nothing more than buf sent."""
        with contextlib.suppress(ConnectionResetError):
            while self._fill():
                pass

    def reset(self) -> None:
        with pytest.raises((ConnectionResetError, ssl.SSLError)):
            while self._fill():
                pass

    def raw(self, n: int) -> bytes:
        """At least n bytes, whatever they are."""
        while len(self.buf) < n:
            assert self._fill(), "closed early"
        data, self.buf = self.buf, b""
        return data

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def session(
    kind: type[IMAPFault] | type[POP3Fault],
    behaviour: str,
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
) -> Iterator[tuple[Client, IMAPFault | POP3Fault]]:
    spec = kind.BEHAVIOURS[behaviour]
    with kind(behaviour, spec.tls, ssl_context=server_ctx) as server:
        client = Client(server.port, client_ctx, spec.tls == "implicit")
        try:
            yield client, server
        finally:
            client.close()
        assert server.errors == []


def plain(user: str = "probe", password: str = SECRET) -> bytes:
    return base64.b64encode(f"\0{user}\0{password}".encode())


# -------------------------------------------------------------------------------- metadata


PHASES = {p.value for p in Phase}
KINDS = {k.value for k in FailureKind}


@pytest.mark.parametrize("table", [IMAP_BEHAVIOURS, POP3_BEHAVIOURS], ids=["imap", "pop3"])
def test_behaviours_documented_with_phase_and_kind(table):
    hostile = [name for name, b in table.items() if b.phase is not None]
    assert len(hostile) >= 18
    for name, b in table.items():
        assert b.doc, name
        assert b.tls in (None, "starttls", "implicit"), name
        if b.phase is None:
            assert b.kinds == (), name
        else:
            assert b.phase in PHASES, name
            assert b.kinds and set(b.kinds) <= KINDS, name


def test_refuses_unknown_behaviour_and_tls_without_context(server_ctx):
    with pytest.raises(ValueError, match="unknown behaviour"):
        IMAPFault("nope")
    with pytest.raises(ValueError, match="ssl_context"):
        POP3Fault("normal", "starttls")
    with pytest.raises(ValueError, match="tls must be"):
        IMAPFault("normal", "tls", ssl_context=server_ctx)


def test_stop_releases_port_and_hung_sessions(server_ctx, client_ctx):
    server = IMAPFault("tarpit", ssl_context=server_ctx).start()
    clients = [Client(server.port, client_ctx, implicit=False) for _ in range(3)]
    assert server.wait_for_connections(3, IO_TIMEOUT)
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 2.5
    for c in clients:
        c.closed()
        c.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), 1).close()
    assert server.connections == 3


# -------------------------------------------------------------------------------- baselines


def test_imap_normal_with_imaplib(server_ctx, client_ctx):
    with IMAPFault("normal", "starttls", ssl_context=server_ctx) as server:
        with imaplib.IMAP4("127.0.0.1", server.port, timeout=IO_TIMEOUT) as imap:
            assert {"STARTTLS", "LOGINDISABLED"} <= set(imap.capabilities)
            imap.starttls(ssl_context=client_ctx)
            assert "AUTH=PLAIN" in imap.capabilities
            assert "LOGINDISABLED" not in imap.capabilities
            imap.authenticate("PLAIN", lambda _: f"\0probe\0{SECRET}".encode())
            assert imap.select("INBOX", readonly=True) == ("OK", [str(MESSAGES).encode()])
            assert imap.noop()[0] == "OK"
        assert server.errors == []


def test_imap_normal_login_quoted_and_literal(server_ctx, client_ctx):
    with IMAPFault("normal_login", "starttls", ssl_context=server_ctx) as server:
        imap = imaplib.IMAP4("127.0.0.1", server.port, timeout=IO_TIMEOUT)
        imap.starttls(ssl_context=client_ctx)
        assert not any(c.startswith("AUTH=") for c in imap.capabilities)
        assert imap.login("probe", 'odd "pass\\word')[0] == "OK"
        # A synchronising literal: the server must send its continuation request.
        tag = imap._new_tag()
        imap.send(tag + b" LOGIN {5}\r\n")
        assert imap.readline().startswith(b"+")
        imap.send(b"probe {3+}\r\nabc\r\n")
        assert imap.readline() == tag + b" OK Logged in\r\n"
        imap.logout()
        assert any(b'"odd \\"pass\\\\word"' in line for line in server.received)


def test_imap_normal_implicit(server_ctx, client_ctx):
    with IMAPFault("normal_implicit", "implicit", ssl_context=server_ctx) as server:
        imap = imaplib.IMAP4_SSL(
            "127.0.0.1", server.port, ssl_context=client_ctx, timeout=IO_TIMEOUT
        )
        assert "STARTTLS" not in imap.capabilities
        imap.login("probe", SECRET)
        assert imap.select("INBOX")[0] == "OK"
        imap.logout()


def test_imap_preauth(server_ctx, client_ctx):
    with session(IMAPFault, "preauth", server_ctx, client_ctx) as (c, _):
        c.expect(rb"^\* PREAUTH ")
        c.send(b"a1 LOGIN probe x")
        c.expect(rb"^a1 BAD ")
        c.send(b"a2 AUTHENTICATE PLAIN")
        c.expect(rb"^a2 BAD ")
        c.send(b"a3 EXAMINE INBOX")
        c.until(rb"^a3 OK ")


def test_imap_lowercase(server_ctx, client_ctx):
    with session(IMAPFault, "lowercase", server_ctx, client_ctx) as (c, _):
        c.expect(rb"^\* ok fault\.test IMAP4rev1 ready$")
        c.send(b"a1 capability")
        c.expect(rb"^\* capability IMAP4rev1 ")
        c.expect(rb"^a1 ok capability completed$")
        c.send(b"a2 STARTTLS")
        c.expect(rb"^a2 ok ")
        c.starttls()
        c.send(b"a3 LOGIN probe x")
        c.expect(rb"^a3 ok ")
        c.send(b"a4 EXAMINE INBOX")
        c.until(rb"^\* 3 exists$")
        c.until(rb"^a4 ok \[read-only\]")


def test_imap_plain_without_tls(server_ctx):
    with IMAPFault("normal", None, ssl_context=server_ctx) as server:
        imap = imaplib.IMAP4("127.0.0.1", server.port, timeout=IO_TIMEOUT)
        assert "AUTH=PLAIN" in imap.capabilities and "STARTTLS" not in imap.capabilities
        imap.login("probe", SECRET)
        imap.logout()


def test_pop3_normal_with_poplib(server_ctx, client_ctx):
    with POP3Fault("normal", "starttls", ssl_context=server_ctx) as server:
        pop = poplib.POP3("127.0.0.1", server.port, timeout=IO_TIMEOUT)
        assert re.search(rb"<[^>]+@fault\.test>$", pop.getwelcome())  # an APOP timestamp
        capa = pop.capa()
        assert "STLS" in capa and capa["SASL"] == ["PLAIN"]
        pop.stls(client_ctx)
        assert "STLS" not in pop.capa()
        pop._putcmd("AUTH PLAIN " + plain().decode())
        assert pop._getresp().startswith(b"+OK")
        assert pop.stat() == (MESSAGES, MAILBOX_SIZE)
        assert pop.quit() == b"+OK Bye"
        assert server.errors == []


def test_pop3_normal_user_and_implicit(server_ctx, client_ctx):
    with POP3Fault("normal_user", "starttls", ssl_context=server_ctx) as server:
        pop = poplib.POP3("127.0.0.1", server.port, timeout=IO_TIMEOUT)
        assert "SASL" not in pop.capa()
        pop.stls(client_ctx)
        pop.user("probe")
        pop.pass_(SECRET)
        assert pop.stat() == (MESSAGES, MAILBOX_SIZE)
        pop.quit()
    with POP3Fault("normal_implicit", "implicit", ssl_context=server_ctx) as server:
        pop = poplib.POP3_SSL("127.0.0.1", server.port, context=client_ctx, timeout=IO_TIMEOUT)
        assert "STLS" not in pop.capa()
        pop.user("probe")
        pop.pass_(SECRET)
        pop.quit()


# -------------------------------------------------------------------------------- IMAP faults


def imap_to(c: Client, step: str) -> None:
    """Walk an IMAP session (STARTTLS, AUTHENTICATE PLAIN) up to step."""
    c.expect(rb"^\* OK ")
    if step == "capability":
        return
    c.send(b"a1 CAPABILITY")
    c.until(rb"^a1 OK")
    if step == "starttls":
        return
    c.send(b"a2 STARTTLS")
    c.expect(rb"^a2 OK")
    c.starttls()
    c.send(b"a3 CAPABILITY")
    c.expect(rb"^\* CAPABILITY ")
    c.expect(rb"^a3 OK")
    if step == "auth":
        return
    c.send(b"a4 AUTHENTICATE PLAIN")
    c.expect(rb"^\+")
    c.send(plain())
    c.expect(rb"^a4 OK")
    if step == "select":
        return
    c.send(b"a5 EXAMINE INBOX")
    c.until(rb"^a5 OK \[READ-ONLY\]")


def test_imap_tarpit(server_ctx, client_ctx):
    with session(IMAPFault, "tarpit", server_ctx, client_ctx) as (c, _):
        c.silent()


def test_imap_drip_greeting(server_ctx, client_ctx):
    with session(IMAPFault, "drip_greeting", server_ctx, client_ctx) as (c, _):
        start = time.monotonic()
        assert c.raw(2) == b"* "
        assert time.monotonic() - start >= 0.9  # the second byte a second after the first


def test_imap_bye_greeting(server_ctx, client_ctx):
    with session(IMAPFault, "bye_greeting", server_ctx, client_ctx) as (c, _):
        c.expect(rb"^\* BYE ")
        c.closed()


def test_imap_endless_line(server_ctx, client_ctx):
    with session(IMAPFault, "endless_line", server_ctx, client_ctx) as (c, _):
        data = c.raw(4 * CHUNK_SIZE)
        assert data.startswith(b"* OK A") and b"\n" not in data


def test_imap_rst_after_greeting(server_ctx, client_ctx):
    with session(IMAPFault, "rst_after_greeting", server_ctx, client_ctx) as (c, _):
        c.expect(rb"^\* OK")
        c.send(b"a1 CAPABILITY")
        c.reset()


def test_imap_capability_bad(server_ctx, client_ctx):
    with session(IMAPFault, "capability_bad", server_ctx, client_ctx) as (c, _):
        imap_to(c, "capability")
        c.send(b"a1 CAPABILITY")
        c.expect(rb"^a1 BAD ")


def test_imap_endless_capability(server_ctx, client_ctx):
    with session(IMAPFault, "endless_capability", server_ctx, client_ctx) as (c, _):
        imap_to(c, "capability")
        c.send(b"a1 CAPABILITY")
        for _ in range(200):
            assert (
                c.expect(rb"^\* CAPABILITY IMAP4rev1 X-ENDLESS-0 ").count(b" ")
                == ENDLESS_CAPABILITY_NAMES + 2
            )


def test_imap_wrong_tag(server_ctx, client_ctx):
    with session(IMAPFault, "wrong_tag", server_ctx, client_ctx) as (c, _):
        imap_to(c, "capability")
        c.send(b"a1 CAPABILITY")
        c.expect(rb"^\* CAPABILITY ")
        c.expect(rb"^ZZZZ9 OK")
        c.silent()


def test_imap_continuation_out_of_place(server_ctx, client_ctx):
    with session(IMAPFault, "continuation_out_of_place", server_ctx, client_ctx) as (c, _):
        imap_to(c, "capability")
        c.send(b"a1 CAPABILITY")
        c.expect(rb"^\+ go ahead$")
        c.silent()


def test_imap_starttls_not_offered(server_ctx, client_ctx):
    with session(IMAPFault, "starttls_not_offered", server_ctx, client_ctx) as (c, _):
        imap_to(c, "capability")
        c.send(b"a1 CAPABILITY")
        assert b"STARTTLS" not in c.expect(rb"^\* CAPABILITY ")
        c.expect(rb"^a1 OK")
        c.send(b"a2 STARTTLS")
        c.expect(rb"^a2 BAD")


def test_imap_starttls_refused(server_ctx, client_ctx):
    with session(IMAPFault, "starttls_refused", server_ctx, client_ctx) as (c, _):
        imap_to(c, "starttls")
        c.send(b"a2 STARTTLS")
        c.expect(rb"^a2 NO \[UNAVAILABLE\]")


def test_imap_starttls_injection(server_ctx, client_ctx):
    with session(IMAPFault, "starttls_injection", server_ctx, client_ctx) as (c, _):
        imap_to(c, "starttls")
        c.send(b"a2 STARTTLS")
        c.expect(rb"^a2 OK")
        assert c.buf == b"" or c.buf.startswith(b"* OK injected")
        c.expect(rb"^\* OK injected$")  # in plaintext, before any TLS


def test_imap_starttls_stall(server_ctx, client_ctx):
    with session(IMAPFault, "starttls_stall", server_ctx, client_ctx) as (c, _):
        imap_to(c, "starttls")
        c.send(b"a2 STARTTLS")
        c.expect(rb"^a2 OK")
        c.sock.settimeout(QUIET_WAIT)
        with pytest.raises((TimeoutError, socket.timeout)):
            c.starttls()  # the ClientHello is never answered


@pytest.mark.parametrize("kind", [IMAPFault, POP3Fault], ids=["imap", "pop3"])
def test_implicit_plaintext(kind, server_ctx, client_ctx):
    spec = kind.BEHAVIOURS["implicit_plaintext"]
    assert spec.tls == "implicit"
    with kind("implicit_plaintext", "implicit", ssl_context=server_ctx) as server:
        c = Client(server.port, client_ctx, implicit=False)
        try:
            assert c.line() in (b"* OK fault.test IMAP4rev1 ready", b"+OK fault.test POP3 ready")
            c.silent()
        finally:
            c.close()


@pytest.mark.parametrize("kind", [IMAPFault, POP3Fault], ids=["imap", "pop3"])
def test_tls_then_tarpit(kind, server_ctx, client_ctx):
    with session(kind, "tls_then_tarpit", server_ctx, client_ctx) as (c, _):
        if kind is IMAPFault:
            imap_to(c, "starttls")
            c.send(b"a2 STARTTLS")
            c.expect(rb"^a2 OK")
            c.starttls()
            c.send(b"a3 CAPABILITY")
        else:
            pop3_to(c, "starttls")
            c.send(b"STLS")
            c.expect(rb"^\+OK")
            c.starttls()
            c.send(b"CAPA")
        c.sock.settimeout(QUIET_WAIT)
        with pytest.raises((TimeoutError, socket.timeout)):
            c.sock.recv(1)


def test_imap_logindisabled(server_ctx, client_ctx):
    with session(IMAPFault, "logindisabled", server_ctx, client_ctx) as (c, _):
        c.expect(rb"^\* OK")
        c.send(b"a1 CAPABILITY")
        caps = c.expect(rb"^\* CAPABILITY ")
        assert b"LOGINDISABLED" in caps and b"AUTH=" not in caps and b"STARTTLS" not in caps
        c.expect(rb"^a1 OK")
        c.send(b"a2 LOGIN probe " + SECRET.encode())
        c.expect(rb"^a2 NO ")


def test_imap_login_no(server_ctx, client_ctx):
    with session(IMAPFault, "login_no", server_ctx, client_ctx) as (c, _):
        imap_to(c, "auth")
        c.send(b"a4 AUTHENTICATE PLAIN " + plain())
        c.expect(rb"^a4 NO \[AUTHENTICATIONFAILED\]")
        c.send(b"a5 LOGIN probe x")
        c.expect(rb"^a5 NO \[AUTHENTICATIONFAILED\]")


@pytest.mark.parametrize("behaviour", ["login_echo", "login_echo_login"])
def test_imap_login_echo(behaviour, server_ctx, client_ctx):
    with session(IMAPFault, behaviour, server_ctx, client_ctx) as (c, _):
        imap_to(c, "auth")
        c.send(b"a4 AUTHENTICATE PLAIN")
        c.expect(rb"^\+")
        c.send(plain())
        line = c.expect(rb"^a4 NO ")
        assert plain() in line and SECRET.encode() in line
        c.send(b"a5 LOGIN probe " + SECRET.encode())
        assert SECRET.encode() in c.expect(rb"^a5 NO ")


def test_imap_login_echo_login_offers_no_sasl(server_ctx, client_ctx):
    with session(IMAPFault, "login_echo_login", server_ctx, client_ctx) as (c, _):
        imap_to(c, "starttls")
        c.send(b"a2 STARTTLS")
        c.expect(rb"^a2 OK")
        c.starttls()
        c.send(b"a3 CAPABILITY")
        caps = c.expect(rb"^\* CAPABILITY ")
        assert b"AUTH=" not in caps and b"LOGINDISABLED" not in caps


def test_imap_authenticate_loop(server_ctx, client_ctx):
    with session(IMAPFault, "authenticate_loop", server_ctx, client_ctx) as (c, _):
        imap_to(c, "auth")
        c.send(b"a4 AUTHENTICATE PLAIN")
        seen = set()
        for _ in range(20):
            seen.add(c.expect(rb"^\+ \S+$"))
            c.send(plain())
        assert len(seen) == 20


def test_imap_control_bytes(server_ctx, client_ctx):
    with session(IMAPFault, "control_bytes", server_ctx, client_ctx) as (c, _):
        assert CONTROL_JUNK.replace(b"\r", b"") in c.line().replace(b"\r", b"")
        c.send(b"a1 CAPABILITY")
        assert b"\x00\x1b[31m" in c.line()
        c.until(rb"^a1 OK")
        c.send(b"a2 STARTTLS")
        c.expect(rb"^a2 OK")
        c.starttls()
        c.send(b"a4 LOGIN probe x")
        assert b"\x00\x1b[31m" in c.until(rb"^a4 NO ")


def test_imap_bye_at_select(server_ctx, client_ctx):
    with session(IMAPFault, "bye_at_select", server_ctx, client_ctx) as (c, _):
        imap_to(c, "select")
        c.send(b"a5 EXAMINE INBOX")
        c.expect(rb"^\* BYE Server shutting down$")
        c.closed()
        assert c.buf == b""


@pytest.mark.parametrize("kind", [IMAPFault, POP3Fault], ids=["imap", "pop3"])
def test_credential_replay(kind, server_ctx, client_ctx):
    with session(kind, "credential_replay", server_ctx, client_ctx) as (c, server):
        if kind is IMAPFault:
            imap_to(c, "auth")
            c.send(b"a4 LOGIN probe " + SECRET.encode())
            c.expect(rb"^a4 OK")
        else:
            pop3_to(c, "auth", sasl=False)
            c.send(b"USER probe")
            c.expect(rb"^\+OK")
            c.send(b"PASS " + SECRET.encode())
            c.expect(rb"^\+OK")
        assert server.replayed() == [SECRET.encode()]
        again = Client(server.port, client_ctx, implicit=False)
        try:
            if kind is IMAPFault:
                greeting = again.expect(rb"^\* OK \[CAPABILITY ")
                assert b" X-" + SECRET.encode() + b" " in greeting
                again.send(b"a1 CAPABILITY")
                assert SECRET.encode() in again.expect(rb"^\* CAPABILITY ")
            else:
                again.expect(rb"^\+OK")
                again.send(b"CAPA")
                again.expect(rb"^\+OK")
                lines = again.multiline()
                assert b"X-" + SECRET.encode() in lines and b"SASL " + SECRET.encode() in lines
        finally:
            again.close()


def test_imap_select_no(server_ctx, client_ctx):
    with session(IMAPFault, "select_no", server_ctx, client_ctx) as (c, _):
        imap_to(c, "select")
        c.send(b"a5 SELECT INBOX")
        c.expect(rb"^a5 NO \[NONEXISTENT\]")


def test_imap_endless_untagged(server_ctx, client_ctx):
    with session(IMAPFault, "endless_untagged", server_ctx, client_ctx) as (c, _):
        imap_to(c, "select")
        c.send(b"a5 EXAMINE INBOX")
        for n in range(20_000):  # more than any per-command bound a client may have
            assert c.line() == b"* OK [ALERT] untagged %08d" % n


def test_imap_late_flood(server_ctx, client_ctx):
    with session(IMAPFault, "late_flood", server_ctx, client_ctx) as (c, _):
        imap_to(c, "select")
        c.send(b"a5 EXAMINE INBOX")
        start = time.monotonic()
        slow = int(LATE_FLOOD_DELAY / LATE_FLOOD_INTERVAL)
        for n in range(slow):
            assert c.line() == b"* OK [ALERT] slow %d" % n
        assert time.monotonic() - start >= LATE_FLOOD_DELAY - 2 * LATE_FLOOD_INTERVAL
        for n in range(5000):
            assert c.line() == b"* OK [ALERT] untagged %08d" % n


def test_imap_literal_4g(server_ctx, client_ctx):
    with session(IMAPFault, "literal_4g", server_ctx, client_ctx) as (c, _):
        imap_to(c, "select")
        c.send(b"a5 EXAMINE INBOX")
        c.expect(rb"^\* 1 FETCH \(BODY\[\] \{4294967295\}$")
        assert c.raw(4) == b"xxxx"
        c.silent()


def test_imap_huge_literal(server_ctx, client_ctx):
    with session(IMAPFault, "huge_literal", server_ctx, client_ctx) as (c, _):
        imap_to(c, "select")
        c.send(b"a5 EXAMINE INBOX")
        c.expect(rb"^\* 1 FETCH \(BODY\[\] \{%d\}$" % HUGE_LITERAL)
        got = 0
        while got < HUGE_LITERAL:
            got += len(c.raw(1))
        assert got >= HUGE_LITERAL


def test_imap_literal_flood(server_ctx, client_ctx):
    with session(IMAPFault, "literal_flood", server_ctx, client_ctx) as (c, _):
        imap_to(c, "select")
        c.send(b"a5 EXAMINE INBOX")
        for n in range(1, 40):  # 40 x 60 KiB: beyond a 1 MiB per-command bound
            size = int(c.expect(rb"^\* %d FETCH \(BODY\[\] \{(\d+)\}$" % n)[-6:-1])
            while len(c.buf) < size:
                c._fill()
            c.buf = c.buf[size:]
            c.expect(rb"^\)$")


def test_imap_close_mid_literal(server_ctx, client_ctx):
    with session(IMAPFault, "close_mid_literal", server_ctx, client_ctx) as (c, _):
        imap_to(c, "select")
        c.send(b"a5 SELECT INBOX")
        c.expect(rb"\{100\}$")
        c.closed()
        assert c.buf == b"0123456789"


def test_imap_noop_bad(server_ctx, client_ctx):
    with session(IMAPFault, "noop_bad", server_ctx, client_ctx) as (c, _):
        imap_to(c, "noop")
        c.send(b"a6 NOOP")
        c.expect(rb"^a6 BAD")


def test_imap_logout_silent(server_ctx, client_ctx):
    with session(IMAPFault, "logout_silent", server_ctx, client_ctx) as (c, _):
        imap_to(c, "noop")
        c.send(b"a6 NOOP")
        c.expect(rb"^a6 OK")
        c.send(b"a7 LOGOUT")
        c.silent()


# -------------------------------------------------------------------------------- POP3 faults


def pop3_to(c: Client, step: str, sasl: bool = True) -> None:
    """Walk a POP3 session (STLS, AUTH PLAIN or USER/PASS) up to step."""
    c.expect(rb"^\+OK ")
    if step == "capability":
        return
    c.send(b"CAPA")
    c.expect(rb"^\+OK")
    c.until(rb"^\.$")
    if step == "starttls":
        return
    c.send(b"STLS")
    c.expect(rb"^\+OK")
    c.starttls()
    if step == "auth":
        return
    if sasl:
        c.send(b"AUTH PLAIN " + plain())
    else:
        c.send(b"USER probe")
        c.expect(rb"^\+OK")
        c.send(b"PASS " + SECRET.encode())
    c.expect(rb"^\+OK")


def test_pop3_silent(server_ctx, client_ctx):
    with session(POP3Fault, "silent", server_ctx, client_ctx) as (c, _):
        c.silent()


def test_pop3_drip_greeting(server_ctx, client_ctx):
    with session(POP3Fault, "drip_greeting", server_ctx, client_ctx) as (c, _):
        start = time.monotonic()
        assert c.raw(2) == b"+O"
        assert time.monotonic() - start >= 0.9


def test_pop3_err_greeting(server_ctx, client_ctx):
    with session(POP3Fault, "err_greeting", server_ctx, client_ctx) as (c, _):
        c.expect(rb"^-ERR \[SYS/TEMP\]")
        c.closed()


def test_pop3_endless_line(server_ctx, client_ctx):
    with session(POP3Fault, "endless_line", server_ctx, client_ctx) as (c, _):
        data = c.raw(4 * CHUNK_SIZE)
        assert data.startswith(b"+OK A") and b"\n" not in data


def test_pop3_rst_after_greeting(server_ctx, client_ctx):
    with session(POP3Fault, "rst_after_greeting", server_ctx, client_ctx) as (c, _):
        c.expect(rb"^\+OK")
        c.send(b"CAPA")
        c.reset()


def test_pop3_capa_no_dot(server_ctx, client_ctx):
    with session(POP3Fault, "capa_no_dot", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "capability")
        c.send(b"CAPA")
        c.expect(rb"^\+OK")
        c.expect(rb"^USER$")
        c.expect(rb"^STLS$")
        c.silent()


def test_pop3_capa_endless(server_ctx, client_ctx):
    with session(POP3Fault, "capa_endless", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "capability")
        c.send(b"CAPA")
        c.expect(rb"^\+OK")
        for n in range(5000):  # beyond a 1,000-line bound
            assert c.line() == b"X-CAP-%d" % n


def test_pop3_capa_endless_line(server_ctx, client_ctx):
    with session(POP3Fault, "capa_endless_line", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "capability")
        c.send(b"CAPA")
        c.expect(rb"^\+OK")
        c.expect(rb"^USER$")
        data = c.raw(4 * CHUNK_SIZE)
        assert data.startswith(b"X-XXX") and b"\n" not in data


def test_pop3_huge_line(server_ctx, client_ctx):
    with session(POP3Fault, "huge_line", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "capability")
        c.send(b"CAPA")
        line = c.line()
        assert line.startswith(b"+OK AAAA") and len(line) == 4 + 1024 * 1024


def test_pop3_close_mid_response(server_ctx, client_ctx):
    with session(POP3Fault, "close_mid_response", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "capability")
        c.send(b"CAPA")
        c.expect(rb"^\+OK")
        c.expect(rb"^USER$")
        c.closed()
        assert c.buf == b"ST"


def test_pop3_stls_not_offered(server_ctx, client_ctx):
    with session(POP3Fault, "stls_not_offered", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "capability")
        c.send(b"CAPA")
        c.expect(rb"^\+OK")
        assert b"STLS" not in b"\n".join(c.multiline())
        c.send(b"STLS")
        c.expect(rb"^-ERR")


def test_pop3_stls_refused(server_ctx, client_ctx):
    with session(POP3Fault, "stls_refused", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "starttls")
        c.send(b"STLS")
        c.expect(rb"^-ERR TLS not available")


def test_pop3_stls_injection(server_ctx, client_ctx):
    with session(POP3Fault, "stls_injection", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "starttls")
        c.send(b"STLS")
        c.expect(rb"^\+OK Begin TLS")
        c.expect(rb"^\+OK injected$")


def test_pop3_stls_stall(server_ctx, client_ctx):
    with session(POP3Fault, "stls_stall", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "starttls")
        c.send(b"STLS")
        c.expect(rb"^\+OK Begin TLS")
        c.sock.settimeout(QUIET_WAIT)
        with pytest.raises((TimeoutError, socket.timeout)):
            c.starttls()


def test_pop3_err_user(server_ctx, client_ctx):
    with session(POP3Fault, "err_user", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "auth")
        c.send(b"USER probe")
        c.expect(rb"^-ERR \[AUTH\]")


def test_pop3_err_pass_echo(server_ctx, client_ctx):
    with session(POP3Fault, "err_pass_echo", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "capability")
        c.send(b"CAPA")
        c.expect(rb"^\+OK")
        assert b"SASL" not in b"\n".join(c.multiline())  # so: USER/PASS
        c.send(b"STLS")
        c.expect(rb"^\+OK")
        c.starttls()
        c.send(b"USER probe")
        c.expect(rb"^\+OK")
        c.send(b"PASS " + SECRET.encode())
        assert c.expect(rb"^-ERR \[AUTH\] bad password ").endswith(SECRET.encode())


def test_pop3_err_auth_echo(server_ctx, client_ctx):
    with session(POP3Fault, "err_auth_echo", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "auth")
        c.send(b"AUTH PLAIN")
        c.expect(rb"^\+ ?$")
        c.send(plain())
        line = c.expect(rb"^-ERR \[AUTH\]")
        assert plain() in line and SECRET.encode() in line


def test_pop3_auth_continuation_loop(server_ctx, client_ctx):
    with session(POP3Fault, "auth_continuation_loop", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "auth")
        c.send(b"AUTH PLAIN " + plain())
        for _ in range(20):
            c.expect(rb"^\+ \S+$")
            c.send(b"*")


def test_pop3_err_stat(server_ctx, client_ctx):
    with session(POP3Fault, "err_stat", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "stat")
        c.send(b"STAT")
        assert b"\x00\x1b[31m" in c.until(rb"^-ERR \[IN-USE\]")


def test_pop3_stat_garbage(server_ctx, client_ctx):
    with session(POP3Fault, "stat_garbage", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "stat")
        c.send(b"STAT")
        c.expect(rb"^\+OK lots of mail$")


def test_pop3_stat_unicode_digits(server_ctx, client_ctx):
    with session(POP3Fault, "stat_unicode_digits", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "stat")
        c.send(b"STAT")
        words = c.expect(rb"^\+OK ").decode().split()[1:]
        assert all(w.isdigit() and not w.isascii() for w in words)


def test_pop3_quit_silent_and_close(server_ctx, client_ctx):
    with session(POP3Fault, "quit_silent", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "stat")
        c.send(b"QUIT")
        c.silent()
    with session(POP3Fault, "quit_close", server_ctx, client_ctx) as (c, _):
        pop3_to(c, "stat")
        c.send(b"QUIT")
        c.closed()
        assert c.buf == b""


# Every behaviour has a self-test above (or is a baseline).
_TESTED = {name.removeprefix("test_imap_") for name in dir() if name.startswith("test_imap_")} | {
    "login_echo",
    "login_echo_login",
    "normal",
    "normal_login",
    "normal_implicit",
    "implicit_plaintext",
    "credential_replay",
    "tls_then_tarpit",
}
_TESTED_POP3 = {
    part
    for name in dir()
    if name.startswith("test_pop3_")
    for part in (name.removeprefix("test_pop3_"), *name.removeprefix("test_pop3_").split("_and_"))
} | {
    "normal",
    "normal_user",
    "normal_implicit",
    "quit_close",
    "implicit_plaintext",
    "credential_replay",
    "tls_then_tarpit",
}


def test_every_behaviour_has_a_self_test():
    assert set(IMAP_BEHAVIOURS) <= _TESTED, set(IMAP_BEHAVIOURS) - _TESTED
    assert set(POP3_BEHAVIOURS) <= _TESTED_POP3, set(POP3_BEHAVIOURS) - _TESTED_POP3


def test_certs_are_the_mailstack_ca(certs: FaultCerts):
    assert Path(certs.ca_file).name == "ca.pem"
    assert certs.cert.name == "good.crt"
