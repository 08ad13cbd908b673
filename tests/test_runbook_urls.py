"""Runbook links on a base URL of the deployer's choice (alerting/runbooks.py).

The shipped rules, promtool tests, SLO files and dashboard use the default base; rewritten
or generated on another one, every link moves and nothing else does: promtool still checks
the rules and passes their unit tests, the SLO generator and the rewrite agree, the
dashboard's links and the PrometheusRule objects follow the same base.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import yaml

from .test_dashboards import RUNBOOK, load_generator, require_tool

ROOT = Path(__file__).resolve().parents[1]
ALERTING = ROOT / "alerting"
BASE = "https://git.example.net/ops/smtp-health-exporter/-/blob/main/docs/"


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def runbooks() -> ModuleType:
    return load(ALERTING / "runbooks.py", "alerting_runbooks")


def test_shipped_files_use_the_default_base_and_every_link_is_recognised():
    rb = runbooks()
    assert rb.main(["--check"]) == 0
    for name in rb.FILES:
        text = (ALERTING / name).read_text()
        found = rb.urls(text)
        # A runbook_url written some other way would escape the rewrite.
        assert len(found) == text.count("runbook_url:") > 0, name
        assert all(u.startswith(rb.DEFAULT_RUNBOOK_URL_BASE) for u in found), name


def test_rewritten_rules_on_a_base_pass_promtool(tmp_path):
    rb = runbooks()
    assert rb.main(["--runbook-url-base", BASE.rstrip("/"), "--output-dir", str(tmp_path)]) == 0
    for name in rb.FILES:
        shipped, text = (ALERTING / name).read_text(), (tmp_path / name).read_text()
        urls = rb.urls(text)
        assert urls and all(u.startswith(BASE) for u in urls), name
        # Only the links changed.
        assert rb.rewrite(text, rb.DEFAULT_RUNBOOK_URL_BASE) == shipped, name
    promtool = require_tool("promtool")
    for rules in ("rules.yml", "slo-rules.yml"):
        done = subprocess.run(
            [promtool, "check", "rules", str(tmp_path / rules)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
    # The unit tests expect the annotations as rendered, runbook_url included: a rule file
    # and its tests rewritten apart would fail here. (The SLO files' tests, a minute of
    # promtool, are the generator's own output on the base: see the next test but one.)
    done = subprocess.run(
        [promtool, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_link_resolves_to_a_heading():
    """Each runbook_url's anchor is a section of the page it names (the rewrite keeps
    page and anchor, so this holds on any base)."""
    rb = runbooks()
    headings = {
        page: {
            line[3:].strip().lower()
            for line in (ROOT / "docs" / page).read_text().splitlines()
            if line.startswith("## ")
        }
        for page in rb.PAGES
    }
    for name in rb.FILES:
        for url in rb.urls((ALERTING / name).read_text()):
            page, _, anchor = url.removeprefix(rb.DEFAULT_RUNBOOK_URL_BASE).partition("#")
            assert anchor in headings[page], (name, url)


def test_slo_generator_takes_the_base_as_the_rewrite_does(tmp_path):
    rb = runbooks()
    gen = load(ALERTING / "generate_slo.py", "generate_slo_base")
    assert gen.DEFAULT_RUNBOOK_URL_BASE == rb.DEFAULT_RUNBOOK_URL_BASE
    for path, text in gen.outputs(base=BASE).items():
        assert text == rb.rewrite(path.read_text(), BASE), path.name
    assert gen.main(["--runbook-url-base", BASE, "--output-dir", str(tmp_path)]) == 0
    assert gen.main(["--runbook-url-base", BASE, "--output-dir", str(tmp_path), "--check"]) == 0
    assert gen.main(["--check"]) == 0  # the shipped files: the default base


def test_dashboard_links_follow_the_base(tmp_path):
    rb = runbooks()
    gen = load_generator()
    assert gen.DEFAULT_RUNBOOK_URL_BASE == rb.DEFAULT_RUNBOOK_URL_BASE
    out = tmp_path / "d.json"
    assert gen.main(["--runbook-url-base", BASE, "--output", str(out)]) == 0
    moved = json.loads(out.read_text())
    shipped = json.loads(gen.render())
    assert [link["url"] for link in moved["links"]] == [BASE + page for _, page in gen.DOC_LINKS]
    assert [link["url"] for link in shipped["links"]] == [
        "docs/" + page for _, page in gen.DOC_LINKS
    ]
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((ALERTING / "rules.yml").read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    headings = {line[3:].strip() for line in RUNBOOK.read_text().splitlines() if "## " in line}
    panel_links = [
        link
        for panel in moved["panels"]
        for p in (panel, *panel.get("panels", []))
        for link in p.get("links", [])
    ]
    assert len(panel_links) == len(gen.PANEL_RUNBOOKS)
    for link in panel_links:
        alert = link["title"].removeprefix("Runbook: ")
        assert alert in alerts and alert in headings, alert
        assert link["url"] == f"{BASE}runbook.md#{alert.lower()}"


def test_prometheusrule_objects_take_the_base():
    k8s = load(ROOT / "deploy" / "kubernetes" / "rules.py", "k8s_rules_base")
    for objects, base in ((k8s.objects(BASE), BASE), (k8s.objects(), "docs/")):
        urls = [
            rule["annotations"]["runbook_url"]
            for obj in objects
            for group in obj["spec"]["groups"]
            for rule in group["rules"]
            if "alert" in rule
        ]
        assert urls and all(u.startswith(base) for u in urls)
        assert all(u.removeprefix(base).split("#")[0] in ("runbook.md", "slo.md") for u in urls)
