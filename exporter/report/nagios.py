"""``--output nagios``: the Monitoring Plugins format (status line, long output, perfdata)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..results import ProbeResult

if TYPE_CHECKING:
    from ..results import CanaryResult
    from ..results.domain import DomainResult


from .common import (
    Canaries,
    canary_findings,
    canary_text,
    cert_days,
    display_name,
    mailbox_text,
)


@dataclass(frozen=True, slots=True)
class NagiosThresholds:
    """Alert when the certificate has fewer days left than ``*_cert_days`` (ranges ``14:``
    and ``7:``) or the probe took longer than ``*_latency`` seconds (ranges ``5`` and
    ``10``), as the Monitoring Plugins guidelines define ranges."""

    warning_cert_days: float = 14
    critical_cert_days: float = 7
    warning_latency: float = 5.0
    critical_latency: float = 10.0


OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
_STATE = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# Problems named in the status line before "and N more": the line stays readable on a
# dashboard, and the long output below it lists them all.
_SUMMARY_PROBLEMS = 3


@dataclass(frozen=True, slots=True)
class _Verdict:
    """One target's or domain's state, who it is, and what is wrong (each problem names
    the threshold or check that made it so), then the other facts."""

    state: int
    name: str
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    sep: str = ", "  # "; " between domain findings, which hold commas themselves

    def text(self) -> str:
        return f"{self.name}: " + self.sep.join((*self.problems, *self.notes))


def nagios(
    results: Sequence[ProbeResult],
    th: NagiosThresholds,
    canaries: Canaries | None = None,
    domains: Sequence[DomainResult] = (),
) -> tuple[str, int]:
    """Output of a plugin by the Monitoring Plugins development guidelines: a status line
    that says what is wrong and where, perfdata ``'label'=value[UOM];warn;crit;min;max``
    with one unique label per expanded target (MX host, address, address family) and
    thresholds in range syntax, then one line per target (and per checked domain).
    Returns the text and the exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)."""
    if not results:
        return "SMTP UNKNOWN - no targets configured\n", UNKNOWN
    service = _service(results)
    canaries = canaries or {}
    names = _unique_names(results)
    verdicts = [
        _nagios_state(r, th, canaries.get((r.target, r.module), ()), name)
        for r, name in zip(results, names, strict=True)
    ]
    domain_verdicts = [_nagios_domain_state(d) for d in domains]
    every = verdicts + domain_verdicts
    worst = max(v.state for v in every)
    perf: list[str] = []
    for r, name in zip(results, names, strict=True):
        prefix = "" if len(results) == 1 else f"{name} "
        perf.append(
            _perfdata(
                f"{prefix}time",
                f"{r.duration_seconds:.6f}s",
                _num(th.warning_latency),
                _num(th.critical_latency),
                "0",
            )
        )
        if r.mailbox is not None:
            perf.append(_perfdata(f"{prefix}messages", str(r.mailbox.messages), lo="0"))
        days = cert_days(r)
        if days is not None:
            perf.append(
                _perfdata(
                    f"{prefix}cert_days",
                    f"{days:.1f}",
                    f"{_num(th.warning_cert_days)}:",
                    f"{_num(th.critical_cert_days)}:",
                )
            )
    if len(every) == 1:
        summary = every[0].text()
    else:
        bad = sum(1 for v in verdicts if v.state != OK)
        summary = f"{len(results) - bad} of {len(results)} targets OK"
        if domains:
            bad_domains = sum(1 for v in domain_verdicts if v.state != OK)
            summary += f", {len(domains) - bad_domains} of {len(domains)} domains OK"
        failing = sorted((v for v in every if v.state != OK), key=lambda v: -v.state)
        if failing:
            shown = [f"{v.name}: {v.problems[0]}" for v in failing[:_SUMMARY_PROBLEMS]]
            more = len(failing) - _SUMMARY_PROBLEMS
            summary += "; " + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
    lines = [f"{service} {_STATE[worst]} - {_plain_text(summary)} | {' '.join(perf)}"]
    if len(every) > 1:
        lines += [f"[{_STATE[v.state]}] {_plain_text(v.text())}" for v in every]
    return "\n".join(lines) + "\n", worst


def _nagios_state(
    r: ProbeResult, th: NagiosThresholds, routes: tuple[CanaryResult, ...], name: str
) -> _Verdict:
    if r.failure is not None:
        f = r.failure
        return _Verdict(CRITICAL, name, (f"{f.phase} failed: {f.kind}: {f.detail}",))
    problems: list[tuple[int, str]] = []
    notes: list[str] = []
    seconds = r.duration_seconds
    took = f"probe took {seconds:.3f}s"
    # Range "5" alerts above 5 (guidelines, threshold format): > here, not >=.
    if seconds > th.critical_latency:
        problems.append((CRITICAL, f"{took} (critical above {_num(th.critical_latency)}s)"))
    elif seconds > th.warning_latency:
        problems.append((WARNING, f"{took} (warning above {_num(th.warning_latency)}s)"))
    else:
        notes.append(f"{seconds:.3f}s")
    days = cert_days(r)
    if days is not None:
        if days >= 0:
            left = f"certificate expires in {math.floor(days)} days"
        elif days > -1:
            left = "certificate expired less than a day ago"
        else:
            left = f"certificate expired {math.floor(-days)} days ago"
        # Range "14:" alerts below 14.
        if days < th.critical_cert_days:
            problems.append(
                (CRITICAL, f"{left} (critical below {_num(th.critical_cert_days)} days)")
            )
        elif days < th.warning_cert_days:
            problems.append((WARNING, f"{left} (warning below {_num(th.warning_cert_days)} days)"))
        else:
            notes.append(left)
    if r.auth.attempted:
        notes.append(f"AUTH {r.auth.mechanism} ok")
    if r.mailbox is not None:
        notes.append(mailbox_text(r))
    for finding in r.posture.findings:
        # An open relay is abused within hours; the other findings weaken, not break.
        state = CRITICAL if finding.startswith("open relay") else WARNING
        problems.append((state, finding))
    for canary in routes:
        via = "" if canary.route == "default" else f" ({canary.route})"
        if canary.success:
            notes.append(f"canary{via} {canary_text(canary)}")
            # Delivered, but junked or not authenticated: it works, and is about to stop.
            problems += [(WARNING, f"canary{via} {f}") for f in canary_findings(canary)]
        else:
            # Unreadable mailbox: the check is blind, which is not a lost message.
            blind = canary.send_ok and canary.imap_failure is not None
            problems.append((WARNING if blind else CRITICAL, f"canary{via} {canary.reason}"))
    problems.sort(key=lambda p: -p[0])  # the worst first: it is the one the summary shows
    state = max((s for s, _ in problems), default=OK)
    return _Verdict(state, name, tuple(text for _, text in problems), tuple(notes))


def _nagios_domain_state(d: DomainResult) -> _Verdict:
    """A failed check or a finding that stops mail (a DNSBL listing, a DANE mismatch, an MX
    an enforced MTA-STS policy does not name, a DKIM key that is missing or unusable, an
    address without forward-confirmed reverse DNS) is CRITICAL; other findings (a weak or
    testing DKIM key, a greeting name that is not the PTR name) WARNING."""
    if not d.success:
        return _Verdict(CRITICAL, d.domain, (f"domain check failed: {d.error}",))
    blocking = any(b.listed for b in d.dnsbl or ()) or any(h.match is False for h in d.dane or ())
    # Answered lookups only: a DNS error is a finding (WARNING), not a known-bad record.
    blocking = blocking or any(k.error is None and not k.valid for k in d.dkim or ())
    blocking = blocking or any(
        p.error is None and not p.forward_confirmed for p in d.reverse_dns or ()
    )
    m = d.mta_sts
    if m is not None and m.valid and m.mode == "enforce":
        blocking = blocking or any(not ok for _, ok in m.mx_match)
    state = CRITICAL if blocking else (WARNING if d.findings else OK)
    found = tuple(f"{f.check}: {f.reason}" for f in d.findings)
    return _Verdict(state, d.domain, found, () if found else ("no findings",), "; ")


def _service(results: Sequence[ProbeResult]) -> str:
    """The status line's service word: the protocol all targets share (SMTP, IMAP, POP3),
    ``MAIL`` for a mix."""
    protocols = {r.protocol for r in results}
    return protocols.pop().value.upper() if len(protocols) == 1 else "MAIL"


def _unique_names(results: Sequence[ProbeResult]) -> list[str]:
    """What names each result in the output: the target, then what tells its expansions
    apart (MX host, address, address family), then the module where one target is probed
    by several; a running number only if all that still repeats."""
    names = [display_name(r) for r in results]
    counts = Counter(names)
    names = [f"{n} {r.module}" if counts[n] > 1 else n for n, r in zip(names, results, strict=True)]
    counts = Counter(names)
    seen: Counter[str] = Counter()
    out = []
    for n in names:
        seen[n] += 1
        out.append(f"{n} #{seen[n]}" if counts[n] > 1 else n)
    return out


def _perfdata(label: str, value: str, warn: str = "", crit: str = "", lo: str = "") -> str:
    """``'label'=value[UOM];[warn];[crit];[min];[max]``: the label quoted, a quote in it
    doubled, ``=`` (which would end the label) and ``|`` (which would end the output)
    replaced."""
    label = _plain_text(label.replace("=", "_").replace("'", "''"))
    return f"'{label}'={value};{warn};{crit};{lo};"


def _num(value: float) -> str:
    # Plain decimals: perfdata parsers do not read exponents (1e+06).
    return format(value, "f").rstrip("0").rstrip(".") or "0"


def _plain_text(text: str) -> str:
    # "|" starts the perfdata: free text from servers must not contain it.
    return text.replace("|", "/")
