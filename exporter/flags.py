"""The command line's flags: the parser (Prometheus-style names), ``--version``, the listen
address, and the one-target config the ad-hoc flags (``--target``, ``--auth-*``) build.
What the flags then make happen is ``cli``'s."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

from . import __version__, config
from .errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
# Prometheus's exporter port list filled 9100-9999; this one is past it (25 for SMTP).
DEFAULT_PORT = 10525


def parse_shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, got {text!r}")
    return int(index), int(count)


class Parser(argparse.ArgumentParser):
    """A usage error is one line with a hint, as Prometheus's own binaries print it, not the
    whole usage; ``--help`` still shows everything."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}, try --help\n")


def version_text() -> str:
    """``--version``: version, revision and Python, in the layout of Prometheus's binaries."""
    return (
        f"smtp-health-exporter, version {__version__} (revision: {revision()})\n"
        f"  python version:   {platform.python_version()} ({platform.python_implementation()})\n"
        f"  platform:         {sys.platform}/{platform.machine()}\n"
    )


def revision() -> str:
    """The git commit the code comes from: the checkout's HEAD when run from one, else what
    pip recorded when it installed from a git URL, else ``unknown``."""
    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            proc = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if proc.returncode == 0 and proc.stdout.strip():
                return proc.stdout.strip()
    with contextlib.suppress(Exception):
        from importlib.metadata import distribution

        direct = distribution("smtp-health-exporter").read_text("direct_url.json")
        if direct:
            import json

            commit = json.loads(direct).get("vcs_info", {}).get("commit_id")
            if commit:
                return str(commit)
    return "unknown"


class _Version(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        sys.stdout.write(version_text())
        parser.exit(EXIT_OK)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="smtp-health-exporter",
        description="Prometheus exporter for the health of SMTP servers.",
    )
    p.add_argument(
        "--version", action=_Version, nargs=0, help="print version, revision and Python; exit"
    )
    p.add_argument(
        "--config.file", dest="config_file", metavar="PATH", help="YAML configuration file"
    )
    p.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration, print a summary and exit",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="probe every target once, print a report, exit non-zero on failure",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="start an embedded SMTP server (STARTTLS + AUTH) and probe it; "
        "serves on 127.0.0.1 unless --web.listen-address says otherwise",
    )
    p.add_argument(
        "--healthcheck",
        action="store_true",
        help="check /-/healthy of the exporter these --web.* flags describe; exit 0 if it "
        "answers, 1 if not (for container health checks)",
    )
    p.add_argument(
        "--healthcheck.of-pid",
        dest="healthcheck_pid",
        type=int,
        metavar="PID",
        help="with --healthcheck: take the --web.* flags from process PID's command line",
    )
    p.add_argument(
        "--output",
        choices=("table", "json", "nagios"),
        default="table",
        help="report format for --once (json: one object per line)",
    )
    p.add_argument(
        "--log.level", dest="log_level", default="info", choices=("debug", "info", "warn", "error")
    )
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=("logfmt", "json"))
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        default=None,
        help=f"address to serve metrics on (default :{DEFAULT_PORT}; "
        f"127.0.0.1:{DEFAULT_PORT} with --demo)",
    )
    p.add_argument(
        "--web.disable-exporter-metrics",
        dest="disable_exporter_metrics",
        action="store_true",
        help="leave the process_* and python_* metrics out of /metrics",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="exporter-toolkit web config: TLS and basic auth",
    )
    p.add_argument(
        "--shard",
        type=parse_shard,
        default=None,
        metavar="I/N",
        help="probe only shard I of N (0 <= I < N) of the configured targets, by a stable hash",
    )
    p.add_argument(
        "--scheduler",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="probe the configured targets on their intervals; --no-scheduler: only answer "
        "/probe (the targets still feed /sd, for a fleet Prometheus drives)",
    )
    p.add_argument(
        "--web.timeout-offset",
        dest="timeout_offset",
        type=float,
        default=0.5,
        help="/probe: seconds subtracted from Prometheus's scrape timeout (default 0.5)",
    )
    p.add_argument(
        "--probe.concurrency",
        dest="concurrency",
        type=int,
        default=None,
        help="most probes in flight at once (default 1000)",
    )

    adhoc = p.add_argument_group("ad-hoc target (instead of --config.file)")
    adhoc.add_argument("--target", help="host[:port] to probe")
    adhoc.add_argument(
        "--protocol",
        choices=config.PROTOCOLS,
        default="smtp",
        help="smtp, or imap / pop3: probe a mailbox server (default ports 143/993, 110/995)",
    )
    adhoc.add_argument("--mailbox", help="with --protocol imap: the mailbox to EXAMINE (INBOX)")
    adhoc.add_argument("--tls", choices=[m.value for m in config.TLSMode], default="starttls")
    adhoc.add_argument(
        "--tls-optional",
        action="store_true",
        help="with --tls starttls: report, but do not require, STARTTLS",
    )
    adhoc.add_argument(
        "--no-tls-verify",
        action="store_true",
        help="record but do not require a trusted, matching certificate",
    )
    adhoc.add_argument("--tls-ca-file", help="CA bundle to verify against (default: system)")
    adhoc.add_argument("--tls-server-name", help="name to check the certificate against")
    adhoc.add_argument("--ehlo-name", help="name sent with EHLO")
    adhoc.add_argument("--timeout", default="10s", help="deadline for the whole probe")
    adhoc.add_argument("--ip-protocol", choices=config.IP_PROTOCOLS, default="auto")
    adhoc.add_argument("--auth-user", help="AUTH username")
    adhoc.add_argument("--auth-password-file", help="file holding the AUTH password")
    adhoc.add_argument("--auth-password-env", help="environment variable holding the password")
    adhoc.add_argument("--auth-mechanism", choices=config.AUTH_MECHANISMS, default="auto")

    ng = p.add_argument_group("--output nagios thresholds")
    ng.add_argument("--warning.cert-days", dest="warning_cert_days", type=float, default=14)
    ng.add_argument("--critical.cert-days", dest="critical_cert_days", type=float, default=7)
    ng.add_argument("--warning.latency", dest="warning_latency", default="5s")
    ng.add_argument("--critical.latency", dest="critical_latency", default="10s")
    return p


