""".ci/run runs the README's test command verbatim, in a virtual environment made with
python3, with CI=true: nothing of it assumes `pip` or `python` on PATH."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def two_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_readme_has_two_one_line_commands():
    demo, tests = two_commands()
    assert "\n" not in demo and "\n" not in tests
    assert demo.endswith("smtp-health-exporter --demo")
    assert tests.endswith("python -m pytest -q")
    for command in (demo, tests):
        # Its own environment, made with python3: no system pip, no `python` needed first.
        assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && pip ")


def test_ci_runs_the_readme_test_command_verbatim():
    script = (ROOT / ".ci" / "run").read_text()
    _, tests = two_commands()
    assert tests in script.splitlines()
    assert "export CI=true" in script.splitlines()
    body = [ln for ln in script.splitlines() if ln and not ln.lstrip().startswith("#")]
    before = body[: body.index(tests)]
    # Before the venv exists, nothing calls pip or a bare `python`.
    assert not any(re.search(r"(^|[\s;&|(])(pip|python)(\s|$)", ln) for ln in before), before
    servers = ("postfix", "dovecot-core", "dovecot-imapd", "dovecot-pop3d", "prometheus")
    for package in (*servers, "openssl", "curl"):
        assert f"missing+=({package})" in script
    assert "missing+=(python3-venv)" in script


def test_ci_script_is_valid_bash():
    proc = subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], capture_output=True)
    assert proc.returncode == 0, proc.stderr
