"""Which daemon process did something, and whether it can still be at it
(I/O shell): several daemons may share one database and one mailbox."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta


def this_worker() -> str:
    """``host:pid`` of this process, as rows it claims or stores record it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but there
    return True


def may_be_at_it(worker: str, since: datetime, now: datetime, lease: timedelta) -> bool:
    """Whether ``worker`` may still be finishing what it began at ``since``.
    On this host a process is asked directly, so a restart after a crash
    takes over at once; on another host, or with no worker recorded, only
    the ``lease`` tells."""
    host, _, pid = worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return pid_alive(int(pid))
    return bool(worker) and now - since < lease
