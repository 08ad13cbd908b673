"""The HTTP server's bounds on what clients can make it hold (issue #14): file descriptors,
header bytes, the part of an answer buffered for a slow reader, and heap kept after a surge.
Used by ``exporter.http``."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import resource
import zlib
from collections.abc import Callable, Iterator

from . import gzipjoin

# Idle connections cost a few KiB each: allow many, within the file descriptors left over.
CONNECTIONS_CEILING = 4096
# With TLS, a connection that has finished its handshake holds OpenSSL's state for it (about
# 20 KiB of RSS each, measured; asyncio's own TLS layer, no longer used, also gave each a
# 256 KiB buffer: 2,000 idle TLS connections took 400-560 MB). Beyond 1,024, the connection
# idle the longest makes room, as without TLS.
TLS_CONNECTIONS_CEILING = 1024
WRITE_CHUNK = 16384  # bytes handed to a client's transport before waiting for it to drain
INFLATE_STEP = 4096  # compressed bytes fed to zlib at a time (~70 KiB of text)
LINGER = 0.5  # after an error answer, how long to read what the client still sends


class HeaderBudget:
    """Bytes of request lines and headers held by every request being read (not thread-safe:
    the loop's alone)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n


def write_chunks(data: list[bytes]) -> Iterator[bytes]:
    """``data`` regrouped into writes of about ``WRITE_CHUNK`` bytes (slices, no copies of
    large pieces; small ones joined)."""
    batch: list[bytes] = []
    size = 0
    for item in data:
        view = memoryview(item)
        for i in range(0, len(view), WRITE_CHUNK):
            part = view[i : i + WRITE_CHUNK]
            batch.append(part)
            size += len(part)
            if size >= WRITE_CHUNK:
                yield b"".join(batch)
                batch, size = [], 0
    if batch:
        yield b"".join(batch)


def inflated(pieces: list[gzipjoin.Piece]) -> Iterator[bytes]:
    """The pieces' text, inflated ``WRITE_CHUNK`` bytes at a time. The compressed data goes
    in 4 KiB slices: zlib's ``unconsumed_tail`` is a copy of the input not yet used, so a
    whole piece fed at once cost a copy of the rest of it for every chunk out (a slow reader
    held a shard's worth, and the copying was quadratic)."""
    for piece in pieces:
        inflater = zlib.decompressobj(-15)
        view = memoryview(piece.data)
        for i in range(0, len(view), INFLATE_STEP):
            data: bytes | memoryview = view[i : i + INFLATE_STEP]
            while data:
                out = inflater.decompress(data, WRITE_CHUNK)
                data = inflater.unconsumed_tail
                if out:
                    yield out
        tail = inflater.flush()  # what a full output buffer held back at the input's end
        if tail:
            yield tail


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After an error answer, before closing: half-close and read (and drop) what the client
    is still sending, for a moment. Closing with unread data sends a reset, which makes the
    client's kernel drop the answer unread (Go waits 500 ms the same way)."""
    if not writer.can_write_eof():
        return
    with contextlib.suppress(TimeoutError, OSError):
        writer.write_eof()
        async with asyncio.timeout(LINGER):
            while await reader.read(65536):
                pass


def malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``: give free heap pages back to the system; None elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # musl, macOS: no such function
        return None
    trim.argtypes = [ctypes.c_size_t]

    def call() -> None:
        trim(0)

    return call


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one; the soft limit in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def connection_cap(fd_limit: int, reserved: int) -> int:
    """How many HTTP connections to keep open at once: the descriptors left after
    ``reserved`` (probes and the rest), at least a quarter of them, at most the ceiling."""
    return max(16, min(CONNECTIONS_CEILING, max(fd_limit - reserved, fd_limit // 4)))
