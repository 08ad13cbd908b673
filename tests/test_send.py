"""The send library against real aiosmtpd servers with a mail policy."""

from __future__ import annotations

import email
import logging
import time
from email.message import EmailMessage

import pytest

from exporter.embedded import free_port
from exporter.send import (
    SMTPConfig,
    SMTPQueue,
    make_msg,
    send_bulk,
    send_email,
    send_with_retry,
    smtp_health_check,
)
from exporter.send.api import backoff_delay
from exporter.send.message import envelope

from .conftest import PASSWORD, USER
from .servers.policy import Policy, PolicyHandler

SENDER = "monitor@example.com"


@pytest.fixture
def policy_server(smtp_server):
    def make(policy: Policy | None = None, tls: str = "starttls"):
        handler = PolicyHandler(policy or Policy())
        server = smtp_server(tls, handler=handler)
        return server, handler

    return make


def cfg(port: int, ca_file: str, **kw) -> SMTPConfig:
    base = SMTPConfig(
        "127.0.0.1", port, USER, PASSWORD, use_ssl=False, use_tls=True, timeout=5.0, ca_file=ca_file
    )
    return SMTPConfig(**{**base.__dict__, **kw})


def test_per_recipient_results_and_bcc_not_transmitted(policy_server, ca_file):
    server, _ = policy_server(Policy(reject_rcpt={"nobody@example.org"}))
    msg = make_msg(
        '"Doe, Jane" <jane@example.org>, nobody@example.org',
        "hello",
        "body",
        sender=SENDER,
        cc="Team: a@example.org, jane@example.org;",
        bcc="hidden@example.org",
    )
    results = send_email(msg, cfg(server.port, ca_file))
    by_to = {r.to: r for r in results}
    assert list(by_to) == [
        "jane@example.org",
        "nobody@example.org",
        "a@example.org",
        "hidden@example.org",
    ]  # parsed, deduplicated, in order
    assert by_to["jane@example.org"].ok and by_to["hidden@example.org"].ok
    refused = by_to["nobody@example.org"]
    assert (refused.ok, refused.code, refused.enhanced, refused.transient) == (
        False,
        550,
        "5.1.1",
        False,
    )
    (received,) = server.messages
    assert set(received.rcpt_tos) == {"jane@example.org", "a@example.org", "hidden@example.org"}
    parsed = email.message_from_bytes(received.data)
    assert parsed["Bcc"] is None and b"hidden@example.org" not in received.data
    assert msg["Bcc"] == "hidden@example.org"  # the caller's message is untouched
    assert received.mail_from == SENDER


def test_sender_and_data_refusals_reported_for_every_recipient(policy_server, ca_file):
    server, _ = policy_server(Policy(reject_sender={SENDER}))
    results = send_email(
        make_msg("a@x.org, b@x.org", "s", "b", sender=SENDER), cfg(server.port, ca_file)
    )
    assert [(r.ok, r.code) for r in results] == [(False, 553), (False, 553)]
    server2, _ = policy_server(Policy(reject_data=True))
    results = send_email(
        make_msg("a@x.org, b@x.org", "s", "b", sender=SENDER), cfg(server2.port, ca_file)
    )
    assert [(r.ok, r.code, r.enhanced) for r in results] == [(False, 554, "5.6.0")] * 2


def test_retry_only_transient_recipients(policy_server, ca_file):
    server, handler = policy_server(
        Policy(tempfail_rcpt={"later@x.org": 2}, reject_rcpt={"never@x.org"})
    )
    delays: list[float] = []
    msg = make_msg("later@x.org, never@x.org, now@x.org", "s", "b", sender=SENDER)
    results = send_with_retry(
        msg, cfg(server.port, ca_file), max_attempts=4, backoff=1.0, sleep=delays.append
    )
    by_to = {r.to: r for r in results}
    assert by_to["later@x.org"].ok and by_to["later@x.org"].attempts == 3
    assert not by_to["never@x.org"].ok and by_to["never@x.org"].attempts == 1
    assert by_to["now@x.org"].ok and by_to["now@x.org"].attempts == 1
    # Only the transient recipient was sent again; the 5xx never was.
    assert handler.rcpt_attempts == {"later@x.org": 3, "never@x.org": 1, "now@x.org": 1}
    # Delivered once each: now@ with the first try, later@ with its third, never duplicated.
    assert [m.rcpt_tos for m in server.messages] == [("now@x.org",), ("later@x.org",)]
    assert len(delays) == 2 and 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0


