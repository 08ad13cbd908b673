"""Generate SLO recording rules, burn-rate alerts and their promtool tests from slos.yml.

``python alerting/generate_slo.py`` rewrites ``alerting/slo-rules.yml``,
``alerting/slo-tests-page.yml`` and ``slo-tests-ticket.yml``; ``--check`` exits 1 when any
differs from what this file generates. The method is the Google SRE workbook's (chapter 5,
"Alerting on SLOs") as Sloth and Pyrra generate it: the error ratio is recorded over 5m,
30m, 1h, 2h, 6h, 1d, 3d and the 30-day period, and an alert needs a long and a short window
both burning the budget faster than a factor (the long window for significance, the short
one so the alert stops soon after the burn does):

==========  ==============  ===========  =====================================
severity    long window     short window burn rate (x budget) / budget spent
==========  ==============  ===========  =====================================
page        1h              5m           14.4: 2 % of 30 days' budget in 1 hour
page        6h              30m          6:    5 % in 6 hours
ticket      1d              2h           3:    10 % in 1 day
ticket      3d              6h           1:    10 % in 3 days
==========  ==============  ===========  =====================================

The generated unit tests drive four targets per SLO with synthetic series -- a healthy
three-day history at half the budget, then 20x, 10x, 2x and 0.5x the budget -- and check
that each alert fires when the arithmetic says it must and not before, and never for the
target burning half its budget. See docs/slo.md.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SPEC = HERE / "slos.yml"
RULES = HERE / "slo-rules.yml"
# runbook_url is BASE + "slo.md#" + alert name in lower case; the shipped files use this
# (alerting/runbooks.py says why, and rewrites the hand-written rules to another base).
DEFAULT_RUNBOOK_URL_BASE = "docs/"

WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d")
PERIOD = "30d"
KINDS = ("availability", "latency", "canary")
SOURCES = ("counters", "gauge")


@dataclass(frozen=True)
class BurnAlert:
    """One multi-window pair: the long and short windows must both exceed ``factor``."""

    long: str
    short: str
    factor: float


PAGE = (BurnAlert("1h", "5m", 14.4), BurnAlert("6h", "30m", 6))
TICKET = (BurnAlert("1d", "2h", 3), BurnAlert("3d", "6h", 1))
PAGE_ALERT = "SMTPErrorBudgetBurnFast"
TICKET_ALERT = "SMTPErrorBudgetBurnSlow"
# `for` smooths single evaluations over the short window; short next to the windows.
PAGE_FOR = "2m"
TICKET_FOR = "15m"


@dataclass(frozen=True)
class SLO:
    """One objective from slos.yml."""

    name: str
    sli: str
    objective: float  # percent
    description: str
    source: str = "counters"
    threshold: float | None = None
    matchers: str = ""

    @property
    def budget(self) -> float:
        """The error budget as a ratio: 0.001 for 99.9 %."""
        return round(1 - self.objective / 100, 10)

    def selector(self) -> str:
        return f"{{{self.matchers}}}" if self.matchers else ""

    def error_ratio(self, window: str) -> str:
        """PromQL for the share of bad events over ``window``, one series per target."""
        sel = self.selector()
        if self.sli == "availability" and self.source == "counters":
            # Counters count every probe, whatever the scrape interval, and survive a
            # missed scrape; failures are split by phase, probes are not.
            return (
                f"sum without (phase) (rate(smtp_probe_failures_total{sel}[{window}]))\n"
                f"/ rate(smtp_probes_total{sel}[{window}])"
            )
        if self.sli == "availability":
            return f"1 - avg_over_time(smtp_probe_success{sel}[{window}])"
        if self.sli == "canary":
            return f"1 - avg_over_time(smtp_canary_delivered{sel}[{window}])"
        return f'avg_over_time(slo:sli_error:sample{{slo="{self.name}"}}[{window}])'

    def sample_rule(self) -> dict[str, Any] | None:
        """Latency: the last probe, bad (1) unless it succeeded within the threshold,
        recorded at every evaluation so the windows can average it."""
        if self.sli != "latency":
            return None
        sel = self.selector()
        return {
            "record": "slo:sli_error:sample",
            "expr": (
                f"1 - (smtp_probe_success{sel} * "
                f"(smtp_probe_duration_seconds{sel} <= bool {_num(self.threshold or 0)}))"
            ),
            "labels": {"slo": self.name},
        }


def load_spec(path: Path = SPEC) -> list[SLO]:
    """The SLOs of ``path``, validated: a typo must not silently drop an alert."""
    data = yaml.safe_load(path.read_text())
    out: list[SLO] = []
    allowed = {"name", "sli", "objective", "description", "source", "threshold", "matchers"}
    for i, raw in enumerate(data.get("slos") or []):
        where = f"{path.name}: slos[{i}]"
        unknown = set(raw) - allowed
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        slo = SLO(
            name=str(raw["name"]),
            sli=raw["sli"],
            objective=float(raw["objective"]),
            description=str(raw.get("description", "")),
            source=raw.get("source", "counters"),
            threshold=raw.get("threshold"),
            matchers=raw.get("matchers", ""),
        )
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", slo.name):
            raise ValueError(f"{where}.name: lower-case letters, digits and '-' only")
        if slo.sli not in KINDS:
            raise ValueError(f"{where}.sli: expected one of {', '.join(KINDS)}")
        if slo.source not in SOURCES or (slo.source != "counters" and slo.sli != "availability"):
            raise ValueError(f"{where}.source: counters or gauge, for availability only")
        if not 90 <= slo.objective < 100:
            raise ValueError(f"{where}.objective: a percentage in [90, 100)")
        if (slo.sli == "latency") != (slo.threshold is not None):
            raise ValueError(f"{where}.threshold: required for latency, and only there")
        out.append(slo)
    if len({s.name for s in out}) != len(out):
        raise ValueError(f"{path.name}: duplicate SLO names")
    return out


# --------------------------------------------------------------------------- rules


def _num(x: float) -> str:
    return f"{x:.6g}"


def ratio(window: str) -> str:
    return f"slo:sli_error:ratio_rate{window}"


def burn_expr(slo: SLO, pairs: tuple[BurnAlert, ...]) -> str:
    sel = f'{{slo="{slo.name}"}}'
    parts = []
    for p in pairs:
        limit = _num(p.factor * slo.budget)
        parts.append(
            f"(\n  {ratio(p.long)}{sel} > {limit}\nand\n  {ratio(p.short)}{sel} > {limit}\n)"
        )
    return "\nor\n".join(parts)


def annotations(slo: SLO, page: bool, base: str = DEFAULT_RUNBOOK_URL_BASE) -> dict[str, str]:
    pairs = PAGE if page else TICKET
    how = " or ".join(f"{_num(p.factor)}x over {p.long} and {p.short}" for p in pairs)
    speed = "fast" if page else "slowly"
    return {
        "summary": f"{{{{ $labels.target }}}}: SLO {slo.name} is burning its error budget {speed}",
        "description": (
            f"{_num(slo.objective)} % of {slo.description} over {PERIOD} is the objective "
            f"(error budget {_num(slo.budget * 100)} %). {{{{ $labels.target }}}} (module "
            f"{{{{ $labels.module }}}}) has failed it at {how} the budget rate."
        ),
        "runbook_url": f"{base}slo.md#{(PAGE_ALERT if page else TICKET_ALERT).lower()}",
    }


def group(slo: SLO, base: str = DEFAULT_RUNBOOK_URL_BASE) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    sample = slo.sample_rule()
    if sample:
        rules.append(sample)
    for w in WINDOWS:
        rules.append({"record": ratio(w), "expr": slo.error_ratio(w), "labels": {"slo": slo.name}})
    sel = f'{{slo="{slo.name}"}}'
    b = _num(slo.budget)
    rules += [
        {
            "record": "slo:error_budget_remaining:ratio",
            "expr": f"1 - {ratio(PERIOD)}{sel} / {b}",
            "labels": {"slo": slo.name},
        },
        *(
            {
                "record": f"slo:burn_rate:ratio_rate{w}",
                "expr": f"{ratio(w)}{sel} / {b}",
                "labels": {"slo": slo.name},
            }
            for w in ("1h", "6h")
        ),
        {
            "alert": PAGE_ALERT,
            "expr": burn_expr(slo, PAGE),
            "for": PAGE_FOR,
            "labels": {"severity": "critical", "slo": slo.name},
            "annotations": annotations(slo, True, base),
        },
        {
            "alert": TICKET_ALERT,
            "expr": burn_expr(slo, TICKET),
            "for": TICKET_FOR,
            "labels": {"severity": "warning", "slo": slo.name},
            "annotations": annotations(slo, False, base),
        },
    ]
    return {"name": f"slo-{slo.name}", "rules": rules}


RULES_HEADER = """\
# GENERATED by alerting/generate_slo.py from alerting/slos.yml: edit those, then run
# `python alerting/generate_slo.py`. One group per SLO: the error ratio of every target
# over 5m ... 30d (slo:sli_error:ratio_rate<window>), the budget left over the 30-day
# period, the burn rate, and the multi-window, multi-burn-rate alerts. See docs/slo.md.
"""


def rules_document(slos: list[SLO], base: str = DEFAULT_RUNBOOK_URL_BASE) -> str:
    return RULES_HEADER + _dump({"groups": [group(s, base) for s in slos]})


# --------------------------------------------------------------------------- tests

PROBES_PER_MINUTE = 4  # scheduled every 15 s
# Target name -> burn factor after the history (before it: 0.5 for every target).
SCENARIOS = {"fast": 20.0, "medium": 10.0, "slow": 2.0, "healthy": 0.5}


@dataclass(frozen=True)
class Suite:
    """One promtool test file: a history at half the budget, then the burns of SCENARIOS;
    ``checks`` are (minutes after the burn starts, targets expected firing)."""

    path: Path
    alert: str
    step: int  # minutes between samples and between evaluations
    history: int  # minutes
    run: int  # minutes
    checks: tuple[tuple[int, tuple[str, ...]], ...]
    why: str

    @property
    def samples(self) -> int:
        return (self.history + self.run) // self.step + 1


# The windows of the page alert need minute samples (a 5m window of 5m samples holds one
# or two); the ticket alert's 3-day window needs days of history, at 5-minute samples so
# promtool's work (samples x evaluations) stays small.
SUITES = (
    Suite(
        HERE / "slo-tests-page.yml",
        PAGE_ALERT,
        step=1,
        history=2 * 60,
        run=4 * 60,
        checks=(
            (-60, ()),
            (40, ()),
            (55, ("fast",)),
            (150, ("fast",)),
            (210, ("fast", "medium")),
        ),
        why="fast (20x) passes 14.4x over 1h after 43 minutes (+2m for); medium (10x) "
        "passes 6x over 6h (2 h of history at 0.5x, so (1 + 10 t) / (2 + t) > 6) after 2.75 "
        "hours and never 14.4x; slow (2x) and healthy (0.5x) never page",
    ),
    Suite(
        HERE / "slo-tests-ticket.yml",
        TICKET_ALERT,
        step=5,
        history=24 * 60,
        run=16 * 60,
        checks=(
            (-60, ()),
            (30, ()),
            (3 * 60, ("fast", "medium")),
            (10 * 60, ("fast", "medium")),
            (16 * 60, ("fast", "medium", "slow")),
        ),
        why="the 3d window holds the whole 1 d history at 0.5x plus t hours at the burn "
        "factor f: (12 + f t) / (24 + t) > 1 after 0.63 h for fast (20x), 1.3 h for medium "
        "(10x) and 12 h for slow (2x) (+15m for); healthy (0.5x) never opens a ticket",
    ),
)
BASE_LABELS = 'job="smtp",instance="exp:10525",module="submission"'


def _bad_samples(suite: Suite, budget: float, factor: float) -> list[bool]:
    """One flag per sample, bad at the rate given (half the budget during the history),
    spread evenly: exact shares over every window, as counters would give."""
    out, acc = [], 0.0
    for i in range(suite.samples):
        acc += budget * (0.5 if i * suite.step < suite.history else factor)
        bad = acc >= 1 - 1e-9
        if bad:
            acc -= 1
        out.append(bad)
    return out


def _runs(values: list[str]) -> str:
    """promtool's notation: ``v+0xN`` for runs (N+1 values)."""
    parts, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        n = j - i
        parts.append(values[i] if n == 0 else f"{values[i]}+0x{n}")
        i = j + 1
    return " ".join(parts)


