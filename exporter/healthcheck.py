"""``--healthcheck``: does the exporter that these flags describe answer ``/-/healthy``?

For a container's HEALTHCHECK, which cannot see the flags the exporter was started with:
``--healthcheck.of-pid 1`` reads ``--web.listen-address`` and ``--web.config.file`` from that
process's command line, so the check follows whatever ``docker run IMAGE --flags`` said.

The check speaks the exporter's own web config: HTTPS when it has ``tls_server_config``
(the certificate is not verified: this is the exporter on loopback, and its certificate
names the host as the world sees it). With ``basic_auth_users`` it holds only bcrypt hashes,
never a password, so a ``401`` asking for basic auth counts as alive: the HTTP server
answered and enforces what it was told to. When the web config requires a client
certificate the check has none to show, so a completed TLS handshake counts as alive.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from . import webconfig

TIMEOUT = 4.0  # under Docker's default HEALTHCHECK --timeout of 30 s, and ours of 5 s
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True, slots=True)
class Health:
    healthy: bool
    detail: str


def flags_of_process(pid: int) -> list[str]:
    """The flags of process ``pid`` (from ``/proc``), relative paths made absolute against its
    working directory. Interpreter arguments and the program name are left out: everything
    from the first ``--flag`` on (after an init's ``--``, as with ``docker run --init``)."""
    raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    args = [a.decode("utf-8", "surrogateescape") for a in raw if a]
    cwd = os.readlink(f"/proc/{pid}/cwd")
    start = next((i for i, a in enumerate(args) if a.startswith("--") and a != "--"), len(args))
    flags = args[start:]
    out: list[str] = []
    take_path = False
    for a in flags:
        if take_path:
            out.append(os.path.join(cwd, a))
            take_path = False
        elif a.startswith("--web.config.file="):
            out.append("--web.config.file=" + os.path.join(cwd, a.split("=", 1)[1]))
        else:
            out.append(a)
            take_path = a == "--web.config.file"
    return out


def check(host: str, port: int, web_config_file: str | None, timeout: float = TIMEOUT) -> Health:
    """GET ``/-/healthy`` on the exporter listening on ``host:port`` with that web config."""
    web = webconfig.load(web_config_file) if web_config_file else None
    host = _WILDCARDS.get(host, host)
    scheme = "https" if web is not None and web.tls is not None else "http"
    shown = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{shown}:{port}/-/healthy"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # ourselves, on loopback: see the module docstring
    tls = web.tls if web is not None else None
    if tls is not None and tls.client_auth_type.startswith("Require"):
        return _handshake_only(host, port, ctx, url, timeout)
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/-/healthy", headers={"User-Agent": "smtp-health-exporter/check"})
        resp = conn.getresponse()
        resp.read(4096)
    except ssl.SSLError as exc:
        return Health(False, f"{url}: TLS: {exc.reason or exc}")
    except (OSError, http.client.HTTPException) as exc:
        return Health(False, f"{url}: {getattr(exc, 'strerror', None) or exc}")
    finally:
        conn.close()
    if resp.status == 200:
        return Health(True, f"{url}: 200")
    if (
        resp.status == 401
        and web is not None
        and web.basic_auth_users
        and resp.getheader("WWW-Authenticate", "").startswith("Basic")
    ):
        return Health(True, f"{url}: 401, basic auth required")
    return Health(False, f"{url}: {resp.status} {resp.reason}")


def _handshake_only(host: str, port: int, ctx: ssl.SSLContext, url: str, timeout: float) -> Health:
    """With client certificates required, HTTP is out of reach (we hold none), but a TLS 1.3
    handshake completes on our side before the server judges our certificate: the exporter's
    TLS stack answered. (Capped at TLS 1.2 by the web config, the server ends the handshake
    itself, and the check fails.)"""
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw) as tls,
        ):
            version = tls.version()
    except (OSError, ssl.SSLError) as exc:
        return Health(False, f"{url}: TLS: {getattr(exc, 'reason', None) or exc}")
    return Health(True, f"{url}: {version} handshake answered, a client certificate is required")
