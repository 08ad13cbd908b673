"""Reverse DNS of the addresses that send mail: PTR present, forward-confirmed (a PTR name
resolves back to the address: FCrDNS), and for MX hosts, the name the SMTP server gives in
its greeting and EHLO reply is that name.

Large receivers refuse or junk mail from an address without a PTR record or whose PTR name
does not resolve back to it; many also compare the client's HELO name with it. The
greeting is read here, by the domain check itself, rather than joined from the probe's
result at render time: the result then flows one way (check -> result -> store -> text),
``--once`` and the scheduler get the same answer, and it does not depend on whether a probe
target happens to be the MX address (a module on port 587 probes another host or name).
An MTA names itself the same way in its banner and in its own HELO (Postfix:
``myhostname`` for both ``smtpd_banner`` and ``smtp_helo_name``), which the greeting is
the observable side of.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from dataclasses import replace

from ..config import Module, Target, TLSMode
from ..deadline import Deadline
from ..errors import ProbeError
from ..results.domain import DomainCheck, Finding, MXHost, ReverseDNS
from ..smtp.session import Session
from .dnscache import DNSCache, Status

MAX_ADDRESSES = 40  # addresses (MX and sending) looked at per check
MAX_PTR_NAMES = 5  # PTR names per address tried for forward confirmation
MAX_GREETINGS = 20  # SMTP sessions per check, to read the greeting


def normalize(name: str) -> str:
    return name.rstrip(".").lower()


async def check_reverse_dns(
    mx_hosts: tuple[MXHost, ...],
    sending: tuple[str, ...],
    cache: DNSCache,
    deadline: Deadline,
    *,
    greeting: bool,
    port: int = 25,
    ehlo_name: str = "localhost.localdomain",
) -> tuple[tuple[ReverseDNS, ...], list[Finding]]:
    """One ``ReverseDNS`` per MX address (when ``mx_hosts`` are given) and per sending
    address; the greeting of each MX address is read when ``greeting`` is set."""
    pairs: list[tuple[str, str | None]] = [(a, mx.host) for mx in mx_hosts for a in mx.addresses]
    pairs += [(a, None) for a in sending]
    pairs = list(dict.fromkeys(pairs))[:MAX_ADDRESSES]
    greet = set([a for a, h in pairs if h is not None][:MAX_GREETINGS]) if greeting else set()
    results = await asyncio.gather(
        *(
            _one(a, h, cache, deadline, h is not None and a in greet, port, ehlo_name)
            for a, h in pairs
        )
    )
    return tuple(r for r, _ in results), [f for _, fs in results for f in fs]


async def _one(
    address: str,
    mx_host: str | None,
    cache: DNSCache,
    deadline: Deadline,
    greet: bool,
    port: int,
    ehlo_name: str,
) -> tuple[ReverseDNS, list[Finding]]:
    who = f"{address} (MX {mx_host})" if mx_host else f"sending address {address}"
    out: list[Finding] = []

    def finding(reason: str) -> None:
        out.append(Finding(DomainCheck.REVERSE_DNS, f"reverse DNS: {reason}"))

    ip = ipaddress.ip_address(address)
    lookup = await cache.query(ip.reverse_pointer, "PTR", deadline)
    if lookup.status is Status.ERROR:
        finding(f"PTR lookup of {who} failed: {lookup.error}")
        return ReverseDNS(address, mx_host, error=lookup.error), out
    names = tuple(dict.fromkeys(normalize(r.target.to_text()) for r in lookup.records))
    if not names:
        finding(f"{who} has no PTR record (receivers refuse or junk its mail)")
    confirmed = await _confirmed_name(ip, names, cache, deadline)
    if names and confirmed is None:
        shown = ", ".join(names[:MAX_PTR_NAMES])
        finding(f"PTR of {who} ({shown}) does not resolve back to it (not forward-confirmed)")
    result = ReverseDNS(address, mx_host, names, confirmed is not None, confirmed)
    if not greet:
        return result, out
    greeting, ehlo, error = await read_names(address, port, ehlo_name, deadline)
    if error is not None:
        finding(f"no greeting from {address}:{port} (MX {mx_host}): {error}")
        return replace(result, greeting_name=greeting, ehlo_name=ehlo, greeting_error=error), out
    if confirmed is None:  # nothing to compare with: the PTR finding says why
        return replace(result, greeting_name=greeting, ehlo_name=ehlo), out
    said = [n for n in (greeting, ehlo) if n]
    matches = bool(said) and all(normalize(n) == confirmed for n in said)
    if not matches:
        finding(
            f"{address} (MX {mx_host}) names itself {' / '.join(dict.fromkeys(said)) or '-'}"
            f" in its greeting / EHLO, its forward-confirmed PTR name is {confirmed}"
        )
    return replace(result, greeting_name=greeting, ehlo_name=ehlo, name_matches=matches), out


async def _confirmed_name(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    names: tuple[str, ...],
    cache: DNSCache,
    deadline: Deadline,
) -> str | None:
    """The first PTR name whose A (or AAAA, for IPv6) records include ``ip``."""
    rdtype = "A" if ip.version == 4 else "AAAA"
    for name in names[:MAX_PTR_NAMES]:
        lookup = await cache.query(name, rdtype, deadline)
        if any(ipaddress.ip_address(r.address) == ip for r in lookup.records):
            return name
    return None


async def read_names(
    address: str, port: int, ehlo_name: str, deadline: Deadline
) -> tuple[str | None, str | None, str | None]:
    """Connect, read the greeting, EHLO, QUIT: (greeting name, EHLO name, error). Never
    raises. Plain SMTP: the names come before STARTTLS."""
    module = Module(
        name="reverse_dns",
        tls=TLSMode.NONE,
        port=port,
        tls_required=False,
        ehlo_name=ehlo_name,
        timeout=max(deadline.remaining(), 0.001),
    )
    session = Session(Target(f"{address}:{port}", address, port, module))
    try:
        async with asyncio.timeout_at(deadline.at):
            await session.establish()
            with contextlib.suppress(ProbeError):  # the names are what we came for
                await session.quit()
    except TimeoutError:
        return session.greeting_host, None, f"no answer by the deadline ({session.phase})"
    except ProbeError as exc:
        return session.greeting_host, None, f"{exc.phase}: {exc.detail}"[:200]
    finally:
        session.close()
    return session.greeting_host, session.extensions.host, None
