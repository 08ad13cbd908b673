"""One gzip member from pieces compressed independently, so a scrape can reuse the
compressed text of every shard whose targets did not change.

Concatenated gzip *members* would be simpler (RFC 1952 2.2 allows a series of them) but
curl, browsers and several HTTP libraries decode only the first member, so the answer must
be a single member. Each piece is raw deflate ending with a sync flush (byte-aligned, not
final), and such pieces concatenate into one valid deflate stream; the trailer's CRC-32 of
the whole text is combined from the pieces' CRCs (zlib's crc32_combine, here with per-bit
tables), so no piece is ever decompressed or re-read to answer a scrape.
"""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass

# Level 1: the exposition text is so repetitive that level 1 already gets ~17x, at several
# times the speed of the default level.
LEVEL = 1
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, no mtime, OS unknown
_FINAL = zlib.compressobj(LEVEL, zlib.DEFLATED, -15).flush()  # an empty final block


@dataclass(frozen=True, slots=True)
class Piece:
    """Raw deflate data of ``length`` bytes of text whose CRC-32 is ``crc``."""

    data: bytes
    crc: int
    length: int


def deflate(text: bytes) -> Piece:
    comp = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
    data = comp.compress(text) + comp.flush(zlib.Z_SYNC_FLUSH)
    return Piece(data, zlib.crc32(text), len(text))


def join(pieces: list[Piece]) -> list[bytes]:
    """The gzip member holding the pieces' texts in order, as chunks to write."""
    crc, length = 0, 0
    out = [_HEADER]
    for piece in pieces:
        if piece.length:
            crc = crc32_combine(crc, piece.crc, piece.length)
            length += piece.length
            out.append(piece.data)
    out.append(_FINAL)
    out.append(struct.pack("<II", crc, length & 0xFFFFFFFF))
    return out


def inflate(piece: Piece) -> bytes:
    return zlib.decompressobj(-15).decompress(piece.data)


# --- CRC-32 combination -------------------------------------------------------------
# crc(A + B) = shift(crc(A), len(B)) ^ crc(B), where shift appends len(B) zero bytes to
# the CRC register: a linear map over GF(2). _SHIFT[k] holds the map for 2**k bytes as four
# 256-entry tables (one per byte of the register), so a shift costs four lookups per set
# bit of the length instead of zlib's 32x32 matrix products.


def _apply(matrix: list[int], vector: int) -> int:
    out, i = 0, 0
    while vector:
        if vector & 1:
            out ^= matrix[i]
        vector >>= 1
        i += 1
    return out


def _square(matrix: list[int]) -> list[int]:
    return [_apply(matrix, matrix[n]) for n in range(32)]


def _tables(matrix: list[int]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(_apply(matrix, b << (8 * i)) for b in range(256)) for i in range(4))


@functools.cache
def _shift_tables() -> list[tuple[tuple[int, ...], ...]]:
    one_bit = [0xEDB88320] + [1 << n for n in range(31)]  # the register shifted one bit
    matrix = _square(_square(_square(one_bit)))  # 8 bits: one zero byte
    tables = []
    for _ in range(33):  # up to 2**32 bytes: a gzip member's ISIZE wraps there anyway
        tables.append(_tables(matrix))
        matrix = _square(matrix)
    return tables


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of A + B from crc1 = crc32(A), crc2 = crc32(B) and len(B)."""
    shift, k = _shift_tables(), 0
    while length2:
        if length2 & 1:
            t0, t1, t2, t3 = shift[k]
            crc1 = (
                t0[crc1 & 0xFF] ^ t1[(crc1 >> 8) & 0xFF] ^ t2[(crc1 >> 16) & 0xFF] ^ t3[crc1 >> 24]
            )
        length2 >>= 1
        k += 1
    return crc1 ^ crc2
