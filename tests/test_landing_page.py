"""The landing page and the store's ring of recent results per target.

Results come from real probes of aiosmtpd (one that takes the password, one that refuses
it) and a port nobody listens on; the page is read from the running exporter, and its
debug link is followed.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from exporter import probe
from exporter.config import Config, Target
from exporter.embedded import free_port
from exporter.http.page import COLUMNS, landing_page
from exporter.results import FailureKind, Phase, ProbeResult
from exporter.store import RECENT, ResultStore

from .conftest import USER, make_target, write_secret
from .exporter_harness import RunningExporter, wait_for

SCRIPT = "<script>alert(1)</script>"


class Page(HTMLParser):
    """Rows of cells as text, the elements seen, and the links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tags: set[str] = set()
        self.links: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self._cell = []
        elif tag == "a":
            self.links.extend(v for k, v in attrs if k == "href" and v)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def row(self, first: str) -> dict[str, str]:
        (cells,) = [r for r in self.rows if r and r[0] == first]
        return dict(zip(COLUMNS, cells, strict=True))


@pytest.fixture
def results(smtp_server, ca_file) -> tuple[ProbeResult, ProbeResult, ProbeResult]:
    """A success, an AUTH refusal and a refused connection, each from a real probe."""
    good, bad = smtp_server(), smtp_server(users={USER: "not-this"})

    def run(port: int) -> ProbeResult:
        return asyncio.run(probe.run(make_target(port, tls_ca_file=ca_file)))

    ok, auth, closed = run(good.port), run(bad.port), run(free_port())
    assert ok.success and auth.failure is not None and closed.failure is not None
    assert auth.failure.phase is Phase.AUTH and closed.failure.phase is Phase.CONNECT
    return ok, auth, closed


def test_ring_keeps_the_last_results_and_the_last_failure(results):
    ok, auth, closed = results
    target = make_target(25)
    store = ResultStore()
    store.set_targets([target])
    store.record(target, auth)
    store.record(target, closed)
    store.record(target, closed)
    (entry,) = store.entries()
    assert [o.success for o in entry.recent] == [False, False, False]
    assert [(o.phase, o.kind) for o in entry.recent] == [
        (Phase.AUTH, FailureKind.REPLY),
        (Phase.CONNECT, FailureKind.REFUSED),
        (Phase.CONNECT, FailureKind.REFUSED),
    ]
    assert entry.recent[0].started_at == auth.started_at
    for _ in range(RECENT + 5):
        store.record(target, ok)
    (entry,) = store.entries()
    assert len(entry.recent) == RECENT and all(o.success for o in entry.recent)
    # Recovered long ago, the last failure is still there, with its time and reason.
    assert entry.last_failure is not None and entry.last_failure.phase is Phase.CONNECT
    assert closed.failure is not None and entry.last_failure.detail == closed.failure.detail
    assert entry.last_failure.started_at == closed.started_at
    assert [o.started_at for o in entry.recent] == [ok.started_at] * RECENT
    assert entry.probes == RECENT + 8 and dict(entry.failures) == {Phase.AUTH: 1, Phase.CONNECT: 2}


def test_ring_and_last_failure_survive_a_changed_definition(results):
    """A reload that changes the module keeps the target's history, not its stale result."""
    ok, auth, _ = results
    target = make_target(25)
    store = ResultStore()
    store.set_targets([target])
    store.record(target, auth)
    store.record(target, ok)
    changed = make_target(25, timeout=7.0)
    store.set_targets([changed])
    (entry,) = store.entries()
    assert entry.result is None and len(entry.recent) == 2
    assert auth.failure is not None and entry.last_failure is not None
    assert entry.last_failure.detail == auth.failure.detail


