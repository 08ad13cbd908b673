"""The failure-surface matrix (issue #13): every failure scenario, against real servers, seen
on every surface the exporter has.

Each scenario is one row of ``SCENARIOS``: how to build its target and module against a real
server, what must fail (phase and kind, or the canary) and which alerts must fire. The
surfaces, each a test parametrised over the rows:

- ``/metrics`` of ONE running exporter scheduling every scenario's target at once;
- ``/probe?target=&module=`` of that exporter, for the same target and module;
- ``--once`` (a subprocess, a config file holding that target only) as table, JSON and
  Nagios, with the exit code;
- the landing page ``/``;
- the alerts a real Prometheus, scraping that exporter with ``alerting/rules.yml`` loaded,
  raises for the target: exactly the row's, so a healthy target raises none. The rules
  wait 5 to 90 minutes (``for:``) before firing; the test loads a copy with ``for: 0s`` so
  an alert fires at the first evaluation that sees its condition (same expressions, labels
  and annotations as shipped).

Everything is observed once, in a module-scoped fixture (one exporter, one Prometheus, the
``--once`` runs in a few threads), then each test checks one (row, surface) cell. The matrix
of what every surface showed is printed (``pytest -s``) and written to
``failure-matrix.md`` in the fixture's tmp dir.

Adding a scenario is adding a row: a unique ``name`` (it is also the module's name, which is
how every surface is searched for the row), a ``setup`` building the target and module from
the running servers (``Servers``: Postfix + Dovecot, a tarpit, a refused port, a DNS server
serving the rows' ``zone`` and never answering their ``dns_drop`` names, which the config
names as the exporter's resolver), the expected ``failed`` phase and kind or
``canary_lost``, and the ``alerts`` that must fire, exactly. A surface that does not show a
row's failure today is named in the row's ``not_shown``, with the reason: that cell is
``xfail(strict=True)``, so it turns into a failure as soon as the surface starts showing it
and the entry can go.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.embedded import EmbeddedSMTPServer
from exporter.results import PHASES_OF, Phase, Protocol

from .conftest import _in_ci
from .exporter_harness import RunningExporter, wait_for
from .servers.dns import DNSServer
from .servers.fault import FaultServer
from .servers.mailstack import MailStack
from .servers.prometheus import Prometheus, prometheus, prometheus_available
from .surfaces import (
    ALERTS,
    LANDING,
    METRICS,
    ONCE_FORMATS,
    ONCE_JSON,
    ONCE_NAGIOS,
    ONCE_TABLE,
    PROBE,
    SURFACES,
    AlertSeen,
    LandingRow,
    OnceRun,
    Sample,
    active_alerts,
    alerts_seen,
    json_objects,
    landing_rows,
    markdown_table,
    metrics_summary,
    once_summary,
    parse_metrics,
    rules_firing_at_once,
    run_once,
    select,
    table_rows,
)

pytestmark = pytest.mark.postfix

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "alerting" / "rules.yml"
WRONG_PASSWORD = "not-the-Pa55word"  # checked never to show on any surface
# Scheduled probes: every target within its first interval, often enough for Prometheus to
# see each result several times, rarely enough to stay light on the shared machine.
INTERVAL = "8s"
# A module's whole-probe deadline (at most INTERVAL, as the config requires). A healthy
# probe of the local Postfix takes 0.1-0.3 s, but was seen taking 3.2 s on a busy 2-core
# machine; a healthy target timing out would raise an alert and fail its row.
TIMEOUT = "8s"
WAIT = 60.0  # generous bound on waiting for results and alerts to appear


@dataclass(frozen=True)
class Servers:
    """The real servers a scenario's target can point at."""

    stack: MailStack  # Postfix + Dovecot
    tarpit_port: int  # fault server that accepts and never greets
    closed_port: int  # bound, not listening: connect() is refused
    secrets: Mapping[str, Path]  # password files: "probe", "wrong", "canary"
    dns: DNSServer  # the exporter's resolver: serves every row's ``zone``
    open_relay_port: int  # aiosmtpd accepting RCPT TO any domain without AUTH


# A scenario's target ("host:port") and its module, as YAML data.
Setup = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Failed:
    """The probe fails in ``phase`` with ``kind``; the failure detail contains ``reason``."""

    phase: str
    kind: str
    reason: str = ""


