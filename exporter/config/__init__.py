"""Configuration: the model (``model``: frozen dataclasses, no YAML), the shared validator
machinery (``validator``), the config tree's sections (``sections``) and the YAML loader
(``loader``).

The model's names are importable from here. ``load`` and ``parse`` (YAML), ``validate`` (a
tree already parsed) and ``read_secret_file`` are looked up on first use, so that code which
only needs the model (the probe, the send library) does not import the YAML parser.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .model import (
    AUTH_MECHANISMS,
    DEFAULT_PORTS,
    IP_PROTOCOLS,
    MAILBOX_AUTH_MECHANISMS,
    PROTOCOL_PORTS,
    PROTOCOLS,
    RESERVED_LABELS,
    AuthConfig,
    CanaryConfig,
    CanaryRoute,
    Config,
    DNSConfig,
    DomainChecks,
    IMAPConfig,
    IMAPTLSMode,
    Module,
    PostureConfig,
    ProbeAllow,
    Secret,
    Target,
    TLSMode,
    default_ehlo_name,
    ip_literal,
    is_ip,
    parse_duration,
    parse_target,
)

__all__ = [
    "AUTH_MECHANISMS",
    "DEFAULT_PORTS",
    "IP_PROTOCOLS",
    "MAILBOX_AUTH_MECHANISMS",
    "PROTOCOLS",
    "PROTOCOL_PORTS",
    "RESERVED_LABELS",
    "AuthConfig",
    "CanaryConfig",
    "CanaryRoute",
    "Config",
    "ConfigError",
    "DNSConfig",
    "DomainChecks",
    "IMAPConfig",
    "IMAPTLSMode",
    "Module",
    "PostureConfig",
    "ProbeAllow",
    "Secret",
    "TLSMode",
    "Target",
    "default_ehlo_name",
    "ip_literal",
    "is_ip",
    "load",
    "parse",
    "parse_duration",
    "parse_target",
    "read_secret_file",
    "validate",
]


def __getattr__(name: str) -> Any:
    # PEP 562: the loader (and with it PyYAML) is imported by the first caller that asks.
    if name in ("load", "parse", "_YAML_LOADER"):
        from . import loader

        return getattr(loader, name)
    if name == "validate":
        from .sections import validate

        return validate
    if name == "read_secret_file":
        from .validator import read_secret_file

        return read_secret_file
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
