"""The container's health check follows the exporter's own flags: the Dockerfile's
HEALTHCHECK command, run against a real exporter started with basic auth, TLS, both, a
client-certificate requirement, or a changed listen address, passes while it serves and
fails once it is gone."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest
import trustme

from exporter.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]


def dockerfile_healthcheck() -> list[str]:
    """The HEALTHCHECK CMD of the Dockerfile, as an argv."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    m = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    assert m, "the Dockerfile has no exec-form HEALTHCHECK"
    return json.loads(m.group(1))


def healthcheck_argv(pid: int) -> list[str]:
    """The Dockerfile's command, for this exporter: its PID instead of 1, and this
    interpreter running the package instead of the installed script."""
    argv = dockerfile_healthcheck()
    assert argv[0] == "smtp-health-exporter" and "--healthcheck.of-pid=1" in argv, argv
    return [
        sys.executable,
        "-m",
        "exporter",
        *(f"--healthcheck.of-pid={pid}" if a == "--healthcheck.of-pid=1" else a for a in argv[1:]),
    ]


def run_check(pid: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    # From elsewhere than the exporter's directory: relative paths are its, not ours.
    return subprocess.run(
        healthcheck_argv(pid), capture_output=True, text=True, timeout=30, cwd=cwd
    )


@contextmanager
def exporter(workdir: Path, *flags: str) -> Iterator[subprocess.Popen[str]]:
    (workdir / "c.yml").write_text(
        "modules: {plain: {tls: none, timeout: 1s}}\n"
        f"targets: [{{target: '127.0.0.1:{free_port()}', module: plain, interval: 5s}}]\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config.file=c.yml", *flags],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "listening on" in first, first + proc.stderr.read()
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


@pytest.fixture
def web_files(tmp_path: Path, ca: trustme.CA) -> Path:
    # A certificate for the name the world uses, not for 127.0.0.1: the check must not
    # care, it talks to its own exporter on loopback.
    ca.issue_cert("exporter.example.com").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    ca.cert_pem.write_to_path(str(tmp_path / "clients-ca.pem"))
    return tmp_path


def _web_config(directory: Path, tls: bool, auth: bool, client_cert: bool = False) -> str:
    lines = []
    if tls:
        lines += ["tls_server_config:", "  cert_file: server.pem", "  key_file: server.pem"]
        if client_cert:
            lines += ["  client_auth_type: RequireAndVerifyClientCert"]
            lines += ["  client_ca_file: clients-ca.pem"]
    if auth:
        hashed = bcrypt.hashpw(b"s3cret-w3b", bcrypt.gensalt(rounds=4)).decode()
        lines += ["basic_auth_users:", f"  prometheus: '{hashed}'"]
    (directory / "web.yml").write_text("\n".join(lines) + "\n")
    return "web.yml"  # relative: resolved against the exporter's working directory


@pytest.mark.parametrize(
    ("tls", "auth", "client_cert", "answer"),
    [
        (False, False, False, "http://127.0.0.1:{port}/-/healthy: 200"),
        (False, True, False, "http://127.0.0.1:{port}/-/healthy: 401, basic auth required"),
        (True, False, False, "https://127.0.0.1:{port}/-/healthy: 200"),
        (True, True, False, "https://127.0.0.1:{port}/-/healthy: 401, basic auth required"),
        (
            True,
            True,
            True,
            "https://127.0.0.1:{port}/-/healthy: TLSv1.3 handshake answered,"
            " a client certificate is required",
        ),
    ],
    ids=["plain", "basic-auth", "tls", "tls+basic-auth", "client-cert"],
)
def test_dockerfile_healthcheck_follows_the_web_config(
    web_files, tmp_path, tls, auth, client_cert, answer
):
    port = free_port()
    web = _web_config(web_files, tls, auth, client_cert)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with exporter(
        web_files, f"--web.listen-address=127.0.0.1:{port}", "--web.config.file", web
    ) as p:
        proc = run_check(p.pid, elsewhere)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.strip() == "healthy: " + answer.format(port=port)
        assert "s3cret" not in proc.stdout + proc.stderr
        pid = p.pid
    proc = run_check(pid, elsewhere)  # the exporter is gone
    assert proc.returncode == 1 and proc.stdout.startswith("unhealthy: ")


def test_healthcheck_follows_listen_address_and_scheme(tmp_path):
    """Flags given to the check directly work too; a wrong scheme is unhealthy."""
    port = free_port()
    with exporter(tmp_path, "--web.listen-address", f"127.0.0.1:{port}") as p:
        assert run_check(p.pid, tmp_path).returncode == 0
        direct = [sys.executable, "-m", "exporter", "--healthcheck"]
        ok = subprocess.run(
            [*direct, f"--web.listen-address=127.0.0.1:{port}"], capture_output=True, text=True
        )
        assert ok.returncode == 0, ok.stdout
        other = free_port()  # the default or another port: nothing there
        bad = subprocess.run(
            [*direct, f"--web.listen-address=127.0.0.1:{other}"], capture_output=True, text=True
        )
        assert bad.returncode == 1 and "unhealthy" in bad.stdout


def test_healthcheck_without_a_process(tmp_path):
    proc = run_check(2**22 + 12345, tmp_path)  # beyond pid_max's default: no such process
    assert proc.returncode == 1
    assert proc.stdout.startswith("unhealthy: cannot read the flags of process")


def test_a_401_without_basic_auth_configured_is_unhealthy(tmp_path, web_files):
    """401 counts only when our web config asks for basic auth: another server that wants
    credentials on our port is not us."""
    port = free_port()
    web = _web_config(web_files, tls=False, auth=True)
    with exporter(web_files, f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={web}"):
        proc = subprocess.run(
            [sys.executable, "-m", "exporter", "--healthcheck", f"--web.listen-address=:{port}"],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1
        assert (
            proc.stdout.strip() == f"unhealthy: http://127.0.0.1:{port}/-/healthy: 401 Unauthorized"
        )
