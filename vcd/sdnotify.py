"""systemd's readiness protocol, without a dependency: one datagram to $NOTIFY_SOCKET.

sd_notify(3): the socket is a Unix datagram socket, a path or (leading '@') an
abstract name; the message is newline-separated KEY=VALUE lines. Outside systemd
(no NOTIFY_SOCKET) every call does nothing.
"""
from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1"); True if it was sent. Errors are not fatal: the
    service manager then sees a missing notification and acts on its own timeout."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError:
        return False
    return True
