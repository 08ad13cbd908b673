"""An aiosmtpd handler with a mail policy, for testing the send library: refuse or tempfail
given senders and recipients, refuse DATA, drop the connection after N messages."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session

from exporter.embedded import RecordingHandler


@dataclass
class Policy:
    reject_rcpt: set[str] = field(default_factory=set)  # 550 5.1.1
    tempfail_rcpt: dict[str, int] = field(default_factory=dict)  # addr -> 451s before OK
    reject_sender: set[str] = field(default_factory=set)  # 553 5.7.1
    tempfail_sender_times: int = 0  # 421-free 451 4.3.0 to MAIL this many times
    reject_data: bool = False  # 554 5.6.0 after the body
    drop_after: int = 0  # close the connection after this many messages on it (0: never)


class PolicyHandler(RecordingHandler):
    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy
        self.rcpt_attempts: Counter[str] = Counter()
        self.mail_attempts = 0
        self.per_connection: dict[object, int] = {}

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        with self.lock:
            self.mail_attempts += 1
            attempt = self.mail_attempts
        if address in self.policy.reject_sender:
            return "553 5.7.1 Sender address rejected"
        if attempt <= self.policy.tempfail_sender_times:
            return "451 4.3.0 Try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        with self.lock:
            self.rcpt_attempts[address] += 1
            n = self.rcpt_attempts[address]
        if address in self.policy.reject_rcpt:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if n <= self.policy.tempfail_rcpt.get(address, 0):
            return f"451 4.2.0 <{address}>: Recipient address rejected: try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.policy.reject_data:
            return "554 5.6.0 Message content rejected"
        status = await super().handle_DATA(server, session, envelope)
        key = session.peer  # (address, port): one per connection
        with self.lock:
            self.per_connection[key] = self.per_connection.get(key, 0) + 1
            count = self.per_connection[key]
        if self.policy.drop_after and count >= self.policy.drop_after:
            # Answer first, then hang up, as a server closing a full session does: the reply
            # is written before this callback runs, and close() flushes it.
            transport = server.transport
            assert transport is not None
            asyncio.get_running_loop().call_soon(transport.close)
        return status

    @property
    def connections_used(self) -> int:
        with self.lock:
            return len(self.per_connection)
