"""docs/configuration.md lists exactly the keys the model declares: each option is declared
once, as a field, and the loader's allowed keys, its defaults and this page follow from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.config import model
from exporter.config.model import config_keys, default_of

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

# Section heading in the page (its `<name>` part) -> the dataclass it documents.
TABLES = {
    "module": model.Module,
    "probe_allow": model.ProbeAllow,
    "auth": model.AuthConfig,
    "target": model.Target,
    "canary": model.CanaryConfig,
    "route": model.CanaryRoute,
    "imap": model.IMAPConfig,
    "posture": model.PostureConfig,
    "domain": model.DomainChecks,
}


def doc_tables() -> dict[str, list[str]]:
    """Keys of each `### <name>` table, in the page's order; ``a` / `b`` rows split."""
    tables: dict[str, list[str]] = {}
    current: str | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"#+ `<(\w+)>`", line)
        if heading:
            current = heading[1]
            continue
        if current and line.startswith("| `"):
            cell = line.split("|")[1]
            tables.setdefault(current, []).extend(re.findall(r"`(\w+)`", cell))
    return tables


@pytest.mark.parametrize("section", sorted(TABLES))
def test_docs_table_lists_the_declared_keys(section: str) -> None:
    assert doc_tables().get(section) == list(config_keys(TABLES[section]))


def test_top_level_block_lists_the_declared_keys() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = text[text.index("## Top level") :].split("```")[1]
    top = re.findall(r"^(\w+):", block, flags=re.M)
    assert sorted(top) == sorted(config_keys(model.Config))
    defaults = re.findall(r"^  (\w+):", block.split("modules:")[0], flags=re.M)
    assert defaults == list(config_keys(model.Defaults))


def test_loader_defaults_are_the_declared_defaults(tmp_path: Path) -> None:
    from exporter import config

    cfg = config.parse(
        "modules:\n  m:\n    domain: {name: example.com}\n    canary: {from: a@b.c, to: d@e.f}\n"
        "targets:\n  - {target: mx.example.com, module: m}\n",
        file=str(tmp_path / "c.yml"),
    )
    module, target = cfg.modules["m"], cfg.targets[0]
    for name in ("tls", "tls_required", "tls_verify", "timeout", "ip_protocol"):
        assert getattr(module, name) == default_of(model.Module, name)
    assert target.interval == default_of(model.Defaults, "interval")
    assert module.domain == model.DomainChecks(name="example.com")
    assert module.canary is not None
    assert module.canary.interval == default_of(model.CanaryConfig, "interval")
    assert cfg.dns == model.DNSConfig()
