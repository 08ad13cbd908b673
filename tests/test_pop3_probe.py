"""The POP3 probe end to end: against a real Dovecot (STLS on the 110-style port, implicit
TLS on the 995-style one, good and wrong credentials, STAT against delivered mail, an expired
and a wrong-host certificate), and against a small scripted server for what Dovecot will not
do (no CAPA, no STLS, -ERR at each step echoing the password, an APOP greeting, a SCRAM
server that cannot prove itself)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import smtplib
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest

from exporter import probe
from exporter.config import AuthConfig, Module, Secret, Target, TLSMode
from exporter.results import FailureKind, Phase, ProbeResult, Protocol
from tests.servers.mailstack import MailStack

SECRET = "S3cret-pass;word"  # the scripted server's password; never in any output
USER = "probe"

# --- a scripted POP3 server ---------------------------------------------------------------

CAPA = ["USER", "TOP", "UIDL", "SASL PLAIN SCRAM-SHA-256", "STLS", "RESP-CODES"]
Handler = Callable[[str], bytes]


@dataclass
class Script:
    """What the scripted server says: a greeting, a CAPA list (None: -ERR to CAPA), and
    per command verb a handler of its argument text, overriding the ordinary answers."""

    greeting: bytes = b"+OK scripted POP3 ready\r\n"
    capa: list[str] | None = field(default_factory=lambda: list(CAPA))
    capa_tls: list[str] | None = None  # after STLS; default: capa without STLS
    handlers: dict[str, Handler] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None  # for STLS
    received: list[str] = field(default_factory=list)
    stat: bytes = b"+OK 2 320\r\n"
    other: Handler | None = None  # lines of no known verb (a SASL response), whole


async def _serve(script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    in_tls = False
    user = None
    try:
        writer.write(script.greeting)
        while line := await reader.readline():
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            script.received.append(text)
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            if verb in script.handlers:
                writer.write(script.handlers[verb](arg))
            elif verb == "CAPA":
                capa = script.capa
                if in_tls and script.capa_tls is not None:
                    capa = script.capa_tls
                elif in_tls and capa is not None:
                    capa = [c for c in capa if c != "STLS"]
                if capa is None:
                    writer.write(b"-ERR unknown command\r\n")
                else:
                    body = "".join(f"{c}\r\n" for c in capa).encode()
                    writer.write(b"+OK capability list follows\r\n" + body + b".\r\n")
            elif verb == "STLS" and script.tls is not None and not in_tls:
                writer.write(b"+OK begin TLS\r\n")
                await writer.drain()
                await writer.start_tls(script.tls)
                in_tls = True
            elif verb == "USER":
                user = arg
                writer.write(b"+OK\r\n")
            elif verb == "PASS":
                good = user == USER and arg == SECRET
                writer.write(b"+OK logged in\r\n" if good else b"-ERR [AUTH] invalid\r\n")
            elif verb == "AUTH" and arg.upper().startswith("PLAIN "):
                good = arg.split(" ", 1)[1] == _plain(USER, SECRET)
                writer.write(b"+OK logged in\r\n" if good else b"-ERR [AUTH] invalid\r\n")
            elif verb == "STAT":
                writer.write(script.stat)
            elif verb == "QUIT":
                writer.write(b"+OK bye\r\n")
                await writer.drain()
                break
            elif script.other is not None:
                writer.write(script.other(text))
            else:
                writer.write(b"-ERR unknown command\r\n")
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def scripted(script: Script, password: str | None = SECRET, **module: object) -> ProbeResult:
    """Serve ``script`` on a loopback port and probe it once, in one event loop."""

    async def main() -> ProbeResult:
        server = await asyncio.start_server(
            lambda r, w: _serve(script, r, w), "127.0.0.1", 0, limit=16384
        )
        port = server.sockets[0].getsockname()[1]
        try:
            return await probe.run(pop3_target("127.0.0.1", port, password=password, **module))
        finally:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    return asyncio.run(main())


def pop3_target(
    host: str,
    port: int,
    *,
    user: str = USER,
    password: str | None = SECRET,
    mechanism: str = "auto",
    allow_insecure: bool = False,
    **module: object,
) -> Target:
    auth = None
    if password is not None:
        auth = AuthConfig(user, Secret(password), (mechanism,), allow_insecure)
    module.setdefault("tls", TLSMode.NONE)
    module.setdefault("timeout", 10.0)
    mod = Module(name="pop3", protocol="pop3", auth=auth, **module)  # type: ignore[arg-type]
    return Target(f"{host}:{port}", host, port, mod)


def assert_no_secret(result: ProbeResult, secret: str) -> None:
    """No form of the password anywhere in the result (its repr holds every field)."""
    shown = repr(result)
    for form in (secret, base64.b64encode(secret.encode()).decode(), _plain(USER, secret)):
        assert form not in shown


def phases(result: ProbeResult) -> list[Phase]:
    return [t.phase for t in result.phases]


def test_scripted_user_pass_without_tls_when_allowed():
    script = Script(capa=["USER", "TOP"])
    r = scripted(script, allow_insecure=True)
    assert r.success, r.failure
    assert r.protocol is Protocol.POP3
    assert phases(r) == [
        Phase.RESOLVE,
        Phase.CONNECT,
        Phase.GREETING,
        Phase.CAPABILITY,
        Phase.AUTH,
        Phase.STAT,
        Phase.QUIT,
    ]
    assert (r.auth.success, r.auth.mechanism) == (True, "LOGIN")
    assert r.mailbox is not None and (r.mailbox.name, r.mailbox.messages) == ("", 2)
    assert r.mailbox.size_bytes == 320
    assert r.extensions == ("USER", "TOP") and r.auth_mechanisms == ()
    assert r.last_reply_code is None and r.greeting_host is None
    assert script.received == ["CAPA", f"USER {USER}", f"PASS {SECRET}", "STAT", "QUIT"]


def test_scripted_auto_prefers_sasl_plain():
    script = Script(capa=["USER", "SASL PLAIN"])
    r = scripted(script, allow_insecure=True)
    assert r.success, r.failure
    assert r.auth.mechanism == "PLAIN" and r.auth_mechanisms == ("PLAIN",)
    assert script.received[1] == f"AUTH PLAIN {_plain(USER, SECRET)}"


def test_scripted_no_capa_still_logs_in_with_user_pass():
    """RFC 2449: CAPA is optional. A -ERR to it is not a failure; auto means USER/PASS."""
    script = Script(capa=None)
    r = scripted(script, allow_insecure=True)
    assert r.success, r.failure
    assert r.auth.mechanism == "LOGIN" and r.extensions == ()
    assert script.received[:2] == ["CAPA", f"USER {USER}"]


def test_scripted_apop_timestamp_is_a_capability():
    script = Script(greeting=b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n")
    r = scripted(script, password=None)
    assert r.success, r.failure
    assert "APOP" in r.extensions
    # No credentials: no AUTH, no STAT (STAT needs the TRANSACTION state).
    assert phases(r)[-2:] == [Phase.CAPABILITY, Phase.QUIT] and r.mailbox is None
    plain = scripted(Script(greeting=b"+OK ready <no-at-sign>\r\n"), password=None)
    assert "APOP" not in plain.extensions


def test_scripted_credentials_withheld_without_tls():
    script = Script()
    r = scripted(script)
    assert r.failure is not None
    assert (r.failure.phase, r.failure.kind) == (Phase.AUTH, FailureKind.INSECURE)
    assert not any(line.startswith(("USER", "PASS", "AUTH")) for line in script.received)


def test_scripted_stls_required_but_not_advertised():
    script = Script(capa=["USER", "TOP"])
    r = scripted(script, tls=TLSMode.STARTTLS)
    assert r.failure is not None
    assert (r.failure.phase, r.failure.kind) == (Phase.STARTTLS, FailureKind.TLS_UNAVAILABLE)
    assert "STLS" not in script.received
    # Not required: the probe goes on without TLS (and then withholds the password).
    r = scripted(Script(capa=["USER"]), tls=TLSMode.STARTTLS, tls_required=False)
    assert r.failure is not None and r.failure.kind is FailureKind.INSECURE


def test_scripted_stls_then_capa_again(server_context, ca_file):
    script = Script(tls=server_context, capa_tls=["USER", "SASL PLAIN SCRAM-SHA-1", "TOP"])
    r = scripted(script, tls=TLSMode.STARTTLS, tls_ca_file=ca_file)
    assert r.success, r.failure
    assert r.tls is not None and r.tls.verified
    assert phases(r)[3:7] == [
        Phase.CAPABILITY,
        Phase.STARTTLS,
        Phase.TLS_HANDSHAKE,
        Phase.CAPABILITY_TLS,
    ]
    # RFC 2595: what CAPA said before TLS is forgotten; only the second answer counts.
    assert r.extensions == ("USER", "SASL", "TOP")
    assert r.auth_mechanisms == ("PLAIN", "SCRAM-SHA-1")
    assert script.received[:3] == ["CAPA", "STLS", "CAPA"]


def test_scripted_no_capa_stls_is_tried(server_context, ca_file):
    """Without CAPA nothing says whether STLS exists: the probe asks, and its answer
    decides (TLS, or tls_unavailable when TLS is required)."""
    script = Script(capa=None, tls=server_context)
    r = scripted(script, tls=TLSMode.STARTTLS, tls_ca_file=ca_file)
    assert r.success, r.failure
    assert r.tls is not None and r.auth.mechanism == "LOGIN"
    assert script.received[:3] == ["CAPA", "STLS", "CAPA"]
    r = scripted(Script(capa=None), tls=TLSMode.STARTTLS, tls_ca_file=ca_file)
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.STARTTLS, FailureKind.TLS_UNAVAILABLE)
    assert "-ERR unknown command" in f.detail


def test_scripted_stls_injection_is_refused(server_context, ca_file):
    """Plaintext after the +OK to STLS (a man in the middle's command, CVE-2011-0411's
    kind): the probe stops before TLS and before any credential."""
    script = Script(
        tls=server_context, handlers={"STLS": lambda _: b"+OK begin TLS\r\n-ERR injected\r\n"}
    )
    r = scripted(script, tls=TLSMode.STARTTLS, tls_ca_file=ca_file)
    f = r.failure
    assert f is not None and f.kind is FailureKind.PROTOCOL, f
    assert f.phase in (Phase.STARTTLS, Phase.TLS_HANDSHAKE)
    assert r.tls is None and not r.auth.attempted


def _echo(status: bytes) -> Handler:
    """A -ERR handler that echoes the command's argument back, as careless servers do."""
    return lambda arg: status + b" no such thing: " + arg.encode() + b"\r\n"


