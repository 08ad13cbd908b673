"""The domain checks' results live with the other results (``exporter.results.domain``), so
that the store and the renderer can hold them without importing the checks; importable from
here too."""

from ..results.domain import (
    RECORD_CHECKS,
    DANEHost,
    DKIMKey,
    DMARCResult,
    DNSBLEntry,
    DomainCheck,
    DomainResult,
    Finding,
    MTASTSResult,
    MXHost,
    MXResult,
    RecordsResult,
    ReverseDNS,
    SPFResult,
    TLSRPTResult,
)

__all__ = [
    "RECORD_CHECKS",
    "DANEHost",
    "DKIMKey",
    "DMARCResult",
    "DNSBLEntry",
    "DomainCheck",
    "DomainResult",
    "Finding",
    "MTASTSResult",
    "MXHost",
    "MXResult",
    "RecordsResult",
    "ReverseDNS",
    "SPFResult",
    "TLSRPTResult",
]
