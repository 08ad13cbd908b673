"""Pure SASL encoders for SMTP AUTH (RFC 4954). No I/O: they return the base64 strings sent."""

from __future__ import annotations

import base64

# Mechanisms the probe can speak, in the order it prefers them when the module says "auto".
SUPPORTED = ("PLAIN", "LOGIN")


def b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def plain(username: str, password: str, authzid: str = "") -> str:
    """RFC 4616 PLAIN initial response: authzid NUL authcid NUL passwd, base64-encoded."""
    return b64(f"{authzid}\0{username}\0{password}")


def choose(offered: tuple[str, ...], wanted: str) -> str | None:
    """The mechanism to use: ``wanted`` if the server offers it, or for ``auto`` the first of
    ``SUPPORTED`` the server offers; None when there is none."""
    if wanted != "auto":
        return wanted if wanted in offered else None
    return next((m for m in SUPPORTED if m in offered), None)
