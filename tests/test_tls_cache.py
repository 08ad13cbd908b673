"""The probe reuses chain facts and verdicts, but never past a certificate's dates or a
change of the trust store."""

from __future__ import annotations

import datetime as dt
import os
import time

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from exporter.probe import tls


def _chain(leaf: trustme.LeafCert) -> tuple[bytes, ...]:
    return tuple(
        x509.load_pem_x509_certificate(p.bytes()).public_bytes(Encoding.DER)
        for p in leaf.cert_chain_pems
    )


def _verdict(ders: tuple[bytes, ...], name: str, ca_file: str) -> tuple[bool, str | None]:
    infos, certs, error = tls._parse_chain(ders)
    assert error is None and infos
    return tls._verdicts.verify(ders, certs, name, ca_file)


def test_a_cached_verdict_ends_when_the_certificate_expires(tmp_path):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    ders = _chain(ca.issue_cert("mx.example.test", not_after=soon))
    assert _verdict(ders, "mx.example.test", str(ca_file)) == (True, None)
    assert _verdict(ders, "mx.example.test", str(ca_file)) == (True, None)  # cached
    time.sleep(max(0.0, soon.timestamp() - time.time()) + 1.1)
    ok, error = _verdict(ders, "mx.example.test", str(ca_file))
    assert not ok and error is not None and "expired" in error


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
