"""A configured target and the concrete targets it stands for, as plain functions of the
config model: where it runs in its interval and in which shard, what it expands to without
DNS (``ip_protocol: both``), and ``Discovery``, the outcome of an expansion with DNS (made
by ``discovery``). The scheduler, the store and the renderer all read these.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from .config import Target
from .results import Failure, FailureKind, Phase, ProbeResult


@dataclass(frozen=True, slots=True)
class Discovery:
    """The outcome of expanding one configured target."""

    target: Target
    concrete: tuple[Target, ...]
    ok: bool = True
    null_mx: bool = False
    implicit: bool = False  # no MX records: the domain's own address is used
    mx_hosts: int = 0
    error: str | None = None
    resolved_at: float = 0.0  # unix seconds
    expires: float = float("inf")  # time.monotonic() after which to resolve again
    kind: FailureKind | None = None  # why the lookup failed (with ``error``)
    seconds: float = 0.0  # how long the lookup took
    lookup: ProbeResult | None = None  # the failed lookup or null MX as a result; see below

    @property
    def failure(self) -> Failure | None:
        """A failed lookup, or a null MX (the lookup answered: the domain takes no mail)."""
        if self.null_mx:
            return Failure(
                Phase.MX_LOOKUP,
                FailureKind.NULL_MX,
                "null MX (RFC 7505): the domain accepts no mail",
            )
        if not self.ok:
            return Failure(Phase.MX_LOOKUP, self.kind or FailureKind.DNS, self.error or "")
        return None


def static_expansion(target: Target) -> tuple[Target, ...]:
    """The concrete targets of a target that needs no DNS to expand."""
    if target.module.ip_protocol != "both":
        return (target,)
    return tuple(
        replace(
            target,
            module=replace(target.module, ip_protocol=family),
            labels=with_labels(target.labels, ("ip_protocol", family)),
        )
        for family in ("ip4", "ip6")
    )


def offset_fraction(target: Target) -> float:
    """A stable number in [0, 1) for the target: where in its interval it runs."""
    digest = hashlib.sha256(f"{target.name}|{target.module.name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_shard(target: Target, shard: tuple[int, int] | None) -> bool:
    """Whether ``target`` belongs to shard ``(index, count)``, index from 0: a stable hash
    of target and module, so n exporters given the same config split it without overlap."""
    if shard is None:
        return True
    index, count = shard
    digest = hashlib.sha256(f"shard|{target.name}|{target.module.name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count == index


def with_labels(
    labels: tuple[tuple[str, str], ...], *extra: tuple[str, str]
) -> tuple[tuple[str, str], ...]:
    """``labels`` plus ``extra``, sorted; an extra label replaces one of the same name."""
    return tuple(sorted(dict((*labels, *extra)).items()))
