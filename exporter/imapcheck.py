"""The canary's IMAP side: find the message carrying our token header, note when, delete it,
and sweep this exporter's own canaries that were never found in time.

Reading the mailbox is a check of its own: a session that cannot connect, log in or search
ends in an ``IMAPFailure`` (phase, kind, detail), and then nothing is known about delivery.
Deleting never runs a plain EXPUNGE, which would also remove every message another client
flagged ``\\Deleted``: with UIDPLUS (or IMAP4rev2) it is ``UID EXPUNGE`` of our own UIDs;
without, our messages are left flagged for whoever expunges the mailbox next.

The conversation is the probe's own IMAP client (``exporter.imap``) on the event loop, under
the caller's one ``Deadline``: connect, TLS and login are ``IMAPSession.establish``, the
mailbox is opened with SELECT, and the searches, fetches and deletions are
``exporter.imap.mailbox``'s. Its reader caps lines (64 KiB here: SEARCH results can be
long), literals and untagged data, so a server cannot grow us.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import re
import secrets
import time
from email.parser import BytesHeaderParser

# Where they were declared before the config package: kept importable from here.
from .config.features import parse_imap_config as parse_imap_config
from .config.model import AuthConfig, IMAPConfig, IMAPTLSMode, Module, Target, TLSMode
from .deadline import Deadline
from .errors import ProbeError
from .imap import folders, mailbox
from .imap.session import IMAPSession, mailbox_name, quoted
from .results import FailureKind, IMAPFailure, IMAPPhase, Phase

TOKEN_HEADER = "X-SMTP-Health-Canary"
TOKEN_PREFIX = "shx"  # tokens are shx.<owner: 12 hex>.<unix seconds sent>.<24 hex>
MAX_LINE = 64 * 1024  # a SEARCH result lists every match on one line
MAX_CANDIDATES = 20  # UIDs verified per poll; HEADER search is substring-based
MAX_SWEEP = 100  # stale canaries removed per session; the rest wait for the next one
SWEEP_RESERVE = 1.0  # seconds that must be left for a sweep to start
MAX_ERROR = 256
LAST_POLL_RESERVE = 0.25  # seconds kept free after the last poll so it can finish
# The found canary, for its Authentication-Results (the receiver's are on top) and its DKIM
# signatures: a partial FETCH keeps the literal under the reader's 64 KiB cap. A canary is a
# few KiB; one that reaches the cap is read for its header only (its body hash cannot be).
MAX_MESSAGE = 60_000

_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
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
    folder: str | None = None  # where it was found
    junk: bool = False  # ... and that folder is a Junk one (listed or configured)
    message: bytes | None = None  # as delivered (its first MAX_MESSAGE bytes)

    @property
    def complete(self) -> bool:
        """The whole message was read (shorter than the cap), so its body can be checked."""
        return self.message is not None and len(self.message) < MAX_MESSAGE

    @property
    def access_ok(self) -> bool:
        return self.failure is None


# Where a session phase of the IMAP client falls among the canary's (IMAPPhase) steps.
_PHASES = {
    Phase.RESOLVE: IMAPPhase.CONNECT,
    Phase.CONNECT: IMAPPhase.CONNECT,
    Phase.TLS_HANDSHAKE: IMAPPhase.TLS_HANDSHAKE,
    Phase.GREETING: IMAPPhase.GREETING,
    Phase.CAPABILITY: IMAPPhase.GREETING,
    Phase.STARTTLS: IMAPPhase.STARTTLS,
    Phase.CAPABILITY_TLS: IMAPPhase.STARTTLS,
    Phase.AUTH: IMAPPhase.LOGIN,
    Phase.SELECT: IMAPPhase.SELECT,
    Phase.LOGOUT: IMAPPhase.LOGOUT,
}
# Failures after which the conversation is still in step: worth a polite LOGOUT.
_IN_STEP = frozenset(
    {
        FailureKind.REPLY,
        FailureKind.NOT_OFFERED,
        FailureKind.TLS_UNAVAILABLE,
        FailureKind.INSECURE,
    }
)
# The mailbox operations' commands run in the session's select phase (the mailbox is open).
_OPEN = Phase.SELECT


class _State:
    """What one session has done so far, readable whenever the deadline ends it."""

    def __init__(
        self, cfg: IMAPConfig, deadline: Deadline, sweep: Sweep | None, session: IMAPSession
    ) -> None:
        self.cfg = cfg
        self.deadline = deadline
        self.sweep = sweep
        self.session = session
        self.step: IMAPPhase | None = None  # the canary's own step, once logged in
        self.polls = 0
        self.seen_at: float | None = None
        self.deleted = False
        self.expunged = False
        self.swept = 0
        self.late = 0
        self.uid_expunge: bool | None = None  # UID EXPUNGE offered; asked once, after login
        self.settled = False  # searched, deleted and swept: at most the logout is left
        self.concluded = False  # the conversation has its answer
        self.failure: IMAPFailure | None = None
        self.not_found: str | None = None
        self.selected: str | None = None  # the mailbox open now
        self.swept_in: set[str] = set()  # mailboxes swept this session (once each)
        self.folder: str | None = None
        self.junk = False
        self.message: bytes | None = None

    @property
    def phase(self) -> IMAPPhase:
        return self.step or _PHASES.get(self.session.phase, IMAPPhase.CONNECT)

    def timeout_failure(self) -> IMAPFailure:
        detail = f"timeout after {self.deadline.budget:g}s during {self.phase.text}"
        return IMAPFailure(self.phase, FailureKind.TIMEOUT, detail)

    def failed(self, kind: FailureKind, text: str, where: Phase | None = None) -> IMAPFailure:
        """A failure in the canary's step, else in the session phase ``where`` (the one a
        ``ProbeError`` names), else the session's current one."""
        phase = self.step or (_PHASES.get(where, IMAPPhase.CONNECT) if where else self.phase)
        return IMAPFailure(phase, kind, f"{phase.text} failed: {text}")

    def result(self) -> IMAPCheck:
        """What is known now; a late failure (in the logout, say) does not undo the rest."""
        not_found = self.not_found
        if self.settled:
            failure = None
        elif self.concluded:
            failure = self.failure
        elif self.step is IMAPPhase.SEARCH and self.polls and self.seen_at is None:
            # The deadline fell on a poll after others had read the mailbox: it was
            # readable and the canary not in it, which is "not delivered", not a failure
            # to read it (a loaded server takes longer than the last poll's reserve).
            failure, not_found = None, f"not found within {self.deadline.budget:g}s"
        else:
            failure = self.timeout_failure()
        if failure is not None:
            detail = _clean(self.session.redact(failure.detail), self.cfg) or ""
            failure = dataclasses.replace(failure, detail=detail)
        error = failure.detail if failure is not None else not_found
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
            folder=self.folder,
            junk=self.junk,
            message=self.message,
        )


