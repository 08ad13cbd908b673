"""A verifying milter of our own for the receiving Postfix: SPF, DKIM and DMARC, written
into one ``Authentication-Results`` header (RFC 8601) at the top of the message.

Debian packages OpenDKIM (DKIM only) and OpenDMARC, but both ask the system resolver on
port 53, and the test DNS server listens on a free port of 127.0.0.1; so the receiving
side's verdicts come from this milter, which asks the test DNS server. DKIM is verified
with dkimpy; SPF is evaluated for the mechanisms the test zone uses (``ip4``, ``ip6``,
``a``, ``include``, ``all``, with qualifiers); DMARC takes the policy record and relaxed
alignment on the last two labels (the test domains have no public suffix below that).

It speaks the milter protocol (version 6, as Postfix's milter8 client does) on a TCP port
of 127.0.0.1, in its own thread and event loop. Headers already in the message, including
``Authentication-Results`` a sender forged, are left where they are: telling them apart is
the reader's job, and the tests check that it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
import threading
from dataclasses import dataclass, field
from typing import Self

import dkim
import dns.exception
import dns.resolver

from ..lifecycle import LoopThread

ADDRESS = "127.0.0.1"
MAX_PACKET = 1 << 20
MAX_MESSAGE = 4 << 20
SMFIF_ADDHDRS = 0x01
SMFIF_CHGHDRS = 0x10
# Commands that take no reply: macros, abort, quit.
_NO_REPLY = {b"D", b"A", b"Q"}


@dataclass
class _Message:
    client_ip: str = ""
    helo: str = ""
    mail_from: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)

    def raw(self) -> bytes:
        """The message as the sender's MTA sent it, CRLF line ends (what DKIM signed)."""
        out = bytearray()
        for name, value in self.headers:
            out += (
                f"{name}:{value}".replace("\r\n", "\n")
                .replace("\n", "\r\n")
                .encode("utf-8", "surrogateescape")
            )
            out += b"\r\n"
        out += b"\r\n" + bytes(self.body)
        return bytes(out)

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v.strip()
        return None


