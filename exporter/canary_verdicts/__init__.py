"""What the receiving side thought of the canary, from the message as it was delivered:

- authresults: the receiving hop's ``Authentication-Results`` headers (RFC 8601) read into
  SPF, DKIM and DMARC verdicts and DKIM alignment with the From domain;
- dkimverify: the message's DKIM signatures verified here (dkimpy), with keys the caller
  looked up, for receivers that add no Authentication-Results;
- domains: organizational domains (public suffix list) and DMARC alignment.

Pure functions, no I/O: the caller reads the message, looks the DKIM keys up (through the
domain checks' DNS cache: ``key_names`` says which) and loads the public suffix list once.
"""

from .authresults import (
    ParsedHeader,
    dkim_summary,
    headers_of,
    id_matches,
    parse_header,
    read_verdicts,
    strip_comments,
)
from .dkimverify import key_names, verify_dkim
from .domains import DEFAULT_PSL, PublicSuffixList, aligned, organizational_domain

__all__ = [
    "DEFAULT_PSL",
    "ParsedHeader",
    "PublicSuffixList",
    "aligned",
    "dkim_summary",
    "headers_of",
    "id_matches",
    "key_names",
    "organizational_domain",
    "parse_header",
    "read_verdicts",
    "strip_comments",
    "verify_dkim",
]
