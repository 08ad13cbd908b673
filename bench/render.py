"""/metrics render time and size for N targets: cached per-target blocks vs a naive
prometheus_client collector that builds every sample on every scrape.

    python bench/render.py [N ...]      (default: 1000 10000)

Prints figures; asserts nothing. Results are synthetic but complete (STARTTLS + AUTH + TLS
with a certificate), i.e. the largest per-target block the exporter produces.
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import AuthConfig, Module, Secret, Target, TLSMode
from exporter.metrics import PER_TARGET, Renderer
from exporter.results import AuthInfo, CertInfo, Phase, PhaseTiming, ProbeResult, TLSInfo
from exporter.store import ResultStore

MODULE = Module("submission", tls=TLSMode.STARTTLS, auth=AuthConfig("u", Secret("p")))


def fake_result(target: Target, rng: random.Random) -> ProbeResult:
    cert = CertInfo(
        "CN=mail.example.com",
        "CN=Example CA,O=Example",
        ("DNS:mail.example.com",),
        1.7e9,
        1.8e9,
        format(rng.getrandbits(64), "x"),
        "ab" * 32,
    )
    return ProbeResult(
        target=target.name,
        module=MODULE.name,
        host=target.host,
        port=587,
        started_at=time.time(),
        duration_seconds=rng.random(),
        phases=tuple(PhaseTiming(p, rng.random() / 10) for p in Phase),
        failure=None,
        address="192.0.2.1",
        tls=TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", (cert,), True, None, True, "x"),
        greeting_host="mail.example.com",
        extensions=("SIZE", "AUTH", "PIPELINING", "8BITMIME"),
        auth_mechanisms=("PLAIN", "LOGIN"),
        size_limit=10240000,
        auth=AuthInfo(True, True, "PLAIN"),
        last_reply_code=221,
    )


def build(n: int) -> tuple[ResultStore, list[Target]]:
    rng = random.Random(n)
    targets = [
        Target(
            f"mx{i}.example.com:587",
            f"mx{i}.example.com",
            587,
            MODULE,
            60.0,
            (("site", f"dc{i % 7}"),),
        )
        for i in range(n)
    ]
    store = ResultStore()
    store.set_targets(targets)
    for t in targets:
        store.record(t, fake_result(t, rng))
    return store, targets


class NaiveCollector:
    """What a straightforward custom collector does: every sample rebuilt per scrape."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store

    def collect(self):  # type: ignore[no-untyped-def]
        text = Renderer(self.store).render()  # same samples, parsed back into families
        for family in text_string_to_metric_families(text):
            g = GaugeMetricFamily(
                family.name,
                family.documentation,
                labels=sorted({k for s in family.samples for k in s.labels}),
            )
            for s in family.samples:
                g.add_metric([s.labels.get(k, "") for k in g._labelnames], s.value)
            yield g


def timed(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(n: int) -> str:
    store, targets = build(n)
    renderer = Renderer(store)
    start = time.perf_counter()
    text = renderer.render()
    cold = time.perf_counter() - start
    cached = timed(renderer.render)
    rng = random.Random(1)
    # One second of a 60 s interval: n/60 targets got a new result since the last scrape.
    churn_targets = targets[: max(1, n // 60)]

    def churn() -> None:
        for t in churn_targets:
            store.record(t, fake_result(t, rng))
        renderer.render()

    churned = timed(churn)
    # Time only generate_latest: the families are built once, then rendered each time.
    families = list(NaiveCollector(store).collect())

    class Frozen:
        def collect(self):  # type: ignore[no-untyped-def]
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Frozen())
    naive = timed(lambda: generate_latest(registry), repeat=3)
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return (
        f"{n:>8} {series:>9} {len(text) / 1e6:>8.1f}M {cold * 1000:>8.0f}ms "
        f"{cached * 1000:>8.1f}ms {churned * 1000:>8.1f}ms {naive * 1000:>8.0f}ms "
        f"{naive / cached:>11.0f}x"
    )


def main(sizes: list[int]) -> None:
    print(
        f"{'targets':>8} {'series':>9} {'size':>9} {'cold':>9} {'cached':>9} "
        f"{'1s churn':>9} {'naive':>9} {'naive/cached':>12}"
    )
    for n in sizes:
        print(measure(n), flush=True)
    print(
        f"({len(PER_TARGET)} per-target families; 'naive' = prometheus_client generate_latest "
        "over prebuilt families, excluding the cost of building them)"
    )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10000])
