"""The public send API, under the seed pipeline's names. Synchronous wrappers over the async
client; each call runs its own event loop (in a helper thread when the caller already runs
one), so it works from scripts, threads and async code alike."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from email.message import Message
from typing import TypeVar

from .. import probe
from ..results import FailureKind, Phase
from .client import SendFailure, SendResult, SMTPClient, with_attempts
from .config import SMTPConfig
from .message import Envelope, envelope

T = TypeVar("T")
MAX_BACKOFF = 60.0


def run_sync(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, even inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_call(coro_fn))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(_call(coro_fn))).result()


async def _call(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return await coro_fn()


def outgoing(msg: Message, cfg: SMTPConfig) -> Envelope:
    """The envelope ``msg`` is sent with under ``cfg``: ``cfg.envelope_sender`` if set, and
    ``cfg.username`` as From when the message has none and the username is an address."""
    return envelope(msg, cfg.envelope_sender, default_from=cfg.sender_address)


def refused(env: Envelope, rcpts: tuple[str, ...] | None = None) -> list[SendResult]:
    """The message cannot be sent as it is (``env.problem``): one failed result each."""
    rcpts = env.recipients if rcpts is None else rcpts
    return [SendResult(r, False, env.problem, message_id=env.message_id) for r in rcpts]


def dry_results(env: Envelope) -> list[SendResult]:
    """What a send would do without a connection: OK for each recipient, unless the message
    itself would be refused."""
    if env.problem:
        return [replace(r, dry_run=True) for r in refused(env)]
    return [SendResult(r, True, message_id=env.message_id, dry_run=True) for r in env.recipients]


async def deliver(
    client: SMTPClient, env: Envelope, recipients: tuple[str, ...] | None = None
) -> list[SendResult]:
    """Send one message on ``client``, (re)connecting as needed. When a connection that had
    already carried messages turns out dropped (idle timeout, 421) before this message's body
    went out, it is reopened and the message sent once more; a drop after the body went out
    is reported, not resent: the server may already have the message."""
    rcpts = env.recipients if recipients is None else recipients
    if env.problem:
        return refused(env, rcpts)
    for attempt in (1, 2):
        reused = client.connected and client.sent_on_connection > 0
        try:
            if client.connected and (
                client.sent_on_connection >= client.cfg.max_messages_per_connection
            ):
                await client.close()
                reused = False
            if not client.connected:
                await client.connect()
            return await client.send(env, rcpts)
        except SendFailure as failure:
            again = attempt == 1 and reused and failure.transient
            if not again or failure.delivered_unknown:
                return [failure.result(r, env.message_id) for r in rcpts]
    raise AssertionError("unreachable")


def send_email(msg: Message, cfg: SMTPConfig, *, dry_run: bool = False) -> list[SendResult]:
    """Send one message; one result per recipient (To, Cc, Bcc; Bcc is not transmitted),
    each printing as ``"addr: OK"`` or ``"addr: FAIL <error>"``."""
    env = outgoing(msg, cfg)
    if dry_run:
        return dry_results(env)

    async def go() -> list[SendResult]:
        client = SMTPClient(cfg)
        try:
            return await deliver(client, env)
        finally:
            await client.close()

    return run_sync(go)


def send_bulk(
    messages: Iterable[Message], cfg: SMTPConfig, *, delay: float = 0.0, dry_run: bool = False
) -> list[list[SendResult]]:
    """Send many messages over one connection (reopened when the server drops it or after
    ``cfg.max_messages_per_connection``), at most ``cfg.rate_limit`` per second and at least
    ``delay`` seconds apart. One list of results per message, in order, each as
    ``send_email`` returns it: ``for batch in send_bulk(...): for r in batch: ...``."""
    envs = [outgoing(m, cfg) for m in messages]
    if dry_run:
        return [dry_results(env) for env in envs]
    spacing = max(delay, 1.0 / cfg.rate_limit if cfg.rate_limit else 0.0)

    async def go() -> list[list[SendResult]]:
        client = SMTPClient(cfg)
        out: list[list[SendResult]] = []
        last_start: float | None = None
        try:
            for env in envs:
                if env.problem:  # refused without a connection, and without a delay
                    out.append(refused(env))
                    continue
                if last_start is not None and spacing:
                    await asyncio.sleep(max(0.0, last_start + spacing - time.monotonic()))
                last_start = time.monotonic()
                out.append(await deliver(client, env))
        finally:
            await client.close()
        return out

    return run_sync(go)


def backoff_delay(attempt: int, backoff: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter before retry ``attempt`` (2, 3, ...): half of
    ``backoff * 2**(attempt-2)`` (capped) plus a random part of the other half, so many
    senders that failed together do not retry together."""
    base = min(MAX_BACKOFF, backoff * 2 ** (attempt - 2))
    return base / 2 + (rng or random).uniform(0, base / 2)


