"""Run the real exporter (scheduler + HTTP) in a background thread for tests."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.app import Exporter
from exporter.embedded import free_port


class RunningExporter:
    def __init__(
        self,
        config_file: Path,
        web_config_file: str | None = None,
        concurrency: int | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self.config_file = config_file
        self.port = free_port()
        self.exporter = Exporter(
            lambda: config.load(config_file),
            ("127.0.0.1", self.port),
            web_config_file=web_config_file,
            concurrency=concurrency,
            shard=shard,
        )
        self.exporter.load_initial()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self.exporter.run(started=lambda _: self._started.set()))
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._started.set()

    def start(self) -> RunningExporter:
        self._thread.start()
        if not self._started.wait(10) or self._error is not None:
            raise RuntimeError(f"exporter did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        self.exporter.stop()
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, method: str = "GET") -> tuple[int, str]:
        req = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = self.get("/metrics")
        assert status == 200
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def value(self, name: str, **labels: str) -> float | None:
        want = set(labels.items())
        for (n, lab), v in self.samples().items():
            if n == name and want <= set(lab):
                return v
        return None


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
