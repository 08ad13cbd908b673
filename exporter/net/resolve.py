"""The system resolver, in lanes of threads per kind of caller, and its errors as the
resolve phase's ``ProbeError``s."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..config import ip_literal
from ..errors import ProbeError
from ..results import FailureKind, Phase
from .describe import describe

_FAMILIES = {"auto": socket.AF_UNSPEC, "ip4": socket.AF_INET, "ip6": socket.AF_INET6}
RESOLVER_THREADS = 64


class ResolverLane:
    """Threads for the system resolver, for one kind of caller.

    getaddrinfo cannot be cancelled: a probe stops waiting at its deadline, but the lookup
    keeps its thread until the resolver gives up (10 s and more for a name whose servers
    never answer). asyncio's default pool has a handful of threads, so a few hanging lookups
    would make every other probe wait in line; a lane is wide enough that they do not, and
    scheduled probes and /probe requests each have their own, so names that hang sent
    through /probe can only fill the /probe lane. ``busy`` counts lookups not finished,
    abandoned ones included, so a caller can refuse work instead of queueing it."""

    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        self.threads = threads
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, f"resolve-{name}")
        self._lock = threading.Lock()
        self._busy = 0

    @property
    def busy(self) -> int:
        """Lookups submitted and not finished (running or waiting for a thread)."""
        return self._busy

    @property
    def full(self) -> bool:
        return self._busy >= self.threads

    def _done(self, _: object) -> None:
        with self._lock:
            self._busy -= 1

    async def getaddrinfo(self, host: str, port: int, family: int) -> list[tuple[Any, ...]]:
        """``socket.getaddrinfo`` for a stream socket, in one of this lane's threads."""
        with self._lock:
            self._busy += 1
        try:
            future = self._pool.submit(socket.getaddrinfo, host, port, family, socket.SOCK_STREAM)
        except BaseException:
            self._done(None)
            raise
        # Done also when cancelled before it ran: a lookup that never started frees its place.
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)


@functools.cache
def scheduled_lane() -> ResolverLane:
    """The lane of scheduled probes (and of anything that names none)."""
    return ResolverLane("scheduled", RESOLVER_THREADS)


_LANE: contextvars.ContextVar[ResolverLane | None] = contextvars.ContextVar(
    "resolver_lane", default=None
)


@contextmanager
def resolver_lane(lane: ResolverLane) -> Iterator[None]:
    """Make ``resolve`` use ``lane`` in this task (and tasks it starts) while inside."""
    token = _LANE.set(lane)
    try:
        yield
    finally:
        _LANE.reset(token)


async def resolve(host: str, port: int, ip_protocol: str = "auto") -> str:
    """The address to connect to: ``host`` itself if it is an IP literal, else the first
    address the system resolver returns for the requested family (on the task's
    ``resolver_lane``, by default the scheduled probes' one)."""
    ip = ip_literal(host)
    if ip is not None:
        if (ip_protocol == "ip4" and ip.version != 4) or (ip_protocol == "ip6" and ip.version != 6):
            raise ProbeError(
                Phase.RESOLVE, FailureKind.DNS, f"{host} is not an {ip_protocol} address"
            )
        return str(ip)
    infos = await _lookup(host, port, ip_protocol)
    if not infos:
        raise ProbeError(Phase.RESOLVE, FailureKind.DNS, f"{host}: no addresses")
    return str(infos[0][4][0])


async def addresses(host: str, port: int, ip_protocol: str = "auto") -> list[str]:
    """Every address of ``host`` for the family (``both``: either), on the task's lane;
    raises ``ProbeError`` as ``resolve`` does."""
    family = "auto" if ip_protocol == "both" else ip_protocol
    if ip_literal(host) is not None:
        return [await resolve(host, port, family)]
    infos = await _lookup(host, port, family)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _lookup(host: str, port: int, family: str) -> list[Any]:
    """getaddrinfo on the task's resolver lane; its errors are the resolve phase's."""
    lane = _LANE.get() or scheduled_lane()
    try:
        return list(await lane.getaddrinfo(host, port, _FAMILIES[family]))
    except socket.gaierror as exc:
        raise ProbeError(Phase.RESOLVE, FailureKind.DNS, f"{host}: {exc.strerror}") from exc
    except (OSError, UnicodeError) as exc:
        raise ProbeError(Phase.RESOLVE, FailureKind.DNS, f"{host}: {describe(exc)}") from exc
