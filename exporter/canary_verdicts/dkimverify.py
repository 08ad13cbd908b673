"""The message's DKIM signatures verified here, with dkimpy, for a receiving server that
adds no ``Authentication-Results`` (or to check what it says).

dkimpy asks for each signature's key with a callable; ours is ``dns_txt(name)``, which the
caller backs with keys it looked up beforehand (``key_names`` lists them), so verification
itself does no I/O and the lookups go through the exporter's resolver and cache, under
the caller's deadline. Results follow RFC 8601 §2.7.1: ``pass``; ``fail`` (the signature
does not verify: a changed message, or the wrong key in DNS); ``permerror`` (no key, a
malformed one, RSA under 1024 bits, a malformed signature); ``temperror`` (the key lookup
failed); ``neutral`` (a signature this installation cannot check: ed25519 without PyNaCl).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import dkim

from ..results.verdicts import AuthResult, DKIMSignature
from .authresults import from_domain_of, headers_of
from .domains import PublicSuffixList, aligned

MAX_SIGNATURES = 5  # DKIM-Signature headers verified per message
MIN_KEY_BITS = 1024  # RFC 8301 §3.2
_TAG = re.compile(r"\s*([a-z]+)\s*=\s*([^;]*)", re.I)


class _Records(logging.Handler):
    """Keeps dkimpy's log messages as the reason of a result, instead of logging them:
    a canary whose key is wrong would otherwise write an error at every run."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage()[:200])


def _signature_tags(value: str) -> dict[str, str]:
    return {m[1].lower(): re.sub(r"\s+", "", m[2]) for m in _TAG.finditer(value)}


def key_names(message: bytes) -> list[str]:
    """``<s>._domainkey.<d>`` of each DKIM-Signature (at most MAX_SIGNATURES), top first:
    the TXT records ``verify_dkim`` will ask for."""
    out: list[str] = []
    for name, value in headers_of(message):
        if name.lower() == "dkim-signature" and len(out) < MAX_SIGNATURES:
            tags = _signature_tags(value)
            if tags.get("s") and tags.get("d"):
                out.append(f"{tags['s']}._domainkey.{tags['d']}".lower().rstrip("."))
    return out


def verify_dkim(
    message: bytes,
    dns_txt: Callable[[str], str | bytes | None],
    psl: PublicSuffixList | None = None,
) -> tuple[DKIMSignature, ...]:
    """One result per DKIM-Signature (top first, at most MAX_SIGNATURES); empty when the
    message is unsigned. ``dns_txt(name)`` returns the TXT record at ``name`` (no trailing
    dot), None when there is none, and raises when the lookup failed."""
    headers = headers_of(message)
    from_domain = from_domain_of(headers)
    count = sum(1 for n, _ in headers if n.lower() == "dkim-signature")
    out: list[DKIMSignature] = []
    for idx in range(min(count, MAX_SIGNATURES)):
        out.append(_verify_one(message, idx, dns_txt, from_domain, psl))
    return tuple(out)


def _verify_one(
    message: bytes,
    idx: int,
    dns_txt: Callable[[str], str | bytes | None],
    from_domain: str | None,
    psl: PublicSuffixList | None,
) -> DKIMSignature:
    records = _Records()
    logger = logging.Logger("dkimpy")  # not registered: nothing propagates to the root
    logger.addHandler(records)
    lookup: dict[str, str] = {}

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        text = text.lower().rstrip(".")
        try:
            answer = dns_txt(text)
        except Exception as exc:  # the caller's lookup failed: a temporary error
            lookup["error"] = f"key lookup of {text} failed: {type(exc).__name__}: {exc}"[:200]
            return None
        if answer is None:
            lookup["missing"] = f"no key record at {text}"
            return None
        return answer.encode() if isinstance(answer, str) else answer

    d: dkim.DKIM | None = None
    try:
        d = dkim.DKIM(message, logger=logger, minkey=MIN_KEY_BITS)
        ok = d.verify(idx=idx, dnsfunc=dnsfunc)
    except dkim.NaClNotFoundError:
        return _result(
            d, AuthResult.NEUTRAL, "ed25519 signature: PyNaCl not installed", from_domain, psl
        )
    except dkim.DKIMException as exc:
        # A body hash mismatch is a signature that did not verify (a changed message);
        # anything else dkimpy raises on is a malformed signature or key.
        changed = isinstance(exc, dkim.ValidationError) and "body hash mismatch" in str(exc)
        result = AuthResult.FAIL if changed else AuthResult.PERMERROR
        return _result(d, result, str(exc)[:200], from_domain, psl)
    except Exception as exc:  # dkimpy is not hardened against every malformed input
        reason = f"dkimpy could not process it: {type(exc).__name__}: {exc}"[:200]
        return _result(d, AuthResult.PERMERROR, reason, from_domain, psl)
    if ok:
        return _result(d, AuthResult.PASS, None, from_domain, psl)
    if "error" in lookup:
        return _result(d, AuthResult.TEMPERROR, lookup["error"], from_domain, psl)
    if "missing" in lookup:
        return _result(d, AuthResult.PERMERROR, lookup["missing"], from_domain, psl)
    reason = records.messages[-1] if records.messages else "signature did not verify"
    if any("KeyFormatError" in m or "public key" in m for m in records.messages):
        return _result(d, AuthResult.PERMERROR, reason, from_domain, psl)
    return _result(d, AuthResult.FAIL, reason, from_domain, psl)


def _result(
    d: dkim.DKIM | None,
    result: AuthResult,
    reason: str | None,
    from_domain: str | None,
    psl: PublicSuffixList | None,
) -> DKIMSignature:
    # None: the message did not parse; no signature_fields: the signature did not.
    fields = getattr(d, "signature_fields", None) or {}
    domain = _text(fields.get(b"d"))
    identity = _text(fields.get(b"i"))
    is_aligned = aligned(domain, from_domain, psl) if domain and from_domain else None
    return DKIMSignature(result, domain, identity, _text(fields.get(b"s")), is_aligned, reason)


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    return value.decode("ascii", "replace").strip().rstrip(".").lower() or None
