"""The IMAP and POP3 probes against every behaviour of the hostile servers
(tests/servers/mailfault.py), as a table: behaviour, expected phase/kind, what the probe
reported, how long it took measured from outside, and whether that matches.

    python bench/hostile_mailbox.py [--timeout 2] [--only imap|pop3] [--markdown]

The same runs as tests/test_hostile_mailbox.py, which asserts them; this prints the figures
(seconds vary with the machine's load, so they are reported here, not asserted there).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter import probe
from tests.servers.mailfault import FaultCerts
from tests.test_hostile_mailbox import SERVERS, TABLES, target_for


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=2.0, help="the module's timeout")
    parser.add_argument("--only", choices=sorted(TABLES), help="one protocol only")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = parser.parse_args()
    certs = FaultCerts.make(Path(tempfile.mkdtemp(prefix="hostile-mailbox-")))
    ctx = certs.server_context()
    rows = []
    bad = 0
    for protocol, table in TABLES.items():
        if args.only and protocol != args.only:
            continue
        for name, spec in table.items():
            with SERVERS[protocol](name, spec.tls, ssl_context=ctx) as server:
                target = target_for(protocol, server.port, spec, str(certs.ca_file), args.timeout)
                start = time.monotonic()
                result = asyncio.run(probe.run(target))
                elapsed = time.monotonic() - start
            f = result.failure
            want = f"{spec.phase}/{'|'.join(spec.kinds)}" if spec.phase else "success"
            got = f"{f.phase.value}/{f.kind.value}" if f else "success"
            ok = (f is None and spec.phase is None) or (
                f is not None and f.phase.value == spec.phase and f.kind.value in spec.kinds
            )
            ok = ok and elapsed <= args.timeout * 1.1
            bad += not ok
            detail = f.detail[:70] if f else ""
            rows.append((protocol, name, spec.tls or "none", want, got, elapsed, ok, detail))
    if args.markdown:
        print("| protocol | behaviour | tls | expected | reported | seconds | ok | detail |")
        print("|---|---|---|---|---|---:|---|---|")
        for p, n, tls, want, got, sec, ok, detail in rows:
            detail = detail.replace("|", "\\|")
            mark = "ok" if ok else "NO"
            print(f"| {p} | {n} | {tls} | {want} | {got} | {sec:.3f} | {mark} | {detail} |")
    else:
        for p, n, tls, want, got, sec, ok, detail in rows:
            mark = "ok" if ok else "NO"
            print(f"{p:5} {n:26} {tls:8} {want:38} {got:32} {sec:6.3f}s {mark}  {detail}")
    print(f"{len(rows) - bad} of {len(rows)} as expected (timeout {args.timeout:g}s)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
