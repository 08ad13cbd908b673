"""Log lines that log pipelines parse: logfmt as go-kit/slog write it, and JSON, both with
RFC 3339 millisecond UTC timestamps. Every line of a real run (start, targets down, up and
recovering, a good and a bad reload, shutdown) goes through a strict logfmt grammar."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from exporter import logs
from exporter.embedded import free_port

from .conftest import PASSWORD, USER, write_secret
from .exporter_harness import wait_for

KEYS = ("ts", "level", "source", "msg")
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
SOURCE = re.compile(r"[A-Za-z0-9_./-]+\.py:\d+")
_KEY_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_KEY_REST = _KEY_START | set("0123456789.")
_ESCAPED = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


class LogfmtError(ValueError):
    pass


def parse_logfmt(line: str) -> list[tuple[str, str]]:
    """A strict logfmt parser: ``pair (" " pair)*``, ``pair = key "=" value``, keys
    ``[a-zA-Z_][a-zA-Z0-9_.]*``, a value either bare (no space, ``=``, ``"`` or control
    character; not empty) or double-quoted with ``\\" \\\\ \\n \\r \\t \\uXXXX`` escapes and
    no raw control character. Single spaces between pairs, none at either end, no duplicate
    keys. Anything else raises LogfmtError with the column."""
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(line)

    def fail(why: str) -> LogfmtError:
        return LogfmtError(f"column {i}: {why}: {line!r}")

    while True:
        start = i
        if i >= n or line[i] not in _KEY_START:
            raise fail("expected a key")
        i += 1
        while i < n and line[i] in _KEY_REST:
            i += 1
        key = line[start:i]
        if i >= n or line[i] != "=":
            raise fail("expected '=' after the key")
        i += 1
        if i < n and line[i] == '"':
            i += 1
            out = []
            while True:
                if i >= n:
                    raise fail("unterminated quoted value")
                c = line[i]
                if c == '"':
                    i += 1
                    break
                if c < " " or c == "\x7f":
                    raise fail("raw control character in a quoted value")
                if c == "\\":
                    if i + 1 >= n:
                        raise fail("dangling backslash")
                    e = line[i + 1]
                    if e in _ESCAPED:
                        out.append(_ESCAPED[e])
                        i += 2
                    elif e == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", line[i + 2 : i + 6]):
                        out.append(chr(int(line[i + 2 : i + 6], 16)))
                        i += 6
                    else:
                        raise fail(f"unknown escape \\{e}")
                    continue
                out.append(c)
                i += 1
            value = "".join(out)
        else:
            start = i
            while i < n and not (line[i] <= " " or line[i] in '="' or line[i] == "\x7f"):
                i += 1
            value = line[start:i]
            if not value:
                raise fail("empty bare value")
        if any(k == key for k, _ in pairs):
            raise fail(f"duplicate key {key}")
        pairs.append((key, value))
        if i == n:
            return pairs
        if line[i] != " ":
            raise fail("expected a space between pairs")
        i += 1


def check_record(fields: dict[str, str], keys: list[str]) -> None:
    """The shape every record has, whichever format."""
    assert keys[:4] == list(KEYS), keys
    assert set(keys) <= {*KEYS, "exc"}, keys
    assert TS.fullmatch(fields["ts"]), fields["ts"]
    stamp = dt.datetime.fromisoformat(fields["ts"].replace("Z", "+00:00"))
    assert stamp.utcoffset() == dt.timedelta(0)
    assert fields["level"] in ("debug", "info", "warn", "error"), fields["level"]
    assert SOURCE.fullmatch(fields["source"]), fields["source"]


def parse_line(fmt: str, line: str) -> dict[str, str]:
    if fmt == "json":
        obj = json.loads(line)
        assert isinstance(obj, dict) and all(isinstance(v, str) for v in obj.values()), line
        check_record(obj, list(obj))
        return obj
    pairs = parse_logfmt(line)
    fields = dict(pairs)
    check_record(fields, [k for k, _ in pairs])
    return fields


# --------------------------------------------------------------------------- the parser


@pytest.mark.parametrize(
    "line",
    [
        "ts=1 level=info msg='single quotes'x",
        "ts=2026-11-30 23:14:03,891 level=INFO",  # the old format: a bare space
        'msg="unterminated',
        'msg="raw\nnewline"',
        'msg="bad \\q escape"',
        "msg=",
        "a=1  b=2",
        "a=1 ",
        "1a=1",
        "a=1 a=2",
        'a=b"c',
    ],
)
def test_strict_parser_rejects(line):
    with pytest.raises(LogfmtError):
        parse_logfmt(line)


def test_strict_parser_reads_what_go_logfmt_writes():
    line = 'ts=2026-11-30T23:14:03.891Z a.b=c_d msg="x \\"y\\" \\\\ \\n\\u0007" e=\\bare'
    assert parse_logfmt(line) == [
        ("ts", "2026-11-30T23:14:03.891Z"),
        ("a.b", "c_d"),
        ("msg", 'x "y" \\ \n\x07'),
        ("e", "\\bare"),
    ]


# --------------------------------------------------------------------------- the formatters


def _record(msg: str, level: int = logging.WARNING, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("exporter.app", level, logs.__file__, 42, msg, (), exc_info)
    record.created = 1796080443.891
    record.msecs = 891.0
    return record


@pytest.mark.parametrize(
    "msg",
    [
        "plain",
        "listening on 127.0.0.1:10525",
        "quote \" and 'single' and = sign",
        "multi\nline\r\ttabbed \\ back",
        "",
        "ünïcode ✓ and \x00\x1b control",
        "key=value lookalike",
    ],
)
@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_any_message_is_one_parseable_line(fmt, msg):
    formatter = logs.JSONFormatter() if fmt == "json" else logs.LogfmtFormatter()
    for record in (_record(msg), _record(msg, logging.CRITICAL, exc=True)):
        line = formatter.format(record)
        assert "\n" not in line
        fields = parse_line(fmt, line)
        assert fields["msg"] == msg
        assert fields["ts"] == "2026-11-30T23:14:03.891Z"
        assert fields["source"] == "logs.py:42"
    assert fields["level"] == "error"  # CRITICAL has no level of its own in the flag
    assert "RuntimeError: boom\nsecond line" in fields["exc"]


def test_levels_are_the_flag_values():
    f = logs.LogfmtFormatter()
    got = [
        parse_logfmt(f.format(_record("m", lv)))[1][1]
        for lv in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
    ]
    assert got == ["debug", "info", "warn", "error"]
    assert f.format(_record("m")).startswith("ts=2026-11-30T23:14:03.891Z level=warn source=")


def test_bare_values_stay_bare():
    line = logs.LogfmtFormatter().format(_record("ok"))
    assert line.endswith(" msg=ok")
    assert logs.logfmt_value("a b") == '"a b"' and logs.logfmt_value("") == '""'


# --------------------------------------------------------------------------- a real run


class Captured:
    """stderr of a subprocess, line by line, as it comes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        assert proc.stderr is not None
        self._stream = proc.stderr
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def has(self, text: str) -> bool:
        with self._lock:
            return any(text in line for line in self.lines)

    def join(self) -> list[str]:
        self._thread.join(10)
        return self.lines


