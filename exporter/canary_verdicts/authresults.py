"""``Authentication-Results`` headers (RFC 8601) read into SPF, DKIM and DMARC verdicts,
and DKIM alignment with the From domain. Header text in, ``AuthVerdicts`` out.

Which headers count. Anyone can write an ``Authentication-Results`` header into a message
before sending it, so only headers whose authserv-id is the configured one are read, and of
those only the receiving hop's: the topmost such header, and the ones with the same id
directly below it before the next ``Received:`` header (each milter of one hop, OpenDKIM
and OpenDMARC say, adds its own). A header with that id further down came with the
message and is ignored. For each method, the topmost header of the hop that reports it
gives the result, so a header the sender slipped in below the receiver's can at most add a
method the receiver did not report at all. Receivers are asked by RFC 8601 §5 to remove
headers with their own id from incoming mail; not all do.

Microsoft 365 and Outlook.com write their header without an authserv-id
(``Authentication-Results: spf=pass ...``): configure the id ``""`` to read those.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..results.verdicts import AuthResult, AuthVerdicts, DKIMSignature, MethodResult
from .domains import PublicSuffixList, aligned

MAX_HEADER_BLOCK = 256 * 1024  # bytes of header read; the rest is ignored
MAX_RESULTS = 64  # resinfo items read per header
_RESULTS = {r.value: r for r in AuthResult} | {"hardfail": AuthResult.FAIL}  # RFC 7208 legacy
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|=|[^\s="]+')


@dataclass(frozen=True, slots=True)
class ParsedHeader:
    """One ``Authentication-Results`` header: who wrote it and what it says."""

    authserv_id: str  # "" when the header has none (Microsoft)
    version: int | None
    results: tuple[MethodResult, ...]


# --------------------------------------------------------------------------- one header


def strip_comments(text: str) -> str:
    """``text`` with RFC 5322 comments (nested, with quoted-pairs) replaced by a space,
    quoted strings left alone."""
    out: list[str] = []
    depth = 0
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and (quoted or depth):
            if not depth:
                out.append(text[i : i + 2])
            i += 2
            continue
        if depth:
            depth += 1 if c == "(" else -1 if c == ")" else 0
            if not depth:
                out.append(" ")
        elif c == '"':
            quoted = not quoted
            out.append(c)
        elif c == "(" and not quoted:
            depth = 1
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _split(text: str) -> list[str]:
    """Split on ``;`` outside quoted strings."""
    parts, current, quoted, escaped = [], [], False, False
    for c in text:
        if escaped:
            escaped = False
        elif c == "\\" and quoted:
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == ";" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(c)
    parts.append("".join(current))
    return parts


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] == '"':
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    return token


def _pairs(segment: str) -> list[tuple[str, str]]:
    """``key=value`` pairs of a segment, whitespace allowed around ``=``."""
    tokens = _TOKEN.findall(segment)
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        if i + 2 < len(tokens) and tokens[i + 1] == "=" and tokens[i] != "=":
            if tokens[i + 2] != "=":
                out.append((tokens[i], _unquote(tokens[i + 2])))
                i += 3
                continue
        elif i + 1 < len(tokens) and tokens[i + 1] == "=" and i + 2 == len(tokens):
            out.append((tokens[i], ""))  # "header.b=" at the very end
            break
        i += 1
    return out


def _resinfo(segment: str) -> MethodResult | None:
    pairs = _pairs(segment)
    if not pairs:
        return None
    method, value = pairs[0]
    result = _RESULTS.get(value.lower())
    if result is None or "." in method:
        return None  # an unknown result, or not a methodspec
    reason = None
    props: list[tuple[str, str]] = []
    for key, val in pairs[1:]:
        key = key.lower()
        if key == "reason" and reason is None:
            reason = val[:200]
        elif "." in key:  # ptype.property; anything else (Microsoft's action=) is ignored
            props.append((key, val[:255]))
    name = method.lower().split("/", 1)[0]
    return MethodResult(name, result, reason, tuple(props))


def parse_header(value: str) -> ParsedHeader | None:
    """The payload of one ``Authentication-Results`` header (folded or not); None when it
    has neither an authserv-id nor a result."""
    text = strip_comments(re.sub(r"\r?\n(?=[ \t])", "", value).replace("\r", " ").strip())
    parts = _split(text)
    head = parts[0].strip()
    results: list[MethodResult] = []
    authserv_id, version = "", None
    if "=" in head and not head.startswith('"'):  # no authserv-id: the first is a result
        first = _resinfo(head)
        if first is not None:
            results.append(first)
    else:
        words = _TOKEN.findall(head)
        if not words:
            return None
        authserv_id = _unquote(words[0]).lower()
        if len(words) > 1 and re.fullmatch(r"[0-9]{1,9}", words[1]):
            version = int(words[1])
    for part in parts[1 : MAX_RESULTS + 1]:
        if part.strip().lower() == "none":
            continue
        r = _resinfo(part)
        if r is not None:
            results.append(r)
    if not authserv_id and not results:
        return None
    return ParsedHeader(authserv_id, version, tuple(results))


# --------------------------------------------------------------------------- a message


def _domain_of(value: str | None) -> str | None:
    """The domain of ``user@domain``, ``@domain`` or ``domain``."""
    if not value:
        return None
    domain = value.rsplit("@", 1)[-1].strip().strip("<>").rstrip(".").lower()
    return domain or None


def id_matches(authserv_id: str, wanted: Iterable[str]) -> bool:
    """Whether a header's authserv-id is one of ``wanted`` (without case; ``*.example.com``
    stands for exactly one label, for providers whose id names the MX host that took the
    message, ``mx3.messagingengine.com``)."""
    for w in wanted:
        w = w.lower().rstrip(".")
        if w.startswith("*."):
            head, _, rest = authserv_id.partition(".")
            if head and rest == w[2:]:
                return True
        elif authserv_id == w:
            return True
    return False


def headers_of(block: bytes | str) -> list[tuple[str, str]]:
    """(name, value) of each header field, top first; stops at the blank line that ends
    the header, so a whole message may be given."""
    raw = block.encode("utf-8", "surrogateescape") if isinstance(block, str) else block
    message = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
        raw[:MAX_HEADER_BLOCK]
    )
    return [(name, str(value)) for name, value in message.items()]


def read_verdicts(
    block: bytes | str,
    authserv_ids: str | Sequence[str],
    psl: PublicSuffixList | None = None,
) -> AuthVerdicts:
    """The receiving hop's verdicts on the message whose header is ``block``."""
    wanted = (authserv_ids,) if isinstance(authserv_ids, str) else tuple(authserv_ids)
    headers = headers_of(block)
    total = 0
    hop: list[ParsedHeader] = []
    closed = False
    for name, value in headers:
        lname = name.lower()
        if lname == "received" and hop:
            closed = True
        if lname != "authentication-results":
            continue
        total += 1
        if closed:
            continue
        parsed = parse_header(value)
        if parsed is not None and id_matches(parsed.authserv_id, wanted):
            hop.append(parsed)
    from_domain = from_domain_of(headers)
    if not hop:
        return AuthVerdicts(False, from_domain=from_domain, ignored=total)

    used: set[int] = set()

    def first(method: str) -> list[MethodResult]:
        for i, h in enumerate(hop):
            found = [r for r in h.results if r.method == method]
            if found:
                used.add(i)
                return found
        return []

    spf_results = first("spf")
    spf = next((r for r in spf_results if r.prop("smtp.mailfrom")), None) or next(
        iter(spf_results), None
    )
    dmarc = next(iter(first("dmarc")), None)
    signatures = tuple(_signature(r, from_domain, psl) for r in first("dkim"))
    dkim, dkim_aligned = dkim_summary(signatures)
    return AuthVerdicts(
        found=True,
        authserv_id=hop[0].authserv_id,
        spf=spf.result if spf else None,
        dkim=dkim,
        dmarc=dmarc.result if dmarc else None,
        dkim_aligned=dkim_aligned if from_domain else None,
        from_domain=from_domain,
        spf_domain=_domain_of(spf.prop("smtp.mailfrom") or spf.prop("smtp.helo")) if spf else None,
        signatures=signatures,
        ignored=total - len(used or {0}),
    )


