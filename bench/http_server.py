"""The exporter's hand-written HTTP/1.1 server against h11 and aiohttp (issue #16), each
serving the same /metrics pieces and /-/healthy on an asyncio loop.

    python bench/http_server.py [--targets 200] [--rounds 3] [--duration 2] [--clients 8]

h11 and aiohttp are optional and not dependencies of the exporter: install them for this
benchmark only (``pip install h11 aiohttp``, in a virtualenv made with
``--system-site-packages`` so the exporter's own dependencies stay visible); a server whose
library is missing is skipped with a note.

Each server runs in a process of its own (``--serve KIND``) over the same synthetic store of
N targets (``bench/render.py``'s complete STARTTLS + AUTH results) and answers with the same
application code: ``Server.metrics_pieces`` renders, overlapping /metrics requests share a
rendering (``Routes._rendering``), a gzip answer is the pieces joined into one member and a
plain one is inflated from them 16 KiB at a time (``exporter.httplimits``), each chunk
written once the client has taken the one before, and the loop is yielded to every 64 KiB
(``YIELD_EVERY``; which is also what lets overlapping requests share a rendering). Only the
HTTP layer differs: parsing, framing, keep-alive, the loop's protocol objects.

**hand**: ``exporter.http.Server`` itself. **h11**: asyncio streams + ``h11.Connection``
(sans-IO, as the reply parser is). **aiohttp**: ``aiohttp.web.Application`` with two
routes, ``AppRunner``/``TCPSite``, no access log.

The driver (this process, not counted) keeps ``--clients`` connections busy, each sending a
request as soon as the previous answer is read whole, on one kept-alive connection or a new
connection per request (``Connection: close``), for /metrics with and without
``Accept-Encoding: gzip`` and for /-/healthy. Rounds are interleaved: each case measures
every server in turn for ``--duration`` s (after 0.3 s of warm-up), the servers' order
rotating from round to round, so a change in the machine's load weighs on every server
alike. CPU is each server process's utime + stime from /proc over its own windows, divided
by the answers completed in them. Prints tables and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import _common as c

KINDS = ("hand", "h11", "aiohttp")
CASES = [  # (label, path, gzip, keep-alive)
    ("/-/healthy, keep-alive", "/-/healthy", False, True),
    ("/-/healthy, new connection", "/-/healthy", False, False),
    ("/metrics gzip, keep-alive", "/metrics", True, True),
    ("/metrics gzip, new connection", "/metrics", True, False),
    ("/metrics plain, keep-alive", "/metrics", False, True),
    ("/metrics plain, new connection", "/metrics", False, False),
]


# --- the servers (child processes) -----------------------------------------------------------


@dataclass
class _App:
    """What ``exporter.http.Server`` needs of the exporter for /metrics and /-/healthy."""

    store: object
    renderer: object
    own: object
    ready: bool = True
    config: object = None

    async def reload(self) -> str | None:
        return "not in this benchmark"

    async def probe(self, target: str, module: str | None, timeout: str | None) -> str:
        return ""


def _head(status: int, length: int, content_type: str, extra: dict[str, str]) -> list[tuple]:
    from exporter import __version__

    return [
        ("Server", f"smtp-health-exporter/{__version__}"),
        ("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())),
        ("Content-Type", content_type),
        ("Content-Length", str(length)),
        *extra.items(),
    ]


def _metrics_body(server: object, gzipped: bool, rendered: object) -> tuple[int, Iterator[bytes]]:
    """The /metrics answer's length and chunks, exactly as ``Routes._write_metrics`` makes
    them."""
    from exporter import gzipjoin
    from exporter.httplimits import inflated, write_chunks

    pieces = rendered.pieces  # type: ignore[attr-defined]
    if gzipped:
        if rendered.gzipped is None:  # type: ignore[attr-defined]
            rendered.gzipped = gzipjoin.join(pieces)  # type: ignore[attr-defined]
        chunks = rendered.gzipped  # type: ignore[attr-defined]
        return sum(map(len, chunks)), write_chunks(chunks)
    return sum(p.length for p in pieces), inflated(pieces)


async def _serve_h11(server: object, port: int) -> asyncio.Server:
    import h11

    from exporter.http.request import accepts_gzip
    from exporter.http.routes import CONTENT_TYPE, YIELD_EVERY
    from exporter.httplimits import WRITE_CHUNK

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                    continue
                if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return
                if not isinstance(event, h11.Request):
                    continue  # Data / EndOfMessage of a request already being answered
                while not isinstance(conn.next_event(), h11.EndOfMessage | type(h11.NEED_DATA)):
                    pass  # a GET has no body: its EndOfMessage follows at once
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                if event.target == b"/-/healthy":
                    body = b"Healthy\n"
                    head = _head(200, len(body), "text/plain; charset=utf-8", {})
                    writer.write(conn.send(h11.Response(status_code=200, headers=head)))
                    writer.write(conn.send(h11.Data(data=body)))
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                else:
                    gz = accepts_gzip(headers.get("accept-encoding", ""))
                    rendered = server._rendering()  # type: ignore[attr-defined]
                    try:
                        length, chunks = _metrics_body(server, gz, rendered)
                        extra = {"Vary": "Accept-Encoding"}
                        if gz:
                            extra["Content-Encoding"] = "gzip"
                        head = _head(200, length, CONTENT_TYPE, extra)
                        writer.write(conn.send(h11.Response(status_code=200, headers=head)))
                        writer.transport.set_write_buffer_limits(high=WRITE_CHUNK)
                        sent = 0
                        for chunk in chunks:
                            writer.writelines(conn.send_with_data_passthrough(h11.Data(chunk)))
                            await writer.drain()
                            sent += len(chunk)
                            if sent >= YIELD_EVERY:  # as Routes does: let other work in
                                sent = 0
                                await asyncio.sleep(0)
                        writer.write(conn.send(h11.EndOfMessage()))
                    finally:
                        server._done(rendered)  # type: ignore[attr-defined]
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(connection, "127.0.0.1", port, backlog=1024)


async def _serve_aiohttp(server: object, port: int) -> object:
    from aiohttp import web

    from exporter.http.request import accepts_gzip
    from exporter.http.routes import CONTENT_TYPE, YIELD_EVERY

    async def healthy(request: web.Request) -> web.Response:
        return web.Response(body=b"Healthy\n", content_type="text/plain", charset="utf-8")

    async def metrics(request: web.Request) -> web.StreamResponse:
        gz = accepts_gzip(request.headers.get("Accept-Encoding", ""))
        rendered = server._rendering()  # type: ignore[attr-defined]
        try:
            length, chunks = _metrics_body(server, gz, rendered)
            resp = web.StreamResponse(
                headers={"Content-Type": CONTENT_TYPE, "Vary": "Accept-Encoding"}
            )
            if gz:
                resp.headers["Content-Encoding"] = "gzip"
            resp.content_length = length
            await resp.prepare(request)
            sent = 0
            for chunk in chunks:
                await resp.write(chunk)  # drains once the transport's buffer is high
                sent += len(chunk)
                if sent >= YIELD_EVERY:  # as Routes does: let other work in
                    sent = 0
                    await asyncio.sleep(0)
            await resp.write_eof()
            return resp
        finally:
            server._done(rendered)  # type: ignore[attr-defined]

    app = web.Application()
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    return runner


def serve(kind: str, port: int, targets: int) -> None:
    from render import build

    from exporter.http import Server
    from exporter.metrics import Renderer
    from exporter.selfmetrics import ExporterMetrics

    async def main() -> None:
        store, _ = build(targets)
        app = _App(store, Renderer(store), ExporterMetrics())
        server = Server(app, ("127.0.0.1", port))  # type: ignore[arg-type]
        if kind == "hand":
            await server.start()
        elif kind == "h11":
            await _serve_h11(server, port)
        else:
            await _serve_aiohttp(server, port)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# --- the driver ------------------------------------------------------------------------------


def _request(path: str, gz: bool, keep: bool) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: x"]
    if gz:
        lines.append("Accept-Encoding: gzip")
    if not keep:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _client(port: int, req: bytes, keep: bool, until: float, done: list[int]) -> None:
    writer = None
    try:
        while time.monotonic() < until:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
            writer.write(req)
            status, _ = await _read_answer(reader)
            if status == 200:
                done[0] += 1
            else:
                done[1] += 1
            if not keep:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def _window(port: int, req: bytes, keep: bool, clients: int, seconds: float) -> int:
    done = [0, 0]
    until = time.monotonic() + seconds
    await asyncio.gather(*(_client(port, req, keep, until, done) for _ in range(clients)))
    if done[1]:
        raise RuntimeError(f"{done[1]} answers were not 200")
    return done[0]


@dataclass
class Cell:
    requests: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def rate(self) -> float:
        return sum(self.requests) / sum(self.seconds)

    def cpu_ms(self) -> float:
        return 1000 * sum(self.cpu) / sum(self.requests)

    def cpu_ms_rounds(self) -> list[float]:
        return [1000 * c / r for c, r in zip(self.cpu, self.requests, strict=True)]


async def _check_same_bodies(ports: dict[str, int]) -> str:
    """Every server answers /metrics with the same text, gzip or plain."""
    texts = {}
    for kind, port in ports.items():
        for gz in (True, False):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
            writer.write(_request("/metrics", gz, False))
            _, body = await _read_answer(reader)
            writer.close()
            texts[(kind, gz)] = gzip.decompress(body) if gz else body
    # The targets' samples are the same everywhere; the exporter's own (CPU, render time)
    # and the probes' timestamps (when the store was filled) differ from process to process.
    targets = {
        k: [x for x in t.split(b"\n") if b'target="' in x and b"_timestamp_" not in x]
        for k, t in texts.items()
    }
    first = next(iter(targets.values()))
    if any(t != first for t in targets.values()) or not first:
        raise RuntimeError("the servers' /metrics differ")
    size = max(map(len, texts.values()))
    return f"/metrics {size / 1e6:.2f} MB plain; the targets' samples alike from every server"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.targets)
        return
    kinds = ["hand"]
    for kind in ("h11", "aiohttp"):
        try:
            __import__(kind)
            kinds.append(kind)
        except ImportError:
            print(f"{kind} is not installed: skipped (pip install {kind})")
    c.warn_if_busy()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        for kind in kinds:
            ports[kind] = c.free_port()
            cmd = c.python(
                "http_server.py",
                "--serve",
                kind,
                "--port",
                str(ports[kind]),
                "--targets",
                str(args.targets),
            )
            proc = stack.enter_context(
                c.child(cmd, Path(tempfile.gettempdir()) / f"bench-http-{kind}.log")
            )
            procs[kind] = proc
        for kind in kinds:
            c.wait_http(f"http://127.0.0.1:{ports[kind]}/-/healthy", 120, procs[kind])
        print(asyncio.run(_check_same_bodies(ports)), flush=True)
        cells = {(case[0], kind): Cell() for case in CASES for kind in kinds}
        for r in range(args.rounds):
            order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
            if r % 2:
                order.reverse()
            for label, path, gz, keep in CASES:
                req = _request(path, gz, keep)
                for kind in order:
                    port = ports[kind]
                    asyncio.run(_window(port, req, keep, args.clients, 0.3))
                    cpu0, t0 = c.proc_cpu(procs[kind].pid), time.monotonic()
                    n = asyncio.run(_window(port, req, keep, args.clients, args.duration))
                    cell = cells[(label, kind)]
                    cell.cpu.append(c.proc_cpu(procs[kind].pid) - cpu0)
                    cell.seconds.append(time.monotonic() - t0)
                    cell.requests.append(n)
            print(f"round {r + 1} of {args.rounds} done (order {', '.join(order)})", flush=True)
    rows = []
    for label, *_ in CASES:
        hand = cells[(label, "hand")]
        for kind in kinds:
            cell = cells[(label, kind)]
            per_round = cell.cpu_ms_rounds()
            rows.append(
                [
                    label,
                    kind,
                    f"{cell.rate():.0f}",
                    f"{cell.cpu_ms():.3f}",
                    f"{min(per_round):.3f}-{max(per_round):.3f}",
                    f"{cell.cpu_ms() / hand.cpu_ms():.2f}x",
                    f"{cell.rate() / hand.rate():.2f}x",
                ]
            )
    print(
        f"\n{args.targets} targets, {args.clients} clients, {args.rounds} rounds of "
        f"{args.duration:g} s per server and case, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        c.table(
            [
                "case",
                "server",
                "requests/s",
                "CPU ms/request",
                "per round",
                "CPU vs hand",
                "req/s vs hand",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