@dataclass(frozen=True)
class Scenario:
    """One row of the matrix: a target and module against a real server, and what every
    surface must show for it."""

    name: str  # also the module name, so every series, row and alert of it names it
    setup: Callable[[Servers], Setup]
    failed: Failed | None = None  # None: the probe passes
    canary_lost: bool = False  # the canary is sent but never found over IMAP
    canary_blind: bool = False  # the canary is sent but its mailbox cannot be read
    alerts: frozenset[str] = frozenset()  # exactly the alerts that fire for the target
    not_shown: Mapping[str, str] = field(default_factory=dict)  # surface -> why not, today
    # DNS for ``mx:`` targets: zone lines (absolute names) and names never answered. The
    # rows share one DNS server, so each row uses names of its own.
    zone: str = ""
    dns_drop: tuple[str, ...] = ()
    dns_servfail: tuple[str, ...] = ()
    protocol: str = "smtp"  # imap, pop3: its series are imap_* / pop3_* (#18)

    @property
    def mailbox(self) -> bool:
        """An IMAP or POP3 row: its families, alerts and Nagios service are its own."""
        return self.protocol != "smtp"

    @property
    def down_alert(self) -> str:
        return "MailboxTargetDown" if self.mailbox else DOWN

    @property
    def failing(self) -> bool:
        return self.failed is not None or self.canary_lost or self.canary_blind

    @property
    def nagios(self) -> tuple[str, int]:
        """The Nagios state word and exit code: a mailbox the canary cannot read is a blind
        check (WARNING), not a lost message."""
        if self.failed is not None or self.canary_lost:
            return "CRITICAL", 2
        return ("WARNING", 1) if self.canary_blind else ("OK", 0)

    @property
    def expected(self) -> str:
        if self.failed is not None:
            return f"{self.failed.phase}/{self.failed.kind}"
        if self.canary_blind:
            return "canary mailbox unreadable"
        return "canary not delivered" if self.canary_lost else "passes"


def postfix(
    port: Callable[[MailStack], int],
    *,
    password: str = "probe",
    canary_to: str | None = None,
    imap_password: str = "canary",
    mx: str | None = None,
) -> Callable[[Servers], Setup]:
    """A submission module (STARTTLS, AUTH as ``probe``) against a Postfix port; with
    ``canary_to`` a canary looked for in the ``canary`` user's IMAP mailbox; with ``mx``
    the target is ``mx:<mx>:<port>``, its hosts found in the rows' DNS (their certificate
    checked against ``localhost``, the name on Postfix's certificate)."""

    def build(s: Servers) -> Setup:
        module: dict[str, Any] = {
            "tls": "starttls",
            "tls_ca_file": str(s.stack.ca_file),
            "timeout": TIMEOUT,
            "auth": {"username": "probe", "password_file": str(s.secrets[password])},
        }
        if canary_to is not None:
            module["canary"] = {
                "from": "probe@localhost",
                "to": canary_to,
                # One canary per run of the exporter; found or not within 3 s.
                "interval": "1h",
                "timeout": "3s",
                "imap": {
                    "host": s.stack.host,
                    "port": s.stack.imaps_port,
                    "tls": "implicit",
                    "tls_ca_file": str(s.stack.ca_file),
                    "username": "canary",
                    "password_file": str(s.secrets[imap_password]),
                    "poll_interval": "200ms",
                },
            }
        if mx is not None:
            module["tls_server_name"] = "localhost"
            return f"mx:{mx}:{port(s.stack)}", module
        return f"{s.stack.host}:{port(s.stack)}", module

    return build


def dovecot(
    protocol: str,
    *,
    implicit: bool,
    cert: str = "good",
    password: str = "probe",
    port: Callable[[Servers], int] | None = None,
) -> Callable[[Servers], Setup]:
    """An IMAP or POP3 module (#18) logging in as ``probe`` to the Dovecot listener with
    STARTTLS / STLS or implicit TLS presenting certificate ``cert`` (``good``, ``expired``,
    ``wronghost``), or to ``port`` instead."""

    def build(s: Servers) -> Setup:
        module: dict[str, Any] = {
            "protocol": protocol,
            "tls": "implicit" if implicit else "starttls",
            "tls_ca_file": str(s.stack.ca_file),
            "timeout": TIMEOUT,
            "auth": {"username": "probe", "password_file": str(s.secrets[password])},
        }
        where = port(s) if port else s.stack.mailbox_port(protocol, implicit, cert)
        return f"{s.stack.host}:{where}", module

    return build


