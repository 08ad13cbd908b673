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
import logging
import signal
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import config
from .discovery import expand, static_expansion
from .errors import ConfigError
from .http import RESERVED_FDS, Server
from .metrics import render_probe
from .probe.deadline import Deadline
from .scheduler import DEFAULT_CONCURRENCY, ProbeScheduler
from .selfmetrics import ExporterMetrics
from .store import Entry, ResultStore

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
        concurrency: int | None = None,
        initial: config.Config | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self._load = load
        self._listen = listen
        self._web_config_file = web_config_file
        self.store = ResultStore()
        self.own = ExporterMetrics()
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
        self._reloads: set[asyncio.Task[str | None]] = set()
        # The reload running now, and the one that will run after it (shared by everyone who
        # asks meanwhile: it reads the files after they asked, so it answers them all).
        self._reload_running: asyncio.Task[str | None] | None = None
        self._reload_next: asyncio.Task[str | None] | None = None
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
        self.scheduler.start()
        reserved = (self._concurrency or DEFAULT_CONCURRENCY) + RESERVED_FDS
        self.server = Server(self, self._listen, web, ssl_context, reserved_fds=reserved)
        await self.server.start()
        for sig, handler in (
            (signal.SIGHUP, self._on_sighup),
            (signal.SIGTERM, self.stop),
            (signal.SIGINT, self.stop),
        ):
            # Only the main thread may own signals; tests run the exporter in another one.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(sig, handler)
        self.ready = True
        scheme = "https" if ssl_context else "http"
        log.info(
            "listening on %s://%s:%d/metrics, %d targets",
            scheme,
            self._listen[0] or "0.0.0.0",
            self.server.port,
            len(self.config.targets),
        )
        if started is not None:
            started(self)
        try:
            await self._stop.wait()
        finally:
            self.ready = False
            self.scheduler.shutdown()
            await self.server.stop()

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
        self.scheduler.apply(new)
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
