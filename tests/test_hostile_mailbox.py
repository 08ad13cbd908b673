"""The IMAP and POP3 probes against deliberately hostile servers (tests/servers/mailfault.py):
every behaviour ends within the module's timeout + 10 % (measured from outside), in the
phase and with the failure kind its documentation names, with nothing secret in the result,
and with bounded memory; the floods end by a bound of the probe, long before the deadline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import time
import tracemalloc

import pytest

from exporter import probe
from exporter.config import AuthConfig, Module, Secret, Target, TLSMode
from exporter.report.transcript import Transcript
from exporter.results import FailureKind, Phase, ProbeResult
from tests.servers.mailfault import (
    IMAP_BEHAVIOURS,
    MAILBOX_SIZE,
    MESSAGES,
    POP3_BEHAVIOURS,
    Behaviour,
    FaultCerts,
    IMAPFault,
    POP3Fault,
)

DEADLINE = 2.0
# Behaviours a correct probe ends by one of its bounds (line, literal, responses per
# command) run with this longer deadline, so that "ended by the bound" shows as the bound's
# failure kind well inside it, however loaded the machine, and never as a timeout race.
BOUNDED_DEADLINE = 10.0
MEMORY_BOUND = 4 * 1024 * 1024
# Longer than the TLS shutdown's timer (exporter/net/memtls.py: 2 s).
SHUTDOWN_GRACE = 3.0
TRANSCRIPT_BYTES = 40 * 1024  # exporter/report/transcript.py keeps 32 KiB, plus its notes
USER = "probe"
PASSWORD = "Mailfault-S3cret"
TLS_MODES = {None: TLSMode.NONE, "starttls": TLSMode.STARTTLS, "implicit": TLSMode.IMPLICIT}
SERVERS: dict[str, type[IMAPFault] | type[POP3Fault]] = {"imap": IMAPFault, "pop3": POP3Fault}
TABLES = {"imap": IMAP_BEHAVIOURS, "pop3": POP3_BEHAVIOURS}
# Known probe defects, each with the file to fix; the case stays in the matrix (and xpasses
# once fixed).
KNOWN: dict[tuple[str, str], str] = {
    ("imap", "late_flood"): (
        "on a loaded machine the deadline overshoots when a flood starts just before it "
        "(idle: the bound ends it at 1.9-2.0 s; at load 7-14 on 2 cores: 2.1-3.0 s): "
        "exporter/net/connection.py feeds the reader a whole 256 KiB socket read (~8,500 "
        "short responses) in one data_received (Connection.read() now yields every 256 "
        "ready responses, so only that one parse delays the timeout); with 16-64 KiB reads "
        "it overshot by "
        "0.02-0.2 s under the same load"
    ),
}
# The password and the SASL PLAIN forms that carry it.
SECRET_FORMS = (
    PASSWORD,
    base64.b64encode(PASSWORD.encode()).decode(),
    base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
)
CASES = [
    pytest.param(
        protocol,
        name,
        id=f"{protocol}-{name}",
        marks=[pytest.mark.xfail(reason=KNOWN[protocol, name], strict=False)]
        if (protocol, name) in KNOWN
        else [],
    )
    for protocol, table in TABLES.items()
    for name in table
]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> FaultCerts:
    return FaultCerts.make(tmp_path_factory.mktemp("hostile-mailbox"))


@pytest.fixture(scope="module")
def server_ctx(certs: FaultCerts) -> ssl.SSLContext:
    return certs.server_context()


def target_for(
    protocol: str, port: int, spec: Behaviour, ca_file: str, timeout: float = DEADLINE
) -> Target:
    module = Module(
        name=f"hostile_{protocol}",
        protocol=protocol,
        tls=TLS_MODES[spec.tls],
        tls_ca_file=ca_file,
        timeout=timeout,
        auth=AuthConfig(USER, Secret(PASSWORD), ("auto",), spec.tls is None),
    )
    return Target(f"127.0.0.1:{port}", "127.0.0.1", port, module)


def run_against(
    protocol: str,
    behaviour: str,
    server_ctx: ssl.SSLContext,
    ca_file: str,
    trace_memory: bool = False,
    transcript: Transcript | None = None,
) -> tuple[ProbeResult, float, int]:
    """(result, seconds from outside, peak traced memory or 0) of one probe, and a check
    that the probe left no connection to the server open.

    Memory is traced only when asked: tracemalloc slows every allocation (the server's
    too, in its thread) several times over, which would distort the timings."""
    spec = TABLES[protocol][behaviour]
    if transcript is None:
        transcript = Transcript()
    with SERVERS[protocol](behaviour, spec.tls, ssl_context=server_ctx) as server:
        timeout = BOUNDED_DEADLINE if spec.bounded else DEADLINE
        target = target_for(protocol, server.port, spec, ca_file, timeout)
        result, elapsed, peak, left = asyncio.run(
            _probe_and_settle(target, server.port, trace_memory, transcript)
        )
        assert server.errors == []
    assert not left, f"{behaviour}: the probe left its connection open: {left}"
    return result, elapsed, peak


async def _probe_and_settle(
    target: Target, port: int, trace_memory: bool, wire: Transcript
) -> tuple[ProbeResult, float, int, list[str]]:
    """Probe (its duration and memory peak measured), then let the loop run as a
    long-lived exporter's would: a TLS session closed gracefully keeps its socket until
    the server's close_notify or FIN arrives, or the TLS shutdown's own timer fires
    (asyncio.run ending at once would abandon it); then list what is still open."""
    if trace_memory:
        tracemalloc.start()
    start = time.monotonic()
    try:
        result = await probe.run(target, wire=wire)
    finally:
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1] if trace_memory else 0
        tracemalloc.stop()
    settle = time.monotonic() + SHUTDOWN_GRACE
    while (left := _client_sockets(port)) and time.monotonic() < settle:
        await asyncio.sleep(0.05)
    return result, elapsed, peak, left


def _client_sockets(port: int) -> list[str]:
    """This process's open TCP connections to 127.0.0.1:port (the probe's side of them),
    as "local port -> state" from /proc/net/tcp."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                mine.add(target[8:-1])
    found = []
    with open("/proc/net/tcp") as table:
        text = table.read()  # megabytes on a busy machine: only our lines are split
    for inode in mine:
        at = text.find(f" {inode} ")
        if at == -1:
            continue
        fields = text[text.rfind("\n", 0, at) + 1 : at].split()
        local, remote, state = fields[1], fields[2], fields[3]
        if int(remote.rsplit(":", 1)[1], 16) == port:
            found.append(f"{int(local.rsplit(':', 1)[1], 16)} -> state {state}")
    return found


