"""The canary's IMAP side: find the message carrying our token header, note when, delete it,
and sweep this exporter's own canaries that were never found in time.

Reading the mailbox is a check of its own: a session that cannot connect, log in or search
ends in an ``IMAPFailure`` (phase, kind, detail), and then nothing is known about delivery.
Deleting never runs a plain EXPUNGE, which would also remove every message another client
flagged ``\\Deleted``: with UIDPLUS (or IMAP4rev2) it is ``UID EXPUNGE`` of our own UIDs;
without, our messages are left flagged for whoever expunges the mailbox next.

imaplib is blocking and its timeouts are per socket operation, so a server dripping a byte a
second would hold it forever. The conversation therefore runs in a thread of its own under the
caller's one ``Deadline``: the socket timeout is re-armed to the time left before every read
and write, and when the deadline passes the event loop shuts the socket down, which wakes any
blocked read at once. Lines, literals and untagged data are capped so a server cannot grow us.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import imaplib
import re
import secrets
import socket
import ssl
import threading
import time
from email.parser import BytesHeaderParser
from typing import Any

# Where they were declared before the config package: kept importable from here.
from .config.features import parse_imap_config as parse_imap_config
from .config.model import IMAPConfig, IMAPTLSMode
from .deadline import Deadline
from .results import FailureKind, IMAPFailure, IMAPPhase

TOKEN_HEADER = "X-SMTP-Health-Canary"
TOKEN_PREFIX = "shx"  # tokens are shx.<owner: 12 hex>.<unix seconds sent>.<24 hex>
MAX_LINE = 64 * 1024  # imaplib's own cap is 1,000,000 per line, and it is module-global
MAX_LITERAL = 1024 * 1024  # a header fetch needs a few hundred bytes
MAX_UNTAGGED = 1024 * 1024  # bytes of untagged responses per command
MAX_CANDIDATES = 20  # UIDs verified per poll; HEADER search is substring-based
MAX_SWEEP = 100  # stale canaries removed per session; the rest wait for the next one
SWEEP_RESERVE = 1.0  # seconds that must be left for a sweep to start
MAX_ERROR = 256
LAST_POLL_RESERVE = 0.25  # seconds kept free after the last poll so it can finish

_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FETCH_UID = re.compile(rb"\bUID (\d+)")
_FETCH_DATE = re.compile(rb'INTERNALDATE "[^"]*"')
_RANDOM = re.compile(r"[0-9a-f]{24}")


@dataclasses.dataclass(frozen=True, slots=True)
class Sweep:
    """Which stale canaries a session removes: tokens of ``owner`` sent over ``max_age``
    seconds ago (by the token's own timestamp, so by this exporter's clock)."""

    owner: str
    max_age: float

    def sent_at(self, value: str) -> int | None:
        """The send time of a token of ours, or None for any other header value."""
        parts = value.split(".")
        if (
            len(parts) == 4
            and parts[0] == TOKEN_PREFIX
            and parts[1] == self.owner
            and parts[2].isdigit()
            and len(parts[2]) <= 12
            and _RANDOM.fullmatch(parts[3])
        ):
            return int(parts[2])
        return None


def owner_id(*parts: str) -> str:
    """A short, stable id of whose canaries these are (target and module), for the token."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def new_token(owner: str, sent_at: float) -> str:
    """A unique token that says whose canary it is and when it was sent (for the sweep).

    52 characters, so the header stays on one line (RFC 5322's 78): a folded value is
    something a server's HEADER search might not match."""
    return f"{TOKEN_PREFIX}.{owner}.{int(sent_at)}.{secrets.token_hex(12)}"


@dataclasses.dataclass(frozen=True, slots=True)
class IMAPCheck:
    """Outcome of one session: ``failure`` is None when the mailbox was read (and cleaned);
    ``error`` is the failure's detail, or why the canary was not found, or None."""

    found: bool
    seen_at: float | None  # time.time() when the poll that found it returned
    polls: int
    deleted: bool  # removed by UID EXPUNGE, or (without UIDPLUS) left flagged \Deleted
    error: str | None
    failure: IMAPFailure | None = None
    expunged: bool = False  # deleted for good (UID EXPUNGE), not only flagged
    swept: int = 0  # stale canaries of ours this session deleted
    late: int = 0  # of those, how many the server received after their timeout

    @property
    def access_ok(self) -> bool:
        return self.failure is None


