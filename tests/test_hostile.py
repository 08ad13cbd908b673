"""The probe against a deliberately hostile server: every behaviour ends within the deadline
(+10 %), in the right phase, with the right kind of failure, with bounded memory."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from typing import NamedTuple

import pytest

from exporter import probe
from exporter.config import TLSMode
from exporter.results import FailureKind as K
from exporter.results import Phase as P

from .conftest import PASSWORD, make_target
from .servers.fault import BEHAVIOURS, FaultServer

DEADLINE = 2.0
CLOSED = {K.CLOSED, K.NETWORK}  # FIN or RST: which one a client sees is the kernel's race


class Expect(NamedTuple):
    phase: P | None  # None: the probe must succeed
    kinds: frozenset[K] = frozenset()
    code: int | None = None
    tls: TLSMode = TLSMode.STARTTLS
    auth: bool = True
    also: P | None = None  # a second acceptable phase, where the kernel's timing decides


def fails(phase: P, *kinds: K | set[K], code: int | None = None, **kw: object) -> Expect:
    flat: set[K] = set()
    for k in kinds:
        flat |= k if isinstance(k, set) else {k}
    return Expect(phase, frozenset(flat), code, **kw)  # type: ignore[arg-type]


OK = Expect(None)
EXPECTED: dict[str, Expect] = {
    "normal": OK,
    "implicit_tls": Expect(None, tls=TLSMode.IMPLICIT),
    "slow_accept_close": fails(P.GREETING, CLOSED),
    "tarpit_greeting": fails(P.GREETING, K.TIMEOUT),
    "drip_greeting": fails(P.GREETING, K.TIMEOUT),
    "drip_forever": fails(P.GREETING, K.TIMEOUT),
    "huge_greeting_line": fails(P.GREETING, K.PROTOCOL),
    "endless_greeting_line": fails(P.GREETING, K.PROTOCOL),
    "garbage_greeting": fails(P.GREETING, K.PROTOCOL),
    "greeting_554": fails(P.GREETING, K.REPLY, code=554),
    "close_after_greeting": fails(P.EHLO, CLOSED),
    "invalid_utf8_text": OK,
    "bare_lf": OK,
    "ehlo_502_helo_ok": Expect(None, tls=TLSMode.NONE, auth=False),
    "ehlo_550": fails(P.EHLO, K.REPLY, code=550),
    "code_change": fails(P.EHLO, K.PROTOCOL),
    "bad_separator": fails(P.EHLO, K.PROTOCOL),
    "bare_code_final": OK,
    "endless_multiline": fails(P.EHLO, K.PROTOCOL),
    "slow_multiline": fails(P.EHLO, K.TIMEOUT),
    "huge_line": fails(P.EHLO, K.PROTOCOL),
    # The first "250 ok" is a valid (bare) EHLO answer; the flood behind it is caught either
    # by the pending-reply bound at once or as unsolicited replies before NOOP, depending on
    # how the kernel splits the burst.
    "many_replies": fails(P.EHLO, K.PROTOCOL, tls=TLSMode.NONE, auth=False, also=P.NOOP),
    "reset_mid_reply": fails(P.EHLO, CLOSED),
    "reset_after_ehlo": fails(P.STARTTLS, CLOSED),
    "no_starttls": fails(P.STARTTLS, K.TLS_UNAVAILABLE),
    "starttls_454": fails(P.STARTTLS, K.REPLY, code=454),
    "close_after_starttls": fails(P.TLS_HANDSHAKE, CLOSED | {K.TLS}),
    "tls_stall": fails(P.TLS_HANDSHAKE, K.TIMEOUT),
    # Junk right behind the 220 may arrive with it (plaintext after the go-ahead) or after
    # the ClientHello (a TLS error): both are the handshake phase.
    "tls_garbage": fails(P.TLS_HANDSHAKE, K.TLS, K.PROTOCOL),
    "tls_drip": fails(P.TLS_HANDSHAKE, K.TIMEOUT, K.PROTOCOL),
    "tls_alert": fails(P.TLS_HANDSHAKE, K.TLS, K.PROTOCOL),
    # Plaintext behind the 220 must never be read as if it came over TLS (RFC 3207 4.2); the
    # probe reports it instead of going on.
    "starttls_injection": fails(P.TLS_HANDSHAKE, K.PROTOCOL),
    "tls_ok_then_tarpit": fails(P.EHLO_TLS, K.TIMEOUT),
    "implicit_plaintext": fails(P.TLS_HANDSHAKE, K.TLS, tls=TLSMode.IMPLICIT),
    "implicit_tarpit": fails(P.TLS_HANDSHAKE, K.TIMEOUT, tls=TLSMode.IMPLICIT),
    "implicit_tls_tarpit": fails(P.GREETING, K.TIMEOUT, tls=TLSMode.IMPLICIT),
    "auth_535": fails(P.AUTH, K.REPLY, code=535),
    "auth_echo": fails(P.AUTH, K.REPLY, code=535),
    "auth_tarpit": fails(P.AUTH, K.TIMEOUT),
    "auth_endless_challenge": fails(P.AUTH, K.REPLY, code=334),
    "noop_500": fails(P.NOOP, K.REPLY, code=500),
    "quit_no_reply": fails(P.QUIT, CLOSED),
    "quit_tarpit": fails(P.QUIT, K.TIMEOUT),
}
# Behaviours that pour megabytes at the client: memory must stay bounded while they do.
FLOODS = {
    "huge_greeting_line",
    "endless_greeting_line",
    "endless_multiline",
    "huge_line",
    "many_replies",
}
MEMORY_BOUND = 4 * 1024 * 1024


def test_every_behaviour_has_an_expectation():
    assert set(EXPECTED) == set(BEHAVIOURS)


@pytest.mark.parametrize("behaviour", sorted(EXPECTED))
def test_hostile_server(behaviour, server_context, ca_file):
    expect = EXPECTED[behaviour]
    with FaultServer(behaviour, ssl_context=server_context) as server:
        target = make_target(
            server.port,
            tls=expect.tls,
            tls_ca_file=ca_file,
            timeout=DEADLINE,
            password=PASSWORD if expect.auth else None,
        )
        tracemalloc.start()
        start = time.monotonic()
        result = asyncio.run(probe.run(target))
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    assert elapsed <= DEADLINE * 1.1, f"{behaviour} took {elapsed:.2f}s"
    assert result.duration_seconds <= DEADLINE * 1.1
    if expect.phase is None:
        assert result.failure is None, result.failure
        return
    f = result.failure
    assert f is not None, f"{behaviour} passed but should fail in {expect.phase}"
    assert f.phase in (expect.phase, expect.also), f
    assert f.kind in expect.kinds, f
    if expect.code is not None:
        assert f.code == expect.code, f
    # What a server sends never reaches a report raw: no control characters, bounded size.
    assert len(f.detail) <= probe.MAX_DETAIL
    assert not any(ord(c) < 32 for c in f.detail), repr(f.detail)
    if behaviour in FLOODS:
        assert peak < MEMORY_BOUND, f"{behaviour}: peak {peak / 1e6:.1f} MB"


def test_auth_echo_masks_credentials(server_context, ca_file):
    for mechanism in ("PLAIN", "LOGIN"):
        with FaultServer("auth_echo", ssl_context=server_context) as server:
            target = make_target(
                server.port, tls_ca_file=ca_file, mechanism=mechanism, timeout=DEADLINE
            )
            result = asyncio.run(probe.run(target))
        assert result.failure is not None and result.failure.code == 535
        assert PASSWORD not in repr(result), result.failure.detail
        assert "***" in result.failure.detail


def test_helo_fallback_recorded(server_context):
    with FaultServer("ehlo_502_helo_ok", ssl_context=server_context) as server:
        result = asyncio.run(
            probe.run(make_target(server.port, tls=TLSMode.NONE, password=None, timeout=DEADLINE))
        )
    assert result.success and result.used_helo and result.extensions == ()


def test_many_probes_concurrently_each_bounded(server_context, ca_file):
    """Tarpits beside healthy servers: the healthy probes finish at once, tarpits at deadline."""

    async def main(ports_ok: list[int], ports_bad: list[int]) -> list:
        targets = [make_target(p, tls_ca_file=ca_file, timeout=DEADLINE) for p in ports_ok]
        targets += [make_target(p, tls_ca_file=ca_file, timeout=DEADLINE) for p in ports_bad]
        return await asyncio.gather(*(probe.run(t) for t in targets))

    with (
        FaultServer("normal", ssl_context=server_context) as ok,
        FaultServer("drip_greeting", ssl_context=server_context) as bad,
    ):
        start = time.monotonic()
        results = asyncio.run(main([ok.port] * 20, [bad.port] * 20))
        elapsed = time.monotonic() - start
    assert elapsed <= DEADLINE * 1.1
    assert all(r.success for r in results[:20])
    assert all(r.failure is not None and r.failure.kind is K.TIMEOUT for r in results[20:])
    assert max(r.duration_seconds for r in results[:20]) < DEADLINE / 2
