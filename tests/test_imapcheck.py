"""The canary's IMAP side: finds and deletes only its message on a real Dovecot, stays inside
its deadline against hostile servers, and validates its config section."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import imaplib
import re
import smtplib
import ssl
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest

from exporter.config import Secret
from exporter.deadline import Deadline
from exporter.errors import ConfigError
from exporter.imapcheck import (
    TOKEN_HEADER,
    IMAPCheck,
    IMAPConfig,
    IMAPPhase,
    IMAPTLSMode,
    Sweep,
    find_and_delete,
    owner_id,
    parse_imap_config,
)
from exporter.imapcheck import new_token as canary_token
from exporter.results import FailureKind
from tests.servers.imapfault import IMAPFaultServer
from tests.servers.mailstack import MailStack

HOSTILE_BUDGET = 2.0
SLACK = 1.1  # "within the deadline + 10 %"


def run(
    cfg: IMAPConfig, token: str, budget: float, sweep: Sweep | None = None
) -> tuple[IMAPCheck, float]:
    """find_and_delete under a fresh deadline; the result and the seconds it took."""

    async def main() -> tuple[IMAPCheck, float]:
        t0 = time.monotonic()
        check = await find_and_delete(cfg, token, Deadline.after(budget), sweep)
        return check, time.monotonic() - t0

    return asyncio.run(main())


def new_token() -> str:
    return uuid.uuid4().hex


# --------------------------------------------------------------------------- real Dovecot


def imap_config(stack: MailStack, tls: IMAPTLSMode, password: str = "canary-pass") -> IMAPConfig:
    port = stack.imaps_port if tls is IMAPTLSMode.IMPLICIT else stack.imap_port
    return IMAPConfig(
        host=stack.host,
        port=port,
        tls=tls,
        username="canary",
        password=Secret(password),
        tls_ca_file=str(stack.ca_file),
        poll_interval=0.2,
    )


def send_canary(stack: MailStack, *tokens: str) -> None:
    """Submit one message per token to canary@localhost, the way the canary will."""
    ctx = ssl.create_default_context(cafile=str(stack.ca_file))
    with smtplib.SMTP(stack.host, stack.submission_port, timeout=10) as smtp:
        smtp.starttls(context=ctx)
        smtp.login("probe", stack.users["probe"])
        for token in tokens:
            msg = EmailMessage()
            msg["From"] = "probe@localhost"
            msg["To"] = "canary@localhost"
            msg["Subject"] = f"canary {token}"
            msg[TOKEN_HEADER] = token
            msg.set_content("smtp-health-exporter canary\n")
            assert smtp.send_message(msg) == {}


def search(stack: MailStack, token: str) -> list[bytes]:
    """UIDs in canary's INBOX whose token header contains ``token``, by plain imaplib."""
    ctx = ssl.create_default_context(cafile=str(stack.ca_file))
    with imaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=ctx, timeout=10) as imap:
        imap.login("canary", stack.users["canary"])
        imap.select("INBOX", readonly=True)
        typ, data = imap.uid("SEARCH", "HEADER", TOKEN_HEADER, f'"{token}"')
        assert typ == "OK"
        return data[0].split()


@pytest.mark.postfix
@pytest.mark.parametrize("tls", [IMAPTLSMode.IMPLICIT, IMAPTLSMode.STARTTLS])
def test_finds_and_deletes_canary(mailstack: MailStack, tls: IMAPTLSMode) -> None:
    token = new_token()
    before = time.time()
    send_canary(mailstack, token)
    check, elapsed = run(imap_config(mailstack, tls), token, 10.0)
    assert check.error is None, check
    assert check.found and check.deleted and check.polls >= 1
    assert check.seen_at is not None and before < check.seen_at <= time.time()
    assert elapsed < 5.0
    assert search(mailstack, token) == []


