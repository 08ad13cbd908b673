"""Examples that run as shipped: every config in config/ and every YAML example in the README
and docs passes ``--config.check`` (the CLI, in a subprocess, with no secret in the
environment), Prometheus examples pass ``promtool check config``, and the README's
``docker run`` mounts a directory whose config checks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import _in_ci

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Blackbox-style notation (`interval: <duration>`): the schema, not an example.
NOTATION = re.compile(r":\s+<[a-z_]+>")


def yaml_blocks() -> list[tuple[str, str]]:
    blocks = []
    for doc in DOCS:
        for i, text in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S)):
            blocks.append((f"{doc.relative_to(ROOT)}#{i}", text))
    return blocks


def kind(text: str) -> str:
    if NOTATION.search(text):
        return "notation"
    data = yaml.safe_load(text)
    assert isinstance(data, dict), text
    if "scrape_configs" in data:
        return "prometheus"
    if set(data) == {"rule_files"}:
        return "prometheus-fragment"  # names a file the reader has: not checkable alone
    if set(data) == {"inhibit_rules"}:
        return "alertmanager-fragment"
    return "exporter"


BLOCKS = yaml_blocks()


def clean_env() -> dict[str, str]:
    """No secret variables: an example must not need one to pass."""
    return {k: v for k, v in os.environ.items() if not k.endswith("_PASSWORD")}


def config_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "--config.check", "--config.file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )


def test_every_block_is_classified():
    kinds = [kind(text) for _, text in BLOCKS]
    assert kinds.count("exporter") >= 2 and kinds.count("prometheus") >= 2, kinds
    assert kinds.count("notation") == 1  # docs/configuration.md's top level


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yml")), ids=lambda p: p.name)
def test_shipped_configs_pass_config_check(path):
    proc = config_check(path)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"\S+: OK, \d+ modules, [1-9]\d* targets\n", proc.stdout), proc.stdout


@pytest.mark.parametrize(
    ("where", "text"), [b for b in BLOCKS if kind(b[1]) == "exporter"], ids=lambda x: x
)
def test_doc_config_examples_pass_config_check(where, text, tmp_path):
    path = tmp_path / "example.yml"
    path.write_text(text)
    proc = config_check(path)
    assert proc.returncode == 0, f"{where}: {proc.stderr}"


@pytest.mark.parametrize(
    ("where", "text"), [b for b in BLOCKS if kind(b[1]) == "prometheus"], ids=lambda x: x
)
def test_doc_prometheus_examples_pass_promtool(where, text, tmp_path):
    if shutil.which("promtool") is None:
        if _in_ci():
            pytest.fail("promtool not installed (CI is set)")
        pytest.skip("SKIPPING promtool check -- promtool not installed (Debian: prometheus)")
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    proc = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"{where}: {proc.stdout}{proc.stderr}"


def test_readme_docker_run_mounts_a_config_directory_that_checks():
    readme = (ROOT / "README.md").read_text().replace("\\\n", " ")
    m = re.search(r'docker run -v "\$PWD/([^:"]+):([^:"]+):ro"[^\n]*?--config\.file=(\S+)', readme)
    assert m, "README's docker run mounts no directory"
    host_dir, mount, config_file = m.groups()
    assert config_file.startswith(mount + "/")
    # The container sees the directory at the mount point; password_file paths in the
    # config are relative to it, so the secrets come along.
    shipped = ROOT / host_dir / config_file.removeprefix(mount + "/")
    proc = config_check(shipped)
    assert proc.returncode == 0, proc.stderr
    assert (ROOT / host_dir / "secrets").is_dir()