def send_with_retry(
    msg: Message,
    cfg: SMTPConfig,
    max_attempts: int = 3,
    backoff: float = 2.0,
    dry_run: bool = False,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> list[SendResult]:
    """Send, then retry only the recipients that failed transiently (4xx, connection lost,
    timeout), never a 5xx, with exponential backoff and jitter. ``attempts`` on each result
    says how many tries that recipient took."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    env = outgoing(msg, cfg)
    if dry_run or env.problem:
        return dry_results(env) if dry_run else refused(env)
    final: dict[str, SendResult] = {}
    pending = env.recipients
    for attempt in range(1, max_attempts + 1):
        if attempt > 1:
            sleep(backoff_delay(attempt, backoff))

        async def go(rcpts: tuple[str, ...] = pending) -> list[SendResult]:
            client = SMTPClient(cfg)
            try:
                return await deliver(client, env, rcpts)
            finally:
                await client.close()

        for result in run_sync(go):
            final[result.to] = with_attempts(result, attempt)
        pending = tuple(r for r in pending if not final[r].ok and final[r].transient)
        if not pending:
            break
    return [final[r] for r in env.recipients]


def smtp_health_check(cfg: SMTPConfig) -> tuple[bool, str]:
    """The exporter's full probe of the configured server (connect, TLS, AUTH when
    ``cfg.username`` is set, NOOP, QUIT), as the seed reported it: ``(True, "host:port OK")``,
    or ``(False, "auth failed: ...")`` (credentials or mechanisms refused), ``(False,
    "connect failed: ...")`` (name, connection, greeting or TLS), ``(False, "error: ...")``
    (anything else). The detail after the prefix is ``phase kind: text``, secrets masked."""
    result = run_sync(lambda: probe.run(cfg.target()))
    f = result.failure
    if f is None:
        return True, f"{cfg.host}:{cfg.port} OK"
    text = f"{f.phase} {f.kind}: {f.detail}"
    if f.phase == Phase.AUTH and f.kind in _AUTH_KINDS:
        return False, f"auth failed: {text}"
    if f.kind in _CONNECT_KINDS or f.phase in (Phase.RESOLVE, Phase.CONNECT, Phase.GREETING):
        return False, f"connect failed: {text}"
    return False, f"error: {text}"


# How the seed's exceptions sorted probe failures: SMTPAuthenticationError and friends,
# socket and TLS errors (OSError), everything else.
_AUTH_KINDS = frozenset({FailureKind.REPLY, FailureKind.NOT_OFFERED, FailureKind.INSECURE})
_CONNECT_KINDS = frozenset(
    {
        FailureKind.TIMEOUT,
        FailureKind.DNS,
        FailureKind.REFUSED,
        FailureKind.NETWORK,
        FailureKind.CLOSED,
        FailureKind.TLS,
        FailureKind.TLS_VERIFY,
        FailureKind.TLS_HOSTNAME,
    }
)
