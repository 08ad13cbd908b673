"""The configuration files of the deliverability testbed: two Postfix instances, OpenDKIM
(signing), Dovecot (IMAP, LMTP with Sieve) and the DNS zone of both sides."""

from __future__ import annotations

import base64
import grp
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

HOST = "127.0.0.1"
RECEIVER_DOMAIN = "receiver.test"
AUTHSERV_ID = "mx.receiver.test"
SELECTOR = "s1"
USER, PASSWORD = "canary", "canary-pass"
JUNK_HEADER = "X-Deliverability-Test"  # a message carrying it with "junk" is filed into Junk

# The sending domains, one per verdict the receiving side must give.
GOOD = "good.test"  # SPF pass, DKIM pass, DMARC pass
SPF_FAIL = "spffail.test"  # SPF fail (the zone names another address), DKIM pass
WRONG_KEY = "wrongkey.test"  # signed with the key, DNS publishes another one: DKIM fail
SENDING_DOMAINS = (GOOD, SPF_FAIL, WRONG_KEY)

# Sending addresses the domain checks ask about: PTR present and confirmed (127.0.0.1),
# PTR not confirming (its name resolves elsewhere), no PTR at all. Only 127.0.0.1 is bound.
PTR_CONFIRMED = "127.0.0.1"
PTR_UNCONFIRMED = "127.0.0.2"
PTR_MISSING = "127.0.0.4"
SENDER_HOSTNAME = f"mail.{GOOD}"


@dataclass(frozen=True)
class Ports:
    submit: int  # the sending Postfix: plain SMTP, relays for 127.0.0.0/8, signs
    receive: int  # the receiving Postfix (MX of receiver.test)
    imap: int  # the receiving Dovecot, STARTTLS
    imaps: int  # the receiving Dovecot, implicit TLS
    opendkim: int  # OpenDKIM's milter socket (inet)


@dataclass(frozen=True)
class Keys:
    signing: Path  # the private key OpenDKIM signs every sending domain with
    published: str  # its public key, base64 SubjectPublicKeyInfo (p=)
    other: str  # a different public key, published for WRONG_KEY


def make_keys(directory: Path) -> Keys:
    """One signing key, and a second key whose public half the zone publishes for the
    domain whose signatures must fail."""
    directory.mkdir(mode=0o755)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / "signing.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    opendkim = pwd.getpwnam("opendkim")
    os.chown(path, opendkim.pw_uid, opendkim.pw_gid)
    path.chmod(0o600)
    return Keys(path, _spki(key), _spki(other))


