"""Imports go one way, as ARCHITECTURE.md draws it: config -> runner/scheduler -> probe ->
results -> store -> rendering -> HTTP. The probe and the domain checks know nothing of
Prometheus, scheduling, the YAML parser or where their results are kept."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "exporter"

# Lowest first. A module may import modules of its own part, or of any part of a layer below;
# never one above, nor a sibling part of its own layer (siblings know nothing of each other:
# the scheduler and the renderer both use the store, neither uses the other). Names are the
# first part below ``exporter.`` (a package counts as a whole); "" is ``exporter/__init__.py``.
LAYERS: list[tuple[str, ...]] = [
    ("", "results", "yamlguard", "gzipjoin", "logs", "embedded"),  # values, helpers, demo
    ("errors", "deadline"),  # the exception tree; one deadline per run
    ("config",),  # model, validator, sections, YAML loader
    ("targets",),  # a target's expansions, offset and shard: functions of the model
    ("net",),  # resolver lanes, the reader-generic connection, TLS facts, SASL
    (
        "smtp",
        "pop3",
        "imap",
    ),  # the SMTP client: transport, reply, ESMTP, TLS scan, session; POP3; IMAP
    ("probe",),  # the health check built on the client
    # also on it; mail-domain DNS; IMAP; Authentication-Results of a received message
    ("send", "maildomain", "imapcheck", "discovery", "canary_verdicts"),
    ("canary",),  # send + imapcheck
    ("runner", "report", "admission"),  # one run of a target; --once report; /probe allow-list
    ("store", "selfmetrics"),  # latest results; the exporter's own instruments
    ("scheduler", "metrics", "httpsd"),  # write the store / render it / list targets
    ("webconfig", "httplimits"),  # the HTTP server's TLS, basic auth and limits
    ("http", "healthcheck"),  # the HTTP server; the container's check of it
    ("app", "flags"),  # builds the pipeline; the command line's flags
    ("cli",),  # orchestration: --once, --config.check, --healthcheck, serve
    ("__main__",),
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports anywhere in its text (functions and
    TYPE_CHECKING blocks included: a dependency is a dependency)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from . import sasl` names a submodule
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else ""
    assert key in LAYER, f"{module}: not placed in LAYERS (tests/test_layering.py)"
    return LAYER[key]


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer(name)


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_runs_upward_or_sideways() -> None:
    wrong = sorted(
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, deps in graph().items()
        for b in deps
        if layer(b) > layer(a)
        or (layer(b) == layer(a) and part(a) != part(b) and "" not in (part(a), part(b)))
    )
    assert wrong == []


def test_no_import_cycles() -> None:
    g = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize(
    ("engine", "forbidden"),
    [
        # The probe: no Prometheus, no scheduler, no YAML parser, no store or rendering.
        (
            "exporter.probe",
            ("prometheus_client", "apscheduler", "yaml", "exporter.metrics", "exporter.store"),
        ),
        ("exporter.smtp", ("prometheus_client", "apscheduler", "yaml", "exporter.store")),
        ("exporter.imap.mailbox", ("prometheus_client", "apscheduler", "yaml", "exporter.store")),
        ("exporter.pop3", ("prometheus_client", "apscheduler", "yaml", "exporter.store")),
        ("exporter.maildomain", ("prometheus_client", "apscheduler", "yaml", "exporter.store")),
        ("exporter.send", ("prometheus_client", "apscheduler", "yaml", "exporter.store")),
        ("exporter.report", ("prometheus_client", "apscheduler", "exporter.store")),
        ("exporter.runner", ("prometheus_client", "apscheduler", "exporter.store")),
        # The store keeps results; it runs nothing and renders nothing.
        (
            "exporter.store",
            ("exporter.probe", "exporter.canary", "exporter.discovery", "prometheus_client"),
        ),
        # Rendering reads the store; it schedules nothing.
        ("exporter.metrics", ("apscheduler", "exporter.scheduler", "yaml")),
        # The model alone never loads the parser.
        ("exporter.config.model", ("yaml", "exporter.config.loader")),
    ],
)
def test_engine_imports_none_of(engine: str, forbidden: tuple[str, ...]) -> None:
    """Checked in a fresh interpreter: what importing the engine really loads."""
    code = (
        f"import sys, {engine}\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({forbidden!r}))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_probe_imports_neither_prometheus_nor_apscheduler():
    """The probe, the domain checks and the --once report are plain engines."""
    code = (
        "import sys, exporter.probe, exporter.maildomain, exporter.report\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('prometheus_client', 'apscheduler'))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
