"""YAML configuration -> frozen ``Config``, validated completely before anything runs.

Every problem is reported at once, one line each, naming the file and the key path::

    config.yml: targets[3].module: unknown module 'submision' (did you mean 'submission'?)

The keys each mapping may hold and their defaults come from the model's fields
(``config_keys`` / ``default_of``), so an option is declared once, in ``model``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .. import yamlguard
from ..errors import ConfigError
from .model import Config
from .sections import validate


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; raises ``ConfigError`` listing every problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", file=file) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("config file is not UTF-8", file=file) from exc
    return parse(text, file=file)


# libyaml's loader when PyYAML was built with it: 5x faster on a 10,000-target file and it
# leaves ~15 MB less of the pure-Python loader's node graph behind in the allocator.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError:
        # The pure-Python loader places errors where a reader looks for them (libyaml often
        # points past the end of the line), so a broken file is parsed again for the message.
        return yaml.safe_load(text)


def parse(text: str, *, file: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    problem = yamlguard.check(text, _YAML_LOADER)
    if problem is not None:
        raise ConfigError(problem, file=file)
    try:
        data = _load_yaml(text)
    # yamlguard bounds nesting and aliases; these are the last resort, so that a load or
    # reload always ends in a ConfigError (reload gauge 0, old config kept).
    except RecursionError as exc:
        raise ConfigError("nested too deeply", file=file) from exc
    except MemoryError as exc:
        raise ConfigError("too large to load", file=file) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {where}{problem}", file=file) from exc
    return validate(data, file=file, env=env)