def _counter(suite: Suite, per_minute_before: float, per_minute_after: float) -> str:
    """A counter rising at one rate during the history and another after it."""
    a, b = per_minute_before * suite.step, per_minute_after * suite.step
    n1 = suite.history // suite.step
    n2 = suite.samples - n1 - 2
    start = round(a * n1 + b, 10)
    return f"0+{_num(a)}x{n1} {start:.10g}+{_num(b)}x{n2}"


def input_series(suite: Suite, slo: SLO) -> list[dict[str, str]]:
    out = []
    for target, factor in SCENARIOS.items():
        labels = f'{BASE_LABELS},target="{target}.example.com:587"'
        if slo.sli == "availability" and slo.source == "counters":
            n = PROBES_PER_MINUTE
            out += [
                {"series": f"smtp_probes_total{{{labels}}}", "values": _counter(suite, n, n)},
                {
                    "series": f'smtp_probe_failures_total{{{labels},phase="connect"}}',
                    "values": _counter(suite, n * slo.budget * 0.5, n * slo.budget * factor),
                },
            ]
            continue
        bad = _bad_samples(suite, slo.budget, factor)
        ok = ["0" if b else "1" for b in bad]
        if slo.sli == "availability":
            out.append({"series": f"smtp_probe_success{{{labels}}}", "values": _runs(ok)})
        elif slo.sli == "canary":
            out.append({"series": f"smtp_canary_delivered{{{labels}}}", "values": _runs(ok)})
        else:  # latency: every probe succeeds; the bad ones are slow
            slow = _num(2 * (slo.threshold or 0) + 1)
            durations = [slow if b else "0.5" for b in bad]
            out += [
                {"series": f"smtp_probe_success{{{labels}}}", "values": f"1+0x{suite.samples - 1}"},
                {
                    "series": f"smtp_probe_duration_seconds{{{labels}}}",
                    "values": _runs(durations),
                },
            ]
    return out


