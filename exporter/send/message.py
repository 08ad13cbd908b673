"""Messages and envelopes: recipients from the headers, Bcc stripped, bytes on the wire."""

from __future__ import annotations

import copy
import email.policy
import email.utils
from dataclasses import dataclass
from email.message import EmailMessage, Message

_RECIPIENT_HEADERS = ("To", "Cc", "Bcc")
_RESENT_HEADERS = ("Resent-To", "Resent-Cc", "Resent-Bcc")


def make_msg(
    to: str | list[str],
    subject: str,
    body: str,
    *,
    sender: str | None = None,
    cc: str | list[str] | None = None,
    bcc: str | list[str] | None = None,
) -> EmailMessage:
    """A plain-text message with Date and Message-ID set; ``to`` (and ``cc``, ``bcc``) a
    string of addresses or a list of them.

    ``sender`` sets From. Without it the message has no From yet: the send functions then
    send it from ``cfg.username`` when that is an address, and otherwise refuse it (a
    failed result per recipient naming the fix), never sending it without a From.
    """
    msg = EmailMessage()
    if sender:
        msg["From"] = sender
    msg["To"] = to if isinstance(to, str) else ", ".join(to)
    if cc:
        msg["Cc"] = cc if isinstance(cc, str) else ", ".join(cc)
    if bcc:
        msg["Bcc"] = bcc if isinstance(bcc, str) else ", ".join(bcc)
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain="smtp-health-exporter.invalid")
    msg.set_content(body)
    return msg


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    data: bytes  # CRLF line ends, Bcc removed, not yet dot-stuffed
    message_id: str | None
    smtputf8: bool
    # Why this message must not be sent (no From, no sender); None when it may.
    problem: str | None = None


NO_FROM = (
    "message has no From header: pass make_msg(..., sender='you@example.com') "
    "or set msg['From'] (cfg.username is not an address to send from)"
)


def envelope(
    msg: Message, sender: str | None = None, *, default_from: str | None = None
) -> Envelope:
    """Sender and recipients as RFC 5322 3.6.6 and smtplib's send_message have them: with
    Resent-* headers present, the most recent resent block counts. Addresses are parsed with
    getaddresses (quoted names with commas, groups), deduplicated in order.

    ``sender`` is the envelope sender (``""``: the null reverse-path); None takes it from
    the headers. A message without From gets ``default_from`` on the transmitted copy;
    without that either, the envelope carries ``problem`` and must not be sent."""
    resent = msg.get_all("Resent-Date") is not None
    headers = _RESENT_HEADERS if resent else _RECIPIENT_HEADERS
    recipients: list[str] = []
    seen: set[str] = set()
    for name in headers:
        values = msg.get_all(name) or []
        if resent and values:
            values = values[:1]  # the newest block is on top
        for _, addr in email.utils.getaddresses([str(v) for v in values]):
            if not addr or ("@" not in addr and addr.lower() != "postmaster"):
                continue
            key = _normalise(addr)
            if key not in seen:
                seen.add(key)
                recipients.append(addr)
    has_from = bool(_first_address(msg, "From"))
    if sender is None:
        source = ("Resent-Sender", "Resent-From") if resent else ("Sender", "From")
        for name in source:
            sender = _first_address(msg, name)
            if sender:
                break
        sender = sender or (default_from if not has_from else None)
    out = _copy_without(msg, ("Bcc", "Resent-Bcc"))
    problem = None
    if not has_from:
        if default_from:
            del out["From"]  # an empty or address-less From
            out["From"] = default_from
        else:
            problem = NO_FROM
    utf8 = any(not a.isascii() for a in (*recipients, sender or ""))
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    data = out.as_bytes(policy=policy)
    mid = msg.get("Message-ID")
    return Envelope(sender or "", tuple(recipients), data, str(mid) if mid else None, utf8, problem)


def _first_address(msg: Message, name: str) -> str | None:
    value = msg.get(name)
    if not value:
        return None
    return next((a for _, a in email.utils.getaddresses([str(value)]) if a), None)


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 4.5.2 transparency, with the terminating CRLF.CRLF."""
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _normalise(addr: str) -> str:
    local, _, domain = addr.rpartition("@")
    return f"{local}@{domain.lower()}" if local else addr.lower()


def _copy_without(msg: Message, names: tuple[str, ...]) -> Message:
    # A deep copy, so the caller's message keeps its Bcc.
    out = copy.deepcopy(msg)
    for name in names:
        del out[name]
    return out