def _spki(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def _txt(text: str) -> str:
    """A TXT record's data as quoted strings of at most 255 octets (RFC 1035 3.3.14)."""
    return " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))


def zone(keys: Keys) -> str:
    """Both sides' records: SPF, DKIM keys, DMARC, MX, and the reverse zone."""
    dkim = f"v=DKIM1; k=rsa; p={keys.published}"
    lines = [
        f"{RECEIVER_DOMAIN}. 300 IN MX 10 {AUTHSERV_ID}.",
        f"{AUTHSERV_ID}. 300 IN A {HOST}",
        f"{RECEIVER_DOMAIN}. 300 IN TXT {_txt('v=spf1 -all')}",
        f"{GOOD}. 300 IN TXT {_txt(f'v=spf1 ip4:{HOST} -all')}",
        f"{GOOD}. 300 IN MX 10 {SENDER_HOSTNAME}.",
        f"{SPF_FAIL}. 300 IN TXT {_txt('v=spf1 ip4:192.0.2.1 -all')}",
        f"{WRONG_KEY}. 300 IN TXT {_txt(f'v=spf1 ip4:{HOST} -all')}",
        f"{SELECTOR}._domainkey.{GOOD}. 300 IN TXT {_txt(dkim)}",
        f"{SELECTOR}._domainkey.{SPF_FAIL}. 300 IN TXT {_txt(dkim)}",
        f"{SELECTOR}._domainkey.{WRONG_KEY}. 300 IN TXT " + _txt(f"v=DKIM1; k=rsa; p={keys.other}"),
        f"_dmarc.{GOOD}. 300 IN TXT {_txt('v=DMARC1; p=reject')}",
        f"_dmarc.{SPF_FAIL}. 300 IN TXT {_txt('v=DMARC1; p=none')}",
        f"_dmarc.{WRONG_KEY}. 300 IN TXT {_txt('v=DMARC1; p=quarantine')}",
        f"{SENDER_HOSTNAME}. 300 IN A {PTR_CONFIRMED}",
        f"1.0.0.127.in-addr.arpa. 300 IN PTR {SENDER_HOSTNAME}.",
        "2.0.0.127.in-addr.arpa. 300 IN PTR mail.unconfirmed.test.",
        "mail.unconfirmed.test. 300 IN A 127.0.0.3",
    ]
    return "\n".join(lines) + "\n"


def write_opendkim(work: Path, ports: Ports, keys: Keys) -> Path:
    """OpenDKIM in signing mode for every sending domain, with one key and selector."""
    d = work / "opendkim"
    d.mkdir(mode=0o755)
    (d / "keytable").write_text(
        "".join(
            f"{SELECTOR}._domainkey.{dom} {dom}:{SELECTOR}:{keys.signing}\n"
            for dom in SENDING_DOMAINS
        )
    )
    (d / "signingtable").write_text(
        "".join(f"*@{dom} {SELECTOR}._domainkey.{dom}\n" for dom in SENDING_DOMAINS)
    )
    conf = d / "opendkim.conf"
    conf.write_text(
        f"""\
Mode s
Syslog no
Socket inet:{ports.opendkim}@{HOST}
PidFile {d / "opendkim.pid"}
UserID opendkim:opendkim
KeyTable file:{d / "keytable"}
SigningTable refile:{d / "signingtable"}
Canonicalization relaxed/relaxed
InternalHosts 127.0.0.0/8
RequireSafeKeys false
"""
    )
    return conf


_MASTER = """\
pickup     unix  n  -  n  60     1  pickup
cleanup    unix  n  -  n  -      0  cleanup
qmgr       unix  n  -  n  300    1  qmgr
rewrite    unix  -  -  n  -      -  trivial-rewrite
bounce     unix  -  -  n  -      0  bounce
defer      unix  -  -  n  -      0  bounce
trace      unix  -  -  n  -      0  bounce
verify     unix  -  -  n  -      1  verify
flush      unix  n  -  n  1000?  0  flush
proxymap   unix  -  -  n  -      -  proxymap
smtp       unix  -  -  n  -      -  smtp
relay      unix  -  -  n  -      -  smtp
showq      unix  n  -  n  -      -  showq
error      unix  -  -  n  -      -  error
retry      unix  -  -  n  -      -  error
discard    unix  -  -  n  -      -  discard
lmtp       unix  -  -  n  -      -  lmtp
anvil      unix  -  -  n  -      1  anvil
scache     unix  -  -  n  -      1  scache
postlog    unix-dgram n - n - 1 postlogd
"""


def postfix_dirs(work: Path, name: str) -> tuple[Path, Path, Path]:
    """(config, queue, data) directories of the instance ``name``."""
    etc, spool, data = (work / f"{name}-{part}" for part in ("etc", "spool", "data"))
    for path in (etc, spool):
        path.mkdir(mode=0o755)
    data.mkdir(mode=0o700)
    os.chown(data, pwd.getpwnam("postfix").pw_uid, grp.getgrnam("postfix").gr_gid)
    return etc, spool, data


def _main_cf(work: Path, name: str, hostname: str, extra: str) -> str:
    etc, spool, data = (work / f"{name}-{part}" for part in ("etc", "spool", "data"))
    return f"""\
# Generated by tests/servers/deliverability/ -- postfix -c {etc} start
compatibility_level = 3.6
config_directory = {etc}
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = {HOST}
inet_protocols = ipv4
myhostname = {hostname}
smtpd_banner = $myhostname ESMTP deliverability-{name}
syslog_name = postfix-{name}
maillog_file_prefixes = {work / "logs"}
maillog_file = {work / "logs" / f"postfix-{name}.log"}
biff = no
mydestination =
alias_maps =
alias_database =
local_transport = error:5.1.1 no local delivery here
smtp_tls_security_level = none
smtp_dns_support_level = disabled
milter_default_action = tempfail
milter_protocol = 6
{extra}"""


def write_sender(work: Path, ports: Ports) -> Path:
    """The sending Postfix: relays what 127.0.0.0/8 submits to the receiving Postfix,
    signed by OpenDKIM on the way."""
    etc, _, _ = postfix_dirs(work, "sender")
    (etc / "main.cf").write_text(
        _main_cf(
            work,
            "sender",
            SENDER_HOSTNAME,
            f"""\
mynetworks = 127.0.0.0/8
relayhost = [{HOST}]:{ports.receive}
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_milters = inet:{HOST}:{ports.opendkim}
non_smtpd_milters = $smtpd_milters
""",
        )
    )
    (etc / "master.cf").write_text(
        f"{HOST}:{ports.submit} inet n - n - - smtpd\n  -o syslog_name=postfix-sender/submit\n"
        + _MASTER
    )
    return etc


def write_receiver(work: Path, ports: Ports, milter_port: int, lmtp_socket: Path) -> Path:
    """The receiving Postfix: mail for receiver.test, verified by our milter, handed to
    Dovecot over LMTP (where Sieve files it)."""
    etc, _, _ = postfix_dirs(work, "receiver")
    (etc / "vmailbox").write_text(f"{USER}@{RECEIVER_DOMAIN} OK\n")
    (etc / "main.cf").write_text(
        _main_cf(
            work,
            "receiver",
            AUTHSERV_ID,
            f"""\
mynetworks =
smtpd_relay_restrictions = reject_unauth_destination
virtual_mailbox_domains = {RECEIVER_DOMAIN}
virtual_mailbox_maps = texthash:{etc / "vmailbox"}
virtual_transport = lmtp:unix:{lmtp_socket}
smtpd_milters = inet:{HOST}:{milter_port}
""",
        )
    )
    (etc / "master.cf").write_text(
        f"{HOST}:{ports.receive} inet n - n - - smtpd\n  -o syslog_name=postfix-receiver/mx\n"
        + _MASTER
    )
    return etc


_SIEVE = f"""\
require ["fileinto"];
if header :contains "{JUNK_HEADER}" "junk" {{
  fileinto "Junk";
  stop;
}}
"""


def write_dovecot(
    work: Path, ports: Ports, cert: tuple[Path, Path], lmtp_socket: Path, mail: Path
) -> Path:
    """Dovecot for receiver.test: IMAP (STARTTLS and implicit TLS), LMTP with a Sieve
    script run before the user's own that files the marked messages into Junk (a mailbox
    with the \\Junk special-use attribute, RFC 6154)."""
    d = work / "dovecot"
    (d / "run").mkdir(parents=True, mode=0o755)
    (d / "state").mkdir(mode=0o755)
    users = d / "users"
    users.write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    os.chown(users, 0, grp.getgrnam("dovecot").gr_gid)
    users.chmod(0o640)
    sieve = d / "junk.sieve"
    sieve.write_text(_SIEVE)
    # Compiled here, as root: the LMTP process runs as the mail user and cannot write
    # the binary next to the script.
    subprocess.run(["sievec", str(sieve)], check=True, capture_output=True, timeout=30)
    vmail = pwd.getpwnam("nobody")
    key, crt = cert
    conf = d / "dovecot.conf"
    conf.write_text(
        f"""\
# Generated by tests/servers/deliverability/ -- standalone, does not include /etc/dovecot.
instance_name = deliverability-{work.name}
base_dir = {d / "run"}
state_dir = {d / "state"}
protocols = imap lmtp
listen = {HOST}
log_path = {work / "logs" / "dovecot.log"}
info_log_path = {work / "logs" / "dovecot.log"}
ssl = yes
ssl_cert = <{crt}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:{mail}/%n/Maildir
first_valid_uid = 1
first_valid_gid = 1
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {users}
}}
userdb {{
  driver = static
  args = uid={vmail.pw_uid} gid={vmail.pw_gid} home={mail}/%n allow_all_users=yes
}}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
  auth_username_format = %n
}}
plugin {{
  sieve_before = {sieve}
  sieve = file:{mail}/%n/sieve;active={mail}/%n/.dovecot.sieve
}}
service imap-login {{
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
service lmtp {{
  unix_listener {lmtp_socket} {{
    mode = 0666
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""
    )
    return conf
