"""Can a real Postfix + Dovecot start here? A reason to skip if not."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
import sys

from .stack import VMAIL_USER

# Candidate locations of Dovecot's IMAP binary (Debian/Ubuntu, then Fedora/Arch style).
_DOVECOT_IMAP_BINARIES = ("/usr/lib/dovecot/imap", "/usr/libexec/dovecot/imap")
_DOVECOT_POP3_BINARIES = ("/usr/lib/dovecot/pop3", "/usr/libexec/dovecot/pop3")


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
            "(apt-get install -y postfix dovecot-core dovecot-imapd dovecot-pop3d)"
        )
    if not any(os.access(p, os.X_OK) for p in _DOVECOT_IMAP_BINARIES):
        return "Dovecot IMAP server not installed (apt-get install -y dovecot-imapd)"
    if not any(os.access(p, os.X_OK) for p in _DOVECOT_POP3_BINARIES):
        return "Dovecot POP3 server not installed (apt-get install -y dovecot-pop3d)"
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
