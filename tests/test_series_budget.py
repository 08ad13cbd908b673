"""The series budget (#17): what one target costs, counted on real scrapes.

One exporter probes aiosmtpd servers (plain, STARTTLS, implicit TLS; AUTH) with a module per
feature of docs/metrics.md's "Series per target" table, each also with ``metrics_detail``,
and an ``mx:`` target whose MX records a dnslib server publishes. The test counts every
target's series in ``/metrics`` and in a ``/probe`` of the same module, and checks them
against the budget (STARTTLS + AUTH: at most 25 scheduled, 20 through /probe) and against
every number the table states.
"""

from __future__ import annotations

import re
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.embedded import EmbeddedSMTPServer

from .conftest import PASSWORD, USER
from .exporter_harness import RunningExporter, wait_for
from .servers.dns import DNSServer

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = "budget.test"

# module name -> (server, module keys beyond tls_ca_file and timeout). Servers: "plain"
# (no TLS), "starttls", "implicit" (AUTH after TLS only), "open" (STARTTLS, AUTH offered in
# clear too: the AUTH-before-TLS check's server).
AUTH = f"auth: {{username: {USER}, password_file: {{secret}}}}"
CASES: dict[str, tuple[str, str]] = {
    "base": ("plain", "tls: none"),
    "starttls": ("starttls", "tls: starttls"),
    "implicit": ("implicit", "tls: implicit"),
    "auth": ("starttls", f"tls: starttls, {AUTH}"),
    "abt": ("starttls", "tls: starttls, posture: {auth_before_tls: true}"),
    "relay": (
        "starttls",
        "tls: starttls, posture: {relay_test: {from: a@example.com, to: b@outside.example}}",
    ),
    "scan": ("starttls", "tls: starttls, posture: {tls_scan: true}"),
    "fof": ("starttls", "tls: starttls, posture: {auth_before_tls: true, fail_on_findings: true}"),
    "canary": (
        "starttls",
        f"tls: starttls, {AUTH}, canary: {{from: m@example.com, to: c@example.org, interval: 1m}}",
    ),
}
DETAIL = ("base", "starttls", "implicit", "auth", "fof")


@dataclass(frozen=True)
class Counts:
    scheduled: dict[str, int]  # module -> series of its target in /metrics
    probe: dict[str, int]  # module -> series in a /probe answer
    names: dict[str, Counter[str]]  # module -> series per family in /metrics
    mx_host_sets: list[int]  # the mx: target: series per MX host
    mx_lookup: int  # the mx: target's smtp_mx_* series


def _series(text: str, **labels: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (s.name, dict(s.labels))
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if all(s.labels.get(k) == v for k, v in labels.items())
    ]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        return resp.read().decode()


