"""Operations on the selected mailbox, by UID (RFC 9051 §6.4.9), for the canary: search,
fetch, flag, expunge exactly the UIDs named. Each fails with the session's ``ProbeError``
(``reply`` for a NO or BAD, with the server's text) in the phase given; there is no plain
EXPUNGE here on purpose: it would remove every message any client flagged ``\\Deleted``."""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..results import Phase
from .reader import Response
from .session import IMAPSession

_UID = re.compile(rb"\bUID (\d{1,10})\b")
_INTERNALDATE = re.compile(
    rb'INTERNALDATE " ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([-+])(\d\d)(\d\d)"'
)
_MONTHS = {m.encode(): n for n, m in enumerate(calendar.month_abbr) if m}


@dataclass(frozen=True, slots=True)
class Fetched:
    """One message of a FETCH: its UID, the INTERNALDATE (unix seconds, if asked for) and
    the first literal (the section asked for)."""

    uid: int
    arrived: float | None
    body: bytes


def uid_set(uids: Sequence[int]) -> str:
    return ",".join(str(u) for u in uids)


async def uid_search(session: IMAPSession, criteria: str, phase: Phase) -> list[int]:
    """UIDs matching ``criteria`` (already formed: atoms and quoted strings)."""
    done = await session.command(f"UID SEARCH {criteria}", phase)
    session.check(done, phase)
    found: list[int] = []
    for response in done.untagged:
        if response.keyword == "SEARCH":
            found += [int(w) for w in response.data.split() if w.isdigit() and len(w) <= 10]
    return found


async def uid_fetch(
    session: IMAPSession, uids: Sequence[int], items: str, phase: Phase
) -> list[Fetched]:
    """FETCH ``items`` of ``uids``; answers for UIDs not asked for are left out."""
    done = await session.command(f"UID FETCH {uid_set(uids)} {items}", phase)
    session.check(done, phase)
    wanted = set(uids)
    out: list[Fetched] = []
    for response in done.untagged:
        fetched = _fetched(response)
        if fetched is not None and fetched.uid in wanted:
            out.append(fetched)
    return out


async def uid_flag_deleted(session: IMAPSession, uids: Sequence[int], phase: Phase) -> None:
    done = await session.command(f"UID STORE {uid_set(uids)} +FLAGS.SILENT (\\Deleted)", phase)
    session.check(done, phase)


async def uid_expunge(session: IMAPSession, uids: Sequence[int], phase: Phase) -> None:
    """UID EXPUNGE (UIDPLUS, IMAP4rev2): only these UIDs, if flagged ``\\Deleted``."""
    done = await session.command(f"UID EXPUNGE {uid_set(uids)}", phase)
    session.check(done, phase)


async def noop(session: IMAPSession, phase: Phase) -> None:
    session.check(await session.command("NOOP", phase), phase)


async def capabilities(session: IMAPSession, phase: Phase) -> tuple[str, ...]:
    """The capabilities now: those the login's completion listed, else asked for."""
    if session.after_login is not None:
        return session.after_login
    return await session.capability(phase)


def _fetched(response: Response) -> Fetched | None:
    if response.keyword != "FETCH":
        return None
    uid = _UID.search(response.data)
    if uid is None:
        return None
    date = _INTERNALDATE.search(response.data)
    return Fetched(
        int(uid.group(1)),
        internaldate(date) if date else None,
        response.literals[0] if response.literals else b"",
    )


def internaldate(match: re.Match[bytes]) -> float | None:
    """Unix seconds of an INTERNALDATE match; None for a date that is not one."""
    day, month, year, hour, minute, second, sign, zh, zm = match.groups()
    if month.title() not in _MONTHS:
        return None
    try:
        local = calendar.timegm(
            (int(year), _MONTHS[month.title()], int(day), int(hour), int(minute), int(second))
        )
    except (ValueError, OverflowError):
        return None
    offset = (int(zh) * 60 + int(zm)) * 60
    return float(local - offset if sign == b"+" else local + offset)
