"""posture.tls_scan against real servers: a hardened and a weak Postfix, openssl s_server
with and without a stapled OCSP response, and hostile servers that must not outlive the
deadline."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from exporter import probe
from exporter.config import Module, PostureConfig, Target, TLSMode
from exporter.deadline import Deadline
from exporter.results import FailureKind, Phase
from exporter.smtp import tlsscan

from .servers.fault import FaultServer

OUTSIDE = "relay-test@outside.example.net"
WEAK = ("TLSv1", "TLSv1.1")


def target(
    port: int, tls: TLSMode = TLSMode.STARTTLS, timeout: float = 10.0, **posture: object
) -> Target:
    # The weak stack's certificate cannot verify (1024-bit, SHA-1): the scan is about what
    # the server accepts, so no module here verifies.
    posture.setdefault("tls_scan", True)
    module = Module(
        "tls-scan",
        tls=tls,
        tls_verify=False,
        timeout=timeout,
        posture=PostureConfig(**posture),  # type: ignore[arg-type]
    )
    return Target(f"127.0.0.1:{port}", "127.0.0.1", port, module)


def offerable(versions: tuple[str, ...]) -> tuple[str, ...]:
    """Those of ``versions`` this OpenSSL can offer at all."""
    untestable = tlsscan.untestable_versions()
    return tuple(v for v in versions if v not in untestable)


# --------------------------------------------------------------------------- real Postfix


@pytest.mark.postfix
def test_weak_postfix_every_finding(weak_mailstack):
    r = asyncio.run(probe.run(target(weak_mailstack.submission_port, auth_before_tls=True)))
    assert r.success, r.failure  # findings, not failures
    scan = r.posture.tls_scan
    assert scan is not None and scan.error is None, scan
    old = offerable(WEAK)
    if not old:
        pytest.skip("this OpenSSL can offer neither TLS 1.0 nor 1.1")
    assert scan.accepted == (*old, "TLSv1.2")  # 1.3 switched off
    assert scan.lowest == old[0] and scan.highest == "TLSv1.2"
    assert all(f"accepts {v}" in scan.findings for v in old)
    assert scan.cipher == "AES256-GCM-SHA384" and scan.forward_secrecy is False
    assert (scan.key_type, scan.key_bits) == ("RSA", 1024)
    assert "RSA key of 1024 bits" in scan.findings
    assert scan.ocsp_stapled is False and scan.ocsp_note is None  # Postfix never staples
    # The session-level checks find the rest of the weak profile.
    assert r.posture.auth_advertised_before_tls and r.posture.auth_accepted_before_tls
    assert set(scan.findings) <= set(r.posture.findings)
    relay = target(weak_mailstack.mx_port, relay_from="probe@example.com", relay_to=OUTSIDE)
    r = asyncio.run(probe.run(relay))
    assert r.success, r.failure
    assert r.posture.relay_accepted is True and r.posture.relay_code == 250
    if not weak_mailstack.weak_sha1:
        pytest.skip("openssl could not sign the weak certificate with SHA-1 here")
    assert scan.signature_algorithm == "sha1WithRSAEncryption" and scan.weak_signature
    assert "certificate signed with SHA-1" in scan.findings


@pytest.mark.postfix
def test_a_sha1_chain_fails_verification_with_a_readable_reason(weak_mailstack):
    if not weak_mailstack.weak_sha1:
        pytest.skip("openssl could not sign the weak certificate with SHA-1 here")
    module = Module(
        "verify",
        tls_ca_file=str(weak_mailstack.ca_file),
        tls_server_name="localhost",
        timeout=5.0,
    )
    port = weak_mailstack.submission_port
    r = asyncio.run(probe.run(Target(f"127.0.0.1:{port}", "127.0.0.1", port, module)))
    assert r.failure is not None and r.failure.phase is Phase.TLS_HANDSHAKE
    assert r.failure.detail.endswith("signature algorithm not allowed (RSA with SHA-1)"), r.failure
    assert "PhantomData" not in r.failure.detail


@pytest.mark.postfix
def test_weak_postfix_findings_can_fail_the_probe(weak_mailstack):
    r = asyncio.run(probe.run(target(weak_mailstack.smtps_port, TLSMode.IMPLICIT)))
    assert r.success and r.posture.tls_scan and r.posture.tls_scan.findings
    r = asyncio.run(
        probe.run(target(weak_mailstack.smtps_port, TLSMode.IMPLICIT, fail_on_findings=True))
    )
    assert r.failure is not None
    # The handshake passed: the finding is the posture's, not the handshake's.
    assert (r.failure.phase, r.failure.kind) == (Phase.POSTURE, FailureKind.FINDING)
    assert "RSA key of 1024 bits" in r.failure.detail
    assert {Phase.TLS_HANDSHAKE, Phase.NOOP, Phase.QUIT} <= {p.phase for p in r.phases}


@pytest.mark.postfix
def test_weak_postfix_scan_finding_with_auth_fails_as_posture(weak_mailstack, tmp_path):
    """STARTTLS, AUTH and NOOP pass against the weak Postfix; its TLS-scan findings fail
    the probe in phase posture: on /metrics the protocol phases and AUTH keep their
    success, and the --once table names posture as the cause."""
    from .exporter_harness import RunningExporter, wait_for

    user, password = "probe", weak_mailstack.users["probe"]
    secret = tmp_path / "pw"
    secret.write_text(password + "\n")
    port = weak_mailstack.submission_port
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"""
modules:
  strict:
    tls: starttls
    tls_verify: false
    timeout: 10s
    auth: {{username: {user}, password_file: {secret}}}
    posture: {{tls_scan: true, fail_on_findings: true}}