def local(port: Callable[[Servers], int], timeout: str = TIMEOUT) -> Callable[[Servers], Setup]:
    """A plain STARTTLS module without AUTH against a port of our own."""
    return lambda s: (f"127.0.0.1:{port(s)}", {"tls": "starttls", "timeout": timeout})


def mx_domain(domain: str) -> Callable[[Servers], Setup]:
    """``mx:<domain>`` with a plain module: what the rows' DNS answers for it decides."""
    return lambda s: (f"mx:{domain}", {"tls": "starttls", "timeout": TIMEOUT})


def open_relay(s: Servers) -> Setup:
    """aiosmtpd, which accepts RCPT TO any domain without AUTH, with the relay test and
    ``fail_on_findings``: every protocol phase passes, the posture check fails the probe."""
    relay = {"from": "probe@example.com", "to": "victim@example.org"}
    posture = {"relay_test": relay, "fail_on_findings": True}
    return f"127.0.0.1:{s.open_relay_port}", {"tls": "none", "timeout": TIMEOUT, "posture": posture}


MX_ALERT = "SMTPMXLookupFailing"
# Alerts about a failed probe phase, whose description names the phase; the others (MX
# lookup, null MX, findings) describe their own cause.
PHASE_NAMING = frozenset(
    {
        "SMTPTargetDown",
        "SMTPAuthFailing",
        "SMTPTLSNotVerified",
        "MailboxTargetDown",
        "MailboxAuthFailing",
        "MailboxTLSNotVerified",
    }
)


