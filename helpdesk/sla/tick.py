"""The SLA pass (I/O shell): find tickets whose next notice is due, send each
notice exactly once, and keep ``next_sla_at`` current.

Due tickets come from the index on ``ticket.next_sla_at``, so a pass costs
what is due, not what is stored. Each notice is a row under a unique key
(ticket, target, kind, cycle) written in the same transaction as its outbox
mail: a second daemon, or the same one after a crash, finds the key taken
and sends nothing.

A batch of due tickets is read with a few queries, decided in memory (the
SLA clocks, the notices, the mail), and written with one statement per table.
Per-ticket statements and ORM flushes, not the SLA maths, were what a busy
pass cost. One ticket must still not hold up the others: one whose decision
fails (bad stored data, a template error) is put off alone, and if the
batch's writes fail, its savepoint is rolled back and each ticket is written
again in a savepoint of its own, so only the one at fault is put off.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, col, select

from helpdesk import notify, outbox, tickets
from helpdesk.app import App
from helpdesk.compose import Outgoing
from helpdesk.db import session_scope
from helpdesk.escalate import escalate
from helpdesk.escalation.rota import choose_manager, next_manager_after
from helpdesk.ingest.inbound import Address, InboundEmail
from helpdesk.logs import log
from helpdesk.models import Event, Outbox, ThreadId, Ticket
from helpdesk.models import Notice as NoticeRow
from helpdesk.rows import insert_new, insert_rows
from helpdesk.sla.deadlines import SlaState, Target, TicketClock, compute_sla
from helpdesk.sla.notices import (
    Notice,
    NoticeKey,
    NoticeKind,
    due_notices,
    judge_late,
    next_wakeup,
)
from helpdesk.sla.policy import Plan, Priority

logger = logging.getLogger(__name__)
BATCH = 500
TARGET_LABELS = {Target.FIRST_RESPONSE: "first response", Target.RESOLUTION: "resolution"}
ESCALATION_ACK = "escalation_ack"
# A ticket the pass failed on is tried again this much later, not at every
# pass: the error is logged each time, and the other due tickets go first.
RETRY_AFTER = timedelta(minutes=5)
OPEN_STATUSES = ("new", "open", "pending")
ACTOR = "helpdesk"

NoticeId = tuple[int, str, str, int]  # (ticket id, target, kind, cycle): the unique key


@dataclass(frozen=True)
class Claim:
    """A notice key to insert, and what is written if this pass wins it."""

    target: str
    kind: str
    cycle: int
    due_at: datetime
    late: bool
    event: str
    detail: Mapping[str, object]
    mails: tuple[Outgoing, ...]
    # The client's copy of a breach: automatic mail to an outside address,
    # so it goes through the outbox's rate limits one by one.
    client_mails: tuple[Outgoing, ...] = ()
    # A resolution breach that escalates the ticket when it is sent.
    escalates: bool = False


@dataclass(frozen=True)
class Decision:
    """Everything the pass will write for one ticket, decided before any of it is."""

    ticket: Ticket
    claims: tuple[Claim, ...]
    first_response_due: datetime | None
    resolution_due: datetime | None
    sla_cycle: int
    next_sla_at: datetime | None
    escalation_ack_due: datetime | None


@dataclass(frozen=True)
class History:
    """What the SLA clocks of a batch of tickets read from the database."""

    status_events: Mapping[int, Sequence[tuple[datetime, str]]]
    priority_changed_at: Mapping[int, datetime]
    sent: Mapping[int, frozenset[NoticeKey]]


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
        """Up to ``BATCH`` due tickets in one transaction."""
        now = self.app.clock.now()
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
            if not due:
                return 0, 0
            history = load_history(session, [t.id for t in due if t.id is not None])
            decisions: list[Decision] = []
            for ticket in due:
                try:
                    decisions.append(self._decide(ticket, history, now))
                except Exception:
                    self._put_off(ticket, now)
            return self._guarded(session, decisions, now), len(due)

    def _put_off(self, ticket: Ticket, now: datetime) -> None:
        """Log the error being handled and try ``ticket`` again later."""
        logger.exception("sla pass failed on a ticket",
                         extra={"ticket": ticket.reference, "ticket_id": ticket.id})
        ticket.next_sla_at = now + RETRY_AFTER

    # -- deciding (no database) --------------------------------------------------------

    def _decide(self, ticket: Ticket, history: History, now: datetime) -> Decision:
        assert ticket.id is not None
        clock = TicketClock(
            created_at=ticket.created_at,
            priority=Priority(ticket.priority),
            plan=Plan(ticket.plan),
            status_changes=tickets.status_changes(history.status_events.get(ticket.id, ()),
                                                  ticket.created_at),
            first_public_reply_at=ticket.first_response_at,
        )
        state = compute_sla(clock, self.app.policy)
        sent = history.sent.get(ticket.id, frozenset())
        claims: list[Claim] = []
        if ticket.status in OPEN_STATUSES:
            grace = self._grace()
            notices = judge_late(due_notices(state, now, sent, grace),
                                 history.priority_changed_at.get(ticket.id), now, grace)
            claims.extend(self._notice(ticket, notice, state, now) for notice in notices)
            # Each is sent now, or was by someone else already: either way it
            # is no longer outstanding.
            sent = sent | {notice.key for notice in notices}
        ack_due = ticket.escalation_ack_due
        if ack_due is not None and ack_due <= now:
            # Resolved or closed meanwhile: nobody needs reminding any more.
            if ticket.status in OPEN_STATUSES:
                claims.append(self._reminder(ticket, ack_due, now))
            ack_due = None
        wakeups = [t for t in (next_wakeup(state, sent), ack_due) if t is not None]
        next_at = min(wakeups, default=None)
        if next_at is not None and next_at <= now:
            next_at = None  # nothing more can become due until the ticket changes
        return Decision(
            ticket=ticket,
            claims=tuple(claims),
            first_response_due=state.first_response.due_at,
            resolution_due=state.resolution.due_at,
            sla_cycle=state.resolution.cycle,
            next_sla_at=next_at,
            escalation_ack_due=ack_due,
        )

    def _grace(self) -> timedelta:
        return timedelta(seconds=self.app.settings.sla.late_grace_seconds)

    def _notice(self, ticket: Ticket, notice: Notice, state: SlaState, now: datetime) -> Claim:
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
        breach = notice.kind is NoticeKind.BREACH
        client_mails: tuple[Outgoing, ...] = ()
        if breach and app.settings.sla.breach_notify_client:
            client_mails = (notify.build(
                app, ticket, "sla_breach_client", now,
                [Address(ticket.requester_addr, ticket.requester_name)], context=context),)
        return Claim(
            target=notice.target.value, kind=notice.kind.value, cycle=notice.cycle,
            due_at=notice.due_at, late=notice.late, event=f"sla_{notice.kind.value}",
            detail={"target": notice.target.value, "due_at": notice.due_at.isoformat(),
                    "deadline": deadline.isoformat(), "late": notice.late,
                    "cycle": notice.cycle},
            mails=(mail,), client_mails=client_mails,
            escalates=(breach and notice.target is Target.RESOLUTION
                       and app.settings.escalation.auto_on_breach and not ticket.escalated),
        )

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

    def _reminder(self, ticket: Ticket, due: datetime, now: datetime) -> Claim:
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
        return Claim(target=ESCALATION_ACK, kind="reminder", cycle=ticket.escalation_level,
                     due_at=due, late=now - due > self._grace(), event="escalation_reminder",
                     detail={"due_at": due.isoformat()}, mails=(mail,))

    # -- writing -----------------------------------------------------------------------

    def _guarded(self, session: Session, decisions: Sequence[Decision], now: datetime) -> int:
        """``_write`` in a savepoint. If it fails, each ticket is written again
        in a savepoint of its own, so the one at fault is rolled back and put
        off alone and every other due ticket still gets its notices. A
        database that is unwell is not a ticket's fault: that ends the pass
        and the next one starts over."""
        if not decisions:
            return 0
        try:
            with session.begin_nested():
                return self._write(session, decisions, now)
        except OperationalError:
            raise
        except Exception as exc:
            if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                raise
            if len(decisions) > 1:
                return sum(self._guarded(session, [d], now) for d in decisions)
            # The savepoint's rollback expired the ticket; this reloads it.
            self._put_off(decisions[0].ticket, now)
            return 0

    def _write(self, session: Session, decisions: Sequence[Decision], now: datetime) -> int:
        claimed = claim(session, [
            {"ticket_id": d.ticket.id, "target": c.target, "kind": c.kind, "cycle": c.cycle,
             "due_at": c.due_at, "sent_at": now, "late": c.late}
            for d in decisions for c in d.claims
        ])
        mails: list[tuple[Outgoing, int]] = []
        events: list[dict[str, Any]] = []
        escalating: list[Ticket] = []
        for d in decisions:
            ticket = d.ticket
            assert ticket.id is not None
            ticket.first_response_due = d.first_response_due
            ticket.resolution_due = d.resolution_due
            ticket.sla_cycle = d.sla_cycle
            ticket.next_sla_at = d.next_sla_at
            ticket.escalation_ack_due = d.escalation_ack_due
            for c in d.claims:
                if (ticket.id, c.target, c.kind, c.cycle) not in claimed:
                    continue  # sent before: by another daemon, or before a crash
                mails.extend((mail, ticket.id) for mail in c.mails)
                events.append(event_row(ticket.id, c.event, now, c.detail))
                if c.escalates:
                    escalating.append(ticket)
                log(logger, logging.INFO, "sla notice", ticket=ticket.reference, kind=c.kind,
                    target=c.target, late=c.late)
        queue(session, mails, now)
        insert_rows(session, Event, events)
        cfg = self.app.settings.outbound
        for d in decisions:
            for c in d.claims:
                if (d.ticket.id, c.target, c.kind, c.cycle) in claimed:
                    for mail in c.client_mails:
                        outbox.enqueue(session, cfg, mail, now, d.ticket.id)
        session.flush()  # the tickets' new deadlines, in one statement
        for ticket in escalating:
            self._auto_escalate(session, ticket, now)
        return len(claimed)

    def _auto_escalate(self, session: Session, ticket: Ticket, now: datetime) -> None:
        """The optional escalation on a resolution breach: the same path as a
        client's, with the helpdesk as the one who escalated. The priority it
        may raise moves the deadlines, so they are computed again after it."""
        requester = Address(ticket.requester_addr, ticket.requester_name)
        trigger = InboundEmail(message_id="", subject=ticket.subject,
                               from_=requester if requester.addr else None)
        escalate(self.app, session, ticket, trigger, trigger="resolution_breach",
                 allowed=True, staff=True, now=now, actor=ACTOR,
                 body=f"The resolution target of {ticket.reference} was missed.",
                 send_client_ack=bool(requester.addr))
        tickets.recompute_sla(self.app, session, ticket, now)
        if ticket.next_sla_at is not None and ticket.next_sla_at <= now:
            ticket.next_sla_at = None
        session.add(ticket)


def load_history(session: Session, ticket_ids: Sequence[int]) -> History:
    """Status and priority events and sent notices of ``ticket_ids``: two
    queries for the batch, not several per ticket."""
    status: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    changed: dict[int, datetime] = {}
    events = session.exec(
        select(Event.ticket_id, Event.kind, Event.created_at, Event.detail)
        .where(col(Event.ticket_id).in_(ticket_ids), col(Event.kind).in_(("status", "priority")))
        .order_by(col(Event.created_at), col(Event.id))
    ).all()
    for ticket_id, kind, at, detail in events:
        assert ticket_id is not None
        if kind == "status":
            status[ticket_id].append((at, str(json.loads(detail or "{}").get("new", ""))))
        else:
            changed[ticket_id] = max(at, changed.get(ticket_id, at))
    sent: dict[int, set[NoticeKey]] = defaultdict(set)
    targets = {t.value for t in Target}
    for ticket_id, target, kind, cycle in session.exec(
        select(NoticeRow.ticket_id, NoticeRow.target, NoticeRow.kind, NoticeRow.cycle)
        .where(col(NoticeRow.ticket_id).in_(ticket_ids))
    ).all():
        # Escalation reminders share the table; the SLA clocks ignore them.
        if target in targets:
            sent[ticket_id].add(NoticeKey(Target(target), NoticeKind(kind), cycle))
    return History(status_events=status, priority_changed_at=changed,
                   sent={k: frozenset(v) for k, v in sent.items()})


def claim(session: Session, rows: Sequence[Mapping[str, Any]]) -> set[NoticeId]:
    """Insert notice keys; returns those this call inserted. A key that is
    taken (sent before, or by another daemon just now) is skipped by the
    database (ON CONFLICT DO NOTHING): no savepoint per notice, and on
    PostgreSQL a racing daemon's insert waits for ours to commit or roll
    back, so exactly one of them wins each key."""
    won = insert_new(session, NoticeRow, rows, key=("ticket_id", "target", "kind", "cycle"))
    return {(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in won}


def queue(session: Session, mails: Sequence[tuple[Outgoing, int]], now: datetime) -> None:
    """The outbox rows ``outbox.enqueue`` writes for mail without a rate
    limit (``rate_limited=False``: staff notices), many in one statement,
    with the thread ids that let staff answer them."""
    insert_rows(session, Outbox, [outbox.row(mail, now, ticket_id) for mail, ticket_id in mails])
    # Our own fresh Message-IDs (random part, HMAC tag): never stored before.
    insert_rows(session, ThreadId, [
        {"message_id": mail.message_id, "ticket_id": ticket_id}
        for mail, ticket_id in mails if mail.message_id
    ])


def event_row(ticket_id: int, kind: str, now: datetime,
              detail: Mapping[str, object]) -> dict[str, object]:
    """An ``event`` row by the helpdesk itself."""
    return tickets.event_row(ticket_id, kind, ACTOR, now, detail)


def next_due(app: App) -> datetime | None:
    """The earliest ``next_sla_at``, for the scheduler's one-shot wake-up."""
    with Session(app.engine) as session:
        return session.exec(
            select(Ticket.next_sla_at)
            .where(Ticket.next_sla_at.is_not(None))  # type: ignore[union-attr]
            .order_by(Ticket.next_sla_at)  # type: ignore[arg-type]
            .limit(1)
        ).first()
