"""A real Postfix + Dovecot on 127.0.0.1 high ports, for pytest fixtures.

Everything (certificates, configs, queue, mail, logs) lives in one private work
directory; the system's /etc/postfix and /etc/dovecot configs are neither used nor
written; ``postfix -c`` only reads Postfix's meta files (postfix-files, dynamicmaps.cf)
from /etc/postfix, as it always does.
Needs root (the Postfix and Dovecot masters must start as root) and Linux (/proc).

Layout of ``MailStack.workdir``::

    ca/                  ca.pem (the test CA), {good,expired,wronghost}.{key,crt}
    postfix-etc/         main.cf, master.cf, vmailbox    (config_directory)
    postfix-spool/       queue_directory (pid/master.pid)
    postfix-data/        data_directory
    dovecot/             dovecot.conf, users, run/ (base_dir), state/
    sasl/auth            Dovecot auth socket used by Postfix for SMTP AUTH
    mail/<user>/Maildir  delivered mail (owned by nobody)
    logs/                postfix.log, dovecot.log, *-start.log

Set ``MAILSTACK_KEEP=1`` to keep a work directory that ``mail_stack()`` created
itself (it is removed after a clean stop otherwise).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import grp
import ipaddress
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["MailStack", "mail_stack", "postfix_available"]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAIL_DOMAIN = "localhost"
USERS: dict[str, str] = {"canary": "canary-pass", "probe": "probe-pass"}

# Mail is stored as an existing unprivileged account so no system user has to be created.
VMAIL_USER = "nobody"

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

# Candidate locations of Dovecot's IMAP binary (Debian/Ubuntu, then Fedora/Arch style).
_DOVECOT_IMAP_BINARIES = ("/usr/lib/dovecot/imap", "/usr/libexec/dovecot/imap")
# sun_path is 108 bytes; leave room for the longest socket name Dovecot puts in base_dir.
_MAX_WORKDIR_LEN = 70
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class MailStack:
    """Addresses, credentials and paths of a running Postfix + Dovecot test stack."""

    workdir: Path
    ca_file: Path  # PEM of the test CA
    host: str  # "127.0.0.1"
    mx_port: int  # plain SMTP, STARTTLS offered (may), no AUTH
    submission_port: int  # STARTTLS required, SASL PLAIN+LOGIN, AUTH only after TLS
    smtps_port: int  # implicit TLS (wrappermode) + SASL
    expired_port: int  # like submission but presents the expired cert
    wronghost_port: int  # like submission but presents the wrong-host cert
    imap_port: int  # Dovecot IMAP with STARTTLS
    imaps_port: int  # Dovecot IMAPS
    users: dict[str, str]  # {"canary": "canary-pass", "probe": "probe-pass"}
    maildir_root: Path  # delivered mail lands in maildir_root/<user>/Maildir
    weak: bool = False  # started with weak=True (see mail_stack)
    weak_sha1: bool = False  # the weak stack's certificate really is signed with SHA-1


# --------------------------------------------------------------------------- availability


def _version_tuple(text: str) -> tuple[int, ...]:
    m = re.match(r"(\d+)\.(\d+)", text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else ()


def postfix_available() -> str | None:
    """Return None if a real Postfix + Dovecot stack can be started here.

    Otherwise return a human-readable reason, suitable for ``pytest.skip``.
    """
    if not sys.platform.startswith("linux"):
        return f"needs Linux (/proc), this is {sys.platform}"
    if os.geteuid() != 0:
        return "needs root: the Postfix and Dovecot master processes must start as root"
    missing = [b for b in ("postfix", "postconf", "dovecot", "doveadm") if not shutil.which(b)]
    if missing:
        return (
            f"missing binaries {', '.join(missing)} "
            "(apt-get install -y postfix dovecot-core dovecot-imapd)"
        )
    if not any(os.access(p, os.X_OK) for p in _DOVECOT_IMAP_BINARIES):
        return "Dovecot IMAP server not installed (apt-get install -y dovecot-imapd)"
    for user in ("postfix", "dovecot", "dovenull", VMAIL_USER):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"system user {user!r} missing (broken postfix/dovecot install?)"
    try:
        grp.getgrnam("postdrop")
    except KeyError:
        return "group 'postdrop' missing (broken postfix install?)"
    try:
        pf = subprocess.run(
            ["postconf", "-d", "-h", "mail_version", "daemon_directory"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
        dc = subprocess.run(
            ["dovecot", "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot query postfix/dovecot versions: {exc}"
    if len(pf) < 2 or _version_tuple(pf[0]) < (3, 4):
        # smtpd_tls_chain_files and start-up behaviour used here need Postfix >= 3.4.
        return f"Postfix >= 3.4 needed, found {pf[0] if pf else 'unknown'}"
    if not os.access(os.path.join(pf[1], "master"), os.X_OK):
        return f"Postfix master not found in daemon_directory {pf[1]}"
    if _version_tuple(dc)[:2] != (2, 3):
        # Dovecot 2.4 changed the configuration syntax incompatibly.
        return f"Dovecot 2.3.x needed (config syntax), found {dc.strip() or 'unknown'}"
    return None


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class _Certs:
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


def _make_certs(ca_dir: Path, weak: bool = False) -> _Certs:
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
    return _Certs(
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


def _signed_with_sha1(crt: Path) -> bool:
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


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class _Ports:
    mx: int
    submission: int
    smtps: int
    expired: int
    wronghost: int
    imap: int
    imaps: int


def _free_ports(n: int) -> list[int]:
    """Ask the kernel for n distinct free loopback ports.

    All sockets stay open until every port is picked, so the kernel cannot hand out
    the same port twice; the small race until the daemons bind is covered by a retry.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class _Layout:
    workdir: Path

    @property
    def ca_dir(self) -> Path:
        return self.workdir / "ca"

    @property
    def pf_etc(self) -> Path:
        return self.workdir / "postfix-etc"

    @property
    def pf_spool(self) -> Path:
        return self.workdir / "postfix-spool"

    @property
    def pf_data(self) -> Path:
        return self.workdir / "postfix-data"

    @property
    def pf_pidfile(self) -> Path:
        return self.pf_spool / "pid" / "master.pid"

    @property
    def dc_dir(self) -> Path:
        return self.workdir / "dovecot"

    @property
    def dc_conf(self) -> Path:
        return self.dc_dir / "dovecot.conf"

    @property
    def dc_run(self) -> Path:
        return self.dc_dir / "run"

    @property
    def dc_pidfile(self) -> Path:
        return self.dc_run / "master.pid"

    @property
    def sasl_socket(self) -> Path:
        return self.workdir / "sasl" / "auth"

    @property
    def mail_dir(self) -> Path:
        return self.workdir / "mail"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"


