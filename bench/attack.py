"""The exporter's HTTP server under attack (issue #14): what a well-behaved scraper sees while
each attack runs, and the exporter's resident memory before, during and after it.

    python bench/attack.py [--targets 2000] [--only idle,slow,headers,sighup,parser,tls,auth]

Two real exporters (``python -m exporter``), each a subprocess on loopback:

* **fleet**: N STARTTLS + AUTH targets (``bench/_fleet.py``), so /metrics is full size.
  Attacks: 512 and 2,000 idle connections that send nothing and reconnect every 30 s;
  500 slow readers of the uncompressed /metrics (8 KiB receive buffer, never read);
  500 clients sending 99 header lines of 16,000 bytes and never ending the request;
  100 SIGHUPs within a second; the request parser's answers to smuggling-shaped input.
* **auth**: one target, ``--web.config.file`` with TLS and bcrypt users (cost 10 and 12).
  Attacks: 2,000 idle connections that complete the TLS handshake and send nothing;
  300 connections sending wrong passwords as fast as they are answered; and the time an
  unknown user's rejection takes against a known user's (user enumeration).

During each attack a scraper asks, on a new connection each time, for /metrics (gzip, as
Prometheus does) and /-/healthy, alternately every 0.5 s. The bars from the issue: every
answer within 1 s, and RSS back within 20 % of its pre-attack value (``ok`` columns).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import re
import resource
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import _common as c
import _fleet
import bcrypt

from exporter.embedded import make_certificates

SCRAPE_EVERY = 0.5
SCRAPE_TIMEOUT = 5.0
BAR_SECONDS = 1.0
BAR_RSS = 0.20
SETTLE = 15.0  # seconds after an attack before the "after" RSS


@dataclass
class Target:
    """Where the scraper and attackers connect."""

    port: int
    pid: int
    tls: ssl.SSLContext | None = None
    auth: str | None = None  # the scraper's Authorization header

    def rss(self) -> int:
        return c.proc_status(self.pid, "VmRSS")


@dataclass
class Scrapes:
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def row(self) -> list[object]:
        total = len(self.seconds) + len(self.failures)
        good = sum(s <= BAR_SECONDS for s in self.seconds)
        p95 = c.percentile(self.seconds, 0.95) if self.seconds else float("nan")
        worst = max(self.seconds, default=float("nan"))
        return [f"{good}/{total}", f"{p95 * 1000:.0f} ms", f"{worst * 1000:.0f} ms"]


# --- a minimal HTTP/1.1 client -------------------------------------------------------------


async def request(
    t: Target,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    timeout: float = SCRAPE_TIMEOUT,
) -> tuple[int, int, float]:
    """(status, body bytes, seconds) on a new connection, ``Connection: close``."""
    start = time.perf_counter()
    hdrs = {"Host": "x", "Connection": "close", **(headers or {})}
    if t.auth and "Authorization" not in hdrs:
        hdrs["Authorization"] = t.auth
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", t.port, ssl=t.tls, server_hostname="localhost" if t.tls else None
        )
        try:
            writer.write(head.encode() + b"\r\n")
            data = await reader.read()
        finally:
            writer.transport.abort()
    status_line = data.split(b"\r\n", 1)[0].split(b" ")
    if len(status_line) < 2:
        raise ConnectionError(f"no answer ({len(data)} bytes)")
    body = data.partition(b"\r\n\r\n")[2]
    return int(status_line[1]), len(body), time.perf_counter() - start


async def scraper(t: Target, stop: asyncio.Event, out: Scrapes) -> None:
    paths = [("/metrics", {"Accept-Encoding": "gzip"}), ("/-/healthy", {})]
    i = 0
    while not stop.is_set():
        path, headers = paths[i % 2]
        i += 1
        try:
            status, size, seconds = await request(t, path, headers=headers)
            if status == 200 and size > 0:
                out.seconds.append(seconds)
            else:
                out.failures.append(f"{path}: {status}")
        except (OSError, TimeoutError, ConnectionError) as exc:
            out.failures.append(f"{path}: {type(exc).__name__}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SCRAPE_EVERY)


# --- attackers ------------------------------------------------------------------------------


async def idle_attacker(t: Target, stop: asyncio.Event, reconnect: float = 30.0) -> None:
    """Connect (and finish the TLS handshake, if any), send nothing; once the server closes
    the connection or ``reconnect`` seconds pass, connect again on the next 30 s tick."""
    while not stop.is_set():
        began = time.monotonic()
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1", t.port, ssl=t.tls, server_hostname="localhost" if t.tls else None
                ),
                10,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1), reconnect)
        except (OSError, TimeoutError, ssl.SSLError):
            pass
        finally:
            if writer is not None:
                writer.transport.abort()
        rest = reconnect - (time.monotonic() - began)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(rest, 0.5))


def slow_reader(t: Target) -> socket.socket | None:
    """A plain /metrics request whose answer is never read (8 KiB receive buffer)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", t.port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    except OSError:
        s.close()
        return None
    return s