def test_retry_gives_up_after_max_attempts(policy_server, ca_file):
    server, handler = policy_server(Policy(tempfail_rcpt={"later@x.org": 10}))
    (r,) = send_with_retry(
        make_msg("later@x.org", "s", "b", sender=SENDER),
        cfg(server.port, ca_file),
        max_attempts=3,
        sleep=lambda s: None,
    )
    assert (r.ok, r.code, r.transient, r.attempts) == (False, 451, True, 3)
    assert handler.rcpt_attempts["later@x.org"] == 3


def test_backoff_is_exponential_with_jitter_and_capped():
    import random

    rng = random.Random(0)
    for attempt, base in ((2, 2.0), (3, 4.0), (4, 8.0)):
        d = backoff_delay(attempt, 2.0, rng)
        assert base / 2 <= d <= base
    assert backoff_delay(30, 2.0, rng) <= 60.0


def test_connection_refused_is_transient():
    (r,) = send_email(
        make_msg("a@x.org", "s", "b", sender=SENDER),
        SMTPConfig("127.0.0.1", free_port(), timeout=2.0, use_tls=False),
    )
    assert not r.ok and r.transient and "connection_refused" in (r.error or "")


def test_bulk_reconnects_when_the_server_drops(policy_server, ca_file):
    server, handler = policy_server(Policy(drop_after=2))
    msgs = [make_msg(f"user{i}@x.org", f"m{i}", "b", sender=SENDER) for i in range(5)]
    batches = send_bulk(msgs, cfg(server.port, ca_file))
    assert [[(r.to, r.ok) for r in b] for b in batches] == [
        [(f"user{i}@x.org", True)] for i in range(5)
    ]
    assert len(server.messages) == 5  # each exactly once
    assert handler.connections_used == 3


def test_bulk_caps_messages_per_connection_and_rate(policy_server, ca_file):
    server, handler = policy_server()
    msgs = [make_msg(f"u{i}@x.org", "s", "b", sender=SENDER) for i in range(5)]
    start = time.monotonic()
    batches = send_bulk(
        msgs, cfg(server.port, ca_file, max_messages_per_connection=2, rate_limit=20.0)
    )
    elapsed = time.monotonic() - start
    assert len(batches) == 5 and all(r.ok for b in batches for r in b)
    assert handler.connections_used == 3
    assert elapsed >= 4 / 20.0  # five message starts, 50 ms apart at least


def test_dry_run_opens_no_connection():
    dead = SMTPConfig("127.0.0.1", free_port(), use_tls=False)
    msg = make_msg("a@x.org, b@x.org", "s", "b", sender=SENDER, bcc="c@x.org")
    for results in (
        send_email(msg, dead, dry_run=True),
        *send_bulk([msg, msg], dead, dry_run=True),
        send_with_retry(msg, dead, dry_run=True),
    ):
        assert all(r.ok and r.dry_run for r in results)
        assert {r.to for r in results} == {"a@x.org", "b@x.org", "c@x.org"}


def test_queue_sends_everything_and_survives_bad_items(policy_server, ca_file):
    server, _ = policy_server()
    q = SMTPQueue(cfg(server.port, ca_file), workers=2).start()
    for i in range(6):
        q.enqueue(make_msg(f"q{i}@x.org, r{i}@x.org", "s", "b", sender=SENDER))
        if i == 2:
            q.enqueue(Exploding())
    left = q.stop(timeout=20)
    assert left == []
    results = q.drain_results()
    good = [r for r in results if r.ok]
    assert len(good) == 12
    assert any(r.error and r.error.startswith("internal error") for r in results)
    assert len(server.messages) == 6
    assert q.drain_results() == results  # a copy: asking again gives the same
    assert q.drain_results(clear=True) == results and q.drain_results() == []
    with pytest.raises(RuntimeError):
        q.enqueue(make_msg("x@x.org", "s", "b"))
    with pytest.raises(TypeError):
        SMTPQueue(cfg(server.port, ca_file)).start().enqueue("not a message")  # type: ignore[arg-type]


