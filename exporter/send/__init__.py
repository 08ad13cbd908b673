"""The send library: the public API the canary uses, under the names of the smtplib pipeline
it grew from, so code written against that keeps working::

    from exporter.send import SMTPConfig, make_msg, send_email

    cfg = SMTPConfig.starttls_587("smtp.example.com", "me@example.com", password)
    for r in send_email(make_msg("you@example.org", "hi", "hello"), cfg):
        print(r)  # "you@example.org: OK" or "you@example.org: FAIL <error>"

The names, signatures, return shapes and string forms are that pipeline's (see README, "The
send library"); everything added since is optional and keyword-only or after its fields.

Connections, TLS and AUTH are the SMTP client's (``exporter.smtp.session.Session``), so
the same deadline discipline and hostile-server hardening apply to sending.
"""

from .api import send_bulk, send_email, send_with_retry, smtp_health_check
from .client import SendResult
from .config import SMTPConfig
from .message import make_msg
from .queue import SMTPQueue

__all__ = [
    "SMTPConfig",
    "SMTPQueue",
    "SendResult",
    "make_msg",
    "send_bulk",
    "send_email",
    "send_with_retry",
    "smtp_health_check",
]
