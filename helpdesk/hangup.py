"""Closing a connection whose protocol has said goodbye (I/O shell)."""

from __future__ import annotations

import asyncio


async def hang_up(transport: object) -> None:
    """Close ``transport`` now, socket and all.

    Once QUIT (RFC 5321 §4.1.1.10) or LOGOUT (RFC 9051 §6.1.3) has been
    answered, nothing more is owed; yet closing a TLS transport waits for the
    peer's close_notify (RFC 8446 §6.1), and ``run --once`` may end its event
    loop before that arrives, leaving the socket open. So abort, and give the
    loop the one turn in which the socket is closed.
    """
    if isinstance(transport, asyncio.Transport):
        transport.abort()
        await asyncio.sleep(0)
