"""Plain, frozen results of the checks on a mail domain: no Prometheus, no sockets.

Every weakness or error is a ``Finding(check, reason)`` whose ``check`` is a closed set
(``DomainCheck``, the values are label values) and whose reason is a short sentence for
people: "SPF: 12 DNS lookups (limit 10)".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DomainCheck(StrEnum):
    MX = "mx"
    SPF = "spf"
    DMARC = "dmarc"
    TLSRPT = "tlsrpt"
    MTA_STS = "mta_sts"
    DANE = "dane"
    DNSBL = "dnsbl"
    DKIM = "dkim"
    REVERSE_DNS = "reverse_dns"


RECORD_CHECKS = (DomainCheck.MX, DomainCheck.SPF, DomainCheck.DMARC, DomainCheck.TLSRPT)


@dataclass(frozen=True, slots=True)
class Finding:
    check: DomainCheck
    reason: str


@dataclass(frozen=True, slots=True)
class MXHost:
    preference: int
    host: str  # lower case, no trailing dot
    addresses: tuple[str, ...] = ()  # A then AAAA, from our resolver


@dataclass(frozen=True, slots=True)
class MXResult:
    answered: bool  # the MX query got a definitive answer (records, NODATA or NXDOMAIN)
    hosts: tuple[MXHost, ...] = ()  # by preference; at most MAX_MX_HOSTS
    records: int = 0  # MX records published (0 for a null MX)
    null_mx: bool = False  # RFC 7505: a single "0 ."
    exists: bool = True  # False on NXDOMAIN


@dataclass(frozen=True, slots=True)
class SPFResult:
    valid: bool  # one record, known mechanisms, <= 10 DNS lookups, includes resolvable
    lookups: int  # DNS-querying terms, counted through include/redirect (RFC 7208 §4.6.4)
    void_lookups: int = 0
    record: str | None = None  # the domain's own record (clipped)


@dataclass(frozen=True, slots=True)
class DMARCResult:
    valid: bool
    policy: str | None = None  # none | quarantine | reject, when valid
    record: str | None = None


@dataclass(frozen=True, slots=True)
class TLSRPTResult:
    valid: bool
    record: str | None = None


@dataclass(frozen=True, slots=True)
class RecordsResult:
    spf: SPFResult
    dmarc: DMARCResult
    tlsrpt: TLSRPTResult


@dataclass(frozen=True, slots=True)
class MTASTSResult:
    valid: bool  # TXT present, policy fetched over verified HTTPS and parsed
    policy_id: str | None = None  # id= of the _mta-sts TXT record
    policy_changed: bool = False  # id differs from the previous check's (both known)
    mode: str | None = None  # enforce | testing | none
    max_age: int | None = None  # seconds
    mx_patterns: tuple[str, ...] = ()
    mx_match: tuple[tuple[str, bool], ...] = ()  # (MX host, matches a pattern), per MX


@dataclass(frozen=True, slots=True)
class DANEHost:
    mx_host: str
    tlsa_records: int  # at _25._tcp.<mx_host>
    dnssec_validated: bool  # the resolver set the AD bit on the TLSA answer
    match: bool | None  # None without records; False also when no certificate was obtained
    address: str | None = None  # the address whose certificate was checked
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DNSBLEntry:
    mx_host: str
    address: str
    zone: str
    listed: bool
    codes: tuple[str, ...] = ()  # 127.0.0.x answers when listed
    reason: str | None = None  # the zone's TXT explanation, clipped
    error: str | None = None  # refused / timeout / unexpected answer: listed stays False


@dataclass(frozen=True, slots=True)
class DKIMKey:
    """The key record at ``<selector>._domainkey.<domain>`` (RFC 6376 §3.6.1, RFC 8463)."""

    selector: str
    present: bool  # a TXT record at the name (NXDOMAIN / NODATA: False)
    valid: bool = False  # exactly one record, well-formed, a usable key (not revoked, RSA >= 1024)
    key_type: str | None = None  # rsa | ed25519, when the key parsed
    key_size: int | None = None  # bits: the RSA modulus; 256 for ed25519
    testing: bool = False  # t=y: receivers may treat failures as unsigned
    revoked: bool = False  # an empty p=
    record: str | None = None  # the record (clipped)
    error: str | None = None  # the lookup failed: nothing else is known


@dataclass(frozen=True, slots=True)
class ReverseDNS:
    """Reverse DNS of one address: an MX host's (``mx_host`` set) or a configured sending
    address (``mx_host`` None)."""

    address: str
    mx_host: str | None = None
    ptr_names: tuple[str, ...] = ()  # lower case, no trailing dot
    forward_confirmed: bool = False  # a PTR name resolves (A / AAAA) back to the address
    confirmed_name: str | None = None  # the first PTR name that does
    greeting_name: str | None = None  # first word of the 220 greeting (MX addresses)
    ehlo_name: str | None = None  # first word of the 250 EHLO reply
    # The greeting and EHLO names are the forward-confirmed PTR name; None when not
    # compared (a sending address, no greeting read, or no forward-confirmed PTR name).
    name_matches: bool | None = None
    error: str | None = None  # the PTR lookup failed: nothing else is known
    greeting_error: str | None = None  # the greeting could not be read


@dataclass(frozen=True, slots=True)
class DomainResult:
    """One check of one mail domain. ``success`` says whether the domain's DNS could be
    queried at all (the MX lookup got an answer); findings say what is wrong with it."""

    domain: str
    success: bool
    started_at: float  # unix seconds
    duration_seconds: float
    enabled: tuple[DomainCheck, ...]  # checks the module turned on, in DomainCheck order
    findings: tuple[Finding, ...] = ()
    error: str | None = None  # why success is False
    mx: MXResult | None = None
    records: RecordsResult | None = None  # when records: true
    mta_sts: MTASTSResult | None = None  # when mta_sts: true
    dane: tuple[DANEHost, ...] | None = None  # when dane: true, one per MX host
    dnsbl: tuple[DNSBLEntry, ...] | None = None  # when dnsbl zones are set
    dkim: tuple[DKIMKey, ...] | None = None  # when dkim_selectors are set, one per selector
    reverse_dns: tuple[ReverseDNS, ...] | None = None  # MX and sending addresses

    def findings_for(self, check: DomainCheck) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.check is check)

    def finding_counts(self) -> dict[DomainCheck, int]:
        """Findings per enabled check, zeros included (one series per enabled check)."""
        counts = dict.fromkeys(self.enabled, 0)
        for f in self.findings:
            if f.check in counts:
                counts[f.check] += 1
        return counts
