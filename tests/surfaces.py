"""Read what each of the exporter's surfaces shows about one target, for the failure matrix.

The surfaces (issue #13): ``/metrics`` of a running exporter, ``/probe``, ``--once`` in
table, JSON and Nagios formats with its exit code, the landing page ``/``, and the alerts a
real Prometheus evaluating ``alerting/rules.yml`` raises. Each reader returns plain data;
the assertions and the scenarios live in tests/test_failure_matrix.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from .servers.prometheus import Prometheus

# Every surface of issue #13, in the order the matrix prints them.
METRICS = "/metrics"
PROBE = "/probe"
ONCE_TABLE = "--once table"
ONCE_JSON = "--once json"
ONCE_NAGIOS = "--once nagios"
LANDING = "landing page"
ALERTS = "alerts"
SURFACES = (METRICS, PROBE, ONCE_TABLE, ONCE_JSON, ONCE_NAGIOS, LANDING, ALERTS)
ONCE_FORMATS = {ONCE_TABLE: "table", ONCE_JSON: "json", ONCE_NAGIOS: "nagios"}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition."""
    return [
        Sample(s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def select(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    """The samples of ``name`` whose labels include ``labels``."""
    return [
        s
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


# The protocols' family prefixes: smtp_*, and the IMAP and POP3 families of #18.
PROTOCOLS = ("smtp", "imap", "pop3")


def metrics_summary(samples: list[Sample], **labels: str) -> str:
    """One line for the matrix: success, the failed phase, kind and (SMTP) last reply code
    (``-``: none), the canary's outcome; an IMAP or POP3 target's from its own families
    (named by their prefix), with the mailbox's count."""
    parts = []
    for p in PROTOCOLS:
        prefix = "" if p == "smtp" else f"{p}_"
        for s in select(samples, f"{p}_probe_success", **labels):
            parts.append(f"{prefix}success={s.value:g}")
        for s in select(samples, f"{p}_probe_failed_phase", **labels):
            if s.value == 1:
                failed = f"failed_phase={s.labels.get('phase')}/{s.labels.get('kind')}"
                if p == "smtp":
                    failed += f"/{s.labels.get('reply_code') or '-'}"
                parts.append(failed)
        for s in select(samples, f"{p}_mailbox_messages", **labels):
            parts.append(f"messages={s.value:g}")
    for name in ("smtp_canary_send_success", "smtp_canary_delivered"):
        for s in select(samples, name, **labels):
            parts.append(f"{name.removeprefix('smtp_')}={s.value:g}")
    return " ".join(parts) or "(no series)"


@dataclass(frozen=True)
class OnceRun:
    """One ``python -m exporter --once`` run."""

    output: str  # table, json or nagios
    code: int
    stdout: str
    stderr: str


def run_once(config_file: Path, output: str, timeout: float = 60.0) -> OnceRun:
    """Run ``--once`` on ``config_file`` in a subprocess (PYTHONPATH is inherited, so the
    worktree's code runs), as an operator would."""
    argv = ["--once", "--config.file", str(config_file), "--output", output]
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return OnceRun(output, proc.returncode, proc.stdout, proc.stderr)


def table_rows(stdout: str, module: str) -> list[dict[str, str]]:
    """The rows of the ``--once`` table (its first one, a row per target) of ``module``,
    as column name -> cell. Columns are padded to at least two spaces apart; cells such
    as ``ok PLAIN`` or an MX target's ``mx:example.com mx1.example.com`` hold one."""
    lines = stdout.split("\n\n")[0].splitlines()
    if not lines:
        return []
    header = re.split(r"\s{2,}", lines[0].strip())
    rows = [
        dict(zip(header, re.split(r"\s{2,}", line.strip(), maxsplit=len(header) - 1), strict=False))
        for line in lines[1:]
    ]
    return [row for row in rows if row.get("MODULE") == module]


def json_objects(stdout: str, module: str) -> list[dict[str, Any]]:
    """The ``--once --output json`` objects of ``module``'s targets (not its domains)."""
    objs = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return [o for o in objs if o.get("type") != "domain" and o.get("module") == module]


def once_summary(run: OnceRun, module: str) -> str:
    """One line for the matrix: exit code and what the format said about the target."""
    head = f"exit {run.code}"
    if run.output == "json":
        texts = []
        for obj in json_objects(run.stdout, module):
            text = f"success={str(obj['success']).lower()}"
            if obj.get("protocol", "smtp") != "smtp":
                text += f" {obj['protocol']}"
            if obj["failed_phase"]:
                text += f" {obj['failed_phase']}/{obj['failure_kind']}"
            if obj.get("canary"):
                text += f" canary delivered={json.dumps(obj['canary']['delivered'])}"
            texts.append(text)
        return f"{head}, " + ("; ".join(texts) or "no object")
    if run.output == "table":
        cells = [
            " ".join(v for k, v in row.items() if k not in ("TARGET", "MODULE", "TOTAL"))
            for row in table_rows(run.stdout, module)
        ]
        return f"{head}, " + ("; ".join(cells) or "no row")
    return f"{head}, {run.stdout.split(' | ')[0].strip()}"


class _Rows(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self.rows:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@dataclass(frozen=True)
class LandingRow:
    target: str
    module: str
    status: str
    detail: str


def landing_rows(page: str) -> list[LandingRow]:
    """The rows of the landing page's table."""
    parser = _Rows()
    parser.feed(page)
    return [LandingRow(*row[:4]) for row in parser.rows if len(row) >= 4]


def rules_firing_at_once(source: Path, dest: Path) -> Path:
    """Copy the alerting rules with every ``for:`` set to ``0s``.

    The rules wait 5 to 90 minutes before an alert fires, so a real Prometheus would need
    that long to show one; with ``for: 0s`` it fires at the first evaluation that sees the
    condition, and the expressions, labels and annotations tested are the shipped ones."""
    rules = yaml.safe_load(source.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    dest.write_text(yaml.safe_dump(rules, sort_keys=False))
    return dest


@dataclass(frozen=True)
class AlertSeen:
    alertname: str
    module: str
    target: str
    state: str


def alerts_seen(prom: Prometheus, window: str = "10m") -> set[AlertSeen]:
    """Every alert that was pending or firing at any evaluation within ``window``: an alert
    that fired once and resolved still counts, so a flapping healthy target is caught."""
    expr = f"count by (alertname, module, target, alertstate) (count_over_time(ALERTS[{window}]))"
    return {
        AlertSeen(
            r["metric"]["alertname"],
            r["metric"].get("module", ""),
            r["metric"].get("target", ""),
            r["metric"]["alertstate"],
        )
        for r in prom.query(expr)
    }


def active_alerts(prom: Prometheus) -> list[dict[str, Any]]:
    """The alerts pending or firing now, with their labels and rendered annotations."""
    with urllib.request.urlopen(f"{prom.url}/api/v1/alerts", timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return list(body["data"]["alerts"])


def markdown_table(header: list[str], rows: list[list[str]], width: int = 110) -> str:
    """A Markdown table; cells cut at ``width`` characters and pipes escaped."""

    def cell(text: str) -> str:
        text = " ".join(text.split()).replace("|", "\\|")
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