targets: [{{target: "127.0.0.1:{port}", module: strict, interval: 10s}}]
""")
    once = [sys.executable, "-m", "exporter", "--once", "--config.file", str(cfg)]
    table = subprocess.run(once, capture_output=True, text=True, timeout=60)
    assert table.returncode == 1, table.stdout + table.stderr
    row = table.stdout.splitlines()[1]
    assert "FAIL" in row and "ok PLAIN" in row and "posture: finding: " in row, row
    assert "tls_handshake" not in row
    exp = RunningExporter(cfg).start()
    try:
        assert wait_for(lambda: exp.value("smtp_probe_success") is not None, 20)
        assert exp.value("smtp_probe_success") == 0
        assert exp.value("smtp_probe_failed_phase", phase="posture", kind="finding") == 1
        assert exp.value("smtp_auth_success", mechanism="PLAIN") == 1
        for phase in ("starttls", "tls_handshake", "ehlo_tls", "auth", "noop", "quit"):
            assert exp.value("smtp_probe_phase_duration_seconds", phase=phase) is not None, phase
        # One failure counter (no metrics_detail): the posture finding's
        assert exp.value("smtp_probe_failures_total") == 1
        assert exp.value("smtp_posture_tls_findings") >= 1
    finally:
        exp.stop()


@pytest.mark.postfix
@pytest.mark.parametrize("port", ["submission_port", "smtps_port", "mx_port"])
def test_hardened_postfix_no_finding(mailstack, port):
    tls = TLSMode.IMPLICIT if port == "smtps_port" else TLSMode.STARTTLS
    posture: dict[str, object] = {"auth_before_tls": tls is TLSMode.STARTTLS}
    if port == "mx_port":
        posture.update(relay_from="probe@example.com", relay_to=OUTSIDE)
    r = asyncio.run(probe.run(target(getattr(mailstack, port), tls, **posture)))
    assert r.success, r.failure
    scan = r.posture.tls_scan
    assert scan is not None and scan.error is None, scan
    assert scan.tested[-2:] == ("TLSv1.2", "TLSv1.3")
    assert set(offerable(WEAK)) <= set(scan.tested)  # tried, and refused
    assert scan.accepted == ("TLSv1.2", "TLSv1.3") and scan.lowest == "TLSv1.2"
    assert scan.forward_secrecy is True and scan.cipher and scan.cipher.startswith("TLS_")
    assert dict(scan.ciphers)["TLSv1.2"].startswith("ECDHE-")
    assert (scan.key_type, scan.key_bits) == ("RSA", 2048)
    assert scan.signature_algorithm == "sha256WithRSAEncryption" and not scan.weak_signature
    assert scan.ocsp_stapled is False
    assert scan.findings == () and r.posture.findings == ()
    if port == "mx_port":
        assert r.posture.relay_accepted is False and r.posture.relay_code == 554
    elif tls is TLSMode.STARTTLS:
        assert r.posture.auth_advertised_before_tls is False
        assert r.posture.auth_accepted_before_tls is False


@pytest.mark.postfix
def test_scan_is_off_by_default(mailstack):
    r = asyncio.run(probe.run(target(mailstack.submission_port, tls_scan=False)))
    assert r.success and r.posture.tls_scan is None


# --------------------------------------------------------------------------- OCSP stapling


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ocsp_response(ca: trustme.CA, leaf: trustme.LeafCert) -> bytes:
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    now = dt.datetime.now(dt.UTC)
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=cert,
            issuer=issuer,
            algorithm=hashes.SHA256(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=now,
            next_update=now + dt.timedelta(days=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
    )
    response = builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return response.public_bytes(serialization.Encoding.DER)


@pytest.fixture
def s_server(ca: trustme.CA, tmp_path: Path) -> Iterator:
    """Start ``openssl s_server`` (implicit TLS) on 127.0.0.1; yields a factory."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command line tool not installed")
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    (tmp_path / "resp.der").write_bytes(_ocsp_response(ca, leaf))
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, staple: bool) -> int:
        port = _free_port()
        cmd = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}"]
        cmd += ["-cert", str(tmp_path / "cert.pem"), "-key", str(tmp_path / "key.pem"), *args]
        if staple:
            cmd += ["-status_file", str(tmp_path / "resp.der")]
        # stdin stays open: s_server closes each connection once its stdin ends.
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        procs.append(proc)
        assert proc.stdout is not None
        lines = [proc.stdout.readline()]
        while b"ACCEPT" not in lines[-1] and lines[-1] and len(lines) < 20:
            lines.append(proc.stdout.readline())  # "ACCEPT" once it listens
        assert b"ACCEPT" in lines[-1], lines
        return port

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def _scan(port: int, tls: TLSMode = TLSMode.IMPLICIT, seconds: float = 10.0):
    return asyncio.run(tlsscan.scan(target(port, tls), Deadline.after(seconds)))