def _target(cfg: IMAPConfig, budget: float) -> Target:
    """The canary's mailbox as an IMAP module: SELECT (read-write) of the folder; with
    ``tls: none`` the credentials go in clear, as configured."""
    auth = AuthConfig(
        cfg.username, cfg.password, cfg.mechanisms, allow_insecure=cfg.tls is IMAPTLSMode.NONE
    )
    module = Module(
        name="canary-imap",
        protocol="imap",
        tls=TLSMode(cfg.tls.value),
        port=cfg.port,
        tls_verify=cfg.tls_verify,
        tls_ca_file=cfg.tls_ca_file,
        ehlo_name="localhost",  # unused by IMAP; spares the default's host-name lookup
        timeout=budget,
        auth=auth,
        mailbox=cfg.folder,
        mailbox_select=True,
    )
    return Target(f"{cfg.host}:{cfg.port}", cfg.host, cfg.port, module)


async def find_and_delete(
    cfg: IMAPConfig, token: str, deadline: Deadline, sweep: Sweep | None = None
) -> IMAPCheck:
    """Log in, select the folder, poll ``UID SEARCH HEADER`` for ``token`` every poll_interval
    until found or the deadline; delete only the matching message(s); with ``sweep``, also
    delete that owner's stale canaries; log out.

    Never raises (except cancellation) and returns by the deadline whatever the server does.
    """
    if not _TOKEN.fullmatch(token):
        detail = "invalid token: expected [A-Za-z0-9._-]{1,64}"
        failure = IMAPFailure(IMAPPhase.CONNECT, FailureKind.INTERNAL, detail)
        return IMAPCheck(False, None, 0, False, detail, failure)
    session = IMAPSession(_target(cfg, deadline.budget), max_line=MAX_LINE)
    state = _State(cfg, deadline, sweep, session)
    try:
        async with asyncio.timeout_at(deadline.at):
            in_step = False
            try:
                await _converse(session, state, token)
                in_step = True
            except ProbeError as exc:
                state.failure = state.failed(exc.kind, exc.detail, exc.phase)
                in_step = exc.kind in _IN_STEP and not exc.detail.startswith("BYE")
            except Exception as exc:  # a bug of ours: reported, never raised
                state.failure = state.failed(FailureKind.INTERNAL, f"{type(exc).__name__}: {exc}")
            state.concluded = True
            if in_step:
                state.step = IMAPPhase.LOGOUT
                # The answer is known; how the server says goodbye is not part of it.
                with contextlib.suppress(ProbeError):
                    await session.logout()
    except TimeoutError:
        pass  # state.result() says what the deadline cut short
    finally:
        session.close()
    return state.result()