@pytest.mark.parametrize(
    ("script", "phase", "text"),
    [
        (Script(greeting=b"-ERR [SYS/TEMP] too busy\r\n"), Phase.GREETING, "-ERR [SYS/TEMP]"),
        (Script(handlers={"USER": _echo(b"-ERR")}), Phase.AUTH, "no such thing: probe"),
        (Script(handlers={"PASS": _echo(b"-ERR [AUTH]")}), Phase.AUTH, "no such thing: ***"),
        (Script(handlers={"STAT": _echo(b"-ERR [IN-USE]")}), Phase.STAT, "-ERR [IN-USE]"),
        (Script(handlers={"QUIT": _echo(b"-ERR")}), Phase.QUIT, "-ERR no such thing"),
        (Script(handlers={"STAT": lambda _: b"+OK lots\r\n"}), Phase.STAT, "malformed STAT"),
    ],
)
def test_scripted_err_at_each_step(script, phase, text):
    r = scripted(script, allow_insecure=True, mechanism="LOGIN")
    f = r.failure
    assert f is not None and f.phase is phase, f
    assert f.kind is (FailureKind.PROTOCOL if "malformed" in text else FailureKind.REPLY)
    assert text in f.detail and f.code is None
    assert_no_secret(r, SECRET)


def test_scripted_every_form_of_the_password_is_masked():
    forms = [SECRET, base64.b64encode(SECRET.encode()).decode(), _plain(USER, SECRET)]
    echo = " / ".join(forms).encode()
    script = Script(
        capa=["SASL PLAIN"],
        handlers={"AUTH": lambda _: b"-ERR \x1b[31mrejected " + echo + b"\r\n"},
    )
    r = scripted(script, allow_insecure=True)
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.AUTH, FailureKind.REPLY)
    assert "\x1b" not in f.detail and "rejected" in f.detail
    assert_no_secret(r, SECRET)


