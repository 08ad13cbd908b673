"""Will the mail land? The canary's verdicts and placement (issue #19) against the
deliverability testbed (tests/servers/deliverability), seen on every surface.

The canary goes through the sending Postfix (which signs with OpenDKIM), is received by a
Postfix whose milter writes ``Authentication-Results`` as ``mx.receiver.test``, and is read
back from Dovecot, where Sieve files messages marked ``X-Deliverability-Test: junk`` into
Junk (``\\Junk`` special-use). Each row of ``ROWS`` is one module (named after the row): its
sending domain stands for a verdict (``good.test`` passes, ``spffail.test`` fails SPF,
``wrongkey.test`` fails DKIM), its ``headers`` mark it for Junk or forge a receiver's
header, its routes read the receiver's header or another host's.

Observed once (module fixture): one running exporter scheduling every row (``/metrics``,
``/probe``, the landing page), a real Prometheus evaluating ``alerting/rules.yml`` with
``for: 0s`` (the alerts), and ``--once`` per row in table, JSON and Nagios format. Each test
then checks one (row, surface) cell; the matrix of what each surface showed is printed
(``pytest -s``) and written to ``canary-matrix.md`` in the fixture's tmp dir.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import test_dashboards as dashboards
from .conftest import _in_ci
from .exporter_harness import RunningExporter, wait_for
from .servers.deliverability import Deliverability, available, configs, deliverability_stack
from .servers.prometheus import prometheus, prometheus_available
from .surfaces import (
    ALERTS,
    LANDING,
    METRICS,
    ONCE_FORMATS,
    ONCE_JSON,
    ONCE_NAGIOS,
    ONCE_TABLE,
    PROBE,
    SURFACES,
    AlertSeen,
    LandingRow,
    OnceRun,
    Sample,
    alerts_seen,
    json_objects,
    landing_rows,
    markdown_table,
    parse_metrics,
    rules_firing_at_once,
    run_once,
    select,
    table_rows,
)

pytestmark = [pytest.mark.postfix]

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "alerting" / "rules.yml"
INTERVAL = "8s"  # scheduled probes; each row's canary runs once (interval 1h)
WAIT = 90.0  # bound on waiting for canaries and alerts
JUNK = {configs.JUNK_HEADER: "junk"}
FORGED = {
    "Authentication-Results": f"{configs.AUTHSERV_ID}; dkim=pass header.d={configs.WRONG_KEY}"
}


@dataclass(frozen=True)
class Verdict:
    """What one route's canary must show: where it landed (None: not delivered), the
    receiver's results (None: no header of the route's authserv_id), alignment, and how
    many Authentication-Results headers were not trusted."""

    placement: str | None = "inbox"
    spf: str | None = "pass"
    dkim: str | None = "pass"
    dmarc: str | None = "pass"
    aligned: bool | None = True
    ignored: int = 0
    found: bool = True  # an Authentication-Results header of the authserv_id
    local: str | None = "pass"  # the exporter's own DKIM verification

    def findings(self) -> bool:
        """Delivered, but not all well (a canary not delivered is a failure instead)."""
        return self.placement is not None and (
            self.placement == "junk"
            or not self.found
            or any(r not in (None, "pass") for r in (self.spf, self.dkim, self.dmarc))
            or self.aligned is False
            or (self.dkim is None and self.local not in (None, "pass"))
        )


@dataclass(frozen=True)
class Row:
    name: str  # the module's name
    domain: str  # the canary's From domain
    routes: dict[str, Verdict]  # route name -> expected; "default" for the single form
    alerts: frozenset[str] = frozenset()
    headers: dict[str, str] = field(default_factory=dict)
    junk_folders: list[str] | None = None
    authserv_ids: dict[str, str] = field(default_factory=dict)  # route -> id, if not ours
    timeout: str = "20s"

    @property
    def lost(self) -> bool:
        return any(v.placement is None for v in self.routes.values())

    @property
    def nagios(self) -> tuple[str, int]:
        if self.lost:
            return "CRITICAL", 2
        findings = any(v.findings() for v in self.routes.values())
        return ("WARNING", 1) if findings else ("OK", 0)


UNREAD = Verdict(
    placement=None, spf=None, dkim=None, dmarc=None, aligned=None, found=False, local=None
)
ROWS = (
    Row("pass", configs.GOOD, {"default": Verdict()}),
    Row(
        "dkim_fail",
        configs.WRONG_KEY,
        {"default": Verdict(dkim="fail", aligned=False, local="fail")},
        frozenset({"SMTPCanaryAuthNotPass"}),
    ),
    Row(
        "spf_fail",
        configs.SPF_FAIL,
        {"default": Verdict(spf="fail")},
        frozenset({"SMTPCanaryAuthNotPass"}),
    ),
    Row(
        "junk",
        configs.GOOD,
        {"default": Verdict(placement="junk")},
        frozenset({"SMTPCanaryLandedInJunk"}),
        headers=JUNK,
    ),
    # Junk not searched: the same message is "not delivered", a failure, not the finding.
    Row(
        "junk_unsearched",
        configs.GOOD,
        {"default": UNREAD},
        frozenset({"SMTPCanaryNotDelivered"}),
        headers=JUNK,
        junk_folders=[],
        timeout="4s",
    ),
    # The sender claims dkim=pass under the receiver's id; the receiver's own header (on
    # top, above its Received:) says fail, and the forged one is not read.
    Row(
        "forged",
        configs.WRONG_KEY,
        {"default": Verdict(dkim="fail", aligned=False, ignored=1, local="fail")},
        frozenset({"SMTPCanaryAuthNotPass"}),
        headers=FORGED,
    ),
    # The receiver's header is not trusted (another authserv_id): the exporter's own DKIM
    # verification still finds the wrong key.
    Row(
        "local_only",
        configs.WRONG_KEY,
        {
            "default": Verdict(
                spf=None, dkim=None, dmarc=None, aligned=None, ignored=1, found=False, local="fail"
            )
        },
        frozenset({"SMTPCanaryNoAuthResults", "SMTPCanaryLocalDKIMNotPass"}),
        authserv_ids={"default": "mx.elsewhere.test"},
    ),
    # Two routes into one mailbox: one trusts the receiver, one a host that wrote nothing.
    Row(
        "routes",
        configs.GOOD,
        {
            "receiver": Verdict(),
            "elsewhere": Verdict(
                spf=None, dkim=None, dmarc=None, aligned=None, ignored=1, found=False
            ),
        },
        frozenset({"SMTPCanaryNoAuthResults"}),
        authserv_ids={"elsewhere": "mx.elsewhere.test"},
    ),
)


def module_of(row: Row, bed: Deliverability, password_file: Path) -> dict[str, Any]:
    """The row's module: plain SMTP to the sending Postfix (no TLS, no AUTH), a canary from
    the row's domain to the receiver's mailbox, read over IMAP with STARTTLS."""
    imap: dict[str, Any] = {
        "host": bed.host,
        "port": bed.imap_port,
        "tls": "starttls",
        "tls_ca_file": str(bed.ca_file),
        "username": bed.user,
        "password_file": str(password_file),
        "poll_interval": "200ms",
    }
    if row.junk_folders is not None:
        imap["junk_folders"] = row.junk_folders
    canary: dict[str, Any] = {
        "from": f"canary@{row.domain}",
        "interval": "1h",
        "timeout": row.timeout,
    }
    if row.headers:
        canary["headers"] = row.headers
    if list(row.routes) == ["default"]:
        authserv_id = row.authserv_ids.get("default", bed.authserv_id)
        canary |= {"to": bed.recipient, "imap": imap, "authserv_id": authserv_id}
    else:
        canary["routes"] = [
            {
                "name": name,
                "to": bed.recipient,
                "imap": imap,
                "authserv_id": row.authserv_ids.get(name, bed.authserv_id),
            }
            for name in row.routes
        ]
    return {
        "tls": "none",
        "tls_required": False,
        "timeout": INTERVAL,
        "ehlo_name": "exporter.good.test",
        "canary": canary,
    }


def write_config(path: Path, rows: tuple[Row, ...], bed: Deliverability, pw: Path) -> Path:
    data = {
        # The exporter's resolver: the testbed's zone, for the canary's DKIM keys.
        "dns": {"nameservers": [f"{bed.dns.address}:{bed.dns.port}"], "timeout": "2s"},
        "modules": {row.name: module_of(row, bed, pw) for row in rows},
        "targets": [
            {"target": f"{bed.host}:{bed.submit_port}", "module": row.name, "interval": INTERVAL}
            for row in rows
        ],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass(frozen=True)
class Observed:
    target: str
    metrics_text: str
    metrics: list[Sample]
    probes: dict[str, tuple[int, str]]
    once: dict[tuple[str, str], OnceRun]
    landing_page: str
    landing: list[LandingRow]
    alerts: set[AlertSeen]
    descriptions: dict[tuple[str, str], str]
    maildir: Path
    # Dashboard panel and alert expressions on the verdict metrics that returned no data.
    expressions_without_data: list[str]
    expressions_checked: int


def all_reported(exp: RunningExporter) -> bool:
    samples = parse_metrics(exp.get("/metrics")[1])
    return all(
        select(samples, "smtp_canary_delivered", module=row.name, route=route)
        for row in ROWS
        for route in row.routes
    )


def alerts_settled(prom: Any) -> bool:
    expected = {(a, row.name) for row in ROWS for a in row.alerts}
    seen = {(a.alertname, a.module) for a in alerts_seen(prom)}
    scrapes = prom.query('min(count_over_time(smtp_canary_delivered{module="pass"}[10m]))')
    return expected <= seen and bool(scrapes) and float(scrapes[0]["value"][1]) >= 5


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    reason = available() or prometheus_available()
    if reason is not None:
        if _in_ci():
            pytest.fail(f"canary matrix unavailable: {reason} (CI is set)", pytrace=False)
        pytest.skip(f"SKIPPING REAL-SERVER TESTS -- canary matrix: {reason}")
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("canary-matrix")
    with contextlib.ExitStack() as stack:
        bed = stack.enter_context(deliverability_stack())
        pw = tmp / "canary.password"
        pw.write_text(bed.password + "\n")
        exp = RunningExporter(write_config(tmp / "all.yml", ROWS, bed, pw)).start()
        stack.callback(exp.stop)
        pool = stack.enter_context(ThreadPoolExecutor(3))
        once = {
            (row.name, surface): pool.submit(
                run_once, write_config(tmp / f"{row.name}.yml", (row,), bed, pw), fmt
            )
            for row in ROWS
            for surface, fmt in ONCE_FORMATS.items()
        }
        rules = rules_firing_at_once(RULES, tmp / "rules.yml")
        scrape = (
            f"  - job_name: smtp\n    static_configs:\n      - targets: ['127.0.0.1:{exp.port}']\n"
        )
        prom = stack.enter_context(prometheus(tmp / "prom", scrape, (rules,)))
        wait_for(lambda: all_reported(exp), WAIT)
        target = f"{bed.host}:{bed.submit_port}"
        probes = {
            row.name: exp.get(
                "/probe?" + urllib.parse.urlencode({"target": target, "module": row.name})
            )
            for row in ROWS
        }
        metrics_text = exp.get("/metrics")[1]
        landing_page = exp.get("/")[1]
        wait_for(lambda: alerts_settled(prom), WAIT)
        # The panels' and rules' expressions on the verdict metrics, as Grafana and
        # Prometheus run them (tests/test_dashboards.py leaves them to this testbed).
        checks = [
            c
            for c in dashboards.dashboard_checks("smtp", [target]) + dashboards.rule_checks()
            if c.names() & dashboards.VERDICT_ONLY
        ]
        checks += [dashboards.Check(f"metric {n}", n) for n in sorted(dashboards.VERDICT_ONLY)]
        left: list[str] = []

        def all_have_data() -> bool:
            left[:] = dashboards.failures(prom, checks)
            return not left

        wait_for(all_have_data, 30)
        with urllib.request.urlopen(f"{prom.url}/api/v1/alerts", timeout=10) as resp:
            active = yaml.safe_load(resp.read())["data"]["alerts"]
        result = Observed(
            target=target,
            metrics_text=metrics_text,
            metrics=parse_metrics(metrics_text),
            probes=probes,
            once={key: f.result() for key, f in once.items()},
            landing_page=landing_page,
            landing=landing_rows(landing_page),
            alerts=alerts_seen(prom),
            descriptions={
                (a["labels"]["alertname"], a["labels"].get("module", "")): " ".join(
                    a["annotations"].get("description", "").split()
                )
                for a in active
            },
            maildir=bed.maildir,
            expressions_without_data=left,
            expressions_checked=len(checks),
        )
        report = matrix(result)
        (tmp / "canary-matrix.md").write_text(report)
        took = time.monotonic() - started
        print(f"\ncanary verdict matrix, observed in {took:.1f}s ({tmp / 'canary-matrix.md'}):")
        print(report)
        yield result


# --------------------------------------------------------------------------- the summary


def verdict_summary(samples: list[Sample], **labels: str) -> str:
    """One line per route: delivered, placement, the receiver's results, alignment."""
    out = []
    routes = sorted(
        {s.labels["route"] for s in select(samples, "smtp_canary_send_success", **labels)}
    )
    for route in routes:
        parts = [f"{route}:"]
        for s in select(samples, "smtp_canary_delivered", route=route, **labels):
            parts.append(f"delivered={s.value:g}")
        for s in select(samples, "smtp_canary_placement", route=route, **labels):
            if s.value == 1:
                parts.append(f"placement={s.labels['placement']}")
        for s in select(samples, "smtp_canary_auth_results_found", route=route, **labels):
            parts.append(f"ar_found={s.value:g}")
        for s in select(samples, "smtp_canary_auth_result", route=route, **labels):
            parts.append(f"{s.labels['method']}={s.labels['result']}")
        for s in select(samples, "smtp_canary_dkim_aligned", route=route, **labels):
            parts.append(f"aligned={s.value:g}")
        for s in select(samples, "smtp_canary_auth_results_ignored", route=route, **labels):
            parts.append(f"ignored={s.value:g}")
        for s in select(samples, "smtp_canary_local_dkim_result", route=route, **labels):
            parts.append(f"local_dkim={s.labels['result']}")
        out.append(" ".join(parts))
    return "; ".join(out) or "(no series)"


