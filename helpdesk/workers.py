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


def alive_here(worker: str) -> bool | None:
    """For ``worker`` (``host:pid``, perhaps with ``/`` and the name of one
    of its parts after it) on this host: whether its process is still there.
    None for another host, or no worker: nobody here can tell."""
    host, _, pid = worker.split("/", 1)[0].rpartition(":")
    if not worker or host != socket.gethostname():
        return None
    # os.kill(0, ...) would ask about our own process group instead.
    return pid.isdigit() and int(pid) > 0 and pid_alive(int(pid))


def may_be_at_it(worker: str, since: datetime, now: datetime, lease: timedelta) -> bool:
    """Whether ``worker`` may still be finishing what it began at ``since``:
    never after the ``lease``; within it, on this host, only if its process
    is still there (a restart after a crash takes over at once); elsewhere,
    presumed so. No worker recorded: no."""
    if not worker or now - since >= lease:
        return False
    alive = alive_here(worker)
    return True if alive is None else alive
