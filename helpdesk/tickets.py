"""Ticket operations inside the caller's transaction (I/O shell over the DB).

The decisions are made by the pure core (threading, SLA, escalation); these
functions only write them down: rows, events, SLA deadlines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import Integer, bindparam, text
from sqlalchemy import select as core_select
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, select

from helpdesk.app import App
from helpdesk.ingest.inbound import Address, Attachment, InboundEmail
from helpdesk.models import (
    AttachmentRow,
    Blob,
    Counter,
    Event,
    Message,
    Notice,
    Participant,
    ThreadId,
    Ticket,
)
from helpdesk.prepared import run
from helpdesk.rows import (
    connection,
    insert_missing,
    insert_returning_id,
    insert_rows,
    model_table,
    upsert,
)
from helpdesk.sla.deadlines import Status as SlaStatus
from helpdesk.sla.deadlines import StatusChange, Target, TicketClock, compute_sla
from helpdesk.sla.notices import NoticeKey, NoticeKind, next_wakeup
from helpdesk.sla.policy import Plan, Priority
from helpdesk.streamed import insert_streamed
from helpdesk.threading.reference import format_reference
from helpdesk.threading.resolve import TicketFacts, referenced_ids

STATUSES = ("new", "open", "pending", "resolved", "closed")
_TICKET_COLUMNS = [c for c in Ticket.__table__.columns if c.name != "id"]  # type: ignore[attr-defined]

_TICKETS = model_table(Ticket)
_PARTICIPANTS = model_table(Participant)
# Asked once or twice per reply: built once (see helpdesk.rows).
_BY_REFERENCE = select(Ticket).where(Ticket.reference == bindparam("ref"))
_PEOPLE = select(Participant).where(Participant.ticket_id == bindparam("ticket_id"))
_ADDRESSES = core_select(_PARTICIPANTS.c.addr).where(
    _PARTICIPANTS.c.ticket_id == bindparam("ticket_id"))
_FACTS = (
    core_select(_TICKETS.c.reference, _TICKETS.c.status, _TICKETS.c.closed_at,
                _PARTICIPANTS.c.addr)
    .select_from(_TICKETS.outerjoin(_PARTICIPANTS, _PARTICIPANTS.c.ticket_id == _TICKETS.c.id))
    .where(_TICKETS.c.reference == bindparam("ref"))
)

_NEXT_NUMBER = text(
    "UPDATE counter SET value = value + 1 WHERE name = 'ticket' RETURNING value"
).columns(value=Integer)


def next_number(session: Session) -> int:
    """The next ticket number. The UPDATE takes a row lock held to commit, so
    concurrent daemons on PostgreSQL get distinct, gap-free numbers."""
    rows = run(connection(session), _NEXT_NUMBER)
    if rows:
        return int(rows[0][0])
    session.add(Counter(name="ticket", value=1))
    session.flush()
    return 1


def get_by_reference(session: Session, reference: str) -> Ticket | None:
    return session.exec(_BY_REFERENCE, params={"ref": reference.upper()}).first()


def facts(session: Session, reference: str) -> TicketFacts | None:
    """What threading needs to know of a ticket, in one statement: loading
    the ticket and its people as ORM objects took two, at six times the cost."""
    rows = connection(session).execute(_FACTS, {"ref": reference.upper()}).all()
    if not rows:
        return None
    ref, status, closed_at, _ = rows[0]
    return TicketFacts(reference=ref, status=status, closed_at=closed_at,
                       participants=frozenset(row[3] for row in rows if row[3] is not None))


def participants(session: Session, ticket_id: int) -> dict[str, Participant]:
    rows = session.exec(_PEOPLE, params={"ticket_id": ticket_id}).all()
    return {p.addr: p for p in rows}


def addresses(session: Session, ticket_id: int) -> set[str]:
    """The addresses on a ticket, without loading its participants as objects."""
    return {str(addr) for addr, in run(connection(session), _ADDRESSES, {"ticket_id": ticket_id})}


def add_participants(
    app: App, session: Session, ticket: Ticket, people: Iterable[Address], role: str,
    *, existing: Iterable[str] | None = None,
) -> list[str]:
    """Add people who are not the helpdesk itself; returns the new addresses.
    ``existing``: the addresses already on the ticket, when the caller knows."""
    assert ticket.id is not None
    known = addresses(session, ticket.id) if existing is None else set(existing)
    added: dict[str, dict[str, object]] = {}
    for person in people:
        addr = person.addr.lower()
        if not addr or addr in known or addr in added or app.is_own_address(addr):
            continue
        added[addr] = {"ticket_id": ticket.id, "addr": addr, "name": person.name[:255],
                       "role": role}
    insert_rows(session, Participant, list(added.values()))
    return list(added)


def remove_participant(session: Session, ticket: Ticket, addr: str) -> bool:
    assert ticket.id is not None
    row = participants(session, ticket.id).get(addr.lower())
    if row is None or row.role == "requester":
        return False
    session.delete(row)
    return True


def open_ticket(
    app: App,
    session: Session,
    mail: InboundEmail,
    now: datetime,
    *,
    subject: str,
    priority: Priority,
    priority_source: str,
    category: str,
    plan: Plan,
    customer: str,
    region: str,
    subject_key: str,
    mentions: Iterable[str] = (),
    linked_to: str = "",
) -> Ticket:
    number = next_number(session)
    # No sender at all: keep the ticket (staff can still act on it), but there
    # is nobody to confirm to or to relay to.
    requester = mail.from_ or Address("", "(no sender)")
    ticket = Ticket(
        number=number,
        reference=format_reference(app.settings.helpdesk.reference_prefix, number),
        subject=subject[:2000] or "(no subject)",
        subject_key=subject_key[:255],
        requester_addr=requester.addr,
        requester_name=requester.name[:255],
        status="new",
        priority=priority.value,
        priority_source=priority_source,
        category=category,
        plan=plan.value,
        customer=customer,
        region=region,
        created_at=now,
        updated_at=now,
        mentions=",".join(mentions)[:255],
        linked_to=linked_to,
    )
    # Deadlines first, so the INSERT carries them (no UPDATE straight after).
    _set_sla(app, ticket, (), set())
    ticket.id = insert_returning_id(session, Ticket, {
        column.name: getattr(ticket, column.name) for column in _TICKET_COLUMNS
    })
    # Written by the INSERT above: the session takes it as loaded, and
    # tracks later changes (status, escalation) as UPDATEs.
    make_transient_to_detached(ticket)
    session.add(ticket)
    # A ticket made in this transaction has nobody on it yet: no need to ask.
    on_ticket: list[str] = []
    if requester.addr:
        on_ticket = add_participants(app, session, ticket, [requester], "requester", existing=())
    add_participants(app, session, ticket, [*mail.to, *mail.cc], "cc", existing=on_ticket)
    add_event(session, ticket, "created", requester.addr, now, priority_source=priority_source)
    if linked_to:
        add_event(session, ticket, "linked", requester.addr, now, to=linked_to)
    for ref in mentions:
        add_event(session, ticket, "mentions", requester.addr, now, reference=ref)
    return ticket


def add_event(
    session: Session,
    ticket: Ticket | None,
    kind: str,
    actor: str,
    now: datetime,
    /,
    **detail: object,
) -> None:
    insert_rows(session, Event, [event_row(ticket.id if ticket else None, kind, actor, now,
                                           detail)])


def event_row(ticket_id: int | None, kind: str, actor: str, now: datetime,
              detail: Mapping[str, object]) -> dict[str, object]:
    """One line of a ticket's history, as a row."""
    return {
        "ticket_id": ticket_id,
        "kind": kind,
        "actor": actor[:320],
        "detail": json.dumps(dict(detail), default=str, ensure_ascii=False),
        "created_at": now,
    }


