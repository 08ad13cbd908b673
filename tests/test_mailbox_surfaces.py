"""IMAP and POP3 targets on every surface (issue #18), from results built here.

These check the rendering (the ``imap_*`` / ``pop3_*`` families, their series count, the
``--once`` formats, the landing page) and the config's rules for the protocols. The real
clients against real Dovecot are checked on every surface by tests/test_failure_matrix.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import config, report
from exporter.config import AuthConfig, Module, Secret, Target, TLSMode
from exporter.errors import ConfigError
from exporter.http.page import landing_page
from exporter.metrics import METRICS, Renderer, render_probe
from exporter.results import (
    AuthInfo,
    CertInfo,
    Failure,
    FailureKind,
    MailboxInfo,
    Phase,
    PhaseTiming,
    ProbeResult,
    Protocol,
    TLSInfo,
)
from exporter.runner import Run
from exporter.store import Entry, ResultStore
from exporter.targets import static_expansion

from .exporter_harness import RunningExporter

NOW = time.time()
IMAP_STARTTLS = (
    Phase.RESOLVE,
    Phase.CONNECT,
    Phase.GREETING,
    Phase.CAPABILITY,
    Phase.STARTTLS,
    Phase.TLS_HANDSHAKE,
    Phase.CAPABILITY_TLS,
    Phase.AUTH,
    Phase.SELECT,
    Phase.NOOP,
    Phase.LOGOUT,
)
POP3_IMPLICIT = (
    Phase.RESOLVE,
    Phase.CONNECT,
    Phase.TLS_HANDSHAKE,
    Phase.GREETING,
    Phase.CAPABILITY,
    Phase.AUTH,
    Phase.STAT,
    Phase.QUIT,
)


def module(protocol: str, tls: TLSMode = TLSMode.STARTTLS, *, auth: bool = True) -> Module:
    creds = AuthConfig("probe", Secret("s3cret-Pa55"), ("LOGIN",)) if auth else None
    return Module(name=protocol, protocol=protocol, tls=tls, timeout=5.0, auth=creds)


def target(mod: Module) -> Target:
    return Target(f"mail.example.com:{mod.default_port}", "mail.example.com", mod.default_port, mod)


def tls_info() -> TLSInfo:
    leaf = CertInfo(
        "CN=mail.example.com",
        "CN=CA",
        ("mail.example.com",),
        NOW - 86400,
        NOW + 86400 * 30,
        "0A",
        "ab" * 32,
    )
    return TLSInfo(
        "TLSv1.3", "TLS_AES_256_GCM_SHA384", (leaf,), True, None, True, "mail.example.com"
    )


def result(
    t: Target,
    phases: tuple[Phase, ...],
    *,
    failure: Failure | None = None,
    mailbox: MailboxInfo | None = None,
    extensions: tuple[str, ...] = (),
) -> ProbeResult:
    protocol = Protocol(t.module.protocol)
    ran = phases if failure is None else phases[: phases.index(failure.phase) + 1]
    return ProbeResult(
        target=t.name,
        module=t.module.name,
        host=t.host,
        port=t.port,
        started_at=NOW,
        duration_seconds=0.05,
        phases=tuple(PhaseTiming(p, 0.004) for p in ran),
        failure=failure,
        address="192.0.2.7",
        tls=tls_info() if Phase.TLS_HANDSHAKE in ran else None,
        extensions=extensions,
        auth_mechanisms=("PLAIN", "SCRAM-SHA-256", "X-UNKNOWN"),
        auth=AuthInfo(
            Phase.AUTH in ran, failure is None or failure.phase is not Phase.AUTH, "LOGIN"
        )
        if Phase.AUTH in ran
        else AuthInfo(),
        protocol=protocol,
        mailbox=mailbox if failure is None else None,
    )


def healthy_imap() -> tuple[Target, ProbeResult]:
    t = target(module("imap"))
    caps = ("IMAP4REV1", "IDLE", "SASL-IR", "X-GM-EXT-1", "AUTH=PLAIN")
    return t, result(t, IMAP_STARTTLS, mailbox=MailboxInfo("INBOX", 3), extensions=caps)


def refused_pop3() -> tuple[Target, ProbeResult]:
    t = target(module("pop3", TLSMode.IMPLICIT))
    why = Failure(Phase.AUTH, FailureKind.REPLY, "-ERR [AUTH] Authentication failed.")
    return t, result(t, POP3_IMPLICIT, failure=why, extensions=("USER", "SASL", "UIDL"))


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def scrape(*pairs: tuple[Target, ProbeResult]) -> str:
    store = ResultStore()
    renderer = Renderer(store)
    store.set_targets([t for t, _ in pairs])
    for t, r in pairs:
        store.record(t, r)
    return renderer.render()


# --------------------------------------------------------------------------- metrics


def test_imap_target_renders_imap_families_only():
    t, r = healthy_imap()
    got = samples(scrape((t, r)))
    names = {n for n, _, _ in got}
    # Nothing of SMTP's: not even the per-module phase histogram (smtp_probe_phase_seconds).
    assert names and all(n.startswith("imap_") for n in names), names
    value = {(n, tuple(sorted(labels.items()))): v for n, labels, v in got}
    base = (("module", "imap"), ("target", t.name))
    assert value[("imap_probe_success", base)] == 1
    assert value[("imap_mailbox_messages", tuple(sorted((*base, ("mailbox", "INBOX")))))] == 3
    caps = [labels for n, labels, _ in got if n == "imap_capabilities_info"]
    # Fixed lists, sorted: unknown names (X-GM-EXT-1, X-UNKNOWN) never become labels.
    assert caps == [
        {
            **dict(base),
            "capabilities": "IDLE IMAP4REV1 SASL-IR",
            "mechanisms": "PLAIN SCRAM-SHA-256",
        }
    ]
    phases = {labels["phase"] for n, labels, _ in got if n == "imap_probe_phase_duration_seconds"}
    assert phases == {p.value for p in IMAP_STARTTLS}
    # One failure counter from the start (by phase with metrics_detail, as SMTP's).
    failures = [(labels, v) for n, labels, v in got if n == "imap_probe_failures_total"]
    assert failures == [(dict(base), 0)]
    assert value[("imap_auth_success", tuple(sorted((*base, ("mechanism", "LOGIN")))))] == 1
    assert value[("imap_tls_hostname_match", base)] == 1


def test_failed_pop3_target_names_phase_and_kind_and_nothing_after_it():
    t, r = refused_pop3()
    got = samples(scrape((t, r)))
    names = {n for n, _, _ in got}
    assert not {n for n in names if n.startswith(("smtp_probe_success", "imap_"))}
    failed = [
        (lb["phase"], lb["kind"]) for n, lb, v in got if n == "pop3_probe_failed_phase" and v == 1
    ]
    assert failed == [("auth", "reply")]
    ran = {lb["phase"] for n, lb, _ in got if n == "pop3_probe_phase_duration_seconds"}
    assert "stat" not in ran and "quit" not in ran and "auth" in ran
    assert [v for n, _, v in got if n == "pop3_auth_success"] == [0]
    assert "pop3_mailbox_messages" not in names
    assert [v for n, _, v in got if n == "pop3_probe_failures_total"] == [1]


def test_pop3_stat_counts_messages_and_bytes():
    t = target(module("pop3"))
    phases = tuple(p for p in IMAP_STARTTLS if p not in (Phase.SELECT, Phase.NOOP, Phase.LOGOUT))
    r = result(t, (*phases, Phase.STAT, Phase.QUIT), mailbox=MailboxInfo("", 2, 4096))
    got = {n: v for n, _, v in samples(scrape((t, r)))}
    assert got["pop3_mailbox_messages"] == 2 and got["pop3_mailbox_size_bytes"] == 4096


def test_every_mailbox_family_is_documented_and_in_the_catalogue():
    names = {m.name for m in METRICS}
    for p in ("imap", "pop3"):
        for suffix in (
            "probe_success",
            "probe_failed_phase",
            "tls_chain_verified",
            "capabilities_info",
        ):
            assert f"{p}_{suffix}" in names


def test_series_budget_of_imap_and_pop3_targets():
    """What a passing STARTTLS + login target costs, scheduled and through /probe (the
    figures in docs/metrics.md): one series per phase that ran, four TLS series, one each
    for the rest; scheduled adds the timestamp and the two counters."""
    t, r = healthy_imap()
    scheduled = [s for s in samples(scrape((t, r))) if s[0].startswith("imap_")]
    probe = samples(render_probe([Entry(t, r)]))
    print(f"\nIMAP STARTTLS+LOGIN: {len(scheduled)} series scheduled, {len(probe)} via /probe")
    assert (len(scheduled), len(probe)) == (25, 22)
    assert not [n for n, _, _ in probe if n.endswith(("_total", "probe_timestamp_seconds"))]
    t = target(module("pop3"))
    phases = tuple(p for p in IMAP_STARTTLS if p not in (Phase.SELECT, Phase.NOOP, Phase.LOGOUT))
    r = result(t, (*phases, Phase.STAT, Phase.QUIT), mailbox=MailboxInfo("", 2, 4096))
    scheduled = [s for s in samples(scrape((t, r))) if s[0].startswith("pop3_")]
    probe = samples(render_probe([Entry(t, r)]))
    print(f"POP3 STLS+login: {len(scheduled)} series scheduled, {len(probe)} via /probe")
    assert (len(scheduled), len(probe)) == (25, 22)


# --------------------------------------------------------------------------- --once, page


def test_once_table_shows_protocol_mailbox_and_server_text():
    (_, ok), (_, bad) = healthy_imap(), refused_pop3()
    text = report.table([ok, bad])
    header, first, second = text.splitlines()[:3]
    assert header.split()[:10] == [
        "TARGET",
        "MODULE",
        "PROTO",
        "RESULT",
        "TOTAL",
        "TLS",
        "CERT",
        "VERIFY",
        "AUTH",
        "MAILBOX",
    ]
    assert " imap " in first and "3 messages in INBOX" in first and "ok LOGIN" in first
    assert " pop3 " in second and "FAIL LOGIN" in second
    assert "auth: reply: -ERR [AUTH] Authentication failed." in second
    # The phase table names the IMAP and POP3 phases.
    assert "cap2" in text and "select" in text and "logout" in text


def test_once_table_of_smtp_only_keeps_its_columns():
    t = Target("a:25", "a", 25, Module(name="m", tls=TLSMode.NONE))
    r = ProbeResult("a:25", "m", "a", 25, NOW, 0.01, (), None)
    assert report.table([r]).splitlines()[0].split()[:3] == ["TARGET", "MODULE", "RESULT"]
    assert t.module.protocol == "smtp"


def test_once_json_has_protocol_and_mailbox():
    (_, ok), (_, bad) = healthy_imap(), refused_pop3()
    a, b = (json.loads(line) for line in report.json_lines([ok, bad]).splitlines())
    assert a["protocol"] == "imap" and a["mailbox"] == {
        "name": "INBOX",
        "messages": 3,
        "size_bytes": None,
    }
    assert b["protocol"] == "pop3" and b["mailbox"] is None
    assert (b["failed_phase"], b["failure_kind"]) == ("auth", "reply")
    assert b["reason"] == "-ERR [AUTH] Authentication failed."


def test_once_nagios_names_the_protocol_and_exits_as_for_smtp():
    (_, ok), (_, bad) = healthy_imap(), refused_pop3()
    text, code = report.nagios([ok], report.NagiosThresholds())
    assert code == report.OK and text.startswith("IMAP OK - mail.example.com:143: "), text
    assert "3 messages in INBOX" in text and "'messages'=3;;;0;" in text
    text, code = report.nagios([bad], report.NagiosThresholds())
    assert code == report.CRITICAL, text
    assert text.startswith("POP3 CRITICAL - mail.example.com:995: auth failed: reply: -ERR"), text
    text, code = report.nagios([ok, bad], report.NagiosThresholds())
    assert code == report.CRITICAL and text.startswith("MAIL CRITICAL - 1 of 2 targets OK"), text


def test_landing_page_lists_imap_and_pop3_targets():
    (t1, ok), (t2, bad) = healthy_imap(), refused_pop3()
    store = ResultStore()
    store.set_targets([t1, t2])
    store.record(t1, ok)
    store.record(t2, bad)
    page = landing_page(store)
    assert "<td>imap</td><td>up</td><td>50 ms, IMAP 3 messages in INBOX</td>" in page
    assert (
        "<td>pop3</td><td>down</td><td>auth: reply: -ERR [AUTH] Authentication failed.</td>" in page
    )


def test_no_secret_in_any_rendering():
    (t1, ok), (t2, bad) = healthy_imap(), refused_pop3()
    texts = [scrape((t1, ok), (t2, bad)), report.table([ok, bad]), report.json_lines([ok, bad])]
    texts.append(report.nagios([ok, bad], report.NagiosThresholds())[0])
    assert not [t for t in texts if "s3cret-Pa55" in t]


# --------------------------------------------------------------------------- runner, config


def test_runner_sends_no_canary_for_imap():
    t, r = healthy_imap()
    canary = config.CanaryConfig("a@example.com", "b@example.com")
    mod = Module(name="imap", protocol="imap", canary=canary)
    t = Target(t.name, t.host, t.port, mod)
    from exporter.targets import Discovery

    run = Run(t, Discovery(t, tuple(static_expansion(t))), ((t, r),))
    assert run.canary_target is None


GOOD = """
defaults: {ehlo_name: probe.example.com, timeout: 5s}
modules:
  imap: {protocol: imap, auth: {username: u, password_env: PW, mechanism: [SCRAM-SHA-256, PLAIN]}}
  imaps: {protocol: imap, tls: implicit, mailbox: Archive/2026, mailbox_select: true}
  pop3: {protocol: pop3, tls: starttls}
  pop3s: {protocol: pop3, tls: implicit, port: 1995}
