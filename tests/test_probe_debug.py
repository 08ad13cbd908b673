"""/probe?debug=true: the probe's transcript, metrics and module, as blackbox_exporter's
debug output; secrets never in it; same admission rules as /probe; bounded in size.

Real servers: aiosmtpd (exporter.embedded) with STARTTLS and AUTH PLAIN / LOGIN, and the
fault server for a reply that never ends.
"""

from __future__ import annotations

import base64
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from exporter.report.transcript import MAX_BYTES, MAX_LINE_CHARS, Transcript

from .conftest import PASSWORD, USER, write_secret
from .exporter_harness import RunningExporter
from .servers.fault import FaultServer


def b64_fragments(secret: str) -> set[str]:
    """Every run of base64 characters that encodes ``secret`` whole, wherever it sits in a
    longer payload (three alignments): what would betray it in any base64 blob."""
    out = set()
    raw = secret.encode()
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + raw).decode().rstrip("=")
        # Characters that depend on the padding bytes or on what follows are dropped.
        start = (shift * 8 + 5) // 6
        end = ((shift + len(raw)) * 8) // 6
        out.add(enc[start:end])
    return {f for f in out if len(f) >= 8}


def secret_forms() -> set[str]:
    forms = {PASSWORD, *b64_fragments(PASSWORD)}
    forms.add(base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode())
    forms.add(base64.b64encode(PASSWORD.encode()).decode())
    return forms


def test_b64_fragments_find_the_password_in_a_plain_payload():
    """The checker itself: each fragment is found in real PLAIN payloads at any offset."""
    for prefix in ("", "a", "ab", "abc"):
        payload = base64.b64encode(f"\0{prefix}\0{PASSWORD}".encode()).decode()
        assert any(f in payload for f in b64_fragments(PASSWORD)), prefix


@pytest.fixture
def exporter(tmp_path: Path, ca_file: str):
    started: list[RunningExporter] = []

    def start(targets: str = "targets: []", mechanism: str = "auto") -> RunningExporter:
        secret = write_secret(tmp_path)
        cfg = tmp_path / "c.yml"
        cfg.write_text(f"""
defaults: {{module: sub}}
modules:
  sub: {{tls: starttls, tls_ca_file: {ca_file}, timeout: 10s,
         auth: {{username: {USER}, password_file: {secret}, mechanism: {mechanism}}}}}
  open: {{tls: none, tls_required: false, timeout: 10s}}
{targets}
""")
        exp = RunningExporter(cfg).start()
        started.append(exp)
        return exp

    yield start
    for exp in started:
        exp.stop()


def get(exp: RunningExporter, query: str) -> tuple[int, str, str]:
    req = urllib.request.Request(f"{exp.url}/probe?{query}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_debug_shows_the_dialogue_and_never_the_password(exporter, smtp_server, mechanism):
    server = smtp_server()
    target = f"127.0.0.1:{server.port}"
    exp = exporter(f"targets: [{{target: '{target}'}}]", mechanism)
    status, ctype, body = get(exp, f"target={target}&debug=true")
    assert status == 200 and ctype == "text/plain; charset=utf-8"
    logs, _, rest = body.partition("Metrics that would have been returned:")
    metrics, _, module = rest.partition("Module configuration:")
    # Every command and each line of every reply, in order.
    for line in (
        "S: 220 ",
        f"C: EHLO {exp.exporter.config.modules['sub'].ehlo_name}",
        "S: 250-",
        "C: STARTTLS",
        "S: 220 ",
        f"C: AUTH {mechanism}",
        "S: 235 ",
        "C: NOOP",
        "C: QUIT",
        "S: 221 ",
    ):
        assert line in logs, (line, logs)
    assert "S: 250-STARTTLS" in logs  # a multiline reply, one line per extension
    assert "* TLS TLSv1" in logs and "verified" in logs  # TLS details
    assert "phase auth ok in" in logs and "probe succeeded" in logs  # timings
    assert "smtp_probe_success" in metrics and "smtp_probe_success{" in metrics
    assert "tls: starttls" in module and "password: <secret>" in module
    if mechanism == "LOGIN":
        assert logs.count("C: ***") == 2  # username and password, both masked
    else:
        assert "C: AUTH PLAIN ***" in logs
    for form in secret_forms():
        assert form not in body, form
    # The same probe without debug: exposition format, no transcript.
    status, ctype, plain = get(exp, f"target={target}")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert "C: EHLO" not in plain


def test_debug_of_a_refused_password_masks_the_attempt(exporter, smtp_server):
    server = smtp_server(users={USER: "something-else"})
    target = f"127.0.0.1:{server.port}"
    exp = exporter(f"targets: [{{target: '{target}'}}]")
    status, _, body = get(exp, f"target={target}&debug=true")
    assert status == 200
    assert "probe failed" in body and "phase auth, kind reply" in body
    assert "S: 535" in body  # the server's refusal is shown: it is the answer to debug
    for form in secret_forms():
        assert form not in body, form


def test_debug_follows_the_admission_rules(exporter, smtp_server):
    """A credentialed module probes only its configured targets: debug=true changes
    nothing there, and a refused request shows no transcript."""
    configured, other = smtp_server(), smtp_server()
    exp = exporter(f"targets: [{{target: '127.0.0.1:{configured.port}'}}]")
    status, _, body = get(exp, f"target=127.0.0.1:{other.port}&module=sub&debug=true")
    assert status == 403 and "refused" in body and "C: " not in body
    status, _, body = get(exp, f"target=127.0.0.1:{configured.port}&module=sub&debug=true")
    assert status == 200 and "C: AUTH" in body
    status, _, body = get(exp, "target=127.0.0.1:1&module=nope&debug=true")
    assert status == 400


def test_debug_of_an_open_module_probe(exporter, smtp_server):
    server = smtp_server("none", users={})
    exp = exporter()
    status, _, body = get(exp, f"target=127.0.0.1:{server.port}&module=open&debug=true")
    assert status == 200
    assert "C: EHLO" in body and "C: QUIT" in body and "auth: null" in body


def test_debug_is_bounded_whatever_the_server_sends(exporter):
    """A server that sends continuation lines for ever: the reply reader gives up at its
    limits and the transcript stays within its own."""
    with FaultServer("endless_multiline") as fault:
        exp = exporter()
        query = urllib.parse.urlencode(
            {"target": f"127.0.0.1:{fault.port}", "module": "open", "debug": "true"}
        )
        status, _, body = get(exp, query)
    assert status == 200 and "probe failed" in body
    logs = body.partition("Metrics that would have been returned:")[0]
    assert len(logs.encode()) < MAX_BYTES + 4096
    assert all(len(line) < MAX_LINE_CHARS + 32 for line in logs.splitlines())


def test_transcript_bounds_and_escapes():
    t = Transcript()
    t("S: 220 \x1b[31mred\r\n")
    t("x" * 10_000)
    for _ in range(10_000):
        t("C: NOOP")
    text = t.text()
    assert "\\x1b[31mred\\x0d\\x0a" in text and "\x1b" not in text
    assert len(text.encode()) <= MAX_BYTES + 100
    assert text.rstrip().endswith("more lines not kept]") and t.dropped > 0


MX_ZONE = """
good.test. 300 IN MX 10 mx1.good.test.
mx1.good.test. 300 IN A 127.0.0.1
"""


def test_debug_of_mx_targets_shows_the_lookup_and_each_host(dns_server, smtp_server, tmp_path):
    dns = dns_server(MX_ZONE)
    server = smtp_server("none", users={})
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        f'dns: {{nameservers: ["127.0.0.1:{dns.port}"], timeout: 2s}}\n'
        f"modules:\n  mx: {{tls: none, tls_required: false, port: {server.port}, timeout: 5s}}\n"
        "targets: []\n"
    )
    exp = RunningExporter(cfg).start()
    try:
        status, _, body = get(exp, "target=mx:good.test&module=mx&debug=true")
        assert status == 200
        assert "* MX lookup of good.test: mx1.good.test" in body
        assert "--- mx:good.test mx1.good.test" in body and "C: EHLO" in body
        status, _, body = get(exp, "target=mx:missing.test&module=mx&debug=true")
        assert status == 200
        assert "* MX lookup of missing.test: nxdomain" in body
        assert "probe failed" in body and "phase mx_lookup, kind nxdomain" in body
    finally:
        exp.stop()


