"""MTA-STS (RFC 8461): the ``_mta-sts`` TXT record, the policy fetched over verified HTTPS,
its mode / max_age / mx patterns, and whether every MX host matches them.

The policy host ``mta-sts.<domain>`` is resolved with our resolver (not the system's), and
the fetch is a minimal HTTP/1.1 GET: certificate and host name verified, no redirects
(§3.3), 200 only, ``text/plain``, body at most 64 KiB, all within the check's deadline.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl

from ..deadline import Deadline
from ..results.domain import DomainCheck, Finding, MTASTSResult, MXHost
from .dnscache import DNSCache, Status
from .records import clip, host_addresses, parse_tags, selected_records, selection_problem

POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_BODY = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_LINES = 100
MAX_AGE_LIMIT = 31557600  # RFC 8461 §3.2: about one year
SHORT_MAX_AGE = 86400  # RFC 8461 §3.2 recommends weeks
MAX_PATTERNS = 50
MODES = ("enforce", "testing", "none")
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_PATTERN = re.compile(r"(?:\*\.)?(?:[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,62})?\.)+[A-Za-z0-9\-]{1,63}")


class FetchError(Exception):
    """Why the policy could not be fetched; the message is the finding's reason."""


def parse_sts_txt(text: str) -> tuple[str | None, list[str]]:
    """The id of a ``v=STSv1; id=...;`` record, or None; and its problems (§3.1)."""
    pairs, problems = parse_tags(text)
    if not pairs or pairs[0] != ("v", "STSv1"):
        return None, ["record must start with v=STSv1", *problems]
    ident = next((v for k, v in pairs if k == "id"), None)
    if ident is None:
        return None, [*problems, "no id= (required)"]
    if not _ID.fullmatch(ident):
        return None, [*problems, f"id={clip(ident, 40)} is not 1-32 letters and digits"]
    return (None if problems else ident), problems


def parse_policy(text: str) -> tuple[dict[str, object], list[str]]:
    """``version``/``mode``/``max_age``/``mx`` of a policy (§3.2), and its problems."""
    fields: dict[str, str] = {}
    patterns: list[str] = []
    problems: list[str] = []
    for raw in text.splitlines()[:1000]:
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9_\-.]{1,32}", key):
            problems.append(f"malformed line '{clip(line, 40)}'")
        elif key == "mx":
            if not _PATTERN.fullmatch(value):
                problems.append(f"mx pattern '{clip(value, 60)}' is not a host name")
            elif len(patterns) < MAX_PATTERNS:
                patterns.append(value.lower().rstrip("."))
        elif key in ("version", "mode", "max_age"):
            if key in fields:
                problems.append(f"'{key}' given twice")
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        problems.append(f"version is {fields.get('version')!r}, expected STSv1")
    mode = fields.get("mode")
    if mode not in MODES:
        problems.append(f"mode is {mode!r}, expected enforce, testing or none")
    age_text = fields.get("max_age")
    max_age = None
    if age_text is None or not re.fullmatch(r"\d{1,10}", age_text):
        problems.append(f"max_age is {age_text!r}, expected seconds")
    elif int(age_text) > MAX_AGE_LIMIT:
        problems.append(f"max_age {age_text} exceeds {MAX_AGE_LIMIT} (RFC 8461 §3.2)")
    else:
        max_age = int(age_text)
    if not patterns and mode in ("enforce", "testing"):
        problems.append("no mx patterns")
    return {"mode": mode, "max_age": max_age, "mx": tuple(patterns)}, problems


def mx_matches(host: str, pattern: str) -> bool:
    """RFC 8461 §4.1: exact, or ``*.example.com`` standing for exactly one label."""
    host, pattern = host.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, tail = host.partition(".")
        return bool(head) and tail == pattern[2:]
    return host == pattern


async def check_mta_sts(
    domain: str,
    mx_hosts: tuple[MXHost, ...],
    cache: DNSCache,
    deadline: Deadline,
    *,
    port: int = 443,
    ca_file: str | None = None,
    previous_id: str | None = None,
) -> tuple[MTASTSResult, list[Finding]]:
    def finding(reason: str) -> Finding:
        return Finding(DomainCheck.MTA_STS, f"MTA-STS: {reason}")

    name = f"_mta-sts.{domain}"
    lookup = await cache.query(name, "TXT", deadline)
    records = selected_records(lookup, "v=stsv1")
    reason = selection_problem("MTA-STS", name, lookup, records)
    if reason:
        return MTASTSResult(valid=False), [Finding(DomainCheck.MTA_STS, reason)]
    ident, problems = parse_sts_txt(records[0])
    out = [finding(f"TXT record: {p}") for p in problems]
    changed = ident is not None and previous_id is not None and ident != previous_id
    host = f"mta-sts.{domain}"
    url = f"https://{host}{'' if port == 443 else f':{port}'}{POLICY_PATH}"
    try:
        async with asyncio.timeout_at(deadline.at):
            text = await fetch_policy(host, port, cache, deadline, ca_file)
    except TimeoutError:
        out.append(finding(f"policy fetch from {url} failed: no answer by the deadline"))
        return MTASTSResult(False, ident, changed), out
    except FetchError as exc:
        out.append(finding(f"policy fetch from {url} failed: {exc}"))
        return MTASTSResult(False, ident, changed), out
    policy, problems = parse_policy(text)
    out += [finding(f"policy: {p}") for p in problems]
    mode, max_age = policy["mode"], policy["max_age"]
    patterns: tuple[str, ...] = policy["mx"]  # type: ignore[assignment]
    if mode in ("testing", "none"):
        what = "failures are only reported" if mode == "testing" else "policy switched off"
        out.append(finding(f"mode {mode} ({what})"))
    if isinstance(max_age, int) and max_age < SHORT_MAX_AGE:
        out.append(finding(f"max_age {max_age}s is under a day (RFC 8461 suggests weeks)"))
    matches = tuple((mx.host, any(mx_matches(mx.host, p) for p in patterns)) for mx in mx_hosts)
    for mx, ok in matches:
        if not ok and patterns:
            out.append(finding(f"policy mx patterns do not match {mx}"))
    return (
        MTASTSResult(
            valid=ident is not None and not problems,
            policy_id=ident,
            policy_changed=changed,
            mode=mode if mode in MODES else None,  # type: ignore[arg-type]
            max_age=max_age,  # type: ignore[arg-type]
            mx_patterns=patterns,
            mx_match=matches,
        ),
        out,
    )


