"""The probe reuses chain facts and verdicts, but never past a certificate's dates or a
change of the trust store."""

from __future__ import annotations

import datetime as dt
import os
import time

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from exporter.net import tls


def _chain(leaf: trustme.LeafCert) -> tuple[bytes, ...]:
    return tuple(
        x509.load_pem_x509_certificate(p.bytes()).public_bytes(Encoding.DER)
        for p in leaf.cert_chain_pems
    )


def _verdict(ders: tuple[bytes, ...], name: str, ca_file: str) -> tuple[bool, str | None]:
    infos, certs, error = tls._parse_chain(ders)
    assert error is None and infos
    return tls._verdicts.verify(ders, certs, name, ca_file)


class SteppedClock:
    """A wall clock that moves only when the test sets it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_cached_verdict_ends_when_the_certificate_expires(tmp_path):
    """A verdict is cached for VERDICT_TTL, but never past the leaf's notAfter: stepped
    across that date, the same chain is verified again and reads as expired."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    start = time.time()
    # Well inside VERDICT_TTL, so only the certificate's date can end the cached verdict.
    expiry = dt.datetime.fromtimestamp(int(start) + tls.VERDICT_TTL / 2, dt.UTC)
    ders = _chain(ca.issue_cert("mx.example.test", not_after=expiry))
    infos, certs, error = tls._parse_chain(ders)
    assert error is None and infos
    clock = SteppedClock(start)
    verdicts = tls._Verdicts(clock=clock)

    def verdict() -> tuple[bool, str | None]:
        return verdicts.verify(ders, certs, "mx.example.test", str(ca_file))

    assert verdict() == (True, None)
    clock.now = expiry.timestamp() - 1
    assert verdict() == (True, None)  # cached, and still true
    clock.now = expiry.timestamp() + 1
    ok, error = verdict()
    assert not ok and error is not None and "expired" in error, error


def test_a_changed_trust_store_is_seen_at_once(tmp_path):
    ca, other = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ders = _chain(ca.issue_cert("mx.example.test"))
    assert _verdict(ders, "mx.example.test", str(ca_file)) == (True, None)
    other.cert_pem.write_to_path(str(ca_file))
    stat = ca_file.stat()
    # Make sure the modification time moves even on a coarse-grained file system.
    os.utime(ca_file, (stat.st_atime, stat.st_mtime + 2))
    ok, error = _verdict(ders, "mx.example.test", str(ca_file))
    assert not ok and error


def test_the_name_is_part_of_the_key(tmp_path):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ders = _chain(ca.issue_cert("mx.example.test"))
    assert _verdict(ders, "mx.example.test", str(ca_file)) == (True, None)
    ok, _ = _verdict(ders, "other.example.test", str(ca_file))
    assert not ok
