"""SLOs: the generated rules and burn-rate alerts, proven with promtool.

alerting/generate_slo.py turns alerting/slos.yml into slo-rules.yml and two promtool test
files; here the committed files must be what the generator writes, promtool must accept the
rules, and the generated unit tests -- synthetic series burning the budget at 20x, 10x, 2x
and 0.5x -- must pass: the page fires for the fast burns, the ticket for the slow one, and
neither for the target within its budget. A real Prometheus evaluates every SLO expression
with data in tests/test_dashboards.py (``rule_checks``).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from .test_dashboards import require_tool

ROOT = Path(__file__).resolve().parents[1]
ALERTING = ROOT / "alerting"
DOCS = ROOT / "docs" / "slo.md"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_slo", ALERTING / "generate_slo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_committed():
    gen = load_generator()
    for path, text in gen.outputs().items():
        assert path.read_text() == text, f"{path.name} is stale: run alerting/generate_slo.py"
    assert gen.main(["--check"]) == 0


def test_rules_cover_every_window_and_both_alerts_per_slo():
    gen = load_generator()
    groups = yaml.safe_load((ALERTING / "slo-rules.yml").read_text())["groups"]
    assert [g["name"] for g in groups] == [f"slo-{s.name}" for s in gen.load_spec()]
    for g in groups:
        records = {r["record"] for r in g["rules"] if "record" in r}
        assert {f"slo:sli_error:ratio_rate{w}" for w in gen.WINDOWS} <= records
        assert gen.WINDOWS == ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d")
        alerts = {r["alert"]: r for r in g["rules"] if "alert" in r}
        assert set(alerts) == {"SMTPErrorBudgetBurnFast", "SMTPErrorBudgetBurnSlow"}
        fast = alerts["SMTPErrorBudgetBurnFast"]["expr"]
        assert "ratio_rate1h" in fast and "ratio_rate5m" in fast and "ratio_rate6h" in fast


def test_promtool_checks_the_rules():
    promtool = require_tool("promtool")
    proc = subprocess.run(
        [promtool, "check", "rules", str(ALERTING / "slo-rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_burn_rate_alerts_fire_on_time_and_stay_silent_within_budget():
    """Both generated promtool files (page and ticket), run side by side."""
    promtool = require_tool("promtool")
    files = [ALERTING / "slo-tests-page.yml", ALERTING / "slo-tests-ticket.yml"]

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=300
        )

    with ThreadPoolExecutor(2) as pool:
        for path, proc in zip(files, pool.map(run, files), strict=True):
            assert proc.returncode == 0, f"{path.name}:\n{proc.stdout}{proc.stderr}"


def test_every_slo_alert_fires_and_stays_silent_for_the_healthy_target():
    rules = yaml.safe_load((ALERTING / "slo-rules.yml").read_text())["groups"]
    alerts = {(g["name"][4:], r["alert"]) for g in rules for r in g["rules"] if "alert" in r}
    fired: set[tuple[str, str]] = set()
    silent: set[tuple[str, str]] = set()
    for name in ("slo-tests-page.yml", "slo-tests-ticket.yml"):
        for case in yaml.safe_load((ALERTING / name).read_text())["tests"]:
            slo = case["name"].split(":")[0]
            for check in case["alert_rule_test"]:
                key = (slo, check["alertname"])
                targets = {a["exp_labels"]["target"] for a in check["exp_alerts"]}
                assert "healthy.example.com:587" not in targets
                (fired if targets else silent).add(key)
    assert alerts == fired == silent


def test_every_slo_alert_has_its_section_in_docs():
    lines = DOCS.read_text().splitlines()
    headings = {line[3:].strip() for line in lines if line.startswith("## ")}
    for group in yaml.safe_load((ALERTING / "slo-rules.yml").read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"] in headings
                assert rule["annotations"]["runbook_url"] == f"docs/slo.md#{rule['alert'].lower()}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("slos: [{name: a, sli: uptime, objective: 99}]", "sli: expected one of"),
        ("slos: [{name: a, sli: latency, objective: 99}]", "threshold: required"),
        ("slos: [{name: a, sli: canary, objective: 100}]", "objective: a percentage"),
        ("slos: [{name: a, sli: canary, objective: 99, owner: x}]", "unknown keys ['owner']"),
        ("slos: [{name: a, sli: canary, objective: 99, source: gauge}]", "source:"),
    ],
)
def test_spec_errors_name_the_slo_and_key(tmp_path, text, message):
    path = tmp_path / "slos.yml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"slos\.yml: slos\[0\]") as info:
        load_generator().load_spec(path)
    assert message in str(info.value)
