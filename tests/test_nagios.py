"""``--once --output nagios`` as a monitoring system runs it, against real servers:
aiosmtpd (IPv4 up, IPv6 down), a dnslib server publishing MX hosts, trustme certificates
(one expired). Checked against the Monitoring Plugins development guidelines: the status
line says what failed and where, perfdata labels are unique per expanded target, thresholds
are ranges (``14:``), a WARNING names the threshold it crossed."""

from __future__ import annotations

import datetime as dt
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from exporter.embedded import EmbeddedSMTPServer, free_port

# 'label'=value[UOM];[warn];[crit];[min];[max] (guidelines, "Performance data"): a quoted
# label ('' for a quote inside), a number with an optional unit, ranges ([@][start:][end],
# ~ for minus infinity) for warn and crit.
_NUM = r"-?\d+(?:\.\d+)?"
_RANGE = rf"(?:@?(?:(?:{_NUM}|~):)?(?:{_NUM})?)"
PERF_ITEM = re.compile(
    rf"'(?P<label>(?:[^'=]|'')+)'=(?P<value>{_NUM})(?P<uom>s|ms|us|%|B|KB|MB|TB|c)?"
    rf";(?P<warn>{_RANGE});(?P<crit>{_RANGE});(?P<min>{_NUM})?;(?P<max>{_NUM})?"
)


def nagios(*args: str) -> tuple[int, str, list[re.Match[str]]]:
    """Run the plugin; its exit code, status line and parsed perfdata (every item must
    parse: a malformed one fails here)."""
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "--once", "--output", "nagios", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    status, _, perfdata = proc.stdout.splitlines()[0].partition(" | ")
    items = []
    rest = perfdata
    while rest:
        m = PERF_ITEM.match(rest)
        assert m, f"perfdata does not parse at {rest!r}"
        items.append(m)
        rest = rest[m.end() :].lstrip(" ")
    return proc.returncode, status, items


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yml"
    path.write_text(text)
    return str(path)


def test_expanded_mx_targets_unique_labels_and_failures_named(dns_server, tmp_path):
    """mx: with two MX hosts and ip_protocol both: four probes, IPv6 down on both hosts.
    Each probe has its own perfdata labels; the status line names the hosts and the
    family that failed."""
    port = free_port()
    with EmbeddedSMTPServer(tls="none", port=port, users={}):
        dns = dns_server(
            "dual.test. 300 IN MX 10 mx1.dual.test.\n"
            "dual.test. 300 IN MX 20 mx2.dual.test.\n"
            "mx1.dual.test. 300 IN A 127.0.0.1\nmx1.dual.test. 300 IN AAAA ::1\n"
            "mx2.dual.test. 300 IN A 127.0.0.1\nmx2.dual.test. 300 IN AAAA ::1\n"
        )
        cfg = write_config(
            tmp_path,
            f'dns: {{nameservers: ["127.0.0.1:{dns.port}"], timeout: 1s}}\n'
            f"modules: {{mx: {{tls: none, port: {port}, timeout: 2s, ip_protocol: both}}}}\n"
            'targets: [{target: "mx:dual.test", module: mx}]\n',
        )
        code, status, perf = nagios("--config.file", cfg)
    labels = [m["label"] for m in perf]
    assert len(labels) == len(set(labels)) == 4, labels  # one 'time' per probe (no TLS)
    assert set(labels) == {
        f"mx:dual.test {host} {family} time"
        for host in ("mx1.dual.test", "mx2.dual.test")
        for family in ("ip4", "ip6")
    }
    assert all(m["uom"] == "s" and (m["warn"], m["crit"]) == ("5", "10") for m in perf)
    assert code == 2 and status.startswith("SMTP CRITICAL - 2 of 4 targets OK; "), status
    for host in ("mx1.dual.test", "mx2.dual.test"):
        assert f"mx:dual.test {host} ip6: connect failed: " in status, status
    assert "ip4: " not in status  # the family that works is not blamed


@pytest.fixture
def expired_server(ca: trustme.CA) -> Iterator[EmbeddedSMTPServer]:
    now = dt.datetime.now(dt.UTC)
    leaf = ca.issue_cert(
        "127.0.0.1",
        not_before=now - dt.timedelta(days=400),
        not_after=now - dt.timedelta(days=90, hours=1),
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    with EmbeddedSMTPServer(tls="starttls", ssl_context=ctx, users={}) as server:
        yield server


def test_thresholds_print_as_ranges(smtp_server, ca_file):
    server = smtp_server("starttls")
    code, status, perf = nagios("--target", f"127.0.0.1:{server.port}", "--tls-ca-file", ca_file)
    assert code == 0 and status.startswith("SMTP OK - "), status
    time_, days = perf
    assert (time_["label"], time_["uom"], time_["warn"], time_["crit"], time_["min"]) == (
        "time",
        "s",
        "5",
        "10",
        "0",
    )
    # Range "14:" alerts below 14 days; "14" would alert above 14.
    assert (days["label"], days["warn"], days["crit"]) == ("cert_days", "14:", "7:")


def test_warning_names_the_threshold_it_crossed(smtp_server, ca_file):
    server = smtp_server("starttls")
    target = ["--target", f"127.0.0.1:{server.port}", "--tls-ca-file", ca_file]
    # trustme certificates outlive us all (~1000 years): a million days warns.
    code, status, perf = nagios(*target, "--warning.cert-days", "1000000")
    assert code == 1 and status.startswith("SMTP WARNING - "), status
    assert re.search(r"certificate expires in \d+ days \(warning below 1000000 days\)", status)
    assert perf[1]["warn"] == "1000000:"
    # Every probe takes more than a microsecond.
    code, status, _ = nagios(*target, "--warning.latency", "1ms", "--critical.latency", "60s")
    assert code == 1 and re.search(r"probe took [\d.]+s \(warning above 0\.001s\)", status)


def test_expired_certificate_says_expired(expired_server, tmp_path):
    cfg = write_config(
        tmp_path,
        "modules: {m: {tls: starttls, tls_verify: false, timeout: 5s}}\n"
        f'targets: [{{target: "127.0.0.1:{expired_server.port}", module: m}}]\n',
    )
    code, status, perf = nagios("--config.file", cfg)
    assert code == 2, status
    assert "certificate expired 90 days ago (critical below 7 days)" in status, status
    assert "expires in -" not in status
    assert float(perf[1]["value"]) <= -90


def test_one_target_under_two_modules_keeps_labels_apart(smtp_server, ca_file, tmp_path):
    server = smtp_server("starttls")
    target = f"127.0.0.1:{server.port}"
    cfg = write_config(
        tmp_path,
        f"modules:\n  a: {{tls: starttls, tls_ca_file: {ca_file}, timeout: 5s}}\n"
        f"  b: {{tls: starttls, tls_ca_file: {ca_file}, timeout: 5s}}\n"
        f'targets: [{{target: "{target}", module: a}}, {{target: "{target}", module: b}}]\n',
    )
    code, status, perf = nagios("--config.file", cfg)
    assert code == 0 and status == "SMTP OK - 2 of 2 targets OK", status
    assert [m["label"] for m in perf] == [
        f"{target} a time",
        f"{target} a cert_days",
        f"{target} b time",
        f"{target} b cert_days",
    ]