def test_page_shows_state_history_and_escapes_everything(results):
    ok, auth, closed = results
    base = make_target(25)
    hostile = Target(
        f"{SCRIPT}:25",
        "example.org",
        25,
        base.module,
        labels=(("site", f'"><img src=x onerror=alert(2)>{SCRIPT}'),),
    )
    store = ResultStore()
    store.set_targets([base, hostile])
    store.record(base, closed)
    store.record(base, ok)
    store.record(hostile, auth)
    now = ok.started_at + 90
    page = landing_page(store, None, now)
    parsed = Page(page)
    # Inert: no element but the page's own; the names shown as text.
    assert parsed.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "p"} | {
        "a",
        "table",
        "tr",
        "th",
        "td",
        "span",
    }
    assert SCRIPT not in page and "<img" not in page
    row = parsed.row(f"{SCRIPT}:25")
    assert row["labels"] == f'site="><img src=x onerror=alert(2)>{SCRIPT}'
    assert row["status"] == "down" and row["last probe"].startswith("auth: reply: 535")
    assert row["debug"] == ""  # no config given: nothing is known to be allowed
    good = parsed.row(base.name)
    assert good["status"] == "up" and good["last probe"].endswith(" ms")
    assert good["probed"] == "90s ago"
    # trustme's certificates run to the year 3000.
    assert int(good["cert days"]) > 300_000
    # Recovered, yet the last failure is shown with its time and reason.
    ago = int(now - closed.started_at)
    when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(closed.started_at))
    assert closed.failure is not None
    assert good["last failure"] == (
        f"{when} ({ago}s ago) connect/{FailureKind.REFUSED}: {closed.failure.detail}"
    )
    assert good["recent"] == "\u2717\u2713"
    # With the running config: a configured target gets its debug link, others none.
    cfg = Config({"test": base.module}, (base,))
    parsed = Page(landing_page(store, cfg, now))
    assert parsed.row(f"{SCRIPT}:25")["debug"] == ""
    assert parsed.row(base.name)["debug"] == "probe now"
    (link,) = parsed.links[-1:]
    assert link == "probe?target=127.0.0.1%3A25&module=test&debug=true"


@pytest.fixture
def running(tmp_path: Path, ca_file: str, smtp_server):
    started: list[RunningExporter] = []

    def start(port: int, label: str) -> RunningExporter:
        secret = write_secret(tmp_path)
        cfg = tmp_path / "c.yml"
        cfg.write_text(f"""
modules:
  sub: {{tls: starttls, tls_ca_file: {ca_file}, timeout: 1s,
         auth: {{username: {USER}, password_file: {secret}}}}}
targets:
  - {{target: '127.0.0.1:{port}', module: sub, interval: 1s, labels: {{site: '{label}'}}}}
""")
        exp = RunningExporter(cfg).start()
        started.append(exp)
        return exp

    yield start
    for exp in started:
        exp.stop()


def test_running_exporter_page_links_the_transcript(running, smtp_server):
    server = smtp_server()
    exp = running(server.port, SCRIPT)
    target = f"127.0.0.1:{server.port}"
    assert wait_for(lambda: "&#x2713;&#x2713;" in exp.get("/")[1], 15)
    status, page = exp.get("/")
    assert status == 200 and SCRIPT not in page and html.escape(SCRIPT) in page
    parsed = Page(page)
    row = parsed.row(target)
    assert row["status"] == "up" and row["labels"] == f"site={SCRIPT}"
    (link,) = [u for u in parsed.links if u.startswith("probe?")]
    assert "debug=true" in link and "module=sub" in link
    with urllib.request.urlopen(f"{exp.url}/{link}", timeout=30) as resp:
        body = resp.read().decode()
    assert resp.status == 200 and "C: AUTH PLAIN ***" in body and "C: QUIT" in body


def test_page_at_10000_targets_is_built_in_bounded_time(results):
    """A generous bound, not a benchmark: the page is built on the event loop."""
    ok, auth, _ = results
    base = make_target(25)
    targets = [
        Target(f"mx{i}.example.org:25", f"mx{i}.example.org", 25, base.module)
        for i in range(10_000)
    ]
    store = ResultStore()
    store.set_targets(targets)
    for i, t in enumerate(targets):
        for r in (auth, ok, ok) if i % 10 == 0 else (ok,):
            store.record(t, r)
    start = time.perf_counter()
    page = landing_page(store, None, ok.started_at)
    assert time.perf_counter() - start < 10
    assert len(re.findall("<tr class=", page)) == 10_000
