"""The long-running exporter: config -> scheduler -> probes -> store -> HTTP.

The config is loaded and validated before anything starts (a bad file exits 2 and nothing
listens). A reload (SIGHUP or POST /-/reload) validates the new file completely first; if
it fails, the running config stays, the error is logged and the reload metric goes to 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable

from . import config
from .discovery import expand, static_expansion
from .errors import ConfigError
from .http import Server
from .metrics import render_probe
from .probe.deadline import Deadline
from .scheduler import DEFAULT_CONCURRENCY, ProbeScheduler
from .selfmetrics import ExporterMetrics
from .store import Entry, ResultStore

log = logging.getLogger(__name__)


class Exporter:
    def __init__(
        self,
        load: Callable[[], config.Config],
        listen: tuple[str, int],
        *,
        web_config_file: str | None = None,
        concurrency: int | None = None,
        initial: config.Config | None = None,
        shard: tuple[int, int] | None = None,
        exporter_metrics: bool = True,
        listen_note: str = "",
    ) -> None:
        self._load = load
        self._listen = listen
        self._web_config_file = web_config_file
        self.store = ResultStore()
        self.own = ExporterMetrics(process=exporter_metrics)
        self._listen_note = listen_note
        self.ready = False
        self.config: config.Config | None = initial
        if initial is not None:
            self._mark_reload(True)
        self._concurrency = concurrency
        self.timeout_offset = 0.5
        self._shard = shard
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.server: Server | None = None
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[str | None]] = set()
        self.scheduler: ProbeScheduler | None = None

    def load_initial(self) -> config.Config:
        """Load config and web config; raises ConfigError before anything is started."""
        self.config = self._load()
        self._mark_reload(True)
        return self.config

    async def run(self, started: Callable[[Exporter], None] | None = None) -> None:
        if self.config is None:
            self.load_initial()
        assert self.config is not None
        web = None
        ssl_context = None
        if self._web_config_file:
            from . import webconfig

            web = webconfig.load(self._web_config_file)
            ssl_context = web.ssl_context()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.scheduler = ProbeScheduler(
            self.store,
            self.own,
            concurrency=self._concurrency or DEFAULT_CONCURRENCY,
            shard=self._shard,
        )
        self.scheduler.apply(self.config)
        self.server = Server(self, self._listen, web, ssl_context)
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
        """Load and apply a new config. None, or the error message. The file is read and
        validated in a worker thread (10,000 targets take most of a second) so probes go on
        meanwhile; reloads apply one at a time, in the order asked."""
        async with self._reload_lock:
            try:
                new = await asyncio.to_thread(self._load)
            except ConfigError as exc:
                self._mark_reload(False)
                log.error("reload failed, keeping the running configuration: %s", exc)
                return str(exc)
            assert self.scheduler is not None
            self.scheduler.apply(new)
            self.config = new
            self._mark_reload(True)
            log.info("configuration reloaded: %d targets", len(new.targets))
            return None

    async def probe(
        self, target: str, module: str | None, scrape_timeout: str | None
    ) -> tuple[int, str]:
        """Answer /probe: probe ``target`` with ``module`` now, within the scrape's timeout."""
        assert self._loop is not None
        cfg = self.config
        assert cfg is not None
        name = (
            module
            or cfg.default_module
            or (next(iter(cfg.modules)) if len(cfg.modules) == 1 else None)
        )
        if name is None:
            return 400, "module parameter is missing (and no defaults.module is set)\n"
        mod = cfg.modules.get(name)
        if mod is None:
            return 400, f"unknown module {name!r}\n"
        mx = target.startswith("mx:")
        try:
            host, port = config.parse_target(target[3:] if mx else target, mod.default_port)
        except ValueError as exc:
            return 400, f"invalid target {target!r}: {exc}\n"
        budget = mod.timeout
        if scrape_timeout:
            try:
                offered = float(scrape_timeout)
            except ValueError:
                return 400, "invalid X-Prometheus-Scrape-Timeout-Seconds header\n"
            # Leave Prometheus time to receive the answer (blackbox's --timeout-offset).
            budget = min(budget, max(offered - self.timeout_offset, 0.1))
        tgt = config.Target(target, host, port, mod, mx=mx)
        entries = await self._probe_once(tgt, budget)
        if not entries:
            return 200, ""
        return 200, render_probe(entries)

    async def _probe_once(self, target: config.Target, budget: float) -> list[Entry]:
        """Expand (MX lookup, families) and probe, all within ``budget``."""
        assert self.scheduler is not None
        deadline = Deadline.after(budget)
        if target.mx:
            try:
                discovery = await asyncio.wait_for(
                    expand(target, self.scheduler.resolver), deadline.remaining()
                )
            except TimeoutError:
                return []
            concrete = discovery.concrete
        else:
            concrete = static_expansion(target)  # no DNS to wait for
        if len(concrete) == 1:  # the usual case: no task to spawn
            return [Entry(concrete[0], await self.scheduler.probe_on_demand(concrete[0], deadline))]
        results = await asyncio.gather(
            *(self.scheduler.probe_on_demand(c, deadline) for c in concrete)
        )
        return [Entry(c, r) for c, r in zip(concrete, results, strict=True)]

    def _mark_reload(self, ok: bool) -> None:
        self.own.reload_ok.set(1 if ok else 0)
        if ok:
            self.own.reload_time.set(time.time())


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
