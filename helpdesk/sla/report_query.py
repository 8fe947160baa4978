"""Read what the SLA report needs from the database (I/O shell).

Three queries whatever the number of tickets: the tickets opened since a
time, their status events and the breach mails sent for them; the clocks are
then replayed by the pure report.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from helpdesk.logs import log
from helpdesk.models import Event, Notice, Ticket
from helpdesk.sla.deadlines import Target, TicketClock
from helpdesk.sla.notices import NoticeKind
from helpdesk.sla.policy import Plan, Priority
from helpdesk.tickets import status_changes

logger = logging.getLogger(__name__)

TARGETS = frozenset(t.value for t in Target)


@dataclass(frozen=True)
class ReportRows:
    tickets: tuple[TicketClock, ...]
    skipped: tuple[str, ...]  # references whose priority or plan this version does not know
    breaches_told: tuple[frozenset[Target], ...] = ()  # one for each of ``tickets``


def load_report_rows(session: Session, since: datetime | None = None) -> ReportRows:
    """Every ticket opened at or after ``since`` (all, when None), as the
    inputs of its SLA clocks."""
    query = select(Ticket).order_by(Ticket.id)  # type: ignore[arg-type]
    events = (
        select(Event.ticket_id, Event.created_at, Event.detail)
        .join(Ticket, Ticket.id == Event.ticket_id)  # type: ignore[arg-type]
        .where(Event.kind == "status")
        .order_by(Event.created_at, Event.id)  # type: ignore[arg-type]
    )
    told_query = (
        select(Notice.ticket_id, Notice.target)
        .join(Ticket, Ticket.id == Notice.ticket_id)  # type: ignore[arg-type]
        .where(Notice.kind == NoticeKind.BREACH.value)
    )
    if since is not None:
        query = query.where(Ticket.created_at >= since)
        events = events.where(Ticket.created_at >= since)
        told_query = told_query.where(Ticket.created_at >= since)
    told: defaultdict[int, set[Target]] = defaultdict(set)
    for told_id, target in session.exec(told_query).all():
        if target in TARGETS:
            told[told_id].add(Target(target))
    history: defaultdict[int, list[tuple[datetime, str]]] = defaultdict(list)
    for ticket_id, at, detail in session.exec(events).all():
        new = json.loads(detail or "{}").get("new")
        if ticket_id is not None and isinstance(new, str):
            history[ticket_id].append((at, new))
    clocks: list[TicketClock] = []
    breaches: list[frozenset[Target]] = []
    skipped: list[str] = []
    for ticket in session.exec(query):
        assert ticket.id is not None
        try:
            clocks.append(TicketClock(
                created_at=ticket.created_at,
                priority=Priority(ticket.priority),
                plan=Plan(ticket.plan),
                status_changes=status_changes(history.get(ticket.id, ()), ticket.created_at),
                first_public_reply_at=ticket.first_response_at,
            ))
            breaches.append(frozenset(told.get(ticket.id, ())))
        except ValueError as exc:
            # One odd row must not hide the figures of all the others; it is named instead.
            log(logger, logging.WARNING, "ticket left out of the SLA report",
                ticket=ticket.reference, error=str(exc))
            skipped.append(ticket.reference)
    return ReportRows(tuple(clocks), tuple(skipped), tuple(breaches))
