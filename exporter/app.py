"""The long-running exporter: config -> scheduler -> probes -> store -> HTTP.

The config is loaded and validated before anything starts (a bad file exits 2 and nothing
listens). A reload (SIGHUP or POST /-/reload) validates the new file, and the web config
(users, certificates), completely first; if either fails, both running ones stay, the
error is logged and the reload metric goes to 0. Reloads asked for while one runs are
coalesced into one more, which starts when it ends (100 SIGHUPs in a second: two reloads).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from . import config
from .admission import allowed_concrete, mx_refusal
from .deadline import Deadline
from .errors import ConfigError
from .http import RESERVED_FDS, Server
from .metrics import Renderer, render_probe
from .report.transcript import MAX_TRANSCRIPTS, Transcript, debug_text
from .runner import Refusal, RefusalKind, run_target
from .scheduler import DEFAULT_CONCURRENCY, ProbeScheduler
from .selfmetrics import ExporterMetrics
from .store import Entry, ResultStore, TargetKey, key_of
from .targets import Discovery, static_expansion

if TYPE_CHECKING:
    from .webconfig import WebConfig

log = logging.getLogger(__name__)


class Exporter:
    def __init__(
        self,
        load: Callable[[], config.Config],
        listen: tuple[str, int],
        *,
        web_config_file: str | None = None,
        web_config: WebConfig | None = None,
        concurrency: int | None = None,
        initial: config.Config | None = None,
        shard: tuple[int, int] | None = None,
        schedule: bool = True,
        exporter_metrics: bool = True,
        listen_note: str = "",
    ) -> None:
        self._load = load
        self._listen = listen
        self._web_config_file = web_config_file
        self._web_config = web_config  # the file's content, when the caller loaded it already
        # The pipeline: the scheduler (built in run) records results into the store; the
        # renderer, subscribed to the store, renders each entry as it is recorded; the HTTP
        # server joins the rendered pieces on a scrape and asks ``probe`` for /probe.
        self.store = ResultStore()
        self.renderer = Renderer(self.store)  # subscribes to the store
        self.own = ExporterMetrics(process=exporter_metrics)
        self._listen_note = listen_note
        self.ready = False
        self.config: config.Config | None = initial
        if initial is not None:
            self._mark_reload(True)
        self._concurrency = concurrency
        self.timeout_offset = 0.5
        self._shard = shard
        self._schedule = schedule
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.server: Server | None = None
        self._reloads: set[asyncio.Task[str | None]] = set()
        # The reload running now, and the one that will run after it (shared by everyone who
        # asks meanwhile: it reads the files after they asked, so it answers them all).
        self._reload_running: asyncio.Task[str | None] | None = None
        self._reload_next: asyncio.Task[str | None] | None = None
        self.scheduler: ProbeScheduler | None = None
        # (config, its (module, mx, host, port) targets): what /probe may always probe
        self._configured: tuple[config.Config | None, frozenset[tuple[str, bool, str, int]]] = (
            None,
            frozenset(),
        )

    def load_initial(self) -> config.Config:
        """Load config and web config; raises ConfigError before anything is started."""
        self.config = self._load()
        self._mark_reload(True)
        return self.config

    async def run(self, started: Callable[[Exporter], None] | None = None) -> None:
        if self.config is None:
            self.load_initial()
        assert self.config is not None
        loaded = (
            (self._web_config, self._web_config.ssl_context())
            if self._web_config is not None
            else self._load_web()
        )
        web, ssl_context = loaded if loaded is not None else (None, None)
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.scheduler = ProbeScheduler(
            self.store,
            self.own,
            concurrency=self._concurrency or DEFAULT_CONCURRENCY,
            shard=self._shard,
        )
        self.scheduler.apply(self._scheduled(self.config))
        reserved = (self._concurrency or DEFAULT_CONCURRENCY) + RESERVED_FDS
        self.server = Server(self, self._listen, web, ssl_context, reserved_fds=reserved)
        await self.server.start()
        # The first log line says where to look; no probe has run yet to log before it.
        scheme = "https" if ssl_context else "http"
        log.info(
            "listening on %s, status page %s, %d targets%s",
            listen_text(self._listen[0], self.server.port),
            status_url(scheme, self._listen[0], self.server.port),
            len(self.config.targets),
            f"; {self._listen_note}" if self._listen_note else "",
        )
        self.scheduler.start()
        for sig, handler in (
            (signal.SIGHUP, self._on_sighup),
            (signal.SIGTERM, self.stop),
            (signal.SIGINT, self.stop),
        ):
            # Only the main thread may own signals; tests run the exporter in another one.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(sig, handler)
        self.ready = True
        if started is not None:
            started(self)
        try:
            await self._stop.wait()
        finally:
            self.ready = False
            self.scheduler.shutdown()
            await self.server.stop()
            log.info("stopped")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading configuration")
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)  # a task nobody holds may be collected before it ends
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> str | None:
        """Load and apply a new config (and web config). None, or the error message.

        The answer is that of a reload that read the files after this call: the next one to
        start. Calls made while a reload runs share that next one, so a burst of SIGHUPs
        costs two reloads, not one each."""
        if self._reload_next is None:
            self._reload_next = asyncio.get_running_loop().create_task(
                self._reload_after(self._reload_running)
            )
        # Shielded: a client that hangs up must not cancel a reload others wait for.
        return await asyncio.shield(self._reload_next)

    async def _reload_after(self, previous: asyncio.Task[str | None] | None) -> str | None:
        if previous is not None:
            await asyncio.wait([previous])
        self._reload_next = None  # from here on, new callers need another run
        self._reload_running = asyncio.current_task()  # type: ignore[assignment]
        try:
            return await self._reload_now()
        finally:
            self._reload_running = None

    async def _reload_now(self) -> str | None:
        """The files are read and validated in a worker thread (10,000 targets take most
        of a second) so probes go on meanwhile."""
        try:
            new = await asyncio.to_thread(self._load)
            web = await asyncio.to_thread(self._load_web)
        except ConfigError as exc:
            self._mark_reload(False)
            log.error("reload failed, keeping the running configuration: %s", exc)
            return str(exc)
        assert self.scheduler is not None
        self.scheduler.apply(self._scheduled(new))
        self.config = new
        if web is not None and self.server is not None:
            # Removed users are refused and renewed certificates served from the next
            # request and connection on (exporter-toolkit re-reads its file the same way).
            if isinstance(self.server.web, type(web[0])):
                web[0].keep_logins(self.server.web)
            self.server.web, self.server.ssl_context = web
        self._mark_reload(True)
        log.info("configuration reloaded: %d targets", len(new.targets))
        return None

    def _load_web(self) -> tuple[WebConfig, ssl.SSLContext | None] | None:
        if not self._web_config_file:
            return None
        from . import webconfig

        web = webconfig.load(self._web_config_file)
        return web, web.ssl_context()

    async def probe(
        self, target: str, module: str | None, scrape_timeout: str | None, debug: bool = False
    ) -> str | Refusal:
        """Answer /probe: probe ``target`` with ``module`` now, within the scrape's timeout.
        The exposition text of its results, or why it was refused. With ``debug``, the
        probe's transcript, the metrics and the module instead (``/probe?debug=true``),
        under the same admission rules."""
        assert self._loop is not None
        cfg = self.config
        assert cfg is not None
        name = (
            module
            or cfg.default_module
            or (next(iter(cfg.modules)) if len(cfg.modules) == 1 else None)
        )
        if name is None:
            return Refusal(
                RefusalKind.INVALID, "module parameter is missing (and no defaults.module is set)\n"
            )
        mod = cfg.modules.get(name)
        if mod is None:
            return Refusal(RefusalKind.INVALID, f"unknown module {name!r}\n")
        mx = target.startswith("mx:")
        if mx and mod.protocol != "smtp":
            return Refusal(
                RefusalKind.INVALID,
                f"mx: targets are probed over SMTP; module {name!r} has protocol {mod.protocol}\n",
            )
        try:
            host, port = config.parse_target(target[3:] if mx else target, mod.default_port)
        except ValueError as exc:
            return Refusal(RefusalKind.INVALID, f"invalid target {target!r}: {exc}\n")
        budget = mod.timeout
        if scrape_timeout:
            try:
                offered = float(scrape_timeout)
            except ValueError:
                return Refusal(
                    RefusalKind.INVALID, "invalid X-Prometheus-Scrape-Timeout-Seconds header\n"
                )
            # Leave Prometheus time to receive the answer (blackbox's --timeout-offset).
            budget = min(budget, max(offered - self.timeout_offset, 0.1))
        tgt = config.Target(target, host, port, mod, mx=mx)
        assert self.scheduler is not None
        refusal = self.scheduler.on_demand_refusal(needs_resolver=not mx and not config.is_ip(host))
        if refusal is not None:
            self.own.probe_refused.labels("busy").inc()
            return Refusal(RefusalKind.BUSY, refusal)
        # /probe?debug=true: one transcript per concrete target probed, for the first
        # MAX_TRANSCRIPTS of them (an mx: domain may list hundreds of hosts).
        transcripts: dict[TargetKey, Transcript] | None = {} if debug else None
        untold = 0

        def wire(c: config.Target) -> Transcript | None:
            nonlocal untold
            if transcripts is None:
                return None
            if len(transcripts) >= MAX_TRANSCRIPTS:
                untold += 1
                return None
            t = transcripts[key_of(c)] = Transcript()
            return t

        async with self.scheduler.on_demand():
            # The deadline starts once the request holds its slot: nothing before it is
            # charged to the probe's phases.
            deadline = Deadline.after(budget)
            restricted = self._restricted(cfg, tgt)
            discoveries: list[Discovery] = []
            if tgt.mx:
                if restricted and (why := mx_refusal(mod, tgt, None)) is not None:
                    return self._forbidden(mod, target, why)  # before any lookup
                scheduler = self.scheduler
                run = await run_target(
                    tgt,
                    scheduler.resolver,
                    lambda c: scheduler.probe_on_demand(c, deadline, wire(c)),
                    deadline.remaining(),
                    admit=(lambda d: mx_refusal(mod, tgt, d.concrete)) if restricted else None,
                )
                if run.refused is not None:
                    return self._forbidden(mod, target, run.refused)
                # A failed MX lookup or a null MX is an entry of its own (phase mx_lookup).
                entries = [Entry(c, r) for c, r in run.results]
                discoveries.append(run.discovery)
            else:
                concrete = (
                    await allowed_concrete(mod, tgt, deadline)
                    if restricted
                    else (static_expansion(tgt), "")  # no DNS to wait for
                )
                if concrete[0] is None:
                    return self._forbidden(mod, target, concrete[1])
                entries = await self._probe_concrete(concrete[0], deadline, wire)
        if not entries and transcripts is None:
            return ""
        if mod.canary is not None:
            entries = [self._with_last_canary(e) for e in entries]
        text = render_probe(entries, discoveries) if entries else ""
        if transcripts is None:
            return text
        probes = [
            (e.target, e.result, transcripts.get(key_of(e.target)))
            for e in entries
            if e.result is not None
        ]
        notes = [f"deadline {budget:g}s", *(_discovery_note(d) for d in discoveries)]
        if untold:
            notes.append(f"{untold} more addresses probed than the {MAX_TRANSCRIPTS} logged")
        return debug_text(target, mod, probes, text, notes)

    def _with_last_canary(self, entry: Entry) -> Entry:
        """``entry`` with the last scheduled canary of its target, when there is one. A
        canary runs at its own interval (minutes), never per scrape; without this, /probe
        of a target whose canary is lost would look healthy."""
        stored = self.store.last_canary(entry.target)
        if stored is None:
            return entry
        return replace(entry, routes=stored.routes)

    def _restricted(self, cfg: config.Config, target: config.Target) -> bool:
        """Whether /probe must check ``target`` against its module's allow-list: a module
        that carries credentials, or has ``probe_allow``, probes only the targets configured
        with it and those ``probe_allow`` names; any other module, anything."""
        mod = target.module
        restricted = mod.probe_allow is not None or mod.carries_credentials
        return restricted and not self._is_configured(cfg, target)

    def _is_configured(self, cfg: config.Config, target: config.Target) -> bool:
        """Whether ``target`` (host and port, or mx: domain) is configured with its module."""
        if self._configured[0] is not cfg:
            self._configured = (
                cfg,
                frozenset(
                    (t.module.name, t.mx, t.host.rstrip(".").lower(), t.port) for t in cfg.targets
                ),
            )
        key = (target.module.name, target.mx, target.host.rstrip(".").lower(), target.port)
        return key in self._configured[1]

    def _forbidden(self, mod: config.Module, target: str, why: str) -> Refusal:
        self.own.probe_refused.labels("forbidden").inc()
        log.warning("/probe refused: target %r with module %r: %s", target, mod.name, why)
        what = "carries credentials" if mod.carries_credentials else "has probe_allow"
        return Refusal(
            RefusalKind.FORBIDDEN,
            f"module {mod.name!r} {what}, so /probe only probes the targets configured with "
            f"it and those its probe_allow names; {target!r} is refused: {why}. To allow it, "
            f"add it to targets with module {mod.name!r}, or to "
            f"modules.{mod.name}.probe_allow (hosts: [name, '*.domain', 'name:port'], "
            "networks: [CIDR]).\n",
        )

    async def _probe_concrete(
        self,
        concrete: tuple[config.Target, ...],
        deadline: Deadline,
        wire: Callable[[config.Target], Transcript | None],
    ) -> list[Entry]:
        """Probe the concrete targets of one request, all by ``deadline``; ``wire`` gives
        each its debug transcript, if any."""
        scheduler = self.scheduler
        assert scheduler is not None
        if not concrete:
            return []
        if len(concrete) == 1:  # the usual case: no task to spawn
            c = concrete[0]
            return [Entry(c, await scheduler.probe_on_demand(c, deadline, wire(c)))]
        results = await asyncio.gather(
            *(scheduler.probe_on_demand(c, deadline, wire(c)) for c in concrete)
        )
        return [Entry(c, r) for c, r in zip(concrete, results, strict=True)]

    def _scheduled(self, cfg: config.Config) -> config.Config:
        """What the scheduler runs: ``cfg``, or none of its targets with --no-scheduler
        (they are still listed on /sd for Prometheus to probe through /probe)."""
        return cfg if self._schedule else dataclasses.replace(cfg, targets=())

    def _mark_reload(self, ok: bool) -> None:
        self.own.reload_ok.set(1 if ok else 0)
        if ok:
            self.own.reload_time.set(time.time())


def _discovery_note(discovery: Discovery) -> str:
    """The MX lookup of an mx: target, as a line of its debug transcript."""
    hosts = sorted({dict(c.labels).get("mx_host", c.host) for c in discovery.concrete})
    failure = discovery.failure
    if failure is not None:
        return f"MX lookup of {discovery.target.host}: {failure.kind}: {failure.detail}"
    return f"MX lookup of {discovery.target.host}: {', '.join(hosts) or 'no hosts'}"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def listen_text(host: str, port: int) -> str:
    """``0.0.0.0:10525 (every address)``, ``127.0.0.1:10525``, ``[::1]:10525``."""
    if not host:
        return f"0.0.0.0:{port} (every address)"
    return f"{_bracket(host)}:{port}"


def status_url(scheme: str, host: str, port: int) -> str:
    """Where a browser on this host finds the status page."""
    shown = {"": "localhost", "0.0.0.0": "localhost", "::": "localhost"}.get(host, host)
    return f"{scheme}://{_bracket(shown)}:{port}/"
