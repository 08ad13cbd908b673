"""The canary: sent through the probed server with the send library, found over IMAP."""

from __future__ import annotations

import asyncio
import email
import json
import subprocess
import sys
import time

import pytest

from exporter import config
from exporter.canary import run_canary
from exporter.imapcheck import TOKEN_HEADER

from .conftest import USER, write_secret
from .exporter_harness import RunningExporter, wait_for


def test_canary_without_imap_through_aiosmtpd(smtp_server, ca_file, tmp_path):
    server = smtp_server()
    secret = write_secret(tmp_path)
    cfg = config.parse(f"""
modules:
  sub:
    tls_ca_file: {ca_file}
    auth: {{username: {USER}, password_file: {secret}}}
    canary: {{from: monitor@example.com, to: canary@example.org, interval: 1m}}
targets: [{{target: "127.0.0.1:{server.port}", module: sub}}]
""")
    target = cfg.targets[0]
    assert target.module.canary is not None
    result = asyncio.run(run_canary(target, target.module.canary))
    assert result.success and result.send_ok and not result.checked
    (received,) = server.messages
    msg = email.message_from_bytes(received.data)
    assert msg[TOKEN_HEADER] == result.token
    assert received.rcpt_tos == ("canary@example.org",)
    assert received.mail_from == "monitor@example.com"


def test_exporter_sends_canaries_at_their_own_interval(smtp_server, ca_file, tmp_path):
    server = smtp_server()
    secret = write_secret(tmp_path)
    path = tmp_path / "c.yml"
    path.write_text(f"""
modules:
  sub:
    tls_ca_file: {ca_file}
    timeout: 1s
    auth: {{username: {USER}, password_file: {secret}}}
    canary: {{from: monitor@example.com, to: canary@example.org, interval: 3s}}
targets: [{{target: "127.0.0.1:{server.port}", module: sub, interval: 1s}}]
""")
    exp = RunningExporter(path).start()
    try:
        assert wait_for(lambda: exp.value("smtp_canary_send_success") == 1, 10)
        time.sleep(4.5)
        probes = exp.value("smtp_probes_total") or 0
        canaries = len(server.messages)
        assert exp.value("smtp_canary_send_duration_seconds") > 0
        assert exp.value("smtp_canary_delivered") is None  # no IMAP: not checked
    finally:
        exp.stop()
    assert probes >= 5 and 2 <= canaries <= 3, (probes, canaries)


def test_canary_refused_is_reported(smtp_server, ca_file, tmp_path):
    from .servers.policy import Policy, PolicyHandler

    server = smtp_server(handler=PolicyHandler(Policy(reject_rcpt={"canary@example.org"})))
    secret = write_secret(tmp_path)
    cfg = config.parse(f"""
modules:
  sub:
    tls_ca_file: {ca_file}
    auth: {{username: {USER}, password_file: {secret}}}
    canary: {{from: monitor@example.com, to: canary@example.org}}
targets: [{{target: "127.0.0.1:{server.port}", module: sub}}]
""")
    t = cfg.targets[0]
    assert t.module.canary is not None
    result = asyncio.run(run_canary(t, t.module.canary))
    assert not result.success and not result.send_ok
    assert result.reason is not None and "550" in result.reason


# --- end to end through a real Postfix and Dovecot ----------------------------------------


def postfix_config(
    stack, tmp_path, *, to: str, timeout: str, every: str = "1m", probe_timeout: str = "10s"
) -> str:
    smtp_pw = tmp_path / "smtp-pw"
    smtp_pw.write_text(stack.users["probe"] + "\n")
    imap_pw = tmp_path / "imap-pw"
    imap_pw.write_text(stack.users["canary"] + "\n")
    return f"""
modules:
  submission:
    tls: starttls
    tls_ca_file: {stack.ca_file}
    timeout: {probe_timeout}
    auth: {{username: probe, password_file: {smtp_pw}}}
    canary:
      from: probe@localhost
      to: {to}
      interval: 1m
      timeout: {timeout}
      imap:
        host: 127.0.0.1
        port: {stack.imaps_port}
        tls: implicit
        tls_ca_file: {stack.ca_file}
        username: canary
        password_file: {imap_pw}
        poll_interval: 200ms
targets:
  - {{target: "127.0.0.1:{stack.submission_port}", module: submission, interval: {every}}}
"""


@pytest.mark.postfix
def test_canary_delivered_through_postfix_found_over_imap(mailstack, tmp_path):
    path = tmp_path / "pf.yml"
    path.write_text(postfix_config(mailstack, tmp_path, to="canary@localhost", timeout="20s"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "--once",
            "--config.file",
            str(path),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    obj = json.loads(proc.stdout)
    c = obj["canary"]
    assert c["send_ok"] and c["checked"] and c["delivered"], c
    assert 0 < c["round_trip_seconds"] < 20
    table = subprocess.run(
        [sys.executable, "-m", "exporter", "--once", "--config.file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0 and "delivered" in table.stdout
    print(table.stdout)
    # A found canary is deleted: no message file in the mailbox holds its token any more
    # (Dovecot's index cache may still mention it; that is not a message).
    token = c["token"].encode()
    maildir = mailstack.maildir_root / "canary" / "Maildir"
    messages = [p for sub in ("new", "cur") for p in maildir.rglob(f"{sub}/*") if p.is_file()]
    assert not [p for p in messages if token in p.read_bytes()]


@pytest.mark.postfix
def test_canary_never_arrives_is_not_delivered_and_probing_goes_on(mailstack, tmp_path):
    path = tmp_path / "pf.yml"
    # Delivered to probe@, looked for in canary@'s mailbox: it never shows up there.
    path.write_text(
        postfix_config(
            mailstack, tmp_path, to="probe@localhost", timeout="3s", every="1s", probe_timeout="1s"
        )
    )
    exp = RunningExporter(path).start()
    try:
        assert wait_for(lambda: exp.value("smtp_canary_delivered") == 0, 15)
        assert exp.value("smtp_canary_send_success") == 1
        assert exp.value("smtp_canary_round_trip_seconds") is None
        before = exp.value("smtp_probes_total") or 0
        assert wait_for(lambda: (exp.value("smtp_probes_total") or 0) >= before + 2, 10)
        assert exp.value("smtp_probe_success") == 1
    finally:
        exp.stop()