@pytest.fixture(scope="module")
def counts(server_context, ca_file, tmp_path_factory) -> Iterator[Counts]:
    tmp = tmp_path_factory.mktemp("budget")
    secret = tmp / "password"
    secret.write_text(PASSWORD + "\n")
    users = {USER: PASSWORD}
    servers = {
        "plain": EmbeddedSMTPServer(tls="none", users=users),
        "starttls": EmbeddedSMTPServer(tls="starttls", ssl_context=server_context, users=users),
        "implicit": EmbeddedSMTPServer(tls="implicit", ssl_context=server_context, users=users),
    }
    for s in servers.values():
        s.start()
    dns = DNSServer(
        f"{DOMAIN}. 300 IN MX 10 mx1.{DOMAIN}.\nmx1.{DOMAIN}. 300 IN A 127.0.0.1\n"
    ).start()
    modules, targets = [], []
    for name, (server, keys) in CASES.items():
        for detail in (False, True) if name in DETAIL else (False,):
            mod = f"{name}_detail" if detail else name
            extra = ", metrics_detail: true" if detail else ""
            keys_ = keys.replace("{secret}", str(secret))
            modules.append(f"  {mod}: {{{keys_}, tls_ca_file: {ca_file}, timeout: 2s{extra}}}")
            port = servers[server].port
            targets.append(f'  - {{target: "127.0.0.1:{port}", module: {mod}, interval: 2s}}')
    # The certificate names localhost, not the MX host: verification off, recorded anyway.
    modules.append(
        f"  mx: {{tls: starttls, port: {servers['starttls'].port}, tls_ca_file: {ca_file},"
        " tls_verify: false, timeout: 2s}"
    )
    targets.append(f'  - {{target: "mx:{DOMAIN}", module: mx, interval: 2s}}')
    config = tmp / "config.yml"
    config.write_text(
        f'dns: {{nameservers: ["{dns.address}:{dns.port}"], timeout: 1s}}\n'
        "modules:\n" + "\n".join(modules) + "\ntargets:\n" + "\n".join(targets) + "\n"
    )
    exp = RunningExporter(config).start()
    try:
        mods = [m.split(":")[0].strip() for m in modules if not m.startswith("  mx:")]
        text = ""

        def settled() -> bool:
            nonlocal text
            text = exp.get("/metrics")[1]
            ok = {
                labels["module"]
                for name, labels in _series(text)
                if name == "smtp_probe_success" and "mx_host" not in labels
            }
            sent = {
                m
                for n, lab in _series(text)
                if n == "smtp_canary_send_success"
                for m in [lab["module"]]
            }
            mx = any(n == "smtp_probe_success" and "mx_host" in lab for n, lab in _series(text))
            return set(mods) <= ok and "canary" in sent and mx

        assert wait_for(settled, 60), "not every target probed (and the canary sent) in 60 s"
        text = exp.get("/metrics")[1]  # one more scrape: counters and gauges of a later probe
        scheduled, probe, names = {}, {}, {}
        for mod in mods:
            server = CASES[mod.removesuffix("_detail")][0]
            target = f"127.0.0.1:{servers[server].port}"
            mine = _series(text, target=target, module=mod)
            assert all(
                labels.get("target") == target for _, labels in mine
            )  # nothing borrowed from another module's target
            scheduled[mod] = len(mine)
            names[mod] = Counter(n for n, _ in mine)
            answer = _get(f"{exp.url}/probe?target={target}&module={mod}")
            probe[mod] = len(_series(answer, target=target, module=mod))
            assert _series(answer, target=target, module=mod, phase="", kind="")  # it passed
        mx_series = _series(text, target=f"mx:{DOMAIN}", module="mx")
        per_host = Counter(lab.get("mx_host", "") for _, lab in mx_series)
        lookup = sum(1 for n, _ in mx_series if n.startswith("smtp_mx_"))
        yield Counts(
            scheduled,
            probe,
            names,
            [n for host, n in per_host.items() if host],
            lookup,
        )
    finally:
        exp.stop()
        dns.stop()
        for s in servers.values():
            s.stop()


def test_a_starttls_auth_target_stays_within_the_budget(counts: Counts) -> None:
    assert counts.scheduled["auth"] <= 25
    assert counts.probe["auth"] <= 20
    names = counts.names["auth"]
    # One info series for the inventory, one failure counter: no per-flag families.
    assert names["smtp_capabilities_info"] == 1
    assert names["smtp_probe_failures_total"] == 1
    assert "smtp_extension_advertised" not in names
    # metrics_detail brings the per-flag and per-phase series back.
    detail = counts.names["auth_detail"]
    assert detail["smtp_extension_advertised"] == 11
    assert detail["smtp_auth_mechanism_advertised"] == 7
    assert detail["smtp_probe_failures_total"] == 10
    assert detail["smtp_tls_leaf_cert_expiry_timestamp_seconds"] == 1


