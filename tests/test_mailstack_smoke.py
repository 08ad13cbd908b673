"""Smoke test for tests/servers/mailstack/: the real Postfix + Dovecot behave as promised.

Only standard-library clients, so a failure here points at the stack, not at our code.
"""

from __future__ import annotations

import contextlib
import imaplib
import poplib
import smtplib
import socket
import ssl
import time
import uuid
from email.message import EmailMessage

import pytest

from tests.servers.mailstack import MailStack

pytestmark = [pytest.mark.postfix, pytest.mark.fixture_selftest]

# OpenSSL X509_V_ERR_* codes reported in SSLCertVerificationError.verify_code.
X509_V_ERR_CERT_HAS_EXPIRED = 10
X509_V_ERR_HOSTNAME_MISMATCH = 62
X509_V_ERR_IP_ADDRESS_MISMATCH = 64


def _ctx(stack: MailStack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(stack.ca_file))


def _starttls_error(stack: MailStack, port: int, ctx: ssl.SSLContext) -> ssl.SSLError | None:
    """STARTTLS on port; return the TLS error, or None if the handshake verified."""
    smtp = smtplib.SMTP(stack.host, port, timeout=10)
    try:
        smtp.starttls(context=ctx)
    except ssl.SSLError as exc:
        return exc
    finally:
        smtp.close()
    return None


