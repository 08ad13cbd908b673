"""The IMAP probe against the real Dovecot of tests/servers/mailstack (IMAP with STARTTLS,
IMAPS): every login method, wrong credentials, certificates, EXAMINE's message count; then
small scripted servers for what Dovecot never does (PREAUTH, BYE, a wrong tag...)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import imaplib
import json
import smtplib
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from email.message import EmailMessage

import pytest

from exporter import probe
from exporter.config import AuthConfig, Module, Secret, Target, TLSMode
from exporter.deadline import Deadline
from exporter.imap.session import astring, choose, mailbox_name, parse_capabilities, utf7_encode
from exporter.results import IMAP_PHASES, FailureKind, Phase, ProbeResult, Protocol
from tests.servers.imapfault import IMAPFaultServer
from tests.servers.mailstack import MailStack

SLACK = 1.1  # "within the deadline + 10 %"


def target(
    host: str,
    port: int,
    *,
    user: str | None = "probe",
    password: str = "probe-pass",
    mechanism: str = "auto",
    allow_insecure: bool = False,
    **module: object,
) -> Target:
    auth = None
    if user is not None:
        auth = AuthConfig(user, Secret(password), (mechanism,), allow_insecure)
    module.setdefault("tls", TLSMode.STARTTLS)
    module.setdefault("timeout", 10.0)
    mod = Module(name="imap", protocol="imap", auth=auth, **module)  # type: ignore[arg-type]
    return Target(f"{host}:{port}", host, port, mod)


def dovecot(stack: MailStack, implicit: bool = False, **kwargs: object) -> Target:
    port = stack.imaps_port if implicit else stack.imap_port
    kwargs.setdefault("tls", TLSMode.IMPLICIT if implicit else TLSMode.STARTTLS)
    kwargs.setdefault("tls_ca_file", str(stack.ca_file))
    return target(stack.host, port, **kwargs)  # type: ignore[arg-type]


def run(t: Target, budget: float | None = None) -> ProbeResult:
    deadline = Deadline.after(budget) if budget is not None else None
    return asyncio.run(probe.run(t, deadline))


def phases(r: ProbeResult) -> list[Phase]:
    return [p.phase for p in r.phases]


def in_order(r: ProbeResult) -> bool:
    """The phases that ran are IMAP's, in IMAP_PHASES order (implicit TLS aside)."""
    ran = [p for p in phases(r) if p is not Phase.TLS_HANDSHAKE or Phase.STARTTLS in phases(r)]
    return ran == [p for p in IMAP_PHASES if p in ran]


def shown(r: ProbeResult) -> str:
    """Everything a result could show anywhere (metrics, JSON, logs)."""
    return json.dumps(asdict(r), default=str)


# --------------------------------------------------------------------------- real Dovecot


@pytest.mark.postfix
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_dovecot_good_credentials(mailstack: MailStack, implicit: bool) -> None:
    r = run(dovecot(mailstack, implicit))
    assert r.success, r.failure
    assert r.protocol is Protocol.IMAP and in_order(r)
    expected = [Phase.RESOLVE, Phase.CONNECT]
    if implicit:
        expected += [Phase.TLS_HANDSHAKE, Phase.GREETING]
    else:  # Dovecot's greeting lists its capabilities: no CAPABILITY command before TLS
        expected += [Phase.GREETING, Phase.STARTTLS, Phase.TLS_HANDSHAKE, Phase.CAPABILITY_TLS]
    assert phases(r) == [*expected, Phase.AUTH, Phase.SELECT, Phase.NOOP, Phase.LOGOUT]
    assert r.tls is not None and r.tls.verified and r.tls.hostname_match
    assert r.auth.success and r.auth.mechanism == "PLAIN"
    assert "IMAP4REV1" in r.extensions and "STARTTLS" not in r.extensions
    assert {"PLAIN", "SCRAM-SHA-256"} <= set(r.auth_mechanisms)
    assert r.mailbox is not None and r.mailbox.name == "INBOX" and r.mailbox.messages >= 0
    assert r.last_reply_code is None and r.greeting_host is None


