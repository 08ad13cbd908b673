"""A prototype for docs/performance.md, NOT part of the exporter: the real exporter, plus its
``/probe`` answered from the event loop by a minimal asyncio HTTP/1.1 server, so
``throughput.py`` can compare the thread-per-connection front (``exporter.http``) with a
front that awaits the probe in the request's own coroutine.

    python bench/_probe_asyncio.py CONFIG PORT ASYNC_PORT

The exporter serves as usual on PORT; ASYNC_PORT answers ``GET /probe?target=&module=``
only (keep-alive, no auth, no scrape-timeout header), with the same code path after the
HTTP layer: ``Exporter._probe_once`` (the scheduler's probe slots, ``probe.run``) and
``render_probe``.
"""

from __future__ import annotations

import argparse
import asyncio
import urllib.parse

from exporter import config
from exporter.app import Exporter
from exporter.cli import setup_logging
from exporter.metrics import render_probe

MAX_HEADER_LINES = 100


async def answer(app: Exporter, path: str) -> tuple[int, bytes]:
    cfg = app.config
    assert cfg is not None
    query = urllib.parse.parse_qs(path.partition("?")[2])
    name = (query.get("module") or [""])[0]
    target = (query.get("target") or [""])[0]
    module = cfg.modules.get(name)
    if module is None or not target:
        return 400, b"target and a known module are required\n"
    host, port = config.parse_target(target, module.default_port)
    entries = await app._probe_once(
        config.Target(target, host, port, module), module.timeout, cfg.dns
    )
    return 200, render_probe(entries).encode()


def serve(app: Exporter, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                for _ in range(MAX_HEADER_LINES):
                    if (await reader.readline()).strip() == b"":
                        break
                parts = line.decode("latin-1").split(" ")
                status, body = await answer(app, parts[1] if len(parts) > 1 else "/")
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Bad Request'}\r\n"
                    "Content-Type: text/plain; version=0.0.4\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start() -> None:
        await asyncio.start_server(handle, "127.0.0.1", port)
        print(f"async /probe on {port}", flush=True)

    asyncio.get_running_loop().create_task(start())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("port", type=int)
    p.add_argument("async_port", type=int)
    args = p.parse_args()
    setup_logging("warn", "logfmt")
    app = Exporter(lambda: config.load(args.config), ("127.0.0.1", args.port))
    app.load_initial()
    asyncio.run(app.run(started=lambda a: serve(a, args.async_port)))


if __name__ == "__main__":
    main()
