"""The canary's IMAP side: find the message carrying our token header, note when, delete it.

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
import imaplib
import re
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from email.parser import BytesHeaderParser
from enum import StrEnum
from pathlib import Path
from typing import Any

from .config import Secret, _Validator
from .errors import ConfigError
from .probe.deadline import Deadline

TOKEN_HEADER = "X-SMTP-Health-Canary"
MAX_LINE = 64 * 1024  # imaplib's own cap is 1,000,000 per line, and it is module-global
MAX_LITERAL = 1024 * 1024  # a header fetch needs a few hundred bytes
MAX_UNTAGGED = 1024 * 1024  # bytes of untagged responses per command
MAX_CANDIDATES = 20  # UIDs verified per poll; HEADER search is substring-based
MAX_ERROR = 256
LAST_POLL_RESERVE = 0.25  # seconds kept free after the last poll so it can finish

_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FETCH_UID = re.compile(rb"\bUID (\d+)")


_NO_PASSWORD = Secret("")  # Secret is immutable, so one shared default is safe


class IMAPTLSMode(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    IMPLICIT = "implicit"


@dataclasses.dataclass(frozen=True, slots=True)
class IMAPConfig:
    """Where the canary mailbox is and how to log in to it."""

    host: str
    port: int  # default by mode in the config parser: 143 / 993
    tls: IMAPTLSMode = IMAPTLSMode.IMPLICIT
    username: str = ""
    password: Secret = _NO_PASSWORD
    folder: str = "INBOX"
    tls_verify: bool = True
    tls_ca_file: str | None = None
    poll_interval: float = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class IMAPCheck:
    """Outcome of one search: ``error`` is None on success, else a short, secret-free reason."""

    found: bool
    seen_at: float | None  # time.time() when the poll that found it returned
    polls: int
    deleted: bool
    error: str | None


class _Session:
    """State shared by the worker thread and the event loop."""

    def __init__(self, cfg: IMAPConfig, deadline: Deadline) -> None:
        self.cfg = cfg
        self.deadline = deadline
        self.phase = "connect"
        self.polls = 0
        self.seen_at: float | None = None
        self.deleted = False
        self.concluded = False  # the worker has its answer; at most the logout is left
        self.error: str | None = None
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

    def timeout_error(self) -> str:
        return f"timeout after {self.deadline.budget:g}s during {self.phase}"

    def result(self) -> IMAPCheck:
        """What is known now; a late failure (in the logout, say) does not undo a deletion."""
        if self.deleted or self.concluded:
            error = None if self.deleted else self.error
        else:
            error = _clean(self.timeout_error(), self.cfg)
        return IMAPCheck(self.seen_at is not None, self.seen_at, self.polls, self.deleted, error)


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
                self._session.phase = "tls handshake"
                sock = self._implicit.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self._session.phase = "greeting"
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


async def find_and_delete(cfg: IMAPConfig, token: str, deadline: Deadline) -> IMAPCheck:
    """Log in, select the folder, poll ``UID SEARCH HEADER`` for ``token`` every poll_interval
    until found or the deadline; delete only the matching message(s); log out.

    Never raises (except cancellation) and returns within ~0.1 s of the deadline whatever the
    server does; a worker still blocked then is woken by shutting its socket down.
    """
    if not _TOKEN.fullmatch(token):
        return IMAPCheck(False, None, 0, False, "invalid token: expected [A-Za-z0-9._-]{1,64}")
    session = _Session(cfg, deadline)
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
        return IMAPCheck(False, None, 0, False, f"cannot start worker thread: {exc}")
    try:
        async with asyncio.timeout_at(deadline.at):
            return await done
    except TimeoutError:
        return session.result()
    finally:
        if not done.done() or done.cancelled():
            session.release(abort=True)


def _run(session: _Session, token: str) -> IMAPCheck:
    """The worker thread: the whole conversation, every failure turned into a reason."""
    error: str | None
    imap: _IMAP | None = None
    clean = False
    try:
        cfg = session.cfg
        session.phase = "tls setup"
        ctx = None if cfg.tls is IMAPTLSMode.NONE else _tls_context(cfg)
        session.phase = "connect"
        imap = _IMAP(session, ctx if cfg.tls is IMAPTLSMode.IMPLICIT else None)
        error = _converse(imap, session, token, ctx)
        clean = True
    except TimeoutError:
        error = session.timeout_error()
    except imaplib.IMAP4.error as exc:
        error = f"{session.phase} failed: {_text(exc)}"
        clean = not isinstance(exc, imaplib.IMAP4.abort)  # a NO or BAD leaves it in step
    except OSError as exc:  # includes ssl.SSLError
        error = f"{session.phase} failed: {exc.strerror or exc}"
    except Exception as exc:
        error = f"{session.phase} failed: {type(exc).__name__}: {exc}"
    session.error, session.concluded = _clean(error, session.cfg), True
    if imap is not None:
        # After a timeout or protocol error the stream is out of step: just hang up.
        if clean:
            session.phase = "logout"
            with contextlib.suppress(Exception):
                imap.logout()  # swallows command errors and ends with shutdown()
        with contextlib.suppress(Exception):
            imap.shutdown()
    session.release()
    return session.result()


def _converse(imap: _IMAP, session: _Session, token: str, ctx: ssl.SSLContext | None) -> str | None:
    """Returns the reason the canary was not found and deleted, or None; raises on failure."""
    cfg = session.cfg
    if cfg.tls is IMAPTLSMode.STARTTLS:
        session.phase = "starttls"
        if "STARTTLS" not in imap.capabilities:
            return "starttls failed: not offered by the server"  # never log in in clear
        imap.starttls(ssl_context=ctx)
    session.phase = "login"
    _login(imap, cfg)
    session.phase = "select"
    typ, dat = imap.select(_quote(cfg.folder))
    if typ != "OK":
        return f"select failed: {_text(dat)}"
    uids = _poll(imap, session, token)
    if not uids:
        return f"not found within {session.deadline.budget:g}s"
    session.phase = "delete"
    _delete(imap, uids)
    session.deleted = True
    return None


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
        raise imap.error("server offers neither LOGIN nor AUTH=PLAIN")
    elif not (user + password).isascii():
        raise imap.error("non-ASCII credentials need AUTH=PLAIN, which the server lacks")
    else:
        imap.login(_quote(user), password)  # imaplib quotes the password itself


def _poll(imap: _IMAP, session: _Session, token: str) -> list[bytes]:
    while True:
        session.phase = "search"
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
        left = session.deadline.remaining() - LAST_POLL_RESERVE
        if left <= 0:
            return []
        session.aborted.wait(min(session.cfg.poll_interval, left))


def _verified(imap: _IMAP, uids: list[bytes], token: str) -> list[bytes]:
    """The UIDs whose token header equals ``token``: SEARCH HEADER matches substrings."""
    if not uids:
        return []
    items = f"(UID BODY.PEEK[HEADER.FIELDS ({TOKEN_HEADER})])"
    typ, dat = imap.uid("FETCH", b",".join(uids).decode(), items)
    if typ != "OK":
        raise imap.error(dat)
    out: list[bytes] = []
    for item in dat:
        if not isinstance(item, tuple) or not (m := _FETCH_UID.search(item[0])):
            continue
        headers = BytesHeaderParser().parsebytes(item[1])
        if m.group(1) in uids and any(
            str(v).strip() == token for v in headers.get_all(TOKEN_HEADER, [])
        ):
            out.append(m.group(1))
    return out


def _delete(imap: _IMAP, uids: list[bytes]) -> None:
    uid_set = b",".join(uids).decode()
    typ, dat = imap.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)")
    if typ == "OK":
        typ, dat = imap.capability()  # post-login capabilities; imaplib keeps the first ones
        caps = _text(dat).upper().split() if typ == "OK" else []
        # Without UIDPLUS, EXPUNGE also removes messages others flagged \Deleted.
        typ, dat = imap.uid("EXPUNGE", uid_set) if "UIDPLUS" in caps else imap.expunge()
    if typ != "OK":
        raise imap.error(dat)


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


# --- configuration ----------------------------------------------------------------------------

# IMAPConfig's fields, except that the password comes from a file or the environment.
_KEYS = (
    *(f.name for f in dataclasses.fields(IMAPConfig) if f.name != "password"),
    *("password_file", "password_env"),
)


def parse_imap_config(
    raw: object, path: str, file: str, env: Mapping[str, str], base_dir: Path
) -> IMAPConfig:
    """Validate a module's ``canary.imap`` mapping; raise ``ConfigError`` listing every problem,
    one ``file: path.key: message`` line each."""
    v = _Validator(file, env)
    v.base = base_dir
    d = v.mapping(raw, path, _KEYS)
    if not isinstance(raw, dict):
        if raw is None:
            v.error(path, "expected a mapping with host, username and a password")
        raise ConfigError("\n".join(f"{file}: {e}" for e in v.errors))
    host = v.typed(d, "host", path, str, None)
    if not host or any(c.isspace() for c in host):
        v.error(f"{path}.host", "required" if not host else f"not a valid host: {host!r}")
    tls = IMAPTLSMode(v.choice(d, "tls", path, tuple(IMAPTLSMode), IMAPTLSMode.IMPLICIT.value))
    port = v.typed(d, "port", path, int, None)
    if port is not None and not 0 < port < 65536:
        v.error(f"{path}.port", f"expected 1-65535, got {port}")
    username = v.typed(d, "username", path, str, None)
    if not username:
        v.error(f"{path}.username", "required")
    elif _CONTROL.search(username):
        v.error(f"{path}.username", "control characters are not allowed")
    sources = [k for k in ("password_file", "password_env") if d.get(k) is not None]
    password = v.secret(d, sources[0], path) if len(sources) == 1 else None
    if len(sources) != 1:
        v.error(path, "set exactly one of password_file, password_env")
    folder = v.typed(d, "folder", path, str, "INBOX")
    if not folder or _CONTROL.search(folder) or not folder.isascii():
        v.error(f"{path}.folder", f"expected a non-empty ASCII folder name, got {folder!r}")
    interval = v.duration(d, "poll_interval", path, 1.0)
    if interval < 0.1:
        v.error(f"{path}.poll_interval", "must be at least 100ms")
    cfg = IMAPConfig(
        host=host or "",
        port=port or (993 if tls is IMAPTLSMode.IMPLICIT else 143),
        tls=tls,
        username=username or "",
        password=password or _NO_PASSWORD,
        folder=folder,
        tls_verify=v.typed(d, "tls_verify", path, bool, True),
        tls_ca_file=v.file_path(d, "tls_ca_file", path),
        poll_interval=interval,
    )
    if v.errors:
        raise ConfigError("\n".join(f"{file}: {e}" for e in v.errors))
    return cfg
