"""Line framing the sans-IO readers share: bytes in, complete lines out."""

from __future__ import annotations


def take_lines(buf: bytearray, data: bytes) -> list[bytes]:
    """Append ``data`` to ``buf`` and take out every complete line (ended by LF or CR LF,
    the ending removed); an unfinished line stays in ``buf`` for the caller to bound.

    Only the new bytes can hold a line end not seen yet, and every complete line is taken
    in one split: a reply of a dozen lines (EHLO, CAPA) comes as one chunk."""
    start = len(buf)
    buf += data
    end = buf.rfind(b"\n", start)
    if end == -1:
        return []
    complete = bytes(buf[:end]).split(b"\n")
    del buf[: end + 1]
    return [raw[:-1] if raw[-1:] == b"\r" else raw for raw in complete]