class Exploding(EmailMessage):
    """Stands for a bug while sending: serialising it raises."""

    def __init__(self) -> None:
        super().__init__()
        self["To"] = "boom@x.org"

    def as_bytes(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")


def test_queue_stop_reports_undelivered_within_timeout(server_context):
    from .servers.fault import FaultServer

    with FaultServer("tarpit_greeting", ssl_context=server_context) as tarpit:
        q = SMTPQueue(
            SMTPConfig("127.0.0.1", tarpit.port, use_tls=False, timeout=3.0), workers=1
        ).start()
        msgs = [make_msg(f"u{i}@x.org", "s", "b", sender=SENDER) for i in range(4)]
        for m in msgs:
            q.enqueue(m)
        assert tarpit.wait_for_connections(1, 5)  # the worker is stuck on the first message
        start = time.monotonic()
        left = q.stop(timeout=1.0)
        elapsed = time.monotonic() - start
    assert elapsed < 1.3
    assert [m["To"] for m in left] == ["u1@x.org", "u2@x.org", "u3@x.org"]


def test_debug_wire_log_redacts_auth(policy_server, ca_file, caplog, capfd):
    server, _ = policy_server()
    with caplog.at_level(logging.DEBUG, logger="exporter.send.wire"):
        for mech_server in (server,):
            send_email(
                make_msg("a@x.org", "s", "b", sender=SENDER),
                cfg(mech_server.port, ca_file, debug=True),
            )
    lines = [r.getMessage() for r in caplog.records if r.name == "exporter.send.wire"]
    # With the logger at DEBUG the dialogue goes there, not also to stderr (see
    # test_send_compat for debug=1 printing it when the application does not log it).
    assert "C: MAIL FROM" not in capfd.readouterr().err
    assert any(line.startswith("C: AUTH PLAIN ***") for line in lines), lines
    assert any(line.startswith("C: MAIL FROM:<") for line in lines)
    import base64

    secret_forms = (
        PASSWORD,
        base64.b64encode(PASSWORD.encode()).decode(),
        base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
    )
    assert not any(s in line for line in lines for s in secret_forms)


def test_health_check(policy_server, ca_file):
    server, _ = policy_server()
    ok, detail = smtp_health_check(cfg(server.port, ca_file))
    assert (ok, detail) == (True, f"127.0.0.1:{server.port} OK")
    bad, detail = smtp_health_check(cfg(server.port, ca_file, password="wrong"))
    assert not bad and detail.startswith("auth failed: auth reply: 535"), detail


def test_config_rules():
    with pytest.raises(ValueError, match="exclude each other"):
        SMTPConfig("h", 25, use_ssl=True, use_tls=True)
    with pytest.raises(ValueError, match="host"):
        SMTPConfig("bad\r\nhost")
    c = SMTPConfig.ssl_465("smtp.example.com", "u", "pw")
    assert (c.port, c.use_ssl, c.use_tls) == (465, True, False)
    c = SMTPConfig.starttls_587("smtp.example.com", "u", "pw")
    assert (c.port, c.use_ssl, c.use_tls) == (587, False, True)
    assert "pw" not in repr(c)


def test_envelope_parsing():
    msg = make_msg(
        '"Last, First" <first@x.org>, first@X.ORG',
        "s",
        "b",
        sender="Me <me@x.org>",
        cc="Undisclosed:;",
    )
    env = envelope(msg)
    assert env.recipients == ("first@x.org",) and env.sender == "me@x.org"
    msg["Resent-Date"] = "Thu, 26 Nov 2026 08:00:00 +0000"
    msg["Resent-From"] = "fwd@x.org"
    msg["Resent-To"] = "new@x.org"
    env = envelope(msg)
    assert env.recipients == ("new@x.org",) and env.sender == "fwd@x.org"


def test_envelope_from_default_and_problem():
    from exporter.send.message import NO_FROM

    bare = make_msg("a@x.org", "s", "b")
    env = envelope(bare)
    assert (env.problem, env.sender) == (NO_FROM, "")
    env = envelope(bare, default_from="me@x.org")
    assert env.problem is None and env.sender == "me@x.org"
    assert email.message_from_bytes(env.data)["From"] == "me@x.org" and bare["From"] is None
    bare["From"] = "Undisclosed:;"  # a From naming no address is no From
    assert envelope(bare).problem == NO_FROM
    env = envelope(bare, default_from="me@x.org")
    assert email.message_from_bytes(env.data).get_all("From") == ["me@x.org"]
    # The null reverse-path only when asked for, and the message still needs its From.
    env = envelope(make_msg("a@x.org", "s", "b", sender="me@x.org"), "")
    assert (env.sender, env.problem) == ("", None)


def test_refusal_states_the_reply_once(policy_server, ca_file):
    """The error is the phase and the server's reply as sent: "auth: 535 5.7.8 ...", the
    code not repeated ("535 535 5.7.8")."""
    server, _ = policy_server()
    (result,) = send_email(
        make_msg("a@x.org", "s", "b", sender=SENDER), cfg(server.port, ca_file, password="wrong")
    )
    assert not result.ok and (result.code, result.enhanced) == (535, "5.7.8")
    assert result.error is not None and result.error.startswith("auth: 535 5.7.8 "), result.error
    assert result.error.count("535") == 1, result.error