@pytest.mark.postfix
def test_other_tokens_are_left_alone(mailstack: MailStack) -> None:
    token = new_token()
    # HEADER search matches substrings, so a token that contains ours is the hard case.
    longer, unrelated = f"{token}-2", new_token()
    send_canary(mailstack, token, longer, unrelated)
    check, _ = run(imap_config(mailstack, IMAPTLSMode.IMPLICIT), token, 10.0)
    assert check.error is None and check.deleted, check
    assert search(mailstack, token) != []  # the longer one still matches the substring
    assert len(search(mailstack, longer)) == 1 and len(search(mailstack, unrelated)) == 1
    for other in (longer, unrelated):  # leave the shared mailbox as we found it
        check, _ = run(imap_config(mailstack, IMAPTLSMode.IMPLICIT), other, 10.0)
        assert check.deleted, check
    assert search(mailstack, token) == []


@pytest.mark.postfix
def test_token_never_sent_is_not_found_in_time(mailstack: MailStack) -> None:
    budget = 3.0
    check, elapsed = run(imap_config(mailstack, IMAPTLSMode.STARTTLS), new_token(), budget)
    assert (check.found, check.deleted, check.seen_at) == (False, False, None)
    assert check.error == f"not found within {budget:g}s"
    assert check.polls >= 5  # every 0.2 s
    assert budget * 0.8 < elapsed < budget * SLACK


@pytest.mark.postfix
def test_wrong_password_is_a_quick_login_error(mailstack: MailStack) -> None:
    cfg = imap_config(mailstack, IMAPTLSMode.IMPLICIT, password="not-the-password")
    check, elapsed = run(cfg, new_token(), 10.0)
    assert check.error is not None and check.error.startswith("login failed:"), check
    assert "AUTHENTICATIONFAILED" in check.error
    assert "not-the-password" not in check.error
    assert elapsed < 5.0  # Dovecot's auth_failure_delay is 2 s
    assert not check.found and check.polls == 0
    assert check.failure is not None and not check.access_ok
    assert (check.failure.phase, check.failure.kind) == (IMAPPhase.LOGIN, FailureKind.REPLY)


@pytest.mark.postfix
def test_wrong_ca_is_a_tls_error(mailstack: MailStack, ca_file: str) -> None:
    cfg = dataclasses.replace(imap_config(mailstack, IMAPTLSMode.IMPLICIT), tls_ca_file=ca_file)
    check, _ = run(cfg, new_token(), 5.0)
    assert check.error is not None and "certificate did not verify" in check.error, check
    assert check.failure is not None and check.failure.kind is FailureKind.TLS_VERIFY
    assert check.failure.phase is IMAPPhase.TLS_HANDSHAKE and check.polls == 0


@pytest.mark.postfix
@pytest.mark.parametrize(
    ("cert", "kind"),
    [("expired", FailureKind.TLS_VERIFY), ("wronghost", FailureKind.TLS_HOSTNAME)],
)
def test_bad_certificate_is_a_tls_error(mailstack: MailStack, cert: str, kind: FailureKind) -> None:
    port = mailstack.mailbox_port("imap", True, cert)
    cfg = dataclasses.replace(imap_config(mailstack, IMAPTLSMode.IMPLICIT), port=port)
    check, _ = run(cfg, new_token(), 5.0)
    assert check.failure is not None and check.failure.kind is kind, check
    assert check.failure.phase is IMAPPhase.TLS_HANDSHAKE and check.polls == 0


def append(
    stack: MailStack, value: str, *, header: str = TOKEN_HEADER, flags: str = "", at: float
) -> None:
    """Put a message straight into canary's INBOX, with the IMAP arrival time ``at``."""
    msg = EmailMessage()
    msg["From"] = "someone@localhost"
    msg["To"] = "canary@localhost"
    msg["Subject"] = "planted by test_imapcheck"
    msg[header] = value
    msg.set_content("planted\n")
    ctx = ssl.create_default_context(cafile=str(stack.ca_file))
    with imaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=ctx, timeout=10) as imap:
        imap.login("canary", stack.users["canary"])
        typ, dat = imap.append("INBOX", flags or None, at, msg.as_bytes())
        assert typ == "OK", dat


