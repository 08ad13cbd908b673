"""The public send API, under the seed pipeline's names. Synchronous wrappers over the async
client; each call runs its own event loop (in a helper thread when the caller already runs
one), so it works from scripts, threads and async code alike."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from email.message import Message
from typing import TypeVar

from .. import probe
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


def dry_results(env: Envelope) -> list[SendResult]:
    return [SendResult(r, True, message_id=env.message_id, dry_run=True) for r in env.recipients]


async def deliver(
    client: SMTPClient, env: Envelope, recipients: tuple[str, ...] | None = None
) -> list[SendResult]:
    """Send one message on ``client``, (re)connecting as needed. When a connection that had
    already carried messages turns out dropped (idle timeout, 421) before this message's body
    went out, it is reopened and the message sent once more; a drop after the body went out
    is reported, not resent: the server may already have the message."""
    rcpts = env.recipients if recipients is None else recipients
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
    """Send one message; one result per recipient (To, Cc, Bcc; Bcc is not transmitted)."""
    env = envelope(msg)
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
) -> list[SendResult]:
    """Send many messages over one connection (reopened when the server drops it or after
    ``cfg.max_messages_per_connection``), at most ``cfg.rate_limit`` per second and at least
    ``delay`` seconds apart. Results for every recipient of every message, in order."""
    envs = [envelope(m) for m in messages]
    if dry_run:
        return [r for env in envs for r in dry_results(env)]
    spacing = max(delay, 1.0 / cfg.rate_limit if cfg.rate_limit else 0.0)

    async def go() -> list[SendResult]:
        client = SMTPClient(cfg)
        out: list[SendResult] = []
        last_start: float | None = None
        try:
            for env in envs:
                if last_start is not None and spacing:
                    await asyncio.sleep(max(0.0, last_start + spacing - time.monotonic()))
                last_start = time.monotonic()
                out.extend(await deliver(client, env))
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
    *,
    max_attempts: int = 3,
    backoff: float = 2.0,
    dry_run: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> list[SendResult]:
    """Send, then retry only the recipients that failed transiently (4xx, connection lost,
    timeout), never a 5xx, with exponential backoff and jitter. ``attempts`` on each result
    says how many tries that recipient took."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    env = envelope(msg)
    if dry_run:
        return dry_results(env)
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
    """The exporter's full probe of the configured server: (ok, one-line detail)."""
    result = run_sync(lambda: probe.run(cfg.target()))
    if result.failure is None:
        tls = f", {result.tls.version}" if result.tls else ""
        auth = f", AUTH {result.auth.mechanism}" if result.auth.success else ""
        return True, f"ok in {result.duration_seconds * 1000:.0f} ms{tls}{auth}"
    f = result.failure
    return False, f"{f.phase}: {f.kind}: {f.detail}"