class _Session:
    """State shared by the worker thread and the event loop."""

    def __init__(self, cfg: IMAPConfig, deadline: Deadline, sweep: Sweep | None) -> None:
        self.cfg = cfg
        self.deadline = deadline
        self.sweep = sweep
        self.phase = IMAPPhase.CONNECT
        self.polls = 0
        self.seen_at: float | None = None
        self.deleted = False
        self.expunged = False
        self.swept = 0
        self.late = 0
        self.uid_expunge: bool | None = None  # UID EXPUNGE offered; asked once, after login
        self.settled = False  # searched, deleted and swept: at most the logout is left
        self.concluded = False  # the worker has its answer
        self.failure: IMAPFailure | None = None
        self.not_found: str | None = None
        self.aborted = threading.Event()
        self._lock = threading.Lock()
        # A dup of the connection: shutdown() acts on the socket, not the descriptor, so the
        # loop can stop the worker without touching objects the worker is using.
        self._dup: socket.socket | None = None

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            if self.aborted.is_set():
                raise TimeoutError("deadline passed")
            self._dup = sock.dup()

    def release(self, abort: bool = False) -> None:
        """Drop the dup; with ``abort`` (the event loop's side) first wake and end the worker
        whatever it is blocked on."""
        if abort:
            self.aborted.set()
        with self._lock:
            dup, self._dup = self._dup, None
        if dup is not None:
            if abort:
                with contextlib.suppress(OSError):
                    dup.shutdown(socket.SHUT_RDWR)
            dup.close()

    def remaining(self) -> float:
        left = self.deadline.remaining()
        if left <= 0 or self.aborted.is_set():
            raise TimeoutError("deadline passed")
        return left

    def timeout_failure(self) -> IMAPFailure:
        detail = f"timeout after {self.deadline.budget:g}s during {self.phase.text}"
        return IMAPFailure(self.phase, FailureKind.TIMEOUT, detail)

    def result(self) -> IMAPCheck:
        """What is known now; a late failure (in the logout, say) does not undo the rest."""
        if self.settled:
            failure = None
        elif self.concluded:
            failure = self.failure
        else:
            failure = self.timeout_failure()
        if failure is not None:
            failure = dataclasses.replace(failure, detail=_clean(failure.detail, self.cfg) or "")
        error = failure.detail if failure is not None else self.not_found
        return IMAPCheck(
            found=self.seen_at is not None,
            seen_at=self.seen_at,
            polls=self.polls,
            deleted=self.deleted,
            error=error,
            failure=failure,
            expunged=self.expunged,
            swept=self.swept,
            late=self.late,
        )


class _IMAP(imaplib.IMAP4):
    """imaplib with the session's deadline on every read and write, and bounded memory."""

    def __init__(self, session: _Session, implicit: ssl.SSLContext | None) -> None:
        self._session = session
        self._implicit = implicit
        self._untagged = 0
        super().__init__(session.cfg.host, session.cfg.port, timeout=session.remaining())

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout)
        try:
            self._session.attach(sock)
            if self._implicit is not None:
                self._session.phase = IMAPPhase.TLS_HANDSHAKE
                sock = self._implicit.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self._session.phase = IMAPPhase.GREETING
        return sock

    def readline(self) -> bytes:
        self.sock.settimeout(self._session.remaining())
        line = self.file.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise self.abort(f"response line longer than {MAX_LINE} bytes")
        return line

    def read(self, size: int) -> bytes:
        if size > MAX_LITERAL:
            raise self.abort(f"literal of {size} bytes exceeds {MAX_LITERAL}")
        self.sock.settimeout(self._session.remaining())
        return self.file.read(size)

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self._session.remaining())
        super().send(data)

    def _command(self, name: str, *args: Any) -> bytes:
        self._untagged = 0
        return super()._command(name, *args)

    def _append_untagged(self, typ: str, dat: Any) -> None:
        parts = dat if isinstance(dat, tuple) else (dat,)
        self._untagged += 16 + sum(len(p or b"") for p in parts)
        if self._untagged > MAX_UNTAGGED:
            raise self.abort(f"more than {MAX_UNTAGGED} bytes of untagged responses")
        super()._append_untagged(typ, dat)