def test_scripted_long_server_text_is_clipped():
    r = scripted(Script(greeting=b"-ERR " + b"z" * 5000 + b"\r\n"))
    assert r.failure is not None and len(r.failure.detail) <= 256


def test_scripted_endless_capa_is_a_protocol_failure():
    script = Script(capa=[f"X-{i}" for i in range(2000)])
    r = scripted(script, password=None)
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.CAPABILITY, FailureKind.PROTOCOL)
    assert "1000 lines" in f.detail


def test_scripted_capa_without_the_dot_fails_at_the_deadline():
    script = Script(handlers={"CAPA": lambda _: b"+OK\r\nUSER\r\n"})
    started = time.monotonic()
    r = scripted(script, password=None, timeout=1.0)
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.CAPABILITY, FailureKind.TIMEOUT)
    assert time.monotonic() - started < 1.0 * 1.1 + 1.0  # generous: the deadline, not more


def test_scripted_capability_names_are_bounded_and_clean():
    script = Script(
        capa=[*(f"X-{i}" for i in range(100)), "bad\x1bname", "SASL PLAIN a,b <x>"],
    )
    r = scripted(script, password=None)
    assert r.success, r.failure
    assert len(r.extensions) == 64
    assert all(re.fullmatch(r"[A-Z0-9][A-Z0-9._-]*", n) for n in r.extensions)


