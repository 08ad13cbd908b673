"""The shard cache: the /metrics body kept ready between scrapes as compressed pieces."""

from __future__ import annotations

import functools
import threading

from .. import gzipjoin
from ..store import Entry, ResultStore, TargetKey, key_of
from ..targets import offset_fraction
from .aggregate import discovery_text, domain_text, histogram_text
from .catalogue import PER_TARGET
from .samples import render_target

# Targets per shard: small enough that rebuilding the few shards a scrape interval's results
# touch is cheap, large enough that a scrape joins few pieces (10,000 targets: 40 shards).
SHARD_SIZE = 256
Block = tuple[bytes, ...]  # one per PER_TARGET family


class Renderer:
    """The /metrics body, kept ready between scrapes.

    A target's block is rendered when its result is recorded (the store calls ``update`` on
    the event loop), never by a scrape. Targets are grouped into shards in schedule order
    (the scheduler's stable offset), so the results that arrive between two scrapes fall in
    a few neighbouring shards; each shard keeps one compressed piece per family, rebuilt only
    when one of its targets changed. A scrape joins those pieces into one gzip member
    without touching the rest (``gzipjoin``), or inflates them one by one for a plain
    answer. Neither builds the whole text in memory.
    """

    def __init__(self, store: ResultStore) -> None:
        self._store = store
        self._lock = threading.Lock()  # _blocks and _dirty: the loop and scrapes share them
        self._scrape_lock = threading.Lock()  # one scrape (re)builds shards at a time
        self._blocks: dict[TargetKey, tuple[Entry, Block]] = {}
        self._dirty: set[int] = set()
        self._layout = -1
        self._shard_of: dict[TargetKey, int] = {}
        self._shards: list[list[TargetKey]] = []
        self._pieces: list[list[gzipjoin.Piece]] = []  # per shard, one per family
        store.listen(self.update)

    def update(self, entry: Entry) -> None:
        """Render a new entry now, in the recording thread."""
        block = _encode(render_target(entry))
        key = key_of(entry.target)
        with self._lock:
            self._blocks[key] = (entry, block)
            shard = self._shard_of.get(key)
            if shard is not None:
                self._dirty.add(shard)

    def pieces(self) -> list[gzipjoin.Piece]:
        """Every family in order: its HELP/TYPE piece, then each shard's piece."""
        with self._scrape_lock:
            with self._lock:
                if self._layout != self._store.layout_version:
                    self._relayout()
                dirty = {i: [self._blocks[k][1] for k in self._shards[i]] for i in self._dirty}
                self._dirty.clear()
            for i, blocks in dirty.items():
                # The shard's samples family by family (a shard is never empty).
                families = zip(*blocks, strict=True)
                self._pieces[i] = [gzipjoin.deflate(b"".join(f)) for f in families]
            out: list[gzipjoin.Piece] = []
            for f, header in enumerate(_headers()):
                out.append(header)
                out.extend(shard[f] for shard in self._pieces)
            tail = (
                discovery_text(self._store.discoveries())
                + domain_text(self._store.domains())
                + histogram_text(self._store)
            )
            out.append(gzipjoin.deflate(tail.encode()))
            return out

    def render(self) -> str:
        """The whole text at once (tests and benchmarks; the server streams pieces)."""
        return b"".join(gzipjoin.inflate(p) for p in self.pieces()).decode()

    def _relayout(self) -> None:
        """Targets came or went: regroup every entry into shards. Caller holds both locks;
        entries unchanged since their last render keep their blocks."""
        version = self._store.layout_version  # read first: a change after it relayouts again
        entries = self._store.entries()
        blocks: dict[TargetKey, tuple[Entry, Block]] = {}
        for entry in entries:
            key = key_of(entry.target)
            hit = self._blocks.get(key)
            blocks[key] = (
                hit
                if hit is not None and hit[0] is entry
                else (entry, _encode(render_target(entry)))
            )
        order = sorted(entries, key=lambda e: offset_fraction(e.target))
        keys = [key_of(e.target) for e in order]
        self._shards = [keys[i : i + SHARD_SIZE] for i in range(0, len(keys), SHARD_SIZE)]
        self._shard_of = {k: i // SHARD_SIZE for i, k in enumerate(keys)}
        self._pieces = [[] for _ in self._shards]
        self._dirty = set(range(len(self._shards)))
        self._blocks = blocks
        self._layout = version


def _encode(block: tuple[str, ...]) -> Block:
    return tuple(text.encode() for text in block)


@functools.cache
def _headers() -> tuple[gzipjoin.Piece, ...]:
    return tuple(
        gzipjoin.deflate(f"# HELP {s.name} {s.help}\n# TYPE {s.name} {s.type}\n".encode())
        for s in PER_TARGET
    )