def test_ocsp_stapled_and_not(s_server):
    stapled = _scan(s_server(staple=True))
    assert stapled.error is None, stapled
    assert stapled.ocsp_stapled is True and stapled.ocsp_note is None
    assert stapled.key_type == "EC" and stapled.findings == ()  # trustme issues P-256 keys
    plain = _scan(s_server(staple=False))
    assert plain.error is None and plain.ocsp_stapled is False


def test_ocsp_not_observable_over_tls13_only(s_server):
    only13 = _scan(s_server("-tls1_3", staple=True))
    assert only13.accepted == ("TLSv1.3",) and only13.error is None
    assert only13.ocsp_stapled is None and "TLS 1.3" in (only13.ocsp_note or "")


def test_client_hello_is_well_formed():
    hello = tlsscan.client_hello("mx.example.com")
    assert hello[:3] == b"\x16\x03\x01" and int.from_bytes(hello[3:5], "big") == len(hello) - 5
    assert hello[5] == 1 and int.from_bytes(hello[6:9], "big") == len(hello) - 9
    assert b"mx.example.com" in hello and b"\x00\x05\x00\x05\x01\x00\x00\x00\x00" in hello
    assert b"mx.example.com" not in tlsscan.client_hello(None)


# --------------------------------------------------------------------------- hostile servers

DEADLINE = 1.5
SLACK = 1.0


@pytest.mark.parametrize(
    ("behaviour", "tls"),
    [
        ("tls_stall", TLSMode.STARTTLS),
        ("tls_drip", TLSMode.STARTTLS),
        ("tls_garbage", TLSMode.STARTTLS),
        ("close_after_starttls", TLSMode.STARTTLS),
        ("reset_after_ehlo", TLSMode.STARTTLS),
        ("tarpit_greeting", TLSMode.STARTTLS),
        ("implicit_tarpit", TLSMode.IMPLICIT),
        ("implicit_plaintext", TLSMode.IMPLICIT),
    ],
)
def test_hostile_server_ends_on_time(behaviour, tls):
    with FaultServer(behaviour) as server:
        start = time.monotonic()
        scan = _scan(server.port, tls, DEADLINE)
        elapsed = time.monotonic() - start
    assert elapsed <= DEADLINE + SLACK, (behaviour, elapsed)
    assert scan.accepted == () and scan.ocsp_stapled is None
    assert scan.error, scan  # reported, never raised


def test_a_server_alerting_every_client_hello_refuses_every_version():
    """A handshake_failure alert in answer to the ClientHello is a refusal, not a fault."""
    with FaultServer("tls_alert") as server:
        scan = _scan(server.port, TLSMode.STARTTLS, DEADLINE)
    assert scan.error is None, scan
    assert scan.accepted == () and set(offerable(WEAK)) <= set(scan.tested)


