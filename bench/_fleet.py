"""The real exporter (``python -m exporter``) scheduling N complete targets: STARTTLS + AUTH
against ``bench/_fastsmtp.py`` on one loopback address per target (127.30.x.y), so every
result carries TLS, certificate, extension and AUTH facts — the largest per-target state and
``/metrics`` block the exporter has. Used by ``render.py`` (end-to-end scrape) and
``memory.py`` (resident memory).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import _common as c

from exporter.embedded import make_certificates

OK = re.compile(rb"^smtp_probe_success\{[^}]*\} 1(?:\.0)?$", re.M)
PROBES_PER_SECOND = 150  # interval = N / this, at least 10 s: well within one core


@dataclass(frozen=True)
class Fleet:
    pid: int  # the exporter's
    port: int
    targets: int
    interval: float
    url: str

    def metrics(self, gzip: bool = False) -> tuple[bytes, float]:
        status, body, seconds = c.http_get(self.url + "/metrics", timeout=120, gzip=gzip)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return body, seconds


def results_in(body: bytes) -> int:
    """Targets with a result in a /metrics text: one smtp_probe_success sample each."""
    return body.count(b"\nsmtp_probe_success{")


def write_config(
    path: Path, hosts: list[str], port: int, every: float, ca_file: Path, password: Path
) -> None:
    """One STARTTLS + AUTH module; a target per host, each with one extra label."""
    auth = f"{{username: probe, password_file: {password}}}"
    lines = [
        "modules:",
        f"  submission: {{tls: starttls, tls_ca_file: {ca_file}, "
        f"tls_server_name: localhost, timeout: 10s, auth: {auth}}}",
        "targets:",
    ]
    lines += [
        f'  - {{target: "{h}:{port}", module: submission, interval: {every:g}s, '
        f"labels: {{site: dc{i % 7}}}}}"
        for i, h in enumerate(hosts)
    ]
    path.write_text("\n".join(lines) + "\n")


def hosts_for(n: int) -> list[str]:
    return [f"127.30.{i // 254}.{i % 254 + 1}" for i in range(n)]


@contextlib.contextmanager
def fleet(n: int, work: Path, interval: float | None = None) -> Iterator[Fleet]:
    """Start responder and exporter; yield once every target has a result (or raise)."""
    every = interval or max(10.0, math.ceil(n / PROBES_PER_SECOND))
    certs = make_certificates(work / "certs")
    port = c.free_port()
    hosts = hosts_for(n)
    spec = {
        "listeners": [[h, port, "smtp"] for h in hosts],
        "cert": str(certs.cert_file),
        "key": str(certs.key_file),
        "users": {"probe": "probe-pass"},
        "max_seconds": 3 * every + 600,
    }
    (work / "spec.json").write_text(json.dumps(spec))
    password = work / "password"
    password.write_text("probe-pass\n")
    cfg = work / "config.yml"
    write_config(cfg, hosts, port, every, certs.ca_file, password)
    http_port = c.free_port()
    cmd = c.exporter_command(cfg, http_port)
    with c.child(c.python("_fastsmtp.py", str(work / "spec.json")), work / "fastsmtp.log") as srv:
        c.wait_line(work / "fastsmtp.log", "ready", 120, srv)
        with c.child(cmd, work / "exporter.log", stop_timeout=30) as exp:
            url = f"http://127.0.0.1:{http_port}"
            c.wait_http(url + "/-/ready", 120, exp)
            f = Fleet(exp.pid, http_port, n, every, url)
            time.sleep(every)  # first runs are spread over one interval
            deadline = time.monotonic() + every + 60
            while True:
                body, _ = f.metrics()
                got = results_in(body)
                if got >= n:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {got} of {n} targets have a result; see {work}")
                time.sleep(10)
            ok = len(OK.findall(body))
            if ok < n:
                print(f"warning: {n - ok} of {n} targets failed their last probe; see {work}")
            yield f
