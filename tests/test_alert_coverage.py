"""Every failure and finding the exporter exports is alerted on and on the dashboard.

docs/metrics.md marks each metric in its last column, **shows**: ``failure``, ``finding``
or ``—``. This test reads that column and:

- fails on a row whose column is missing or holds anything else (an unclassified metric
  is ambiguous: someone has to decide);
- requires every ``failure`` and ``finding`` metric in the expression of an alert in
  alerting/rules.yml and in a panel query of the dashboard;
- makes ``—`` hard to hide behind: a ``—`` row whose meaning uses one of the failure words
  (listed in docs/metrics.md, read from there) must name in backticks a ``failure`` or
  ``finding`` metric that alerts on it.

The rules are parsed as promtool and Prometheus load them (YAML), the dashboard as the
committed JSON that Grafana imports; tests/test_dashboards.py proves those expressions
return data against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
METRICS_DOC = ROOT / "docs" / "metrics.md"
RULES = ROOT / "alerting" / "rules.yml"
DASHBOARD = ROOT / "dashboards" / "smtp-health-exporter.json"

SHOWS = ("failure", "finding", "—")
# smtp_*, and the IMAP and POP3 families of #18.
NAME = re.compile(r"\b(?:smtp|imap|pop3)_[a-z0-9_]+\b")


@dataclass(frozen=True)
class Row:
    metric: str
    meaning: str
    shows: str  # as written; validated by check_rows


def doc_rows(text: str) -> tuple[list[Row], list[str]]:
    """The metric rows of every table with a ``shows`` column, and the problems found
    parsing them (a metric table without the column, a row with too few cells)."""
    rows: list[Row] = []
    problems: list[str] = []
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "metric":
            header = cells
            if header[-1] != "shows":
                problems.append(f"table without a 'shows' column: {line}")
            continue
        m = re.fullmatch(r"`((?:smtp|imap|pop3)_[a-z0-9_]+)`", cells[0])
        if header is None or m is None:
            continue
        if len(cells) != len(header):
            problems.append(f"{m[1]}: {len(cells)} cells, the header has {len(header)}")
            continue
        rows.append(Row(m[1], cells[header.index("meaning")], cells[-1]))
    return rows, problems


def failure_words(text: str) -> list[str]:
    """The failure words as docs/metrics.md lists them ("Failure words: `a`, `b`.")."""
    m = re.search(r"Failure words:((?:\s*`[^`]+`,?)+)", text)
    assert m, "docs/metrics.md lists no 'Failure words:'"
    return re.findall(r"`([^`]+)`", m[1])


def check_rows(
    rows: list[Row], words: list[str], alerted: set[str], on_panels: set[str]
) -> list[str]:
    """What is wrong with the classification, the alerts and the panels."""
    problems = []
    marked = {r.metric for r in rows if r.shows in ("failure", "finding")}
    pattern = re.compile("|".join(re.escape(w) for w in words) or r"(?!)", re.IGNORECASE)
    for r in rows:
        if r.shows not in SHOWS:
            problems.append(f"{r.metric}: 'shows' is {r.shows!r}, expected one of {SHOWS}")
        elif r.shows in ("failure", "finding"):
            if r.metric not in alerted:
                problems.append(f"{r.metric} ({r.shows}): no alert expression uses it")
            if r.metric not in on_panels:
                problems.append(f"{r.metric} ({r.shows}): no dashboard panel shows it")
        elif word := pattern.search(r.meaning):
            named = set(re.findall(r"`((?:smtp|imap|pop3)_[a-z0-9_]+)`", r.meaning)) & marked
            if not named:
                problems.append(
                    f"{r.metric}: marked — but its meaning says {word[0]!r}; mark it failure "
                    "or finding, or name the failure/finding metric that alerts on it"
                )
    return problems


def alert_metrics() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {
        name
        for g in groups
        for rule in g["rules"]
        if "alert" in rule
        for name in NAME.findall(rule["expr"])
    }


def panel_metrics() -> set[str]:
    def panels(items: list[dict]) -> list[dict]:
        return [p for item in items for p in (item, *panels(item.get("panels", [])))]

    dashboard = json.loads(DASHBOARD.read_text())
    return {
        name
        for p in panels(dashboard["panels"])
        for t in p.get("targets", [])
        for name in NAME.findall(t["expr"])
    }


def test_every_failure_and_finding_is_alerted_and_on_a_panel():
    text = METRICS_DOC.read_text()
    rows, problems = doc_rows(text)
    assert problems == []
    assert len(rows) == len({r.metric for r in rows}) > 50
    problems = check_rows(rows, failure_words(text), alert_metrics(), panel_metrics())
    assert problems == [], "\n".join(problems)


def test_the_findings_of_issue_13_are_marked():
    """The findings #13 found unalerted stay classified as such."""
    rows, _ = doc_rows(METRICS_DOC.read_text())
    shows = {r.metric: r.shows for r in rows}
    for metric in (
        "smtp_posture_open_relay",
        "smtp_posture_auth_advertised_before_tls",
        "smtp_posture_auth_accepted_before_tls",
        "smtp_mx_null",
        "smtp_domain_null_mx",
    ):
        assert shows[metric] == "finding", metric
    assert shows["smtp_mx_lookup_success"] == "failure"