def inbox(stack: MailStack) -> dict[str, tuple[str, bool]]:
    """Every message of canary's INBOX: its token header value (or another header's, as
    'Name: value') -> (UID, flagged \\Deleted)."""
    ctx = ssl.create_default_context(cafile=str(stack.ca_file))
    out: dict[str, tuple[str, bool]] = {}
    with imaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=ctx, timeout=10) as imap:
        imap.login("canary", stack.users["canary"])
        imap.select("INBOX", readonly=True)
        typ, dat = imap.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER])")
        assert typ == "OK", dat
        for item in dat:
            if not isinstance(item, tuple):
                continue
            uid = re.search(rb"UID (\d+)", item[0])
            assert uid is not None
            msg = email.message_from_bytes(item[1])
            # Long values are folded onto a second line (as the canary's own are).
            value = msg[TOKEN_HEADER]
            copy = msg["X-SMTP-Health-Canary-Copy"]
            key = str(value).strip() if value else f"copy: {str(copy).strip()}"
            out[key] = (uid.group(1).decode(), b"\\Deleted" in item[0])
    return out


def expunge_all(stack: MailStack, uids: list[str]) -> None:
    ctx = ssl.create_default_context(cafile=str(stack.ca_file))
    with imaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=ctx, timeout=10) as imap:
        imap.login("canary", stack.users["canary"])
        imap.select("INBOX")
        if uids:
            imap.uid("STORE", ",".join(uids), "+FLAGS.SILENT", r"(\Deleted)")
            imap.uid("EXPUNGE", ",".join(uids))


@pytest.mark.postfix
def test_sweep_on_dovecot_removes_only_this_owners_stale_canaries(mailstack: MailStack) -> None:
    """Planted: two stale canaries of ours (one arrived late, one in time), and decoys the
    sweep must leave alone: a similar header value, the exact value under another header
    name, a fresh canary, another owner's stale canary, and a message another client flagged
    \\Deleted. Then a real canary through Postfix is looked for with the sweep on."""
    owner = owner_id(f"dovecot-sweep-{uuid.uuid4().hex}", "submission")
    now = time.time()
    late = canary_token(owner, now - 3 * TIMEOUT)
    on_time = canary_token(owner, now - 2 * TIMEOUT)
    fresh = canary_token(owner, now - 10)
    similar = canary_token(owner, now - 3 * TIMEOUT) + "0"
    copied = canary_token(owner, now - 3 * TIMEOUT)
    others = canary_token(owner_id("other-target", "submission"), now - 3 * TIMEOUT)
    flagged = canary_token(owner, now - 3 * TIMEOUT)  # ours, but someone flagged it
    append(mailstack, late, at=now - 2 * TIMEOUT + 30)
    append(mailstack, on_time, at=now - 2 * TIMEOUT + 5)
    append(mailstack, fresh, at=now - 5)
    append(mailstack, similar, at=now - 2 * TIMEOUT)
    append(mailstack, copied, header="X-SMTP-Health-Canary-Copy", at=now - 2 * TIMEOUT)
    append(mailstack, others, at=now - 2 * TIMEOUT)
    append(mailstack, flagged, flags=r"(\Deleted)", at=now - 2 * TIMEOUT)
    append(mailstack, "not a canary", flags=r"(\Deleted)", at=now - 60)
    current = canary_token(owner, time.time())
    send_canary(mailstack, current)
    try:
        check, _ = run(
            imap_config(mailstack, IMAPTLSMode.IMPLICIT), current, 10.0, Sweep(owner, TIMEOUT)
        )
        assert check.found and check.expunged and check.access_ok, check
        assert (check.swept, check.late) == (2, 1), check
        left = inbox(mailstack)
        assert late not in left and on_time not in left and current not in left
        for kept in (fresh, similar, f"copy: {copied}", others):
            assert kept in left and left[kept][1] is False, (kept, check, left)
        assert left[flagged][1] is True and left["not a canary"][1] is True
    finally:
        left = inbox(mailstack)
        mine = [fresh, similar, f"copy: {copied}", others, flagged, "not a canary", late, on_time]
        expunge_all(mailstack, [left[k][0] for k in mine if k in left])