# --- SCRAM against a scripted server that cannot prove itself ------------------------------


def _scram_first(arg: str) -> bytes:
    """AUTH SCRAM-SHA-256 with an initial response: a well-formed server-first message."""
    _, _, initial = arg.partition(" ")
    first = base64.b64decode(initial).decode()
    nonce = dict(p.split("=", 1) for p in first.removeprefix("n,,").split(","))["r"]
    salt = base64.b64encode(b"salt-salt-salt16").decode()
    return b"+ " + base64.b64encode(f"r={nonce}srv,s={salt},i=4096".encode()) + b"\r\n"


@pytest.mark.parametrize(
    ("final", "detail"),
    [
        (b"+ " + base64.b64encode(b"v=" + base64.b64encode(bytes(32))), "does not match"),
        (b"+OK logged in", "did not send its signature"),
        (b"+ " + base64.b64encode(b"e=other-error"), "reported error"),
    ],
)
def test_scripted_scram_server_must_prove_itself(server_context, ca_file, final, detail):
    """A server that answers the client proof with a wrong signature, with +OK where its
    signature belongs, or with an error, fails the probe: it is not the server we share
    the password with."""
    script = Script(
        tls=server_context,
        capa_tls=["SASL SCRAM-SHA-256"],
        handlers={"AUTH": _scram_first},
        other=lambda _: final + b"\r\n",
    )
    r = scripted(script, tls=TLSMode.STARTTLS, tls_ca_file=ca_file, mechanism="SCRAM-SHA-256")
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.AUTH, FailureKind.PROTOCOL), f
    assert detail in f.detail
    assert r.auth.attempted and not r.auth.success
    assert_no_secret(r, SECRET)