def adhoc_config(args: argparse.Namespace) -> config.Config:
    """A one-target config from flags, validated by the same code as a file."""
    module: dict[str, object] = {
        "protocol": args.protocol,
        "tls": args.tls,
        "tls_required": not args.tls_optional,
        "tls_verify": not args.no_tls_verify,
        "timeout": args.timeout,
        "ip_protocol": args.ip_protocol,
    }
    for key, value in (
        ("tls_ca_file", args.tls_ca_file),
        ("ehlo_name", args.ehlo_name),
        ("tls_server_name", args.tls_server_name),
        ("mailbox", args.mailbox),
    ):
        if value:
            module[key] = os.path.abspath(value) if key == "tls_ca_file" else value
    secret_flags = {
        "password_file": args.auth_password_file,
        "password_env": args.auth_password_env,
    }
    if args.auth_user or any(secret_flags.values()):
        auth: dict[str, object] = {"username": args.auth_user, "mechanism": args.auth_mechanism}
        auth.update(
            {
                k: (os.path.abspath(v) if k == "password_file" else v)
                for k, v in secret_flags.items()
                if v
            }
        )
        module["auth"] = auth
    target: dict[str, object] = {"target": args.target, "module": "adhoc"}
    with contextlib.suppress(ValueError):  # a bad --timeout is reported by the validation
        # --once has no interval; a long --timeout must not trip "interval < timeout".
        target["interval"] = f"{max(config.parse_duration(args.timeout), 60.0)}s"
    data = {"modules": {"adhoc": module}, "targets": [target]}
    try:
        return config.validate(data, file=ADHOC_SOURCE)
    except ConfigError as exc:
        raise ConfigError(name_flags(str(exc))) from None


ADHOC_SOURCE = "command line"
# The ad-hoc flags build a config validated like a file; its errors name the flags.
_ADHOC_FLAGS = {
    "modules.adhoc.auth.username": "--auth-user",
    "modules.adhoc.auth.password_file": "--auth-password-file",
    "modules.adhoc.auth.password_env": "--auth-password-env",
    "modules.adhoc.auth.mechanism": "--auth-mechanism",
    "modules.adhoc.auth": "",  # the message names the flags
    "modules.adhoc.timeout": "--timeout",
    "modules.adhoc.tls_ca_file": "--tls-ca-file",
    "modules.adhoc.tls_server_name": "--tls-server-name",
    "modules.adhoc.ehlo_name": "--ehlo-name",
    "modules.adhoc.ip_protocol": "--ip-protocol",
    "modules.adhoc.tls_required": "--tls-optional",
    "modules.adhoc.tls": "--tls",
    "modules.adhoc.protocol": "--protocol",
    "modules.adhoc.mailbox": "--mailbox",
    "targets[0].target": "--target",
    "targets[0].interval": "--timeout",
}
_ADHOC_KEYS = {
    "password_file": "--auth-password-file",
    "password_env": "--auth-password-env",
    "username": "--auth-user",
}


def name_flags(message: str) -> str:
    """``command line: modules.adhoc.auth.password_file: ...`` -> ``--auth-password-file: ...``."""
    out = []
    for line in message.splitlines():
        prefix = f"{ADHOC_SOURCE}: "
        rest = line.removeprefix(prefix)
        path, sep, text = rest.partition(": ")
        if not line.startswith(prefix) or not sep:
            out.append(line)
            continue
        best = max(
            (k for k in _ADHOC_FLAGS if path == k or path.startswith(k + ".")),
            key=len,
            default=None,
        )
        if best is None:
            out.append(f"{path}: {text}")
            continue
        for key, flag in _ADHOC_KEYS.items():
            text = re.sub(rf"\b{key}\b", flag, text)
        flag = _ADHOC_FLAGS[best]
        out.append(f"{flag}: {text}" if flag else text)
    return "\n".join(out)


def listen_address(args: argparse.Namespace) -> str:
    """``--web.listen-address``, or its default: every address, but loopback only for
    ``--demo``, whose open ``/probe`` would let anyone who reaches it make us connect
    anywhere."""
    if args.listen is not None:
        return str(args.listen)
    return f"127.0.0.1:{DEFAULT_PORT}" if args.demo else f":{DEFAULT_PORT}"


def parse_listen(text: str) -> tuple[str, int]:
    """``:10525``, ``127.0.0.1:10525``, ``[::1]:10525`` -> (host, port)."""
    host, port = config.parse_target(text if not text.startswith(":") else "0.0.0.0" + text, 0)
    if not port:
        raise ValueError(f"--web.listen-address {text!r}: expected [host]:port")
    return ("" if text.startswith(":") else host), port
