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
class MailboxPorts:
    """One Dovecot instance's four mailbox listeners, all on ``HOST``."""

    imap: int  # IMAP, STARTTLS offered
    imaps: int  # IMAP, implicit TLS
    pop3: int  # POP3, STLS offered
    pop3s: int  # POP3, implicit TLS


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
    pop3_port: int  # Dovecot POP3 with STLS (USER/PASS and SASL AUTH)
    pop3s_port: int  # Dovecot POP3S (implicit TLS)
    # Two more Dovecot instances, same users and mail, each presenting one bad certificate
    # on all four of its listeners: ``expired_mailbox`` the expired one (names localhost
    # and 127.0.0.1, valid 2020-2021 only, so expiry is its only defect) and
    # ``wronghost_mailbox`` the one for wrong.example (valid, chains to ca_file, but does
    # not name 127.0.0.1 or localhost). See mailbox_port().
    expired_mailbox: MailboxPorts
    wronghost_mailbox: MailboxPorts
    users: dict[str, str]  # {"canary": "canary-pass", "probe": "probe-pass"}
    maildir_root: Path  # delivered mail lands in maildir_root/<user>/Maildir
    weak: bool = False  # started with weak=True (see mail_stack)
    weak_sha1: bool = False  # the weak stack's certificate really is signed with SHA-1

    def mailbox_port(self, protocol: str, implicit_tls: bool, cert: str = "good") -> int:
        """The Dovecot port for ``protocol`` ("imap" or "pop3"), with implicit TLS or with
        STARTTLS/STLS, presenting certificate ``cert`` ("good", "expired", "wronghost")."""
        if protocol not in ("imap", "pop3"):
            raise ValueError(f"protocol must be imap or pop3, not {protocol!r}")
        name = protocol + ("s" if implicit_tls else "")
        if cert == "good":
            return int(getattr(self, f"{name}_port"))
        if cert in ("expired", "wronghost"):
            return int(getattr(getattr(self, f"{cert}_mailbox"), name))
        raise ValueError(f"cert must be good, expired or wronghost, not {cert!r}")