def assert_expected(spec: Behaviour, result: ProbeResult) -> None:
    f = result.failure
    assert f is not None, f"passed but should fail in {spec.phase}"
    assert (f.phase, f.kind) in {(Phase(spec.phase), FailureKind(k)) for k in spec.kinds}, f


def test_every_protocol_has_enough_hostile_behaviours():
    for table in TABLES.values():
        assert sum(b.phase is not None for b in table.values()) >= 18


@pytest.mark.parametrize(("protocol", "behaviour"), CASES)
def test_hostile_mailbox(protocol, behaviour, server_ctx, certs):
    spec = TABLES[protocol][behaviour]
    transcript = Transcript()
    result, elapsed, _ = run_against(
        protocol, behaviour, server_ctx, str(certs.ca_file), transcript=transcript
    )
    # The /probe?debug=true transcript: secrets masked, bounded.
    text = transcript.text()
    for secret in SECRET_FORMS:
        assert secret not in text, f"{behaviour}: a credential in the transcript"
    assert not any(ord(c) < 32 and c != "\n" for c in text), repr(text[:200])
    assert len(text) <= TRANSCRIPT_BYTES

    deadline = BOUNDED_DEADLINE if spec.bounded else DEADLINE
    assert elapsed <= deadline * 1.1, f"{behaviour} took {elapsed:.2f}s"
    assert result.duration_seconds <= deadline * 1.1
    assert PASSWORD not in repr(result)
    assert result.protocol == protocol
    if spec.phase is None:
        assert result.failure is None, result.failure
        assert result.mailbox is not None and result.mailbox.messages == MESSAGES
        if protocol == "pop3":
            assert result.mailbox.size_bytes == MAILBOX_SIZE
        return
    assert_expected(spec, result)
    f = result.failure
    # Server text reaches a report only cleaned: no control characters, bounded size.
    assert len(f.detail) <= probe.MAX_DETAIL
    assert not any(ord(c) < 32 or ord(c) == 127 for c in f.detail), repr(f.detail)
    for text in (*result.extensions, *result.auth_mechanisms):
        assert not any(ord(c) < 32 or ord(c) == 127 for c in text), repr(text)
    assert len(result.extensions) <= 64
    if spec.bounded:
        assert elapsed < deadline / 2, f"{behaviour} ended at {elapsed:.2f}s, not by a bound"


