"""Self-tests of the hostile SMTP server in tests/servers/fault.py.

They use nothing but raw standard-library sockets (and ssl), so they test the
server rather than our probe client: each shows a behaviour really does what
BEHAVIOURS claims, reading just enough to prove it, and that stop() always
cleans up. Every test must finish within TEST_BUDGET seconds.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import pytest
import trustme

from tests.servers.fault import (
    BEHAVIOURS,
    DRIP_FOREVER_LINE,
    DRIP_GREETING_INTERVAL,
    DRIP_INTERVAL,
    ENDLESS_MULTILINE_LINE,
    GARBAGE_CHUNK_SIZE,
    GARBAGE_CHUNKS,
    GREETING,
    HUGE_SIZE,
    IMPLICIT_PLAINTEXT_GREETING,
    INVALID_UTF8_GREETING,
    INVALID_UTF8_JUNK,
    LINE_LIMIT,
    MANY_REPLIES,
    NEEDS_SSL_CONTEXT,
    RECEIVED_MAX,
    SLOW_MULTILINE_LINE,
    STARTTLS_INJECTION,
    STOP_TIMEOUT,
    TLS_ALERT,
    TLS_DRIP_HEADER,
    TLS_GARBAGE_PREFIX,
    FaultServer,
)

pytestmark = pytest.mark.fixture_selftest

TEST_BUDGET = 3.0
IO_TIMEOUT = 2.0
# Long enough for loopback to deliver anything already sent, short enough
# to keep the suite fast; "silent" claims are only this strong.
QUIET_WAIT = 0.3
# Scheduling slack when checking that drips are not faster than promised.
JITTER = 0.1
FD_DIR = "/proc/self/fd"

EHLO_LINES = [
    b"250-fault.test\r\n",
    b"250-PIPELINING\r\n",
    b"250-SIZE 10240000\r\n",
    b"250-AUTH PLAIN LOGIN\r\n",
    b"250 8BITMIME\r\n",
]
AUTH_OK = b"235 2.7.0 Authentication successful\r\n"


@dataclass(frozen=True)
class TLS:
    """A server context with a trustme certificate and a client context trusting it."""

    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls() -> TLS:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return TLS(server_ctx, client_ctx)


def _open_fds() -> int | None:
    return len(os.listdir(FD_DIR)) if os.path.isdir(FD_DIR) else None


@pytest.fixture(autouse=True)
def no_leaks_and_fast() -> Iterator[None]:
    """Fail a test that leaks a thread or a file descriptor, or is slow."""
    threads, fds = threading.active_count(), _open_fds()
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    assert threading.active_count() == threads, threading.enumerate()
    assert _open_fds() == fds
    assert elapsed < TEST_BUDGET, f"self-test took {elapsed:.2f} s"


@contextlib.contextmanager
def serve(behaviour: str, ssl_context: ssl.SSLContext | None = None) -> Iterator[FaultServer]:
    """Run a FaultServer for one test and check it hit no internal error."""
    server = FaultServer(behaviour, ssl_context=ssl_context)
    with server:
        yield server
    assert server.errors == []


class Client:
    """A minimal raw-socket SMTP client that keeps unread bytes in a buffer."""

    def __init__(self, server: FaultServer, timeout: float = IO_TIMEOUT) -> None:
        self.sock: socket.socket = socket.create_connection(
            ("127.0.0.1", server.port), timeout=timeout
        )
        self.buffer = b""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError(f"EOF with {self.buffer[:80]!r} unread")
        self.buffer += chunk

    def read(self, size: int) -> bytes:
        """Read exactly size bytes."""
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_until(self, marker: bytes) -> bytes:
        """Read up to and including marker."""
        while marker not in self.buffer:
            self._fill()
        end = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    def line(self) -> bytes:
        return self.read_until(b"\n")

    def reply(self) -> list[bytes]:
        """Read one reply: lines up to the first whose fourth byte is not '-'."""
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return lines

    def command(self, command: bytes) -> list[bytes]:
        self.send(command + b"\r\n")
        return self.reply()

    def is_silent(self, wait: float = QUIET_WAIT) -> bool:
        """True if nothing arrives and the connection stays open for wait seconds."""
        if self.buffer:
            return False
        self.sock.settimeout(wait)
        try:
            self.buffer = self.sock.recv(1 << 16)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(IO_TIMEOUT)
        return False

    def is_closed(self) -> bool:
        """True if the server closed (EOF or RST) with nothing more to say."""
        try:
            return not self.buffer and self.sock.recv(1 << 16) == b""
        except ConnectionResetError:
            return True

    def drain_until_closed(self, limit: float) -> bool:
        """Discard data until the server closes; False if it is still open after limit s."""
        deadline = time.monotonic() + limit
        self.buffer = b""
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.sock.recv(1 << 20):
                    return True
            except TimeoutError:
                return False
            except (ConnectionResetError, ssl.SSLError):
                return True
        return False

    def collect_count(self, count: int, timeout: float) -> list[tuple[float, bytes]]:
        """Record (arrival time, chunk) for the first count chunks, waiting at most timeout."""
        start = time.monotonic()
        arrivals: list[tuple[float, bytes]] = []
        while len(arrivals) < count and (left := start + timeout - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                break
            if not chunk:
                break
            arrivals.append((time.monotonic() - start, chunk))
        self.sock.settimeout(IO_TIMEOUT)
        return arrivals

    def start_tls(self, context: ssl.SSLContext) -> None:
        assert not self.buffer, f"plaintext left over before TLS: {self.buffer!r}"
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")


def drip(client: Client, count: int, interval: float) -> bytes:
    """Read count bytes and check they came one per recv, about one per interval: never
    faster, and not much slower either."""
    arrivals = client.collect_count(count, count * interval + IO_TIMEOUT)
    assert len(arrivals) == count, arrivals
    assert all(len(chunk) == 1 for _, chunk in arrivals), arrivals
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(arrivals)]
    assert all(interval - JITTER <= gap <= 1.5 * interval + JITTER for gap in gaps), gaps
    return b"".join(chunk for _, chunk in arrivals)


def ehlo_to(client: Client) -> list[bytes]:
    assert client.line() == GREETING
    return client.command(b"EHLO probe")


def starttls_to(client: Client) -> None:
    assert b"250-STARTTLS\r\n" in ehlo_to(client)
    assert client.command(b"STARTTLS") == [b"220 2.0.0 Ready to start TLS\r\n"]


# -- the server's own contract --------------------------------------------------


def test_behaviours_are_one_line_descriptions() -> None:
    assert len(BEHAVIOURS) >= 33
    for name, description in BEHAVIOURS.items():
        assert re.fullmatch(r"[a-z0-9_]+", name)
        assert description and "\n" not in description


def test_unknown_behaviour_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown behaviour"):
        FaultServer("no_such_thing")


@pytest.mark.parametrize("behaviour", sorted(NEEDS_SSL_CONTEXT))
def test_tls_behaviours_need_a_context(behaviour: str) -> None:
    with pytest.raises(ValueError, match="needs an ssl_context"):
        FaultServer(behaviour)


def test_bind_error_is_reraised() -> None:
    # TEST-NET-1 is never a local address, so binding it must fail.
    server = FaultServer("normal", host="192.0.2.1")
    with pytest.raises(OSError):
        server.start()
    server.stop()


@pytest.mark.parametrize("behaviour", ["tarpit_greeting", "slow_accept_close", "implicit_tarpit"])
def test_probe_connection_is_not_counted(behaviour: str) -> None:
    with serve(behaviour) as server:
        assert server.probe_connections == 1
        assert server.connections == 0
        with Client(server):
            assert server.wait_for_connections(1, IO_TIMEOUT)
        assert server.connections == 1
        assert server.probe_connections == 1


def test_start_twice_fails_and_stop_twice_is_harmless() -> None:
    server = FaultServer("normal").start()
    with pytest.raises(RuntimeError, match="already started"):
        server.start()
    server.stop()
    server.stop()


def test_received_is_bounded_and_in_order() -> None:
    with serve("normal") as server, Client(server) as client:
        client.line()
        client.send(b"".join(b"NOOP %d\r\n" % i for i in range(RECEIVED_MAX + 50)))
        client.read(len(b"250 2.0.0 OK\r\n") * (RECEIVED_MAX + 50))
        received = server.received
        assert len(received) == RECEIVED_MAX
        assert received[0] == b"NOOP 50"
        assert received[-1] == b"NOOP %d" % (RECEIVED_MAX + 49)


def test_overlong_command_line_is_refused() -> None:
    with serve("normal") as server, Client(server) as client:
        client.line()
        client.send(b"NOOP " + b"x" * (2 * LINE_LIMIT))
        assert client.line() == b"500 5.5.2 Line too long\r\n"
        assert client.drain_until_closed(IO_TIMEOUT)
        assert server.received == []


# Commands that drive each behaviour into its fault before stop() is called.
_SCRIPTS = {
    "auth": b"EHLO probe\r\nAUTH PLAIN AGFsaWNlAHMzY3JldA==\r\n",
    "quit": b"EHLO probe\r\nQUIT\r\n",
    "noop": b"EHLO probe\r\nNOOP\r\n",
}


@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
def test_stop_is_prompt_mid_fault(behaviour: str, tls: TLS) -> None:
    script = _SCRIPTS.get(behaviour.split("_")[0], b"EHLO probe\r\nSTARTTLS\r\n")
    server = FaultServer(behaviour, ssl_context=tls.server).start()
    with Client(server) as client:
        with contextlib.suppress(ConnectionError):
            client.send(script)
        time.sleep(0.2)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < STOP_TIMEOUT
        assert client.drain_until_closed(IO_TIMEOUT)
    assert server.errors == []


@pytest.mark.parametrize("behaviour", ["endless_multiline", "endless_greeting_line", "huge_line"])
def test_stop_is_prompt_while_a_fast_client_reads(behaviour: str) -> None:
    # stop() has to get a turn on the event loop while the flood is in full flow.
    server = FaultServer(behaviour).start()
    received = 0
    flowing = threading.Event()

    def reader(sock: socket.socket) -> None:
        nonlocal received
        with contextlib.suppress(OSError):
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
                if received > 1 << 20:
                    flowing.set()

    with Client(server) as client:
        client.send(b"EHLO probe\r\n")
        thread = threading.Thread(target=reader, args=(client.sock,))
        thread.start()
        assert flowing.wait(IO_TIMEOUT), received  # the flood is in full flow
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < STOP_TIMEOUT
        thread.join(IO_TIMEOUT)
        assert not thread.is_alive()
    assert received > 1 << 20
    assert server.errors == []


def test_slow_behaviours_do_not_burn_cpu(tls: TLS) -> None:
    slow = {
        "tarpit_greeting": b"",
        "drip_forever": b"",
        "slow_multiline": b"EHLO probe\r\n",
        "tls_stall": b"EHLO probe\r\nSTARTTLS\r\n",
        "tls_drip": b"EHLO probe\r\nSTARTTLS\r\n",
        "tls_ok_then_tarpit": b"EHLO probe\r\nSTARTTLS\r\n",
        "auth_tarpit": _SCRIPTS["auth"],
        "quit_tarpit": _SCRIPTS["quit"],
    }
    with contextlib.ExitStack() as stack:
        for behaviour, script in slow.items():
            server = stack.enter_context(serve(behaviour, ssl_context=tls.server))
            stack.enter_context(Client(server)).send(script)
            assert server.wait_for_connections(1, IO_TIMEOUT)
        time.sleep(0.2)  # let each session read its script and settle into its stall
        cpu = time.process_time()
        time.sleep(1.0)
        assert time.process_time() - cpu < 0.25


# -- baselines -------------------------------------------------------------------


def test_normal_plaintext_session() -> None:
    with serve("normal") as server, Client(server) as client:
        assert ehlo_to(client) == EHLO_LINES
        assert client.command(b"HELO probe") == [b"250 fault.test\r\n"]
        assert client.command(b"NOOP") == [b"250 2.0.0 OK\r\n"]
        assert client.command(b"STARTTLS") == [b"502 5.5.2 Command not recognised\r\n"]
        assert client.command(b"MAIL FROM:<a@b>") == [b"502 5.5.2 Command not recognised\r\n"]
        assert client.command(b"AUTH PLAIN AGEAYg==") == [AUTH_OK]
        assert client.command(b"AUTH PLAIN") == [b"334 \r\n"]
        assert client.command(b"AGEAYg==") == [AUTH_OK]
        assert client.command(b"AUTH LOGIN") == [b"334 VXNlcm5hbWU6\r\n"]
        assert client.command(b"YQ==") == [b"334 UGFzc3dvcmQ6\r\n"]
        assert client.command(b"Yg==") == [AUTH_OK]
        assert client.command(b"AUTH LOGIN YQ==") == [b"334 UGFzc3dvcmQ6\r\n"]
        assert client.command(b"*") == [b"501 5.7.0 Authentication cancelled\r\n"]
        assert client.command(b"AUTH CRAM-MD5") == [
            b"504 5.5.4 Unrecognized authentication type\r\n"
        ]
        assert client.command(b"QUIT") == [b"221 2.0.0 Bye\r\n"]
        assert client.is_closed()
    assert server.received[:3] == [b"EHLO probe", b"HELO probe", b"NOOP"]


def test_normal_starttls_session(tls: TLS) -> None:
    with serve("normal", ssl_context=tls.server) as server, Client(server) as client:
        starttls_to(client)
        client.start_tls(tls.client)
        assert client.command(b"EHLO probe") == EHLO_LINES
        assert client.command(b"STARTTLS") == [b"503 5.5.1 TLS already active\r\n"]
        assert client.command(b"QUIT") == [b"221 2.0.0 Bye\r\n"]


def test_implicit_tls(tls: TLS) -> None:
    with serve("implicit_tls", ssl_context=tls.server) as server, Client(server) as client:
        client.start_tls(tls.client)
        assert ehlo_to(client) == EHLO_LINES
        assert client.command(b"QUIT") == [b"221 2.0.0 Bye\r\n"]


# -- connect and greeting ------------------------------------------------------------


def test_slow_accept_close() -> None:
    with serve("slow_accept_close") as server, Client(server) as client:
        assert client.is_closed()


def test_tarpit_greeting_sends_nothing_but_records() -> None:
    with serve("tarpit_greeting") as server, Client(server) as client:
        assert client.is_silent()
        client.send(b"EHLO early\r\n")
        assert client.is_silent()
        assert server.received == [b"EHLO early"]


def test_drip_greeting_one_byte_per_second() -> None:
    with serve("drip_greeting") as server, Client(server) as client:
        assert drip(client, 2, DRIP_GREETING_INTERVAL) == GREETING[:2]


def test_drip_forever_half_second_bytes_of_endless_continuation() -> None:
    with serve("drip_forever") as server, Client(server) as client:
        assert drip(client, 3, DRIP_INTERVAL) == DRIP_FOREVER_LINE[:3]
    # The source repeats this one line: a continuation, never a final line.
    assert re.fullmatch(rb"220-a+\r\n", DRIP_FOREVER_LINE)


def _read_no_crlf(client: Client, size: int) -> bytes:
    """Read size bytes, checking there is no CR or LF anywhere; return the first 8."""
    head = client.read(8)
    got, budget = len(head), size
    assert b"\r" not in head and b"\n" not in head
    while got < budget:
        chunk = client.buffer or client.sock.recv(1 << 20)
        client.buffer = b""
        assert chunk, "EOF in the middle of the line"
        assert b"\n" not in chunk and b"\r" not in chunk
        got += len(chunk)
    return head


def test_huge_greeting_line() -> None:
    with serve("huge_greeting_line") as server, Client(server) as client:
        assert _read_no_crlf(client, 4 + HUGE_SIZE) == b"220 AAAA"
        assert client.is_silent()


def test_endless_greeting_line_outlasts_huge_size() -> None:
    with serve("endless_greeting_line") as server, Client(server) as client:
        assert _read_no_crlf(client, 2 * HUGE_SIZE) == b"220-AAAA"


def test_garbage_greeting() -> None:
    with serve("garbage_greeting") as server, Client(server) as client:
        data = client.read(GARBAGE_CHUNKS * GARBAGE_CHUNK_SIZE)
        assert client.is_silent()
    assert not data[:1].isdigit()
    for start in range(0, len(data), GARBAGE_CHUNK_SIZE):
        chunk = data[start : start + GARBAGE_CHUNK_SIZE]
        assert chunk.endswith(b"\r\n") and chunk.count(b"\n") == 1
        assert b"\x00" in chunk and b"\xff" in chunk
        assert re.search(rb"\r(?!\n)", chunk), "no bare CR"
        with pytest.raises(UnicodeDecodeError):
            chunk.decode("utf-8")


def test_greeting_554_then_503_until_quit() -> None:
    with serve("greeting_554") as server, Client(server) as client:
        assert client.line() == b"554 5.3.2 No service\r\n"
        for command in (b"EHLO probe", b"HELO probe", b"NOOP", b"RSET"):
            assert client.command(command) == [b"503 5.5.1 No service, please QUIT\r\n"]
        assert client.command(b"QUIT") == [b"221 2.0.0 Bye\r\n"]
        assert client.is_closed()


def test_close_after_greeting() -> None:
    with serve("close_after_greeting") as server, Client(server) as client:
        assert client.line() == GREETING
        assert client.is_closed()


def test_invalid_utf8_text_is_still_valid_smtp() -> None:
    with serve("invalid_utf8_text") as server, Client(server) as client:
        greeting = client.line()
        assert greeting == INVALID_UTF8_GREETING
        with pytest.raises(UnicodeDecodeError):
            greeting.decode("utf-8")
        assert b"\x00" in greeting and b"\x1b[" in greeting
        ehlo = client.command(b"EHLO probe")
        assert ehlo == [b"250-fault.test" + INVALID_UTF8_JUNK + b"\r\n", *EHLO_LINES[1:]]
        assert client.command(b"NOOP") == [b"250 2.0.0 OK" + INVALID_UTF8_JUNK + b"\r\n"]
        assert client.command(b"QUIT") == [b"221 2.0.0 Bye" + INVALID_UTF8_JUNK + b"\r\n"]


def test_bare_lf_line_endings() -> None:
    with serve("bare_lf") as server, Client(server) as client:
        assert client.line() == b"220 fault.test ESMTP\n"
        client.send(b"EHLO probe\n")
        ehlo = client.reply()
        assert ehlo == [line.replace(b"\r\n", b"\n") for line in EHLO_LINES]
        client.send(b"QUIT\n")
        assert client.reply() == [b"221 2.0.0 Bye\n"]
        assert client.is_closed()
    assert server.received == [b"EHLO probe", b"QUIT"]


# -- EHLO --------------------------------------------------------------------------


def test_ehlo_502_helo_ok() -> None:
    with serve("ehlo_502_helo_ok") as server, Client(server) as client:
        assert ehlo_to(client) == [b"502 5.5.2 Command not recognised\r\n"]
        assert client.command(b"HELO probe") == [b"250 fault.test\r\n"]


def test_ehlo_550() -> None:
    with serve("ehlo_550") as server, Client(server) as client:
        assert ehlo_to(client) == [b"550 5.7.1 go away\r\n"]
        # HELO "works", so a client that wrongly falls back gets caught by the
        # probe's result and by server.received, not by a second failure.
        assert client.command(b"HELO probe") == [b"250 fault.test\r\n"]
    assert server.received == [b"EHLO probe", b"HELO probe"]


def test_code_change() -> None:
    with serve("code_change") as server, Client(server) as client:
        client.line()
        client.send(b"EHLO probe\r\n")
        assert client.read_until(b"251 OK\r\n") == b"250-fault.test\r\n251 OK\r\n"
        assert client.is_silent()


def test_bad_separator() -> None:
    with serve("bad_separator") as server, Client(server) as client:
        client.line()
        client.send(b"EHLO probe\r\n")
        assert client.read_until(b"\r\n25\r\n") == b"250Xhello\r\n25\r\n"
        assert client.is_silent()


def test_bare_code_final_line() -> None:
    with serve("bare_code_final") as server, Client(server) as client:
        ehlo = ehlo_to(client)
        assert ehlo[-1] == b"250\r\n"
        assert ehlo[:-1] == [b"250-" + line[4:] for line in EHLO_LINES]
        assert client.command(b"NOOP") == [b"250\r\n"]


def test_endless_multiline() -> None:
    with serve("endless_multiline") as server, Client(server) as client:
        client.line()
        client.send(b"EHLO probe\r\n")
        lines = 80_000  # about 1 MB
        data = client.read(lines * len(ENDLESS_MULTILINE_LINE))
        assert data == ENDLESS_MULTILINE_LINE * lines


def test_slow_multiline() -> None:
    with serve("slow_multiline") as server, Client(server) as client:
        client.line()
        client.send(b"EHLO probe\r\n")
        arrivals = client.collect_count(3, 3 * DRIP_INTERVAL + IO_TIMEOUT)
    assert len(arrivals) == 3, arrivals
    assert all(chunk == SLOW_MULTILINE_LINE for _, chunk in arrivals)
    # One line per DRIP_INTERVAL: never faster, and not much slower either.
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(arrivals)]
    assert all(DRIP_INTERVAL - JITTER <= gap <= DRIP_INTERVAL + 0.8 for gap in gaps), gaps


def test_huge_line() -> None:
    with serve("huge_line") as server, Client(server) as client:
        client.line()
        client.send(b"EHLO probe\r\n")
        assert _read_no_crlf(client, 4 + HUGE_SIZE) == b"250-AAAA"
        assert client.is_silent()


def test_many_replies() -> None:
    with serve("many_replies") as server, Client(server) as client:
        client.line()
        client.send(b"EHLO probe\r\n")
        assert client.read(MANY_REPLIES * 8) == b"250 ok\r\n" * MANY_REPLIES
        assert client.is_silent()
        assert client.command(b"NOOP") == [b"250 2.0.0 OK\r\n"]


def _read_until_reset(client: Client) -> bytes:
    data = client.buffer
    client.buffer = b""
    with pytest.raises(ConnectionResetError):
        while True:
            chunk = client.sock.recv(1 << 16)
            assert chunk, f"FIN instead of RST after {data!r}"
            data += chunk
    return data


def test_reset_mid_reply() -> None:
    with serve("reset_mid_reply") as server, Client(server) as client:
        client.line()
        client.send(b"EHLO probe\r\n")
        assert _read_until_reset(client) == b"250-fault.test\r\n250-PIPEL"


def test_reset_after_ehlo() -> None:
    with serve("reset_after_ehlo") as server, Client(server) as client:
        assert ehlo_to(client) == EHLO_LINES
        client.send(b"NOOP\r\n")
        assert _read_until_reset(client) == b""


# -- STARTTLS -----------------------------------------------------------------------


def test_no_starttls_even_with_a_context(tls: TLS) -> None:
    with serve("no_starttls", ssl_context=tls.server) as server, Client(server) as client:
        assert ehlo_to(client) == EHLO_LINES
        assert client.command(b"STARTTLS") == [b"502 5.5.2 Command not recognised\r\n"]


def test_starttls_454() -> None:
    with serve("starttls_454") as server, Client(server) as client:
        assert b"250-STARTTLS\r\n" in ehlo_to(client)
        expected = b"454 4.7.0 TLS not available due to temporary reason\r\n"
        assert client.command(b"STARTTLS") == [expected]
        assert client.command(b"NOOP") == [b"250 2.0.0 OK\r\n"]


def test_close_after_starttls() -> None:
    with serve("close_after_starttls") as server, Client(server) as client:
        starttls_to(client)
        assert client.is_closed()


def test_tls_stall(tls: TLS) -> None:
    with serve("tls_stall") as server, Client(server) as client:
        starttls_to(client)
        assert client.is_silent()
        client.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.start_tls(tls.client)


# The first bytes of a TLS record carrying a ClientHello: what the faults below answer.
CLIENT_HELLO_START = b"\x16\x03\x01\x00\x10\x01"


def test_tls_garbage(tls: TLS) -> None:
    with serve("tls_garbage") as server:
        with Client(server) as client:
            starttls_to(client)
            assert client.is_silent(), "answered before any ClientHello"
            client.send(CLIENT_HELLO_START)
            junk = client.read(len(TLS_GARBAGE_PREFIX) + 512)
            assert junk.startswith(TLS_GARBAGE_PREFIX)
            assert junk[0] != 0x16, "looks like a TLS handshake record"
            assert client.is_silent()
        with Client(server) as client:
            starttls_to(client)
            with pytest.raises(ssl.SSLError):
                client.start_tls(tls.client)


def test_tls_drip() -> None:
    with serve("tls_drip") as server, Client(server) as client:
        starttls_to(client)
        client.send(CLIENT_HELLO_START)
        assert drip(client, 3, DRIP_INTERVAL) == TLS_DRIP_HEADER[:3]


def test_tls_alert(tls: TLS) -> None:
    with serve("tls_alert") as server:
        with Client(server) as client:
            starttls_to(client)
            client.send(CLIENT_HELLO_START)
            assert client.read(len(TLS_ALERT)) == TLS_ALERT
            assert client.is_silent()
        with Client(server) as client:
            starttls_to(client)
            with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
                client.start_tls(tls.client)


def test_starttls_injection_in_one_write_then_real_tls(tls: TLS) -> None:
    with serve("starttls_injection", ssl_context=tls.server) as server, Client(server) as client:
        assert b"250-STARTTLS\r\n" in ehlo_to(client)
        client.send(b"STARTTLS\r\n")
        # One recv holding both lines shows they left in a single write.
        assert client.sock.recv(1 << 16) == STARTTLS_INJECTION
        client.start_tls(tls.client)
        assert client.command(b"EHLO probe") == EHLO_LINES


def test_tls_ok_then_tarpit(tls: TLS) -> None:
    with serve("tls_ok_then_tarpit", ssl_context=tls.server) as server, Client(server) as client:
        starttls_to(client)
        client.start_tls(tls.client)
        client.send(b"EHLO probe\r\n")
        assert client.is_silent()


# -- implicit TLS -------------------------------------------------------------------


def test_implicit_plaintext(tls: TLS) -> None:
    with serve("implicit_plaintext") as server:
        with Client(server) as client:
            assert client.read(len(IMPLICIT_PLAINTEXT_GREETING)) == IMPLICIT_PLAINTEXT_GREETING
            client.read(256)
            assert client.is_silent()
        with Client(server) as client, pytest.raises(ssl.SSLError):
            client.start_tls(tls.client)


def test_implicit_tarpit(tls: TLS) -> None:
    with serve("implicit_tarpit") as server:
        with Client(server) as client:
            assert client.is_silent()
        with Client(server, timeout=0.5) as client, pytest.raises(TimeoutError):
            client.start_tls(tls.client)


def test_implicit_tls_tarpit(tls: TLS) -> None:
    with serve("implicit_tls_tarpit", ssl_context=tls.server) as server, Client(server) as client:
        client.start_tls(tls.client)
        assert client.is_silent()


# -- AUTH, NOOP, QUIT -------------------------------------------------------------------


def test_auth_535() -> None:
    with serve("auth_535") as server, Client(server) as client:
        ehlo_to(client)
        expected = [b"535 5.7.8 Authentication credentials invalid\r\n"]
        assert client.command(b"AUTH PLAIN AGEAYg==") == expected
        assert client.command(b"AUTH LOGIN") == expected


def test_auth_echo_plain_leaks_raw_and_decoded() -> None:
    secret = b"s3cret-PW"
    token = base64.b64encode(b"\x00alice\x00" + secret)
    with serve("auth_echo") as server, Client(server) as client:
        ehlo_to(client)
        (reply,) = client.command(b"AUTH PLAIN " + token)
        assert reply.startswith(b"535 5.7.8 bad credentials ")
        assert token in reply and secret in reply
        assert client.command(b"AUTH PLAIN") == [b"334 \r\n"]
        (reply,) = client.command(token)
        assert token in reply and secret in reply


def test_auth_echo_login_leaks_each_line() -> None:
    user, secret = b"alice", b"s3cret-PW"
    with serve("auth_echo") as server, Client(server) as client:
        ehlo_to(client)
        assert client.command(b"AUTH LOGIN") == [b"334 VXNlcm5hbWU6\r\n"]
        (challenge,) = client.command(base64.b64encode(user))
        assert challenge.startswith(b"334 ")
        assert base64.b64decode(challenge[4:].strip()) == b"Password for alice:"
        (reply,) = client.command(base64.b64encode(secret))
        assert reply.startswith(b"535 5.7.8 bad credentials ")
        assert secret in reply and base64.b64encode(secret) in reply


def test_auth_tarpit() -> None:
    with serve("auth_tarpit") as server, Client(server) as client:
        ehlo_to(client)
        client.send(b"AUTH PLAIN AGEAYg==\r\n")
        assert client.is_silent()


def test_auth_endless_challenge() -> None:
    with serve("auth_endless_challenge") as server, Client(server) as client:
        ehlo_to(client)
        (challenge,) = client.command(b"AUTH PLAIN AGEAYg==")
        seen = set()
        for _ in range(50):
            assert challenge.startswith(b"334 ")
            base64.b64decode(challenge[4:].strip(), validate=True)
            seen.add(challenge)
            (challenge,) = client.command(b"")
        assert len(seen) == 50


def test_noop_500() -> None:
    with serve("noop_500") as server, Client(server) as client:
        ehlo_to(client)
        assert client.command(b"NOOP") == [b"500 5.5.1 no\r\n"]


def test_quit_no_reply() -> None:
    with serve("quit_no_reply") as server, Client(server) as client:
        ehlo_to(client)
        client.send(b"QUIT\r\n")
        assert client.is_closed()


def test_quit_tarpit() -> None:
    with serve("quit_tarpit") as server, Client(server) as client:
        ehlo_to(client)
        client.send(b"QUIT\r\n")
        assert client.is_silent()
