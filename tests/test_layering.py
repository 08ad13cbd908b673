"""Imports go one way: the probe and the domain checks know nothing of Prometheus or
scheduling."""

from __future__ import annotations

import subprocess
import sys


def test_probe_imports_neither_prometheus_nor_apscheduler():
    """The probe, the domain checks and the --once report are plain engines."""
    code = (
        "import sys, exporter.probe, exporter.domain, exporter.report\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('prometheus_client', 'apscheduler'))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
