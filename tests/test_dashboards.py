"""The Grafana dashboard and the Prometheus rules, proven against real tools.

- dashboards/generate.py generates exactly the committed JSON, with the structure Grafana
  needs to import and share it (fixed uid, datasource variable, job and target variables);
- promtool checks alerting/rules.yml and runs alerting/tests.yml, in which every alert both
  fires and stays silent;
- a real Prometheus scrapes the real exporter probing real servers (aiosmtpd that succeeds,
  one that refuses the password; with Postfix + Dovecot, a canary found over IMAP), loads
  the rules, and every PromQL expression of the dashboard and of the rules must return data.

How "must return data" is checked: dashboard queries run as Grafana sends them (template
variables substituted) and must return a non-NaN sample; the failing target makes the
panels that list failures non-empty. Alert conditions are false on healthy servers, so
they run with every comparison in its ``bool`` form (see ``without_filtering``): the
series, joins and functions must all match for a result to come back. Recording rules run
as written and their recorded series are queried too. Every metric name is also queried
alone, including those inside the annotations' query templates (which promtool's unit
tests render in full).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from exporter.embedded import EmbeddedSMTPServer

from .conftest import USER, _in_ci, write_secret
from .domain_support import server_context_for, tlsa_3_1_1
from .exporter_harness import RunningExporter, wait_for
from .servers.dns import DNSServer
from .servers.https import HTTPSServer, Response
from .servers.policy import Policy, PolicyHandler
from .servers.prometheus import Prometheus, prometheus, prometheus_available

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "dashboards" / "generate.py"
DASHBOARD = ROOT / "dashboards" / "smtp-health-exporter.json"
RULES = ROOT / "alerting" / "rules.yml"
UNIT_TESTS = ROOT / "alerting" / "tests.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"

# Metrics that only exist once a canary has been looked for over IMAP: without the real
# Postfix + Dovecot, expressions using them cannot have data and are checked by the
# postfix-marked test instead.
IMAP_ONLY = frozenset(
    {
        "smtp_canary_delivered",
        "smtp_canary_imap_success",
        "smtp_canary_imap_failed_phase",
        "smtp_canary_last_round_trip_seconds",
        "smtp_canary_round_trip_seconds_bucket",
        "smtp_canary_late_arrivals_total",
        "smtp_canary_swept_total",
        "smtp_canary_last_delivered_timestamp_seconds",
    }
)
# The posture fixture's relay test recipient, which its MX refuses.
RELAY_TO = "relay-test@outside.example.net"
# What Grafana substitutes for its built-in variables, at the resolution of the test.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
# Metric names as they appear in PromQL: ours, recording rules (level:metric:ops) and up.
METRIC_NAME = re.compile(r"\b(smtp_[a-z0-9_]+|[a-z_]+:[a-z0-9_]+:[a-z0-9_]+|up)\b")


def require_tool(name: str) -> str:
    """Path of a Prometheus tool; a missing one fails under CI and skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not installed (Debian: prometheus)"
        if _in_ci():
            pytest.fail(f"{msg} (CI is set, so this fails instead of skipping)", pytrace=False)
        pytest.skip(f"SKIPPING -- {msg}")
    return path


