"""The landing page: every target, its module and its last result, as an HTML table."""

from __future__ import annotations

import html

from .. import __version__
from ..report.common import canaries_text, canary_findings
from ..results import display_name
from ..store import ResultStore


def landing_page(store: ResultStore) -> str:
    """The page for ``/``: one row per target (an mx: target not yet looked up, too)."""
    rows = []
    for entry in sorted(store.entries(), key=lambda e: e.target.name):
        r = entry.result
        if r is None:
            status, detail = "pending", ""
        elif r.success:
            status, detail = "up", f"{r.duration_seconds * 1000:.0f} ms"
        else:
            assert r.failure is not None
            status = "down"
            detail = f"{r.failure.phase}: {r.failure.kind}: {r.failure.detail}"
        canaries = entry.canaries
        failed = next((c for c in canaries if not c.success), None)
        if status == "up" and failed is not None:
            via = "" if failed.route == "default" else f" ({failed.route})"
            status, detail = "down", f"canary{via}: {failed.reason}"
        # Delivered, but junked or not authenticated: a finding, beside the status.
        findings = [
            f"{c.route}: {f}" if c.route != "default" else f
            for c in canaries
            for f in canary_findings(c)
        ]
        if status == "up" and canaries:
            detail += f"; canary {canaries_text(canaries)}"
        if findings:
            detail += "; finding: " + "; ".join(findings)
        name = display_name(entry.target.name, entry.target.labels)
        rows.append(
            f"<tr class={status}><td>{html.escape(name)}</td>"
            f"<td>{html.escape(entry.target.module.name)}</td><td>{status}</td>"
            f"<td>{html.escape(detail)}</td></tr>"
        )
    # An mx: target has no entry until its MX records are looked up: list it anyway.
    for t in sorted(store.unexpanded(), key=lambda t: t.name):
        rows.append(
            f"<tr class=pending><td>{html.escape(t.name)}</td>"
            f"<td>{html.escape(t.module.name)}</td><td>pending</td>"
            "<td>MX lookup not run yet</td></tr>"
        )
    return _PAGE.format(
        version=__version__, rows="\n".join(rows) or "<tr><td colspan=4>no targets</td></tr>"
    )


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>SMTP health exporter</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 10px;text-align:left}}
.up td:nth-child(3){{color:green}} .down td:nth-child(3){{color:#b00}}</style></head>
<body><h1>SMTP health exporter</h1><p>version {version} &middot;
<a href="metrics">metrics</a> &middot; <a href="-/healthy">healthy</a> &middot;
<a href="-/ready">ready</a></p>
<table><tr><th>target</th><th>module</th><th>status</th><th>last probe</th></tr>
{rows}
</table></body></html>
"""
