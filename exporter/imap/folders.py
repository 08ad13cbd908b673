"""Which mailbox is the Junk folder: LIST and its attributes (RFC 9051 §7.3.1), the
``\\Junk`` special-use attribute (RFC 6154), else a folder by the names clients use.

Mailbox names arrive in modified UTF-7 (RFC 3501 §5.1.3) and are returned decoded, so that
``session.mailbox_name`` encodes them again for SELECT."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from ..results import Phase
from .reader import Response
from .session import IMAPSession

# Names of a Junk folder on servers that do not mark it (compared on the last hierarchy
# level, without case): Dovecot's and Thunderbird's, Gmail's, Outlook's.
JUNK_NAMES = ("junk", "spam", "junk e-mail", "junk email", "bulk mail")
MAX_JUNK = 3  # folders searched besides the configured one

_LIST = re.compile(rb'\((?P<attrs>[^)]*)\)\s+(?P<delim>NIL|"(?:[^"\\]|\\.)*")\s+(?P<name>.+)', re.S)
_LITERAL = re.compile(rb"\{\d+\+?\}")


@dataclass(frozen=True, slots=True)
class Listed:
    """One LIST answer: the mailbox (decoded), its hierarchy delimiter, its attributes
    (lower case, with the backslash)."""

    name: str
    delimiter: str | None
    attributes: frozenset[str]

    @property
    def selectable(self) -> bool:
        return not self.attributes & {"\\noselect", "\\nonexistent"}

    @property
    def leaf(self) -> str:
        """The last level of the name."""
        return self.name.rsplit(self.delimiter, 1)[-1] if self.delimiter else self.name


def parse_list(response: Response) -> Listed | None:
    """A LIST response's mailbox; None for anything else or a malformed one."""
    if response.keyword != "LIST":
        return None
    m = _LIST.match(response.data.strip())
    if m is None:
        return None
    attrs = frozenset(a.lower() for a in m["attrs"].decode("ascii", "replace").split())
    delim_raw = m["delim"]
    delimiter = None if delim_raw == b"NIL" else _unquote(delim_raw).decode("ascii", "replace")
    raw = m["name"].strip()
    if _LITERAL.fullmatch(raw):
        if not response.literals:
            return None
        raw = response.literals[0]
    elif raw.startswith(b'"'):
        raw = _unquote(raw)
    try:
        name = utf7_decode(raw.decode("ascii"))
    except (UnicodeError, ValueError):
        return None
    return Listed(name, delimiter or None, attrs)


def _unquote(raw: bytes) -> bytes:
    if len(raw) >= 2 and raw[:1] == raw[-1:] == b'"':
        return re.sub(rb"\\(.)", rb"\1", raw[1:-1])
    return raw


def utf7_decode(name: str) -> str:
    """Modified UTF-7 to text: ``&-`` is ``&``; ``&...-`` is base64 (``,`` for ``/``) of
    UTF-16BE. Raises ValueError on a malformed name."""
    out: list[str] = []
    i = 0
    while i < len(name):
        c = name[i]
        if c != "&":
            out.append(c)
            i += 1
            continue
        end = name.find("-", i)
        if end < 0:
            raise ValueError("unterminated &-sequence")
        chunk = name[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            out.append(base64.b64decode(b64 + "=" * (-len(b64) % 4)).decode("utf-16-be"))
        i = end + 1
    return "".join(out)


async def list_mailboxes(session: IMAPSession, phase: Phase, special_use: bool) -> list[Listed]:
    """LIST every mailbox; with ``special_use``, only those with a special-use attribute
    (``LIST (SPECIAL-USE)``, RFC 6154 §3, which needs LIST-EXTENDED)."""
    selection = "(SPECIAL-USE) " if special_use else ""
    done = await session.command(f'LIST {selection}"" "*"', phase)
    session.check(done, phase)
    return [m for r in done.untagged if (m := parse_list(r)) is not None]


def junk_of(mailboxes: list[Listed], exclude: str) -> list[str]:
    """The mailboxes with ``\\Junk``; without any, those named like a Junk folder. Never
    ``exclude`` (the configured folder), at most MAX_JUNK."""
    usable = [m for m in mailboxes if m.selectable and m.name != exclude]
    marked = [m.name for m in usable if "\\junk" in m.attributes]
    named = [m.name for m in usable if m.leaf.lower() in JUNK_NAMES]
    return (marked or named)[:MAX_JUNK]


async def find_junk(session: IMAPSession, phase: Phase, exclude: str) -> list[str]:
    """The Junk folder(s) of the logged-in account (see ``junk_of``)."""
    caps = session.after_login or session.capabilities
    if "SPECIAL-USE" in caps and "LIST-EXTENDED" in caps:
        found = junk_of(await list_mailboxes(session, phase, True), exclude)
        if found:
            return found
    return junk_of(await list_mailboxes(session, phase, False), exclude)