async def find_and_delete(
    cfg: IMAPConfig, token: str, deadline: Deadline, sweep: Sweep | None = None
) -> IMAPCheck:
    """Log in, select the folder, poll ``UID SEARCH HEADER`` for ``token`` every poll_interval
    until found or the deadline; delete only the matching message(s); with ``sweep``, also
    delete that owner's stale canaries; log out.

    Never raises (except cancellation) and returns within ~0.1 s of the deadline whatever the
    server does; a worker still blocked then is woken by shutting its socket down.
    """
    if not _TOKEN.fullmatch(token):
        detail = "invalid token: expected [A-Za-z0-9._-]{1,64}"
        failure = IMAPFailure(IMAPPhase.CONNECT, FailureKind.INTERNAL, detail)
        return IMAPCheck(False, None, 0, False, detail, failure)
    session = _Session(cfg, deadline, sweep)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[IMAPCheck] = loop.create_future()

    def deliver(result: IMAPCheck) -> None:
        if not done.done():
            done.set_result(result)

    def work() -> None:
        result = _run(session, token)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(deliver, result)

    # A thread of our own, not the default executor: a worker that must be abandoned (stuck
    # in getaddrinfo, say) then neither occupies a shared pool slot nor blocks loop shutdown.
    worker = threading.Thread(target=work, name=f"imapcheck {cfg.host}:{cfg.port}", daemon=True)
    try:
        worker.start()
    except RuntimeError as exc:
        failure = IMAPFailure(IMAPPhase.CONNECT, FailureKind.INTERNAL, f"no worker thread: {exc}")
        return IMAPCheck(False, None, 0, False, failure.detail, failure)
    try:
        async with asyncio.timeout_at(deadline.at):
            return await done
    except TimeoutError:
        return session.result()
    finally:
        if not done.done() or done.cancelled():
            session.release(abort=True)


class _Refused(Exception):
    """The server cannot be used as configured (no STARTTLS, no login method)."""

    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def _run(session: _Session, token: str) -> IMAPCheck:
    """The worker thread: the whole conversation, every failure turned into a reason."""
    imap: _IMAP | None = None
    clean = False
    failure: IMAPFailure | None = None
    try:
        cfg = session.cfg
        session.phase = IMAPPhase.TLS_SETUP
        ctx = None if cfg.tls is IMAPTLSMode.NONE else _tls_context(cfg)
        session.phase = IMAPPhase.CONNECT
        imap = _IMAP(session, ctx if cfg.tls is IMAPTLSMode.IMPLICIT else None)
        _converse(imap, session, token, ctx)
        clean = True
    except TimeoutError:
        failure = session.timeout_failure()
    except _Refused as exc:
        failure, clean = _failed(session, exc.kind, str(exc)), True
    except imaplib.IMAP4.abort as exc:  # the stream is out of step or closed
        text = _text(exc)
        eof = "EOF" in text or "BYE" in text
        failure = _failed(session, FailureKind.CLOSED if eof else FailureKind.PROTOCOL, text)
    except imaplib.IMAP4.error as exc:  # a NO or BAD leaves it in step
        failure, clean = _failed(session, FailureKind.REPLY, _text(exc)), True
    except OSError as exc:  # includes ssl.SSLError
        failure = _failed(session, _os_kind(exc), str(exc.strerror or exc))
    except Exception as exc:
        failure = _failed(session, FailureKind.INTERNAL, f"{type(exc).__name__}: {exc}")
    session.failure, session.concluded = failure, True
    if imap is not None:
        # After a timeout or protocol error the stream is out of step: just hang up.
        if clean:
            session.phase = IMAPPhase.LOGOUT
            with contextlib.suppress(Exception):
                imap.logout()  # swallows command errors and ends with shutdown()
        with contextlib.suppress(Exception):
            imap.shutdown()
    session.release()
    return session.result()


def _failed(session: _Session, kind: FailureKind, text: str) -> IMAPFailure:
    return IMAPFailure(session.phase, kind, f"{session.phase.text} failed: {text}")