def test_debug_notes_the_tls_scan(smtp_server, ca_file, tmp_path):
    server = smtp_server(users={})
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        f"modules:\n  scan: {{tls: starttls, tls_ca_file: {ca_file}, timeout: 10s,"
        " posture: {tls_scan: true}}\ntargets: []\n"
    )
    exp = RunningExporter(cfg).start()
    try:
        status, _, body = get(exp, f"target=127.0.0.1:{server.port}&module=scan&debug=true")
    finally:
        exp.stop()
    assert status == 200 and "* TLS scan: tried " in body and "accepted TLSv1" in body, body


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_debug_masks_credentials_a_server_echoes(exporter, server_context, mechanism):
    """The fault server answers AUTH with 535 echoing what it got, base64 and decoded."""
    with FaultServer("auth_echo", ssl_context=server_context) as fault:
        target = f"127.0.0.1:{fault.port}"
        exp = exporter(f"targets: [{{target: '{target}'}}]", mechanism)
        status, _, body = get(exp, f"target={target}&debug=true")
    assert status == 200 and "S: 535 5.7.8 bad credentials" in body, body
    assert "***" in body.partition("S: 535")[2].splitlines()[0]
    for form in secret_forms():
        assert form not in body, form


def test_debug_logs_a_bounded_number_of_addresses(dns_server, smtp_server, tmp_path, monkeypatch):
    """An mx: domain with more hosts than MAX_TRANSCRIPTS (here lowered to 1): every host
    is probed and reported, the first one logged, the rest counted."""
    import exporter.app

    monkeypatch.setattr(exporter.app, "MAX_TRANSCRIPTS", 1)
    dns = dns_server(
        "two.test. 300 IN MX 10 mx1.two.test.\n"
        "two.test. 300 IN MX 20 mx2.two.test.\n"
        "mx1.two.test. 300 IN A 127.0.0.1\n"
        "mx2.two.test. 300 IN A 127.0.0.1\n"
    )
    server = smtp_server("none", users={})
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        f'dns: {{nameservers: ["127.0.0.1:{dns.port}"], timeout: 2s}}\n'
        f"modules:\n  mx: {{tls: none, tls_required: false, port: {server.port}, timeout: 5s}}\n"
        "targets: []\n"
    )
    exp = RunningExporter(cfg).start()
    try:
        status, _, body = get(exp, "target=mx:two.test&module=mx&debug=true")
    finally:
        exp.stop()
    assert status == 200
    assert "* 1 more addresses probed than the 1 logged" in body
    assert body.count("probe succeeded") == 2 and body.count("C: EHLO") == 1