class VerifyingMilter(LoopThread):
    """The receiving side's verifier. ``authserv_id`` names it in the header it adds."""

    def __init__(self, authserv_id: str, dns_address: str, dns_port: int) -> None:
        super().__init__()
        self.authserv_id = authserv_id
        self._resolver = dns.resolver.Resolver(configure=False)
        self._resolver.nameservers = [dns_address]
        self._resolver.port = dns_port
        self._resolver.lifetime = 3.0
        self.port = 0
        self.verdicts: list[str] = []  # every header written, for the fixture's own tests

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="milter", daemon=True)
        self._thread.start()
        if not self._ready.wait(5.0) or self._start_error is not None:
            self.stop()
            raise RuntimeError(f"milter did not start: {self._start_error}")
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start()
            self._start_error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        server = await asyncio.start_server(self._session, ADDRESS, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop_requested.wait()
        for task in list(self._tasks):
            task.cancel()

    # --- the protocol -------------------------------------------------------------------
    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        msg = _Message()
        try:
            while True:
                head = await reader.readexactly(4)
                (size,) = struct.unpack("!I", head)
                if not 0 < size <= MAX_PACKET:
                    return
                packet = await reader.readexactly(size)
                cmd, data = packet[:1], packet[1:]
                if cmd == b"Q":
                    return
                if cmd == b"K":  # quit, but the connection serves the next session
                    msg = _Message()
                    continue
                replies = self._handle(cmd, data, msg)
                if cmd == b"A":
                    msg = _Message(client_ip=msg.client_ip, helo=msg.helo)
                if cmd in _NO_REPLY:
                    continue
                for reply in replies:
                    writer.write(struct.pack("!I", len(reply)) + reply)
                await writer.drain()
                if cmd == b"E":
                    msg = _Message(client_ip=msg.client_ip, helo=msg.helo)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    def _handle(self, cmd: bytes, data: bytes, msg: _Message) -> list[bytes]:
        if cmd == b"O":
            version, _actions, _protocol = struct.unpack("!III", data[:12])
            return [b"O" + struct.pack("!III", min(version, 6), SMFIF_ADDHDRS, 0)]
        if cmd == b"C":
            _host, _, rest = data.partition(b"\0")
            if rest[:1] in (b"4", b"6"):
                msg.client_ip = rest[3:].split(b"\0", 1)[0].decode("ascii", "replace")
            return [b"c"]
        if cmd == b"H":
            msg.helo = data.rstrip(b"\0").decode("utf-8", "replace")
        elif cmd == b"M":
            first = data.split(b"\0", 1)[0].decode("utf-8", "replace")
            msg.mail_from = first.strip().strip("<>")
        elif cmd == b"L":
            name, _, rest = data.partition(b"\0")
            value = rest.rstrip(b"\0")
            msg.headers.append(
                (
                    name.decode("utf-8", "surrogateescape"),
                    # Postfix gives the value without the space after the colon.
                    " " + value.decode("utf-8", "surrogateescape"),
                )
            )
        elif cmd == b"B":
            if len(msg.body) + len(data) <= MAX_MESSAGE:
                msg.body += data
        elif cmd == b"E":
            value = self._verdict(msg)
            self.verdicts.append(value)
            # Index 0: above every header the message brought, as a receiving MTA's own
            # Authentication-Results sits above what the sender wrote.
            ins = b"i" + struct.pack("!I", 0) + b"Authentication-Results\0" + value.encode() + b"\0"
            return [ins, b"a"]
        return [b"c"]

    # --- the verdicts -------------------------------------------------------------------
    def _verdict(self, msg: _Message) -> str:
        mail_domain = msg.mail_from.rpartition("@")[2].lower() or msg.helo.lower()
        spf = self._spf(msg.client_ip, mail_domain)
        dkim_result, dkim_domain = self._dkim(msg.raw())
        from_domain = _from_domain(msg.header("From") or "")
        dmarc = self._dmarc(from_domain, spf, mail_domain, dkim_result, dkim_domain)
        parts = [
            self.authserv_id,
            f"spf={spf} smtp.mailfrom={msg.mail_from or 'postmaster@' + msg.helo}",
            f"dkim={dkim_result}" + (f" header.d={dkim_domain}" if dkim_domain else ""),
            f"dmarc={dmarc} header.from={from_domain or 'unknown'}",
        ]
        return ";\r\n\t".join(parts)

    def _txt(self, name: str) -> list[str]:
        try:
            answer = self._resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    def _addresses(self, name: str) -> list[str]:
        out: list[str] = []
        for rtype in ("A", "AAAA"):
            with contextlib.suppress(dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                out += [r.to_text() for r in self._resolver.resolve(name, rtype)]
        return out

    def _spf(self, ip: str, domain: str, depth: int = 0) -> str:
        if not ip or not domain or depth > 5:
            return "none" if depth == 0 else "permerror"
        try:
            records = [t for t in self._txt(domain) if t.lower().startswith("v=spf1")]
        except dns.exception.DNSException:
            return "temperror"
        if len(records) != 1:
            return "none" if not records else "permerror"
        address = ipaddress.ip_address(ip)
        results = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
        for term in records[0].split()[1:]:
            qualifier = term[0] if term[0] in results else "+"
            mech = term.lstrip("+-~?")
            name, _, arg = mech.partition(":")
            matched = False
            if name == "all":
                matched = True
            elif name in ("ip4", "ip6"):
                matched = address in ipaddress.ip_network(arg, strict=False)
            elif name == "a":
                matched = ip in self._addresses(arg or domain)
            elif name == "include":
                matched = self._spf(ip, arg, depth + 1) == "pass"
            if matched:
                return results[qualifier]
        return "neutral"

    def _dkim(self, raw: bytes) -> tuple[str, str | None]:
        if b"dkim-signature:" not in raw.lower():
            return "none", None
        verifier = dkim.DKIM(raw)
        try:
            ok = verifier.verify(dnsfunc=self._dkim_dns)
        except dkim.DKIMException:
            ok = False
        domain = verifier.domain.decode() if verifier.domain else None
        return ("pass" if ok else "fail"), domain

    def _dkim_dns(self, name: bytes | str, timeout: int = 5) -> bytes:
        text = name.decode() if isinstance(name, bytes) else name
        records = self._txt(text.rstrip("."))
        return records[0].encode() if records else b""

    def _dmarc_records(self, domain: str) -> list[str]:
        return [t for t in self._txt(f"_dmarc.{domain}") if t.startswith("v=DMARC1")]

    def _dmarc(
        self,
        from_domain: str,
        spf: str,
        mail_domain: str,
        dkim_result: str,
        dkim_domain: str | None,
    ) -> str:
        if not from_domain:
            return "none"
        records = [t for t in self._txt(f"_dmarc.{from_domain}") if t.startswith("v=DMARC1")]
        if not records:
            records = [
                t for t in self._txt(f"_dmarc.{_org(from_domain)}") if t.startswith("v=DMARC1")
            ]
        if not records:
            return "none"
        spf_aligned = spf == "pass" and _org(mail_domain) == _org(from_domain)
        dkim_aligned = (
            dkim_result == "pass"
            and dkim_domain is not None
            and _org(dkim_domain) == _org(from_domain)
        )
        return "pass" if spf_aligned or dkim_aligned else "fail"


def _org(domain: str) -> str:
    return ".".join(domain.lower().rstrip(".").split(".")[-2:])


def _from_domain(value: str) -> str:
    address = value.rpartition("<")[2].partition(">")[0] if "<" in value else value
    return address.strip().rpartition("@")[2].lower()
