"""The deliverability testbed itself (tests/servers/deliverability/): a signing sender, a
verifying receiver, Sieve's Junk filing, and the zone both sides read. Issue #19's canary
tests stand on these facts, so they are checked here first, apart from the exporter."""

from __future__ import annotations

import email
import email.policy
import os
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage

import dns.resolver
import pytest

from tests.servers.deliverability import Deliverability, available, configs, deliverability_stack

pytestmark = [pytest.mark.postfix, pytest.mark.fixture_selftest]


@pytest.fixture(scope="module")
def testbed() -> Iterator[Deliverability]:
    reason = available()
    if reason is not None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"deliverability testbed unavailable: {reason} (CI is set)", pytrace=False)
        pytest.skip(f"SKIPPING REAL-SERVER TESTS -- deliverability testbed: {reason}")
    with deliverability_stack() as bed:
        yield bed


def _send(bed: Deliverability, domain: str, subject: str, **headers: str) -> None:
    msg = EmailMessage()
    msg["From"] = f"canary@{domain}"
    msg["To"] = bed.recipient
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("a test message\n")
    with smtplib.SMTP(bed.host, bed.submit_port, timeout=10) as smtp:
        smtp.send_message(msg)


def _find(
    bed: Deliverability, subject: str, timeout: float = 20.0
) -> tuple[str, email.message.Message]:
    """(folder, message) of the message with ``subject``, once delivered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for folder in ("INBOX", "Junk"):
            for raw in bed.delivered(folder):
                msg = email.message_from_bytes(raw, policy=email.policy.compat32)
                if msg["Subject"] == subject:
                    return folder, msg
        time.sleep(0.1)
    raise AssertionError(f"{subject!r} was not delivered within {timeout} s")


def _results(msg: email.message.Message) -> list[str]:
    return [" ".join(v.split()) for v in msg.get_all("Authentication-Results") or []]


@pytest.mark.parametrize(
    ("domain", "spf", "dkim", "dmarc"),
    [
        (configs.GOOD, "pass", "pass", "pass"),
        (configs.SPF_FAIL, "fail", "pass", "pass"),
        (configs.WRONG_KEY, "pass", "fail", "pass"),
    ],
)
def test_receiver_writes_its_verdicts_on_top(
    testbed: Deliverability, domain: str, spf: str, dkim: str, dmarc: str
) -> None:
    subject = f"verdict {domain} {time.time()}"
    _send(testbed, domain, subject)
    folder, msg = _find(testbed, subject)
    assert folder == "INBOX"
    assert msg["DKIM-Signature"] is not None, "the sending side did not sign"
    assert f"d={domain};" in " ".join(msg["DKIM-Signature"].split())
    top = _results(msg)[0]
    assert top.startswith(f"{testbed.authserv_id}; ")
    assert f"spf={spf} " in top and f"dkim={dkim} header.d={domain}" in top
    assert f"dmarc={dmarc} header.from={domain}" in top


def test_marked_message_is_filed_into_junk(testbed: Deliverability) -> None:
    subject = f"junk {time.time()}"
    _send(testbed, configs.GOOD, subject, **{configs.JUNK_HEADER: "junk"})
    folder, msg = _find(testbed, subject)
    assert folder == "Junk"
    assert "dkim=pass" in _results(msg)[0]


def test_forged_results_stay_below_the_receivers(testbed: Deliverability) -> None:
    subject = f"forged {time.time()}"
    forged = f"{testbed.authserv_id}; dkim=pass header.d={configs.WRONG_KEY}"
    _send(testbed, configs.WRONG_KEY, subject, Authentication_Results=forged)
    _, msg = _find(testbed, subject)
    results = _results(msg)
    assert len(results) == 2
    assert "dkim=fail" in results[0] and results[1] == forged


def test_zone_serves_keys_and_reverse_records(testbed: Deliverability) -> None:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [testbed.dns.address]
    resolver.port = testbed.dns.port
    key = b"".join(resolver.resolve(f"s1._domainkey.{configs.GOOD}", "TXT")[0].strings)
    assert key.startswith(b"v=DKIM1; k=rsa; p=MII")
    ptr = resolver.resolve("1.0.0.127.in-addr.arpa", "PTR")[0].to_text()
    assert ptr == f"{configs.SENDER_HOSTNAME}."
    assert resolver.resolve(configs.SENDER_HOSTNAME, "A")[0].to_text() == configs.PTR_CONFIRMED
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("4.0.0.127.in-addr.arpa", "PTR")
