"""CLI manners: one-line usage errors, ad-hoc errors naming flags, --version like Prometheus's
binaries, the demo's loopback bind, bracketed IPv6, the first log line pointing at the
status page. Run as a user runs it: the CLI in a subprocess."""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.app import listen_text, status_url
from exporter.cli import DEFAULT_PORT, listen_address
from exporter.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--tls", "bogus", "--target", "a:25", "--once"),
        ("--no-such-flag",),
        ("--shard", "3/2", "--demo"),
        ("--config.file", "x.yml", "--demo"),
    ],
)
def test_usage_error_is_one_line_and_a_hint(args):
    proc = run(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("smtp-health-exporter: error: ") and line.endswith(", try --help")


def test_help_still_shows_every_flag():
    proc = run("--help")
    assert proc.returncode == 0
    for flag in ("--web.listen-address", "--web.disable-exporter-metrics", "--healthcheck"):
        assert flag in proc.stdout


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--auth-user", "u"), "set exactly one of --auth-password-file, --auth-password-env"),
        (("--auth-password-file", "/nonexistent/pw"), "--auth-user: required"),
        (
            ("--auth-user", "u", "--auth-password-file", "/nonexistent/pw"),
            "--auth-password-file: no such file (value not shown)",
        ),
        (
            ("--auth-user", "u", "--auth-password-env", "SMTP_HEALTH_UNSET_VARIABLE"),
            "--auth-password-env: environment variable 'SMTP_HEALTH_UNSET_VARIABLE' is not set",
        ),
        (("--timeout", "5"), "--timeout: invalid duration '5'"),
        (("--tls-ca-file", "/nonexistent/ca.pem"), "--tls-ca-file: file '/nonexistent/ca.pem'"),
        (("--ehlo-name", "a b"), "--ehlo-name: not a valid host name"),
    ],
)
def test_adhoc_errors_name_the_flag(flags, expected):
    proc = run("--once", "--target", "mail.example.invalid:25", *flags)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stderr
    assert "modules.adhoc" not in proc.stderr and "targets[0]" not in proc.stderr
    assert "password_file" not in proc.stderr and "password_env" not in proc.stderr


def test_adhoc_bad_target_names_the_flag():
    proc = run("--once", "--target", "a b:x")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --target: expected host[:port], got 'a b:x'"


def test_adhoc_long_timeout_is_not_an_interval_error(tmp_path):
    # --once has no interval: a timeout over the scheduler's default interval is fine.
    port = free_port()  # nothing listens: the probe fails fast, exit 1, not a usage error
    proc = run("--once", "--target", f"127.0.0.1:{port}", "--tls", "none", "--timeout", "2m")
    assert proc.returncode == 1, proc.stderr
    assert "connection_refused" in proc.stdout


def test_version_like_prometheus():
    proc = run("--version")
    assert proc.returncode == 0 and proc.stderr == ""
    first, *rest = proc.stdout.splitlines()
    m = re.fullmatch(
        r"smtp-health-exporter, version (\S+) \(revision: ([0-9a-f]{40}|unknown)\)", first
    )
    assert m, first
    from exporter import __version__

    assert m.group(1) == __version__
    if shutil.which("git") and (ROOT / ".git").exists():
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        assert m.group(2) == head
    assert rest[0] == (
        f"  python version:   {platform.python_version()} ({platform.python_implementation()})"
    )
    assert rest[1].startswith("  platform:         linux/")


def test_listen_defaults():
    ns = argparse.Namespace
    assert listen_address(ns(listen=None, demo=True)) == f"127.0.0.1:{DEFAULT_PORT}"
    assert listen_address(ns(listen=None, demo=False)) == f":{DEFAULT_PORT}"
    assert listen_address(ns(listen=":9", demo=True)) == ":9"


def test_addresses_print_bracketed():
    assert listen_text("::1", 10525) == "[::1]:10525"
    assert listen_text("", 10525) == "0.0.0.0:10525 (every address)"
    assert listen_text("127.0.0.1", 1) == "127.0.0.1:1"
    assert status_url("http", "::1", 10525) == "http://[::1]:10525/"
    assert status_url("https", "::", 10525) == "https://localhost:10525/"
    assert status_url("http", "", 10525) == "http://localhost:10525/"


def first_log_line(*args: str) -> str:
    """Start the exporter, read its first log line, stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        return line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def _listening_sockets(port: int) -> set[str]:
    """Local addresses in LISTEN state on ``port``, from /proc/net/tcp{,6}."""
    found = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def test_demo_binds_loopback_and_says_so():
    if _listening_sockets(DEFAULT_PORT):
        pytest.skip(f"SKIPPING: port {DEFAULT_PORT} is taken on this machine")
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--demo"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"listening on 127.0.0.1:{DEFAULT_PORT}" in line, line
        assert f"status page http://127.0.0.1:{DEFAULT_PORT}/" in line
        assert "demo: serving loopback only" in line
        # The kernel's view: one listening socket on the port, on 127.0.0.1 (0100007F).
        assert _listening_sockets(DEFAULT_PORT) == {"0100007F"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_demo_told_where_to_listen_warns():
    # Any address given explicitly, even loopback (tests bind nothing else), gets the warning.
    port = free_port()
    line = first_log_line("--demo", "--web.listen-address", f"127.0.0.1:{port}")
    assert f"listening on 127.0.0.1:{port}, status page http://127.0.0.1:{port}/" in line
    assert "demo: /probe is open to every client that reaches this address" in line


def test_ipv6_listen_address_bracketed_in_first_line():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            port = s.getsockname()[1]
    except OSError:
        pytest.skip("SKIPPING: no IPv6 loopback here")
    line = first_log_line("--demo", "--web.listen-address", f"[::1]:{port}")
    assert f"listening on [::1]:{port}, status page http://[::1]:{port}/" in line, line
