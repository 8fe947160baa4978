"""Resolved tickets are closed after a quiet while (I/O shell).

Resolved means "we think it is done": the client's reply reopens it. Left
resolved for ever, a reply years later would reopen it too; closed, a reply
after the reopen window opens a new ticket linked to it (helpdesk.threading).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import col, select

from helpdesk import tickets
from helpdesk.app import App
from helpdesk.db import session_scope
from helpdesk.logs import log
from helpdesk.models import Ticket

logger = logging.getLogger(__name__)

BATCH = 500  # a pass closes at most this many; the next takes the rest
ACTOR = "helpdesk"


def run_pass(app: App) -> int:
    """Close the tickets resolved more than helpdesk.close_resolved_after_days
    ago (0: never); the number closed."""
    days = app.settings.helpdesk.close_resolved_after_days
    if not days:
        return 0
    now = app.clock.now()
    cutoff = now - timedelta(days=days)
    with session_scope(app.engine) as session:
        # Quiet: resolved, and nothing written on it since (a staff
        # follow-up leaves it resolved). Claimed with FOR UPDATE SKIP LOCKED
        # on PostgreSQL, so that a ticket a reply is reopening right now is
        # not closed over it, nor closed by two daemons at once.
        quiet = session.exec(
            select(Ticket)
            .where(Ticket.status == "resolved", col(Ticket.resolved_at) < cutoff,
                   col(Ticket.updated_at) < cutoff)
            .order_by(col(Ticket.id)).limit(BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        for ticket in quiet:
            tickets.set_status(app, session, ticket, "closed", now, ACTOR)
    if quiet:
        log(logger, logging.INFO, "resolved tickets closed", count=len(quiet), after_days=days)
    return len(quiet)