def add_message(
    session: Session,
    ticket: Ticket,
    *,
    direction: str,
    kind: str,
    now: datetime,
    body: str,
    mail: InboundEmail | None = None,
    inbound_mail_id: int | None = None,
    subject: str = "",
    from_addr: str = "",
    from_name: str = "",
    to: Iterable[str] = (),
    cc: Iterable[str] = (),
    message_id: str = "",
    in_reply_to: str = "",
    references: Iterable[str] = (),
    outbox_id: int | None = None,
) -> None:
    assert ticket.id is not None
    if mail is not None:
        from_addr = from_addr or mail.sender_addr
        from_name = from_name or (mail.from_.name if mail.from_ else "")
        to = to or [a.addr for a in mail.to]
        cc = cc or [a.addr for a in mail.cc]
        message_id = message_id or mail.message_id
        in_reply_to = in_reply_to or " ".join(mail.in_reply_to)
        references = references or mail.references
        subject = subject or mail.subject
    row = {
        "ticket_id": ticket.id,
        "direction": direction,
        "kind": kind,
        "from_addr": from_addr[:320],
        "from_name": from_name[:255],
        "to_addrs": "\n".join(to),
        "cc_addrs": "\n".join(cc),
        "message_id": message_id[:998],
        "in_reply_to": in_reply_to,
        "references": "\n".join(references),
        "subject": subject,
        "body": body,
        "inbound_mail_id": inbound_mail_id,
        "outbox_id": outbox_id,
        "created_at": now,
    }
    if mail is not None and mail.attachments:
        # Attachment rows need the message's id.
        store_attachments(session, insert_returning_id(session, Message, row), mail.attachments)
    else:
        insert_rows(session, Message, [row])
    if mail is not None:
        remember_ids(session, ticket.id, message_id[:998], referenced_ids(mail))
    elif outbox_id is None:
        # Our own outbound ids are made fresh (random part and HMAC tag), so
        # they cannot be stored already. Mail that went through the outbox
        # was remembered there.
        remember_ids(session, ticket.id, message_id[:998], fresh=True)
    if ticket.updated_at != now:
        ticket.updated_at = now
        session.add(ticket)