# --------------------------------------------------------------------------- hostile servers


def fault_config(port: int, password: str = "canary-pass") -> IMAPConfig:
    return IMAPConfig(
        "127.0.0.1", port, IMAPTLSMode.NONE, "canary", Secret(password), poll_interval=0.1
    )


def wait_for_threads(baseline: int, timeout: float = 1.0) -> int:
    end = time.monotonic() + timeout
    while threading.active_count() > baseline and time.monotonic() < end:
        time.sleep(0.01)
    return threading.active_count()


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("tarpit", "timeout after 2s during greeting"),
        ("drip_greeting", "timeout after 2s during greeting"),
        ("garbage_greeting", "greeting failed: malformed response"),
        ("endless_line", "greeting failed: response line longer than 65536 bytes"),
        ("endless_untagged", "login failed: more than 1048576 bytes of responses"),
        ("search_tarpit", "timeout after 2s during search"),
        ("huge_literal", "select failed: literal of 2000000000 bytes exceeds 65536"),
    ],
)
def test_hostile_server_ends_within_deadline(behaviour: str, expected: str) -> None:
    with IMAPFaultServer(behaviour, messages={7: "tok"}) as server:
        baseline = threading.active_count()
        check, elapsed = run(fault_config(server.port), "tok", HOSTILE_BUDGET)
        assert wait_for_threads(baseline) == baseline, threading.enumerate()
    assert check.error is not None and check.error.startswith(expected), check
    assert len(check.error) <= 256 and check.error.isprintable()
    assert (check.found, check.deleted) == (False, False)
    assert elapsed < HOSTILE_BUDGET * SLACK


def test_tls_handshake_tarpit_ends_within_deadline() -> None:
    with IMAPFaultServer("tarpit") as server:
        baseline = threading.active_count()
        cfg = dataclasses.replace(fault_config(server.port), tls=IMAPTLSMode.IMPLICIT)
        check, elapsed = run(cfg, "tok", HOSTILE_BUDGET)
        assert wait_for_threads(baseline) == baseline, threading.enumerate()
    assert check.error == "timeout after 2s during tls handshake", check
    assert elapsed < HOSTILE_BUDGET * SLACK


def test_starttls_not_offered_means_no_login() -> None:
    with IMAPFaultServer() as server:
        cfg = dataclasses.replace(fault_config(server.port), tls=IMAPTLSMode.STARTTLS)
        check, _ = run(cfg, "tok", HOSTILE_BUDGET)
        received = b"".join(server.received)
    assert check.error == "starttls failed: not offered by the server", check
    assert b"LOGIN" not in received and b"AUTHENTICATE" not in received


def plain_expunges(received: list[bytes]) -> list[bytes]:
    """Command lines that are a plain EXPUNGE (tag EXPUNGE), not UID EXPUNGE."""
    return [line for line in received if line.split()[1:2] == [b"EXPUNGE"]]


@pytest.mark.parametrize("auth_plain", [False, True])
@pytest.mark.parametrize("uidplus", [False, True])
def test_fault_server_baseline_deletes_exact_match_only(auth_plain: bool, uidplus: bool) -> None:
    messages = {7: "tok", 8: "xtoky", 9: "other"}
    with IMAPFaultServer(messages=messages, uidplus=uidplus, auth_plain=auth_plain) as server:
        check, elapsed = run(fault_config(server.port), "tok", HOSTILE_BUDGET)
        received = server.received
    assert (check.found, check.deleted, check.polls, check.error) == (True, True, 1, None)
    assert check.access_ok and check.expunged == uidplus
    if uidplus:
        assert server.expunged == [7] and set(server.messages) == {8, 9}
    else:  # left flagged for whoever expunges the mailbox next
        assert server.expunged == [] and server.flagged == {7} and set(server.messages) == {7, 8, 9}
    assert any(line.endswith(b" UID EXPUNGE 7\r\n") for line in received) == uidplus
    assert plain_expunges(received) == []
    assert any(b"AUTHENTICATE PLAIN" in line for line in received) == auth_plain
    assert any(b"LOGOUT" in line for line in received) and elapsed < 1.0


