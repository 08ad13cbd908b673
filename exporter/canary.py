"""The canary: send a marked message through the target with the send library and, where
an IMAP mailbox is configured, find it there, time the round trip and delete it.

Sending uses the probed target's own module (same TLS, AUTH and deadline rules). Finding
runs under one deadline (the canary's ``timeout``); a canary that never arrives is reported
as not delivered once it passes. Reading the mailbox is a check of its own: when the session
fails (connect, TLS, login, search...), the IMAP failure is reported and delivery is unknown,
never "not delivered". Each session also sweeps this target's own canaries older than the
timeout (ones that arrived too late, or while the mailbox could not be read).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from email.message import EmailMessage

from .canary_verdicts import PublicSuffixList, key_names, read_verdicts, verify_dkim
from .config import CanaryConfig, CanaryRoute, Target
from .deadline import Deadline
from .imapcheck import TOKEN_HEADER, IMAPCheck, Sweep, find_and_delete, new_token, owner_id
from .maildomain.dnscache import DNSCache, Status
from .results import CanaryResult, Placement
from .results.verdicts import AuthVerdicts, DKIMSignature
from .send.client import SendFailure, SMTPClient
from .send.config import SMTPConfig
from .send.message import envelope

# The canary's DKIM keys are looked up after it was found, within this many seconds.
DKIM_LOOKUP_SECONDS = 5.0


def canary_message(
    canary: CanaryConfig, token: str, route: CanaryRoute | None = None
) -> EmailMessage:
    """The canary of ``route`` (default: the first): our token, the configured headers."""
    route = route or canary.all_routes[0]
    msg = EmailMessage()
    msg["From"] = canary.sender
    msg["To"] = route.recipient
    msg["Subject"] = f"smtp-health-exporter canary {token}"
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = f"<{token}@smtp-health-exporter.invalid>"
    msg[TOKEN_HEADER] = token
    for name, value in canary.headers:
        msg[name] = value
    msg.set_content(
        "This message checks that mail flows through this server. It is deleted "
        "automatically once found.\n"
    )
    return msg


async def run_canaries(
    target: Target, canary: CanaryConfig, dns: DNSCache | None = None
) -> tuple[CanaryResult, ...]:
    """One canary per route, side by side, in the routes' order. Never raises."""
    routes = canary.all_routes
    return tuple(await asyncio.gather(*(run_canary(target, canary, r, dns) for r in routes)))


async def run_canary(
    target: Target,
    canary: CanaryConfig,
    route: CanaryRoute | None = None,
    dns: DNSCache | None = None,
) -> CanaryResult:
    """Send one canary by ``route`` (default: the first) and, with IMAP configured, wait
    for it; read where it landed and what the receiver thought of it; with ``dns``, verify
    its DKIM signatures here too (keys looked up through that cache). Never raises."""
    route = route or canary.all_routes[0]
    sent_at = time.time()
    # Routes sharing a mailbox must not sweep each other's canaries; the default route
    # keeps the owner it always had.
    names = (target.name, target.module.name)
    owner = owner_id(*names) if route.name == "default" else owner_id(*names, route.name)
    token = new_token(owner, sent_at)
    env = envelope(canary_message(canary, token, route))
    module = target.module
    cfg = SMTPConfig(target.host, target.port, use_tls=False, timeout=module.timeout)
    client = SMTPClient(cfg, target)
    start = time.perf_counter()
    error: str | None = None
    try:
        await client.connect()
        results = await client.send(env)
        failed = [r for r in results if not r.ok]
        if failed:
            error = failed[0].error or "refused"
    except SendFailure as exc:
        error = exc.text
    finally:
        await client.close()
    send_seconds = time.perf_counter() - start
    if error is not None or route.imap is None:
        return CanaryResult(token, sent_at, error is None, send_seconds, error, route=route.name)
    sweep = Sweep(owner, canary.timeout)
    check = await find_and_delete(route.imap, token, Deadline.after(canary.timeout), sweep)
    # The public suffix list is a file of ~10k lines: read it off the loop, per canary
    # (minutes apart), rather than keep it in a module global.
    psl = await asyncio.to_thread(PublicSuffixList.load) if check.message else None
    # Found is found, even if a later step failed; not found means something only when
    # the mailbox was read to the end.
    delivered = True if check.found else (False if check.access_ok else None)
    return CanaryResult(
        token,
        sent_at,
        True,
        send_seconds,
        checked=True,
        delivered=delivered,
        delivered_at=check.seen_at,
        round_trip_seconds=(check.seen_at - sent_at) if check.found and check.seen_at else None,
        check_error=check.error,
        imap_failure=check.failure,
        swept=check.swept,
        late=check.late,
        route=route.name,
        placement=(Placement.JUNK if check.junk else Placement.INBOX) if check.found else None,
        folder=check.folder,
        verdicts=_verdicts(check, route, psl),
        local_dkim=await _local_dkim(check, dns, psl),
    )


def _verdicts(
    check: IMAPCheck, route: CanaryRoute, psl: PublicSuffixList | None
) -> AuthVerdicts | None:
    """The receiving host's verdicts from the found canary's header; None when there is
    no message or no ``authserv_id`` to trust."""
    if check.message is None or route.authserv_id is None:
        return None
    return read_verdicts(check.message, route.authserv_id, psl)


async def _local_dkim(
    check: IMAPCheck, dns: DNSCache | None, psl: PublicSuffixList | None
) -> tuple[DKIMSignature, ...] | None:
    """The canary's DKIM signatures verified here (empty: unsigned); None when not
    checked: no DNS to ask, or the message was not read whole."""
    if dns is None or check.message is None or not check.complete:
        return None
    message = check.message
    names = key_names(message)
    if not names:
        return ()
    deadline = Deadline.after(DKIM_LOOKUP_SECONDS)
    lookups = await asyncio.gather(*(dns.query(name, "TXT", deadline) for name in names))
    found = dict(zip(names, lookups, strict=True))

    def dns_txt(name: str) -> bytes | None:
        lookup = found.get(name)
        if lookup is None or lookup.status is Status.ERROR:
            raise LookupError(lookup.error if lookup else "not looked up")
        if lookup.status is not Status.OK or not lookup.records:
            return None
        return b"".join(lookup.records[0].strings)

    # RSA verification is CPU work of a few milliseconds: off the loop all the same.
    return await asyncio.to_thread(verify_dkim, message, dns_txt, psl)
