"""Free TCP ports on the loopback interface.

``free_port()`` asks the kernel for an unused port by binding to port 0 and closing the socket
again. Another process could take the port before the caller binds it, so servers started on
such a port should retry with a fresh one when the bind fails (``Dovecot`` and ``SmtpCapture``
do). Code that can bind to port 0 itself (``TcpProxy``) should do that instead.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
