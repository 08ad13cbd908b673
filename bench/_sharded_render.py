"""A prototype of the /metrics design proposed in docs/performance.md — NOT used by the
exporter; ``render.py`` measures it beside ``exporter.metrics.Renderer``.

Three changes against the current renderer, which re-renders every target whose result
changed since the last scrape, joins one big ``str``, concatenates the exporter's own
metrics to it, encodes it and (for Prometheus, which asks for gzip) compresses all of it:

1. ``update(entry)`` renders a target's block (as ``bytes``) when its result is recorded,
   so a scrape never formats samples; the cost is spread over the interval on the loop.
2. Targets are grouped into shards of ``SHARD`` targets in schedule order (the scheduler's
   stable offset), so the results that arrive between two scrapes touch few shards; each
   shard keeps its per-family ``bytes`` and, compressed once, a gzip member of each.
3. A scrape returns the pieces (family headers + each shard's piece), never one joined
   string: the body is written piece by piece. gzip answers are the concatenated members —
   a valid gzip stream (RFC 1952 2.2: a file is a series of members), which Go's
   ``compress/gzip`` (Prometheus) and Python's ``gzip`` read whole.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from exporter.metrics import PER_TARGET, render_target
from exporter.scheduler import offset_fraction
from exporter.store import Entry, TargetKey, key_of

SHARD = 256


def _gzip_member(data: bytes) -> bytes:
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    return comp.compress(data) + comp.flush()


HEADERS = [f"# HELP {s.name} {s.help}\n# TYPE {s.name} {s.type}\n".encode() for s in PER_TARGET]
HEADERS_GZ = [_gzip_member(h) for h in HEADERS]


@dataclass
class Shard:
    keys: list[TargetKey] = field(default_factory=list)
    dirty: bool = True
    plain: list[bytes] = field(default_factory=list)  # one piece per family
    gzipped: list[bytes] = field(default_factory=list)


class ShardedRenderer:
    def __init__(self, entries: list[Entry]) -> None:
        ordered = sorted(entries, key=lambda e: offset_fraction(e.target))
        self.blocks: dict[TargetKey, tuple[bytes, ...]] = {}
        self.shard_of: dict[TargetKey, Shard] = {}
        self.shards: list[Shard] = []
        for i, entry in enumerate(ordered):
            if i % SHARD == 0:
                self.shards.append(Shard())
            key = key_of(entry.target)
            self.shards[-1].keys.append(key)
            self.shard_of[key] = self.shards[-1]
            self.update(entry)

    def update(self, entry: Entry) -> None:
        """Called where the store records a result (the event loop): render it now."""
        key = key_of(entry.target)
        self.blocks[key] = tuple(s.encode() for s in render_target(entry))
        self.shard_of[key].dirty = True

    def pieces(self, gzip: bool) -> list[bytes]:
        """The /metrics body as pieces to write in order (rebuilding dirty shards)."""
        for shard in self.shards:
            if shard.dirty:
                blocks = [self.blocks[k] for k in shard.keys]
                shard.plain = [b"".join(b[i] for b in blocks) for i in range(len(PER_TARGET))]
                shard.gzipped = [_gzip_member(p) for p in shard.plain]
                shard.dirty = False
        out = []
        for i, header in enumerate(HEADERS):
            out.append(HEADERS_GZ[i] if gzip else header)
            out.extend(s.gzipped[i] if gzip else s.plain[i] for s in self.shards)
        return out