@pytest.mark.postfix
@pytest.mark.parametrize(
    "mechanism", ["PLAIN", "LOGIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "CRAM-MD5"]
)
def test_dovecot_each_login_method(mailstack: MailStack, mechanism: str) -> None:
    r = run(dovecot(mailstack, mechanism=mechanism))
    assert r.success, r.failure
    assert r.auth.success and r.auth.mechanism == mechanism


@pytest.mark.postfix
@pytest.mark.parametrize("mechanism", ["auto", "LOGIN", "SCRAM-SHA-256"])
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_dovecot_wrong_password(mailstack: MailStack, mechanism: str, implicit: bool) -> None:
    password = 'Wr0ng-pass\\w"ord'
    r = run(dovecot(mailstack, implicit, password=password, mechanism=mechanism))
    f = r.failure
    assert f is not None
    assert (f.phase, f.kind, f.code) == (Phase.AUTH, FailureKind.REPLY, None)
    # Dovecot's own words, as it sent them.
    assert f.detail == "NO [AUTHENTICATIONFAILED] Authentication failed.", f
    assert r.auth.attempted and not r.auth.success and r.mailbox is None
    assert "Wr0ng" not in shown(r)
    assert Phase.SELECT not in phases(r)


@pytest.mark.postfix
def test_dovecot_unknown_user_reads_as_a_wrong_password(mailstack: MailStack) -> None:
    r = run(dovecot(mailstack, user="nobody-here", password="x-secret"))
    assert r.failure is not None and r.failure.kind is FailureKind.REPLY
    assert "AUTHENTICATIONFAILED" in r.failure.detail


@pytest.mark.postfix
def test_dovecot_without_credentials_checks_the_session_only(mailstack: MailStack) -> None:
    r = run(dovecot(mailstack, user=None))
    assert r.success, r.failure
    assert Phase.AUTH not in phases(r) and Phase.SELECT not in phases(r)
    assert phases(r)[-2:] == [Phase.NOOP, Phase.LOGOUT] and r.mailbox is None


@pytest.mark.postfix
def test_dovecot_no_credentials_in_clear(mailstack: MailStack) -> None:
    r = run(dovecot(mailstack, tls=TLSMode.NONE))
    assert r.failure is not None
    assert (r.failure.phase, r.failure.kind) == (Phase.AUTH, FailureKind.INSECURE)
    assert r.tls is None and not r.auth.attempted
    # Only when the module says so (Dovecot counts loopback as secure: it takes them).
    r = run(dovecot(mailstack, tls=TLSMode.NONE, allow_insecure=True))
    assert r.success, r.failure
    assert Phase.CAPABILITY in phases(r) or "STARTTLS" in r.extensions


@pytest.mark.postfix
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_dovecot_certificate_from_another_ca(
    mailstack: MailStack, ca_file: str, implicit: bool
) -> None:
    r = run(dovecot(mailstack, implicit, tls_ca_file=ca_file))
    assert r.failure is not None
    assert (r.failure.phase, r.failure.kind) == (Phase.TLS_HANDSHAKE, FailureKind.TLS_VERIFY)
    assert r.failure.detail.startswith("certificate did not verify")
    assert r.tls is not None and not r.tls.verified and not r.auth.attempted


@pytest.mark.postfix
def test_dovecot_certificate_for_another_name(mailstack: MailStack) -> None:
    r = run(dovecot(mailstack, True, tls_server_name="imap.example.org"))
    assert r.failure is not None
    assert (r.failure.phase, r.failure.kind) == (Phase.TLS_HANDSHAKE, FailureKind.TLS_HOSTNAME)
    assert "imap.example.org" in r.failure.detail
    # Not verifying: the certificate is reported, the probe goes on.
    r = run(dovecot(mailstack, True, tls_server_name="imap.example.org", tls_verify=False))
    assert r.success and r.tls is not None and not r.tls.hostname_match


@pytest.mark.postfix
@pytest.mark.parametrize(
    ("cert", "kind"),
    [("expired", FailureKind.TLS_VERIFY), ("wronghost", FailureKind.TLS_HOSTNAME)],
)
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_dovecot_bad_certificates(
    mailstack: MailStack, cert: str, kind: FailureKind, implicit: bool
) -> None:
    port = mailstack.mailbox_port("imap", implicit, cert)
    tls = TLSMode.IMPLICIT if implicit else TLSMode.STARTTLS
    t = target(mailstack.host, port, tls=tls, tls_ca_file=str(mailstack.ca_file))
    r = run(t)
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.TLS_HANDSHAKE, kind), f
    assert r.tls is not None and not r.auth.attempted  # the password never left
    if cert == "expired":
        assert "expired" in f.detail
    else:
        assert r.tls.verified and not r.tls.hostname_match
        assert "wrong.example" in f.detail
    # Not verifying: the certificate is still reported, and the login goes through.
    t = target(mailstack.host, port, tls=tls, tls_ca_file=str(mailstack.ca_file), tls_verify=False)
    r = run(t)
    assert r.success, r.failure
    assert r.tls is not None and not (r.tls.verified and r.tls.hostname_match)
    assert r.mailbox is not None


