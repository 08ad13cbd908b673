"""DKIM signatures verified here (dkimpy), with the keys looked up through the domain checks'
DNS cache against a real DNS server (dnslib): pass, a wrong key in DNS, a changed body, no
key, a failed lookup, a From domain the signature does not align with."""

from __future__ import annotations

import asyncio
import base64

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.canary_verdicts import dkim_summary, key_names, verify_dkim
from exporter.deadline import Deadline
from exporter.maildomain import DNSCache
from exporter.maildomain.dnscache import Status
from exporter.results.verdicts import AuthResult

from .domain_support import resolver_for

MESSAGE = (
    b"From: Canary <canary@sender.test>\r\n"
    b"To: canary@receiver.test\r\n"
    b"Subject: canary 7f3a\r\n"
    b"Message-ID: <7f3a@sender.test>\r\n"
    b"Date: Tue, 01 Dec 2026 03:00:00 +0000\r\n"
    b"\r\n"
    b"canary body\r\n"
)


class Key:
    def __init__(self, bits: int = 2048) -> None:
        self.private = rsa.generate_private_key(65537, bits)

    def pem(self) -> bytes:
        return self.private.private_bytes(
            Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption()
        )

    def record(self) -> str:
        spki = self.private.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        text = f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}"
        return " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {"signer": Key(), "other": Key(), "small": Key(1024)}


def sign(message: bytes, key: Key, selector: str = "s1", domain: str = "sender.test") -> bytes:
    header = dkim.sign(message, selector.encode(), domain.encode(), key.pem())
    return header + message


def verify_via_dns(dns, message: bytes):
    """What the canary does: look the keys up through the cache, then verify offline."""
    cache = DNSCache(resolver_for(dns))

    async def fetch() -> dict[str, object]:
        deadline = Deadline.after(5)
        out: dict[str, object] = {}
        for name in key_names(message):
            lookup = await cache.query(name, "TXT", deadline)
            if lookup.status is Status.ERROR:
                out[name] = LookupError(lookup.error)
            else:
                out[name] = (lookup.texts() or [None])[0]
        return out

    answers = asyncio.run(fetch())

    def dns_txt(name: str) -> str | None:
        value = answers.get(name)
        if isinstance(value, Exception):
            raise value
        return value  # type: ignore[return-value]

    return verify_dkim(message, dns_txt)


def test_pass(dns_server, keys):
    dns = dns_server(f"s1._domainkey.sender.test. 300 IN TXT {keys['signer'].record()}\n")
    message = sign(MESSAGE, keys["signer"])
    assert key_names(message) == ["s1._domainkey.sender.test"]
    (sig,) = verify_via_dns(dns, message)
    assert (sig.result, sig.domain, sig.selector, sig.aligned, sig.reason) == (
        AuthResult.PASS,
        "sender.test",
        "s1",
        True,
        None,
    )
    assert ("s1._domainkey.sender.test.", "TXT") in dns.queries


def test_wrong_key_in_dns(dns_server, keys):
    dns = dns_server(f"s1._domainkey.sender.test. 300 IN TXT {keys['other'].record()}\n")
    (sig,) = results = verify_via_dns(dns, sign(MESSAGE, keys["signer"]))
    assert sig.result is AuthResult.FAIL and sig.domain == "sender.test"
    assert dkim_summary(results) == (AuthResult.FAIL, False)
    assert sig.reason


def test_changed_body_fails(dns_server, keys):
    dns = dns_server(f"s1._domainkey.sender.test. 300 IN TXT {keys['signer'].record()}\n")
    signed = sign(MESSAGE, keys["signer"]).replace(b"canary body", b"changed body")
    (sig,) = verify_via_dns(dns, signed)
    assert sig.result is AuthResult.FAIL


