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
    """A plain-text message with Date and Message-ID set."""
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


def envelope(msg: Message, sender: str | None = None) -> Envelope:
    """Sender and recipients as RFC 5322 3.6.6 and smtplib's send_message have them: with
    Resent-* headers present, the most recent resent block counts. Addresses are parsed with
    getaddresses (quoted names with commas, groups), deduplicated in order."""
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
    if sender is None:
        source = ("Resent-Sender", "Resent-From") if resent else ("Sender", "From")
        for name in source:
            value = msg.get(name)
            if value:
                sender = email.utils.getaddresses([str(value)])[0][1]
                break
    out = _copy_without(msg, ("Bcc", "Resent-Bcc"))
    utf8 = any(not a.isascii() for a in (*recipients, sender or ""))
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    data = out.as_bytes(policy=policy)
    mid = msg.get("Message-ID")
    return Envelope(sender or "", tuple(recipients), data, str(mid) if mid else None, utf8)


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