# --- the real Dovecot -------------------------------------------------------------------------


def dovecot(stack: MailStack, port: int, **kw: object) -> ProbeResult:
    kw.setdefault("tls_ca_file", str(stack.ca_file))
    kw.setdefault("password", stack.users[USER])
    return asyncio.run(probe.run(pop3_target(stack.host, port, **kw)))


@pytest.mark.postfix
@pytest.mark.parametrize("mechanism", ["auto", "LOGIN", "PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_dovecot_stls(mailstack, mechanism):
    r = dovecot(mailstack, mailstack.pop3_port, tls=TLSMode.STARTTLS, mechanism=mechanism)
    assert r.success, r.failure
    assert r.protocol is Protocol.POP3
    assert phases(r) == [
        Phase.RESOLVE,
        Phase.CONNECT,
        Phase.GREETING,
        Phase.CAPABILITY,
        Phase.STARTTLS,
        Phase.TLS_HANDSHAKE,
        Phase.CAPABILITY_TLS,
        Phase.AUTH,
        Phase.STAT,
        Phase.QUIT,
    ]
    assert r.auth.success
    assert r.auth.mechanism == ("PLAIN" if mechanism == "auto" else mechanism)
    assert r.tls is not None and r.tls.verified and r.tls.hostname_match
    # Over TLS Dovecot no longer offers STLS; it does offer USER and SASL.
    assert "STLS" not in r.extensions and {"USER", "SASL", "UIDL"} <= set(r.extensions)
    assert {"PLAIN", "SCRAM-SHA-256"} <= set(r.auth_mechanisms)
    assert r.mailbox is not None and r.mailbox.messages >= 0


@pytest.mark.postfix
def test_dovecot_implicit_tls(mailstack):
    r = dovecot(mailstack, mailstack.pop3s_port, tls=TLSMode.IMPLICIT)
    assert r.success, r.failure
    assert phases(r)[:5] == [
        Phase.RESOLVE,
        Phase.CONNECT,
        Phase.TLS_HANDSHAKE,
        Phase.GREETING,
        Phase.CAPABILITY,
    ]
    assert Phase.STARTTLS not in phases(r)
    assert r.tls is not None and r.tls.verified


@pytest.mark.postfix
@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_dovecot_wrong_password(mailstack, mechanism):
    wrong = "Wr0ng-" + uuid.uuid4().hex
    r = dovecot(
        mailstack, mailstack.pop3_port, tls=TLSMode.STARTTLS, password=wrong, mechanism=mechanism
    )
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.AUTH, FailureKind.REPLY), f
    assert f.detail.startswith("-ERR") and "[AUTH]" in f.detail
    assert r.auth.attempted and not r.auth.success and r.mailbox is None
    assert_no_secret(r, wrong)


@pytest.mark.postfix
def test_dovecot_without_tls_withholds_the_password(mailstack):
    r = dovecot(mailstack, mailstack.pop3_port, tls=TLSMode.NONE)
    assert r.failure is not None
    assert (r.failure.phase, r.failure.kind) == (Phase.AUTH, FailureKind.INSECURE)
    # Dovecot's loopback counts as secure, so with allow_insecure it takes the login.
    r = dovecot(mailstack, mailstack.pop3_port, tls=TLSMode.NONE, allow_insecure=True)
    assert r.success, r.failure


def _deliver(stack: MailStack, to: str, count: int) -> None:
    with smtplib.SMTP(stack.host, stack.submission_port, timeout=10) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=str(stack.ca_file)))
        smtp.login(USER, stack.users[USER])
        for i in range(count):
            msg = EmailMessage()
            msg["From"] = f"{USER}@localhost"
            msg["To"] = f"{to}@localhost"
            msg["Subject"] = f"pop3 stat {i} {uuid.uuid4().hex}"
            msg.set_content(f"line one\nline {i} two\n" + "x" * (100 * i) + "\n")
            smtp.send_message(msg)


