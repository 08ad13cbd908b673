"""What the catalogue says of one metric family."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    type: str  # gauge | counter | histogram
    help: str
    labels: tuple[str, ...] = ()  # beyond target, module and the target's extra labels
    # Served only for modules with ``metrics_detail: true``: the per-flag and per-phase
    # series whose facts the default series carry in fewer series (docs/metrics.md).
    detail: bool = False
