"""The long-running exporter against real embedded SMTP servers: scheduling, /metrics
content (parsed with prometheus_client's parser), reloads, HTTP endpoints."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from exporter.metrics import METRICS
from exporter.selfmetrics import OWN_METRICS

from .conftest import PASSWORD, USER, _in_ci, write_secret
from .exporter_harness import RunningExporter, wait_for
from .servers.stamps import StampingHandler, gaps, mean_gap

ROOT = Path(__file__).resolve().parents[1]


def write_config(
    path: Path, ca_file: str, secret: Path, targets: list[tuple[int, str, str]], timeout: str = "1s"
) -> Path:
    lines = [
        "modules:",
        f"  sub: {{tls: starttls, tls_ca_file: {ca_file}, timeout: {timeout},",
        f"         auth: {{username: {USER}, password_file: {secret}}}}}",
        f"  plain: {{tls: none, timeout: {timeout}}}",
        "targets:",
    ]
    for port, module, interval in targets:
        lines.append(
            f'  - {{target: "127.0.0.1:{port}", module: {module}, interval: {interval},'
            f" labels: {{site: test}}}}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def exporter_for(tmp_path, ca_file):
    running: list[RunningExporter] = []

    def start(targets: list[tuple[int, str, str]], **kw) -> RunningExporter:
        secret = write_secret(tmp_path)
        cfg = write_config(tmp_path / "config.yml", ca_file, secret, targets)
        r = RunningExporter(cfg, **kw).start()
        running.append(r)
        return r

    yield start
    for r in running:
        r.stop()


def test_metrics_after_real_probes(smtp_server, exporter_for):
    good = smtp_server()
    bad = smtp_server(users={USER: "other-password"})
    exp = exporter_for([(good.port, "sub", "1s"), (bad.port, "sub", "1s")])
    g, b = f"127.0.0.1:{good.port}", f"127.0.0.1:{bad.port}"
    assert wait_for(
        lambda: (
            exp.value("smtp_probes_total", target=b) is not None
            and exp.value("smtp_probes_total", target=b) >= 1
            and exp.value("smtp_probes_total", target=g) >= 1
        )
    )
    s = exp.samples()

    def v(name: str, target: str, **labels: str) -> float:
        key = tuple(sorted({"target": target, "module": "sub", "site": "test", **labels}.items()))
        return s[(name, key)]

    assert v("smtp_probe_success", g) == 1 and v("smtp_probe_success", b) == 0
    assert v("smtp_probe_failed_phase", b, phase="auth", kind="reply", reply_code="535") == 1
    assert v("smtp_probe_failed_phase", g, phase="", kind="", reply_code="") == 0
    assert v("smtp_auth_success", g, mechanism="PLAIN") == 1
    assert v("smtp_auth_success", b, mechanism="PLAIN") == 0
    assert v("smtp_tls_chain_verified", g) == 1 and v("smtp_tls_hostname_match", g) == 1
    (tls,) = [dict(k[1]) for k in s if k[0] == "smtp_tls_info" and ("target", g) in k[1]]
    assert (tls["version"], tls["cipher"]) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    assert "trustme" in tls["issuer"] and len(tls["fingerprint_sha256"]) == 64
    assert v("smtp_tls_earliest_cert_expiry_timestamp_seconds", g) > 1.7e9
    # The post-TLS EHLO: AUTH, no STARTTLS; names from the fixed lists, sorted.
    caps = "8BITMIME AUTH SIZE SMTPUTF8"
    assert (
        v(
            "smtp_capabilities_info",
            g,
            extensions=caps,
            mechanisms="LOGIN PLAIN",
            size_limit="33554432",
        )
        == 1
    )
    assert v("smtp_probe_phase_duration_seconds", g, phase="tls_handshake") > 0
    assert v("smtp_probe_failures_total", b) >= 1
    assert v("smtp_probe_failures_total", g) == 0
    hist = [k for k in s if k[0] == "smtp_probe_phase_seconds_count"]
    assert any(dict(k[1]) == {"module": "sub", "phase": "auth"} for k in hist)
    assert s[("smtp_exporter_config_last_reload_successful", ())] == 1
    assert s[("smtp_exporter_targets", ())] == 2
    # No secret anywhere in the exposition or the landing page.
    assert PASSWORD not in exp.get("/metrics")[1] and PASSWORD not in exp.get("/")[1]


def test_each_target_probed_at_its_interval(smtp_server, exporter_for):
    """Each target keeps its own interval, seen by the servers: the gaps between probe sessions
    (one NOOP each) are about 1 s on the fast target and about 3 s on the slow one."""
    fast_stamps, slow_stamps = StampingHandler(), StampingHandler()
    fast, slow = smtp_server(handler=fast_stamps), smtp_server(handler=slow_stamps)
    exp = exporter_for([(fast.port, "sub", "1s"), (slow.port, "sub", "3s")])
    f = f"127.0.0.1:{fast.port}"
    # Generous bounds: the first run of each is offset by up to one interval.
    slow_runs = slow_stamps.wait_noops(3, 20)
    fast_runs = fast_stamps.wait_noops(7, 20)
    assert len(fast_runs) >= 7 and len(slow_runs) >= 3, (fast_runs, slow_runs)
    fast_runs = fast_runs[-7:]
    slow_runs = slow_runs[-3:]
    # The schedule is fixed-rate: one late run shortens the next gap but not the mean.
    assert 0.8 <= mean_gap(fast_runs) <= 1.25, gaps(fast_runs)
    assert 2.6 <= mean_gap(slow_runs) <= 3.4, gaps(slow_runs)
    assert all(0.3 <= g <= 2.0 for g in gaps(fast_runs)), gaps(fast_runs)
    assert all(1.5 <= g <= 4.5 for g in gaps(slow_runs)), gaps(slow_runs)
    # The exporter counts the runs the server saw, and measured each one's lag.
    assert wait_for(lambda: (exp.value("smtp_probes_total", target=f) or 0) >= 7, 5)
    lag_count = exp.value("smtp_exporter_scheduler_lag_seconds_count")
    assert lag_count is not None and lag_count >= len(fast_runs)


def test_reload_good_and_bad(smtp_server, exporter_for, tmp_path, ca_file):
    a, b = smtp_server(), smtp_server()
    exp = exporter_for([(a.port, "sub", "1s")])
    ta, tb = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
    assert wait_for(lambda: exp.value("smtp_probe_success", target=ta) == 1)
    # Good reload: a replaced by b; a's series disappear.
    write_config(exp.config_file, ca_file, write_secret(tmp_path), [(b.port, "sub", "1s")])
    status, body = exp.get("/-/reload", "POST")
    assert status == 200, body
    assert wait_for(lambda: exp.value("smtp_probe_success", target=tb) == 1)
    assert exp.value("smtp_probe_success", target=ta) is None
    assert exp.value("smtp_probes_total", target=ta) is None
    # Bad reload: refused with the file and key, old config kept, metric 0.
    exp.config_file.write_text("modules: {sub: {tls: startls}}\n")
    status, body = exp.get("/-/reload", "POST")
    assert status == 500
    assert f"{exp.config_file}: modules.sub.tls: expected one of" in body
    assert exp.value("smtp_exporter_config_last_reload_successful") == 0
    before = exp.value("smtp_probes_total", target=tb) or 0
    assert wait_for(lambda: (exp.value("smtp_probes_total", target=tb) or 0) > before, 5)


def test_http_endpoints(smtp_server, exporter_for):
    s = smtp_server()
    exp = exporter_for([(s.port, "sub", "1s")])
    assert exp.get("/-/healthy") == (200, "Healthy\n")
    assert exp.get("/-/ready") == (200, "Ready\n")
    assert exp.get("/-/reload")[0] == 405
    assert exp.get("/nope")[0] == 404
    assert wait_for(lambda: "up" in exp.get("/")[1])
    page = exp.get("/")[1]
    assert f"127.0.0.1:{s.port}" in page and "<table>" in page


def test_every_documented_metric_is_real_and_every_real_metric_documented():
    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = {
        line.split("|")[1].strip().strip("`")
        for line in doc.splitlines()
        if line.startswith(("| `smtp_", "| `imap_", "| `pop3_"))
    }
    assert documented == {m.name for m in METRICS} | set(OWN_METRICS)


def test_promtool_check_metrics(smtp_server, exporter_for):
    if shutil.which("promtool") is None:
        if _in_ci():
            pytest.fail("promtool not installed (CI is set)")
        pytest.skip("SKIPPING promtool test -- promtool not installed (Debian: prometheus)")
    good = smtp_server()
    exp = exporter_for([(good.port, "sub", "1s")])
    assert wait_for(lambda: exp.value("smtp_probe_success") == 1)
    text = exp.get("/metrics")[1]
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_real_prometheus_scrapes_the_exporter(smtp_server, exporter_for, tmp_path):
    from .servers.prometheus import prometheus, prometheus_available

    reason = prometheus_available()
    if reason:
        if _in_ci():
            pytest.fail(f"{reason} (CI is set)")
        pytest.skip(f"SKIPPING real-Prometheus test -- {reason}")
    good = smtp_server()
    bad = smtp_server(users={USER: "other"})
    exp = exporter_for([(good.port, "sub", "1s"), (bad.port, "sub", "1s")])
    scrape = f"  - job_name: smtp\n    static_configs:\n      - targets: ['127.0.0.1:{exp.port}']\n"
    with prometheus(tmp_path / "prom", scrape) as prom:

        def ready() -> bool:
            return len(prom.query("smtp_probe_success")) == 2

        assert wait_for(ready, 20), prom.log()
        by_target = {r["metric"]["target"]: r["value"][1] for r in prom.query("smtp_probe_success")}
        assert by_target == {f"127.0.0.1:{good.port}": "1", f"127.0.0.1:{bad.port}": "0"}
        failed = prom.query("smtp_probe_failed_phase == 1")
        assert [(r["metric"]["phase"], r["metric"]["kind"]) for r in failed] == [("auth", "reply")]
        (health,) = prom.targets()
        assert health["health"] == "up", health


def test_sighup_reload_and_bad_start(smtp_server, tmp_path, ca_file):
    """As run from a shell: a bad config exits 2 before listening; SIGHUP reloads."""
    import os
    import signal
    import sys

    from exporter.embedded import free_port

    bad = tmp_path / "bad.yml"
    bad.write_text("modules: {m: {}}\ntargets: [{target: a, module: nope}]\n")
    port = free_port()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "--config.file",
            str(bad),
            "--web.listen-address",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert f"{bad}: targets[0].module: unknown module 'nope'" in proc.stderr

    a, b = smtp_server(), smtp_server()
    secret = write_secret(tmp_path)
    cfg = write_config(tmp_path / "c.yml", ca_file, secret, [(a.port, "sub", "1s")])
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "--config.file",
            str(cfg),
            "--web.listen-address",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        import urllib.request

        def metrics() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    return r.read().decode()
            except OSError:
                return ""

        assert wait_for(lambda: f'target="127.0.0.1:{a.port}"' in metrics(), 15)
        write_config(cfg, ca_file, secret, [(b.port, "sub", "1s")])
        os.kill(server.pid, signal.SIGHUP)
        assert wait_for(lambda: f'smtp_probe_success{{target="127.0.0.1:{b.port}"' in metrics(), 15)
        assert f'target="127.0.0.1:{a.port}"' not in metrics()
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=15)
    assert server.returncode == 0, out
    assert "configuration reloaded" in out
    assert PASSWORD not in out


def test_web_config_tls_and_basic_auth(smtp_server, tmp_path, ca, ca_file):
    import base64
    import ssl
    import urllib.request

    import bcrypt

    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    web_password = "web-Pa55-secret"
    hashed = bcrypt.hashpw(web_password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config: {{cert_file: server.pem, key_file: server.pem}}\n"
        f"basic_auth_users: {{alice: '{hashed}'}}\n"
    )
    s = smtp_server()
    cfg = write_config(tmp_path / "c.yml", ca_file, write_secret(tmp_path), [(s.port, "sub", "1s")])
    exp = RunningExporter(cfg, web_config_file=str(web)).start()
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
        url = f"https://127.0.0.1:{exp.port}/metrics"

        def get(user: str | None, password: str = "") -> tuple[int, str]:
            req = urllib.request.Request(url)
            if user is not None:
                token = base64.b64encode(f"{user}:{password}".encode()).decode()
                req.add_header("Authorization", f"Basic {token}")
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        assert get(None)[0] == 401
        assert get("alice", "wrong")[0] == 401
        assert get("mallory", web_password)[0] == 401
        status, body = get("alice", web_password)
        assert status == 200 and "smtp_exporter_build_info" in body
        for secret in (web_password, hashed, PASSWORD):
            assert secret not in body
        # Plain HTTP to the TLS port gets nowhere.
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{exp.port}/metrics", timeout=5)
    finally:
        exp.stop()


def test_tarpits_do_not_starve_healthy_targets(smtp_server, server_context, tmp_path):
    """8 tarpits against 4 probe slots: once they have shown themselves, they queue in the
    slow lane and the healthy target keeps its 1 s interval."""
    from .servers.fault import FaultServer

    stamps = StampingHandler()
    good = smtp_server("none", handler=stamps)
    with FaultServer("tarpit_greeting", ssl_context=server_context) as tarpit:
        lines = ["modules:", "  ok: {tls: none, timeout: 1s}"]
        lines += [f"  slow{i}: {{tls: none, timeout: 2s}}" for i in range(8)]
        lines += ["targets:", f'  - {{target: "127.0.0.1:{good.port}", module: ok, interval: 1s}}']
        lines += [
            f'  - {{target: "127.0.0.1:{tarpit.port}", module: slow{i}, interval: 2s}}'
            for i in range(8)
        ]
        cfg = tmp_path / "c.yml"
        cfg.write_text("\n".join(lines) + "\n")
        exp = RunningExporter(cfg, concurrency=4).start()
        try:
            healthy = f"127.0.0.1:{good.port}"

            def timed_out(i: int) -> float:
                failed = exp.value("smtp_probe_failures_total", module=f"slow{i}")
                return failed or 0

            # Every tarpit has shown itself (timed out once) and moved to the slow lane...
            assert wait_for(lambda: all(timed_out(i) >= 1 for i in range(8)), 20)
            # ...and from then on the healthy target's next runs keep their 1 s interval.
            seen = len(stamps.noops())
            runs = stamps.wait_noops(seen + 6, 15)[seen:]
            assert len(runs) >= 6, runs
            assert 0.8 <= mean_gap(runs) <= 1.25 and max(gaps(runs)) <= 2.5, gaps(runs)
            assert exp.value("smtp_probe_success", target=healthy) == 1
            skipped = (
                exp.value("smtp_exporter_scheduler_skipped_runs_total", reason="still_running") or 0
            )
            timeouts = exp.value("smtp_probe_failures_total", module="slow0")
            assert timeouts is not None and timeouts >= 1
            assert exp.value("smtp_probe_failed_phase", module="slow0", phase="greeting") == 1
        finally:
            exp.stop()
    assert skipped >= 1  # the tarpits could not all run every 2 s: visible as skipped runs