def _render(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], template)


def test_case(suite: Suite, slo: SLO, base: str = DEFAULT_RUNBOOK_URL_BASE) -> dict[str, Any]:
    page = suite.alert == PAGE_ALERT
    checks = []
    for minute, firing in suite.checks:
        expected = []
        for target in firing:
            labels = {
                "severity": "critical" if page else "warning",
                "slo": slo.name,
                "job": "smtp",
                "instance": "exp:10525",
                "module": "submission",
                "target": f"{target}.example.com:587",
            }
            expected.append(
                {
                    "exp_labels": labels,
                    "exp_annotations": {
                        k: _render(v, labels) for k, v in annotations(slo, page, base).items()
                    },
                }
            )
        checks.append(
            {
                "eval_time": f"{suite.history + minute}m",
                "alertname": suite.alert,
                "exp_alerts": expected,
            }
        )
    return {
        "name": f"{slo.name}: {suite.alert} for burns of 20x, 10x, 2x and 0.5x the budget",
        "interval": f"{suite.step}m",
        "input_series": input_series(suite, slo),
        "alert_rule_test": checks,
    }


def tests_document(suite: Suite, slos: list[SLO], base: str = DEFAULT_RUNBOOK_URL_BASE) -> str:
    header = (
        f"# GENERATED by alerting/generate_slo.py: promtool unit tests of {suite.alert}\n"
        f"# (slo-rules.yml), `promtool test rules alerting/{suite.path.name}`. Per SLO, four\n"
        "# targets share a history at half the error budget, then burn it at 20x (fast),\n"
        "# 10x (medium), 2x (slow) and 0.5x (healthy). Eval times are minutes after the\n"
        f"# {suite.history // 60} h history. Why they are where they are:\n"
        "# " + _wrap(suite.why + ".") + "\n"
    )
    doc = {
        "rule_files": [RULES.name],
        "evaluation_interval": f"{suite.step}m",
        "tests": [test_case(suite, s, base) for s in slos],
    }
    return header + _dump(doc)


