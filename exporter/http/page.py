"""The landing page: every target, its state and recent history, as an HTML table.

Per target (an mx: target's hosts each on a row, one not looked up yet too): its module and
labels, whether it is up, when it was last probed and how long that took, the days left on
its certificate, what fails now (phase, kind, reason), the last failure with its time even
after the target recovered, the last results from the store's ring, and a link to probe it
now with ``debug=true`` (its transcript) when /probe would take it. Everything a server or a
config file wrote is escaped: a target named ``<script>`` is text.
"""

from __future__ import annotations

import html
import time
import urllib.parse
from collections.abc import Iterable

from .. import __version__
from ..config import Config, Target
from ..report.common import canaries_text, canary_findings, mailbox_text
from ..results import display_name
from ..store import Entry, Outcome, ResultStore

# The first four as they always were (tests/surfaces.py reads them); the rest after.
COLUMNS = (
    "target",
    "module",
    "status",
    "last probe",
    "probed",
    "cert days",
    "labels",
    "last failure",
    "recent",
    "debug",
)


def landing_page(store: ResultStore, config: Config | None = None, now: float | None = None) -> str:
    """The page for ``/``: one row per target (an mx: target not yet looked up, too).
    ``config``: the running one; its targets get a debug link (/probe always takes a
    target configured with its module). ``now``: unix seconds (tests fix it)."""
    now = time.time() if now is None else now
    configured = {(t.name, t.module.name) for t in config.targets} if config else set()
    rows = [
        _row(entry, now, (entry.target.name, entry.target.module.name) in configured)
        for entry in sorted(store.entries(), key=lambda e: (e.target.name, e.target.labels))
    ]
    # An mx: target has no entry until its MX records are looked up: list it anyway.
    for t in sorted(store.unexpanded(), key=lambda t: t.name):
        cells = [_e(t.name), _e(t.module.name), "pending", "MX lookup not run yet"]
        cells += ["", "", "", "", "", _link(t) if (t.name, t.module.name) in configured else ""]
        rows.append(_tr("pending", cells))
    empty = f"<tr><td colspan={len(COLUMNS)}>no targets</td></tr>"
    return _PAGE.format(
        version=__version__,
        head="".join(f"<th>{c}</th>" for c in COLUMNS),
        rows="\n".join(rows) or empty,
    )


def _row(entry: Entry, now: float, linked: bool) -> str:
    r = entry.result
    target = entry.target
    probed = days = ""
    if r is None:
        status, detail = "pending", ""
    else:
        probed = f"{_ago(now - r.started_at)} ago"
        expires = r.tls.earliest_not_after if r.tls is not None else None
        if expires is not None:
            days = f"{(expires - now) / 86400:.0f}"
        if r.failure is None:
            status, detail = "up", f"{r.duration_seconds * 1000:.0f} ms"
            if r.mailbox is not None:  # IMAP, POP3: what the mailbox holds
                detail += f", {r.protocol.value.upper()} {mailbox_text(r)}"
        else:
            f = r.failure
            status, detail = "down", f"{f.phase}: {f.kind}: {f.detail}"
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
    lf = entry.last_failure
    cells = [
        _e(display_name(target.name, target.labels)),
        _e(target.module.name),
        status,
        _e(detail),
        probed,
        days,
        _e(" ".join(f"{k}={v}" for k, v in target.labels)) if target.labels else "",
        _failure_text(lf, now) if lf is not None else "",
        _ring(entry.recent, now),
        _link(target) if linked else "",
    ]
    return _tr(status, cells)


def _tr(cls: str, cells: Iterable[str]) -> str:
    return f"<tr class={cls}><td>" + "</td><td>".join(cells) + "</td></tr>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _failure_text(o: Outcome, now: float) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(o.started_at))
    return _e(f"{when} ({_ago(now - o.started_at)} ago) {o.phase}/{o.kind}: {o.detail}")


def _ring(recent: tuple[Outcome, ...], now: float) -> str:
    """The ring, oldest first: a mark per result, a failure's phase and kind on hover."""
    marks = []
    for o in recent:
        if o.phase is None:
            marks.append("&#x2713;")
        else:
            title = _e(f"{_ago(now - o.started_at)} ago: {o.phase}/{o.kind}")
            marks.append(f'<span class=x title="{title}">&#x2717;</span>')
    return "".join(marks)


def _link(target: Target) -> str:
    query = urllib.parse.urlencode(
        {"target": target.name, "module": target.module.name, "debug": "true"}
    )
    return f'<a href="probe?{_e(query)}">probe now</a>'


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>SMTP health exporter</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 10px;text-align:left}}
.up td:nth-child(3){{color:green}} .down td:nth-child(3){{color:#b00}} .x{{color:#b00}}</style>
</head>
<body><h1>SMTP health exporter</h1><p>version {version} &middot;
<a href="metrics">metrics</a> &middot; <a href="sd">targets (http_sd)</a> &middot;
<a href="-/healthy">healthy</a> &middot; <a href="-/ready">ready</a></p>
<table><tr>{head}</tr>
{rows}
</table></body></html>
"""
