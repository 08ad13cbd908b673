"""The loopback listeners and how their port numbers are picked."""

from __future__ import annotations

import socket
from dataclasses import dataclass, fields

from .stack import HOST, MailboxPorts


@dataclass(frozen=True)
class Ports:
    mx: int
    submission: int
    smtps: int
    expired: int
    wronghost: int
    imap: int
    imaps: int
    pop3: int
    pop3s: int
    # The second and third Dovecot instances, presenting the expired and the wrong-host
    # certificate (Dovecot picks a certificate by local address or SNI name, never by
    # port, so a certificate of its own needs an instance of its own).
    expired_mailbox: MailboxPorts
    wronghost_mailbox: MailboxPorts

    @classmethod
    def pick(cls) -> Ports:
        """Free ports for every listener."""
        flat = [f for f in fields(cls) if f.type == "int"]
        nested = len(fields(MailboxPorts))
        numbers = free_ports(len(flat) + 2 * nested)
        plain = numbers[: len(flat)]
        exp = numbers[len(flat) : len(flat) + nested]
        wrong = numbers[len(flat) + nested :]
        return cls(*plain, MailboxPorts(*exp), MailboxPorts(*wrong))


def free_ports(n: int) -> list[int]:
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