def examine_count(stack: MailStack, user: str, mailbox: str = "INBOX") -> int:
    ctx = ssl.create_default_context(cafile=str(stack.ca_file))
    with imaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=ctx, timeout=10) as imap:
        imap.login(user, stack.users[user])
        typ, data = imap.select(mailbox, readonly=True)
        assert typ == "OK", data
        return int(data[0])


def deliver(stack: MailStack, to: str, count: int) -> None:
    ctx = ssl.create_default_context(cafile=str(stack.ca_file))
    with smtplib.SMTP(stack.host, stack.submission_port, timeout=10) as smtp:
        smtp.starttls(context=ctx)
        smtp.login("canary", stack.users["canary"])
        for n in range(count):
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "canary@localhost", to, f"count {n}"
            msg.set_content("counted by test_imap_probe\n")
            assert smtp.send_message(msg) == {}


@pytest.mark.postfix
def test_dovecot_examine_counts_the_messages_delivered(mailstack: MailStack) -> None:
    before = run(dovecot(mailstack))
    assert before.mailbox is not None, before.failure
    deliver(mailstack, "probe@localhost", 3)
    end = time.monotonic() + 10
    while examine_count(mailstack, "probe") < before.mailbox.messages + 3:
        assert time.monotonic() < end, "Postfix did not deliver the three messages"
        time.sleep(0.1)
    after = run(dovecot(mailstack, implicit=True))
    assert after.mailbox is not None, after.failure
    assert after.mailbox.messages == before.mailbox.messages + 3
    assert after.mailbox.messages == examine_count(mailstack, "probe")


@pytest.mark.postfix
@pytest.mark.parametrize("select", [False, True], ids=["examine", "select"])
def test_dovecot_non_ascii_mailbox(mailstack: MailStack, select: bool) -> None:
    name = f"Entwürfe 台北 {uuid.uuid4().hex[:8]}"
    encoded = utf7_encode(name)
    ctx = ssl.create_default_context(cafile=str(mailstack.ca_file))
    with imaplib.IMAP4_SSL(
        mailstack.host, mailstack.imaps_port, ssl_context=ctx, timeout=10
    ) as imap:
        imap.login("probe", mailstack.users["probe"])
        assert imap.create(f'"{encoded}"')[0] == "OK"
        for n in range(2):
            msg = f"Subject: {n}\r\n\r\nplanted\r\n".encode()
            assert imap.append(f'"{encoded}"', None, None, msg)[0] == "OK"
    try:
        r = run(dovecot(mailstack, mailbox=name, mailbox_select=select))
        assert r.success, r.failure
        assert r.mailbox is not None and (r.mailbox.name, r.mailbox.messages) == (name, 2)
    finally:
        with imaplib.IMAP4_SSL(
            mailstack.host, mailstack.imaps_port, ssl_context=ctx, timeout=10
        ) as imap:
            imap.login("probe", mailstack.users["probe"])
            imap.delete(f'"{encoded}"')


@pytest.mark.postfix
def test_dovecot_missing_mailbox(mailstack: MailStack) -> None:
    r = run(dovecot(mailstack, mailbox="No such folder"))
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.SELECT, FailureKind.REPLY)
    assert f.detail.startswith("NO Mailbox doesn't exist: No such folder"), f
    assert r.auth.success and r.mailbox is None


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 §5.1.3
        ("A&B", "A&-B"),
        ("a\r\nb", "a&AA0ACg-b"),  # control characters never reach the command line
    ],
)
def test_modified_utf7(name: str, encoded: str) -> None:
    assert utf7_encode(name) == encoded
    assert mailbox_name(name) == f'"{encoded}"'


def test_strings_are_quoted_or_literal() -> None:
    assert astring('pa"ss\\word') == '"pa\\"ss\\\\word"'
    assert astring("pässword") == "pässword".encode()
    assert astring("line\r\nA2 LOGOUT") == b"line\r\nA2 LOGOUT"  # a literal, never a line