def _wrap(text: str) -> str:
    out, line = [], ""
    for word in text.split():
        if len(line) + len(word) > 84:
            out.append(line)
            line = ""
        line = f"{line} {word}" if line else word
    return "\n# ".join([*out, line])


# --------------------------------------------------------------------------- output


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def outputs(spec: Path = SPEC, base: str = DEFAULT_RUNBOOK_URL_BASE) -> dict[Path, str]:
    """Every generated file and its content; ``base``: where docs/ is served (its URL,
    ending in ``/``), for the alerts' ``runbook_url`` (see alerting/runbooks.py)."""
    slos = load_spec(spec)
    return {RULES: rules_document(slos, base)} | {
        s.path: tests_document(s, slos, base) for s in SUITES
    }


def main(argv: list[str] | None = None) -> int:
    """Write the rules and tests, or with --check report whether they are stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if an output is stale")
    parser.add_argument(
        "--runbook-url-base",
        default=DEFAULT_RUNBOOK_URL_BASE,
        help="URL of the docs/ directory for runbook_url (default: %(default)s, relative; "
        "see alerting/runbooks.py)",
    )
    parser.add_argument(
        "--output-dir", type=Path, help="write the files there (default: alerting/)"
    )
    args = parser.parse_args(argv)
    base = args.runbook_url_base.rstrip("/") + "/"
    stale = 0
    for path, text in outputs(base=base).items():
        if args.output_dir is not None:
            args.output_dir.mkdir(parents=True, exist_ok=True)
            path = args.output_dir / path.name
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"{path} is stale: run python alerting/generate_slo.py", file=sys.stderr)
                stale = 1
        else:
            path.write_text(text)
    return stale


if __name__ == "__main__":
    sys.exit(main())