def load_generator() -> ModuleType:
    """dashboards/generate.py as a module (dashboards/ is not a package)."""
    spec = importlib.util.spec_from_file_location("dashboards_generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def load_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def all_panels(dashboard: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


# --------------------------------------------------------------------------- generator


def test_generator_output_is_the_committed_json():
    generator = load_generator()
    assert generator.render() == DASHBOARD.read_text(), (
        "dashboards/smtp-health-exporter.json is stale: run python dashboards/generate.py"
    )
    assert generator.render() == generator.render()  # deterministic
    assert generator.main(["--check"]) == 0


def test_dashboard_structure():
    generator = load_generator()
    d = load_dashboard()
    assert d["uid"] == "smtp-health-exporter" and d["id"] is None
    assert d["schemaVersion"] == generator.SCHEMA_VERSION >= 41
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "target"]
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("job", "target"):
        v = variables[name]
        assert v["type"] == "query" and v["multi"] and v["includeAll"]
        assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert v["query"].startswith("label_values(")
    assert '"$job"' in variables["target"]["query"]  # targets of the selected jobs

    ids = []
    cells: set[tuple[int, int]] = set()
    for panel in all_panels(d):
        ids.append(panel["id"])
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["description"], panel["id"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", panel["title"]
            # Per-target metrics honour both variables; the histogram has no target label
            # and the exporter's own metrics none either.
            if re.search(r"smtp_(probe|tls|auth|extension|size|canary)_", t["expr"]):
                assert 'job=~"$job"' in t["expr"] and 'target=~"$target"' in t["expr"], panel[
                    "title"
                ]
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- promtool


def test_promtool_check_rules():
    promtool = require_tool("promtool")
    proc = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in proc.stdout


def test_promtool_unit_tests():
    promtool = require_tool("promtool")
    proc = subprocess.run(
        [promtool, "test", "rules", str(UNIT_TESTS)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_both_fires_and_stays_silent_in_unit_tests():
    alerts = {rule["alert"] for rule in load_rules() if "alert" in rule}
    fires: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    assert alerts - fires == set(), "alerts never seen firing in alerting/tests.yml"
    assert alerts - silent == set(), "alerts never seen staying silent in alerting/tests.yml"
    assert (fires | silent) - alerts == set(), "unit tests of alerts that do not exist"


def test_every_alert_links_its_runbook_section():
    headings = {
        line[3:].strip() for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")
    }
    for rule in load_rules():
        if "alert" not in rule:
            continue
        name = rule["alert"]
        annotations = rule["annotations"]
        # GitHub's anchor for a heading that is a bare alert name is the name in lower case.
        assert annotations["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        assert name in headings, f"docs/runbook.md has no '## {name}' section"
        assert "$labels." in annotations["summary"], name
        assert rule["labels"]["severity"] in ("warning", "critical"), name


# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Check:
    """One PromQL query that must return at least one non-NaN sample."""

    origin: str
    promql: str
    label: str | None = None  # a label every result must carry (template variables)

    def names(self) -> set[str]:
        return set(METRIC_NAME.findall(self.promql))


def grafana_substitute(expr: str, job: str, targets: list[str]) -> str:
    """Replace template variables as Grafana's Prometheus datasource does for "All" of a
    multi-value variable: a regex alternation of the regex-escaped values."""

    def escaped(values: list[str]) -> str:
        # re.escape for the regex, then doubled backslashes for the PromQL string literal.
        return "(" + "|".join(re.escape(v).replace("\\", "\\\\") for v in values) + ")"

    values = {**BUILTINS, "job": escaped([job]), "target": escaped(targets)}
    out = re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], expr)
    assert "$" not in out, out
    return out


def dashboard_checks(job: str, targets: list[str]) -> list[Check]:
    """Every panel query as Grafana would send it, and every variable's query."""
    d = load_dashboard()
    checks = []
    for panel in all_panels(d):
        for t in panel.get("targets", []):
            checks.append(
                Check(
                    f"panel {panel['title']!r} {t['refId']}",
                    grafana_substitute(t["expr"], job, targets),
                )
            )
    for v in d["templating"]["list"]:
        if v["type"] != "query":
            continue
        # label_values(selector, label) is Grafana's: the selector must find series that
        # carry the label.
        m = re.fullmatch(r"label_values\((.*), *(\w+)\)", v["query"])
        assert m, v["query"]
        checks.append(Check(f"variable {v['name']}", grafana_substitute(m[1], job, targets), m[2]))
    return checks


_PROTECTED_OR_COMPARISON = re.compile(
    r"""(?P<keep>\{[^}]*\}|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')"""
    r"|(?P<op>==|!=|>=|<=|>(?!=)|<(?!=))(?!\s*bool\b)\s*"
)


def without_filtering(expr: str) -> str:
    """``expr`` with every comparison turned into its ``bool`` form, so the query returns
    the series the condition is evaluated on (value 0 or 1) whether or not it holds.

    An alert's condition is false on healthy servers, so its expression returns nothing;
    with ``bool`` it still has to find every series and join it (``on``/``group_left``,
    ``and``) for a result to come back, which is what a mistyped name or label breaks.
    Label matchers and strings are left alone (``!=`` in ``{mechanism!=""}`` is not a
    comparison).
    """

    def sub(m: re.Match[str]) -> str:
        return m["keep"] if m["keep"] is not None else f"{m['op']} bool "

    return _PROTECTED_OR_COMPARISON.sub(sub, expr)


def rule_checks() -> list[Check]:
    """Recording rules (their expression and the recorded series), alert conditions in
    their ``bool`` form, and the metric names used by the annotations' query templates."""
    checks = []
    for rule in load_rules():
        if "record" in rule:
            checks.append(Check(f"recording rule {rule['record']}", rule["expr"]))
            checks.append(Check(f"recorded series {rule['record']}", rule["record"]))
            continue
        name = rule["alert"]
        checks.append(Check(f"alert {name}", without_filtering(rule["expr"])))
        for text in rule["annotations"].values():
            # The query templates are printf formats (%q for label values): check the
            # names; promtool's unit tests render them in full.
            for template in re.findall(r"`([^`]*)`", text):
                for metric in sorted(set(METRIC_NAME.findall(template))):
                    checks.append(Check(f"alert {name} annotation", metric))
    return checks


def failures(prom: Prometheus, checks: list[Check]) -> list[str]:
    """What is wrong with each check that does not (yet) return data."""
    out = []
    for check in checks:
        try:
            result = prom.query(check.promql)
        except Exception as exc:  # a syntax error is a failure to report, not to retry
            out.append(f"{check.origin}: {check.promql}: {exc}")
            continue
        values = [r["value"][1] for r in result]
        if not any(not math.isnan(float(v)) for v in values):
            out.append(f"{check.origin}: {check.promql}: {'only NaN' if values else 'empty'}")
        elif check.label and not all(check.label in r["metric"] for r in result):
            out.append(f"{check.origin}: {check.promql}: results without {check.label!r}")
    return out


def prove_expressions(
    tmp_path: Path,
    config: Path,
    targets: list[str],
    failing: str,
    *,
    imap: bool,
    timeout: float = 25.0,
    alerts: frozenset[tuple[str, str]] = frozenset(),
) -> None:
    """Run the exporter on ``config``, a real Prometheus scraping it every second with the
    rules loaded, and wait until every check returns data (or fail listing those that
    do not). ``failing`` is the target that fails at AUTH; ``alerts`` are the other
    (alertname, target or domain) expected pending."""
    reason = prometheus_available()
    if reason:
        if _in_ci():
            pytest.fail(f"{reason} (CI is set)", pytrace=False)
        pytest.skip(f"SKIPPING real-Prometheus test -- {reason}")
    checks = dashboard_checks("smtp", targets) + rule_checks()
    # Every metric name on its own too, so a failure points at the name, not the panel.
    checks += [Check(f"metric {n}", n) for n in sorted(set().union(*(c.names() for c in checks)))]
    if not imap:
        needs_imap = [c for c in checks if c.names() & IMAP_ONLY]
        assert needs_imap, "no canary delivery panel or rule left to check?"
        checks = [c for c in checks if c not in needs_imap]

    exp = RunningExporter(config).start()
    # The rules are loaded too, so recording rules and ALERTS exist.
    scrape = f"  - job_name: smtp\n    static_configs:\n      - targets: ['127.0.0.1:{exp.port}']\n"
    started = time.monotonic()
    try:
        with prometheus(tmp_path / "prom", scrape, (RULES,)) as prom:
            ready_at = time.monotonic()
            left: list[str] = []

            def all_have_data() -> bool:
                left[:] = failures(prom, checks)
                return not left

            ok = wait_for(all_have_data, timeout)
            done_at = time.monotonic()
            assert ok, (
                f"{len(left)} of {len(checks)} queries return no data:\n"
                + "\n".join(left)
                + "\n"
                + prom.log()
            )
            # The rules also work on real data: the target refusing the password is
            # pending for SMTPTargetDown, SMTPAuthFailing (for: 5m) and
            # SMTPProbesFailingIntermittently (every probe fails), ``alerts`` (the
            # domain listed on a DNSBL) too, nothing else is.
            expected = {
                ("SMTPTargetDown", failing, "pending"),
                ("SMTPAuthFailing", failing, "pending"),
                ("SMTPProbesFailingIntermittently", failing, "pending"),
            } | {(name, who, "pending") for name, who in alerts}
            assert wait_for(lambda: len(prom.query("ALERTS")) >= len(expected), 10)
            found = {
                (
                    a["metric"]["alertname"],
                    a["metric"].get("target", a["metric"].get("domain")),
                    a["metric"]["alertstate"],
                )
                for a in prom.query("ALERTS")
            }
            assert found == expected, found
    finally:
        exp.stop()
    names = {n for c in checks for n in c.names()}
    print(
        f"\n{len(checks)} queries returned data ({len(names)} metric names) "
        f"{done_at - ready_at:.1f}s after Prometheus was ready "
        f"({ready_at - started:.1f}s to start it)"
    )


@dataclass(frozen=True)
class PostureSetup:
    """More exporter config turning on every posture check, and what it makes pending."""

    modules: str  # YAML lines under modules:
    targets: str  # YAML lines under targets:
    top: str  # top-level YAML (dns:)
    names: list[str]  # the targets' labels
    alerts: frozenset[tuple[str, str]]  # (alertname, domain) expected pending


@pytest.fixture
def posture(ca, ca_file, smtp_server) -> Iterator[PostureSetup]:
    """Every posture check on, against servers on 127.0.0.1 whose answers give every
    posture series (the per-target TLS scan and the mail-domain checks):

    - module ``posture``: ``tls_scan`` on an aiosmtpd target (TLS 1.2 and 1.3, so OCSP
      stapling is observable: not stapled), and every check of the domain
      ``enforce.test``: its MX is that aiosmtpd, with a TLSA record of its certificate
      (DNSSEC-validated: the DNS server sets AD), a valid SPF, DMARC p=reject, TLS-RPT, an
      MTA-STS policy in mode enforce that matches the MX, and the MX address listed on
      ``bl.test`` (the one series that needs a listing: smtp_domain_dnsbl_return_code_info;
      so SMTPDNSBLListed is pending);
    - module ``testing``: the records and MTA-STS of ``testing.test``, whose policy is in
      mode testing (the second SMTPMTASTSMXMismatch rule joins on that mode);
    - the ``posture`` module's SMTP-session checks too: AUTH before TLS (aiosmtpd offers
      AUTH only after STARTTLS: 0) and the relay test (the MX refuses the outside
      recipient: not an open relay);
    - module ``discovered``: the target ``mx:enforce.test``, probing its MX host, so the
      MX lookup series (``smtp_mx_*``) exist.

    Domain checks run once, within 10 s of the exporter's start (scheduler)."""
    mx_ctx, mx_cert = server_context_for(ca, "localhost", "127.0.0.1", "mx1.enforce.test")
    sts_ctx, _ = server_context_for(ca, "mta-sts.enforce.test", "mta-sts.testing.test")

    def policy(mode: str, mx: str) -> dict[str, Response]:
        body = f"version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 1209600\n".encode()
        return {"/.well-known/mta-sts.txt": Response(200, body)}

    with contextlib.ExitStack() as stack:
        refusing = PolicyHandler(Policy(reject_rcpt={RELAY_TO}))
        mx = stack.enter_context(
            EmbeddedSMTPServer(tls="starttls", ssl_context=mx_ctx, handler=refusing)
        )
        other = smtp_server()
        enforce_web = stack.enter_context(
            HTTPSServer(sts_ctx, policy("enforce", "mx1.enforce.test"))
        )
        testing_web = stack.enter_context(
            HTTPSServer(sts_ctx, policy("testing", "mx1.testing.test"))
        )
        records = []
        for domain in ("enforce.test", "testing.test"):
            records += [
                f"{domain}. 300 IN MX 10 mx1.{domain}.",
                f"mx1.{domain}. 300 IN A 127.0.0.1",
                f'{domain}. 300 IN TXT "v=spf1 mx -all"',
                f'_dmarc.{domain}. 300 IN TXT "v=DMARC1; p=reject"',
                f'_smtp._tls.{domain}. 300 IN TXT "v=TLSRPTv1; rua=mailto:tls@{domain}"',
                f'_mta-sts.{domain}. 300 IN TXT "v=STSv1; id=1;"',
                f"mta-sts.{domain}. 300 IN A 127.0.0.1",
            ]
        records += [
            f"_25._tcp.mx1.enforce.test. 300 IN TLSA {tlsa_3_1_1(mx_cert)}",
            "1.0.0.127.bl.test. 300 IN A 127.0.0.2",
        ]
        dns = stack.enter_context(DNSServer("\n".join(records) + "\n", ad=True))
        modules = (
            "  posture:\n"
            f"    tls: starttls\n    tls_ca_file: {ca_file}\n    timeout: 2s\n"
            "    posture:\n"
            "      tls_scan: true\n      auth_before_tls: true\n"
            f"      relay_test: {{from: probe@example.com, to: {RELAY_TO}}}\n"
            "    domain:\n"
            "      name: enforce.test\n      interval: 1h\n"
            "      mta_sts: true\n      dane: true\n      dnsbl: [bl.test]\n"
            f"      smtp_port: {mx.port}\n      mta_sts_port: {enforce_web.port}\n"
            f"      tls_ca_file: {ca_file}\n"
            "  testing:\n"
            f"    tls: starttls\n    tls_ca_file: {ca_file}\n    timeout: 1s\n"
            "    domain:\n"
            "      name: testing.test\n      interval: 1h\n      mta_sts: true\n"
            f"      mta_sts_port: {testing_web.port}\n      tls_ca_file: {ca_file}\n"
            "  discovered:\n"
            f"    tls: starttls\n    port: {mx.port}\n    tls_ca_file: {ca_file}\n"
            "    timeout: 1s\n"
        )
        names = [f"127.0.0.1:{mx.port}", f"127.0.0.1:{other.port}", "mx:enforce.test"]
        yield PostureSetup(
            modules=modules,
            targets=(
                f'  - {{target: "{names[0]}", module: posture, interval: 2s}}\n'
                f'  - {{target: "{names[1]}", module: testing, interval: 1s}}\n'
                f'  - {{target: "{names[2]}", module: discovered, interval: 1s}}\n'
            ),
            top=f'dns: {{nameservers: ["{dns.address}:{dns.port}"], timeout: 1s}}\n',
            names=names,
            alerts=frozenset({("SMTPDNSBLListed", "enforce.test")}),
        )


def exporter_config(
    tmp_path: Path,
    ca_file: str,
    good: int,
    bad: int,
    modules: str = "",
    targets: str = "",
    top: str = "",
) -> Path:
    """Two aiosmtpd targets, every second: one passes (and sends a canary, without IMAP),
    one fails at AUTH. ``modules`` and ``targets`` are more YAML lines for those keys,
    ``top`` more top-level YAML."""
    secret = write_secret(tmp_path)
    path = tmp_path / "config.yml"
    path.write_text(
        f"{top}"
        "modules:\n"
        f"  sub:\n    tls: starttls\n    tls_ca_file: {ca_file}\n    timeout: 1s\n"
        f"    auth: {{username: {USER}, password_file: {secret}}}\n"
        "    canary: {from: monitor@example.com, to: canary@example.org, interval: 2s}\n"
        f"{modules}"
        "targets:\n"
        f'  - {{target: "127.0.0.1:{good}", module: sub, interval: 1s, labels: {{site: t}}}}\n'
        f'  - {{target: "127.0.0.1:{bad}", module: sub, interval: 1s, labels: {{site: t}}}}\n'
        f"{targets}"
    )
    return path


def test_dashboard_and_rule_expressions_return_data(smtp_server, ca_file, posture, tmp_path):
    """Every expression (less those needing IMAP) against real aiosmtpd servers, with
    every posture check on (``posture``)."""
    good = smtp_server()
    bad = smtp_server(users={USER: "another-password"})
    config = exporter_config(
        tmp_path, ca_file, good.port, bad.port, posture.modules, posture.targets, posture.top
    )
    targets = [f"127.0.0.1:{good.port}", f"127.0.0.1:{bad.port}", *posture.names]
    prove_expressions(
        tmp_path, config, targets, targets[1], imap=False, timeout=30, alerts=posture.alerts
    )


@pytest.mark.postfix
def test_every_expression_returns_data_with_a_canary_through_postfix(
    mailstack, smtp_server, ca_file, posture, tmp_path
):
    """All expressions, canary delivery included: a canary through the real Postfix is
    found in Dovecot over IMAP. The posture checks are on too (``posture``)."""
    good = smtp_server()
    bad = smtp_server(users={USER: "another-password"})
    smtp_pw = tmp_path / "smtp-pw"
    smtp_pw.write_text(mailstack.users["probe"] + "\n")
    imap_pw = tmp_path / "imap-pw"
    imap_pw.write_text(mailstack.users["canary"] + "\n")
    modules = (
        "  submission:\n"
        f"    tls: starttls\n    tls_ca_file: {mailstack.ca_file}\n    timeout: 1s\n"
        f"    auth: {{username: probe, password_file: {smtp_pw}}}\n"
        "    canary:\n"
        "      from: probe@localhost\n      to: canary@localhost\n"
        # Several canaries within the test, so the round-trip histogram's rate has data.
        "      interval: 5s\n      timeout: 5s\n"
        "      imap:\n"
        f"        host: 127.0.0.1\n        port: {mailstack.imaps_port}\n"
        f"        tls: implicit\n        tls_ca_file: {mailstack.ca_file}\n"
        f"        username: canary\n        password_file: {imap_pw}\n"
        "        poll_interval: 200ms\n"
    )
    submission = (
        f'  - {{target: "127.0.0.1:{mailstack.submission_port}", module: submission,'
        " interval: 1s}\n"
    )
    config = exporter_config(
        tmp_path,
        ca_file,
        good.port,
        bad.port,
        modules + posture.modules,
        submission + posture.targets,
        posture.top,
    )
    targets = [
        f"127.0.0.1:{good.port}",
        f"127.0.0.1:{bad.port}",
        f"127.0.0.1:{mailstack.submission_port}",
        *posture.names,
    ]
    prove_expressions(
        tmp_path, config, targets, targets[1], imap=True, timeout=40, alerts=posture.alerts
    )


def test_without_filtering_keeps_matchers_and_strings():
    assert without_filtering('a{b!="", c=~"x>y"} == 0') == 'a{b!="", c=~"x>y"} == bool 0'
    assert without_filtering("x - time() < 14 * 86400") == "x - time() < bool 14 * 86400"
    assert without_filtering("a >= bool 1 and b<2") == "a >= bool 1 and b< bool 2"
    assert without_filtering("up == 0 and on (job) b") == "up == bool 0 and on (job) b"
