"""/metrics render time and size for N targets.

    python bench/render.py [N ...] [--no-http]      (default: 1000 10000)

Prints figures; asserts nothing. Three tables:

1. **render**: ``exporter.metrics.Renderer`` over a synthetic store — the first scrape
   (every shard built), a scrape with nothing new, one after a second of results — against
   a naive prometheus_client collector that builds every sample on every scrape. Results
   are synthetic but complete (STARTTLS + AUTH + TLS with a certificate), i.e. the largest
   per-target block the exporter produces.
2. **scrape**: everything the HTTP server does for one scrape (``Server.metrics_pieces``:
   the renderer's pieces, the exporter's own metrics, then one gzip member joined from the
   pieces, or every piece inflated for a plain answer), after the results of 15 s of a 60 s
   interval arrived (N/4 targets changed: the steady state with a 15 s scrape interval);
   and what each recorded result costs the event loop (its block is rendered then).
3. **end to end** (unless ``--no-http``): GET /metrics from the real exporter
   (``python -m exporter``) while it probes N STARTTLS + AUTH targets
   (``bench/_fleet.py``), plain and gzip: time to the last byte, size on the wire.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import table
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from exporter import gzipjoin
from exporter.config import AuthConfig, Module, Secret, Target, TLSMode
from exporter.metrics import PER_TARGET, Renderer
from exporter.results import AuthInfo, CertInfo, Phase, PhaseTiming, ProbeResult, TLSInfo
from exporter.scheduler import offset_fraction
from exporter.selfmetrics import ExporterMetrics
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


def gzip_scrape(renderer: Renderer, own: ExporterMetrics) -> int:
    """What a Prometheus scrape costs the server; returns the body's size."""
    pieces = renderer.pieces()
    pieces.append(gzipjoin.deflate(own.text().encode()))
    return sum(len(c) for c in gzipjoin.join(pieces))


def plain_scrape(renderer: Renderer, own: ExporterMetrics) -> int:
    pieces = renderer.pieces()
    pieces.append(gzipjoin.deflate(own.text().encode()))
    return sum(len(gzipjoin.inflate(p)) for p in pieces)


def measure(n: int) -> str:
    store, targets = build(n)
    renderer = Renderer(store)
    own = ExporterMetrics()
    start = time.perf_counter()
    gzip_scrape(renderer, own)
    cold = time.perf_counter() - start
    cached = timed(lambda: gzip_scrape(renderer, own))
    text = renderer.render()
    rng = random.Random(1)
    # One second of a 60 s interval: n/60 targets got a new result since the last scrape.
    churn_targets = sorted(targets, key=offset_fraction)[: max(1, n // 60)]

    def churn() -> None:
        for t in churn_targets:
            store.record(t, fake_result(t, rng))
        gzip_scrape(renderer, own)

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


def scrape(n: int) -> list[object]:
    """One steady-state scrape (table 2)."""
    store, targets = build(n)
    own = ExporterMetrics()
    renderer = Renderer(store)
    gzip_scrape(renderer, own)  # the first scrape builds every shard
    rng = random.Random(2)
    # The results of 15 s of a 60 s interval, in schedule order as the scheduler makes them.
    changed = sorted(targets, key=offset_fraction)[: max(1, n // 4)]

    def churn() -> float:
        """Record new results (each rendered as it lands, on the event loop in the
        exporter); returns ms per recorded result, the store's own work included."""
        start = time.perf_counter()
        for t in changed:
            store.record(t, fake_result(t, rng))
        return (time.perf_counter() - start) / len(changed) * 1000

    row: list[object] = [n]
    per_result = []
    for scrape_fn in (plain_scrape, gzip_scrape):
        times, size = [], 0
        for _ in range(3):
            per_result.append(churn())
            start = time.perf_counter()
            size = scrape_fn(renderer, own)
            times.append(time.perf_counter() - start)
        row += [statistics.median(times) * 1000, max(times) * 1000, size / 1e6]
    row.append(statistics.median(per_result))
    return row


def end_to_end(n: int) -> list[object]:
    """GET /metrics from the real exporter probing n targets (table 3)."""
    import _fleet

    work = Path(tempfile.mkdtemp(prefix="bench-render-"))
    row: list[object] = [n]
    with _fleet.fleet(n, work) as f:
        for gz in (False, True):
            times, size = [], 0
            for _ in range(5):
                body, seconds = f.metrics(gzip=gz)
                times.append(seconds)
                size = len(body)
                time.sleep(3)  # new results arrive between scrapes, as in production
            row += [statistics.median(times) * 1000, max(times) * 1000, size / 1e6]
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sizes", nargs="*", type=int, default=[1000, 10000])
    p.add_argument("--no-http", dest="http", action="store_false")
    args = p.parse_args(argv)
    sizes = args.sizes
    print("1. render (synthetic store, in process)")
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
    print("\n2. one scrape after 15 s of results (N/4 targets changed), in process, ms / MB")
    print(
        table(
            [
                "targets",
                "plain p50",
                "plain max",
                "MB",
                "gzip p50",
                "gzip max",
                "MB",
                "ms per recorded result",
            ],
            [scrape(n) for n in sizes],
        )
    )
    print("(target: /metrics at 10,000 targets under 100 ms)")
    if args.http:
        print(
            "\n3. end to end: GET /metrics from the real exporter probing N STARTTLS + AUTH "
            "targets, ms (median, max of 5) / MB on the wire",
            flush=True,
        )
        print(
            table(
                ["targets", "plain p50", "plain max", "MB", "gzip p50", "gzip max", "MB"],
                [end_to_end(n) for n in sizes],
            )
        )


if __name__ == "__main__":
    main(sys.argv[1:])