def test_capabilities_are_bounded_and_upper_case() -> None:
    caps = parse_capabilities(b"imap4rev1 AUTH=plain " + b" ".join(b"X%d" % n for n in range(500)))
    assert caps[:2] == ("IMAP4REV1", "AUTH=PLAIN") and len(caps) == 64
    assert parse_capabilities("STARTTLS (junk) \x1b[31m " + "Y" * 200) == ("STARTTLS",)


@pytest.mark.parametrize(
    ("caps", "wanted", "chosen"),
    [
        (("IMAP4REV1", "AUTH=PLAIN"), ("auto",), "PLAIN"),
        (("IMAP4REV1",), ("auto",), "LOGIN"),
        (("IMAP4REV1", "LOGINDISABLED"), ("auto",), None),
        (("IMAP4REV1", "LOGINDISABLED", "AUTH=PLAIN"), ("LOGIN", "PLAIN"), "PLAIN"),
        (("AUTH=SCRAM-SHA-1", "AUTH=PLAIN"), ("SCRAM-SHA-256", "SCRAM-SHA-1"), "SCRAM-SHA-1"),
        (("AUTH=PLAIN",), ("SCRAM-SHA-256",), None),
    ],
)
def test_login_method_choice(
    caps: tuple[str, ...], wanted: tuple[str, ...], chosen: str | None
) -> None:
    assert choose(caps, wanted) == chosen


# --------------------------------------------------------------------------- scripted servers

Script = Callable[[bytes], bytes | None]


@contextlib.contextmanager
def scripted(greeting: bytes, answer: Script) -> Iterator[tuple[int, list[bytes]]]:
    """A plain IMAP server on 127.0.0.1 that sends ``greeting`` and answers each command
    line with ``answer(line)`` (None: say nothing more, keep the connection open)."""
    received: list[bytes] = []
    ready = threading.Event()
    port: list[int] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        writer.write(greeting)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            while line := await reader.readline():
                received.append(line)
                out = answer(line)
                if out is not None:
                    writer.write(out)
        writer.transport.abort()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        await stop.wait()
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield port[0], received
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()


def ordinary(line: bytes) -> bytes | None:
    """Tagged OK for everything; CAPABILITY and LOGOUT as a server says them."""
    tag, _, rest = line.partition(b" ")
    command = rest.split(b" ", 1)[0].strip().upper()
    if command == b"CAPABILITY":
        return b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n"
    if command == b"LOGOUT":
        return b"* BYE bye\r\n" + tag + b" OK done\r\n"
    if command in (b"EXAMINE", b"SELECT"):
        return b"* 5 EXISTS\r\n" + tag + b" OK [READ-ONLY] done\r\n"
    return tag + b" OK done\r\n"


def plain_target(port: int, **kwargs: object) -> Target:
    kwargs.setdefault("tls", TLSMode.NONE)
    kwargs.setdefault("allow_insecure", True)
    return target("127.0.0.1", port, **kwargs)  # type: ignore[arg-type]


def test_preauth_skips_login() -> None:
    with scripted(b"* PREAUTH [CAPABILITY IMAP4rev1] logged in already\r\n", ordinary) as (
        port,
        received,
    ):
        r = run(plain_target(port))
    assert r.success, r.failure
    assert Phase.AUTH not in phases(r) and Phase.CAPABILITY not in phases(r)
    assert r.mailbox is not None and r.mailbox.messages == 5
    assert not any(b"LOGIN" in line or b"AUTHENTICATE" in line for line in received)


def test_preauth_with_starttls_required_fails_without_sending_credentials() -> None:
    with scripted(b"* PREAUTH hello\r\n", ordinary) as (port, received):
        r = run(plain_target(port, tls=TLSMode.STARTTLS))
    assert r.failure is not None
    assert (r.failure.phase, r.failure.kind) == (Phase.STARTTLS, FailureKind.TLS_UNAVAILABLE)
    assert not any(b"LOGIN" in line for line in received)


def test_bye_greeting_is_a_reply_failure_with_its_text() -> None:
    with scripted(b"* BYE [UNAVAILABLE] Too many connections\r\n", ordinary) as (port, _):
        r = run(plain_target(port))
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.GREETING, FailureKind.REPLY)
    assert f.detail == "BYE [UNAVAILABLE] Too many connections"