def _maildir(stack: MailStack, user: str) -> list[Path]:
    root = stack.maildir_root / user / "Maildir"
    return [p for d in ("new", "cur") if (root / d).is_dir() for p in (root / d).iterdir()]


def _pop3_octets(path: Path) -> int:
    """RFC 1939 §5: STAT counts octets as sent, with CRLF line ends (maildir keeps LF)."""
    data = path.read_bytes()
    return len(data) + len(re.findall(rb"(?<!\r)\n", data))


@pytest.mark.postfix
def test_dovecot_stat_matches_delivered_mail(mailstack):
    before = len(_maildir(mailstack, USER))
    _deliver(mailstack, USER, 3)
    deadline = time.monotonic() + 15
    while len(_maildir(mailstack, USER)) < before + 3:
        assert time.monotonic() < deadline, "mail not delivered within 15 s"
        time.sleep(0.1)
    # Read before the probe: Dovecot moves what it has seen from new/ to cur/.
    octets = [_pop3_octets(p) for p in _maildir(mailstack, USER)]
    r = dovecot(mailstack, mailstack.pop3s_port, tls=TLSMode.IMPLICIT)
    assert r.success, r.failure
    assert r.mailbox is not None
    assert r.mailbox.messages == len(octets) >= before + 3
    assert r.mailbox.size_bytes == sum(octets)


@pytest.mark.postfix
@pytest.mark.parametrize(
    ("cert", "kind"),
    [("expired", FailureKind.TLS_VERIFY), ("wronghost", FailureKind.TLS_HOSTNAME)],
)
@pytest.mark.parametrize("tls", [TLSMode.STARTTLS, TLSMode.IMPLICIT])
def test_dovecot_bad_certificates(mailstack, cert, kind, tls):
    port = mailstack.mailbox_port("pop3", tls is TLSMode.IMPLICIT, cert)
    r = dovecot(mailstack, port, tls=tls)
    f = r.failure
    assert f is not None and (f.phase, f.kind) == (Phase.TLS_HANDSHAKE, kind), f
    assert r.tls is not None and not r.auth.attempted  # the password never left
    if cert == "expired":
        assert "expired" in f.detail
    else:
        assert r.tls.verified and not r.tls.hostname_match
    # Not verifying: the certificate is still reported, and the login goes through.
    r = dovecot(mailstack, port, tls=tls, tls_verify=False)
    assert r.success, r.failure
    assert r.tls is not None and not (r.tls.verified and r.tls.hostname_match)


@pytest.mark.postfix
@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN", "SCRAM-SHA-256"])
def test_dovecot_transcript_shows_the_dialogue_never_the_password(mailstack, mechanism):
    """/probe?debug=true's transcript of a POP3 probe: every command and response, the
    login's payloads and SASL challenges masked, no form of the password anywhere."""
    lines: list[str] = []
    password = mailstack.users[USER]
    target = pop3_target(
        mailstack.host,
        mailstack.pop3_port,
        tls=TLSMode.STARTTLS,
        tls_ca_file=str(mailstack.ca_file),
        password=password,
        mechanism=mechanism,
    )
    r = asyncio.run(probe.run(target, wire=lines.append))
    assert r.success, r.failure
    text = "\n".join(lines)
    for needle in ("C: CAPA", "C: STLS", "C: STAT", "C: QUIT", "S: +OK"):
        assert needle in text, text
    if mechanism == "LOGIN":
        assert f"C: USER {USER}" in text and "C: PASS ***" in text, text
    else:
        assert f"C: AUTH {mechanism}" in text, text
    assert "phase stat ok" in text and "TLS TLSv1." in text, text
    forms = {password, base64.b64encode(password.encode()).decode()}
    forms.add(base64.b64encode(f"\0{USER}\0{password}".encode()).decode())
    for form in forms:
        assert form.casefold() not in text.casefold(), (form, text)