def _config(path: Path, ca_file: str, secret: Path, ports: list[int]) -> None:
    lines = [
        "modules:",
        f"  sub: {{tls: starttls, tls_ca_file: {ca_file}, timeout: 1s,",
        f"         auth: {{username: {USER}, password_file: {secret}}}}}",
        "targets:",
        *(f'  - {{target: "127.0.0.1:{p}", module: sub, interval: 1s}}' for p in ports),
    ]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_every_line_of_a_real_run_parses(fmt, smtp_server, ca_file, tmp_path):
    good = smtp_server()
    later = free_port()  # nothing listens yet: down, then a server starts there: recovered
    secret = write_secret(tmp_path)
    cfg = tmp_path / "config.yml"
    _config(cfg, ca_file, secret, [good.port, later])
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "--config.file",
            str(cfg),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--log.format",
            fmt,
            "--log.level",
            "debug",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = Captured(proc)
    try:
        assert wait_for(lambda: out.has(f"target up: 127.0.0.1:{good.port}"), 20), out.lines
        assert wait_for(lambda: out.has(f"target down: 127.0.0.1:{later}"), 20), out.lines
        smtp_server(port=later)
        assert wait_for(lambda: out.has("recovered"), 20), out.lines
        # A good reload over HTTP, a bad one (two errors: a multi-line message) by SIGHUP.
        _config(cfg, ca_file, secret, [good.port])
        req = urllib.request.Request(f"http://127.0.0.1:{port}/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
        assert wait_for(lambda: out.has("configuration reloaded"), 10), out.lines
        cfg.write_text('modules: {sub: {tls: "startls", timeout: 5x}}\n')
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: out.has("reload failed"), 10), out.lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    lines = out.join()
    records = [parse_line(fmt, line) for line in lines]  # every line, none skipped
    msgs = [r["msg"] for r in records]
    assert msgs[0].startswith(f"listening on 127.0.0.1:{port}, status page http://127.0.0.1:")
    assert msgs[-1] == "stopped"
    (failed,) = [r for r in records if r["msg"].startswith("reload failed")]
    assert failed["level"] == "error"
    assert "modules.sub.tls" in failed["msg"] and "\n" in failed["msg"]
    (down,) = [r for r in records if r["msg"].startswith("target down")]
    assert down["level"] == "warn" and "connection_refused" in down["msg"]
    assert any(r["level"] == "info" and "recovered" in r["msg"] for r in records)
    assert PASSWORD not in "\n".join(lines)


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    root.handlers[:], level = saved
    root.setLevel(level)


def test_setup_follows_stderr_and_holds_its_level(restore_root_logging, monkeypatch):
    import io

    logs.setup("info", "logfmt")
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logging.getLogger("exporter.test").info("one")
    first.close()  # as a test runner's capture is, after its test
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("exporter.test").info("two")
    # A library logger turned to DEBUG still does not get past --log.level info.
    chatty = logging.getLogger("exporter.send.wire")
    monkeypatch.setattr(chatty, "level", logging.DEBUG)
    chatty.debug("C: MAIL FROM:<a@example.org>")
    (line,) = second.getvalue().splitlines()
    assert parse_logfmt(line)[-1] == ("msg", "two")