DOWN = "SMTPTargetDown"
# The probe's phases in the order they run (the enum's order, mail transaction steps left
# out): a failure in one means none after it ran.
PHASES = tuple(p.value for p in Phase if p not in (Phase.MAIL, Phase.RCPT, Phase.DATA))
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("healthy", postfix(lambda st: st.submission_port)),
    Scenario(
        "healthy_mx",
        postfix(lambda st: st.submission_port, mx="mail.test"),
        zone="mail.test. 60 IN MX 10 mx1.mail.test.\nmx1.mail.test. 60 IN A 127.0.0.1\n",
    ),
    Scenario(
        "refused",
        local(lambda s: s.closed_port),
        Failed("connect", "connection_refused"),
        alerts=frozenset({DOWN}),
    ),
    Scenario(
        "tarpit",
        local(lambda s: s.tarpit_port, timeout="2s"),
        Failed("greeting", "timeout"),
        alerts=frozenset({DOWN}),
    ),
    Scenario(
        "tls_expired",
        postfix(lambda st: st.expired_port),
        Failed("tls_handshake", "tls_verify", "expired"),
        alerts=frozenset(
            {
                DOWN,
                "SMTPTLSNotVerified",
                "SMTPCertificateExpiringSoon",
                "SMTPCertificateExpiringCritical",
            }
        ),
    ),
    Scenario(
        "tls_wrong_host",
        postfix(lambda st: st.wronghost_port),
        Failed("tls_handshake", "tls_hostname", "does not match"),
        alerts=frozenset({DOWN, "SMTPTLSHostnameMismatch"}),
    ),
    Scenario(
        "auth_refused",
        postfix(lambda st: st.submission_port, password="wrong"),
        Failed("auth", "reply", "535"),
        alerts=frozenset({DOWN, "SMTPAuthFailing"}),
    ),
    Scenario(
        "canary_lost",
        # Delivered to probe@, looked for in canary@'s mailbox: it never shows up there.
        postfix(lambda st: st.submission_port, canary_to="probe@localhost"),
        canary_lost=True,
        alerts=frozenset({"SMTPCanaryNotDelivered"}),
    ),
    Scenario(
        "canary_imap_refused",
        # Delivered where it is looked for, but the IMAP login is refused: unknown, not lost.
        postfix(lambda st: st.submission_port, canary_to="canary@localhost", imap_password="wrong"),
        canary_blind=True,
        alerts=frozenset({"SMTPCanaryIMAPAccessFailed"}),
    ),
    Scenario(
        "mx_nxdomain",
        mx_domain("gone.test"),  # in no zone: NXDOMAIN
        Failed("mx_lookup", "nxdomain", "does not exist"),
        alerts=frozenset({MX_ALERT}),
    ),
    Scenario(
        "mx_servfail",
        mx_domain("broken.test"),
        Failed("mx_lookup", "dns", "SERVFAIL"),
        alerts=frozenset({MX_ALERT}),
        dns_servfail=("broken.test",),
    ),
    Scenario(
        "mx_timeout",
        mx_domain("silent.test"),
        Failed("mx_lookup", "timeout"),
        alerts=frozenset({MX_ALERT}),
        dns_drop=("silent.test",),
    ),
    Scenario(
        "mx_null",
        mx_domain("nomail.test"),
        Failed("mx_lookup", "null_mx", "accepts no mail"),
        alerts=frozenset({"SMTPNullMX"}),
        zone="nomail.test. 60 IN MX 0 .\n",
    ),
    Scenario(
        "open_relay",
        open_relay,
        Failed("posture", "finding", "open relay"),
        alerts=frozenset({DOWN, "SMTPOpenRelay"}),
    ),
    # IMAP and POP3 against the real Dovecot (#18): 143-style STARTTLS, 993-style implicit
    # TLS, 110-style STLS, 995-style implicit TLS; wrong credentials, a closed port, the
    # expired and the wrong-host certificate.
    Scenario("imap_healthy", dovecot("imap", implicit=False), protocol="imap"),
    Scenario("imaps_healthy", dovecot("imap", implicit=True), protocol="imap"),
    Scenario("pop3_healthy", dovecot("pop3", implicit=False), protocol="pop3"),
    Scenario("pop3s_healthy", dovecot("pop3", implicit=True), protocol="pop3"),
    Scenario(
        "imap_auth_refused",
        dovecot("imap", implicit=True, password="wrong"),
        Failed("auth", "reply", "AUTHENTICATIONFAILED"),
        protocol="imap",
        alerts=frozenset({"MailboxTargetDown", "MailboxAuthFailing"}),
    ),
    Scenario(
        "pop3_auth_refused",
        dovecot("pop3", implicit=False, password="wrong"),
        Failed("auth", "reply", "-ERR"),
        protocol="pop3",
        alerts=frozenset({"MailboxTargetDown", "MailboxAuthFailing"}),
    ),
    Scenario(
        "pop3_refused",
        dovecot("pop3", implicit=True, port=lambda s: s.closed_port),
        Failed("connect", "connection_refused"),
        protocol="pop3",
        alerts=frozenset({"MailboxTargetDown"}),
    ),
    Scenario(
        "imap_tls_expired",
        dovecot("imap", implicit=True, cert="expired"),
        Failed("tls_handshake", "tls_verify", "expired"),
        protocol="imap",
        alerts=frozenset(
            {
                "MailboxTargetDown",
                "MailboxTLSNotVerified",
                "MailboxCertificateExpiringSoon",
                "MailboxCertificateExpiringCritical",
            }
        ),
    ),
    Scenario(
        "pop3_tls_wrong_host",
        dovecot("pop3", implicit=False, cert="wronghost"),
        Failed("tls_handshake", "tls_hostname", "does not match"),
        protocol="pop3",
        alerts=frozenset({"MailboxTargetDown", "MailboxTLSHostnameMismatch"}),
    ),
)


# --------------------------------------------------------------------------- observation