OWNER = owner_id("mx.example.com:587", "submission")
TIMEOUT = 60.0


def token_at(sent: float, owner: str = OWNER) -> str:
    return canary_token(owner, sent)


def test_no_uidplus_never_expunges_another_clients_deleted_message() -> None:
    """The bug of #14.6: without UIDPLUS, a plain EXPUNGE would also remove message 5, which
    another client flagged \\Deleted (to undo, or to expunge itself later)."""
    now = time.time()
    current, stale = token_at(now), token_at(now - 3 * TIMEOUT)
    messages = {5: "someone else's draft", 6: stale, 7: current}
    with IMAPFaultServer(messages=messages, uidplus=False, deleted={5}) as server:
        check, _ = run(fault_config(server.port), current, HOSTILE_BUDGET, Sweep(OWNER, TIMEOUT))
        received = server.received
    assert check.found and check.deleted and not check.expunged and check.access_ok, check
    assert check.swept == 1  # the stale one: flagged, not expunged
    assert plain_expunges(received) == [] and not any(b"EXPUNGE" in ln for ln in received)
    assert set(server.messages) == {5, 6, 7} and server.flagged == {5, 6, 7}
    assert server.expunged == []


def test_sweep_deletes_only_stale_exact_canaries_of_this_owner() -> None:
    now = time.time()
    current = token_at(now)
    stale_late, stale_on_time = token_at(now - 3 * TIMEOUT), token_at(now - 2 * TIMEOUT)
    messages = {
        1: stale_late,  # arrived after its timeout: a late arrival
        2: stale_on_time,  # arrived in time but never found (the mailbox could not be read)
        3: token_at(now - 10),  # fresh: its own session may still be looking for it
        4: stale_late + "x",  # similar, not exact
        5: "prefix " + token_at(now - 3 * TIMEOUT),  # contains a token, is not one
        6: token_at(now - 3 * TIMEOUT, owner_id("other:25", "mx")),  # another target's
        7: token_at(now - 3 * TIMEOUT),  # stale and ours, but another client flagged it
        8: current,
    }
    arrived = {1: now - 3 * TIMEOUT + TIMEOUT + 30, 2: now - 2 * TIMEOUT + 5}
    with IMAPFaultServer(messages=messages, deleted={7}, arrived=arrived) as server:
        check, _ = run(fault_config(server.port), current, HOSTILE_BUDGET, Sweep(OWNER, TIMEOUT))
        received = server.received
    assert check.found and check.expunged and check.access_ok, check
    assert (check.swept, check.late) == (2, 1)
    assert sorted(server.expunged) == [1, 2, 8] and set(server.messages) == {3, 4, 5, 6, 7}
    assert plain_expunges(received) == []


def test_sweep_runs_when_the_canary_is_not_found() -> None:
    now = time.time()
    messages = {1: token_at(now - 3 * TIMEOUT)}
    with IMAPFaultServer(messages=messages) as server:
        check, _ = run(fault_config(server.port), token_at(now), 1.5, Sweep(OWNER, TIMEOUT))
    assert not check.found and check.access_ok and check.error == "not found within 1.5s"
    assert check.swept == 1 and server.expunged == [1]


@pytest.mark.parametrize(
    ("behaviour", "password", "phase", "kind"),
    [
        ("normal", "wrong", IMAPPhase.LOGIN, FailureKind.REPLY),
        ("tarpit", "canary-pass", IMAPPhase.GREETING, FailureKind.TIMEOUT),
        ("garbage_greeting", "canary-pass", IMAPPhase.GREETING, FailureKind.PROTOCOL),
        ("search_tarpit", "canary-pass", IMAPPhase.SEARCH, FailureKind.TIMEOUT),
    ],
)
def test_access_failure_has_phase_and_kind(
    behaviour: str, password: str, phase: IMAPPhase, kind: FailureKind
) -> None:
    with IMAPFaultServer(behaviour, messages={7: "tok"}) as server:
        check, _ = run(fault_config(server.port, password), "tok", HOSTILE_BUDGET)
    assert check.failure is not None and not check.access_ok, check
    assert (check.failure.phase, check.failure.kind) == (phase, kind), check
    assert check.error == check.failure.detail and not check.found


