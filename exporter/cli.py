"""Command line: flags in the Prometheus style, ``--once`` reports, and (later) serving.

Exit codes of ``--once``: 0 every target passed, 1 any failed, 2 config or usage error;
with ``--output nagios`` the plugin convention 0/1/2/3 instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, config, probe, report
from .errors import ConfigError
from .results import ProbeResult

if TYPE_CHECKING:
    from .domain.results import DomainResult

log = logging.getLogger("exporter")
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
# Prometheus's exporter port list filled 9100-9999; this one is past it (25 for SMTP).
DEFAULT_PORT = 10525
ONCE_CONCURRENCY = 64


def parse_shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, got {text!r}")
    return int(index), int(count)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smtp-health-exporter",
        description="Prometheus exporter for the health of SMTP servers.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
        help="start an embedded SMTP server (STARTTLS + AUTH) and probe it",
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
        default=f":{DEFAULT_PORT}",
        help=f"address to serve metrics on (default :{DEFAULT_PORT})",
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
    data = {"modules": {"adhoc": module}, "targets": [{"target": args.target, "module": "adhoc"}]}
    import yaml

    return config.parse(yaml.safe_dump(data), file="command line")


Canaries = report.Canaries


async def probe_all(
    cfg: config.Config, concurrency: int = ONCE_CONCURRENCY
) -> tuple[list[ProbeResult], Canaries, list[DomainResult]]:
    """Probe every target once, concurrently (bounded), in config order, and check every
    mail domain a module asks for (beside the probes); then send the canary of every module
    that has one, through targets whose probe passed."""
    from .canary import run_canary
    from .discovery import expand, make_resolver
    from .domain import check_domain, domain_checks

    gate = asyncio.Semaphore(concurrency)
    resolver = make_resolver(cfg.dns)

    async def one(target: config.Target) -> ProbeResult:
        async with gate:
            return await probe.run(target)

    domains = asyncio.gather(
        *(check_domain(spec, resolver) for spec in domain_checks(list(cfg.targets)).values())
    )
    discoveries = await asyncio.gather(*(expand(t, resolver) for t in cfg.targets))
    for d in discoveries:
        if d.error or d.null_mx:
            log.warning("%s: %s", d.target.name, d.error or "null MX: the domain accepts no mail")
    concrete = [c for d in discoveries for c in d.concrete]
    results = list(await asyncio.gather(*(one(t) for t in concrete)))
    due = [
        (t, t.module.canary)
        for t, r in zip(concrete, results, strict=True)
        if r.success and t.module.canary is not None and not t.mx
    ]
    sent = await asyncio.gather(*(run_canary(t, c) for t, c in due if c is not None))
    canaries = {(t.name, t.module.name): c for (t, _), c in zip(due, sent, strict=True)}
    return results, canaries, list(await domains)


@contextlib.contextmanager
def demo_config() -> Iterator[config.Config]:
    """Start the embedded server and yield a config that probes it (STARTTLS + AUTH)."""
    from .embedded import EmbeddedSMTPServer, make_certificates

    with tempfile.TemporaryDirectory(prefix="smtp-health-demo-") as tmp:
        certs = make_certificates(Path(tmp))
        password_file = Path(tmp) / "password"
        password_file.write_text("demo-password\n")
        password_file.chmod(0o600)
        with EmbeddedSMTPServer(
            tls="starttls", ssl_context=certs.server_context(), users={"demo": "demo-password"}
        ) as server:
            text = f"""
modules:
  submission:
    tls: starttls
    tls_ca_file: {certs.ca_file}
    timeout: 5s
    auth: {{username: demo, password_file: {password_file}}}
targets:
  - target: 127.0.0.1:{server.port}
    module: submission
    interval: 5s
    labels: {{env: demo}}
"""
            yield config.parse(text, file="embedded demo config")


def parse_listen(text: str) -> tuple[str, int]:
    """``:10525``, ``127.0.0.1:10525``, ``[::1]:10525`` -> (host, port)."""
    host, port = config.parse_target(text if not text.startswith(":") else "0.0.0.0" + text, 0)
    if not port:
        raise ValueError(f"--web.listen-address {text!r}: expected [host]:port")
    return ("" if text.startswith(":") else host), port


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json

        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JSONFormatter()
        if fmt == "json"
        else logging.Formatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)r")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper().replace("WARN", "WARNING"))
    # APScheduler logs every job run at INFO; our own logs say what matters.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def serve(args: argparse.Namespace, initial: config.Config) -> int:
    """Run the exporter until SIGTERM/SIGINT. ``initial`` is already validated."""
    from .app import Exporter

    listen = parse_listen(args.listen)
    path = args.config_file

    def load() -> config.Config:
        # The demo's config is generated, not read: a reload re-applies it.
        return config.load(path) if path else initial

    if args.web_config_file:
        from . import webconfig

        webconfig.load(args.web_config_file)  # fail before starting anything
    exporter = Exporter(
        load,
        listen,
        web_config_file=args.web_config_file,
        concurrency=args.concurrency,
        initial=initial,
        shard=args.shard,
    )
    exporter.timeout_offset = args.timeout_offset
    try:
        asyncio.run(exporter.run())
    except OSError as exc:
        print(f"error: cannot listen on {args.listen}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    sources = sum(bool(x) for x in (args.config_file, args.target, args.demo))
    if sources != 1:
        parser.error("give exactly one of --config.file, --target, --demo")
    nagios = args.output == "nagios"
    try:
        thresholds = report.NagiosThresholds(
            args.warning_cert_days,
            args.critical_cert_days,
            config.parse_duration(args.warning_latency),
            config.parse_duration(args.critical_latency),
        )
        with contextlib.ExitStack() as stack:
            if args.demo:
                cfg = stack.enter_context(demo_config())
            elif args.target:
                cfg = adhoc_config(args)
            else:
                cfg = config.load(args.config_file)
            if args.config_check:
                if args.web_config_file:  # users, TLS files and certificates, as at start
                    from . import webconfig

                    webconfig.load(args.web_config_file)
                print(f"{cfg.source}: OK, {len(cfg.modules)} modules, {len(cfg.targets)} targets")
                if args.web_config_file:
                    print(f"{args.web_config_file}: OK")
                return EXIT_OK
            if not args.once:
                if args.target:
                    parser.error("--target is for --once; serve a config file or --demo")
                return serve(args, cfg)
            results, canaries, domains = asyncio.run(probe_all(cfg))
    except (ConfigError, ValueError) as exc:
        if nagios:
            print(f"SMTP UNKNOWN - {exc}".splitlines()[0])
            return report.UNKNOWN
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if nagios:
        text, code = report.nagios(results, thresholds, canaries, domains)
        sys.stdout.write(text)
        return code
    sys.stdout.write(
        report.json_lines(results, canaries, domains)
        if args.output == "json"
        else report.table(results, canaries, domains)
    )
    ok = (
        all(r.success for r in results)
        and all(c.success for c in canaries.values())
        and all(d.success for d in domains)
    )
    return EXIT_OK if ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