def once_cell(run: OnceRun, module: str) -> str:
    head = f"exit {run.code}"
    if run.output == "json":
        texts = []
        for obj in json_objects(run.stdout, module):
            for c in obj["canaries"]:
                v = c["verdicts"] or {}
                texts.append(
                    f"{c['route']}: delivered={c['delivered']} placement={c['placement']} "
                    + " ".join(f"{m}={v.get(m)}" for m in ("spf", "dkim", "dmarc"))
                    + f" aligned={v.get('dkim_aligned')} ignored={v.get('ignored_headers')}"
                    + f" local_dkim={[d['result'] for d in c['local_dkim'] or []]}"
                )
        return f"{head}, " + ("; ".join(texts) or "no object")
    if run.output == "table":
        rows = table_rows(run.stdout, module)
        return f"{head}, " + "; ".join(f"{r.get('CANARY')} | {r.get('FAILURE')}" for r in rows)
    return f"{head}, {run.stdout.splitlines()[0].split(' | ')[0] if run.stdout else run.stderr}"


def matrix(o: Observed) -> str:
    rows = []
    for row in ROWS:
        status, body = o.probes[row.name]
        landing = [f"{r.status}: {r.detail}" for r in o.landing if r.module == row.name]
        alerts = sorted(f"{a.alertname} ({a.state})" for a in o.alerts if a.module == row.name)
        cells = {
            METRICS: verdict_summary(o.metrics, module=row.name),
            PROBE: f"HTTP {status} "
            + verdict_summary(parse_metrics(body) if status == 200 else []),
            LANDING: "; ".join(landing) or "(no row)",
            ALERTS: ", ".join(alerts) or "none",
        }
        cells |= {s: once_cell(o.once[row.name, s], row.name) for s in ONCE_FORMATS}
        rows.append([row.name, row.domain, *(cells[s] for s in SURFACES)])
    said = [[module, name, text] for (name, module), text in sorted(o.descriptions.items())]
    return (
        markdown_table(["scenario", "from", *SURFACES], rows, width=400)
        + "\nWhat the alerts said (description annotation):\n\n"
        + markdown_table(["scenario", "alert", "description"], said, width=400)
    )