targets:
  - {target: mail.example.com, module: imap}
  - {target: mail.example.com, module: imaps}
  - {target: mail.example.com, module: pop3}
  - {target: mail.example.com, module: pop3s}
  - {target: "mail.example.com:10143", module: imap}
"""


def test_imap_and_pop3_modules_load_with_their_ports():
    cfg = config.parse(GOOD, file="t.yml", env={"PW": "pw"})
    got = [(t.module.name, t.module.protocol, t.port) for t in cfg.targets]
    assert got == [
        ("imap", "imap", 143),
        ("imaps", "imap", 993),
        ("pop3", "pop3", 110),
        ("pop3s", "pop3", 1995),
        ("imap", "imap", 10143),
    ]
    imaps = cfg.modules["imaps"]
    assert (imaps.mailbox, imaps.mailbox_select) == ("Archive/2026", True)
    assert cfg.modules["imap"].auth.mechanisms == ("SCRAM-SHA-256", "PLAIN")
    assert (cfg.modules["imap"].mailbox, cfg.modules["imap"].mailbox_select) == ("INBOX", False)


BAD = [
    (
        "modules: {m: {protocol: http}}",
        "modules.m.protocol: expected one of smtp, imap, pop3, got 'http'",
    ),
    ("modules: {m: {protocol: [imap]}}", "modules.m.protocol: expected str, got list"),
    (
        "modules: {m: {protocol: imap, ehlo_name: a.example}}",
        "modules.m.ehlo_name: not for protocol imap: IMAP and POP3 send no EHLO",
    ),
    (
        "modules: {m: {protocol: pop3, canary: {from: a@b.test, to: c@d.test}}}",
        "modules.m.canary: not for protocol pop3: a canary is mail sent over SMTP",
    ),
    (
        "modules: {m: {protocol: imap, posture: {tls_scan: true}}}",
        "modules.m.posture: not for protocol imap: its checks are of an SMTP session",
    ),
    (
        "modules: {m: {protocol: imap, domain: {name: a.test}}}",
        "modules.m.domain: not for protocol imap: mail-domain checks",
    ),
    (
        "modules: {m: {protocol: pop3, mailbox: Archive}}",
        "modules.m.mailbox: only for protocol imap (POP3 has one mailbox per login)",
    ),
    (
        "modules: {m: {mailbox_select: true}}",
        "modules.m.mailbox_select: only for protocol imap (IMAP's)",
    ),
    (
        "modules: {m: {protocol: imap, mailbox: ''}}",
        "modules.m.mailbox: expected a mailbox name of 1-255 printable ASCII characters, got ''",
    ),
    (
        "modules: {m: {protocol: imap, mailbox: 'Entw\u00fcrfe'}}",
        "modules.m.mailbox: expected a mailbox name of 1-255 printable ASCII characters",
    ),
    (
        "modules: {m: {protocol: imap, mailbox_select: 'yes'}}",
        "modules.m.mailbox_select: expected bool, got string",
    ),
    (
        "modules: {m: {protocol: imap, auth: {username: u, password_env: PW, mechanism: NTLM}}}",
        "modules.m.auth.mechanism: expected one or a list of auto, PLAIN, LOGIN, CRAM-MD5, "
        "SCRAM-SHA-1, SCRAM-SHA-256, XOAUTH2 for protocol imap, got 'NTLM'",
    ),
    (
        "modules: {m: {protocol: imap}}\ntargets: [{target: 'mx:example.com', module: m}]",
        "targets[0].target: mx: targets are probed over SMTP; module 'm' has protocol imap",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[e for _, e in BAD])
def test_bad_imap_pop3_config_names_file_key_and_expectation(text, expected):
    with pytest.raises(ConfigError) as info:
        config.parse(text, file="t.yml", env={"PW": "pw"})
    lines = str(info.value).splitlines()
    assert [line for line in lines if expected in line], lines
    assert all(line.startswith("t.yml: ") for line in lines)


def test_defaults_ehlo_name_applies_to_smtp_modules_only():
    text = GOOD.replace("modules:\n", "modules:\n  s: {}\n")
    cfg = config.parse(text, file="t.yml", env={"PW": "pw"})
    assert cfg.modules["s"].ehlo_name == "probe.example.com"


def test_config_check_accepts_imap_and_pop3(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text(GOOD.replace("password_env: PW", f"password_file: {tmp_path / 'pw'}"))
    (tmp_path / "pw").write_text("x\n")
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.check", "--config.file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 modules, 5 targets" in proc.stdout


# --------------------------------------------------------------------------- /probe, --once


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_probe_endpoint_and_once_with_an_imap_module(tmp_path):
    """/probe runs an IMAP module through the runner (here against a closed port: a real
    refusal, no server needed), and refuses an mx: target for it; --once reports it."""
    with socket.socket() as held:  # bound, not listening: connect() is refused
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        cfg = tmp_path / "c.yml"
        cfg.write_text(
            "modules:\n  imap: {protocol: imap, tls: implicit, timeout: 5s}\n"
            f"targets:\n  - {{target: '127.0.0.1:{port}', module: imap, interval: 1h}}\n"
        )
        exp = RunningExporter(cfg).start()
        try:
            status, body = _get(f"{exp.url}/probe?target=mx:example.com&module=imap")
            assert status == 400 and "mx: targets are probed over SMTP" in body, body
            status, body = _get(f"{exp.url}/probe?target=127.0.0.1:{port}&module=imap")
            assert status == 200, body
            got = samples(body)
            assert ("imap_probe_success", 0) in [(n, v) for n, _, v in got]
            failed = [lb for n, lb, v in got if n == "imap_probe_failed_phase" and v == 1]
            assert [(f["phase"], f["kind"]) for f in failed] == [("connect", "connection_refused")]
            assert not [n for n, _, _ in got if n.startswith("smtp_")], got
        finally:
            exp.stop()
        proc = subprocess.run(
            [sys.executable, "-m", "exporter", "--once", "--config.file", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = proc.stdout.splitlines()[1].split()
    assert row[1:4] == ["imap", "imap", "FAIL"], proc.stdout
    assert "connect: connection_refused:" in proc.stdout


def test_adhoc_flags_probe_imap_and_pop3_and_name_the_flag_in_errors():
    """``--once --target ... --protocol pop3``: the flags build the same module a file does
    (default port by protocol and TLS mode), and a key refused for the protocol is reported
    under its flag."""
    run = [sys.executable, "-m", "exporter", "--once", "--target", "127.0.0.1"]
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        proc = subprocess.run(
            [*run[:-1], f"127.0.0.1:{port}", "--protocol", "pop3", "--output", "nagios"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"POP3 CRITICAL - 127.0.0.1:{port}: connect failed: "), proc
    proc = subprocess.run(
        [*run, "--protocol", "imap", "--ehlo-name", "a.example"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--ehlo-name: not for protocol imap" in proc.stderr, proc
    proc = subprocess.run(
        [*run, "--protocol", "pop3", "--mailbox", "Archive"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--mailbox: only for protocol imap" in proc.stderr, proc
