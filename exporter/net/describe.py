"""Socket and TLS errors in a few stable words."""

from __future__ import annotations

import errno
import ssl


def describe(exc: BaseException) -> str:
    """A short, stable description of a socket or TLS error, without addresses of ours."""
    if isinstance(exc, ssl.SSLError):
        return f"{type(exc).__name__}: {exc.reason or exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{name}: {exc.strerror}" if exc.strerror else name
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