def test_closed_port_is_connection_refused() -> None:
    with IMAPFaultServer() as server:
        port = server.port
    check, _ = run(fault_config(port), "tok", HOSTILE_BUDGET)
    assert check.failure is not None, check
    assert (check.failure.phase, check.failure.kind) == (
        IMAPPhase.CONNECT,
        FailureKind.REFUSED,
    )


@pytest.mark.parametrize("auth_plain", [False, True])
def test_echoed_password_is_masked(auth_plain: bool) -> None:
    password = 'pa"ss\\wörd' if auth_plain else "hunter2-secret"
    with IMAPFaultServer("login_echo", auth_plain=auth_plain) as server:
        check, _ = run(fault_config(server.port, password), "tok", HOSTILE_BUDGET)
    assert check.error is not None and check.error.startswith("login failed:"), check
    assert "***" in check.error
    for fragment in ("hunter2", "wörd", "ss\\", "aHVudGVyMi1zZWNyZXQ"):
        assert fragment not in check.error


def test_not_found_polls_until_deadline() -> None:
    with IMAPFaultServer(messages={7: "other"}) as server:
        check, elapsed = run(fault_config(server.port), "tok", 1.0)
    assert check.error == "not found within 1s" and check.polls >= 5
    assert 0.7 < elapsed < 1.0 * SLACK


@pytest.mark.parametrize("token", ["", "a b", 'x"y', "t\r\nA1 LOGOUT", "x" * 65])
def test_unsafe_token_is_refused_without_connecting(token: str) -> None:
    with IMAPFaultServer() as server:
        check, _ = run(fault_config(server.port), token, HOSTILE_BUDGET)
        assert server.received == []
    assert check.error is not None and check.error.startswith("invalid token"), check


def test_cancellation_propagates_and_frees_the_worker() -> None:
    async def main(port: int) -> None:
        task = asyncio.create_task(find_and_delete(fault_config(port), "tok", Deadline.after(30)))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with IMAPFaultServer("tarpit") as server:
        baseline = threading.active_count()
        asyncio.run(main(server.port))
        assert wait_for_threads(baseline) == baseline


# --------------------------------------------------------------------------- config


def parse(raw: object, tmp_path: Path, env: dict[str, str] | None = None) -> IMAPConfig:
    return parse_imap_config(
        raw, "modules.sub.canary.imap", "c.yml", {"PW": "pw"} if env is None else env, tmp_path
    )


BASE = {"host": "imap.example.com", "username": "canary", "password_env": "PW"}


def test_config_defaults(tmp_path: Path) -> None:
    cfg = parse(BASE, tmp_path)
    assert cfg == IMAPConfig("imap.example.com", 993, IMAPTLSMode.IMPLICIT, "canary", Secret("pw"))
    assert (cfg.folder, cfg.tls_verify, cfg.tls_ca_file, cfg.poll_interval) == (
        "INBOX",
        True,
        None,
        1.0,
    )
    assert "pw" not in repr(cfg)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"tls": "starttls"}, {"tls": IMAPTLSMode.STARTTLS, "port": 143}),
        ({"tls": "none"}, {"tls": IMAPTLSMode.NONE, "port": 143}),
        ({"tls": "implicit", "port": 1993}, {"port": 1993}),
        (
            {"folder": "Canary Box", "tls_verify": False},
            {"folder": "Canary Box", "tls_verify": False},
        ),
        ({"poll_interval": "500ms"}, {"poll_interval": 0.5}),
        ({"poll_interval": "1m"}, {"poll_interval": 60.0}),
    ],
)
def test_config_good(tmp_path: Path, extra: dict[str, object], expected: dict[str, object]) -> None:
    cfg = parse({**BASE, **extra}, tmp_path)
    assert {k: getattr(cfg, k) for k in expected} == expected


