"""The seven loopback listeners and how their port numbers are picked."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from .stack import HOST


@dataclass(frozen=True)
class Ports:
    mx: int
    submission: int
    smtps: int
    expired: int
    wronghost: int
    imap: int
    imaps: int


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
