"""Outbound mail for each purpose, composed from ticket data and ``now``.

Pure apart from the template files: every function takes the values it needs
and returns an :class:`Outgoing`; the caller puts it in the outbox.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from helpdesk.app import App
from helpdesk.compose import Draft, Outgoing, compose
from helpdesk.ingest.inbound import Address, Attachment
from helpdesk.models import Ticket
from helpdesk.sla.wording import format_deadline
from helpdesk.threading.reference import tag_subject
from helpdesk.threading.tokens import make_message_id, reply_address

# The mail that answers a mail to its sender (RFC 3834 §5 "auto-replied");
# everything else automatic is "auto-generated".
REPLIES = frozenset({"confirmation", "escalation_ack", "command_error"})


def new_message_id(app: App, reference: str) -> str:
    h = app.settings.helpdesk
    return make_message_id(reference, h.support_domain, h.secret, uuid.uuid4().hex[:16])


def signed_reply_to(app: App, reference: str) -> Address:
    h = app.settings.helpdesk
    return Address(reply_address(h.support_address, reference, h.secret), h.name)


def deadline_text(app: App, due: datetime | None, now: datetime) -> str:
    if due is None:
        return ""
    return format_deadline(due, now, app.settings.helpdesk.timezone)


def target_text(app: App, due: datetime | None, now: datetime) -> str:
    """A target as a mail about the ticket states it: its deadline, or, once
    that has passed (a priority raised, an escalation), that it is overdue,
    not a promise already broken."""
    text = deadline_text(app, due, now)
    return f"overdue (it was due {text})" if due is not None and due <= now else text


def base_context(app: App, ticket: Ticket, now: datetime) -> dict[str, Any]:
    h = app.settings.helpdesk
    return {
        "helpdesk_name": h.name,
        "support_address": h.support_address,
        "escalation_address": h.escalation_address,
        "reference": ticket.reference,
        "subject": ticket.subject,
        "priority": ticket.priority,
        "priority_source": ticket.priority_source,
        "category": ticket.category,
        "plan": ticket.plan,
        "status": ticket.status,
        "requester": ticket.requester_addr,
        "requester_name": ticket.requester_name,
        "assignee": ticket.assignee,
        "first_response_due": target_text(app, ticket.first_response_due, now),
        "resolution_due": target_text(app, ticket.resolution_due, now),
        "mentions": ticket.mentions,
        "linked_to": ticket.linked_to,
    }


def build(
    app: App,
    ticket: Ticket,
    purpose: str,
    now: datetime,
    to: Sequence[Address],
    *,
    automatic: bool = True,
    cc: Sequence[Address] = (),
    context: Mapping[str, Any] | None = None,
    subject: str | None = None,
    from_name: str | None = None,
    in_reply_to: str = "",
    references: Sequence[str] = (),
    attachments: Sequence[Attachment] = (),
) -> Outgoing:
    h = app.settings.helpdesk
    data = base_context(app, ticket, now)
    data.update(context or {})
    rendered = app.templates.render(purpose, data)
    return compose(
        Draft(
            purpose=purpose,
            from_addr=Address(h.support_address, from_name if from_name is not None else h.name),
            to=tuple(to),
            cc=tuple(cc),
            reply_to=signed_reply_to(app, ticket.reference),
            subject=tag_subject(ticket.subject, ticket.reference) if subject is None else subject,
            text=rendered.text,
            html=rendered.html,
            message_id=new_message_id(app, ticket.reference),
            date=now,
            automatic=automatic,
            auto_submitted="auto-replied" if purpose in REPLIES else "auto-generated",
            loop_value=h.loop_value,
            in_reply_to=in_reply_to,
            references=tuple(references),
            attachments=tuple(attachments),
        )
    )


def team_notice(app: App, purpose: str, now: datetime, context: Mapping[str, Any],
                subject: str) -> Outgoing:
    """Staff news about no ticket (a mail held in quarantine): to the team,
    from the support address, with the loop header as all our mail."""
    h = app.settings.helpdesk
    rendered = app.templates.render(purpose, {"helpdesk_name": h.name, **context})
    return compose(
        Draft(
            purpose=purpose,
            from_addr=Address(h.support_address, h.name),
            to=team(app),
            subject=subject,
            text=rendered.text,
            html=rendered.html,
            message_id=f"hd.{purpose.replace('_', '-')}.{uuid.uuid4().hex}@{h.support_domain}",
            date=now,
            automatic=True,
            auto_submitted="auto-generated",
            loop_value=h.loop_value,
        )
    )


def team(app: App, ticket: Ticket | None = None) -> tuple[Address, ...]:
    """Where staff news about ``ticket`` goes: its customer's own team address
    when the configuration gives one, else the helpdesk's team address."""
    h = app.settings.helpdesk
    if ticket is not None and ticket.customer:
        for customer in app.settings.customers:
            if customer.name == ticket.customer and customer.team_address:
                return (Address(customer.team_address, f"{customer.name} team"),)
    return (Address(h.team_address, h.name + " team"),)