def _context(ca_file: str | None) -> ssl.SSLContext:
    # Keyed by mtime so a renewed CA file is picked up without a restart.
    return _context_for(ca_file, os.stat(ca_file).st_mtime if ca_file else 0.0)


@functools.lru_cache(maxsize=16)
def _context_for(ca_file: str | None, mtime: float) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8461 §3.3: TLS 1.2 or later
    return ctx


async def fetch_policy(
    host: str, port: int, cache: DNSCache, deadline: Deadline, ca_file: str | None
) -> str:
    """GET the policy; the caller bounds the time with the check's deadline."""
    addresses = await host_addresses(host, cache, deadline)
    if not addresses:
        lookup = await cache.query(host, "A", deadline)
        why = lookup.error if lookup.status is Status.ERROR else "no A/AAAA record"
        raise FetchError(f"{host}: {why}")
    try:
        ctx = _context(ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(f"cannot load CA file: {exc}") from exc
    try:
        reader, writer = await asyncio.open_connection(
            addresses[0], port, ssl=ctx, server_hostname=host, limit=MAX_HEADER_BYTES
        )
    except ssl.SSLCertVerificationError as exc:
        raise FetchError(f"certificate not valid for {host}: {exc.verify_message}") from exc
    except ssl.SSLError as exc:
        raise FetchError(f"TLS handshake: {exc.reason or exc}") from exc
    except OSError as exc:
        raise FetchError(f"cannot connect to {addresses[0]}:{port}: {exc.strerror or exc}") from exc
    try:
        authority = host if port == 443 else f"{host}:{port}"
        writer.write(
            f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {authority}\r\n"
            "User-Agent: smtp-health-exporter\r\nAccept: text/plain\r\n"
            "Connection: close\r\n\r\n".encode("ascii")
        )
        return await _read_response(reader)
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError) as exc:
        raise FetchError(f"reading the answer: {type(exc).__name__}: {exc}"[:200]) from exc
    finally:
        writer.transport.abort()


async def _read_response(reader: asyncio.StreamReader) -> str:
    status_line = (await reader.readline()).decode("latin-1").strip()
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise FetchError(f"not an HTTP answer: {clip(status_line, 60)!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    size = len(status_line)
    for _ in range(MAX_HEADER_LINES + 1):
        line = (await reader.readline()).decode("latin-1")
        size += len(line)
        if size > MAX_HEADER_BYTES:
            raise FetchError("HTTP headers too large")
        if line in ("\r\n", "\n", ""):
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise FetchError("too many HTTP header lines")
    if 300 <= status < 400:
        location = clip(headers.get("location", "?"), 80)
        raise FetchError(f"HTTP {status} to {location} (redirects are not followed, RFC 8461 §3.3)")
    if status != 200:
        raise FetchError(f"HTTP {status} (expected 200)")
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "text/plain":
        raise FetchError(f"Content-Type is {ctype or 'missing'!r}, expected text/plain")
    body = await _read_body(reader, headers)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FetchError("policy is not UTF-8") from exc


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    too_big = f"policy larger than {MAX_BODY // 1024} KiB"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_text = (await reader.readline()).split(b";")[0].strip()
            size = int(size_text, 16)  # ValueError for garbage
            if size == 0:
                return bytes(body)
            if len(body) + size > MAX_BODY:
                raise FetchError(too_big)
            body += await reader.readexactly(size)
            await reader.readline()
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise FetchError(f"bad Content-Length {clip(length, 20)!r}")
        if int(length) > MAX_BODY:
            raise FetchError(too_big)
        return await reader.readexactly(int(length))
    body = bytearray()
    while chunk := await reader.read(MAX_BODY + 1 - len(body)):
        body += chunk
        if len(body) > MAX_BODY:
            raise FetchError(too_big)
    return bytes(body)
