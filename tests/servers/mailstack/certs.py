"""The test CA and its leaf certificates: good, expired, wrong host, and the weak one."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .stack import HOST


@dataclass(frozen=True)
class Certs:
    ca: Path
    good: tuple[Path, Path]  # (key, cert)
    expired: tuple[Path, Path]
    wronghost: tuple[Path, Path]
    weak: tuple[Path, Path] | None = None  # 1024-bit RSA, signed with SHA-1 (weak stacks)


def _new_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    # RSA rather than EC: every client and cipher configuration a probe might use accepts it.
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def make_certs(ca_dir: Path, weak: bool = False) -> Certs:
    """Create a test CA and the good, expired and wrong-host leaf certificates; with
    ``weak`` also a leaf with a 1024-bit RSA key signed with SHA-1."""
    ca_dir.mkdir(mode=0o755)
    now = dt.datetime.now(dt.UTC)
    ca_key = _new_key()
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smtp-health-exporter tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"mailstack test CA {ca_dir.parent.name}"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        # Starts before the expired leaf so that expiry is that leaf's only defect.
        .not_valid_before(dt.datetime(2019, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_dir / "ca.pem"
    ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    ca_pem.chmod(0o644)
    _write_key(ca_dir / "ca.key", ca_key)

    local_names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address(HOST)),
    ]

    def leaf(
        name: str,
        cn: str,
        sans: list[x509.GeneralName],
        start: dt.datetime,
        end: dt.datetime,
        bits: int = 2048,
        digest: hashes.HashAlgorithm | None = None,
    ) -> tuple[Path, Path]:
        key = _new_key(bits)
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smtp-health-exporter tests"),
                        x509.NameAttribute(NameOID.COMMON_NAME, cn),
                    ]
                )
            )
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(ca_key, digest or hashes.SHA256())
        )
        key_path, crt_path = ca_dir / f"{name}.key", ca_dir / f"{name}.crt"
        _write_key(key_path, key)
        crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        crt_path.chmod(0o644)
        return key_path, crt_path

    day = dt.timedelta(days=1)
    return Certs(
        ca=ca_pem,
        good=leaf("good", "localhost", local_names, now - day, now + 365 * day),
        expired=leaf(
            "expired",
            "localhost",
            local_names,
            dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
            dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
        ),
        wronghost=leaf(
            "wronghost",
            "wrong.example",
            [x509.DNSName("wrong.example")],
            now - day,
            now + 365 * day,
        ),
        weak=_weak_leaf(ca_dir, local_names) if weak else None,
    )


def signed_with_sha1(crt: Path) -> bool:
    digest = x509.load_pem_x509_certificate(crt.read_bytes()).signature_hash_algorithm
    return digest is not None and digest.name == "sha1"


def _weak_leaf(ca_dir: Path, sans: list[x509.GeneralName]) -> tuple[Path, Path]:
    """A 1024-bit RSA leaf signed with SHA-1 by the test CA. pyca/cryptography no longer
    signs with SHA-1, so the openssl command line does (``-copy_extensions``: OpenSSL 3);
    where it cannot, the leaf is signed with SHA-256 (``MailStack.weak_sha1`` says which)."""
    key = _new_key(1024)
    key_path, crt_path = ca_dir / "weak.key", ca_dir / "weak.crt"
    _write_key(key_path, key)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    csr_path = ca_dir / "weak.csr"
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    for digest in ("-sha1", "-sha256"):
        cmd = ["openssl", "x509", "-req", "-in", str(csr_path), "-CA", str(ca_dir / "ca.pem")]
        cmd += ["-CAkey", str(ca_dir / "ca.key"), digest, "-days", "365", "-copy_extensions"]
        cmd += ["copy", "-set_serial", str(x509.random_serial_number()), "-out", str(crt_path)]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(cmd, capture_output=True, timeout=30, check=True)
            break
    else:
        raise RuntimeError("openssl x509 -req cannot sign the weak certificate")
    crt_path.chmod(0o644)
    return key_path, crt_path
