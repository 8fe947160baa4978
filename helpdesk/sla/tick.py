"""The SLA pass (I/O shell): find tickets whose next notice is due, send each
notice exactly once, and keep ``next_sla_at`` current.

Due tickets come from the index on ``ticket.next_sla_at``, so a pass costs
what is due, not what is stored. Each notice is a row under a unique key
(ticket, target, kind, cycle) written in the same savepoint as its outbox
mail: a second daemon, or the same one after a crash, fails on the key and
sends nothing. Each ticket is handled in its own savepoint, so one ticket the
pass cannot handle is logged and retried later without holding up the rest.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlmodel import Session, select

from helpdesk import notify, outbox, tickets
from helpdesk.app import App
from helpdesk.db import session_scope
from helpdesk.escalate import escalate
from helpdesk.escalation.rota import choose_manager, next_manager_after
from helpdesk.ingest.inbound import Address, InboundEmail
from helpdesk.logs import log
from helpdesk.models import Event, Ticket
from helpdesk.models import Notice as NoticeRow
from helpdesk.sla.deadlines import SlaState, Target, TicketClock, compute_sla
from helpdesk.sla.notices import Notice, NoticeKind, due_notices
from helpdesk.sla.policy import Plan, Priority

logger = logging.getLogger(__name__)
BATCH = 500
TARGET_LABELS = {Target.FIRST_RESPONSE: "first response", Target.RESOLUTION: "resolution"}
ESCALATION_ACK = "escalation_ack"
# A ticket the pass failed on is tried again this much later, not at every
# pass: the error is logged each time, and the other due tickets go first.
RETRY_AFTER = timedelta(minutes=5)
OPEN_STATUSES = ("new", "open", "pending")


class SlaTicker:
    def __init__(self, app: App) -> None:
        self.app = app

    def run_pass(self) -> int:
        """One pass over every ticket that is due now; returns notices sent."""
        total = 0
        while True:
            sent, handled = self._batch()
            total += sent
            if handled < BATCH:
                return total

    def _batch(self) -> tuple[int, int]:
        now = self.app.clock.now()
        sent = 0
        with session_scope(self.app.engine) as session:
            query = (
                select(Ticket)
                .where(Ticket.next_sla_at <= now)  # type: ignore[operator]
                .order_by(Ticket.next_sla_at)  # type: ignore[arg-type]
                .limit(BATCH)
            )
            if session.get_bind().dialect.name == "postgresql":
                # Another daemon working on a ticket: skip it, it is in hand.
                query = query.with_for_update(skip_locked=True)
            due = list(session.exec(query).all())
            for ticket in due:
                sent += self._guarded(session, ticket, now)
        return sent, len(due)

    def _guarded(self, session: Session, ticket: Ticket, now: datetime) -> int:
        """``_ticket`` in a savepoint: a ticket that fails (bad stored data, a
        template error) is rolled back alone and put off, so every other due
        ticket still gets its notices. A database that is unwell is not a
        ticket's fault: that ends the pass and the next one starts over."""
        try:
            with session.begin_nested():
                return self._ticket(session, ticket, now)
        except OperationalError:
            raise
        except Exception as exc:
            if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                raise
            logger.exception("sla pass failed on a ticket",
                             extra={"ticket": ticket.reference, "ticket_id": ticket.id})
            # The savepoint's rollback expired the object; this reloads it.
            ticket.next_sla_at = now + RETRY_AFTER
            session.add(ticket)
            return 0

    def _ticket(self, session: Session, ticket: Ticket, now: datetime) -> int:
        sent = 0
        if ticket.status in OPEN_STATUSES:
            clock = TicketClock(
                created_at=ticket.created_at,
                priority=Priority(ticket.priority),
                plan=Plan(ticket.plan),
                status_changes=tickets.status_history(session, ticket),
                first_public_reply_at=ticket.first_response_at,
            )
            state = compute_sla(clock, self.app.policy)
            grace = self._grace()
            notices = due_notices(state, now, tickets.sent_notices(session, ticket), grace)
            if any(n.late for n in notices):
                notices = self._judge_late(session, ticket, notices, now, grace)
            for notice in notices:
                sent += self._send(session, ticket, notice, state, now)
        if ticket.escalation_ack_due is not None and ticket.escalation_ack_due <= now:
            if ticket.status in OPEN_STATUSES:
                sent += self._escalation_reminder(session, ticket, now)
            else:
                # Resolved or closed meanwhile: nobody needs reminding any more.
                ticket.escalation_ack_due = None
        # Deadlines move (a pause, a reopen, a new priority), so recompute.
        tickets.recompute_sla(self.app, session, ticket, now)
        if ticket.next_sla_at is not None and ticket.next_sla_at <= now:
            ticket.next_sla_at = None  # nothing more can become due until the ticket changes
        session.add(ticket)
        return sent

    def _grace(self) -> timedelta:
        return timedelta(seconds=self.app.settings.sla.late_grace_seconds)

    def _judge_late(self, session: Session, ticket: Ticket, notices: tuple[Notice, ...],
                    now: datetime, grace: timedelta) -> tuple[Notice, ...]:
        """``late`` means "its time passed while we were not running". A
        priority change recomputes deadlines from creation, so a deadline can
        land in the past at once: such a notice was not knowable before the
        change, and is only late if the change itself went unnoticed."""
        assert ticket.id is not None
        changed = session.exec(
            select(func.max(Event.created_at))
            .where(Event.ticket_id == ticket.id, Event.kind == "priority")
        ).first()
        if changed is None:
            return notices
        return tuple(
            replace(n, late=now - max(n.due_at, changed) > grace) if n.late else n
            for n in notices
        )

    def _claim(self, session: Session, ticket: Ticket, target: str, kind: str, cycle: int,
               due_at: datetime, now: datetime, late: bool) -> bool:
        """Insert the notice key; False when it exists (sent before)."""
        assert ticket.id is not None
        try:
            with session.begin_nested():
                session.add(NoticeRow(ticket_id=ticket.id, target=target, kind=kind,
                                      cycle=cycle, due_at=due_at, sent_at=now, late=late))
                session.flush()
        except IntegrityError:
            return False
        return True

    def _send(self, session: Session, ticket: Ticket, notice: Notice, state: SlaState,
              now: datetime) -> int:
        if not self._claim(session, ticket, notice.target.value, notice.kind.value, notice.cycle,
                           notice.due_at, now, notice.late):
            return 0
        app = self.app
        purpose = "sla_warning" if notice.kind is NoticeKind.WARNING else "sla_breach"
        recipients = self._recipients(ticket, notice, now)
        # A warning becomes due before the target does: the mail must name the
        # target's deadline, not the moment the warning fell due.
        deadline = state.clock(notice.target).due_at or notice.due_at
        context = {
            "target_label": TARGET_LABELS[notice.target],
            "due": notify.deadline_text(app, deadline, now),
            "late": notice.late,
        }
        word = "SLA warning" if notice.kind is NoticeKind.WARNING else "SLA BREACH"
        subject = f"[{ticket.reference}] {word}: {TARGET_LABELS[notice.target]} - {ticket.subject}"
        mail = notify.build(app, ticket, purpose, now, recipients, context=context,
                            subject=subject)
        outbox.enqueue(session, app.settings.outbound, mail, now, ticket.id, rate_limited=False)
        if (
            notice.kind is NoticeKind.BREACH
            and app.settings.sla.breach_notify_client
        ):
            client = notify.build(app, ticket, "sla_breach_client", now,
                                  [Address(ticket.requester_addr, ticket.requester_name)],
                                  context=context)
            outbox.enqueue(session, app.settings.outbound, client, now, ticket.id)
        tickets.add_event(session, ticket, f"sla_{notice.kind.value}", "helpdesk", now,
                          target=notice.target.value, due_at=notice.due_at.isoformat(),
                          deadline=deadline.isoformat(), late=notice.late, cycle=notice.cycle)
        if (
            notice.kind is NoticeKind.BREACH
            and notice.target is Target.RESOLUTION
            and app.settings.escalation.auto_on_breach
            and not ticket.escalated
        ):
            self._auto_escalate(session, ticket, now)
        log(logger, logging.INFO, "sla notice", ticket=ticket.reference, kind=notice.kind.value,
            target=notice.target.value, late=notice.late)
        return 1

    def _auto_escalate(self, session: Session, ticket: Ticket, now: datetime) -> None:
        """The optional escalation on a resolution breach: the same path as a
        client's, with the helpdesk as the one who escalated."""
        requester = Address(ticket.requester_addr, ticket.requester_name)
        trigger = InboundEmail(message_id="", subject=ticket.subject,
                               from_=requester if requester.addr else None)
        escalate(self.app, session, ticket, trigger, trigger="resolution_breach",
                 allowed=True, staff=True, now=now, actor="helpdesk",
                 body=f"The resolution target of {ticket.reference} was missed.",
                 send_client_ack=bool(requester.addr))

    def _recipients(self, ticket: Ticket, notice: Notice, now: datetime) -> list[Address]:
        people: list[Address] = []
        if notice.kind is NoticeKind.WARNING:
            team = notify.team(self.app, ticket)[0]
            people.append(Address(ticket.assignee) if ticket.assignee else team)
            return people
        people.extend(notify.team(self.app, ticket))
        if ticket.assignee:
            people.append(Address(ticket.assignee))
        if self.app.managers:
            choice = choose_manager(self.app.managers, ticket.region or None, now)
            people.append(Address(choice.manager.address, choice.manager.name))
        return list({p.addr: p for p in people}.values())

    def _escalation_reminder(self, session: Session, ticket: Ticket, now: datetime) -> int:
        due = ticket.escalation_ack_due
        assert due is not None
        ticket.escalation_ack_due = None
        if not self._claim(session, ticket, ESCALATION_ACK, "reminder", ticket.escalation_level,
                           due, now, now - due > self._grace()):
            return 0
        people = [Address(ticket.escalation_manager)] if ticket.escalation_manager else []
        current = next((m for m in self.app.managers
                        if m.address == ticket.escalation_manager), None)
        if current is not None and len(self.app.managers) > 1:
            other = next_manager_after(self.app.managers, current, now)
            people.append(Address(other.address, other.name))
        if not people:
            people = list(notify.team(self.app, ticket))
        mail = notify.build(
            self.app, ticket, "escalation_reminder", now, people,
            context={"due": notify.deadline_text(self.app, due, now),
                     "manager_name": current.name if current else ticket.escalation_manager},
            subject=f"[{ticket.reference}] Escalation not yet acknowledged - {ticket.subject}",
        )
        outbox.enqueue(session, self.app.settings.outbound, mail, now, ticket.id,
                       rate_limited=False)
        tickets.add_event(session, ticket, "escalation_reminder", "helpdesk", now,
                          due_at=due.isoformat())
        return 1


def next_due(app: App) -> datetime | None:
    """The earliest ``next_sla_at``, for the scheduler's one-shot wake-up."""
    with Session(app.engine) as session:
        return session.exec(
            select(Ticket.next_sla_at)
            .where(Ticket.next_sla_at.is_not(None))  # type: ignore[union-attr]
            .order_by(Ticket.next_sla_at)  # type: ignore[arg-type]
            .limit(1)
        ).first()