def dkim_summary(
    signatures: Sequence[DKIMSignature],
) -> tuple[AuthResult | None, bool | None]:
    """One DKIM verdict for a message: ``pass`` if any signature passed, else the first
    result (None: unsigned); and whether a passing signature aligns with From (None when
    unsigned)."""
    if not signatures:
        return None, None
    results = [s.result for s in signatures]
    verdict = AuthResult.PASS if AuthResult.PASS in results else results[0]
    return verdict, any(s.aligned for s in signatures if s.result is AuthResult.PASS)


def _signature(
    r: MethodResult, from_domain: str | None, psl: PublicSuffixList | None
) -> DKIMSignature:
    identity = r.prop("header.i")
    domain = _domain_of(r.prop("header.d")) or _domain_of(identity)
    is_aligned = None
    if domain and from_domain:
        is_aligned = aligned(domain, from_domain, psl)
    return DKIMSignature(r.result, domain, identity, r.prop("header.s"), is_aligned, r.reason)


def from_domain_of(headers: list[tuple[str, str]]) -> str | None:
    """The domain of the (first) From: address of ``headers`` (``headers_of``)."""
    value = next((v for n, v in headers if n.lower() == "from"), None)
    if value is None:
        return None
    addresses = email.utils.getaddresses([value])
    return _domain_of(addresses[0][1]) if addresses and "@" in addresses[0][1] else None