def remember_ids(
    session: Session, ticket_id: int, own: str, referenced: Iterable[str] = (),
    *, fresh: bool = False,
) -> None:
    """Record ``own`` for this ticket, and ``referenced`` ids not yet known.
    ``fresh``: ``own`` was just generated by us and nothing else is given."""
    if fresh:
        if own:
            insert_rows(session, ThreadId, [{"message_id": own, "ticket_id": ticket_id}])
        return
    if own:
        upsert(session, ThreadId, {"message_id": own, "ticket_id": ticket_id},
               key=["message_id"], update=["ticket_id"])
    ghosts = [{"message_id": i, "ticket_id": ticket_id}
              for i in dict.fromkeys(referenced) if i and i != own]
    insert_missing(session, ThreadId, ghosts, key=["message_id"])


def store_attachments(session: Session, message_id: int, items: Iterable[Attachment]) -> None:
    """Content-addressed: the bytes go to ``blob`` once per hash, and the
    sender's filename stays a column value, never a path."""
    for item in items:
        insert_streamed(session, Blob, {"sha256": item.sha256, "size": item.size,
                                        "data": item.payload}, "data", key=["sha256"])
        insert_rows(session, AttachmentRow, [{
            "message_id": message_id,
            "sha256": item.sha256,
            "filename": item.filename,
            "content_type": item.content_type,
            "size": item.size,
        }])


def set_status(
    app: App, session: Session, ticket: Ticket, status: str, now: datetime, actor: str
) -> bool:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    if ticket.status == status:
        return False
    old = ticket.status
    ticket.status = status
    ticket.updated_at = now
    if status == "resolved":
        ticket.resolved_at = now
    if status == "closed":
        ticket.closed_at = now
    if status in ("new", "open", "pending"):
        ticket.resolved_at = None
        ticket.closed_at = None
    session.add(ticket)
    add_event(session, ticket, "status", actor, now, old=old, new=status)
    session.flush()
    recompute_sla(app, session, ticket, now)
    return True


def set_priority(
    app: App, session: Session, ticket: Ticket, priority: Priority, now: datetime, actor: str,
    source: str = "staff",
) -> bool:
    if ticket.priority == priority.value:
        return False
    add_event(session, ticket, "priority", actor, now, old=ticket.priority, new=priority.value)
    ticket.priority = priority.value
    ticket.priority_source = source
    ticket.updated_at = now
    session.add(ticket)
    session.flush()
    recompute_sla(app, session, ticket, now)
    return True


def status_history(session: Session, ticket: Ticket) -> tuple[StatusChange, ...]:
    assert ticket.id is not None
    events = session.exec(
        select(Event.created_at, Event.detail)
        .where(Event.ticket_id == ticket.id, Event.kind == "status")
        .order_by(Event.created_at, Event.id)  # type: ignore[arg-type]
    ).all()
    return status_changes(
        [(at, str(json.loads(detail or "{}").get("new", ""))) for at, detail in events],
        ticket.created_at,
    )


def status_changes(
    events: Iterable[tuple[datetime, str]], created_at: datetime
) -> tuple[StatusChange, ...]:
    """Status events as the SLA clocks read them. Pure: unknown statuses are
    ignored, and an event stamped before the ticket counts from its creation."""
    return tuple(
        StatusChange(at=max(at, created_at), status=SlaStatus(new))
        for at, new in events
        if new in STATUSES
    )


def sent_notices(session: Session, ticket: Ticket) -> set[NoticeKey]:
    assert ticket.id is not None
    rows = session.exec(select(Notice).where(Notice.ticket_id == ticket.id)).all()
    keys: set[NoticeKey] = set()
    for row in rows:
        if row.target in (t.value for t in Target):
            keys.add(NoticeKey(Target(row.target), NoticeKind(row.kind), row.cycle))
    return keys


def recompute_sla(
    app: App, session: Session, ticket: Ticket, now: datetime, *, fresh: bool = False
) -> None:
    """Keep ``first_response_due``, ``resolution_due`` and ``next_sla_at``
    current: a pure function of the policy and the ticket's history.
    ``fresh``: a ticket created in this transaction has no history to read."""
    history = () if fresh else status_history(session, ticket)
    sent = set() if fresh or ticket.id is None else sent_notices(session, ticket)
    _set_sla(app, ticket, history, sent)
    session.add(ticket)


def _set_sla(app: App, ticket: Ticket, history: tuple[StatusChange, ...],
             sent: set[NoticeKey]) -> None:
    clock = TicketClock(
        created_at=ticket.created_at,
        priority=Priority(ticket.priority),
        plan=Plan(ticket.plan),
        status_changes=history,
        first_public_reply_at=ticket.first_response_at,
    )
    state = compute_sla(clock, app.policy)
    ticket.first_response_due = state.first_response.due_at
    ticket.resolution_due = state.resolution.due_at
    ticket.sla_cycle = state.resolution.cycle
    sla_next = next_wakeup(state, sent)
    candidates = [t for t in (sla_next, ticket.escalation_ack_due) if t is not None]
    ticket.next_sla_at = min(candidates) if candidates else None