@dataclass(frozen=True)
class Observed:
    """What every surface showed, captured once for all scenarios."""

    targets: dict[str, str]  # scenario -> target as configured
    metrics_text: str
    metrics: list[Sample]
    probes: dict[str, tuple[int, str]]  # scenario -> /probe status and body
    once: dict[tuple[str, str], OnceRun]  # (scenario, surface) -> run
    landing_page: str
    landing: list[LandingRow]
    alerts: set[AlertSeen]
    # (alertname, module) -> description, of the alerts active when observed
    descriptions: dict[tuple[str, str], str]
    secrets: tuple[str, ...]


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port held bound but not listening, so nobody else takes it meanwhile: Linux answers
    a SYN to it with RST, which the probe sees as connection refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def write_config(path: Path, rows: list[tuple[Scenario, Setup]], dns: DNSServer) -> Path:
    """The exporter's config for ``rows``: one module per scenario, named after it."""
    data = {
        "dns": {"nameservers": [f"{dns.address}:{dns.port}"], "timeout": "2s"},
        "modules": {sc.name: module for sc, (_, module) in rows},
        "targets": [
            {"target": target, "module": sc.name, "interval": INTERVAL} for sc, (target, _) in rows
        ],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def all_reported(exp: RunningExporter) -> bool:
    samples = parse_metrics(exp.get("/metrics")[1])
    return all(
        select(samples, f"{sc.protocol}_probe_success", module=sc.name)
        and (not sc.canary_lost or select(samples, "smtp_canary_delivered", module=sc.name))
        and (not sc.canary_blind or select(samples, "smtp_canary_imap_success", module=sc.name))
        for sc in SCENARIOS
    )


def alerts_settled(prom: Prometheus) -> bool:
    """Every expected alert seen, and the passing targets' results evaluated by the rules at
    several scrapes, so an alert they raise would have been seen too."""
    expected = {(a, sc.name) for sc in SCENARIOS for a in sc.alerts}
    seen = {(a.alertname, a.module) for a in alerts_seen(prom)}
    passing = "|".join(sc.name for sc in SCENARIOS if not sc.failing)
    success = "|".join(f"{p}_probe_success" for p in Protocol)
    scrapes = prom.query(
        f"min(count_over_time({{__name__=~'{success}',module=~'{passing}'}}[10m]))"
    )
    return expected <= seen and bool(scrapes) and float(scrapes[0]["value"][1]) >= 5


@pytest.fixture(scope="module")
def observed(mailstack: MailStack, tmp_path_factory: pytest.TempPathFactory) -> Observed:
    reason = prometheus_available()
    if reason:
        if _in_ci():
            pytest.fail(f"{reason} (CI is set)", pytrace=False)
        pytest.skip(f"SKIPPING failure matrix -- {reason}")
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("matrix")
    passwords = {
        "probe": mailstack.users["probe"],
        "canary": mailstack.users["canary"],
        "wrong": WRONG_PASSWORD,
    }
    secrets = {}
    for name, value in passwords.items():
        secrets[name] = tmp / f"{name}.password"
        secrets[name].write_text(value + "\n")
    zone = "".join(sc.zone for sc in SCENARIOS)
    drop = [name for sc in SCENARIOS for name in sc.dns_drop]
    servfail = [name for sc in SCENARIOS for name in sc.dns_servfail]
    with contextlib.ExitStack() as stack:
        tarpit = stack.enter_context(FaultServer("tarpit_greeting"))
        dns = stack.enter_context(DNSServer(zone, drop=drop, servfail=servfail))
        relay = EmbeddedSMTPServer(tls="none", users={}).start()
        stack.callback(relay.stop)
        servers = Servers(
            mailstack, tarpit.port, stack.enter_context(closed_port()), secrets, dns, relay.port
        )
        rows = [(sc, sc.setup(servers)) for sc in SCENARIOS]
        exp = RunningExporter(write_config(tmp / "all.yml", rows, dns)).start()
        stack.callback(exp.stop)
        pool = stack.enter_context(ThreadPoolExecutor(4))
        rules = rules_firing_at_once(RULES, tmp / "rules.yml")
        scrape = (
            f"  - job_name: smtp\n    static_configs:\n      - targets: ['127.0.0.1:{exp.port}']\n"
        )
        prom = stack.enter_context(prometheus(tmp / "prom", scrape, (rules,)))
        # Both waits are bounded; on a timeout the cells missing something fail on their own.
        wait_for(lambda: all_reported(exp), WAIT)
        # The --once runs (three per row) once the scheduled canaries are done: dozens of
        # interpreters starting beside them made the canary's last poll, which keeps 0.25 s
        # for itself, miss its deadline (seen three runs in a row with the IMAP/POP3 rows).
        once = {
            (sc.name, surface): pool.submit(
                run_once, write_config(tmp / f"{sc.name}.yml", [(sc, setup)], dns), fmt
            )
            for sc, setup in rows
            for surface, fmt in ONCE_FORMATS.items()
        }
        # /probe once every scheduled result is in: it answers with a configured target's
        # last canary too, and that canary runs once, after the first scheduled probe.
        probes = {
            sc.name: pool.submit(
                exp.get, "/probe?" + urllib.parse.urlencode({"target": target, "module": sc.name})
            )
            for sc, (target, _) in rows
        }
        metrics_text = exp.get("/metrics")[1]
        landing_page = exp.get("/")[1]
        wait_for(lambda: alerts_settled(prom), WAIT)
        result = Observed(
            targets={sc.name: target for sc, (target, _) in rows},
            metrics_text=metrics_text,
            metrics=parse_metrics(metrics_text),
            probes={name: f.result() for name, f in probes.items()},
            once={key: f.result() for key, f in once.items()},
            landing_page=landing_page,
            landing=landing_rows(landing_page),
            alerts=alerts_seen(prom),
            descriptions={
                (a["labels"]["alertname"], a["labels"].get("module", "")): " ".join(
                    a["annotations"].get("description", "").split()
                )
                for a in active_alerts(prom)
            },
            secrets=tuple(passwords.values()),
        )
    report = matrix(result)
    (tmp / "failure-matrix.md").write_text(report)
    took = time.monotonic() - started
    print(f"\nfailure-surface matrix, observed in {took:.1f}s ({tmp / 'failure-matrix.md'}):")
    print(report)
    return result


def matrix(o: Observed) -> str:
    """What each surface showed for each scenario, as a Markdown table."""
    rows = []
    for sc in SCENARIOS:
        status, body = o.probes[sc.name]
        probe = metrics_summary(parse_metrics(body) if status == 200 else [])
        landing = [f"{r.status}: {r.detail}" for r in o.landing if r.module == sc.name]
        alerts = sorted(f"{a.alertname} ({a.state})" for a in o.alerts if a.module == sc.name)
        cells = {
            METRICS: metrics_summary(o.metrics, module=sc.name),
            PROBE: f"HTTP {status} {probe}",
            LANDING: "; ".join(landing) or "(no row)",
            ALERTS: ", ".join(alerts) or "none",
        }
        cells |= {s: once_summary(o.once[sc.name, s], sc.name) for s in ONCE_FORMATS}
        rows.append([sc.name, sc.expected, *(cells[s] for s in SURFACES)])
    said = [[module, name, text] for (name, module), text in sorted(o.descriptions.items())]
    return (
        markdown_table(["scenario", "expected", *SURFACES], rows)
        + "\nWhat the alerts said (description annotation):\n\n"
        + markdown_table(["scenario", "alert", "description"], said, width=400)
    )


# --------------------------------------------------------------------------- the checks


def cells(surface: str) -> list[Any]:
    """One test parameter per scenario, xfail(strict) where the surface does not show it."""
    return [
        pytest.param(
            sc,
            id=sc.name,
            marks=[pytest.mark.xfail(strict=True, reason=sc.not_shown[surface])]
            if surface in sc.not_shown
            else [],
        )
        for sc in SCENARIOS
    ]


def check_samples(sc: Scenario, samples: list[Sample], **labels: str) -> None:
    """The probe's and canary's series show the scenario's outcome (nothing for the rest).
    An ``mx:`` target has a set of series per MX host; each must show it. An IMAP or POP3
    row's are its own families (``imap_*``, ``pop3_*``), and no ``smtp_*`` series."""
    p = sc.protocol
    success = [s.value for s in select(samples, f"{p}_probe_success", **labels)]
    assert success and set(success) == {0 if sc.failed else 1}, success
    if sc.mailbox:
        assert not [
            s for s in samples if s.name.startswith("smtp_") and s.labels.get("module") == sc.name
        ], sc.name
        # A passing login opened the mailbox: its count is there.
        messages = select(samples, f"{p}_mailbox_messages", **labels)
        assert bool(messages) == (not sc.failed), messages
    failed = {
        (s.labels["phase"], s.labels["kind"])
        for s in select(samples, f"{p}_probe_failed_phase", **labels)
        if s.value == 1
    }
    assert failed == ({(sc.failed.phase, sc.failed.kind)} if sc.failed else set())
    # An SMTP failure carries the last reply code: the refusal's own for kind reply, none
    # when the server never answered; after a success, none at all. (IMAP and POP3 replies
    # have no codes: their text is in --once.)
    codes = {
        s.labels["reply_code"]
        for s in select(samples, "smtp_probe_failed_phase", **labels)
        if s.value == 1
    }
    if p != "smtp" or sc.failed is None:
        assert codes == set(), codes
    elif sc.failed.kind == "reply":
        assert codes == {sc.failed.reason}, codes
    elif sc.failed.phase in ("connect", "greeting", "mx_lookup"):
        assert codes == {""}, codes
    delivered = [s.value for s in select(samples, "smtp_canary_delivered", **labels)]
    assert (0 in delivered) == sc.canary_lost, delivered
    imap = [s.value for s in select(samples, "smtp_canary_imap_success", **labels)]
    assert (0 in imap) == sc.canary_blind, imap
    if sc.canary_blind:  # unknown, not lost: no value at all
        assert delivered == [], delivered
    if sc.failed is not None:
        # Phases the probe never reached have no value (#13.4).
        # (IMAP and POP3 in their order; with implicit TLS the handshake runs before the
        # greeting, so only the phases listed after it are checked.)
        order = PHASES if not sc.mailbox else tuple(x.value for x in PHASES_OF[Protocol(p)])
        after = order[order.index(sc.failed.phase) + 1 :] if sc.failed.phase in order else ()
        ran = {
            s.labels["phase"]
            for s in select(samples, f"{p}_probe_phase_duration_seconds", **labels)
        }
        assert not ran & set(after), (sc.failed.phase, sorted(ran))
        if "auth" in after:
            assert not select(samples, f"{p}_auth_success", **labels)


@pytest.mark.parametrize("sc", cells(METRICS))
def test_metrics(observed: Observed, sc: Scenario) -> None:
    check_samples(sc, observed.metrics, module=sc.name, target=observed.targets[sc.name])


@pytest.mark.parametrize("sc", cells(PROBE))
def test_probe_endpoint(observed: Observed, sc: Scenario) -> None:
    status, body = observed.probes[sc.name]
    assert status == 200, body
    check_samples(sc, parse_metrics(body))


@pytest.mark.parametrize("sc", cells(ONCE_TABLE))
def test_once_table(observed: Observed, sc: Scenario) -> None:
    run = observed.once[sc.name, ONCE_TABLE]
    assert run.code == (1 if sc.failing else 0), run.stdout + run.stderr
    rows = table_rows(run.stdout, sc.name)
    assert rows, run.stdout
    for row in rows:
        assert row["TARGET"].split()[0] == observed.targets[sc.name], row
        assert row["RESULT"] == ("FAIL" if sc.failed else "ok"), row
        if sc.mailbox:  # its protocol and, once logged in, the mailbox's count
            assert row["PROTO"] == sc.protocol, row
            assert ("message" in row["MAILBOX"]) == (not sc.failed), row
        if sc.failed:
            assert row["FAILURE"].startswith(f"{sc.failed.phase}: {sc.failed.kind}: "), row
            assert sc.failed.reason in row["FAILURE"], row
        assert (row.get("CANARY") == "NOT delivered") == sc.canary_lost, row
        assert (row.get("CANARY") == "FAIL imap login") == sc.canary_blind, row
        assert (row["FAILURE"] == "-") == (not sc.failing), row


@pytest.mark.parametrize("sc", cells(ONCE_JSON))
def test_once_json(observed: Observed, sc: Scenario) -> None:
    run = observed.once[sc.name, ONCE_JSON]
    assert run.code == (1 if sc.failing else 0), run.stdout + run.stderr
    objs = json_objects(run.stdout, sc.name)
    assert objs, run.stdout
    for obj in objs:
        assert obj["target"] == observed.targets[sc.name] and obj["success"] is (not sc.failed)
        assert obj["protocol"] == sc.protocol, obj
        if sc.mailbox:
            assert (obj["mailbox"] is not None) == (not sc.failed), obj["mailbox"]
        if sc.failed:
            assert (obj["failed_phase"], obj["failure_kind"]) == (sc.failed.phase, sc.failed.kind)
            assert sc.failed.reason in obj["reason"], obj["reason"]
        else:
            assert obj["failed_phase"] is None and obj["failure_kind"] is None
        canary = obj["canary"]
        if sc.canary_lost:
            assert canary["send_ok"] and canary["checked"] and canary["delivered"] is False
            assert not canary["success"] and canary["error"], canary
        elif sc.canary_blind:
            assert canary["send_ok"] and canary["imap_ok"] is False, canary
            assert canary["delivered"] is None and not canary["success"], canary
            assert canary["imap_failure"]["phase"] == "login", canary
        else:
            assert canary is None


@pytest.mark.parametrize("sc", cells(ONCE_NAGIOS))
def test_once_nagios(observed: Observed, sc: Scenario) -> None:
    run = observed.once[sc.name, ONCE_NAGIOS]
    target = observed.targets[sc.name]
    status = run.stdout.split(" | ")[0]
    # monitoring-plugins: 0 OK, 1 WARNING, 2 CRITICAL; one target, so the status line names it.
    word, code = sc.nagios
    assert run.code == code, run.stdout + run.stderr
    # The target first; an mx: target's probe also names the MX host it reached.
    assert re.match(rf"{sc.protocol.upper()} {word} - {re.escape(target)}( \S+)?: ", status), status
    if sc.failed:
        assert f"{sc.failed.phase} failed: {sc.failed.kind}: " in status, status
        assert sc.failed.reason in status, status
    assert ("canary" in status) == (sc.canary_lost or sc.canary_blind), status


@pytest.mark.parametrize("sc", cells(LANDING))
def test_landing_page(observed: Observed, sc: Scenario) -> None:
    rows = [r for r in observed.landing if r.module == sc.name]
    assert rows, observed.landing_page
    for row in rows:
        assert row.target.split()[0] == observed.targets[sc.name], row
        assert row.status == ("down" if sc.failing else "up"), row
        if sc.mailbox and not sc.failing:
            assert f"{sc.protocol.upper()} " in row.detail and "message" in row.detail, row
        if sc.failed:
            assert row.detail.startswith(f"{sc.failed.phase}: {sc.failed.kind}: "), row
            assert sc.failed.reason in row.detail, row


@pytest.mark.parametrize("sc", cells(ALERTS))
def test_alerts(observed: Observed, sc: Scenario) -> None:
    mine = {a for a in observed.alerts if a.module == sc.name}
    assert {a.alertname for a in mine} == sc.alerts, mine
    assert {a.target for a in mine} <= {observed.targets[sc.name]}, mine
    # What the alert says: every one names the target; those about a failed phase name it
    # (looked up by a query template for SMTPTargetDown, which names the kind too); a lost
    # canary's says it was not found, a blind one's where reading the mailbox failed.
    for name in sc.alerts:
        said = observed.descriptions.get((name, sc.name), "")
        assert observed.targets[sc.name] in said, (name, said)
        if sc.failed and name in PHASE_NAMING:
            assert f"phase {sc.failed.phase}" in said, (name, said)
        if sc.failed and name == sc.down_alert:
            assert f"phase {sc.failed.phase}, kind {sc.failed.kind}" in said, said
        if sc.failed and name == DOWN:
            assert f"phase {sc.failed.phase}, kind {sc.failed.kind}, last reply code " in said
        if sc.failed and sc.failed.kind == "reply" and name in (DOWN, "SMTPAuthFailing"):
            assert f"last reply code {sc.failed.reason}." in said, (name, said)
        if sc.canary_lost:
            assert "not found over IMAP" in said, (name, said)
        if sc.canary_blind:
            assert "in phase login" in said, (name, said)
        if name == MX_ALERT and sc.failed:
            assert f"kind {sc.failed.kind} " in said, said
        if name.startswith(("SMTPCertificateExpiring", "MailboxCertificateExpiring")) and sc.failed:
            assert " ago." in said and "-" not in said.split("expired")[-1], said


def test_scenario_names_are_unique() -> None:
    """Every surface is searched by module name: two rows sharing one would mix."""
    names = [sc.name for sc in SCENARIOS]
    assert len(names) == len(set(names)), names


def test_no_alert_outside_the_scenarios(observed: Observed) -> None:
    """No alert about the exporter itself, nor about a target no row describes."""
    names = {sc.name for sc in SCENARIOS}
    assert not {a for a in observed.alerts if a.module not in names}


def test_no_secret_on_any_surface(observed: Observed) -> None:
    texts = [observed.metrics_text, observed.landing_page]
    texts += [body for _, body in observed.probes.values()]
    texts += [run.stdout + run.stderr for run in observed.once.values()]
    for secret in observed.secrets:
        assert not [t for t in texts if secret in t], secret
