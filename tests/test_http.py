"""The HTTP front on the event loop: keep-alive, HEAD, and clients that misbehave."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.exporter_harness import RunningExporter, wait_for


@pytest.fixture
def exporter(tmp_path, smtp_server) -> Iterator[RunningExporter]:
    server = smtp_server(tls="none")
    config = tmp_path / "config.yml"
    config.write_text(
        "modules: {plain: {tls: none, timeout: 1s}}\n"
        f"targets: [{{target: '127.0.0.1:{server.port}', module: plain, interval: 1s}}]\n"
    )
    running = RunningExporter(config).start()
    try:
        assert wait_for(lambda: "smtp_probe_success{" in running.get("/metrics")[1])
        yield running
    finally:
        running.stop()


def _connect(exporter: RunningExporter) -> socket.socket:
    return socket.create_connection(("127.0.0.1", exporter.port), timeout=5)


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[str, dict[str, str], bytes]:
    """One response from a kept-alive connection; ``buffer`` keeps what follows it."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {bytes(buffer)!r}"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    buffer[:] = body[length:]
    return status, headers, bytes(body[:length])


def _status_of(exporter: RunningExporter, raw: bytes) -> str:
    with _connect(exporter) as sock:
        sock.sendall(raw)
        status, _, _ = _read_response(sock, bytearray())
        return status


def test_keep_alive_serves_several_requests_on_one_connection(exporter) -> None:
    with _connect(exporter) as sock:
        buffer = bytearray()
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        for _ in range(2):
            status, _, body = _read_response(sock, buffer)
            assert status == "HTTP/1.1 200 OK" and body == b"Healthy\n"
        sock.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = _read_response_head_only(sock, buffer)
        assert status == "HTTP/1.1 200 OK" and int(headers["content-length"]) > 1000
        assert body == b""
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, body = _read_response(sock, buffer)
        assert b"smtp_probe_success{" in body and headers.get("connection") == "close"
        assert sock.recv(1) == b""  # closed after the answer, as asked


def _read_response_head_only(
    sock: socket.socket, buffer: bytearray
) -> tuple[str, dict[str, str], bytes]:
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    buffer[:] = rest
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}, rest


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", "400"),
        (b"GET / SMTP/1.0\r\n\r\n", "400"),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", "414"),
        (b"GET / HTTP/1.1\r\nX: " + b"b" * 20000 + b"\r\n\r\n", "431"),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", "431"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", "400"),
        (b"POST /-/reload HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", "413"),
        (b"POST /-/reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "411"),
        (b"DELETE / HTTP/1.1\r\n\r\n", "501"),
        (b"GET /nope HTTP/1.1\r\n\r\n", "404"),
        (b"GET /probe HTTP/1.1\r\n\r\n", "400"),
    ],
)
def test_bad_requests_get_their_status(exporter, raw: bytes, status: str) -> None:
    assert _status_of(exporter, raw).split(" ")[1] == status


def test_stalled_clients_do_not_block_others(exporter) -> None:
    """Clients that connect and send half a request (or nothing) hold no one up."""
    stalled = [_connect(exporter) for _ in range(20)]
    try:
        for i, sock in enumerate(stalled):
            if i % 2:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: ")
        start = time.monotonic()
        status, body = exporter.get("/metrics")
        assert status == 200 and "smtp_probe_success{" in body
        assert time.monotonic() - start < 2
    finally:
        for sock in stalled:
            sock.close()


def test_a_client_that_does_not_read_its_scrape_does_not_stall_probes(exporter) -> None:
    """Requests /metrics again and again without reading: the answers pile up in the socket
    buffers, the server waits on that client alone, and probing goes on."""
    before = exporter.value("smtp_probes_total")
    assert before is not None
    with _connect(exporter) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 500)
        assert wait_for(lambda: (exporter.value("smtp_probes_total") or 0) >= before + 2, 5)


def test_the_exporter_answers_while_a_slow_config_loads(exporter) -> None:
    """A reload reads and validates the file in a worker thread: a config that takes a
    second to load (10,000 targets do) does not stop the loop serving or probing."""
    import threading

    loading = threading.Event()
    release = threading.Event()
    real_load = exporter.exporter._load

    def slow_load():
        loading.set()
        release.wait(10)
        return real_load()

    exporter.exporter._load = slow_load
    reply: list[tuple[int, str]] = []
    reloader = threading.Thread(target=lambda: reply.append(exporter.get("/-/reload", "POST")))
    reloader.start()
    try:
        assert loading.wait(5)
        start = time.monotonic()
        assert exporter.get("/-/healthy") == (200, "Healthy\n")
        assert time.monotonic() - start < 1
    finally:
        release.set()
        reloader.join(10)
    assert reply == [(200, "Reloaded\n")]