BOUNDED = [(p, b) for p, table in TABLES.items() for b, spec in table.items() if spec.bounded]


@pytest.mark.parametrize(("protocol", "behaviour"), BOUNDED, ids=[f"{p}-{b}" for p, b in BOUNDED])
def test_hostile_mailbox_memory_bounded(protocol, behaviour, server_ctx, certs):
    """The floods, huge lines and literals: the probe's memory stays bounded while they pour
    in (traced separately, since tracing slows the run several times over)."""
    spec = TABLES[protocol][behaviour]
    result, _, peak = run_against(protocol, behaviour, server_ctx, str(certs.ca_file), True)
    assert_expected(spec, result)
    assert peak < MEMORY_BOUND, f"{behaviour}: peak {peak / 1e6:.1f} MB"


@pytest.mark.parametrize(
    ("protocol", "behaviour"),
    [
        ("imap", "login_echo"),
        ("imap", "login_echo_login"),
        ("pop3", "err_pass_echo"),
        ("pop3", "err_auth_echo"),
    ],
)
def test_echoed_credentials_are_masked(protocol, behaviour, server_ctx, certs):
    result, _, _ = run_against(protocol, behaviour, server_ctx, str(certs.ca_file))
    assert result.failure is not None and result.failure.kind is FailureKind.REPLY
    detail = result.failure.detail
    assert PASSWORD not in detail
    # Nor its base64 forms (SASL PLAIN carries user and password together).
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    assert plain not in detail and base64.b64encode(PASSWORD.encode()).decode() not in detail


def test_tarpits_beside_healthy_mailboxes_in_one_loop(server_ctx, certs):
    """Tarpits and drips beside healthy IMAP and POP3 servers, all probed at once in one event
    loop: the healthy probes finish at once, the others at the deadline, none later."""
    deadline = 5.0
    ca = str(certs.ca_file)
    each = 5

    async def main(targets: list[Target]) -> list[ProbeResult]:
        return await asyncio.gather(*(probe.run(t) for t in targets))

    with (
        IMAPFault("normal", "starttls", ssl_context=server_ctx) as imap_ok,
        POP3Fault("normal", "starttls", ssl_context=server_ctx) as pop3_ok,
        IMAPFault("drip_greeting", "starttls", ssl_context=server_ctx) as imap_drip,
        POP3Fault("silent", "starttls", ssl_context=server_ctx) as pop3_silent,
    ):
        servers = [("imap", imap_ok), ("pop3", pop3_ok), ("imap", imap_drip), ("pop3", pop3_silent)]
        targets = [
            target_for(protocol, server.port, TABLES[protocol][server.behaviour], ca, deadline)
            for protocol, server in servers
            for _ in range(each)
        ]
        start = time.monotonic()
        results = asyncio.run(main(targets))
        elapsed = time.monotonic() - start
    assert elapsed <= deadline * 1.1
    healthy, stuck = results[: 2 * each], results[2 * each :]
    assert all(r.success for r in healthy), [r.failure for r in healthy if r.failure]
    assert max(r.duration_seconds for r in healthy) < deadline / 2
    assert all(r.failure is not None and r.failure.kind is FailureKind.TIMEOUT for r in stuck)
    assert {r.failure.phase for r in stuck if r.failure} == {Phase.GREETING}


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_replayed_credentials_never_reach_the_result(protocol, server_ctx, certs):
    """A server that saw the password once lists it among its capabilities from then on: no
    form of it (capability names are upper-cased) may show in a probe's result."""
    spec = TABLES[protocol]["credential_replay"]
    with SERVERS[protocol]("credential_replay", spec.tls, ssl_context=server_ctx) as server:
        target = target_for(protocol, server.port, spec, str(certs.ca_file))
        first = asyncio.run(probe.run(target))
        assert server.replayed() == [PASSWORD.encode()]
        second = asyncio.run(probe.run(target))
    assert first.success and second.success, (first.failure, second.failure)
    for result in (first, second):
        assert PASSWORD.upper() not in repr(result).upper()
