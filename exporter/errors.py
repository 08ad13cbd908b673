"""The exporter's exception tree.

::

    ExporterError
    ├── ConfigError                 bad config file or flags; names file and key path
    └── ProbeError(phase, kind)     anything that ends a probe; never escapes probe.run()
        ├── ProtocolError           malformed / oversized / unexpected bytes from the server
        ├── ReplyError              well-formed reply with an unwanted code (.code, .enhanced)
        └── TLSError                handshake, verification or hostname failure

Timeouts are not an exception of ours: the probe runs under one ``asyncio.timeout_at`` and
the boundary maps the resulting ``TimeoutError`` to the phase that was running.
"""

from __future__ import annotations

from .results import FailureKind, Phase


class ExporterError(Exception):
    """Root of every error the exporter raises on purpose."""


class ConfigError(ExporterError):
    """Invalid configuration. The message names the file and the key path."""

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None):
        self.file = file
        self.path = path
        where = ": ".join(p for p in (file, path) if p)
        super().__init__(f"{where}: {message}" if where else message)


class ProbeError(ExporterError):
    """Ends a probe: carries the phase it happened in and a failure kind."""

    def __init__(self, phase: Phase, kind: FailureKind, detail: str):
        self.phase = phase
        self.kind = kind
        self.detail = detail
        super().__init__(phase, kind, detail)

    def __str__(self) -> str:
        return f"{self.phase}: {self.kind}: {self.detail}"


class ProtocolError(ProbeError):
    """The server sent bytes that are not a valid SMTP reply, or too many of them."""

    def __init__(self, detail: str, phase: Phase = Phase.GREETING):
        super().__init__(phase, FailureKind.PROTOCOL, detail)


class ReplyError(ProbeError):
    """A well-formed reply whose code is not the one the phase needs."""

    def __init__(self, phase: Phase, code: int, enhanced: str | None, text: str):
        self.code = code
        self.enhanced = enhanced
        super().__init__(phase, FailureKind.REPLY, text)


class TLSError(ProbeError):
    """TLS could not be established or the certificate was not acceptable."""
