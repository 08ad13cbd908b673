"""The probe's TLS layer (exporter/smtp/transport.py, TLS over memory BIOs): a real TLS
server on 127.0.0.1 in a thread, speaking just enough SMTP, that records how the client
ended the TLS session."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from exporter.net import tls
from exporter.results import Phase
from exporter.smtp.transport import Connection


@dataclass
class Ending:
    """What the server saw once the client was done."""

    close_notify: bool | None = None  # the client's close_notify arrived before its FIN
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def starttls_server(server_context: ssl.SSLContext) -> Iterator[tuple[int, Ending]]:
    """One connection: 220, then STARTTLS, then TLS; answers 250 to each command and 221
    to QUIT; then waits for the client to end the session, answering its close_notify."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    ending = Ending()

    def serve() -> None:
        try:
            sock, _ = listener.accept()
            sock.settimeout(10)
            sock.sendall(b"220 test ESMTP\r\n")
            assert sock.recv(1024).startswith(b"STARTTLS")
            sock.sendall(b"220 go ahead\r\n")
            # Ragged EOFs raise: a FIN without close_notify is told apart from one with.
            conn = server_context.wrap_socket(sock, server_side=True, suppress_ragged_eofs=False)
            while True:
                line = conn.recv(1024)
                conn.sendall(b"221 bye\r\n" if line.startswith(b"QUIT") else b"250 ok\r\n")
                if line.startswith(b"QUIT"):
                    break
            try:
                rest = conn.recv(1024)  # b"" once close_notify has arrived
                ending.close_notify = rest == b""
                conn.unwrap()  # our close_notify back
            except ssl.SSLEOFError:
                ending.close_notify = False
            sock.close()
        except Exception as exc:  # reported by the test, not lost in the thread
            ending.error = repr(exc)
        finally:
            ending.done.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], ending
    thread.join(15)
    listener.close()


def test_a_graceful_close_ends_tls_with_close_notify_and_waits_for_the_servers(
    starttls_server: tuple[int, Ending],
) -> None:
    port, ending = starttls_server

    async def session() -> Connection:
        conn = await Connection.open("127.0.0.1", port)
        assert (await conn.read_reply(Phase.GREETING)).code == 220
        assert (await conn.command("STARTTLS", Phase.STARTTLS)).code == 220
        obj = await conn.start_tls(tls.client_context(), "localhost")
        assert obj.version() is not None and conn.tls_object is obj
        assert (await conn.command("NOOP", Phase.NOOP)).code == 250
        assert (await conn.command("QUIT", Phase.QUIT)).code == 221
        conn.close(graceful=True)
        # The socket stays open for the server's close_notify, then closes at once (well
        # before the 2 s the shutdown may take at most).
        async with asyncio.timeout(1.5):
            while conn._transport is not None and not conn._transport.is_closing():
                await asyncio.sleep(0.01)
        return conn

    asyncio.run(session())
    assert ending.done.wait(10)
    assert ending.error is None
    assert ending.close_notify is True


def test_an_abort_sends_no_close_notify(starttls_server: tuple[int, Ending]) -> None:
    """The other half of the check above: the server does tell the two endings apart."""
    port, ending = starttls_server

    async def session() -> None:
        conn = await Connection.open("127.0.0.1", port)
        await conn.read_reply(Phase.GREETING)
        await conn.command("STARTTLS", Phase.STARTTLS)
        await conn.start_tls(tls.client_context(), "localhost")
        assert (await conn.command("QUIT", Phase.QUIT)).code == 221
        conn.close(graceful=False)

    asyncio.run(session())
    assert ending.done.wait(10)
    # An abort is a FIN (or a reset) without close_notify.
    assert ending.close_notify is False or (ending.error and "Reset" in ending.error)
