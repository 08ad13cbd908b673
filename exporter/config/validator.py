"""The validator machinery every config file shares: the exporter's config, a module's
``canary.imap`` and the web config.

``Validator`` walks a parsed YAML tree and collects every problem with its key path, one
``path.key: message`` line each, instead of stopping at the first; ``Validator.raise_if_any``
turns them into one ``ConfigError``. Secrets are read here and wrapped in ``Secret``.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .model import Secret, parse_duration


class Validator:
    """Walks the YAML tree, collecting errors with key paths instead of stopping at one."""

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.errors: list[str] = []
        self.base = Path(file).parent if file and not file.startswith("<") else Path(".")

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}" if path else message)

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {type_name(value)}")
            return {}
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                why = (
                    f"did you mean '{hint[0]}'?"
                    if hint
                    else f"expected one of: {', '.join(allowed)}"
                )
                self.error(join(path, str(key)), f"unknown key ({why})")
        return value

    def typed(self, d: dict[str, Any], key: str, path: str, kind: type, default: Any) -> Any:
        if key not in d or d[key] is None:
            return default
        value = d[key]
        # bool is an int in Python; a YAML `yes` must not become port 1.
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            self.error(join(path, key), f"expected {kind.__name__}, got {type_name(value)}")
            return default
        return value

    def choice(
        self, d: dict[str, Any], key: str, path: str, choices: tuple[str, ...], default: str
    ) -> str:
        value = self.typed(d, key, path, str, default)
        if value not in choices:
            self.error(join(path, key), f"expected one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def duration(self, d: dict[str, Any], key: str, path: str, default: float) -> float:
        if key not in d or d[key] is None:
            return default
        value = d[key]
        if not isinstance(value, str):
            self.error(
                join(path, key),
                f"expected a duration like '30s' or '5m', got {type_name(value)} {value!r}",
            )
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.error(join(path, key), str(exc))
            return default
        if seconds <= 0:
            self.error(join(path, key), "must be greater than zero")
            return default
        return seconds

    def file_path(self, d: dict[str, Any], key: str, path: str) -> str | None:
        value = self.typed(d, key, path, str, None)
        if value is None:
            return None
        resolved = value if os.path.isabs(value) else str(self.base / value)
        if not os.path.isfile(resolved):
            self.error(join(path, key), f"file {value!r} does not exist")
            return None
        return resolved

    def secret(self, d: dict[str, Any], key: str, path: str) -> Secret | None:
        value = self.typed(d, key, path, str, None)
        if value is None:
            return None
        if key == "password_env":
            if not self.env.get(value):
                self.error(join(path, key), f"environment variable {value!r} is not set or empty")
                return None
            return Secret(self.env[value])
        resolved = value if os.path.isabs(value) else str(self.base / value)
        # The value is never shown: a password typed where the path belongs must not end up
        # in --config.check output, the log or the /-/reload answer.
        text, problem = read_secret_file(resolved)
        if problem is not None:
            self.error(join(path, key), f"{problem} (value not shown)")
            return None
        # Files written by editors and `echo` end in a newline that is not part of the password.
        text = text.removesuffix("\n").removesuffix("\r")
        if not text:
            self.error(join(path, key), "secret file is empty (value not shown)")
            return None
        return Secret(text)

    def raise_if_any(self) -> None:
        """Raise one ``ConfigError`` listing every problem found so far, if any."""
        if self.errors:
            raise ConfigError("\n".join(f"{self.file}: {e}" for e in self.errors))


MAX_SECRET_FILE = 64 * 1024


def read_secret_file(path: str) -> tuple[str, str | None]:
    """The text of a secret file, or ("", why not). Only a regular file is read, opened
    non-blocking so that a FIFO or device given by mistake cannot hang a (re)load; a UTF-8
    byte-order mark is not part of the secret."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        return "", "no such file"
    except OSError as exc:
        return "", f"cannot open the secret file: {exc.strerror}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "", "not a regular file"
        data = os.read(fd, MAX_SECRET_FILE + 1)
    except OSError as exc:
        return "", f"cannot read the secret file: {exc.strerror}"
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_FILE:
        return "", f"secret file larger than {MAX_SECRET_FILE // 1024} KiB"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        return "", "secret file is not UTF-8"


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def type_name(value: Any) -> str:
    return {
        dict: "mapping",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def hint(name: str, options: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