def test_submission_starttls_auth_delivers_to_imaps(mailstack: MailStack) -> None:
    token = f"mailstack-smoke-{uuid.uuid4().hex}"
    msg = EmailMessage()
    msg["From"] = "probe@localhost"
    msg["To"] = "canary@localhost"
    msg["Subject"] = token
    msg.set_content("mailstack smoke test\n")

    with smtplib.SMTP(mailstack.host, mailstack.submission_port, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth"), "AUTH must not be offered before STARTTLS"
        smtp.starttls(context=_ctx(mailstack))
        smtp.ehlo()
        assert {"PLAIN", "LOGIN"} <= set(smtp.esmtp_features["auth"].upper().split())
        smtp.login("probe", mailstack.users["probe"])
        assert smtp.send_message(msg) == {}

    deadline = time.monotonic() + 10
    with imaplib.IMAP4_SSL(
        mailstack.host, mailstack.imaps_port, ssl_context=_ctx(mailstack), timeout=10
    ) as imap:
        imap.login("canary", mailstack.users["canary"])
        while True:
            imap.select("INBOX", readonly=True)
            typ, data = imap.search(None, "SUBJECT", f'"{token}"')
            if typ == "OK" and data[0].split():
                break
            assert time.monotonic() < deadline, f"{token} not in canary's INBOX after 10 s"
            time.sleep(0.2)

    maildir = mailstack.maildir_root / "canary" / "Maildir"
    files = [*(maildir / "new").iterdir(), *(maildir / "cur").iterdir()]
    assert any(token in f.read_text(errors="replace") for f in files)


def test_submission_wrong_password_is_535(mailstack: MailStack) -> None:
    with smtplib.SMTP(mailstack.host, mailstack.submission_port, timeout=10) as smtp:
        smtp.starttls(context=_ctx(mailstack))
        smtp.user, smtp.password = "probe", "not-the-password"
        # One mechanism only: login() would retry with LOGIN and pay Dovecot's
        # failure delay twice.
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            smtp.auth("PLAIN", smtp.auth_plain)
    assert err.value.smtp_code == 535


def test_unauthenticated_and_unknown_recipients_rejected(mailstack: MailStack) -> None:
    with smtplib.SMTP(mailstack.host, mailstack.submission_port, timeout=10) as smtp:
        smtp.starttls(context=_ctx(mailstack))
        smtp.ehlo()
        assert smtp.mail("probe@localhost")[0] == 250
        assert smtp.rcpt("canary@localhost")[0] == 554  # no AUTH, no RCPT

    with smtplib.SMTP(mailstack.host, mailstack.mx_port, timeout=10) as smtp:
        smtp.starttls(context=_ctx(mailstack))  # offered ("may") and verifiable
        smtp.ehlo()
        assert not smtp.has_extn("auth"), "the MX port must not offer AUTH"
        assert smtp.mail("someone@example.org")[0] == 250
        assert smtp.rcpt("canary@localhost")[0] == 250
        assert smtp.rcpt("nobody-here@localhost")[0] == 550
        assert smtp.rcpt("victim@example.org")[0] == 554  # no open relay


def test_smtps_implicit_tls(mailstack: MailStack) -> None:
    ctx = _ctx(mailstack)
    with (
        socket.create_connection((mailstack.host, mailstack.smtps_port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=mailstack.host) as tls,
    ):
        assert tls.recv(512).startswith(b"220 "), "no 220 greeting right after the handshake"

    with smtplib.SMTP_SSL(mailstack.host, mailstack.smtps_port, context=ctx, timeout=10) as smtp:
        smtp.login("canary", mailstack.users["canary"])


def test_expired_cert_fails_verification(mailstack: MailStack) -> None:
    err = _starttls_error(mailstack, mailstack.expired_port, _ctx(mailstack))
    assert isinstance(err, ssl.SSLCertVerificationError), err
    assert err.verify_code == X509_V_ERR_CERT_HAS_EXPIRED, err.verify_message


def test_wronghost_cert_fails_hostname_check_only(mailstack: MailStack) -> None:
    err = _starttls_error(mailstack, mailstack.wronghost_port, _ctx(mailstack))
    assert isinstance(err, ssl.SSLCertVerificationError), err
    # 127.0.0.1 is checked against IP SANs (64); a DNS name would give 62.
    assert err.verify_code in (X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH)

    chain_only = _ctx(mailstack)
    chain_only.check_hostname = False
    assert _starttls_error(mailstack, mailstack.wronghost_port, chain_only) is None


def test_imap_starttls_login(mailstack: MailStack) -> None:
    # No LOGINDISABLED check: Dovecot treats loopback clients as secure and always
    # allows plaintext login from 127.0.0.1.
    with imaplib.IMAP4(mailstack.host, mailstack.imap_port, timeout=10) as imap:
        assert "STARTTLS" in imap.capabilities
        imap.starttls(ssl_context=_ctx(mailstack))
        imap.login("probe", mailstack.users["probe"])


def test_imaps_login(mailstack: MailStack) -> None:
    with imaplib.IMAP4_SSL(
        mailstack.host, mailstack.imaps_port, ssl_context=_ctx(mailstack), timeout=10
    ) as imap:
        imap.login("probe", mailstack.users["probe"])
        assert imap.select("INBOX", readonly=True)[0] == "OK"


def test_pop3_stls_login_and_stat(mailstack: MailStack) -> None:
    pop = poplib.POP3(mailstack.host, mailstack.pop3_port, timeout=10)
    try:
        assert pop.getwelcome().startswith(b"+OK")
        capa = pop.capa()
        assert "STLS" in capa and "USER" in capa
        assert {"PLAIN", "SCRAM-SHA-256"} <= set(capa["SASL"])
        pop.stls(_ctx(mailstack))
        pop.user("probe")
        pop.pass_(mailstack.users["probe"])
        count, size = pop.stat()
        assert count >= 0 and size >= 0
        assert pop.quit().startswith(b"+OK")
    finally:
        pop.close()


def test_pop3s_implicit_tls_and_wrong_password(mailstack: MailStack) -> None:
    ctx = _ctx(mailstack)
    pop = poplib.POP3_SSL(mailstack.host, mailstack.pop3s_port, context=ctx, timeout=10)
    try:
        pop.user("canary")
        pop.pass_(mailstack.users["canary"])
        pop.quit()
    finally:
        pop.close()
    pop = poplib.POP3_SSL(mailstack.host, mailstack.pop3s_port, context=ctx, timeout=10)
    try:
        pop.user("canary")
        with pytest.raises(poplib.error_proto, match="-ERR"):
            pop.pass_("not-the-password")
    finally:
        pop.close()


def _mailbox_tls_error(stack: MailStack, port: int, protocol: str, implicit: bool) -> ssl.SSLError:
    """Open TLS (implicit, or STARTTLS/STLS) to a Dovecot port; return the TLS error."""
    ctx = _ctx(stack)
    try:
        if protocol == "imap" and implicit:
            imaplib.IMAP4_SSL(stack.host, port, ssl_context=ctx, timeout=10).shutdown()
        elif protocol == "imap":
            imap = imaplib.IMAP4(stack.host, port, timeout=10)
            try:
                imap.starttls(ssl_context=ctx)
            finally:
                # Not logout(): the failed handshake left no session (nor, maybe, a socket).
                with contextlib.suppress(OSError):
                    imap.shutdown()
        elif implicit:
            poplib.POP3_SSL(stack.host, port, context=ctx, timeout=10).close()
        else:
            pop = poplib.POP3(stack.host, port, timeout=10)
            try:
                pop.stls(ctx)
            finally:
                with contextlib.suppress(OSError):
                    pop.close()
    except ssl.SSLError as exc:
        return exc
    raise AssertionError(f"{protocol} port {port} presented a certificate that verified")


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_mailbox_expired_and_wronghost_certs(
    mailstack: MailStack, protocol: str, implicit: bool
) -> None:
    port = mailstack.mailbox_port(protocol, implicit, "expired")
    err = _mailbox_tls_error(mailstack, port, protocol, implicit)
    assert isinstance(err, ssl.SSLCertVerificationError), err
    assert err.verify_code == X509_V_ERR_CERT_HAS_EXPIRED, err.verify_message

    port = mailstack.mailbox_port(protocol, implicit, "wronghost")
    err = _mailbox_tls_error(mailstack, port, protocol, implicit)
    assert isinstance(err, ssl.SSLCertVerificationError), err
    assert err.verify_code in (X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH)


def test_mailbox_port_picks_listeners(mailstack: MailStack) -> None:
    assert mailstack.mailbox_port("imap", False) == mailstack.imap_port
    assert mailstack.mailbox_port("pop3", True) == mailstack.pop3s_port
    assert mailstack.mailbox_port("pop3", False, "expired") == mailstack.expired_mailbox.pop3
    assert mailstack.mailbox_port("imap", True, "wronghost") == mailstack.wronghost_mailbox.imaps
    ports = [
        mailstack.mailbox_port(p, i, c)
        for p in ("imap", "pop3")
        for i in (False, True)
        for c in ("good", "expired", "wronghost")
    ]
    assert len(set(ports)) == 12
    with pytest.raises(ValueError):
        mailstack.mailbox_port("smtp", False)
