"""Escalating a ticket, in the caller's transaction (I/O shell).

The decision (who may, first time or repeat, new level and priority) is the
pure ``helpdesk.escalation.policy``; the manager comes from the pure
follow-the-sun rota. This module records the result and queues the mail:
the client's acknowledgement, the manager's briefing and the team notice.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlmodel import Session, select

from helpdesk import notify, outbox, tickets
from helpdesk.app import App
from helpdesk.escalation.policy import EscalationState, decide_escalation
from helpdesk.escalation.rota import choose_manager, coverage_deadline
from helpdesk.ingest.inbound import Address, InboundEmail
from helpdesk.logs import log
from helpdesk.models import Message, Ticket
from helpdesk.sla.policy import Priority
from helpdesk.sla.wording import format_moment

logger = logging.getLogger(__name__)


def escalate(
    app: App,
    session: Session,
    ticket: Ticket,
    mail: InboundEmail,
    *,
    trigger: str,
    allowed: bool,
    staff: bool,
    body: str,
    now: datetime,
    send_client_ack: bool = True,
    actor: str | None = None,
) -> str:
    """Escalate ``ticket``; returns the decision kind (``not_allowed`` when
    the sender may not, in which case nothing was changed). ``actor``
    overrides the mail's sender, for escalations the helpdesk makes itself."""
    cfg = app.settings.escalation
    decision = decide_escalation(
        EscalationState(
            priority=ticket.priority,
            escalated_at=ticket.escalated_at,
            level=ticket.escalation_level,
            last_escalated_at=ticket.last_escalated_at,
            manager_address=ticket.escalation_manager or None,
        ),
        is_requester_or_cc=allowed,
        is_verified_staff=staff,
        now=now,
        repeat_window=timedelta(hours=cfg.window_hours),
        raise_priority=cfg.raise_priority,
    )
    if not decision.is_recorded:
        return decision.kind
    actor = actor or mail.sender_addr
    # "decision", not "kind": add_event's own ``kind`` is the event kind.
    tickets.add_event(session, ticket, "escalation", actor, now, decision=decision.kind,
                      trigger=trigger, level=decision.level, message_id=mail.message_id)
    if not decision.send_notices:
        log(logger, logging.INFO, "repeat escalation inside the window", ticket=ticket.reference,
            message_id=mail.message_id)
        return decision.kind
    manager = next((m for m in app.managers if m.address == decision.manager_address), None)
    if manager is None and app.managers:
        manager = choose_manager(app.managers, ticket.region or None, now).manager
    ticket.escalated = True
    ticket.escalated_at = decision.escalated_at
    ticket.last_escalated_at = decision.last_escalated_at
    ticket.escalation_level = decision.level
    ticket.escalation_trigger = trigger
    ticket.escalation_manager = manager.address if manager else ""
    review = timedelta(minutes=cfg.review_minutes)
    ticket.escalation_ack_due = (
        coverage_deadline(app.managers, now, review) if app.managers else now + review
    )
    session.add(ticket)
    tickets.set_priority(app, session, ticket, Priority(decision.priority), now, actor,
                         source="escalation")
    tickets.recompute_sla(app, session, ticket, now)
    _queue_mail(app, session, ticket, mail, body, manager_name=manager.name if manager else "",
                send_client_ack=send_client_ack, now=now, actor=actor)
    # "escalation_level": log()'s own ``level`` is the logging level.
    log(logger, logging.INFO, "ticket escalated", ticket=ticket.reference,
        escalation_level=decision.level, manager=ticket.escalation_manager,
        message_id=mail.message_id)
    return decision.kind


def _queue_mail(app: App, session: Session, ticket: Ticket, mail: InboundEmail, body: str,
                manager_name: str, send_client_ack: bool, now: datetime, actor: str) -> None:
    cfg = app.settings.outbound
    review_due = notify.deadline_text(app, ticket.escalation_ack_due, now)
    context = {
        "manager_name": manager_name or "our incident management team",
        "manager_address": ticket.escalation_manager,
        "review_due": review_due,
        "level": ticket.escalation_level,
        "escalated_by": actor,
        "body": body,
    }
    if send_client_ack and mail.from_ is not None:
        ack = notify.build(app, ticket, "escalation_ack", now,
                           [Address(ticket.requester_addr, ticket.requester_name)],
                           context=context, in_reply_to=mail.message_id,
                           references=mail.references,
                           subject=f"[{ticket.reference}] Escalation received: {ticket.subject}")
        outbox.enqueue(session, cfg, ack, now, ticket.id)
    if ticket.escalation_manager:
        asked, asked_at, answered = _last_request(app, session, ticket, now)
        briefing = notify.build(
            app, ticket, "escalation_briefing", now, [Address(ticket.escalation_manager,
                                                              manager_name)],
            context={**context, "sla_state": _sla_state(app, ticket, now),
                     "last_request": asked, "last_request_at": asked_at,
                     "client_answered": answered},
            subject=f"[{ticket.reference}] ESCALATION level {ticket.escalation_level}: "
                    f"{ticket.subject}",
        )
        outbox.enqueue(session, cfg, briefing, now, ticket.id, rate_limited=False)
    engineer = [Address(ticket.assignee)] if ticket.assignee else list(notify.team(app, ticket))
    notice = notify.build(app, ticket, "escalation_notice", now, engineer, context=context,
                          subject=f"[{ticket.reference}] Escalated: {ticket.subject}")
    outbox.enqueue(session, cfg, notice, now, ticket.id, rate_limited=False)


def _last_request(app: App, session: Session, ticket: Ticket,
                  now: datetime) -> tuple[str, str, bool]:
    """The last public staff message, and whether the client wrote after it."""
    rows = session.exec(
        select(Message).where(Message.ticket_id == ticket.id)
        .order_by(Message.id)  # type: ignore[arg-type]
    ).all()
    last_staff = None
    for row in rows:
        if row.kind == "staff_reply":
            last_staff = row
    if last_staff is None:
        return "", "", False
    answered = any(r.kind == "client" and r.id is not None and last_staff.id is not None
                   and r.id > last_staff.id for r in rows)
    when = format_moment(last_staff.created_at, now, app.settings.helpdesk.timezone)
    return last_staff.body[:2000], when, answered


def _sla_state(app: App, ticket: Ticket, now: datetime) -> str:
    parts = []
    if ticket.first_response_at is None and ticket.first_response_due is not None:
        state = "BREACHED" if ticket.first_response_due <= now else "due"
        due = notify.deadline_text(app, ticket.first_response_due, now)
        parts.append(f"first response {state} {due}")
    if ticket.resolution_due is not None:
        state = "BREACHED" if ticket.resolution_due <= now else "due"
        parts.append(f"resolution {state} {notify.deadline_text(app, ticket.resolution_due, now)}")
    return "; ".join(parts) or f"status {ticket.status}"
