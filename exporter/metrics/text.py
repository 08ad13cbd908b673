"""The text exposition format's two primitives: label value escaping and sample values."""

from __future__ import annotations

import math


def escape(value: str) -> str:
    """A label value as the text format quotes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def fmt(value: float) -> str:
    """A sample value as the text format writes it: integers without a fraction (most of
    our values), Go's spellings of the infinities and NaN. repr() of a float is the
    shortest text that parses back to it, which is all the format asks."""
    if value.__class__ is int or value.__class__ is bool:
        return str(int(value))
    if value == value and value not in (math.inf, -math.inf):
        return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