async def _converse(session: IMAPSession, state: _State, token: str) -> None:
    """Find, delete and sweep; records the outcome in ``state``; raises on failure."""
    await session.establish()
    junk = state.cfg.junk_folders
    if junk is None:
        state.step = IMAPPhase.LIST
        junk = tuple(await folders.find_junk(session, _OPEN, state.cfg.folder))
    places = [(state.cfg.folder, False), *((name, True) for name in junk)]
    uids = await _poll(session, state, token, places)
    if uids:
        state.step = IMAPPhase.SEARCH
        fetched = await mailbox.uid_fetch(
            session, uids[:1], f"(UID BODY.PEEK[]<0.{MAX_MESSAGE}>)", _OPEN
        )
        state.message = fetched[0].body if fetched else None
        state.step = IMAPPhase.DELETE
        state.expunged = await _delete(session, state, uids)
        state.deleted = True
    else:
        state.not_found = f"not found within {state.deadline.budget:g}s"
    await _sweep(session, state, token)
    state.settled = True


async def _open(session: IMAPSession, state: _State, folder: str) -> None:
    """SELECT ``folder`` (read-write: the canary is deleted there) unless it is open."""
    if state.selected == folder:
        return
    state.step = IMAPPhase.SELECT
    state.selected = None
    session.check(await session.command(f"SELECT {mailbox_name(folder)}", _OPEN), _OPEN)
    state.selected = folder


async def _poll(
    session: IMAPSession, state: _State, token: str, places: list[tuple[str, bool]]
) -> list[int]:
    """Search each folder (the configured one, then the Junk ones) until found."""
    rounds = 0
    while True:
        for folder, junk in places:
            await _open(session, state, folder)
            state.step = IMAPPhase.SEARCH
            if rounds and len(places) == 1:
                # Lets lazy servers announce new mail first (a SELECT does that anyway).
                await mailbox.noop(session, _OPEN)
            criteria = f"HEADER {TOKEN_HEADER} {quoted(token)}"
            found = await mailbox.uid_search(session, criteria, _OPEN)
            state.polls += 1
            uids = await _verified(session, found[:MAX_CANDIDATES], token)
            if uids:
                state.seen_at = time.time()
                state.folder, state.junk = folder, junk
                return uids
            if not rounds:
                # The canary is rarely there at the first look: sweep while it travels, so
                # the sweep costs the round trip nothing.
                await _sweep(session, state, token)
        rounds += 1
        left = state.deadline.remaining() - LAST_POLL_RESERVE
        if left <= 0:
            return []
        await asyncio.sleep(min(state.cfg.poll_interval, left))


def _headers_item(extra: str = "") -> str:
    return f"(UID{extra} BODY.PEEK[HEADER.FIELDS ({TOKEN_HEADER})])"


def _values(block: bytes) -> list[str]:
    return [str(v).strip() for v in BytesHeaderParser().parsebytes(block).get_all(TOKEN_HEADER, [])]


async def _verified(session: IMAPSession, uids: list[int], token: str) -> list[int]:
    """The UIDs whose token header equals ``token``: SEARCH HEADER matches substrings."""
    if not uids:
        return []
    fetched = await mailbox.uid_fetch(session, uids, _headers_item(), _OPEN)
    return [f.uid for f in fetched if token in _values(f.body)]


async def _sweep(session: IMAPSession, state: _State, token: str) -> None:
    """Delete the owner's canaries sent over max_age ago that are still in the folder (not
    the one being looked for, nothing already flagged \\Deleted, nothing whose header is
    not exactly one of our tokens); count those the server received after their timeout."""
    spec, here = state.sweep, state.selected
    if spec is None or here is None or here in state.swept_in:
        return
    if state.deadline.remaining() < SWEEP_RESERVE:
        return
    state.swept_in.add(here)  # once per mailbox and session
    state.step = IMAPPhase.SWEEP
    needle = quoted(f"{TOKEN_PREFIX}.{spec.owner}.")
    found = await mailbox.uid_search(session, f"UNDELETED HEADER {TOKEN_HEADER} {needle}", _OPEN)
    if not found:
        return
    now = time.time()
    stale: list[int] = []
    late = 0
    items = _headers_item(" INTERNALDATE")
    for fetched in await mailbox.uid_fetch(session, found[:MAX_SWEEP], items, _OPEN):
        values = _values(fetched.body)
        sent = spec.sent_at(values[0]) if len(values) == 1 and values[0] != token else None
        if sent is None or now - sent <= spec.max_age:
            continue
        stale.append(fetched.uid)
        if fetched.arrived is not None and fetched.arrived > sent + spec.max_age:
            late += 1
    if stale:
        await _delete(session, state, stale)
        state.swept += len(stale)
        state.late += late


async def _delete(session: IMAPSession, state: _State, uids: list[int]) -> bool:
    """Flag ``uids`` \\Deleted and, where the server offers it, expunge exactly those: True
    if they are gone. Never a plain EXPUNGE: it would also remove every message another
    client flagged \\Deleted."""
    await mailbox.uid_flag_deleted(session, uids, _OPEN)
    if state.uid_expunge is None:
        caps = await mailbox.capabilities(session, _OPEN)
        state.uid_expunge = "UIDPLUS" in caps or "IMAP4REV2" in caps
    if not state.uid_expunge:
        return False
    await mailbox.uid_expunge(session, uids, _OPEN)
    return True


def _plain(user: str, password: str) -> bytes:
    return f"\0{user}\0{password}".encode()


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