def _os_kind(exc: OSError) -> FailureKind:
    if isinstance(exc, ssl.SSLCertVerificationError):
        mismatch = exc.verify_code == 62 or "hostname mismatch" in str(exc).lower()
        return FailureKind.TLS_HOSTNAME if mismatch else FailureKind.TLS_VERIFY
    if isinstance(exc, ssl.SSLError):
        return FailureKind.TLS
    if isinstance(exc, ConnectionRefusedError):
        return FailureKind.REFUSED
    if isinstance(exc, socket.gaierror):
        return FailureKind.DNS
    return FailureKind.NETWORK


def _converse(imap: _IMAP, session: _Session, token: str, ctx: ssl.SSLContext | None) -> None:
    """Find, delete and sweep; records the outcome in ``session``; raises on failure."""
    cfg = session.cfg
    if cfg.tls is IMAPTLSMode.STARTTLS:
        session.phase = IMAPPhase.STARTTLS
        if "STARTTLS" not in imap.capabilities:  # never log in in clear
            raise _Refused(FailureKind.TLS_UNAVAILABLE, "not offered by the server")
        imap.starttls(ssl_context=ctx)
    session.phase = IMAPPhase.LOGIN
    _login(imap, cfg)
    session.phase = IMAPPhase.SELECT
    typ, dat = imap.select(_quote(cfg.folder))
    if typ != "OK":
        raise imap.error(_text(dat))
    uids = _poll(imap, session, token)
    if uids:
        session.phase = IMAPPhase.DELETE
        session.expunged = _delete(imap, session, uids)
        session.deleted = True
    else:
        session.not_found = f"not found within {session.deadline.budget:g}s"
    _sweep(imap, session, token)
    session.settled = True


def _tls_context(cfg: IMAPConfig) -> ssl.SSLContext:
    if cfg.tls_verify:
        # With a cafile, only that file is trusted; without one, the system store.
        ctx = ssl.create_default_context(cafile=cfg.tls_ca_file)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _login(imap: _IMAP, cfg: IMAPConfig) -> None:
    user, password = cfg.username, cfg.password.reveal()
    if "AUTH=PLAIN" in imap.capabilities:
        # SASL PLAIN carries any UTF-8; LOGIN's quoted strings are ASCII-only in imaplib.
        imap.authenticate("PLAIN", lambda _challenge: _plain(user, password))
    elif "LOGINDISABLED" in imap.capabilities:
        raise _Refused(FailureKind.NOT_OFFERED, "server offers neither LOGIN nor AUTH=PLAIN")
    elif not (user + password).isascii():
        raise _Refused(
            FailureKind.NOT_OFFERED, "non-ASCII credentials need AUTH=PLAIN, which the server lacks"
        )
    else:
        imap.login(_quote(user), password)  # imaplib quotes the password itself


def _poll(imap: _IMAP, session: _Session, token: str) -> list[bytes]:
    while True:
        session.phase = IMAPPhase.SEARCH
        if session.polls:
            imap.noop()  # lets servers that sync lazily announce new mail first
        typ, dat = imap.uid("SEARCH", "HEADER", TOKEN_HEADER, f'"{token}"')
        session.polls += 1
        if typ != "OK":
            raise imap.error(dat)
        found = b" ".join(d for d in dat if isinstance(d, bytes)).split()
        uids = _verified(imap, [u for u in found if u.isdigit()][:MAX_CANDIDATES], token)
        if uids:
            session.seen_at = time.time()
            return uids
        if session.polls == 1:
            # The canary is rarely there at the first look: sweep while it travels, so the
            # sweep costs the round trip nothing.
            _sweep(imap, session, token)
            session.phase = IMAPPhase.SEARCH
        left = session.deadline.remaining() - LAST_POLL_RESERVE
        if left <= 0:
            return []
        session.aborted.wait(min(session.cfg.poll_interval, left))


def _headers(imap: _IMAP, uids: list[bytes], extra: str = "") -> list[tuple[bytes, bytes, bytes]]:
    """(uid, the FETCH line up to the literal, token header block) of each message."""
    items = f"(UID{extra} BODY.PEEK[HEADER.FIELDS ({TOKEN_HEADER})])"
    typ, dat = imap.uid("FETCH", b",".join(uids).decode(), items)
    if typ != "OK":
        raise imap.error(dat)
    out = []
    for item in dat:
        if isinstance(item, tuple) and (m := _FETCH_UID.search(item[0])) and m.group(1) in uids:
            out.append((m.group(1), item[0], item[1]))
    return out