class _Switch:
    """A loopback TCP forwarder: the first connection goes to ``first``, every later one
    to ``rest``. So the health check meets a good server and the scan a hostile one."""

    def __init__(self, first: int, rest: int) -> None:
        self.backends = [first, rest]
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.count = 0
        self.stopped = threading.Event()
        self.socks: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            backend = socket.create_connection(("127.0.0.1", self.backends[min(self.count, 1)]))
            self.count += 1
            self.socks += [client, backend]
            for a, b in ((client, backend), (backend, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        self.thread.join(5)
        for sock in self.socks:
            sock.close()


@pytest.mark.parametrize("behaviour", ["tls_stall", "tls_drip", "tls_garbage"])
def test_hostile_scan_does_not_outlive_the_probe(server_context, behaviour):
    """End to end through probe.run: the health check passes, every scan handshake meets a
    hostile server; run() returns by the deadline, healthy, with the scan's error."""
    with (
        FaultServer("normal", ssl_context=server_context) as good,
        FaultServer(behaviour) as bad,
    ):
        switch = _Switch(good.port, bad.port)
        try:
            start = time.monotonic()
            r = asyncio.run(probe.run(target(switch.port, timeout=DEADLINE)))
            elapsed = time.monotonic() - start
        finally:
            switch.close()
    assert elapsed <= DEADLINE + SLACK, elapsed
    assert r.success, r.failure  # the health check passed; the scan only reports
    scan = r.posture.tls_scan
    assert scan is not None and scan.accepted == () and scan.error, scan
    assert scan.findings == ()


def test_untestable_versions_are_named():
    untestable = tlsscan.untestable_versions()
    assert "TLSv1.2" not in untestable and "TLSv1.3" not in untestable
    assert all(isinstance(why, str) and why for why in untestable.values())


def test_tls_scan_config():
    from exporter import config

    cfg = config.parse("modules: {m: {tls: implicit, posture: {tls_scan: true}}}")
    assert cfg.modules["m"].posture.tls_scan is True
    assert config.parse("modules: {m: {}}").modules["m"].posture.tls_scan is False
    with pytest.raises(config.ConfigError, match=r"posture\.tls_scan: expected bool, got"):
        config.parse("modules: {m: {posture: {tls_scan: 1}}}")
    with pytest.raises(config.ConfigError, match=r"posture\.tls_scan: needs tls: starttls or"):
        config.parse("modules: {m: {tls: none, posture: {tls_scan: true}}}")


@pytest.mark.postfix
def test_once_shows_posture_of_hardened_and_weak_postfix(mailstack, weak_mailstack, tmp_path):
    """The --once table's posture section and the JSON scan, from both real Postfixes."""
    import json

    config = tmp_path / "config.yml"
    config.write_text(
        f"""
modules:
  sub:
    tls_verify: false
    timeout: 10s
    posture: {{auth_before_tls: true, tls_scan: true}}
  mx:
    tls_verify: false
    timeout: 10s
    posture: {{relay_test: {{from: probe@example.com, to: {OUTSIDE}}}}}
targets:
  - {{target: "127.0.0.1:{mailstack.submission_port}", module: sub}}
  - {{target: "127.0.0.1:{weak_mailstack.submission_port}", module: sub}}
  - {{target: "127.0.0.1:{mailstack.mx_port}", module: mx}}
  - {{target: "127.0.0.1:{weak_mailstack.mx_port}", module: mx}}
"""
    )
    out = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(config), "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr  # findings, not failures
    posture = out.stdout.split("\nposture\n", 1)[1].split("\n\n", 1)[0].splitlines()
    rows = {line.split()[0]: line.split() for line in posture[1:]}
    hard = rows[f"127.0.0.1:{mailstack.submission_port}"]
    weak = rows[f"127.0.0.1:{weak_mailstack.submission_port}"]
    assert hard[1:3] == ["no", "-"] and hard[3] == "1.2,1.3" and "RSA" in hard
    assert weak[1] == "ACCEPTED" and weak[3].endswith("1.2") and "NO" in weak
    assert rows[f"127.0.0.1:{mailstack.mx_port}"][2:4] == ["refused", "(554)"]
    assert rows[f"127.0.0.1:{weak_mailstack.mx_port}"][2:4] == ["OPEN", "(250)"]
    assert "finding: open relay" in out.stdout

    once = [sys.executable, "-m", "exporter", "--config.file", str(config), "--once"]
    out = subprocess.run(
        [*once, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    by_target = {o["target"]: o for o in map(json.loads, out.stdout.splitlines())}
    scan = by_target[f"127.0.0.1:{weak_mailstack.submission_port}"]["posture"]["tls_scan"]
    assert scan["key_type"] == "RSA" and scan["key_bits"] == 1024
    assert scan["forward_secrecy"] is False and "RSA key of 1024 bits" in scan["findings"]