def test_no_key_is_a_permerror_a_failed_lookup_a_temperror(dns_server, keys):
    dns = dns_server("sender.test. 300 IN A 127.0.0.1\n", servfail=["s2._domainkey.sender.test"])
    (missing,) = verify_via_dns(dns, sign(MESSAGE, keys["signer"]))
    assert (missing.result, missing.reason) == (
        AuthResult.PERMERROR,
        "no key record at s1._domainkey.sender.test",
    )
    (failed,) = verify_via_dns(dns, sign(MESSAGE, keys["signer"], "s2"))
    assert failed.result is AuthResult.TEMPERROR
    assert failed.reason.startswith("key lookup of s2._domainkey.sender.test failed: LookupError")


def test_revoked_and_garbage_keys_are_permerrors(dns_server, keys):
    dns = dns_server(
        's1._domainkey.sender.test. 300 IN TXT "v=DKIM1; p="\n'
        's2._domainkey.sender.test. 300 IN TXT "v=DKIM1; p=bm90IGEga2V5"\n'
    )
    results = [verify_via_dns(dns, sign(MESSAGE, keys["signer"], s))[0] for s in ("s1", "s2")]
    assert [r.result for r in results] == [AuthResult.PERMERROR, AuthResult.PERMERROR]


def test_two_signatures_and_alignment(dns_server, keys):
    """The From domain's own signature and a mailing service's, each verified on its own;
    only the first aligns with From."""
    dns = dns_server(
        f"s1._domainkey.sender.test. 300 IN TXT {keys['signer'].record()}\n"
        f"m1._domainkey.mailer.example.net. 300 IN TXT {keys['small'].record()}\n"
    )
    once = sign(MESSAGE, keys["signer"])
    twice = sign(once, keys["small"], "m1", "mailer.example.net")
    assert key_names(twice) == ["m1._domainkey.mailer.example.net", "s1._domainkey.sender.test"]
    results = verify_via_dns(dns, twice)
    assert [(r.result, r.domain, r.aligned) for r in results] == [
        (AuthResult.PASS, "mailer.example.net", False),
        (AuthResult.PASS, "sender.test", True),
    ]
    assert dkim_summary(results) == (AuthResult.PASS, True)


def test_unsigned_message():
    assert verify_dkim(MESSAGE, lambda name: pytest.fail(f"asked for {name}")) == ()
    # A message dkimpy cannot parse: its signature is a permerror, not an exception.
    (broken,) = verify_dkim(b"DKIM-Signature: v=1; d=a.test; s=s\r\n0\r\n\r\nx", lambda n: None)
    assert broken.result is AuthResult.PERMERROR
    assert dkim_summary(()) == (None, None)
    assert key_names(MESSAGE) == []


def test_ed25519_without_pynacl_is_neutral():
    """dkimpy verifies ed25519 (RFC 8463) only with PyNaCl, which the exporter does not
    install: such a signature is reported as one this installation cannot check."""
    signed = (
        b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=sender.test; s=ed;\r\n"
        b" h=from:to:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n"
        b" b=AAAA\r\n" + MESSAGE
    )
    record = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    (sig,) = verify_dkim(
        signed, lambda name: record if name == "ed._domainkey.sender.test" else None
    )
    try:
        import nacl  # noqa: F401
    except ImportError:
        assert (sig.result, sig.reason) == (
            AuthResult.NEUTRAL,
            "ed25519 signature: PyNaCl not installed",
        )
    else:  # the signature is made up: with PyNaCl it cannot verify
        assert sig.result in (AuthResult.FAIL, AuthResult.PERMERROR)
    assert (sig.domain, sig.selector) == ("sender.test", "ed")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300))
def test_any_signature_and_key_give_a_result(tag_text, record):
    """dkimpy raises on malformed messages in places of its own choosing: every input still
    gives one result per signature, never an exception."""
    message = (
        f"DKIM-Signature: v=1; a=rsa-sha256; d=a.test; s=s; {tag_text}\r\n"
        "From: a@a.test\r\n\r\nbody\r\n"
    ).encode("utf-8", "surrogatepass")
    results = verify_dkim(message, lambda name: record)
    assert len(results) <= 1 and all(r.result in AuthResult for r in results)
