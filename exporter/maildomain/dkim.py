"""DKIM key records of the configured selectors: ``<selector>._domainkey.<domain>`` TXT
(RFC 6376 §3.6.1; Ed25519 keys RFC 8463; key sizes RFC 8301).

``parse_key_record`` is pure (text in, a ``ParsedKey`` out); ``check_dkim`` fetches the
records through the ``DNSCache``. A 1024-2047 bit RSA key is usable but weak (RFC 8301 §3.2
asks for 2048); under 1024 bits verifiers must not accept it, and the key is unusable.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from ..deadline import Deadline
from ..results.domain import DKIMKey, DomainCheck, Finding
from .dnscache import DNSCache, Status
from .records import MAX_RECORD_SHOWN, clip, parse_tags

MIN_RSA_BITS = 1024  # RFC 8301 §3.2: verifiers MUST NOT consider smaller keys valid
GOOD_RSA_BITS = 2048  # RFC 8301 §3.2: signers SHOULD use at least this
KEY_TYPES = ("rsa", "ed25519")
_HASHES = ("sha1", "sha256")
_B64 = re.compile(r"[A-Za-z0-9+/=\s]*")


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """What one key record says; ``problems`` make it unusable, ``weak`` does not."""

    key_type: str | None = None  # k= (default rsa), when the key parsed
    key_size: int | None = None
    testing: bool = False
    revoked: bool = False
    problems: list[str] = field(default_factory=list)
    weak: str | None = None  # why a usable key is weak


def parse_key_record(text: str) -> ParsedKey:
    """A DKIM key record: ``v=DKIM1; k=rsa; t=y; p=MIIBIjANBg...``."""
    pairs, problems = parse_tags(text)
    tags: dict[str, str] = {}
    for i, (tag, value) in enumerate(pairs):
        if tag in tags:
            problems.append(f"tag {tag}= appears twice")  # §3.2: a permerror
        tags.setdefault(tag, value)
        if tag == "v" and (i != 0 or value != "DKIM1"):
            problems.append("v= must be first and DKIM1")
    flags = [f.strip().lower() for f in tags.get("t", "").split(":") if f.strip()]
    testing = "y" in flags
    hashes = [h.strip().lower() for h in tags.get("h", "").split(":") if h.strip()]
    if hashes and not set(hashes) & set(_HASHES):
        problems.append(f"h={clip(tags['h'], 30)} names no known hash (sha256)")
    elif hashes and "sha256" not in hashes:
        problems.append("h= allows only sha1 (RFC 8301: verifiers refuse rsa-sha1)")
    key_type = tags.get("k", "rsa").strip().lower()
    if key_type not in KEY_TYPES:
        problems.append(f"unknown key type k={clip(key_type, 20)}")
    if "p" not in tags:
        return ParsedKey(testing=testing, problems=[*problems, "no p= tag (required)"])
    data = re.sub(r"\s+", "", tags["p"])
    if not data:  # §3.6.1: an empty p= means the key was revoked
        return ParsedKey(testing=testing, revoked=True, problems=problems)
    if key_type not in KEY_TYPES:
        return ParsedKey(testing=testing, problems=problems)
    try:
        if not _B64.fullmatch(data):
            raise ValueError
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return ParsedKey(testing=testing, problems=[*problems, "p= is not base64"])
    size, problem = _key_size(key_type, raw)
    if problem is not None:
        return ParsedKey(key_type, testing=testing, problems=[*problems, problem])
    weak = None
    if key_type == "rsa" and size is not None:
        if size < MIN_RSA_BITS:
            problems.append(f"{size}-bit RSA key: verifiers refuse keys under 1024 bits")
        elif size < GOOD_RSA_BITS:
            weak = f"{size}-bit RSA key is weak (use 2048 bits, RFC 8301)"
    return ParsedKey(key_type, size, testing, False, problems, weak)


def _key_size(key_type: str, raw: bytes) -> tuple[int | None, str | None]:
    if key_type == "ed25519":
        # RFC 8463 §4.2: the raw 32-byte key, not a SubjectPublicKeyInfo.
        if len(raw) != 32:
            return None, f"ed25519 p= is {len(raw)} bytes, not the raw 32-byte key"
        ed25519.Ed25519PublicKey.from_public_bytes(raw)
        return 256, None
    try:
        # SubjectPublicKeyInfo, as RFC 6376 §3.6.1 has it (PKCS#1 RSAPublicKey accepted too).
        key = load_der_public_key(raw)
    except (ValueError, TypeError) as exc:
        return None, f"p= is not a DER public key ({type(exc).__name__})"
    if not isinstance(key, rsa.RSAPublicKey):
        return None, f"k=rsa but p= holds a {type(key).__name__.removesuffix('PublicKey')} key"
    return key.key_size, None


async def check_dkim(
    domain: str, selectors: tuple[str, ...], cache: DNSCache, deadline: Deadline
) -> tuple[tuple[DKIMKey, ...], list[Finding]]:
    """One ``DKIMKey`` per selector, looked up concurrently."""
    results = await asyncio.gather(*(_one(domain, s, cache, deadline) for s in selectors))
    return tuple(k for k, _ in results), [f for _, fs in results for f in fs]


async def _one(
    domain: str, selector: str, cache: DNSCache, deadline: Deadline
) -> tuple[DKIMKey, list[Finding]]:
    name = f"{selector}._domainkey.{domain}"
    out: list[Finding] = []

    def finding(reason: str) -> None:
        out.append(Finding(DomainCheck.DKIM, f"DKIM: {reason}"))

    lookup = await cache.query(name, "TXT", deadline)
    if lookup.status is Status.ERROR:
        finding(f"lookup of {name} TXT failed: {lookup.error}")
        return DKIMKey(selector, False, error=lookup.error), out
    texts = lookup.texts()
    if not texts:
        finding(f"no key record at {name} (mail signed with selector {selector} fails DKIM)")
        return DKIMKey(selector, False), out
    if len(texts) > 1:
        finding(f"{len(texts)} TXT records at {name} (verifiers need exactly one)")
        return DKIMKey(selector, True, record=clip(texts[0], MAX_RECORD_SHOWN)), out
    record = texts[0]
    key = parse_key_record(record)
    for problem in key.problems:
        finding(f"{name}: {problem}")
    if key.revoked:
        finding(f"selector {selector} is revoked (empty p=): mail signed with it fails DKIM")
    if key.weak:
        finding(f"selector {selector}: {key.weak}")
    if key.testing:
        finding(f"selector {selector} has t=y (testing: receivers may ignore its results)")
    valid = not key.problems and not key.revoked and key.key_size is not None
    return DKIMKey(
        selector,
        True,
        valid,
        key.key_type,
        key.key_size,
        key.testing,
        key.revoked,
        clip(record, MAX_RECORD_SHOWN),
    ), out
