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
    dc-exp/, dc-wrong/   the Dovecot instances presenting the expired and the wrong-host
                         certificate: dovecot.conf, run/, state/ (users: dovecot/users)
    sasl/auth            Dovecot auth socket used by Postfix for SMTP AUTH
    mail/<user>/Maildir  delivered mail (owned by nobody)
    logs/                postfix.log, dovecot.log, dovecot-{expired,wronghost}.log,
                         *-start.log

The parts, one module each (imports run top to bottom, never back up)::

    stack.py         MailStack (what tests get) and the constants every part shares
    availability.py  postfix_available(): can a stack start here, or why not
    layout.py        Layout: where each part lives inside the work directory
    ports.py         Ports: the loopback listeners (SMTP, IMAP, POP3), free_ports()
    certs.py         the test CA and its leaves (good, expired, wrong host, weak)
    dovecot.py       dovecot.conf (IMAP, IMAPS, POP3, POP3S) of the three instances, users
    postfix.py       main.cf, master.cf, vmailbox, the weak profile
    processes.py     /proc bookkeeping: find, wait for, reap and kill the daemons
    readiness.py     start-up is done when every listener greets
    control.py       start, stop, and the mail_stack() context manager

Set ``MAILSTACK_KEEP=1`` to keep a work directory that ``mail_stack()`` created
itself (it is removed after a clean stop otherwise).
"""

from .availability import postfix_available
from .control import mail_stack
from .stack import MailStack

__all__ = ["MailStack", "mail_stack", "postfix_available"]