async def header_stuffer(t: Target, stop: asyncio.Event) -> None:
    """99 header lines of 16,000 bytes, then silence: the request never ends."""
    line = b"X-Pad-%02d: " + b"a" * 16000 + b"\r\n"
    payload = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"".join(
        line.replace(b"%02d", b"%02d" % i) for i in range(99)
    )
    writer = None
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", t.port), 10)
        writer.write(payload)
        await asyncio.wait_for(writer.drain(), 30)
        await stop.wait()
    except (OSError, TimeoutError):
        pass
    finally:
        if writer is not None:
            writer.transport.abort()


async def wrong_password_flood(t: Target, stop: asyncio.Event, counts: dict[int, int]) -> None:
    """Keep-alive GET /metrics with a wrong password, again as soon as it is answered."""
    bad = "Basic " + base64.b64encode(b"admin:wrong-password").decode()
    req = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {bad}\r\n\r\n".encode()
    while not stop.is_set():
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1", t.port, ssl=t.tls, server_hostname="localhost"
                ),
                10,
            )
            while not stop.is_set():
                writer.write(req)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                status = int(head.split(b" ", 2)[1])
                length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
                await reader.readexactly(length)
                counts[status] = counts.get(status, 0) + 1
                if b"Connection: close" in head:
                    break
        except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.1)
        finally:
            if writer is not None:
                writer.transport.abort()


# --- the attacks ----------------------------------------------------------------------------


async def under_attack(
    t: Target, attack: Callable[[asyncio.Event], Awaitable[object]], seconds: float
) -> tuple[Scrapes, int, int, int]:
    """Run ``attack`` for ``seconds`` with the scraper alongside: (scrapes, RSS before,
    peak RSS during, RSS ``SETTLE`` s after)."""
    before = t.rss()
    stop = asyncio.Event()
    scrapes = Scrapes()
    attack_task = asyncio.ensure_future(attack(stop))
    await asyncio.sleep(1)  # the attack is under way before measuring
    scrape_task = asyncio.ensure_future(scraper(t, stop, scrapes))
    peak = before
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, t.rss())
        await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(attack_task, scrape_task, return_exceptions=True)
    await asyncio.sleep(SETTLE)
    return scrapes, before, peak, t.rss()


