"""Pure parser for the EHLO reply's service extensions (RFC 5321 §4.1.1.1)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from .reply import Reply

# RFC 5321 ehlo-keyword; anything else is junk we neither trust nor pass on as a label.
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_MECHANISM = re.compile(r"[A-Z0-9_-]{1,20}")


@dataclass(frozen=True, slots=True)
class Extensions:
    host: str | None  # the name the server gives on its EHLO line
    keywords: tuple[str, ...]  # upper-cased, in the server's order, no duplicates
    auth_mechanisms: tuple[str, ...]
    size_limit: int | None

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords


NO_EXTENSIONS = Extensions(host=None, keywords=(), auth_mechanisms=(), size_limit=None)


# A server answers EHLO with the same lines probe after probe: parsed once. Only short
# replies are kept, so what the cache holds stays small whatever servers send.
EHLO_CACHE_SIZE = 256
EHLO_CACHE_MAX_CHARS = 2048


def parse_ehlo(reply: Reply) -> Extensions:
    """``_parse_ehlo`` of the reply's lines, from the cache when they are short."""
    lines = reply.lines
    if sum(map(len, lines)) <= EHLO_CACHE_MAX_CHARS:
        return _parse_ehlo_cached(lines)
    return _parse_ehlo(lines)


def _parse_ehlo(lines: tuple[str, ...]) -> Extensions:
    """Parse the lines of a 250 EHLO reply such as::

        250-mail.example.com Hello
        250-SIZE 35882577
        250-AUTH LOGIN PLAIN
        250-AUTH=LOGIN PLAIN
        250 STARTTLS

    The old ``AUTH=`` form (pre-RFC 4954 Outlook clients) is merged into AUTH.
    """
    first = lines[0].split() if lines else []
    keywords: dict[str, None] = {}
    mechanisms: dict[str, None] = {}
    size: int | None = None
    for line in lines[1:]:
        word, _, params = line.partition(" ")
        if word.upper().startswith("AUTH="):
            word, params = "AUTH", word[5:] + " " + params
        if not _KEYWORD.fullmatch(word):
            continue
        word = word.upper()
        keywords[word] = None
        if word == "AUTH":
            for mech in params.upper().split():
                if _MECHANISM.fullmatch(mech):
                    mechanisms[mech] = None
        elif word == "SIZE":
            value = params.strip()
            if value.isdigit() and len(value) <= 18:
                size = int(value)
    return Extensions(
        host=first[0][:255] if first else None,
        keywords=tuple(keywords),
        auth_mechanisms=tuple(mechanisms),
        size_limit=size,
    )


_parse_ehlo_cached = functools.lru_cache(maxsize=EHLO_CACHE_SIZE)(_parse_ehlo)
