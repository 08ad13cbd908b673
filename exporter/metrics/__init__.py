"""Prometheus text for the results in the store.

Rendering 10,000 targets through prometheus_client's per-sample objects costs over a second a
scrape. Instead each target's lines are rendered once per new result, when it is recorded,
and a scrape joins compressed shards of them family by family (the text format wants each
family's samples together).

- ``catalogue``: ``METRICS``, every family with its type, help and labels (docs/metrics.md
  is checked against it);
- ``samples``: one target's entry -> its lines (``render_target``), and the /probe answer;
- ``aggregate``: the few families rendered at each scrape (MX lookups, domains, histogram);
- ``shards``: ``Renderer``, the shard cache a scrape joins;
- ``text``: escaping and number formatting.
"""

from .catalogue import DISCOVERY, DOMAIN, HISTOGRAM, METRICS, PER_TARGET, MetricSpec
from .samples import render_probe, render_target
from .shards import SHARD_SIZE, Renderer

__all__ = [
    "DISCOVERY",
    "DOMAIN",
    "HISTOGRAM",
    "METRICS",
    "PER_TARGET",
    "SHARD_SIZE",
    "MetricSpec",
    "Renderer",
    "render_probe",
    "render_target",
]
