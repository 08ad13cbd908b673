"""HTTP endpoints: /metrics, /probe, a landing page, /-/healthy, /-/ready, POST /-/reload.

``request``: HTTP/1.1 parsing; ``routes``: what each path answers; ``page``: the HTML
landing page; ``server``: connections (keep-alive, deadlines, room, memory); ``tls``: TLS
below a connection, over memory BIOs, its state made at the client's first bytes.

A small HTTP/1.1 server on the exporter's event loop (asyncio streams, keep-alive, TLS and
basic auth from --web.config.file). On the loop, a /probe request awaits its probe in its
own coroutine, as a scheduled probe does: no thread hand-offs (which cost /probe a third of
its CPU when it was served from threads). /metrics is built on the loop too: compressing the
shards that changed takes ~30-50 ms at 10,000 targets, once per scrape, and a worker thread
measured slower (zlib hands the GIL to the busy loop and back hundreds of times a scrape).
bcrypt checks, tens of milliseconds each, run in a pool of their own unless the credentials
passed recently; a plain (uncompressed) /metrics is inflated on the loop 16 KiB at a time,
each piece written only once the client has taken the one before.

Limits protect memory and file descriptors without locking anyone out: an idle
connection costs a few KiB, so many are allowed (a cap sized from RLIMIT_NOFILE), and when
the cap is reached the connection idle the longest is closed to make room. A connection
must deliver its first complete request (TLS handshake included) within
``FIRST_REQUEST_TIMEOUT``; a kept-alive one may wait ``KEEPALIVE_TIMEOUT`` for its next,
which then has ``REQUEST_TIMEOUT``. A request's line and headers are bounded per line, in
count and in bytes (``MAX_HEADER_BYTES``, 431), and all requests being read together by
``HEADER_BUDGET`` (503); an answer is written in ``WRITE_CHUNK`` pieces with backpressure
and must be taken within ``RESPONSE_TIMEOUT``.
"""

from ..httplimits import connection_cap
from .request import MAX_BODY, MAX_HEADER_BYTES, MAX_HEADERS, MAX_LINE, BadRequest, Request
from .routes import CONTENT_TYPE, RESPONSE_TIMEOUT, App, Routes, WebAuth
from .server import (
    FIRST_REQUEST_TIMEOUT,
    KEEPALIVE_TIMEOUT,
    REQUEST_TIMEOUT,
    RESERVED_FDS,
    Server,
)

__all__ = [
    "CONTENT_TYPE",
    "FIRST_REQUEST_TIMEOUT",
    "KEEPALIVE_TIMEOUT",
    "MAX_BODY",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_LINE",
    "REQUEST_TIMEOUT",
    "RESERVED_FDS",
    "RESPONSE_TIMEOUT",
    "App",
    "BadRequest",
    "Request",
    "Routes",
    "Server",
    "WebAuth",
    "connection_cap",
]