def _values(block: bytes) -> list[str]:
    return [str(v).strip() for v in BytesHeaderParser().parsebytes(block).get_all(TOKEN_HEADER, [])]


def _verified(imap: _IMAP, uids: list[bytes], token: str) -> list[bytes]:
    """The UIDs whose token header equals ``token``: SEARCH HEADER matches substrings."""
    if not uids:
        return []
    return [uid for uid, _, block in _headers(imap, uids) if token in _values(block)]


def _sweep(imap: _IMAP, session: _Session, token: str) -> None:
    """Delete the owner's canaries sent over max_age ago that are still in the folder (not
    the one being looked for, nothing already flagged \\Deleted, nothing whose header is
    not exactly one of our tokens); count those the server received after their timeout."""
    spec = session.sweep
    if spec is None or session.deadline.remaining() < SWEEP_RESERVE:
        return
    session.sweep = None  # once per session
    session.phase = IMAPPhase.SWEEP
    needle = f'"{TOKEN_PREFIX}.{spec.owner}."'
    typ, dat = imap.uid("SEARCH", "UNDELETED", "HEADER", TOKEN_HEADER, needle)
    if typ != "OK":
        raise imap.error(dat)
    found = [u for u in b" ".join(d for d in dat if isinstance(d, bytes)).split() if u.isdigit()]
    if not found:
        return
    now = time.time()
    stale: list[bytes] = []
    late = 0
    for uid, line, block in _headers(imap, found[:MAX_SWEEP], " INTERNALDATE"):
        values = _values(block)
        sent = spec.sent_at(values[0]) if len(values) == 1 and values[0] != token else None
        if sent is None or now - sent <= spec.max_age:
            continue
        stale.append(uid)
        date = _FETCH_DATE.search(line)
        arrived = imaplib.Internaldate2tuple(date.group(0)) if date else None
        if arrived is not None and time.mktime(arrived) > sent + spec.max_age:
            late += 1
    if stale:
        _delete(imap, session, stale)
        session.swept += len(stale)
        session.late += late


def _delete(imap: _IMAP, session: _Session, uids: list[bytes]) -> bool:
    """Flag ``uids`` \\Deleted and, where the server offers it, expunge exactly those: True
    if they are gone. Never a plain EXPUNGE: it would also remove every message another
    client flagged \\Deleted."""
    uid_set = b",".join(uids).decode()
    typ, dat = imap.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)")
    if typ != "OK":
        raise imap.error(dat)
    if session.uid_expunge is None:
        typ, dat = imap.capability()  # post-login capabilities; imaplib keeps the first ones
        caps = _text(dat).upper().split() if typ == "OK" else []
        session.uid_expunge = "UIDPLUS" in caps or "IMAP4REV2" in caps
    if not session.uid_expunge:
        return False
    typ, dat = imap.uid("EXPUNGE", uid_set)
    if typ != "OK":
        raise imap.error(dat)
    return True


def _plain(user: str, password: str) -> bytes:
    return f"\0{user}\0{password}".encode()


def _quote(text: str) -> str:
    if _CONTROL.search(text):
        raise ValueError("control characters are not allowed in IMAP strings")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(value: object) -> str:
    if isinstance(value, BaseException) and len(value.args) == 1:
        value = value.args[0]
    if isinstance(value, list):
        return " ".join(_text(v) for v in value if v is not None)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _clean(error: str | None, cfg: IMAPConfig) -> str | None:
    """Mask the password in every form a server might echo; one short printable line."""
    if error is None:
        return None
    password = cfg.password.reveal()
    if password:
        forms = {
            base64.b64encode(_plain(cfg.username, password)).decode(),
            base64.b64encode(password.encode()).decode(),
            repr(password.encode())[2:-1],
            password.replace("\\", "\\\\").replace('"', '\\"'),  # as quoted for LOGIN
            password,
        }
        for form in sorted(forms, key=len, reverse=True):
            error = error.replace(form, "***")
    return _CONTROL.sub("?", error)[:MAX_ERROR]
