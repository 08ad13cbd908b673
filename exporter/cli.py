"""Command line orchestration: ``main`` reads the flags (``flags``) and runs ``--once``
(probe every target, print a report), ``--config.check``, ``--healthcheck`` or the exporter.

Exit codes of ``--once``: 0 every target passed, 1 any failed, 2 config or usage error;
with ``--output nagios`` the plugin convention 0/1/2/3 instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import config, logs, probe, report
from .errors import ConfigError
from .flags import DEFAULT_PORT as DEFAULT_PORT  # importable from here, as before the split
from .flags import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    adhoc_config,
    build_parser,
    listen_address,
    parse_listen,
)
from .results import ProbeResult

if TYPE_CHECKING:
    from .results.domain import DomainResult

log = logging.getLogger("exporter")
ONCE_CONCURRENCY = 64
Canaries = report.Canaries


Canaries = report.Canaries


async def probe_all(
    cfg: config.Config, concurrency: int = ONCE_CONCURRENCY
) -> tuple[list[ProbeResult], Canaries, list[DomainResult]]:
    """Probe every target once, concurrently (bounded), in config order, and check every
    mail domain a module asks for (beside the probes); then send the canary of every module
    that has one, through targets whose probe passed."""
    from .canary import run_canaries
    from .discovery import make_resolver
    from .maildomain import check_domain, domain_checks
    from .maildomain.dnscache import DNSCache
    from .runner import run_target

    gate = asyncio.Semaphore(concurrency)
    resolver = make_resolver(cfg.dns)

    async def one(target: config.Target) -> ProbeResult:
        async with gate:
            return await probe.run(target)

    domains = asyncio.gather(
        *(check_domain(spec, resolver) for spec in domain_checks(list(cfg.targets)).values())
    )
    # A failed MX lookup or a null MX is a failed result of its own (phase mx_lookup), so
    # it is a row, a JSON object, a CRITICAL line and exit 1, never an empty report.
    runs = await asyncio.gather(*(run_target(t, resolver, one) for t in cfg.targets))
    results = [r for run in runs for _, r in run.results]
    # The canary rule is the scheduler's (Run.canary_target); --once sends each due one.
    due = [t for run in runs if (t := run.canary_target) is not None]
    cache = DNSCache(resolver)  # the canaries' DKIM keys
    sent = await asyncio.gather(
        *(run_canaries(t, t.module.canary, cache) for t in due if t.module.canary)
    )
    canaries = {(t.name, t.module.name): c for t, c in zip(due, sent, strict=True)}
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


def setup_logging(level: str, fmt: str) -> None:
    """Logs as Prometheus's exporters write them (see ``exporter.logs``)."""
    logs.setup(level, fmt)


def serve(args: argparse.Namespace, initial: config.Config) -> int:
    """Run the exporter until SIGTERM/SIGINT. ``initial`` is already validated."""
    from .app import Exporter

    listen_text = listen_address(args)
    listen = parse_listen(listen_text)
    path = args.config_file
    note = ""
    if args.demo:
        note = (
            "demo: serving loopback only, as /probe makes the exporter connect anywhere "
            "(--web.listen-address to serve elsewhere)"
            if args.listen is None
            else "demo: /probe is open to every client that reaches this address"
        )

    def load() -> config.Config:
        # The demo's config is generated, not read: a reload re-applies it.
        return config.load(path) if path else initial

    web = None
    if args.web_config_file:
        from . import webconfig

        web = webconfig.load(args.web_config_file)  # fail before starting anything
    exporter = Exporter(
        load,
        listen,
        web_config_file=args.web_config_file,
        web_config=web,
        concurrency=args.concurrency,
        initial=initial,
        shard=args.shard,
        schedule=args.scheduler,
        exporter_metrics=not args.disable_exporter_metrics,
        listen_note=note,
    )
    exporter.timeout_offset = args.timeout_offset
    try:
        asyncio.run(exporter.run())
    except OSError as exc:
        print(f"error: cannot listen on {listen_text}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def healthcheck(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--healthcheck``: 0 when the exporter the flags describe answers, else 1."""
    from . import healthcheck as hc

    if args.healthcheck_pid is not None:
        try:
            args, _ = parser.parse_known_args(hc.flags_of_process(args.healthcheck_pid))
        except OSError as exc:
            print(f"unhealthy: cannot read the flags of process {args.healthcheck_pid}: {exc}")
            return EXIT_FAILED
    try:
        host, port = parse_listen(listen_address(args))
        result = hc.check(host, port, args.web_config_file)
    except (ConfigError, ValueError) as exc:
        print(f"unhealthy: {exc}")
        return EXIT_FAILED
    print(f"{'healthy' if result.healthy else 'unhealthy'}: {result.detail}")
    return EXIT_OK if result.healthy else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    if args.healthcheck:
        return healthcheck(parser, args)
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
        and all(c.success for routes in canaries.values() for c in routes)
        and all(d.success for d in domains)
    )
    return EXIT_OK if ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
