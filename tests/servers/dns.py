"""A small authoritative DNS server on 127.0.0.1 for tests, built on dnslib.

``DNSServer`` answers UDP and TCP on one port from BIND-style zone text, in
its own thread with its own event loop (like ``FaultServer``). It is meant to
stand in for the resolver the code under test is pointed at, so it answers
every name it is asked about: records of the asked type, NODATA (NOERROR with
an empty answer) when the name exists with other types only, NXDOMAIN when it
does not exist. On top of that it can misbehave in the ways a resolver does:
never answer some names (``drop``), answer SERVFAIL for some (``servfail``), answer
late (``delay``), and claim DNSSEC validation (``ad``).

Typical use::

    zone = '''
    example.test. 300 IN MX 10 mx1.example.test.
    mx1.example.test. 300 IN A 127.0.0.1
    '''
    with DNSServer(zone) as server:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [server.address]
        resolver.port = server.port
        resolver.resolve("example.test.", "MX")

Deliberate simplifications: no CNAME chasing, no wildcards, no DNSSEC
records beyond what the zone spells out, no zone transfers. Record types are
whatever dnslib's zone parser understands (A, AAAA, MX, TXT, TLSA, SOA, NS,
PTR, SRV, CAA, DS, ... but not HINFO); names must be absolute.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections import deque
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self, cast

from dnslib import EDNS0, OPCODE, QTYPE, RCODE, RR, DNSHeader, DNSRecord
from dnslib.dns import SOA

from .lifecycle import LoopThread

ADDRESS = "127.0.0.1"
QUERIES_MAX = 1000
ERRORS_MAX = 50
START_TIMEOUT = 5.0
STOP_TIMEOUT = 2.0
BIND_ATTEMPTS = 20
# RFC 1035 limit for UDP replies to clients that do not advertise EDNS.
CLASSIC_UDP_SIZE = 512
# What we advertise back to EDNS clients: the DNS Flag Day 2020 value.
EDNS_UDP_SIZE = 1232
# Far longer than any test waits on one connection, short enough that a client
# which forgets a TCP connection does not pin a task until stop().
TCP_IDLE_TIMEOUT = 10.0
# The name start() asks about to prove the server answers; never recorded in
# ``queries`` so tests see only what the code under test asked.
READY_NAME = "ready.dns-server.invalid."


def normalize_name(name: str) -> str:
    """Lower-case and make absolute, so lookups ignore case as DNS requires."""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def _ancestors(name: str) -> Iterator[str]:
    """The name itself, then each parent up to and including the root."""
    while True:
        yield name
        if name == ".":
            return
        _, _, name = name.partition(".")
        name = name or "."


@dataclass(frozen=True)
class _Zone:
    """Parsed zone text; immutable so a set_zone() swap is atomic for readers."""

    records: Mapping[str, tuple[RR, ...]]
    # Owners plus all their ancestors: a parent with no records of its own
    # (an "empty non-terminal" such as _tcp.mx.example.) still exists, so
    # asking for it is NODATA rather than NXDOMAIN, as on a real server.
    existing: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> _Zone:
        try:
            rrs = RR.fromZone(text)
        except Exception as exc:
            # dnslib reports bad zone text with bare int()/hex errors that do
            # not say which record was wrong; at least say it was the zone.
            raise ValueError(f"cannot parse zone text: {type(exc).__name__}: {exc}") from exc
        records: dict[str, list[RR]] = {}
        for rr in rrs:
            records.setdefault(normalize_name(str(rr.rname)), []).append(rr)
        existing = frozenset(a for owner in records for a in _ancestors(owner))
        return cls({k: tuple(v) for k, v in records.items()}, existing)

    def negative_soa(self, qname: str) -> RR | None:
        """The closest enclosing SOA, for the authority section of a negative answer.

        Resolvers take the negative-caching TTL from it (RFC 2308), so it is
        only sent when the zone text has one; tests without an SOA get none.
        """
        for name in _ancestors(qname):
            for rr in self.records.get(name, ()):
                if rr.rtype == QTYPE.SOA and isinstance(rr.rdata, SOA):
                    minimum = rr.rdata.times[-1]
                    return RR(rr.rname, QTYPE.SOA, rr.rclass, min(rr.ttl, minimum), rr.rdata)
        return None


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not isinstance: CPython 3.11's selector datagram transport
        # does not actually subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        # One task per query, so a delayed name never holds up the others.
        self.server._spawn(self._answer(data, addr))

    async def _answer(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        reply = await self.server._respond(data, udp=True)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class DNSServer(LoopThread):
    """An authoritative DNS server on 127.0.0.1, UDP and TCP on the same port.

    ``ad``, ``drop`` and ``delay`` may be changed while the server runs; each
    query reads them afresh. ``queries`` records every question asked (except
    start()'s own readiness check) as ``(qname, qtype)`` with the name
    lower-cased and absolute and the type as its mnemonic, e.g.
    ``("example.test.", "MX")``.
    """

    address: str
    port: int
    ad: bool

    def __init__(
        self,
        zone: str,
        *,
        ad: bool = False,
        drop: Iterable[str] = (),
        delay: dict[str, float] | None = None,
        servfail: Iterable[str] = (),
    ) -> None:
        """Parse the zone (raising ValueError if dnslib cannot) but do not start.

        zone: BIND-style zone text with absolute names; TTLs are served as written.
        ad: set the AD bit on every answer, as a validating resolver would.
        drop: names (case-insensitive) whose queries are never answered.
        delay: name -> seconds to wait before answering queries for it.
        servfail: names (case-insensitive) answered SERVFAIL, as a resolver does when the
            domain's own servers fail.
        """
        self.address = ADDRESS
        self.port = 0
        self.ad = ad
        self._zone = _Zone.parse(zone)
        self._drop = frozenset(normalize_name(n) for n in drop)
        self._servfail = frozenset(normalize_name(n) for n in servfail)
        self._delay = {normalize_name(n): s for n, s in (delay or {}).items()}
        self._lock = threading.Lock()
        self._queries: deque[tuple[str, str]] = deque(maxlen=QUERIES_MAX)
        self._errors: deque[str] = deque(maxlen=ERRORS_MAX)
        super().__init__()

    # -- configuration (safe from any thread) ---------------------------------

    def set_zone(self, zone: str) -> None:
        """Replace every record; queries already being answered see old or new, never a mix."""
        self._zone = _Zone.parse(zone)

    @property
    def drop(self) -> frozenset[str]:
        """Names (lower-case, absolute) whose queries get no answer at all."""
        return self._drop

    @drop.setter
    def drop(self, names: Iterable[str]) -> None:
        self._drop = frozenset(normalize_name(n) for n in names)

    @property
    def delay(self) -> dict[str, float]:
        """A copy of name -> seconds to wait before answering; assign to change it."""
        return dict(self._delay)

    @delay.setter
    def delay(self, delays: Mapping[str, float]) -> None:
        self._delay = {normalize_name(n): s for n, s in delays.items()}

    # -- observation (safe from any thread) ------------------------------------

    @property
    def queries(self) -> list[tuple[str, str]]:
        """A snapshot of the last QUERIES_MAX questions, oldest first."""
        with self._lock:
            return list(self._queries)

    def clear_queries(self) -> None:
        """Forget the questions seen so far, e.g. between phases of one test."""
        with self._lock:
            self._queries.clear()

    @property
    def errors(self) -> list[str]:
        """Unexpected exceptions inside the server; a healthy run leaves this empty."""
        with self._lock:
            return list(self._errors)

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> Self:
        """Bind UDP and TCP on one free port, start the thread, check both answer.

        Raises OSError if no port free for both could be found, RuntimeError
        if the server does not answer within START_TIMEOUT seconds.
        """
        if self._thread is not None:
            raise RuntimeError("DNSServer already started")
        udp, tcp = self._bind()
        self.port = udp.getsockname()[1]
        self._ready.clear()
        self._start_error = None
        self._thread = threading.Thread(
            target=self._run, args=(udp, tcp), name=f"DNSServer-{self.port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self.stop()
            raise RuntimeError("DNSServer did not start in time")
        if self._start_error is not None:
            self._thread.join(STOP_TIMEOUT)
            self._thread = None
            raise RuntimeError("DNSServer failed to start") from self._start_error
        try:
            self._check_ready()
        except BaseException:
            self.stop()
            raise
        return self

    # -- internals: sockets and the event loop --------------------------------

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        """UDP first on a kernel-chosen port, then TCP on the same number.

        The kernel only promises the port is free for UDP; another test may
        hold it for TCP, so a clash means trying again with a fresh port.
        """
        last_error: OSError | None = None
        for _ in range(BIND_ATTEMPTS):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                udp.bind((ADDRESS, 0))
                tcp.bind((ADDRESS, udp.getsockname()[1]))
                tcp.listen(64)
            except OSError as exc:
                udp.close()
                tcp.close()
                last_error = exc
                continue
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp
        raise OSError(f"no port free for both UDP and TCP on {ADDRESS}") from last_error

    def _run(self, udp: socket.socket, tcp: socket.socket) -> None:
        try:
            asyncio.run(self._serve(udp, tcp))
        except BaseException as exc:
            if not self._ready.is_set():
                self._start_error = exc
            self._record_error(exc)
        finally:
            # If _serve never took ownership, the sockets must still be released.
            udp.close()
            tcp.close()
            self._ready.set()

    async def _serve(self, udp: socket.socket, tcp: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_requested = asyncio.Event()
        transport, _ = await loop.create_datagram_endpoint(lambda: _UDPProtocol(self), sock=udp)
        server = await asyncio.start_server(self._handle_tcp, sock=tcp)
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            transport.close()
            server.close()
            # Python 3.11's Server.close() leaves accepted connections open.
            for writer in list(self._writers):
                writer.transport.abort()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._record_error(task.exception())

    async def _handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Registered as a task too, so stop() cancels connections mid-delay.
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        self._writers.add(writer)
        try:
            # RFC 7766: several queries may share a connection, each prefixed
            # by its two-byte length; a dropped one simply gets no reply.
            while True:
                prefix = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                (length,) = struct.unpack("!H", prefix)
                data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_TIMEOUT)
                reply = await self._respond(data, udp=False)
                if reply is not None:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # the client left or went quiet; both are ordinary
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    def _record_error(self, exc: BaseException | None) -> None:
        with self._lock:
            self._errors.append(f"{type(exc).__name__}: {exc}")

    # -- internals: answering ----------------------------------------------------

    async def _respond(self, data: bytes, *, udp: bool) -> bytes | None:
        """The wire-format reply to one query, or None when it must go unanswered."""
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return _formerr(data)
        if request.header.qr:
            return None  # a response, not a query: answering could start a loop
        if request.header.opcode != OPCODE.QUERY or len(request.questions) != 1:
            rcode = RCODE.NOTIMP if request.header.opcode != OPCODE.QUERY else RCODE.FORMERR
            return self._reply(request, rcode).pack()

        question = request.q
        qname = normalize_name(str(question.qname))
        if qname != READY_NAME:
            with self._lock:
                self._queries.append((qname, QTYPE[question.qtype]))
        if qname in self._drop:
            return None
        delay = self._delay.get(qname)
        if delay:
            await asyncio.sleep(delay)

        if qname in self._servfail:
            return self._reply(request, RCODE.SERVFAIL).pack()
        reply = self._answer(request, qname)
        packed = reply.pack()
        if udp and len(packed) > _udp_limit(request):
            # Too big for the client's buffer: say so, and it retries over TCP.
            truncated = self._reply(request, RCODE.NOERROR)
            truncated.header.tc = 1
            packed = truncated.pack()
        return packed

    def _answer(self, request: DNSRecord, qname: str) -> DNSRecord:
        question = request.q
        zone = self._zone  # one snapshot for the whole answer
        if question.qclass not in (1, 255):  # IN, ANY
            return self._reply(request, RCODE.REFUSED)
        if qname not in zone.existing:
            reply = self._reply(request, RCODE.NXDOMAIN)
        else:
            reply = self._reply(request, RCODE.NOERROR)
            for rr in zone.records.get(qname, ()):
                if question.qtype in (rr.rtype, QTYPE.ANY):
                    # Owner spelled as asked: resolvers doing 0x20 case
                    # randomisation expect their own spelling back.
                    reply.add_answer(RR(question.qname, rr.rtype, rr.rclass, rr.ttl, rr.rdata))
        if not reply.rr:
            soa = zone.negative_soa(qname)
            if soa is not None:
                reply.add_auth(soa)
        return reply

    def _reply(self, request: DNSRecord, rcode: int) -> DNSRecord:
        """A reply skeleton: question echoed, flags set the way this server plays its role."""
        header = DNSHeader(
            id=request.header.id,
            qr=1,
            opcode=request.header.opcode,
            aa=1,
            rd=request.header.rd,
            # It stands in for the resolver the code under test is pointed at,
            # so it claims recursion is available, as that resolver would.
            ra=1,
            ad=int(self.ad),
            cd=request.header.cd,
            rcode=rcode,
        )
        reply = DNSRecord(header, q=request.q if request.questions else None)
        if _edns(request) is not None:
            reply.add_ar(EDNS0(udp_len=EDNS_UDP_SIZE))
        return reply

    def _check_ready(self) -> None:
        """Ask READY_NAME over UDP and over TCP; both must answer before start() returns."""
        query = DNSRecord.question(READY_NAME, "A")
        for tcp in (False, True):
            answer = DNSRecord.parse(query.send(ADDRESS, self.port, tcp=tcp, timeout=START_TIMEOUT))
            if answer.header.id != query.header.id or not answer.header.qr:
                raise RuntimeError(f"DNSServer gave a bogus readiness answer (tcp={tcp})")


def _edns(request: DNSRecord) -> RR | None:
    return next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)


def _udp_limit(request: DNSRecord) -> int:
    """The largest UDP reply the client said it accepts (RFC 6891 section 6.2.5)."""
    opt = _edns(request)
    return CLASSIC_UDP_SIZE if opt is None else max(CLASSIC_UDP_SIZE, opt.rclass)


def _formerr(data: bytes) -> bytes | None:
    """FORMERR for a query dnslib cannot parse, if it has at least an ID to echo."""
    if len(data) < 2:
        return None
    (query_id,) = struct.unpack("!H", data[:2])
    return DNSRecord(DNSHeader(id=query_id, qr=1, rcode=RCODE.FORMERR)).pack()