def test_config_files_are_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text("s3cret\n")
    (tmp_path / "ca.pem").write_text("not checked here\n")
    raw = {"host": "h", "username": "u", "password_file": "pw.txt", "tls_ca_file": "ca.pem"}
    cfg = parse(raw, tmp_path, env={})
    assert cfg.password.reveal() == "s3cret"
    assert cfg.tls_ca_file == str(tmp_path / "ca.pem")


P = "c.yml: modules.sub.canary.imap"


@pytest.mark.parametrize(
    ("raw", "messages"),
    [
        ({**BASE, "port": 0}, [f"{P}.port: expected 1-65535, got 0"]),
        ({**BASE, "port": 70000}, [f"{P}.port: expected 1-65535, got 70000"]),
        ({**BASE, "port": True}, [f"{P}.port: expected int, got boolean"]),
        ({**BASE, "port": "993"}, [f"{P}.port: expected int, got string"]),
        ({**BASE, "tls": "ssl"}, [f"{P}.tls: expected one of none, starttls, implicit, got 'ssl'"]),
        ({**BASE, "tls_verify": "yes"}, [f"{P}.tls_verify: expected bool, got string"]),
        ({**BASE, "hots": "x"}, [f"{P}.hots: unknown key (did you mean 'host'?)"]),
        ({**BASE, "folder": ""}, [f"{P}.folder: expected a non-empty ASCII folder name"]),
        ({**BASE, "folder": "a\r\nb"}, [f"{P}.folder: expected a non-empty ASCII folder name"]),
        ({**BASE, "poll_interval": 1}, [f"{P}.poll_interval: expected a duration like '30s'"]),
        ({**BASE, "poll_interval": "1x"}, [f"{P}.poll_interval: invalid duration '1x'"]),
        ({**BASE, "poll_interval": "10ms"}, [f"{P}.poll_interval: must be at least 100ms"]),
        ({**BASE, "tls_ca_file": "nope.pem"}, [f"{P}.tls_ca_file: file 'nope.pem' does not exist"]),
        ({**BASE, "password_env": "NOPE"}, [f"{P}.password_env: environment variable 'NOPE'"]),
        (
            {**BASE, "password_file": "missing"},
            [f"{P}: set exactly one of password_file, password_env"],
        ),
        (
            {"host": "h", "username": "u", "password_file": "missing"},
            [f"{P}.password_file: no such file (value not shown)"],
        ),
        (
            {"port": 0, "tls": "tls"},
            [
                f"{P}.host: required",
                f"{P}.tls: expected one of",
                f"{P}.port: expected 1-65535, got 0",
                f"{P}.username: required",
                f"{P}: set exactly one of password_file, password_env",
            ],
        ),
        (None, [f"{P}: expected a mapping with host, username and a password"]),
        (["host"], [f"{P}: expected a mapping, got list"]),
    ],
)
def test_config_bad(tmp_path: Path, raw: object, messages: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse(raw, tmp_path)
    lines = str(err.value).splitlines()
    assert len(lines) == len(messages), lines
    for line, message in zip(lines, messages, strict=True):
        assert line.startswith(message), (line, message)


def test_tokens_are_exact_single_line_and_say_whose_and_when() -> None:
    token = token_at(1_796_000_000.7)
    assert len(f"{TOKEN_HEADER}: {token}") <= 78  # never folded onto a second line
    sweep = Sweep(OWNER, TIMEOUT)
    assert sweep.sent_at(token) == 1_796_000_000
    other = token_at(1_796_000_000, owner_id("other:25", "mx"))
    for value in (token + "0", "x" + token, token.upper(), token.replace(".", "-"), other, ""):
        assert sweep.sent_at(value) is None, value
