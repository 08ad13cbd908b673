"""Point every alert's ``runbook_url`` at where you host the docs.

    python alerting/runbooks.py --output-dir /etc/prometheus/rules/smtp \
        --runbook-url-base https://git.example.com/ops/smtp-health-exporter/-/blob/main/docs/
    python alerting/runbooks.py --check

Alertmanager and Grafana show ``runbook_url`` as a link as it is: a relative path resolves
against their own address and breaks. As the monitoring mixins do (kubernetes-mixin's
``runbookURLPattern``, ``https://runbooks.prometheus-operator.dev/runbooks/kubernetes/%s``),
the base is a parameter: ``runbook_url`` is ``BASE + page + "#" + anchor``, where page is
``runbook.md`` or ``slo.md`` and the anchor the alert name in lower case (GitHub's and
GitLab's anchor for the heading ``## AlertName``). A base that serves the markdown files
rendered, with those anchors, works: the repository on GitHub or GitLab
(``.../blob/main/docs/``), or any static site built from docs/.

The shipped files use ``DEFAULT_RUNBOOK_URL_BASE``, ``docs/``: relative to the repository
root, which is all a checkout knows; set the base when deploying. This rewrites the
hand-written rules and their promtool tests (``rules.yml``, ``tests.yml``) and the
generated SLO files (``generate_slo.py`` takes the same option) together, so the unit tests
keep passing; ``deploy/kubernetes/rules.py`` and ``dashboards/generate.py`` take
``--runbook-url-base`` too. ``--check`` exits 1 unless every shipped ``runbook_url`` uses
the default base.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_RUNBOOK_URL_BASE = "docs/"
# The rules files and the promtool tests that check their annotations.
FILES = (
    "rules.yml",
    "tests.yml",
    "slo-rules.yml",
    "slo-tests-page.yml",
    "slo-tests-ticket.yml",
)
PAGES = ("runbook.md", "slo.md")
# `runbook_url: <base><page>#<anchor>`, in a rule's annotations or a test's expectation.
_LINE = re.compile(
    r"^(?P<key>[ \t]*runbook_url:[ \t]*)(?P<base>\S*?)(?P<page>"
    + "|".join(re.escape(p) for p in PAGES)
    + r")(?P<anchor>#[a-z0-9-]+)[ \t]*$",
    re.MULTILINE,
)


def normalized(base: str) -> str:
    """``base`` ending in exactly one ``/`` (the empty base stays empty)."""
    return base.rstrip("/") + "/" if base.strip("/") else base


def runbook_url(base: str, page: str, alert: str) -> str:
    """The runbook link of ``alert``, documented on ``page`` (runbook.md or slo.md)."""
    return f"{normalized(base)}{page}#{alert.lower()}"


def rewrite(text: str, base: str) -> str:
    """``text`` (a rules or promtool test file) with every runbook_url on ``base``."""
    base = normalized(base)
    return _LINE.sub(lambda m: f"{m['key']}{base}{m['page']}{m['anchor']}", text)


def urls(text: str) -> list[str]:
    """Every runbook_url of ``text`` that this tool recognises."""
    return [m["base"] + m["page"] + m["anchor"] for m in _LINE.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    """Write the rules files with ``--runbook-url-base``, or ``--check`` the shipped ones."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runbook-url-base",
        default=DEFAULT_RUNBOOK_URL_BASE,
        help="URL of the docs/ directory, rendered (default: %(default)s, relative)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="where the rewritten files go (the shipped ones stay as they are)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 unless the shipped files use the default"
    )
    args = parser.parse_args(argv)
    if not args.check and args.output_dir is None:
        parser.error("--output-dir is required (or --check)")
    stale = 0
    for name in FILES:
        text = (HERE / name).read_text()
        if args.check:
            if rewrite(text, DEFAULT_RUNBOOK_URL_BASE) != text:
                print(f"alerting/{name}: a runbook_url is not on the default base", file=sys.stderr)
                stale = 1
            continue
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / name).write_text(rewrite(text, args.runbook_url_base))
    return stale


if __name__ == "__main__":
    sys.exit(main())
