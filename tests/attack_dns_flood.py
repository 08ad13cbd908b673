"""The /probe DNS flood of issue #14, run inside a private network and mount namespace.

The system resolver (getaddrinfo) only asks the nameservers of /etc/resolv.conf on port 53,
so to make its lookups hang the scenario needs a resolv.conf of its own: ``run()`` starts
this module under ``unshare --net --mount`` (a fresh loopback nobody else uses), where it
bind-mounts a resolv.conf naming 127.0.0.1, starts the dnslib server on 127.0.0.1:53
dropping every ``fN.flood.test`` query, an SMTP server, and the exporter with one scheduled
target written ``localhost:PORT`` (from /etc/hosts). It then fires ``--flood`` /probe
requests for dropped names while the scheduled target runs, and prints one JSON object:
how each scheduled probe during the flood ended, what the flood got (status counts), and
the result of a /probe of a healthy address sent while the flood ran.

    python -m tests.attack_dns_flood          # runs the namespace itself, prints the JSON
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

FLOOD = 200  # /probe requests for names that never answer
FLOOD_SECONDS = 6.0  # how long the flood is kept up
INTERVAL = 1.0  # the scheduled target's interval (and timeout)


def namespace_problem() -> str | None:
    """Why the scenario cannot run here (None: it can)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare(1) and ip(8) are needed"
    args = ["unshare", "--net", "--mount"]
    if os.geteuid() != 0:
        args.insert(1, "--map-root-user")
    try:
        done = subprocess.run([*args, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if done.returncode != 0:
        return f"unshare --net --mount not permitted: {done.stderr.decode().strip()}"
    return None


def run(concurrency: int | None = None, timeout: float = 120.0) -> dict[str, object]:
    """Run the scenario in a new namespace (the exporter with ``--probe.concurrency``
    ``concurrency``, None: the default); its JSON summary."""
    args = ["unshare", "--net", "--mount"]
    if os.geteuid() != 0:
        args.insert(1, "--map-root-user")
    done = subprocess.run(
        [*args, sys.executable, "-m", "tests.attack_dns_flood", "--inside", str(concurrency or 0)],
        capture_output=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"scenario failed ({done.returncode}): {done.stderr.decode()[-3000:]}")
    return json.loads(lines[-1])


def _inside(concurrency: int | None) -> dict[str, object]:
    from exporter.embedded import EmbeddedSMTPServer

    from .exporter_harness import RunningExporter, wait_for
    from .servers import dns

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = Path(tempfile.mkdtemp(prefix="flood-"))
    resolv = work / "resolv.conf"
    # glibc's defaults written out: 5 s per try, 2 tries, so a dropped name holds its
    # getaddrinfo thread for about 10 s.
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:5 attempts:2\n")
    subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=True)

    class Port53(dns.DNSServer):
        def _bind(self) -> tuple[socket.socket, socket.socket]:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            udp.bind((dns.ADDRESS, 53))
            tcp.bind((dns.ADDRESS, 53))
            tcp.listen(64)
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp

    names = [f"f{i}.flood.test" for i in range(FLOOD)]
    zone = "flood.test. 300 IN SOA ns.flood.test. h.flood.test. 1 60 60 60 60\n"
    server = Port53(zone, drop=names).start()
    smtp = EmbeddedSMTPServer(tls="none", users={}).start()
    cfg = work / "c.yml"
    cfg.write_text(f"""
defaults: {{module: plain}}
modules:
  plain: {{tls: none, timeout: {INTERVAL:g}s, metrics_detail: true}}  # failures by phase
  slow: {{tls: none, timeout: 5s}}
targets:
  - {{target: "localhost:{smtp.port}", interval: {INTERVAL:g}s}}
""")
    exp = RunningExporter(cfg, concurrency=concurrency).start()
    name = f"localhost:{smtp.port}"

    def probes() -> tuple[float, dict[str, float]]:
        s = exp.samples()
        total = sum(v for (n, lab), v in s.items() if n == "smtp_probes_total")
        failed = {
            dict(lab)["phase"]: v for (n, lab), v in s.items() if n == "smtp_probe_failures_total"
        }
        return total, failed

    assert wait_for(lambda: exp.value("smtp_probe_success", target=name) == 1, 10)
    before = probes()
    statuses: dict[str, int] = {}
    lock = threading.Lock()

    def flood(i: int) -> None:
        url = f"{exp.url}/probe?target={names[i]}:25&module=slow"
        req = urllib.request.Request(url, headers={"X-Prometheus-Scrape-Timeout-Seconds": "5"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = resp.read().decode()
                what = "resolve" if 'phase="resolve"' in body else "other"
                key = f"{resp.status} {what}"
        except urllib.error.HTTPError as exc:
            key = str(exc.code)
        except OSError as exc:
            key = f"error {type(exc).__name__}"
        with lock:
            statuses[key] = statuses.get(key, 0) + 1

    start = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(64)
    futures = []
    for i in range(FLOOD):  # spread over the flood's duration, a burst first
        if i >= 64:
            time.sleep(FLOOD_SECONDS / FLOOD)
        futures.append(pool.submit(flood, i))
    time.sleep(1.0)
    healthy_req = urllib.request.Request(
        f"{exp.url}/probe?target=127.0.0.1:{smtp.port}&module=plain",
        headers={"X-Prometheus-Scrape-Timeout-Seconds": "5"},
    )
    try:
        with urllib.request.urlopen(healthy_req, timeout=30) as resp:
            healthy = f"{resp.status} " + " ".join(
                line
                for line in resp.read().decode().splitlines()
                if line.startswith(("smtp_probe_success", "smtp_probe_failed_phase"))
                and not line.endswith(" 0.0")
            )
    except urllib.error.HTTPError as exc:
        healthy = f"{exc.code} {exc.read().decode().strip()}"
    while time.monotonic() - start < FLOOD_SECONDS + 1:
        time.sleep(0.1)
    during = probes()
    concurrent.futures.wait(futures, timeout=60)
    summary = {
        "scheduled_probes": during[0] - before[0],
        "scheduled_failures": sum(during[1].values()) - sum(before[1].values()),
        "scheduled_failures_by_phase": {
            k: v - before[1].get(k, 0) for k, v in during[1].items() if v > before[1].get(k, 0)
        },
        "flood": statuses,
        "healthy_probe": healthy,
        "dns_queries": len(server.queries) if hasattr(server, "queries") else None,
    }
    return summary


if __name__ == "__main__":
    if "--inside" in sys.argv:
        print(json.dumps(_inside(int(sys.argv[2]) or None)), flush=True)
        # Lookups abandoned at their deadline still hold resolver threads, which interpreter
        # shutdown would wait for; the namespace and everything in it end with this process.
        os._exit(0)
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else None)))
