"""IMAP's wire syntax, pure: capability lists, the login mechanism to use, quoted strings
and literals, mailbox names in modified UTF-7 (RFC 3501 / 9051); and what of it a failure
or the transcript may show (response text, masked commands, the secret's forms)."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence

from ..config import Target
from ..net import sasl
from ..results import Phase
from .reader import Response, clean

MAX_CAPABILITIES = 64  # names kept; a server could list thousands
MAX_NAME = 64  # characters of one capability name
# SASL mechanisms AUTHENTICATE can run here; LOGIN is IMAP's own LOGIN command.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "CRAM-MD5", "XOAUTH2")
AUTO = ("PLAIN", "LOGIN")

# A whole word (between whitespace) of atom characters, at most MAX_NAME long.
_CAPABILITY_NAME = re.compile(r"(?<!\S)[A-Z0-9][A-Z0-9=+._:/-]{0,63}(?!\S)")  # 63: MAX_NAME


def parse_capabilities(raw: bytes | str) -> tuple[str, ...]:
    """The capability names of a CAPABILITY response, upper case, bounded in count and size;
    anything that is not an atom is left out."""
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    # One C-level scan: Dovecot lists some 40 names after login, and a probe parses 2-3 lists.
    names = dict.fromkeys(_CAPABILITY_NAME.findall(text.upper()))
    return tuple(names)[:MAX_CAPABILITIES]


def choose(capabilities: Sequence[str], wanted: Sequence[str]) -> str | None:
    """The first of ``wanted`` (``auto``: AUTHENTICATE PLAIN, then LOGIN) the server allows:
    a SASL mechanism it lists as ``AUTH=``, or LOGIN unless it says LOGINDISABLED."""
    for name in wanted:
        for mechanism in AUTO if name == "auto" else (name.upper(),):
            if mechanism == "LOGIN":
                if "LOGINDISABLED" not in capabilities:
                    return mechanism
            elif mechanism in SASL_MECHANISMS and f"AUTH={mechanism}" in capabilities:
                return mechanism
    return None


def quoted(text: str) -> str:
    """An IMAP quoted string; only for 7-bit text without CR, LF or NUL (else a literal)."""
    if not _quotable(text):
        raise ValueError("text needs a literal, not a quoted string")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def astring(text: str) -> str | bytes:
    """A string argument: quoted when it can be, else a literal (``bytes``, UTF-8)."""
    return quoted(text) if _quotable(text) else text.encode("utf-8")


def _quotable(text: str) -> bool:
    return text.isascii() and not any(c in text for c in "\r\n\0")


def mailbox_name(name: str) -> str:
    """A mailbox argument: modified UTF-7 (RFC 3501 §5.1.3), then quoted. The result never
    holds a control character, so it cannot break the command line."""
    return quoted(utf7_encode(name))


def utf7_encode(name: str) -> str:
    """Modified UTF-7: printable ASCII as is ("&" as "&-"), anything else as "&" + base64 of
    UTF-16BE with "," for "/" and no padding + "-"."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def masked_command(line: str, phase: Phase) -> str:
    """``line`` as the transcript shows it: in AUTH, the command and mechanism (and LOGIN's
    user name) but never a password, SASL payload or proof."""
    if phase is not Phase.AUTH:
        return line
    words = line.split(" ")
    if len(words) >= 2 and words[1].upper() == "AUTHENTICATE":
        return " ".join(words[:3]) + (" ***" if len(words) > 3 else "")
    if len(words) >= 2 and words[1].upper() == "LOGIN":
        return " ".join(words[:3]) + " ***"
    return "***" if line else ""


def response_text(response: Response) -> str:
    """A status response as shown in a failure: status, response code, text (no tag)."""
    parts = [response.keyword]
    if response.code is not None:
        parts.append(f"[{clean(response.code, 120)}]")
    if response.text:
        parts.append(response.text)
    return " ".join(parts)


def challenge(response: Response) -> bytes:
    """The base64 payload of a continuation request."""
    return sasl.unb64(response.data.decode("ascii", "replace"))


def secret_forms(target: Target) -> tuple[str, ...]:
    """Every form of the module's password a server could echo back, to be masked."""
    auth = target.module.auth
    if auth is None:
        return ()
    password = auth.password.reveal()
    forms = {
        password,
        sasl.b64(password),
        sasl.plain(auth.username, password),
        sasl.xoauth2(auth.username, password),
        password.replace("\\", "\\\\").replace('"', '\\"'),  # as quoted for LOGIN
    }
    # Longest first, so a base64 form is masked whole rather than around an inner match.
    return tuple(sorted((f for f in forms if len(f) >= 3), key=len, reverse=True))
