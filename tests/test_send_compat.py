"""The send library used as code written for the smtplib pipeline it grew from uses it
(issue #15): every public name, called positionally and by keyword, with that pipeline's own
examples (the dry-run demo printing each result, ``for batch in send_bulk(...)``, the queue
with two workers, the health check's strings), against aiosmtpd and a real Postfix.

The contract is the names, signatures, return shapes and string forms; the behaviour behind
them (Bcc stripped, only transient recipients retried, ...) is tests/test_send.py's."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import inspect
import secrets
import time
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from exporter.embedded import free_port
from exporter.send import (
    SendResult,
    SMTPConfig,
    SMTPQueue,
    make_msg,
    send_bulk,
    send_email,
    send_with_retry,
    smtp_health_check,
)
from tests.servers.mailstack import MailStack

from .servers.policy import Policy, PolicyHandler

ADDR, PW = "me@example.com", "app-Pa55word"  # a login that is an address, as at most ISPs
EMPTY = inspect.Parameter.empty
POS_OR_KW = inspect.Parameter.POSITIONAL_OR_KEYWORD
KW_ONLY = inspect.Parameter.KEYWORD_ONLY


class AuthRecorder(PolicyHandler):
    """Also records, per received message, whether its session had authenticated (the
    server accepts AUTH for ADDR only)."""

    def __init__(self, policy: Policy | None = None) -> None:
        super().__init__(policy or Policy())
        self.authenticated: list[bool] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.authenticated.append(bool(session.authenticated))
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def seed_server(smtp_server):
    """An aiosmtpd server taking AUTH for ADDR: ``seed_server(policy, tls=...)``."""

    def make(policy: Policy | None = None, tls: str = "starttls"):
        handler = AuthRecorder(policy)
        return smtp_server(tls, users={ADDR: PW}, handler=handler), handler

    return make


def starttls(server, ca_file: str, password: str = PW, **kw) -> SMTPConfig:
    # The seed's factory as its users call it; port and CA are what a test server needs.
    return SMTPConfig.starttls_587(
        "127.0.0.1", ADDR, password, port=server.port, ca_file=ca_file, timeout=5.0, **kw
    )


def params(fn) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


# --- the signatures, as inspect sees them --------------------------------------------------


def test_signatures_are_the_seeds():
    fields = [(f.name, f.default) for f in dataclasses.fields(SMTPConfig)][:8]
    assert fields == [
        ("host", dataclasses.MISSING),
        ("port", 587),
        ("username", ""),
        ("password", ""),
        ("use_ssl", False),
        ("use_tls", True),
        ("timeout", 15.0),
        ("debug", 0),
    ]
    for factory in (SMTPConfig.ssl_465, SMTPConfig.starttls_587):
        assert params(factory)[:3] == [
            ("host", POS_OR_KW, EMPTY),
            ("username", POS_OR_KW, EMPTY),
            ("password", POS_OR_KW, EMPTY),
        ]
    assert params(send_email) == [
        ("msg", POS_OR_KW, EMPTY),
        ("cfg", POS_OR_KW, EMPTY),
        ("dry_run", KW_ONLY, False),
    ]
    assert params(send_bulk) == [
        ("messages", POS_OR_KW, EMPTY),
        ("cfg", POS_OR_KW, EMPTY),
        ("delay", KW_ONLY, 0.0),
        ("dry_run", KW_ONLY, False),
    ]
    assert params(send_with_retry)[:5] == [
        ("msg", POS_OR_KW, EMPTY),
        ("cfg", POS_OR_KW, EMPTY),
        ("max_attempts", POS_OR_KW, 3),
        ("backoff", POS_OR_KW, 2.0),
        ("dry_run", POS_OR_KW, False),
    ]
    assert all(kind == KW_ONLY for _, kind, _ in params(send_with_retry)[5:])
    assert params(SMTPQueue)[:2] == [("cfg", POS_OR_KW, EMPTY), ("workers", POS_OR_KW, 1)]
    assert params(SMTPQueue.stop)[:2] == [("self", POS_OR_KW, EMPTY), ("timeout", POS_OR_KW, 30.0)]
    assert params(SMTPQueue.start) == [("self", POS_OR_KW, EMPTY)]
    assert params(SMTPQueue.enqueue) == [("self", POS_OR_KW, EMPTY), ("msg", POS_OR_KW, EMPTY)]
    assert params(SMTPQueue.drain_results)[:1] == [("self", POS_OR_KW, EMPTY)]
    assert params(smtp_health_check) == [("cfg", POS_OR_KW, EMPTY)]
    assert params(make_msg)[:3] == [
        ("to", POS_OR_KW, EMPTY),
        ("subject", POS_OR_KW, EMPTY),
        ("body", POS_OR_KW, EMPTY),
    ]
    assert [f.name for f in dataclasses.fields(SendResult)][:3] == ["to", "ok", "error"]


def test_config_positional_and_factories_by_keyword():
    cfg = SMTPConfig("smtp.example.com", 2525, "", "", False, True, 7.5, 1)
    assert (cfg.port, cfg.username, cfg.password, cfg.timeout, cfg.debug) == (
        2525,
        "",
        "",
        7.5,
        1,
    )
    assert cfg.target().module.auth is None  # empty username: no AUTH
    assert SMTPConfig("smtp.example.com").target().module.auth is None
    by_kw = SMTPConfig.starttls_587("smtp.example.com", username=ADDR, password=PW)
    assert by_kw == SMTPConfig.starttls_587("smtp.example.com", ADDR, PW)
    assert (by_kw.port, by_kw.use_ssl, by_kw.use_tls) == (587, False, True)
    ssl = SMTPConfig.ssl_465(host="smtp.example.com", username=ADDR, password=PW)
    assert (ssl.port, ssl.use_ssl, ssl.use_tls) == (465, True, False)
    assert ssl.target().module.auth.username == ADDR
    assert PW not in repr(ssl) and PW not in str(ssl)


# --- string forms, the dry-run demo ---------------------------------------------------------


def test_send_result_str():
    assert str(SendResult("a@example.org", True)) == "a@example.org: OK"
    assert str(SendResult("a@example.org", False, "550 5.1.1 no such user")) == (
        "a@example.org: FAIL 550 5.1.1 no such user"
    )
    assert str(SendResult("a@example.org", False)) == "a@example.org: FAIL"


def test_the_dry_run_demo_prints_each_result(capsys):
    # The seed's README demo, word for word but for the addresses. No socket is touched:
    # smtp.example.com is not even resolved, or these would be failures.
    cfg = SMTPConfig.starttls_587("smtp.example.com", "me@example.com", "app-password")
    msg = make_msg("a@example.org, b@example.org", "Hello", "Body")
    for r in send_email(msg, cfg, dry_run=True):
        print(r)
    messages = [make_msg(f"user{i}@example.org", "Hello", "Body") for i in range(2)]
    for batch in send_bulk(messages, cfg, dry_run=True):
        for r in batch:
            print(r)
    for r in send_with_retry(msg, cfg, 3, 2.0, True):
        print(r)
    assert capsys.readouterr().out.splitlines() == [
        "a@example.org: OK",
        "b@example.org: OK",
        "user0@example.org: OK",
        "user1@example.org: OK",
        "a@example.org: OK",
        "b@example.org: OK",
    ]


# --- against aiosmtpd -----------------------------------------------------------------------


def test_send_email_with_factory_config(seed_server, ca_file, capsys):
    server, handler = seed_server(Policy(reject_rcpt={"nobody@example.org"}))
    msg = make_msg(["a@example.org", "nobody@example.org"], "Hello", "Body")
    for r in send_email(msg, starttls(server, ca_file)):
        print(r)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "a@example.org: OK"
    assert out[1].startswith("nobody@example.org: FAIL 550 5.1.1 <nobody@example.org>")
    (received,) = server.messages
    assert handler.authenticated == [True]
    # A complete message: the From the login implies, on the wire and in the envelope.
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["From"] == ADDR and received.mail_from == ADDR
    assert parsed["Date"] and parsed["Message-ID"] and parsed["Subject"] == "Hello"
    assert msg["From"] is None  # the caller's message is left as it was


def test_ssl_465_factory_by_keyword(seed_server, ca_file):
    server, handler = seed_server(tls="implicit")
    cfg = SMTPConfig.ssl_465(
        "127.0.0.1", username=ADDR, password=PW, port=server.port, ca_file=ca_file
    )
    (r,) = send_email(make_msg("a@example.org", "s", "b"), cfg)
    assert str(r) == "a@example.org: OK"
    assert handler.authenticated == [True]


def test_empty_username_means_no_auth(seed_server, ca_file):
    server, handler = seed_server()
    cfg = SMTPConfig("127.0.0.1", server.port, "", "", ca_file=ca_file, timeout=5.0)
    (r,) = send_email(make_msg("a@example.org", "s", "b", sender="me@example.com"), cfg)
    assert r.ok, r
    assert handler.authenticated == [False]  # the server offered AUTH; none was attempted
    assert smtp_health_check(cfg) == (True, f"127.0.0.1:{server.port} OK")


def test_no_from_is_refused_and_the_null_reverse_path_only_when_asked(seed_server, ca_file):
    server, handler = seed_server()
    no_auth = SMTPConfig("127.0.0.1", server.port, "", "", ca_file=ca_file, timeout=5.0)
    msg = make_msg("a@example.org, b@example.org", "s", "b")
    results = send_email(msg, no_auth)
    assert [r.ok for r in results] == [False, False]
    assert "no From header" in results[0].error and "sender=" in results[0].error
    assert str(results[0]).startswith("a@example.org: FAIL message has no From header")
    assert [r.ok for r in send_email(msg, no_auth, dry_run=True)] == [False, False]
    assert [[r.ok for r in b] for b in send_bulk([msg], no_auth)] == [[False, False]]
    assert [r.ok for r in send_with_retry(msg, no_auth, 3, 0.0)] == [False, False]
    assert handler.mail_attempts == 0 and server.messages == []  # never went out

    null_path = dataclasses.replace(no_auth, envelope_sender="")
    (r,) = send_email(make_msg("a@example.org", "s", "b", sender="bounce@example.com"), null_path)
    assert r.ok
    (received,) = server.messages
    assert received.mail_from == "<>"
    assert email.message_from_bytes(received.data)["From"] == "bounce@example.com"


def test_send_bulk_one_list_per_message(seed_server, ca_file):
    server, _ = seed_server(Policy(reject_rcpt={"nobody@example.org"}))
    messages = [
        make_msg("a@example.org, nobody@example.org", "one", "b"),
        make_msg("c@example.org", "two", "b"),
    ]
    seen = []
    for batch in send_bulk(messages, starttls(server, ca_file), delay=0.0):
        seen.append([(r.to, r.ok) for r in batch])
    assert seen == [
        [("a@example.org", True), ("nobody@example.org", False)],
        [("c@example.org", True)],
    ]
    by_kw = send_bulk(messages=messages[1:], cfg=starttls(server, ca_file), delay=0.05)
    assert [[str(r) for r in b] for b in by_kw] == [["c@example.org: OK"]]
    assert len(server.messages) == 3


def test_send_with_retry_positional_and_keyword(seed_server, ca_file):
    server, handler = seed_server(Policy(tempfail_rcpt={"later@example.org": 2}))
    msg = make_msg("later@example.org", "s", "b")
    (r,) = send_with_retry(msg, starttls(server, ca_file), 4, 0.1)
    assert (r.ok, r.attempts) == (True, 3)
    (r,) = send_with_retry(msg, starttls(server, ca_file), max_attempts=1, backoff=0.1)
    assert str(r) == "later@example.org: OK"  # the policy's two 451s are used up
    (r,) = send_with_retry(msg, starttls(server, ca_file), 2, 0.1, True)
    assert r.ok and r.dry_run
    assert handler.rcpt_attempts["later@example.org"] == 4
    # The issue's own call, verbatim: max_attempts as the third positional argument.
    (r,) = send_with_retry(make_msg("now@example.org", "s", "b"), starttls(server, ca_file), 4)
    assert (str(r), r.attempts) == ("now@example.org: OK", 1)


def test_queue_with_two_workers(seed_server, ca_file):
    server, _ = seed_server()
    q = SMTPQueue(starttls(server, ca_file), 2)
    assert q.start() is q
    for i in range(6):
        q.enqueue(make_msg(f"q{i}@example.org", f"m{i}", "b"))
    q.stop(timeout=30.0)
    results = q.drain_results()
    assert sorted(str(r) for r in results) == [f"q{i}@example.org: OK" for i in range(6)]
    assert q.drain_results() == results  # a copy: calling again gives them again
    assert len(server.messages) == 6
    q2 = SMTPQueue(cfg=starttls(server, ca_file), workers=2).start()
    q2.enqueue(msg=make_msg("late@example.org", "s", "b"))
    q2.stop(30.0)
    assert [str(r) for r in q2.drain_results()] == ["late@example.org: OK"]


def test_health_check_strings(seed_server, ca_file, smtp_server):
    server, _ = seed_server()
    assert smtp_health_check(starttls(server, ca_file)) == (True, f"127.0.0.1:{server.port} OK")
    ok, detail = smtp_health_check(starttls(server, ca_file, password="wrong"))
    assert not ok and detail.startswith("auth failed: auth reply: 535"), detail
    assert "wrong" not in detail
    dead = SMTPConfig("127.0.0.1", free_port(), ADDR, PW, timeout=2.0)
    ok, detail = smtp_health_check(dead)
    assert not ok and detail.startswith("connect failed: connect connection_refused"), detail
    plain = smtp_server("none", users={ADDR: PW})  # STARTTLS required, never offered
    ok, detail = smtp_health_check(SMTPConfig("127.0.0.1", plain.port, ADDR, PW))
    assert not ok and detail.startswith("error: starttls tls_unavailable"), detail


@pytest.mark.parametrize("level", [1, 2])
def test_debug_prints_the_wire_log_with_auth_redacted(seed_server, ca_file, capfd, level):
    server, _ = seed_server()
    send_email(make_msg("a@example.org", "s", "b"), starttls(server, ca_file, debug=level))
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert any("C: AUTH PLAIN ***" in line for line in lines), err
    assert any(f"C: MAIL FROM:<{ADDR}>" in line for line in lines), err
    assert any("S: 250" in line for line in lines), err
    if level == 2:  # smtplib's level 2 puts a time before each line
        assert all(line[:2].isdigit() and line[2] == ":" for line in lines), err
    for secret in (PW, base64.b64encode(f"\0{ADDR}\0{PW}".encode()).decode()):
        assert secret not in err


# --- against the real Postfix ---------------------------------------------------------------


def submission(stack: MailStack, **kw) -> SMTPConfig:
    password = kw.pop("password", stack.users["probe"])
    return SMTPConfig.starttls_587(
        stack.host,
        username="probe",
        password=password,
        port=stack.submission_port,
        ca_file=str(stack.ca_file),
        timeout=10.0,
        **kw,
    )


def delivered(stack: MailStack, user: str, token: str, timeout: float = 20.0) -> bytes:
    """The delivered message holding ``token``, waiting for Postfix to deliver it."""
    maildir = stack.maildir_root / user / "Maildir"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for path in (*maildir.glob("new/*"), *maildir.glob("cur/*")):
            data = _read(path)
            if token.encode() in data:
                return data
        time.sleep(0.1)
    raise AssertionError(f"{token} not delivered to {user} within {timeout}s")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:  # moved from new/ to cur/ meanwhile
        return b""


@pytest.mark.postfix
def test_postfix_send_email_and_print(mailstack, capsys):
    cfg = submission(mailstack)
    token = secrets.token_hex(8)
    msg = make_msg(
        "canary@localhost, nobody@localhost", f"compat {token}", "Body", sender="probe@localhost"
    )
    for r in send_email(msg, cfg):
        print(r)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "canary@localhost: OK"
    assert out[1].startswith("nobody@localhost: FAIL 550 5.1.1 <nobody@localhost>"), out
    data = delivered(mailstack, "canary", token)
    parsed = email.message_from_bytes(data)
    assert parsed["From"] == "probe@localhost" and parsed["Subject"] == f"compat {token}"


@pytest.mark.postfix
def test_postfix_ssl_465_bulk_and_retry(mailstack):
    cfg = SMTPConfig.ssl_465(
        mailstack.host,
        "probe",
        mailstack.users["probe"],
        port=mailstack.smtps_port,
        ca_file=str(mailstack.ca_file),
    )
    tokens = [secrets.token_hex(8) for _ in range(3)]
    messages = [make_msg("canary@localhost", t, "b", sender="probe@localhost") for t in tokens]
    batches = [[str(r) for r in batch] for batch in send_bulk(messages[:2], cfg, delay=0.0)]
    assert batches == [["canary@localhost: OK"], ["canary@localhost: OK"]]
    (r,) = send_with_retry(messages[2], cfg, 2, 0.1)
    assert (r.ok, r.attempts) == (True, 1)
    for t in tokens:
        delivered(mailstack, "canary", t)
    # "probe" is no address: a message without From is refused, naming the fix.
    (r,) = send_email(make_msg("canary@localhost", "s", "b"), cfg)
    assert not r.ok and "sender=" in r.error


@pytest.mark.postfix
def test_postfix_queue_with_two_workers(mailstack):
    q = SMTPQueue(submission(mailstack), workers=2).start()
    tokens = [secrets.token_hex(8) for _ in range(4)]
    for t in tokens:
        q.enqueue(make_msg("canary@localhost", t, "b", sender="probe@localhost"))
    q.stop(timeout=30.0)
    assert [str(r) for r in q.drain_results()] == ["canary@localhost: OK"] * 4
    assert len(q.drain_results()) == 4
    for t in tokens:
        delivered(mailstack, "canary", t)


@pytest.mark.postfix
def test_postfix_empty_username_sends_without_auth(mailstack):
    # The MX port offers no AUTH: an empty username must not try it (was: not_offered).
    mx = SMTPConfig(mailstack.host, mailstack.mx_port, "", "", ca_file=str(mailstack.ca_file))
    token = secrets.token_hex(8)
    (r,) = send_email(make_msg("canary@localhost", token, "b", sender="x@example.com"), mx)
    assert str(r) == "canary@localhost: OK"
    delivered(mailstack, "canary", token)
    assert smtp_health_check(mx) == (True, f"{mailstack.host}:{mailstack.mx_port} OK")
    # Submission takes mail only after AUTH: without it, the recipient is refused.
    anon = dataclasses.replace(submission(mailstack), username="", password="")
    (r,) = send_email(make_msg("canary@localhost", "s", "b", sender="x@example.com"), anon)
    assert not r.ok and r.code == 554 and str(r).startswith("canary@localhost: FAIL 554 5.7.1")


@pytest.mark.postfix
def test_postfix_health_check_strings_and_debug(mailstack, capfd):
    cfg = submission(mailstack)
    assert smtp_health_check(cfg) == (True, f"{mailstack.host}:{mailstack.submission_port} OK")
    ok, detail = smtp_health_check(submission(mailstack, password="wrong-pass"))
    assert not ok and detail.startswith("auth failed: auth reply: 535"), detail
    expired = dataclasses.replace(cfg, port=mailstack.expired_port)
    ok, detail = smtp_health_check(expired)
    assert not ok and detail.startswith("connect failed: tls_handshake tls_verify"), detail
    capfd.readouterr()
    send_email(
        make_msg("canary@localhost", "s", "b", sender="probe@localhost"),
        submission(mailstack, debug=1),
    )
    err = capfd.readouterr().err
    assert "C: AUTH PLAIN ***" in err and "S: 235" in err, err
    password = mailstack.users["probe"]
    assert password not in err
    assert base64.b64encode(f"\0probe\0{password}".encode()).decode() not in err


def test_readme_shows_the_seed_usage():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## The send library", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    compile(code, "README.md", "exec")  # it is Python, not pseudo-code
    import exporter.send

    for name in set(exporter.send.__all__) - {"SendResult"}:
        assert f"{name}(" in code or f"{name}." in code, name
    for usage in ("for batch in send_bulk(", "print(r)", "workers=2", "dry_run=True"):
        assert usage in code, usage