# --------------------------------------------------------------------------- the cells


def check_samples(row: Row, samples: list[Sample], **labels: str) -> None:
    """Each route's series show its expected verdict; a check that did not run has none."""
    for route, want in row.routes.items():
        at = dict(labels, route=route)
        delivered = [s.value for s in select(samples, "smtp_canary_delivered", **at)]
        assert delivered == [0 if want.placement is None else 1], (route, delivered)
        placed = {
            s.labels["placement"]: s.value for s in select(samples, "smtp_canary_placement", **at)
        }
        assert placed == {
            "inbox": float(want.placement == "inbox"),
            "junk": float(want.placement == "junk"),
        }
        found = [s.value for s in select(samples, "smtp_canary_auth_results_found", **at)]
        results = {
            s.labels["method"]: s.labels["result"]
            for s in select(samples, "smtp_canary_auth_result", **at)
            if s.value == 1
        }
        aligned = [s.value for s in select(samples, "smtp_canary_dkim_aligned", **at)]
        ignored = [s.value for s in select(samples, "smtp_canary_auth_results_ignored", **at)]
        local = [
            s.labels["result"]
            for s in select(samples, "smtp_canary_local_dkim_result", **at)
            if s.value == 1
        ]
        local_aligned = [s.value for s in select(samples, "smtp_canary_local_dkim_aligned", **at)]
        if want.placement is None:  # not found: nothing was read, so nothing is shown
            assert (found, results, aligned, ignored, local) == ([], {}, [], [], []), route
            continue
        assert local == [want.local], (route, local)
        assert local_aligned == [1 if want.local == "pass" else 0], (route, local_aligned)
        assert found == [1 if want.found else 0], (route, found)
        expected = {m: r for m in ("spf", "dkim", "dmarc") if (r := getattr(want, m)) is not None}
        assert results == expected, (route, results)
        assert aligned == ([] if want.aligned is None else [1 if want.aligned else 0]), route
        assert ignored == [want.ignored], (route, ignored)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_metrics(observed: Observed, row: Row) -> None:
    check_samples(row, observed.metrics, module=row.name, target=observed.target)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_probe_endpoint_shows_the_last_scheduled_canary(observed: Observed, row: Row) -> None:
    status, body = observed.probes[row.name]
    assert status == 200, body
    check_samples(row, parse_metrics(body))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_once_json(observed: Observed, row: Row) -> None:
    run = observed.once[row.name, ONCE_JSON]
    assert run.code == (1 if row.lost else 0), run.stdout + run.stderr
    (obj,) = json_objects(run.stdout, row.name)
    by_route = {c["route"]: c for c in obj["canaries"]}
    assert set(by_route) == set(row.routes)
    for route, want in row.routes.items():
        c = by_route[route]
        assert c["placement"] == want.placement, c
        if want.placement is None:
            assert c["delivered"] is False and c["verdicts"] is None, c
            continue
        v = c["verdicts"]
        assert v["found"] is want.found, v
        assert (v["spf"], v["dkim"], v["dmarc"]) == (want.spf, want.dkim, want.dmarc), v
        assert v["dkim_aligned"] is want.aligned, v
        assert v["ignored_headers"] == want.ignored, v
        assert v["from_domain"] == row.domain, v
        (sig,) = c["local_dkim"]
        assert (sig["result"], sig["domain"]) == (want.local, row.domain), sig


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_once_table(observed: Observed, row: Row) -> None:
    run = observed.once[row.name, ONCE_TABLE]
    assert run.code == (1 if row.lost else 0), run.stdout + run.stderr
    (cells,) = table_rows(run.stdout, row.name)
    canary, failure = cells["CANARY"], cells["FAILURE"]
    for want in row.routes.values():
        if want.placement is None:
            assert "NOT delivered" in canary and failure.startswith("canary: not delivered")
            continue
        assert "delivered" in canary, canary
        assert ("JUNK" if want.placement == "junk" else "inbox") in canary, canary
        if want.found:
            assert f"spf={want.spf} dkim={want.dkim} dmarc={want.dmarc}" in canary, canary
        else:
            assert "no-auth-results" in canary, canary
    findings = any(v.findings() for v in row.routes.values())
    if not row.lost:
        assert (failure == "-") != findings, failure
    if row.name == "junk":
        assert "landed in Junk" in failure, failure
    if row.name in ("dkim_fail", "forged"):
        assert "DKIM fail" in failure, failure
    if row.name == "spf_fail":
        assert "SPF fail" in failure, failure
    if row.name == "local_only":
        assert "DKIM fail (verified by the exporter)" in failure, failure
        assert "local-dkim=fail" in canary, canary


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_once_nagios(observed: Observed, row: Row) -> None:
    run = observed.once[row.name, ONCE_NAGIOS]
    word, code = row.nagios
    assert run.code == code, run.stdout + run.stderr
    status = run.stdout.split(" | ")[0]
    assert status.startswith(f"SMTP {word} - {observed.target}: "), status
    if row.name == "junk":
        assert "canary landed in Junk" in status, status
    if row.name in ("dkim_fail", "forged"):
        assert "canary DKIM fail" in status, status
    if row.name == "routes":
        assert "canary (elsewhere) no Authentication-Results" in status, status
    if row.name == "local_only":
        assert "canary DKIM fail (verified by the exporter)" in status, status


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_landing_page(observed: Observed, row: Row) -> None:
    (found,) = [r for r in observed.landing if r.module == row.name]
    assert found.status == ("down" if row.lost else "up"), found
    findings = any(v.findings() for v in row.routes.values())
    assert ("finding:" in found.detail) == findings, found
    if row.name == "junk":
        assert "landed in Junk" in found.detail, found


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_alerts(observed: Observed, row: Row) -> None:
    mine = {a for a in observed.alerts if a.module == row.name}
    assert {a.alertname for a in mine} == row.alerts, mine
    for name in row.alerts:
        said = observed.descriptions.get((name, row.name), "")
        assert observed.target in said, (name, said)
    if row.name in ("dkim_fail", "forged"):
        said = observed.descriptions[("SMTPCanaryAuthNotPass", row.name)]
        assert "say dkim=fail, not pass" in said, said
    if row.name == "routes":
        said = observed.descriptions[("SMTPCanaryNoAuthResults", row.name)]
        assert "route elsewhere" in said, said
    if row.name == "local_only":
        said = observed.descriptions[("SMTPCanaryLocalDKIMNotPass", row.name)]
        assert "with the keys in DNS: fail, not pass" in said, said


def test_dashboard_and_alert_expressions_on_verdicts_return_data(observed: Observed) -> None:
    # Every verdict metric in at least one panel or rule, each checked on its own too.
    assert observed.expressions_checked >= 10
    assert observed.expressions_without_data == []


def test_no_alert_outside_the_rows(observed: Observed) -> None:
    names = {row.name for row in ROWS}
    assert not {a for a in observed.alerts if a.module not in names}


def test_found_canaries_are_deleted_from_inbox_and_junk(observed: Observed) -> None:
    """Every canary found (in INBOX or in Junk) was deleted; only the row that does not
    search Junk leaves its canaries there (its sweep looks in INBOX only)."""
    left = []
    for folder in (observed.maildir, observed.maildir / ".Junk"):
        for sub in ("new", "cur"):
            d = folder / sub
            if d.is_dir():
                left += [p.read_bytes() for p in d.iterdir() if p.is_file()]
    canaries = [m for m in left if b"X-SMTP-Health-Canary:" in m]
    assert all(
        b"From: canary@good.test" in m and b"X-Deliverability-Test: junk" in m for m in canaries
    )


def test_rows_are_named_uniquely() -> None:
    assert len({row.name for row in ROWS}) == len(ROWS)