def idle(t: Target, n: int) -> Callable[[asyncio.Event], Awaitable[object]]:
    async def attack(stop: asyncio.Event) -> None:
        tasks = []
        for i in range(n):
            tasks.append(asyncio.ensure_future(idle_attacker(t, stop)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)
        await asyncio.gather(*tasks)

    return attack


def slow(t: Target, n: int) -> Callable[[asyncio.Event], Awaitable[object]]:
    async def attack(stop: asyncio.Event) -> None:
        socks = []
        for _ in range(n):
            s = await asyncio.to_thread(slow_reader, t)
            if s is not None:
                socks.append(s)
        await stop.wait()
        for s in socks:
            s.close()

    return attack


def headers(t: Target, n: int) -> Callable[[asyncio.Event], Awaitable[object]]:
    async def attack(stop: asyncio.Event) -> None:
        await asyncio.gather(*(header_stuffer(t, stop) for _ in range(n)))

    return attack


def row(name: str, r: tuple[Scrapes, int, int, int]) -> list[object]:
    scrapes, before, peak, after = r
    back = after <= before * (1 + BAR_RSS)
    all_fast = all(s <= BAR_SECONDS for s in scrapes.seconds) and not scrapes.failures
    return [
        name,
        *scrapes.row(),
        c.mib(before),
        c.mib(peak),
        c.mib(after),
        "ok" if all_fast and back else "FAIL",
    ]


HEAD = ["attack", "answered <= 1 s", "p95", "max", "RSS before", "peak", "after 15 s", "bars"]


async def fleet_attacks(t: Target, only: set[str], log: Path) -> None:
    if "parser" in only:
        await parser_checks(t)
    rows = []
    if "idle" in only:
        rows.append(row("512 idle connections", await under_attack(t, idle(t, 512), 40)))
        rows.append(row("2,000 idle connections", await under_attack(t, idle(t, 2000), 40)))
    if "slow" in only:
        rows.append(row("500 slow readers, plain", await under_attack(t, slow(t, 500), 25)))
    if "headers" in only:
        rows.append(row("500 x 99 headers of 16 kB", await under_attack(t, headers(t, 500), 20)))
    if rows:
        print(c.table(HEAD, rows), flush=True)
    if "sighup" in only:  # last: before the fix, its reloads went on for minutes
        await sighup_flood(t, log)


async def sighup_flood(t: Target, log: Path) -> None:
    def reloads() -> int:
        return log.read_text(errors="replace").count("configuration reloaded")

    first = reloads()
    stop = asyncio.Event()
    scrapes = Scrapes()
    task = asyncio.ensure_future(scraper(t, stop, scrapes))
    start = time.monotonic()
    for _ in range(100):
        os.kill(t.pid, signal.SIGHUP)
        await asyncio.sleep(0.01)
    last_change, seen = time.monotonic(), reloads()
    while time.monotonic() - last_change < 5 and time.monotonic() - start < 120:
        await asyncio.sleep(0.25)
        now = reloads()
        if now != seen:
            seen, last_change = now, time.monotonic()
    stop.set()
    await task
    p95 = c.percentile(scrapes.seconds, 0.95) if scrapes.seconds else float("nan")
    print(
        f"\n100 SIGHUPs in {1:.0f} s: {seen - first} reloads, the last done "
        f"{last_change - start:.1f} s after the first signal; scraper meanwhile "
        f"{scrapes.row()[0]} within 1 s, p95 {p95 * 1000:.0f} ms",
        flush=True,
    )


PARSER_CASES = [
    ("Content-Length: +2", b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\nxx"),
    ("Content-Length: 1_0", b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n"),
    (
        "Content-Length: 2 and 3",
        b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nxxx",
    ),
    ("HTTP/1.banana", b"GET /-/healthy HTTP/1.banana\r\nHost: x\r\n\r\n"),
]


async def parser_checks(t: Target) -> None:
    rows = []
    for name, raw in PARSER_CASES:
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
        writer.write(raw)
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
        except TimeoutError:
            line = b"(no answer in 5 s)"
        writer.transport.abort()
        rows.append([name, line.decode("latin-1").strip()])
    reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
    writer.write(
        b"POST /nope HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )
    try:
        line = await asyncio.wait_for(reader.readline(), 2)
    except TimeoutError:
        line = b"(nothing within 2 s)"
    writer.transport.abort()
    rows.append(["Expect: 100-continue, body held back", line.decode("latin-1").strip()])
    print("\n" + c.table(["request", "first answer line"], rows), flush=True)


async def auth_attacks(t: Target, only: set[str]) -> None:
    if "tls" in only:
        rows = [row("2,000 idle TLS connections", await under_attack(t, idle(t, 2000), 40))]
        print(c.table(HEAD, rows), flush=True)
    if "auth" not in only:
        return

    # User enumeration: one rejection each, alternating, with no other load.
    def hdr(user: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:nope".encode()).decode()}

    times: dict[str, list[float]] = {
        "nobody (unknown)": [],
        "ops (cost 10)": [],
        "admin (cost 12)": [],
    }
    for _ in range(5):
        for label, user in (
            ("nobody (unknown)", "nobody"),
            ("ops (cost 10)", "ops"),
            ("admin (cost 12)", "admin"),
        ):
            _, _, seconds = await request(t, "/-/healthy", headers=hdr(user), timeout=30)
            times[label].append(seconds)
    print(
        "\nwrong password, median of 5: "
        + ", ".join(f"{k} {sorted(v)[2] * 1000:.0f} ms" for k, v in times.items()),
        flush=True,
    )

    # 300 connections of wrong passwords; meanwhile first logins, cached scrapes, a reload.
    counts: dict[int, int] = {}
    stop = asyncio.Event()
    flood = [asyncio.ensure_future(wrong_password_flood(t, stop, counts)) for _ in range(300)]
    await asyncio.sleep(5)
    before = dict(counts)
    t0 = time.monotonic()
    out: list[list[object]] = []

    async def timed(label: str, path: str, **kw: object) -> None:
        start = time.perf_counter()
        try:
            status: object = (await request(t, path, timeout=60, **kw))[0]  # type: ignore[arg-type]
        except (OSError, TimeoutError, ConnectionError) as exc:
            status = type(exc).__name__
        out.append([label, status, f"{(time.perf_counter() - start) * 1000:.0f} ms"])

    for user in ("first1", "first2", "first3"):
        auth = "Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
        await timed("first login", "/-/healthy", headers={"Authorization": auth})
    for _ in range(3):
        await timed("plain /metrics, cached login", "/metrics")
        await timed("POST /-/reload, cached login", "/-/reload", method="POST")
    elapsed = time.monotonic() - t0
    rate = {k: (v - before.get(k, 0)) / elapsed for k, v in counts.items()}
    stop.set()
    await asyncio.gather(*flood, return_exceptions=True)
    print(
        "\n300 connections of wrong passwords: answers per second "
        + ", ".join(f"{k}: {v:.1f}" for k, v in sorted(rate.items()))
    )
    print(c.table(["request during the flood", "status", "seconds"], out), flush=True)


PASSWORDS = {
    "admin": "admin-pass",
    "ops": "ops-pass",
    "first1": "p1",
    "first2": "p2",
    "first3": "p3",
}


@contextlib.contextmanager
def auth_exporter(work: Path) -> Iterator[Target]:
    certs = make_certificates(work / "certs")
    costs = {"admin": 12, "ops": 10, "first1": 12, "first2": 12, "first3": 12}
    users = "\n".join(
        f"  {u}: '{bcrypt.hashpw(PASSWORDS[u].encode(), bcrypt.gensalt(rounds=costs[u])).decode()}'"
        for u in ("ops", "admin", "first1", "first2", "first3")
    )
    web = work / "web.yml"
    web.write_text(
        f"tls_server_config: {{cert_file: {certs.cert_file}, key_file: {certs.key_file}}}\n"
        f"basic_auth_users:\n{users}\n"
    )
    cfg = work / "auth-config.yml"
    cfg.write_text(
        "modules: {plain: {tls: none, timeout: 1s}}\n"
        "targets: [{target: '127.0.0.1:9', module: plain, interval: 30s}]\n"
    )
    port = c.free_port()
    cmd = [*c.exporter_command(cfg, port), "--web.config.file", str(web)]
    ctx = ssl.create_default_context(cafile=str(certs.ca_file))
    auth = "Basic " + base64.b64encode(b"admin:admin-pass").decode()
    with c.child(cmd, work / "auth-exporter.log") as proc:
        deadline = time.monotonic() + 60
        t = Target(port, proc.pid, ctx, auth)
        while True:
            with contextlib.suppress(OSError, TimeoutError, ConnectionError):
                if asyncio.run(request(t, "/-/ready", timeout=30))[0] == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the auth exporter did not start; see " + str(work))
            time.sleep(0.2)
        yield t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", type=int, default=2000)
    p.add_argument("--interval", type=float, default=60.0, help="fleet probe interval, s")
    p.add_argument("--only", default="idle,slow,headers,sighup,parser,tls,auth")
    args = p.parse_args()
    only = set(args.only.split(","))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    c.warn_if_busy()
    work = Path(tempfile.mkdtemp(prefix="bench-attack-"))
    print(f"python {sys.version.split()[0]}, fd limit {hard}, work dir {work}", flush=True)
    if only & {"auth", "tls"}:
        with auth_exporter(work) as t:
            asyncio.run(auth_attacks(t, only))
    if only & {"idle", "slow", "headers", "sighup", "parser"}:
        # Info logs, so the SIGHUP flood's reloads can be counted.
        real = c.exporter_command
        c.exporter_command = lambda cfg, port: [  # type: ignore[assignment]
            "info" if a == "warn" else a for a in real(cfg, port)
        ]
        # A long interval keeps the probes' CPU low (33 STARTTLS probes a second at 2,000),
        # so what the scraper sees is the attack's doing, not a busy loop.
        with _fleet.fleet(args.targets, work, interval=args.interval) as f:
            body, _ = f.metrics()
            print(f"fleet: {args.targets} targets, plain /metrics {c.mib(len(body))}", flush=True)
            t = Target(f.port, f.pid)
            asyncio.run(fleet_attacks(t, only, work / "exporter.log"))


if __name__ == "__main__":
    main()