# The checker itself, on small tables: it must catch each way of getting it wrong.
DOC = """
| metric | type | labels | meaning | when absent | shows |
|---|---|---|---|---|---|
| `smtp_a` | gauge | | 1 if it works | — | failure |
| `smtp_b` | gauge | | 1 if the relay is open | — | finding |
| `smtp_c` | gauge | | seconds | — | — |
"""


def test_checker_accepts_a_consistent_table():
    rows, problems = doc_rows(DOC)
    assert problems == [] and [r.shows for r in rows] == ["failure", "finding", "—"]
    assert check_rows(rows, ["fail"], {"smtp_a", "smtp_b"}, {"smtp_a", "smtp_b"}) == []


def test_checker_rejects_unclassified_and_unalerted_rows():
    rows, _ = doc_rows(DOC.replace("| seconds | — | — |", "| seconds | — | maybe |"))
    assert check_rows(rows, [], {"smtp_a", "smtp_b"}, {"smtp_a", "smtp_b"}) == [
        "smtp_c: 'shows' is 'maybe', expected one of ('failure', 'finding', '—')"
    ]
    rows, _ = doc_rows(DOC)
    assert check_rows(rows, [], {"smtp_a"}, {"smtp_b"}) == [
        "smtp_a (failure): no dashboard panel shows it",
        "smtp_b (finding): no alert expression uses it",
    ]


def test_checker_rejects_a_failure_hidden_behind_a_dash():
    hidden = DOC.replace("| seconds | — | — |", "| 0 when the lookup failed | — | — |")
    rows, _ = doc_rows(hidden)
    (problem,) = check_rows(rows, ["fail"], {"smtp_a", "smtp_b"}, {"smtp_a", "smtp_b"})
    assert problem.startswith("smtp_c: marked — but its meaning says 'fail'")
    named = hidden.replace("lookup failed |", "lookup failed (alerted: `smtp_a`) |")
    rows, _ = doc_rows(named)
    assert check_rows(rows, ["fail"], {"smtp_a", "smtp_b"}, {"smtp_a", "smtp_b"}) == []


def test_checker_rejects_a_table_without_the_column_and_short_rows():
    _, problems = doc_rows(DOC.replace(" shows |", "").replace("|---|---|---|---|---|---|", ""))
    assert problems and problems[0].startswith("table without a 'shows' column")
    _, problems = doc_rows(DOC + "| `smtp_d` | gauge | | new, unmarked | — |\n")
    assert problems == ["smtp_d: 5 cells, the header has 6"]