def test_login_disabled_is_not_offered() -> None:
    with scripted(b"* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] hi\r\n", ordinary) as (port, rec):
        r = run(plain_target(port))
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.AUTH, FailureKind.NOT_OFFERED)
    assert "LOGINDISABLED" in f.detail and not any(b"LOGIN " in line for line in rec)


def test_starttls_not_offered() -> None:
    with scripted(b"* OK [CAPABILITY IMAP4rev1] hi\r\n", ordinary) as (port, rec):
        r = run(plain_target(port, tls=TLSMode.STARTTLS))
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.STARTTLS, FailureKind.TLS_UNAVAILABLE)
    assert rec == []


def test_wrong_tag_is_a_protocol_failure() -> None:
    def wrong_tag(line: bytes) -> bytes:
        return b"* CAPABILITY IMAP4rev1\r\nZ9 OK done\r\n"

    with scripted(b"* OK hi\r\n", wrong_tag) as (port, _):
        r = run(plain_target(port))
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.CAPABILITY, FailureKind.PROTOCOL)
    assert f.detail.startswith("tagged response for the wrong tag (expected A1)")


def test_logout_without_bye_is_a_protocol_failure() -> None:
    def no_bye(line: bytes) -> bytes | None:
        if b"LOGOUT" in line:
            return line.split(b" ")[0] + b" OK done\r\n"
        return ordinary(line)

    with scripted(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n", no_bye) as (port, _):
        r = run(plain_target(port))
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.LOGOUT, FailureKind.PROTOCOL)


def test_non_ascii_password_goes_as_a_literal_after_the_servers_go_ahead() -> None:
    def literal(line: bytes) -> bytes | None:
        if line.endswith(b"}\r\n"):
            return b"+ go ahead\r\n"
        if not line.startswith(b"A"):  # the rest of the LOGIN command, after the literal
            return b"A1 OK [CAPABILITY IMAP4rev1] logged in\r\n"
        return ordinary(line)

    with scripted(b"* OK [CAPABILITY IMAP4rev1] hi\r\n", literal) as (port, rec):
        r = run(plain_target(port, password="pässwörd-x"))
    assert r.success, r.failure
    assert rec[0].startswith(b'A1 LOGIN "probe" {12}\r\n')
    assert "pässwörd".encode() in rec[1]


@pytest.mark.parametrize(
    ("behaviour", "phase", "kind"),
    [
        ("tarpit", Phase.GREETING, FailureKind.TIMEOUT),
        ("drip_greeting", Phase.GREETING, FailureKind.TIMEOUT),
        ("garbage_greeting", Phase.GREETING, FailureKind.PROTOCOL),
        ("endless_line", Phase.GREETING, FailureKind.PROTOCOL),
        ("endless_untagged", Phase.AUTH, FailureKind.PROTOCOL),
        ("huge_literal", Phase.SELECT, FailureKind.PROTOCOL),
    ],
)
def test_hostile_imapfault_ends_in_time(behaviour: str, phase: Phase, kind: FailureKind) -> None:
    with IMAPFaultServer(behaviour, users={"probe": "probe-pass"}) as server:
        t0 = time.monotonic()
        r = run(plain_target(server.port), budget=2.0)
        elapsed = time.monotonic() - t0
    assert r.failure is not None and (r.failure.phase, r.failure.kind) == (phase, kind), r.failure
    assert elapsed < 2.0 * SLACK
    assert r.failure.detail.isprintable() and len(r.failure.detail) <= 256


def test_echoed_password_is_masked() -> None:
    password = 'hunter2-"secret"'
    with IMAPFaultServer("login_echo", users={"probe": password}) as server:
        r = run(plain_target(server.port, password=password))
    assert r.failure is not None and r.failure.kind is FailureKind.REPLY
    assert "***" in r.failure.detail and "hunter2" not in shown(r)


def scram_server(final: bytes) -> Script:
    """AUTHENTICATE SCRAM-SHA-256 answered with a well-formed server-first, then ``final``
    (a continuation or a tagged response) in place of a proof made with the password."""

    def answer(line: bytes) -> bytes | None:
        words = line.split()
        if b"AUTHENTICATE" in line and len(words) == 4:
            client_first = base64.b64decode(words[3]).decode()
            nonce = client_first.rsplit("r=", 1)[1]
            server_first = f"r={nonce}srv,s={base64.b64encode(b'salt').decode()},i=4096"
            return b"+ " + base64.b64encode(server_first.encode()) + b"\r\n"
        if not line.startswith(b"A"):  # the client-final-message
            return final
        return ordinary(line)

    return answer


