"""The running stack as tests see it (MailStack) and the fixed facts every part shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
MAIL_DOMAIN = "localhost"
USERS: dict[str, str] = {"canary": "canary-pass", "probe": "probe-pass"}

# Mail is stored as an existing unprivileged account so no system user has to be created.
VMAIL_USER = "nobody"

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


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