def _write_dovecot_config(lay: _Layout, certs: _Certs, ports: _Ports, uid: int, gid: int) -> None:
    lay.dc_dir.mkdir(mode=0o755)
    lay.dc_run.mkdir(mode=0o755)
    (lay.dc_dir / "state").mkdir(mode=0o755)
    users = lay.dc_dir / "users"
    users.write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in USERS.items()))
    # The auth process runs as user dovecot and must read the passwd-file.
    os.chown(users, 0, grp.getgrnam("dovecot").gr_gid)
    users.chmod(0o640)
    dh = Path("/usr/share/dovecot/dh.pem")
    dh_line = f"ssl_dh = <{dh}" if dh.is_file() else ""
    key, crt = certs.good
    lay.dc_conf.write_text(
        f"""\
# Generated by tests/servers/mailstack.py -- standalone, does not include /etc/dovecot.
instance_name = {lay.workdir.name}
base_dir = {lay.dc_run}
state_dir = {lay.dc_dir / "state"}
protocols = imap
listen = {HOST}
log_path = {lay.log_dir / "dovecot.log"}
info_log_path = {lay.log_dir / "dovecot.log"}
auth_verbose = yes

ssl = yes
ssl_cert = <{crt}
ssl_key = <{key}
{dh_line}
ssl_min_protocol = TLSv1.2
# Has no effect for 127.0.0.1 clients: Dovecot counts loopback as secure, so LOGIN
# works before STARTTLS there (no LOGINDISABLED capability).
disable_plaintext_auth = yes
auth_mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256

mail_location = maildir:{lay.mail_dir}/%n/Maildir
first_valid_uid = 100
first_valid_gid = 1

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {users}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={lay.mail_dir}/%n
}}

service imap-login {{
  # No chroot: containers often lack CAP_SYS_CHROOT and the login dir is not needed.
  chroot =
  inet_listener imap {{
    address = {HOST}
    port = {ports.imap}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {ports.imaps}
    ssl = yes
  }}
}}

# No per-IP auth penalty: every client here is 127.0.0.1, so one failed-login test
# would slow all later logins of the session by 2-15 s.  (The fixed 2 s
# auth_failure_delay on each failed attempt stays, as on real servers.)
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

# SASL rendezvous for Postfix (smtpd_sasl_type = dovecot).  Outside the Postfix
# queue dir so Dovecot does not depend on Postfix having created it first.
service auth {{
  unix_listener {lay.sasl_socket} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""
    )


# The weak profile: what issue #9's posture checks must find. OpenSSL 3 refuses a 1024-bit
# key, SHA-1 and TLS < 1.2 at its default security level (Debian: 2) when the key is
# loaded, before any Postfix cipher list applies, so the level is lowered for the whole
# instance through its own OpenSSL config (tls_config_file, Postfix >= 3.2).
_WEAK_OPENSSL_CNF = """\
postfix = postfix_settings
[postfix_settings]
ssl_conf = postfix_ssl
[postfix_ssl]
system_default = postfix_tls
[postfix_tls]
CipherString = ALL:@SECLEVEL=0
MinProtocol = TLSv1
"""
# TLS 1.0-1.2 only, plain-RSA key exchange preferred (so a client that offers it gets no
# forward secrecy), AUTH before STARTTLS, and relaying for loopback clients.
_WEAK_MAIN_CF = """
# --- weak profile (mail_stack(weak=True)) ---
tls_config_file = {cnf}
tls_config_name = postfix
smtpd_tls_protocols = >=TLSv1, <=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1, <=TLSv1.2
smtpd_tls_ciphers = medium
smtpd_tls_mandatory_ciphers = medium
tls_medium_cipherlist = kRSA:ALL:!aNULL:@SECLEVEL=0
tls_preempt_cipherlist = yes
"""


def _write_postfix_config(
    lay: _Layout, certs: _Certs, ports: _Ports, uid: int, gid: int, weak: bool = False
) -> None:
    for d in (lay.pf_etc, lay.pf_spool):
        d.mkdir(mode=0o755)
    lay.pf_data.mkdir(mode=0o700)
    pf_uid = pwd.getpwnam("postfix").pw_uid
    os.chown(lay.pf_data, pf_uid, grp.getgrnam("postfix").gr_gid)
    (lay.pf_etc / "vmailbox").write_text(
        "".join(f"{u}@{MAIL_DOMAIN}    {u}/Maildir/\n" for u in USERS)
    )
    tls_key, tls_crt = (certs.weak if weak else None) or certs.good
    # The weak stack relays for loopback (an open relay, found by the posture check).
    # Postfix refuses at RCPT what would go to an error: transport, so its outside
    # mail goes to discard: instead; the probe never sends DATA anyway.
    mynetworks = "127.0.0.0/8" if weak else ""
    no_relay = "discard:" if weak else "error:5.7.1 mailstack does not relay"
    (lay.pf_etc / "main.cf").write_text(
        f"""\
# Generated by tests/servers/mailstack.py -- run with: postfix -c {lay.pf_etc} start
compatibility_level = 3.6
config_directory = {lay.pf_etc}
queue_directory = {lay.pf_spool}
data_directory = {lay.pf_data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = {HOST}
inet_protocols = ipv4
myhostname = mail.mailstack.test
mydomain = mailstack.test
myorigin = $myhostname
smtpd_banner = $myhostname ESMTP mailstack
syslog_name = postfix-mailstack
biff = no
append_dot_mydomain = no
readme_directory = no

# No syslog in containers: log to a file through postlogd, which only writes
# below maillog_file_prefixes.
maillog_file_prefixes = {lay.log_dir}
maillog_file = {lay.log_dir / "postfix.log"}

# No local(8) delivery and no relaying: nothing ever leaves the box.
mydestination =
mynetworks = {mynetworks}
relayhost =
alias_maps =
alias_database =
local_transport = error:5.1.1 no local delivery in mailstack
default_transport = {no_relay}
relay_transport = {no_relay}

virtual_mailbox_domains = {MAIL_DOMAIN}
virtual_mailbox_base = {lay.mail_dir}
virtual_mailbox_maps = texthash:{lay.pf_etc / "vmailbox"}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 100

smtpd_tls_chain_files = {tls_key}, {tls_crt}
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtp_tls_security_level = none

smtpd_sasl_type = dovecot
# Absolute path works because no service is chrooted.
smtpd_sasl_path = {lay.sasl_socket}
smtpd_sasl_auth_enable = no
smtpd_sasl_security_options = noanonymous
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
"""
    )
    if not weak:  # explicit, not left to the OpenSSL build's default security level
        with (lay.pf_etc / "main.cf").open("a") as fh:
            fh.write("smtpd_tls_protocols = >=TLSv1.2\nsmtpd_tls_mandatory_protocols = >=TLSv1.2\n")
    if weak:
        assert certs.weak is not None
        cnf = lay.pf_etc / "openssl.cnf"
        cnf.write_text(_WEAK_OPENSSL_CNF)
        with (lay.pf_etc / "main.cf").open("a") as fh:
            fh.write(_WEAK_MAIN_CF.format(cnf=cnf))

    submission_opts = """\
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
"""
    if weak:  # AUTH offered and taken before STARTTLS
        submission_opts = """\
  -o smtpd_tls_security_level=may
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=no
"""
    exp_key, exp_crt = certs.expired
    wr_key, wr_crt = certs.wronghost
    # chroot "n" everywhere: the queue dir has no /etc, /lib or resolver files.
    (lay.pf_etc / "master.cf").write_text(
        f"""\
# Generated by tests/servers/mailstack.py
# service type  private unpriv  chroot  wakeup  maxproc command + args
{HOST}:{ports.mx} inet n - n - - smtpd
  -o syslog_name=postfix-mailstack/mx
  -o smtpd_tls_security_level=may
  -o smtpd_sasl_auth_enable=no
{HOST}:{ports.submission} inet n - n - - smtpd
  -o syslog_name=postfix-mailstack/submission
{submission_opts}\
{HOST}:{ports.smtps} inet n - n - - smtpd
  -o syslog_name=postfix-mailstack/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
{HOST}:{ports.expired} inet n - n - - smtpd
  -o syslog_name=postfix-mailstack/expired
  -o smtpd_tls_chain_files={exp_key},{exp_crt}
{submission_opts}\
{HOST}:{ports.wronghost} inet n - n - - smtpd
  -o syslog_name=postfix-mailstack/wronghost
  -o smtpd_tls_chain_files={wr_key},{wr_crt}
{submission_opts}\
pickup     unix  n  -  n  60     1  pickup
cleanup    unix  n  -  n  -      0  cleanup
qmgr       unix  n  -  n  300    1  qmgr
tlsmgr     unix  -  -  n  1000?  1  tlsmgr
rewrite    unix  -  -  n  -      -  trivial-rewrite
bounce     unix  -  -  n  -      0  bounce
defer      unix  -  -  n  -      0  bounce
trace      unix  -  -  n  -      0  bounce
verify     unix  -  -  n  -      1  verify
flush      unix  n  -  n  1000?  0  flush
proxymap   unix  -  -  n  -      -  proxymap
proxywrite unix  -  -  n  -      1  proxymap
smtp       unix  -  -  n  -      -  smtp
relay      unix  -  -  n  -      -  smtp
showq      unix  n  -  n  -      -  showq
error      unix  -  -  n  -      -  error
retry      unix  -  -  n  -      -  error
discard    unix  -  -  n  -      -  discard
local      unix  -  n  n  -      -  local
virtual    unix  -  n  n  -      -  virtual
lmtp       unix  -  -  n  -      -  lmtp
anvil      unix  -  -  n  -      1  anvil
scache     unix  -  -  n  -      1  scache
postlog    unix-dgram n - n - 1 postlogd
"""
    )


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class _Proc:
    pid: int
    starttime: int  # clock ticks since boot; with pid it identifies a process uniquely
    cmdline: bytes

    def __str__(self) -> str:
        args = self.cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        return f"{self.pid} ({args})"


def _read_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of pid, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses; everything after the last ")" is safe.
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[19])


def _read_cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _proc_of(pid: int) -> _Proc | None:
    st = _read_stat(pid)
    return None if st is None else _Proc(pid, st[2], _read_cmdline(pid))


def _same_process(p: _Proc) -> bool:
    """True if p still exists and is not a zombie (guards against recycled PIDs)."""
    st = _read_stat(p.pid)
    return st is not None and st[2] == p.starttime and st[0] != "Z"


def _descendants(roots: list[_Proc]) -> list[_Proc]:
    """The given processes (if still the same) and all their descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _read_stat(int(entry))
            if st is not None:
                children.setdefault(st[1], []).append(int(entry))
    found: list[_Proc] = []
    todo = [r.pid for r in roots if _same_process(r)]
    while todo:
        pid = todo.pop()
        p = _proc_of(pid)
        if p is not None:
            found.append(p)
            todo.extend(children.get(pid, []))
    return found


def _read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class _Subreaper:
    """Make this process the reaper of orphaned stack processes while stacks run.

    Both masters daemonize, and when they exit their children are orphaned.  In
    containers PID 1 often never reaps, leaving ``<defunct>`` entries forever; as a
    child subreaper we inherit those orphans and reap them ourselves (only the PIDs
    we recorded, so subprocess.Popen objects elsewhere keep their exit statuses).
    """

    _lock = threading.Lock()
    _users = 0

    @classmethod
    def _set(cls, on: bool) -> None:
        ulong = ctypes.c_ulong
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            # prctl is variadic over unsigned long: pass full-width arguments.
            rc = libc.prctl(
                ctypes.c_int(_PR_SET_CHILD_SUBREAPER), ulong(int(on)), ulong(0), ulong(0), ulong(0)
            )
        except (OSError, AttributeError):
            rc = -1
        if rc != 0:
            log.warning("mailstack: cannot become child subreaper; zombies may stay behind")

    @classmethod
    def acquire(cls) -> None:
        with cls._lock:
            if cls._users == 0:
                cls._set(True)
            cls._users += 1

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._users -= 1
            if cls._users == 0:
                cls._set(False)


def _reap(procs: list[_Proc]) -> None:
    """waitpid() those of procs that are now zombie children of ours, and only those.

    Checking the start time first means a recycled PID (say, another Popen's child)
    is never reaped behind its owner's back.
    """
    me = os.getpid()
    for p in procs:
        st = _read_stat(p.pid)
        if st is not None and st == ("Z", me, p.starttime):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p.pid, os.WNOHANG)


def _wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _run_logged(
    cmd: list[str], logfile: Path, timeout: float, poll: Callable[[], object] | None = None
) -> int:
    """Run cmd with stdio redirected to logfile; return its exit status (-1: timed out).

    Never capture a daemon's output through pipes: a daemonized master inherits and
    keeps them open, and reading would block until it exits.  ``poll`` is called
    while waiting (used to reap our zombies: ``doveadm stop`` polls the master with
    kill(pid, 0), which keeps succeeding on an unreaped zombie).
    """
    with logfile.open("ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    proc.kill()
                    proc.wait()
                    out.write(f"timed out after {timeout}s\n".encode())
                    return -1
                if poll is not None:
                    poll()


_PROBLEM = re.compile(r"fatal|panic|error|warning", re.IGNORECASE)


def _tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, preceded by its last problem lines.

    Readiness polling floods the logs with connect/disconnect noise, which would
    push the one line that explains a failure out of a plain tail.
    """
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"--- {path.name}: (missing)"
    problems = list(dict.fromkeys(ln for ln in text if _PROBLEM.search(ln)))[-10:]
    out = [f"--- {path.name}:"]
    if problems:
        out += ["  problems (last 10 distinct):", *problems, f"  last {lines} lines:"]
    return "\n".join([*out, *text[-lines:]])


# --------------------------------------------------------------------------- readiness


def _read_line(sock: socket.socket | ssl.SSLSocket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        buf += chunk
    return buf


def _greets(port: int, prefix: bytes, tls: ssl.SSLContext | None) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as raw:
            if tls is None:
                return _read_line(raw).startswith(prefix)
            with tls.wrap_socket(raw, server_hostname=HOST) as s:
                return _read_line(s).startswith(prefix)
    except (OSError, ssl.SSLError):
        return False


def _wait_ready(
    ports: _Ports, ca_file: Path, deadline: float, running: Callable[[], bool], weak: bool = False
) -> list[str]:
    """Wait until every listener greets; return the names of those that never did.

    Gives up early once ``running()`` is false (a master died: no point waiting).
    """
    ctx = ssl.create_default_context(cafile=str(ca_file))
    smtps_ctx = ctx
    if weak:  # its 1024-bit, SHA-1 signed certificate verifies at no default security level
        smtps_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        smtps_ctx.check_hostname = False
        smtps_ctx.verify_mode = ssl.CERT_NONE
        smtps_ctx.set_ciphers("ALL:@SECLEVEL=0")
    checks: dict[str, tuple[int, bytes, ssl.SSLContext | None]] = {
        "mx": (ports.mx, b"220", None),
        "submission": (ports.submission, b"220", None),
        "expired": (ports.expired, b"220", None),
        "wronghost": (ports.wronghost, b"220", None),
        "smtps": (ports.smtps, b"220", smtps_ctx),
        "imap": (ports.imap, b"* OK", None),
        "imaps": (ports.imaps, b"* OK", ctx),
    }
    pending = dict(checks)
    while pending and time.monotonic() < deadline and running():
        for name, (port, prefix, tls) in list(pending.items()):
            if _greets(port, prefix, tls):
                del pending[name]
        if pending:
            time.sleep(0.1)
    return [f"{n} ({HOST}:{p[0]})" for n, p in pending.items()]


# --------------------------------------------------------------------------- start / stop


@dataclass
class _Runtime:
    lay: _Layout
    masters: list[_Proc] = field(default_factory=list)


def _gone(p: _Proc) -> bool:
    """True once p has exited and is reaped, or is a zombie someone else must reap."""
    st = _read_stat(p.pid)
    return st is None or st[2] != p.starttime or (st[0] == "Z" and st[1] != os.getpid())


def _stop(rt: _Runtime) -> None:
    """Stop Postfix then Dovecot, kill what is left of them, reap the orphans.

    Never raises: it runs in ``finally`` blocks and must get as far as it can.
    """
    lay = rt.lay
    t0 = time.monotonic()
    # Snapshot first: once the masters are gone their children are no longer findable.
    # The masters themselves are always included so that even crashed ones get reaped.
    known = {p.pid: p for p in [*rt.masters, *_descendants(rt.masters)]}
    procs = list(known.values())
    try:
        for pidfile, cmd in (
            (lay.pf_pidfile, ["postfix", "-c", str(lay.pf_etc), "stop"]),
            (lay.dc_pidfile, ["doveadm", "-c", str(lay.dc_conf), "stop"]),
        ):
            pid = _read_pidfile(pidfile)
            master = known.get(pid) if pid else None
            if master is None or not _same_process(master):
                continue
            _run_logged(cmd, lay.log_dir / "stop.log", STOP_TIMEOUT, lambda: _reap(procs))
            if not _wait_until(lambda m=master: not _same_process(m), STOP_TIMEOUT):
                log.warning("mailstack: %s did not stop pid %d", cmd[0], master.pid)
    except Exception:
        log.exception("mailstack: graceful stop failed; killing recorded processes")
    # Children outlive their master briefly (Dovecot's log process drains its pipes
    # first); give them a moment and reap them as they go before resorting to signals.
    _wait_until(lambda: (_reap(procs), all(_gone(p) for p in procs))[1], 2.0)
    # Anything recorded that survived: kill it, but only if /proc says it is still the
    # very process we recorded (same start time and command line), never a recycled PID.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in procs if _same_process(p) and _read_cmdline(p.pid) == p.cmdline]
        if not alive:
            break
        log.warning("mailstack: sending %s to %s", sig.name, [str(p) for p in alive])
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)
        _wait_until(lambda a=alive: not any(_same_process(p) for p in a), 3.0)
    # Orphans are reparented to us (subreaper) a moment after their parent dies.
    _wait_until(lambda: (_reap(procs), all(_gone(p) for p in procs))[1], 2.0)
    leftover = [p.pid for p in procs if not _gone(p)]
    if leftover:
        log.warning("mailstack: processes not gone after stop: %s", leftover)
    log.info("mailstack: stopped %s in %.1fs", lay.workdir, time.monotonic() - t0)


def _check_traversable(path: Path) -> None:
    """Postfix (as postfix/nobody) and Dovecot (as dovecot) must reach files in path."""
    for p in [path, *path.parents]:
        if not os.stat(p).st_mode & 0o001:
            raise RuntimeError(
                f"{p} is not traversable by other users (mode {oct(os.stat(p).st_mode)[-4:]}); "
                "the stack's daemons run as postfix/dovecot/nobody and need o+x on every "
                "parent of the work directory. Use a directory under /tmp."
            )
    if len(str(path)) > _MAX_WORKDIR_LEN:
        raise RuntimeError(
            f"work directory path {path} is too long for UNIX socket names "
            f"(max {_MAX_WORKDIR_LEN} characters); use a shorter base directory"
        )


def _start(workdir: Path, rt: _Runtime, weak: bool = False) -> MailStack:
    lay = rt.lay
    t0 = time.monotonic()
    lay.log_dir.mkdir(mode=0o755)
    (lay.workdir / "sasl").mkdir(mode=0o755)
    vmail = pwd.getpwnam(VMAIL_USER)
    for user in USERS:
        for sub in ("cur", "new", "tmp"):
            (lay.mail_dir / user / "Maildir" / sub).mkdir(parents=True)
    for dirpath, _dirs, _files in os.walk(lay.mail_dir):
        os.chown(dirpath, vmail.pw_uid, vmail.pw_gid)
    lay.mail_dir.chmod(0o755)

    certs = _make_certs(lay.ca_dir, weak)
    ports = _Ports(*_free_ports(7))
    _write_dovecot_config(lay, certs, ports, vmail.pw_uid, vmail.pw_gid)
    _write_postfix_config(lay, certs, ports, vmail.pw_uid, vmail.pw_gid, weak)
    # Postfix re-reads a table file until its mtime is >= 2 s older than the start of
    # the read ("pausing to let it finish writing"); freshly written configs would cost
    # ~2 s per start.  Backdating them is harmless: nothing else looks at the mtimes.
    past = time.time() - 60
    for f in lay.pf_etc.iterdir():
        os.utime(f, (past, past))
    t_cfg = time.monotonic()

    # Dovecot first: Postfix's SMTP AUTH talks to its auth socket.
    dc_cmd = ["dovecot", "-c", str(lay.dc_conf)]
    if _run_logged(dc_cmd, lay.log_dir / "dovecot-start.log", START_TIMEOUT) != 0:
        raise RuntimeError("dovecot failed to start")
    _wait_until(lambda: _read_pidfile(lay.dc_pidfile) is not None, 5.0)
    dc_pid = _read_pidfile(lay.dc_pidfile)
    dc = _proc_of(dc_pid) if dc_pid else None
    if dc is None:
        raise RuntimeError("dovecot started but wrote no live master.pid")
    rt.masters.append(dc)

    # "postfix start" returns only after the master has initialised (master -w).
    pf_cmd = ["postfix", "-c", str(lay.pf_etc), "start"]
    if _run_logged(pf_cmd, lay.log_dir / "postfix-start.log", START_TIMEOUT) != 0:
        raise RuntimeError("postfix failed to start")
    pf_pid = _read_pidfile(lay.pf_pidfile)
    pf = _proc_of(pf_pid) if pf_pid else None
    if pf is None:
        raise RuntimeError("postfix started but wrote no live master.pid")
    rt.masters.append(pf)

    not_ready = _wait_ready(
        ports,
        certs.ca,
        time.monotonic() + START_TIMEOUT,
        lambda: all(_same_process(m) for m in rt.masters),
        weak,
    )
    if not_ready:
        raise RuntimeError(f"listeners never answered: {', '.join(not_ready)}")
    log.info(
        "mailstack: up in %.1fs (certs+configs %.1fs) in %s",
        time.monotonic() - t0,
        t_cfg - t0,
        workdir,
    )
    return MailStack(
        workdir=workdir,
        ca_file=certs.ca,
        host=HOST,
        mx_port=ports.mx,
        submission_port=ports.submission,
        smtps_port=ports.smtps,
        expired_port=ports.expired,
        wronghost_port=ports.wronghost,
        imap_port=ports.imap,
        imaps_port=ports.imaps,
        users=dict(USERS),
        maildir_root=lay.mail_dir,
        weak=weak,
        weak_sha1=certs.weak is not None and _signed_with_sha1(certs.weak[1]),
    )


def _start_failure_report(lay: _Layout, exc: Exception) -> str:
    logs = ("dovecot-start.log", "dovecot.log", "postfix-start.log", "postfix.log")
    return f"mail stack failed to start: {exc}\nwork directory: {lay.workdir}\n" + "\n".join(
        _tail(lay.log_dir / name) for name in logs
    )


def _port_clash(lay: _Layout) -> bool:
    """True if start-up failed because another process grabbed one of our ports."""
    for name in ("dovecot-start.log", "dovecot.log", "postfix-start.log", "postfix.log"):
        with contextlib.suppress(OSError):
            text = (lay.log_dir / name).read_text(errors="replace")
            if os.strerror(errno.EADDRINUSE) in text:
                return True
    return False


@contextlib.contextmanager
def mail_stack(base: Path | None = None, *, weak: bool = False) -> Iterator[MailStack]:
    """Start Dovecot then Postfix on free 127.0.0.1 ports and yield a MailStack.

    ``weak=True`` starts a deliberately weak Postfix instead of the hardened one: AUTH
    offered and accepted before STARTTLS on the submission ports, an open relay for
    127.0.0.0/8, TLS 1.0 to 1.2 (no 1.3) preferring plain-RSA key exchange, and a 1024-bit
    RSA certificate signed with SHA-1 (Dovecot keeps the good certificate).

    The work directory is a fresh ``mailstack-*`` directory under ``base`` (default
    /tmp); every parent must be traversable by other users, so do not pass pytest's
    0700 tmp dirs.  Start-up waits until every listener answers (SMTP 220, TLS
    handshake on implicit-TLS ports, IMAP OK).  On exit both daemons are stopped and
    reaped.  A directory created under the default base is removed after a clean stop
    unless MAILSTACK_KEEP=1; with an explicit base it is kept.

    Raises RuntimeError with the last lines of the logs if start-up fails; the work
    directory is then kept for inspection.
    """
    attempts = 3
    for attempt in range(1, attempts + 1):
        workdir = Path(tempfile.mkdtemp(prefix="mailstack-", dir=base or "/tmp"))
        workdir.chmod(0o755)
        rt = _Runtime(_Layout(workdir))
        _Subreaper.acquire()
        try:
            try:
                _check_traversable(workdir)
                stack = _start(workdir, rt, weak)
            except Exception as exc:
                _stop(rt)
                if attempt < attempts and _port_clash(rt.lay):
                    # Another process took a port between picking and binding it.
                    log.warning("mailstack: port clash, retrying (%s)", workdir)
                    shutil.rmtree(workdir, ignore_errors=True)
                    continue
                raise RuntimeError(_start_failure_report(rt.lay, exc)) from exc
            try:
                yield stack
            finally:
                _stop(rt)
        finally:
            _Subreaper.release()
        if base is None and not os.environ.get("MAILSTACK_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
        return
