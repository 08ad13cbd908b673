"""Start-up is done when every listener greets."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from .ports import Ports
from .stack import HOST


def _read_line(sock: socket.socket | ssl.SSLSocket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        buf += chunk
    return buf


def _greets(port: int, prefix: bytes, tls: ssl.SSLContext | None) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as raw:
            if tls is None:
                return _read_line(raw).startswith(prefix)
            with tls.wrap_socket(raw, server_hostname=HOST) as s:
                return _read_line(s).startswith(prefix)
    except (OSError, ssl.SSLError):
        return False


def wait_ready(
    ports: Ports, ca_file: Path, deadline: float, running: Callable[[], bool], weak: bool = False
) -> list[str]:
    """Wait until every listener greets; return the names of those that never did.

    Gives up early once ``running()`` is false (a master died: no point waiting).
    """
    ctx = ssl.create_default_context(cafile=str(ca_file))
    smtps_ctx = ctx
    if weak:  # its 1024-bit, SHA-1 signed certificate verifies at no default security level
        smtps_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        smtps_ctx.check_hostname = False
        smtps_ctx.verify_mode = ssl.CERT_NONE
        smtps_ctx.set_ciphers("ALL:@SECLEVEL=0")
    checks: dict[str, tuple[int, bytes, ssl.SSLContext | None]] = {
        "mx": (ports.mx, b"220", None),
        "submission": (ports.submission, b"220", None),
        "expired": (ports.expired, b"220", None),
        "wronghost": (ports.wronghost, b"220", None),
        "smtps": (ports.smtps, b"220", smtps_ctx),
        "imap": (ports.imap, b"* OK", None),
        "imaps": (ports.imaps, b"* OK", ctx),
        "pop3": (ports.pop3, b"+OK", None),
        "pop3s": (ports.pop3s, b"+OK", ctx),
    }
    # The bad certificates are the point of these listeners: greeting is all that counts.
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    for cert, mp in (("expired", ports.expired_mailbox), ("wronghost", ports.wronghost_mailbox)):
        checks[f"imap-{cert}"] = (mp.imap, b"* OK", None)
        checks[f"imaps-{cert}"] = (mp.imaps, b"* OK", unverified)
        checks[f"pop3-{cert}"] = (mp.pop3, b"+OK", None)
        checks[f"pop3s-{cert}"] = (mp.pop3s, b"+OK", unverified)
    pending = dict(checks)
    while pending and time.monotonic() < deadline and running():
        for name, (port, prefix, tls) in list(pending.items()):
            if _greets(port, prefix, tls):
                del pending[name]
        if pending:
            time.sleep(0.1)
    return [f"{n} ({HOST}:{p[0]})" for n, p in pending.items()]