@pytest.mark.parametrize(
    ("final", "detail"),
    [
        (
            b"+ " + base64.b64encode(b"v=" + base64.b64encode(b"x" * 32)) + b"\r\n",
            "SCRAM-SHA-256: server signature does not match",
        ),
        (b"A1 OK logged in without a proof\r\n", "SCRAM-SHA-256: server did not send its sig"),
    ],
    ids=["wrong-signature", "no-signature"],
)
def test_scram_server_must_prove_it_knows_the_password(final: bytes, detail: str) -> None:
    greeting = b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=SCRAM-SHA-256] hi\r\n"
    with scripted(greeting, scram_server(final)) as (port, _):
        r = run(plain_target(port, mechanism="SCRAM-SHA-256"))
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.AUTH, FailureKind.PROTOCOL), f
    assert f.detail.startswith(detail) and not r.auth.success
    assert Phase.SELECT not in phases(r)


def test_plaintext_injected_after_starttls_ok_stops_before_tls() -> None:
    def injecting(line: bytes) -> bytes | None:
        if b"STARTTLS" in line:
            return b"A1 OK Begin TLS negotiation now.\r\n* OK [CAPABILITY IMAP4rev1] forged\r\n"
        return ordinary(line)

    greeting = b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] hi\r\n"
    with scripted(greeting, injecting) as (port, received):
        r = run(plain_target(port, tls=TLSMode.STARTTLS, allow_insecure=False))
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.TLS_HANDSHAKE, FailureKind.PROTOCOL), f
    assert len(received) == 1 and r.tls is None and not r.auth.attempted


def test_untagged_bye_mid_session_is_a_reply_failure() -> None:
    def bye(line: bytes) -> bytes | None:
        if b"NOOP" in line:
            return b"* BYE [UNAVAILABLE] Server shutting down\r\n"
        return ordinary(line)

    with scripted(b"* OK [CAPABILITY IMAP4rev1] hi\r\n", bye) as (port, _):
        r = run(plain_target(port))
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.NOOP, FailureKind.REPLY), f
    assert f.detail == "BYE [UNAVAILABLE] Server shutting down"
    assert r.mailbox is not None and r.mailbox.messages == 5  # what it learnt stays


def test_xoauth2_error_report_is_answered_and_the_no_shown() -> None:
    """Gmail's way: a rejected token gets a base64 JSON report as a challenge, the client
    answers with an empty line, then the NO."""
    report = base64.b64encode(b'{"status":"400","schemes":"Bearer"}')

    def gmail(line: bytes) -> bytes | None:
        if b"AUTHENTICATE XOAUTH2" in line:
            return b"+ " + report + b"\r\n"
        if line == b"\r\n":
            return b"A1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n"
        return ordinary(line)

    greeting = b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 AUTH=PLAIN] Gimap ready\r\n"
    with scripted(greeting, gmail) as (port, received):
        r = run(plain_target(port, mechanism="XOAUTH2", password="ya29.token-value"))
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.AUTH, FailureKind.REPLY), f
    assert f.detail == "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"
    assert received[-1] == b"\r\n" and "ya29" not in shown(r)


@pytest.mark.postfix
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "SCRAM-SHA-256"])
def test_dovecot_transcript_shows_the_dialogue_never_the_password(
    mailstack: MailStack, mechanism: str
) -> None:
    lines: list[str] = []
    t = dovecot(mailstack, mechanism=mechanism, password="probe-pass")
    r = asyncio.run(probe.run(t, wire=lines.append))
    assert r.success, r.failure
    text = "\n".join(lines)
    for sent in ("C: A1 STARTTLS", "C: A2 CAPABILITY", 'EXAMINE "INBOX"', "C: A5 NOOP"):
        assert sent in text, text
    assert "S: * OK [CAPABILITY IMAP4rev1" in text  # the greeting, as Dovecot sent it
    assert "* BYE" in text and "* TLS TLSv1.3" in text and "* phase select ok in" in text
    assert "probe-pass" not in text and sasl_forms("probe", "probe-pass").isdisjoint(lines)
    login = next(line for line in lines if line.startswith("C: A3 "))
    assert login.endswith("***"), login


def sasl_forms(user: str, password: str) -> set[str]:
    plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return {f"C: {plain}", f"C: A3 AUTHENTICATE PLAIN {plain}"}
