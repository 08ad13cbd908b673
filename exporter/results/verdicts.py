"""What the receiving side thought of a message: the SPF, DKIM and DMARC results of its
``Authentication-Results`` header (RFC 8601), or of our own DKIM verification. Plain,
frozen values; the parser is ``exporter.canary_verdicts``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AuthResult(StrEnum):
    """RFC 8601 §2.7 result values (the union over SPF, DKIM and DMARC); label values."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"
    POLICY = "policy"


@dataclass(frozen=True, slots=True)
class MethodResult:
    """One ``method=result`` of a header, with its reason and properties
    (``("header.d", "example.com")``, in the order written, comments removed)."""

    method: str  # lower case, without a /version
    result: AuthResult
    reason: str | None = None
    properties: tuple[tuple[str, str], ...] = ()

    def prop(self, name: str) -> str | None:
        """The first value of ``ptype.property`` (compared without case)."""
        name = name.lower()
        return next((v for k, v in self.properties if k == name), None)


@dataclass(frozen=True, slots=True)
class DKIMSignature:
    """One DKIM result: of a signature the receiver verified, or that we verified."""

    result: AuthResult
    domain: str | None = None  # header.d (the signing domain), lower case
    identity: str | None = None  # header.i (the agent or user identifier), as written
    selector: str | None = None  # header.s
    aligned: bool | None = None  # the signing domain aligns with the From domain (relaxed)
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AuthVerdicts:
    """The receiving side's verdicts on one message.

    ``found`` is False when no ``Authentication-Results`` header of the configured
    authserv-id was there (the verdicts are then None). ``dkim`` is ``pass`` when any
    signature passed, else the first result given; ``dkim_aligned`` says whether a passing
    signature's domain aligns with the From domain (DMARC relaxed alignment)."""

    found: bool
    authserv_id: str | None = None  # as the chosen header spelled it
    spf: AuthResult | None = None
    dkim: AuthResult | None = None
    dmarc: AuthResult | None = None
    dkim_aligned: bool | None = None
    from_domain: str | None = None  # of the message's From: header
    spf_domain: str | None = None  # smtp.mailfrom's domain (or smtp.helo's)
    signatures: tuple[DKIMSignature, ...] = ()
    # Authentication-Results headers not used: another authserv-id, or below the receiving
    # hop's (a sender can add any header; only the receiver's own are trusted).
    ignored: int = 0