def _table() -> dict[str, tuple[str, str, str]]:
    """docs/metrics.md's "Series per target": feature -> (scheduled, /probe, metrics_detail)."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    section = text.split("## Series per target", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("feature", "---"):
            rows[cells[0]] = (cells[2], cells[3], cells[4])
    return rows


def _n(cell: str) -> int:
    m = re.fullmatch(r"\+?(\d+)", cell)
    assert m, f"not a count: {cell!r}"
    return int(m[1])


def test_the_documented_series_per_feature_are_what_real_probes_export(counts: Counts) -> None:
    s, p = counts.scheduled, counts.probe

    def detail(mod: str) -> int:
        return s[f"{mod}_detail"] - s[mod]

    got = {
        "base: SMTP without TLS or AUTH": (s["base"], p["base"], detail("base")),
        "STARTTLS": (
            s["starttls"] - s["base"],
            p["starttls"] - p["base"],
            detail("starttls") - detail("base"),
        ),
        "implicit TLS": (
            s["implicit"] - s["base"],
            p["implicit"] - p["base"],
            detail("implicit") - detail("base"),
        ),
        "AUTH": (
            s["auth"] - s["starttls"],
            p["auth"] - p["starttls"],
            detail("auth") - detail("starttls"),
        ),
        "STARTTLS + AUTH": (s["auth"], p["auth"], detail("auth")),
        "AUTH before TLS": (s["abt"] - s["starttls"], p["abt"] - p["starttls"], 0),
        "relay test": (s["relay"] - s["starttls"], p["relay"] - p["starttls"], 0),
        "findings fail the probe": (
            s["fof"] - s["abt"],
            p["fof"] - p["abt"],
            detail("fof") - detail("starttls"),
        ),
        "canary, sent only": (s["canary"] - s["auth"], p["canary"] - p["auth"], 0),
    }
    table = _table()
    for feature, (sched, probe, more) in got.items():
        row = table[feature]
        assert (_n(row[0]), _n(row[1]), _n(row[2])) == (sched, probe, more), feature
    # The TLS scan: 5, and one per TLS version the exporter's OpenSSL could test.
    versions = counts.names["scan"]["smtp_posture_tls_version_accepted"]
    assert 2 <= versions <= 4
    assert s["scan"] - s["starttls"] == 5 + versions == p["scan"] - p["starttls"]
    assert table["TLS scan"][:2] == ("+5, +1 per TLS version tested", "same")


def test_an_mx_target_costs_one_set_per_host_and_five_for_its_lookup(counts: Counts) -> None:
    # The MX host's set is a STARTTLS module's (with the mx_host and mx_preference labels).
    assert counts.mx_host_sets == [counts.scheduled["starttls"]]
    assert counts.mx_lookup == 5


@pytest.mark.postfix
def test_a_canary_found_over_imap_costs_what_the_table_says(mailstack, tmp_path) -> None:
    """The canary row, on Postfix + Dovecot: sent through submission, found over IMAPS."""
    smtp_pw, imap_pw = tmp_path / "smtp-pw", tmp_path / "imap-pw"
    smtp_pw.write_text(mailstack.users["probe"] + "\n")
    imap_pw.write_text(mailstack.users["canary"] + "\n")
    config = tmp_path / "config.yml"
    config.write_text(
        "modules:\n"
        "  canary:\n"
        f"    tls: starttls\n    tls_ca_file: {mailstack.ca_file}\n    timeout: 2s\n"
        f"    auth: {{username: probe, password_file: {smtp_pw}}}\n"
        "    canary:\n"
        "      from: probe@localhost\n      to: canary@localhost\n"
        "      interval: 1m\n      timeout: 20s\n"
        "      imap:\n"
        f"        host: 127.0.0.1\n        port: {mailstack.imaps_port}\n"
        f"        tls: implicit\n        tls_ca_file: {mailstack.ca_file}\n"
        f"        username: canary\n        password_file: {imap_pw}\n"
        "        poll_interval: 200ms\n"
        "targets:\n"
        f'  - {{target: "127.0.0.1:{mailstack.submission_port}", module: canary, interval: 2s}}\n'
    )
    target = f"127.0.0.1:{mailstack.submission_port}"
    exp = RunningExporter(config).start()
    try:
        assert wait_for(
            lambda: (
                exp.value("smtp_canary_last_round_trip_seconds") is not None
                and exp.value("smtp_probe_success") == 1
            ),
            60,
        )
        scheduled = len(_series(exp.get("/metrics")[1], target=target, module="canary"))
        answer = _get(f"{exp.url}/probe?target={target}&module=canary")
        probe = len(_series(answer, target=target, module="canary"))
    finally:
        exp.stop()
    table = _table()
    base, row = table["STARTTLS + AUTH"], table["canary found over IMAP (sending included)"]
    assert scheduled == _n(base[0]) + _n(row[0])
    assert probe == _n(base[1]) + _n(row[1])


def test_every_detail_family_says_so_in_the_docs() -> None:
    """The families only metrics_detail exports say it in their "when absent" cell."""
    from exporter.metrics import METRICS

    rows = {
        m[1]: line
        for line in (ROOT / "docs" / "metrics.md").read_text().splitlines()
        if (m := re.match(r"\| `((?:smtp|imap|pop3)_[a-z0-9_]+)` \|", line))
    }
    detail = {s.name for s in METRICS if s.detail}
    assert detail == {
        "smtp_extension_advertised",
        "smtp_auth_mechanism_advertised",
        "smtp_size_limit_bytes",
        "smtp_tls_leaf_cert_expiry_timestamp_seconds",
        "imap_tls_leaf_cert_expiry_timestamp_seconds",
        "pop3_tls_leaf_cert_expiry_timestamp_seconds",
    }
    for name in detail:
        absent = rows[name].split(" | ")[-2]
        assert "without `metrics_detail`" in absent, (name, absent)
