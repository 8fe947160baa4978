"""Write down what one classified mail means: a new ticket, a reply, a staff
answer, a bounce or an out-of-office. Runs inside the pipeline's savepoint.

Every decision is taken by the pure core (``helpdesk.threading``,
``helpdesk.sla``); this module gathers the facts those functions need from
the database and records their answers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email.utils import getaddresses

from sqlalchemy import ARRAY, String, any_, bindparam, delete
from sqlalchemy import select as core_select
from sqlmodel import Session, select

from helpdesk import notify, outbox, tickets
from helpdesk.app import App
from helpdesk.compose import Outgoing, UndeliverableAddressError, is_deliverable
from helpdesk.errors import BadMessageError
from helpdesk.escalate import escalate
from helpdesk.escalation.markers import find_marker
from helpdesk.ingest.autoreply import is_robot_address
from helpdesk.ingest.classify import Classification, Kind
from helpdesk.ingest.inbound import Address, Attachment, InboundEmail
from helpdesk.ingest.parse import parse_email
from helpdesk.ingest.quotes import extract_new_text
from helpdesk.logs import log
from helpdesk.models import (
    InboundRaw,
    Message,
    Participant,
    ThreadId,
    Ticket,
    Undeliverable,
)
from helpdesk.prepared import run
from helpdesk.rows import connection, model_table
from helpdesk.sla.classify import classify_mail
from helpdesk.sla.policy import Plan, Priority
from helpdesk.threading import commands as staff_commands
from helpdesk.threading.reference import find_subject_references, tag_subject
from helpdesk.threading.reference import subject_key as make_subject_key
from helpdesk.threading.resolve import (
    Facts,
    Resolution,
    TicketFacts,
    chain_candidates,
    resolve,
    signed_chain_refs,
    thread_topic_key,
    tokens_in,
)
from helpdesk.threading.staff import is_staff_address, verify_sender
from helpdesk.threading.tokens import parse_message_id

logger = logging.getLogger(__name__)

# A list's tags before a subject ("[it-help] "), which its copies carry.
_LIST_TAGS_RE = re.compile(r"^(?:\s*\[[^\]]{0,100}\])+")
# How far into an escalation mail's text a quoted reference is looked for.
BODY_REFERENCE_CHARS = 4000

# Asked once per mail: built once (see helpdesk.rows).
_MESSAGES = model_table(Message)
_THREAD_IDS = model_table(ThreadId)
_TICKETS = model_table(Ticket)
_SEEN = core_select(_MESSAGES.c.from_addr, _MESSAGES.c.inbound_mail_id).where(
    _MESSAGES.c.message_id == bindparam("mid"), _MESSAGES.c.direction == "inbound"
).limit(1)
# The reference as a subquery, not a join: the PostgreSQL form below is
# planned for every mail, and PostgreSQL planned this in 40-50 µs against
# 60-90 µs for the join (EXPLAIN ANALYZE, after 1,000 mails).
_THREADS = core_select(
    _THREAD_IDS.c.message_id,
    core_select(_TICKETS.c.reference).where(_TICKETS.c.id == _THREAD_IDS.c.ticket_id)
    .scalar_subquery(),
)
_UNDELIVERABLE = model_table(Undeliverable)
_WRITES_AGAIN = (delete(_UNDELIVERABLE).where(_UNDELIVERABLE.c.addr == bindparam("addr"))
                 .returning(_UNDELIVERABLE.c.addr))
# SQLite, asked for every mail (its own Message-ID at least): a fixed number
# of slots, unused ones NULL (which IN never matches), so the statement is
# prepared once (an expanding IN is built anew for each count of ids).
_CHAIN_SLOTS = 8
_CHAIN = _THREADS.where(
    _THREAD_IDS.c.message_id.in_([bindparam(f"id{i}") for i in range(_CHAIN_SLOTS)]))
_LONG_CHAIN = _THREADS.where(_THREAD_IDS.c.message_id.in_(bindparam("ids", expanding=True)))
# PostgreSQL: one array of exactly the ids, planned for them each time. A
# plan prepared once is made while the tables are small, and kept until
# they are next analyzed: with autovacuum off it scanned thread_id and ticket
# for every mail, a cost growing with the store (the NULL slots, costed as
# lookups, made the index look dearer still).
_CHAIN_ANY = _THREADS.where(
    _THREAD_IDS.c.message_id == any_(bindparam("ids", type_=ARRAY(String))))


@dataclass(frozen=True)
class Applied:
    outcome: str
    ticket_id: int | None = None
    reference: str = ""
    ignored: bool = False


def apply_mail(
    app: App,
    session: Session,
    mail: InboundEmail,
    inbound_id: int,
    classification: Classification,
    now: datetime,
    new_text: str | None = None,
) -> Applied:
    """``new_text``: the mail's text without quoted history, when the parse
    workers worked it out already."""
    if classification.kind is Kind.OWN_LOOP:
        return Applied("own_loop", ignored=True)
    if classification.kind is Kind.BOUNCE:
        return _bounce(app, session, mail, classification, now)
    mail = _with_sender(mail)
    if classification.kind is Kind.NORMAL:
        mail = _form_sender(app, mail)
    reused = False
    if mail.message_id:
        earlier = _earlier_with_id(session, mail.message_id)
        if earlier is not None:
            if _is_copy(session, earlier, mail):
                # The same mail delivered twice (To and Cc both reach
                # support; a copy through a list, which adds a footer).
                return Applied("duplicate_message_id", ignored=True)
            # RFC 5322 §3.6.4 makes the id unique, but printers and scripts
            # reuse theirs: another mail under it is kept, threaded without
            # it, and leaves the earlier one's place in its thread alone.
            log(logger, logging.WARNING, "message id reused by another mail",
                message_id=mail.message_id, sender=mail.sender_addr)
            mail = replace(mail, message_id="")
            reused = True
    unverified = _unverified_staff(app, mail) if classification.kind is Kind.NORMAL else ""
    staff = classification.kind is Kind.NORMAL and _is_staff(app, mail) and not unverified
    if classification.kind is Kind.NORMAL and mail.sender_addr and run(
        connection(session), _WRITES_AGAIN, {"addr": mail.sender_addr}
    ):
        # A person writing from an address that bounced us is there again:
        # their confirmations go out, rather than waiting out the days.
        log(logger, logging.INFO, "undeliverable address writes again",
            sender=mail.sender_addr, message_id=mail.message_id)
    if classification.kind is Kind.AUTO_REPLY:
        return _auto_reply(app, session, mail, inbound_id,
                           _resolve(app, session, mail, staff, now, ""), now)
    body = extract_new_text(mail.text) if new_text is None else new_text
    resolution = _resolve(app, session, mail, staff, now, body)
    result = _dispatch(app, session, mail, inbound_id, classification, resolution, staff,
                       unverified, now, body)
    if unverified or reused:
        # Recorded once the ticket is known, so it shows in that ticket's history.
        ticket_row = session.get(Ticket, result.ticket_id) if result.ticket_id else None
        if unverified:
            tickets.add_event(session, ticket_row, "security", mail.sender_addr, now,
                              reason=unverified, message_id=mail.message_id)
        if reused:
            tickets.add_event(session, ticket_row, "message_id_reused", mail.sender_addr, now,
                              inbound_mail_id=inbound_id)
    return result


def _dispatch(
    app: App,
    session: Session,
    mail: InboundEmail,
    inbound_id: int,
    classification: Classification,
    resolution: Resolution,
    staff: bool,
    unverified: str,
    now: datetime,
    body: str,
) -> Applied:
    trigger, subject = _escalation_trigger(app, mail)
    ticket = (
        tickets.get_by_reference(session, resolution.reference)
        if resolution.action == "reply" and resolution.reference
        else None
    )
    if ticket is not None and trigger and not staff and not _is_participant(session, ticket, mail):
        # A stranger's escalation escalates nothing on someone else's ticket:
        # it opens their own escalated ticket, linked for staff to see.
        return _new_ticket(app, session, mail, inbound_id, classification, resolution, now,
                           body=body, subject=subject, escalation=trigger,
                           stranger_of=ticket.reference,
                           unverified=unverified)
    if ticket is not None and staff:
        # Staff writing to the escalation address write to managers, not to
        # the client: kept as a note, never relayed.
        result = _staff_mail(app, session, mail, inbound_id, ticket, now, body,
                             internal=trigger == "address")
    elif ticket is not None:
        if trigger:
            # Escalated first, so that the staff's notice of this reply shows
            # the priority and deadlines the escalation gave.
            escalate(app, session, ticket, mail, trigger=trigger, allowed=True, staff=False,
                     body=body, now=now, send_client_ack=True)
        return _client_reply(app, session, mail, inbound_id, ticket, resolution, now, subject,
                             body=body, unverified=unverified)
    else:
        # A stranger naming someone else's ticket in an escalation ("[HD-1]
        # [ESCALATE]", or HD-1 in mail to the escalation address) is not let
        # onto it (the resolver said "new"); their ticket is linked to it.
        named = resolution.mentions[0] if trigger and resolution.mentions else ""
        return _new_ticket(app, session, mail, inbound_id, classification, resolution, now,
                           body=body, subject=subject, escalation=trigger, stranger_of=named,
                           unverified=unverified)
    if trigger:
        # Staff escalating a ticket themselves is internal: the client did not
        # ask, so is not told "we have received your escalation".
        escalate(app, session, ticket, mail, trigger=trigger, allowed=False, staff=True,
                 body=body, now=now, send_client_ack=False)
    return result


def _with_sender(mail: InboundEmail) -> InboundEmail:
    """A mail without a usable From is attributed to Sender, Reply-To or the
    return path (RFC 5322 §3.6.2). With none of them it still becomes a
    ticket, for staff to read (the team's notice says there is no sender),
    but nobody is confirmed and a staff reply is returned, not relayed."""
    if mail.from_ is not None:
        return mail
    for candidate in (*_header_addresses(mail, "sender"), *mail.reply_to):
        return replace(mail, from_=candidate)
    if mail.return_path and "@" in mail.return_path:
        return replace(mail, from_=Address(mail.return_path))
    return mail


def _form_sender(app: App, mail: InboundEmail) -> InboundEmail:
    """A web form sends from noreply@ with the customer in Reply-To, where
    RFC 5322 §3.6.2 says answers go: the customer is the one writing, and
    becomes the requester. Only then: a person's Reply-To (a team list, an
    assistant) does not make someone else the requester."""
    if mail.from_ is None or len(mail.reply_to) != 1:
        return mail
    person = mail.reply_to[0]
    if (not is_robot_address(mail.from_.addr) or is_robot_address(person.addr)
            or "@" not in person.addr or app.is_own_address(person.addr)
            or _is_staff_addr(app, person.addr)):
        return mail
    return replace(mail, from_=person)


def _header_addresses(mail: InboundEmail, name: str) -> list[Address]:
    value = mail.header(name) or ""
    return [Address(addr.lower(), display) for display, addr in getaddresses([value])
            if "@" in addr]


def _escalation_trigger(app: App, mail: InboundEmail) -> tuple[str, str]:
    """("marker" | "address" | "", the subject without any marker)."""
    found, subject = find_marker(mail.subject, app.settings.escalation.markers)
    if found:
        return "marker", subject
    escalation = app.settings.helpdesk.escalation_address.lower()
    if any(a.addr == escalation for a in mail.recipients):
        return "address", mail.subject
    return "", mail.subject


def _is_participant(session: Session, ticket: Ticket, mail: InboundEmail) -> bool:
    assert ticket.id is not None
    return mail.sender_addr in tickets.addresses(session, ticket.id)


# -- facts for the pure resolver -------------------------------------------

def _resolve(
    app: App, session: Session, mail: InboundEmail, staff: bool, now: datetime, body: str
) -> Resolution:
    """Gather what the database knows about the references this mail carries,
    then let the pure resolver decide.

    Mail to the escalation address is asked to quote its reference, which
    people do in the text as often as in the subject: there the text's
    references count as the subject's would (for the ticket's own people only;
    staff, who may act on any ticket, name tickets in the text in passing).
    """
    h = app.settings.helpdesk
    chain: dict[str, str] = {}
    candidates = chain_candidates(mail)
    if candidates:
        chain.update(_chain_refs(session, candidates))
        chain.update(signed_chain_refs(mail, h.support_domain, h.secret))
    topic_refs: tuple[str, ...] = ()
    topic = thread_topic_key(mail)
    if topic and not mail.in_reply_to and not mail.references:
        rows2 = session.exec(
            select(Ticket.reference)
            .join(Participant, Participant.ticket_id == Ticket.id)  # type: ignore[arg-type]
            .where(Ticket.subject_key == topic, Participant.addr == mail.sender_addr)
            .order_by(Ticket.updated_at.desc())  # type: ignore[attr-defined]
            .limit(3)
        ).all()
        topic_refs = tuple(rows2)
    token_refs = tokens_in(mail, h.support_address, h.secret)
    subject_refs = tuple(find_subject_references(mail.subject, h.reference_prefix))
    escalation = h.escalation_address.lower()
    if not staff and not subject_refs and body and any(
        a.addr == escalation for a in mail.recipients
    ):
        subject_refs = tuple(find_subject_references(body[:BODY_REFERENCE_CHARS],
                                                     h.reference_prefix))
    known: dict[str, TicketFacts] = {}
    for ref in {*token_refs, *chain.values(), *topic_refs, *subject_refs}:
        facts = tickets.facts(session, ref)
        if facts is not None:
            known[ref] = facts
    return resolve(
        mail,
        Facts(token_refs=token_refs, chain_refs=chain, thread_topic_refs=topic_refs,
              subject_refs=subject_refs, tickets=known, is_staff_verified=staff),
        now=now,
        reopen_window=timedelta(days=h.reopen_window_days),
    )


def _chain_refs(session: Session, candidates: list[str]) -> dict[str, str]:
    """The tickets that the stored ``candidates`` belong to, by Message-ID."""
    conn = connection(session)
    if conn.dialect.name == "postgresql":
        found = run(conn, _CHAIN_ANY, {"ids": candidates}, prepare=False)
    elif len(candidates) > _CHAIN_SLOTS:
        # A long References chain (up to a few hundred ids): one statement
        # built for its length beats a round trip per eight ids.
        found = [tuple(row) for row in conn.execute(_LONG_CHAIN, {"ids": candidates})]
    else:
        found = run(conn, _CHAIN, {f"id{i}": candidates[i] if i < len(candidates) else None
                                   for i in range(_CHAIN_SLOTS)})
    return {str(mid): str(ref) for mid, ref in found}


def _earlier_with_id(session: Session, message_id: str) -> tuple[str, int | None] | None:
    """(sender, inbound row) of a mail stored on a ticket under ``message_id``."""
    found = run(connection(session), _SEEN, {"mid": message_id})
    return (str(found[0][0]), found[0][1]) if found else None


def _is_copy(session: Session, earlier: tuple[str, int | None], mail: InboundEmail) -> bool:
    """Whether ``mail`` is the earlier one again: the same sender, and the
    same text but for what a list or a relay added at its end (a footer, a
    disclaimer). Copies differ in trace fields, so bytes cannot tell; a
    monitor reusing its one id for each alert sends other text. Asked only
    when an id repeats: the earlier mail is read again from its stored bytes."""
    sender, inbound_id = earlier
    if sender != mail.sender_addr:
        return False
    stored = session.get(InboundRaw, inbound_id) if inbound_id is not None else None
    if stored is None:
        return True  # nothing to compare with: as before, the id decides
    try:
        first = parse_email(stored.raw)
    except BadMessageError:
        return True
    if _LIST_TAGS_RE.sub("", first.subject).strip() != _LIST_TAGS_RE.sub("", mail.subject).strip():
        return False
    was, now = " ".join(first.text.split()), " ".join(mail.text.split())
    if not was or not now:
        return was == now
    return now.startswith(was) or was.startswith(now)


def _is_staff(app: App, mail: InboundEmail) -> bool:
    return _is_staff_addr(app, mail.sender_addr)


def _is_staff_addr(app: App, addr: str) -> bool:
    """Configured staff, and the incident managers: their briefing tells them
    that answering it acts on the ticket, so they must be believed like staff
    (after the same verification)."""
    return is_staff_address(addr, app.settings.helpdesk.staff) or any(
        addr == m.address.lower() for m in app.managers
    )


def _unverified_staff(app: App, mail: InboundEmail) -> str:
    """Why a mail from a staff address is not believed, or "" (not staff, or verified)."""
    h = app.settings.helpdesk
    if not _is_staff(app, mail):
        return ""
    verdict = verify_sender(mail, h.authserv_id, h.trust_staff_from)
    if verdict.verified:
        return ""
    # Someone used a staff address without proof: treated as a client, and
    # the caller records a security event on the ticket it lands on.
    log(logger, logging.WARNING, "unverified staff sender", message_id=mail.message_id,
        sender=mail.sender_addr, reason=verdict.reason)
    return verdict.reason or "not authenticated"


# -- the outcomes -------------------------------------------------------------

def _new_ticket(
    app: App,
    session: Session,
    mail: InboundEmail,
    inbound_id: int,
    classification: Classification,
    resolution: Resolution,
    now: datetime,
    *,
    body: str,
    subject: str,
    escalation: str = "",
    stranger_of: str = "",
    unverified: str = "",
) -> Applied:
    decided = classify_mail(subject, mail.text, mail.headers, app.priority_rules,
                            app.category_rules)
    customer = app.customer_for(mail.sender_addr)
    plan = Plan(customer.plan) if customer else Plan(app.settings.sla.default_plan)
    ticket = tickets.open_ticket(
        app, session, mail, now,
        subject=decided.subject,
        priority=decided.priority,
        priority_source=decided.priority_source.value,
        category=decided.category.value,
        plan=plan,
        customer=customer.name if customer else "",
        region=customer.region if customer else "",
        subject_key=make_subject_key(decided.subject),
        mentions=tuple(dict.fromkeys([*resolution.mentions, *filter(None, [stranger_of])])),
        linked_to=resolution.linked_to or stranger_of,
    )
    tickets.add_message(session, ticket, direction="inbound", kind="client", now=now, body=body,
                        mail=mail, inbound_mail_id=inbound_id, subject=subject)
    cfg = app.settings.outbound
    may_answer = classification.no_auto_reply_reason is None
    held_back = ""  # why the client was sent no confirmation, for staff
    if escalation:
        # The escalation acknowledgement replaces the plain confirmation.
        escalate(app, session, ticket, mail, trigger=escalation, allowed=True, staff=False,
                 body=body, now=now, send_client_ack=may_answer)
    elif may_answer and mail.from_ is not None:
        try:
            confirmation = notify.build(
                app, ticket, "confirmation", now, [mail.from_],
                in_reply_to=mail.message_id, references=mail.references,
            )
        except UndeliverableAddressError as exc:
            tickets.add_event(session, ticket, "confirmation_not_sent", mail.sender_addr, now,
                              reason=str(exc))
            held_back = str(exc)
        else:
            row, held_back = outbox.enqueue(session, cfg, confirmation, now, ticket.id)
            _record_outbound(session, ticket, confirmation, row, now)
    else:
        log(logger, logging.INFO, "no confirmation", message_id=mail.message_id,
            ticket=ticket.reference, reason=classification.no_auto_reply_reason)
    files, left_out = _within_limit(app, mail.attachments)
    staff_mail = notify.build(
        app, ticket, "staff_new_ticket", now, notify.team(app, ticket),
        context={"body": body, "unverified": unverified, "held_back": held_back,
                 "left_out": left_out},
        subject=f"{tag_for(ticket)} New: {ticket.subject}", attachments=files,
    )
    outbox.enqueue(session, cfg, staff_mail, now, ticket.id, rate_limited=False)
    if ticket.category == "billing" and app.settings.helpdesk.billing_address:
        billing = notify.build(
            app, ticket, "staff_new_ticket", now,
            [Address(app.settings.helpdesk.billing_address)], context={"body": body},
            subject=f"{tag_for(ticket)} Billing: {ticket.subject}",
        )
        outbox.enqueue(session, cfg, billing, now, ticket.id, rate_limited=False)
    return Applied("new_ticket", ticket.id, ticket.reference)


def _client_reply(
    app: App,
    session: Session,
    mail: InboundEmail,
    inbound_id: int,
    ticket: Ticket,
    resolution: Resolution,
    now: datetime,
    subject: str,
    *,
    body: str,
    unverified: str = "",
) -> Applied:
    tickets.add_message(session, ticket, direction="inbound", kind="client", now=now, body=body,
                        mail=mail, inbound_mail_id=inbound_id, subject=subject)
    actor = mail.sender_addr
    offered = [*mail.cc, *mail.to]
    not_added: list[str] = []
    assert ticket.id is not None
    known = tickets.addresses(session, ticket.id)
    if _may_add_people(app, mail, resolution, ticket, known):
        tickets.add_participants(app, session, ticket, offered, "cc", existing=known)
    else:
        not_added = sorted({a.addr.lower() for a in offered if a.addr
                            and a.addr.lower() not in known
                            and not app.is_own_address(a.addr.lower())})
        if not_added:
            tickets.add_event(session, ticket, "cc_not_added", actor, now,
                              addresses=not_added, matched_by=resolution.matched_by)
    if resolution.reopen or ticket.status in ("resolved", "closed"):
        tickets.add_event(session, ticket, "reopened", actor, now)
        tickets.set_status(app, session, ticket, "open", now, actor)
    elif ticket.status == "pending":
        # The client answered: the resolution clock runs again.
        tickets.set_status(app, session, ticket, "open", now, actor)
    files, left_out = _within_limit(app, mail.attachments)
    notice = notify.build(
        app, ticket, "staff_client_reply", now, _staff_recipients(app, ticket),
        context={"body": body, "sender": actor, "unverified": unverified,
                 "not_added": not_added, "left_out": left_out},
        subject=f"{tag_for(ticket)} Reply: {ticket.subject}", attachments=files,
    )
    outbox.enqueue(session, app.settings.outbound, notice, now, ticket.id, rate_limited=False)
    return Applied("reply", ticket.id, ticket.reference)


def _may_add_people(app: App, mail: InboundEmail, resolution: Resolution, ticket: Ticket,
                    on_ticket: set[str]) -> bool:
    """Whether a reply may put its To and Cc on the ticket. Everyone on it
    receives the staff's answers, so only mail that answers ours (a signed
    reply address or Message-ID), or from someone on it whose sender our
    server authenticated, may widen it: a subject reference, or an id seen
    in a thread, anyone can copy, and From anyone can write."""
    if resolution.matched_by == "token":
        return True
    h = app.settings.helpdesk
    if ticket.reference in signed_chain_refs(mail, h.support_domain, h.secret).values():
        return True
    # An authenticated From is genuine, which says nothing of whether its
    # sender belongs on this ticket: they must be on it already.
    return (mail.sender_addr in on_ticket
            and verify_sender(mail, h.authserv_id, h.trust_staff_from).verified)


def _staff_mail(
    app: App,
    session: Session,
    mail: InboundEmail,
    inbound_id: int,
    ticket: Ticket,
    now: datetime,
    new_text: str,
    *,
    internal: bool = False,
) -> Applied:
    h = app.settings.helpdesk
    parsed = staff_commands.parse_commands(new_text)
    actor = mail.sender_addr
    errors = [*parsed.errors, *(
        # Internal mail (copies of client replies, SLA and bounce notices)
        # goes to the assignee: a slip such as a client's address would
        # send it outside.
        f"#assign {c.value}: not a staff address"
        for c in parsed.commands
        if c.verb == "assign" and c.value != "me" and not _is_staff_addr(app, c.value.lower())
    )]
    to_note = any(a.addr == h.effective_note_address.lower() for a in mail.recipients)
    # Written to the client directly, support in copy: the client has it, and
    # a relay would send it twice, and to people its writer left out.
    direct = ticket.requester_addr.lower() in {a.addr.lower() for a in (*mail.to, *mail.cc)}
    relaying = not (parsed.is_note or to_note or internal or direct) and bool(
        parsed.remaining_text.strip())
    files, left_out = _within_limit(app, mail.attachments)
    if relaying and left_out:
        # Sent in part, the answer would not be the one written; and none of
        # it is done (its commands too), as with a command that is wrong.
        errors.extend(f"{f['name']} ({f['size']} bytes) is more than "
                      f"outbound.max_attach_bytes ({app.settings.outbound.max_attach_bytes}) "
                      "lets us send: send a link instead" for f in left_out)
    if errors:
        return _refuse_staff_mail(app, session, mail, inbound_id, ticket, now, new_text, errors)
    # Any verified staff action counts as acknowledging an escalation.
    ticket.escalation_ack_due = None
    explicit_status = _apply_commands(app, session, ticket, parsed.commands, actor, now)
    body = parsed.remaining_text
    if parsed.is_note or to_note or internal:
        tickets.add_message(session, ticket, direction="inbound", kind="note", now=now,
                            body=body, mail=mail, inbound_mail_id=inbound_id)
        return Applied("note", ticket.id, ticket.reference)
    if not body.strip():
        tickets.add_message(session, ticket, direction="inbound", kind="staff_command", now=now,
                            body=new_text, mail=mail, inbound_mail_id=inbound_id)
        return Applied("staff_commands", ticket.id, ticket.reference)
    assert ticket.id is not None
    people = tickets.participants(session, ticket.id)
    requester = Address(ticket.requester_addr, ticket.requester_name)
    copied = [Address(p.addr, p.name) for p in people.values()
              if p.role == "cc" and p.addr != ticket.requester_addr
              and not is_staff_address(p.addr, h.staff)]
    # One address in copy we cannot write to (an IDN one, say: SMTPUTF8 is
    # not assumed) must not stop the answer reaching the client.
    cc = tuple(a for a in copied if is_deliverable(a))
    skipped = [a.addr for a in copied if a not in cc]
    last_client, chain = _last_client_mail(session, ticket)
    staff_name = (mail.from_.name if mail.from_ and mail.from_.name else actor.split("@")[0])
    relay = None
    if not direct:
        try:
            relay = notify.build(
                app, ticket, "reply_relay", now, [requester], cc=cc, automatic=False,
                context={"body": body}, from_name=f"{staff_name} ({h.name})",
                subject=tag_subject(ticket.subject, ticket.reference, reply=True),
                in_reply_to=last_client, references=chain, attachments=files,
            )
        except UndeliverableAddressError as exc:
            # Commands above stand; only the relay cannot be made. Said to the
            # sender rather than quarantined: replaying would fail the same way.
            return _refuse_staff_mail(app, session, mail, inbound_id, ticket, now, new_text,
                                      [f"the client cannot be written to ({exc})"])
    tickets.add_message(session, ticket, direction="inbound", kind="staff_reply", now=now,
                        body=body, mail=mail, inbound_mail_id=inbound_id)
    if direct:
        # Whom staff wrote to themselves belongs on the ticket (staff are
        # verified, so may widen it), as a #cc add would put them.
        _add_cc(app, session, ticket,
                [a for a in (*mail.to, *mail.cc) if not _is_staff_addr(app, a.addr)], actor, now)
    if relay is not None:
        row = outbox.enqueue(session, app.settings.outbound, relay, now, ticket.id).id
        _record_outbound(session, ticket, relay, row, now, kind="staff_reply_relay")
        if skipped:
            tickets.add_event(session, ticket, "cc_not_written_to", actor, now,
                              addresses=skipped)
    if ticket.first_response_at is None:
        ticket.first_response_at = now
    if not ticket.assignee:
        ticket.assignee = actor
    if not explicit_status and ticket.status in ("new", "open"):
        # Waiting for the client now. A follow-up on a resolved or closed
        # ticket ("the fix is deployed") leaves it so: reopening is a
        # command's business (#status open), not a side effect.
        tickets.set_status(app, session, ticket, "pending", now, actor)
    tickets.recompute_sla(app, session, ticket, now)
    return Applied("staff_reply_direct" if direct else "staff_reply", ticket.id,
                   ticket.reference)


def _within_limit(app: App, files: Sequence[Attachment]) -> tuple[tuple[Attachment, ...],
                                                                   list[dict[str, object]]]:
    """The files that fit in outbound.max_attach_bytes, in order, and the
    rest as name and size: a relay refuses mail above its size limit, and a
    notice that bounces is news nobody hears."""
    room = app.settings.outbound.max_attach_bytes
    sent: list[Attachment] = []
    left: list[dict[str, object]] = []
    for file in files:
        if file.size <= room:
            sent.append(file)
            room -= file.size
        else:
            left.append({"name": file.filename or "(no name)", "size": file.size})
    return tuple(sent), left


def _refuse_staff_mail(app: App, session: Session, mail: InboundEmail, inbound_id: int,
                       ticket: Ticket, now: datetime, text: str, errors: list[str]) -> Applied:
    """Keep the staff mail on the ticket, unrelayed, and tell its sender why."""
    tickets.add_message(session, ticket, direction="inbound", kind="staff_rejected", now=now,
                        body=text, mail=mail, inbound_mail_id=inbound_id)
    reply = notify.build(
        app, ticket, "command_error", now, [mail.from_ or Address(mail.sender_addr)],
        context={"errors": errors},
        subject=f"{tag_for(ticket)} Not relayed: {ticket.subject}",
    )
    outbox.enqueue(session, app.settings.outbound, reply, now, ticket.id, rate_limited=False)
    return Applied("staff_command_error", ticket.id, ticket.reference)


def _auto_reply(
    app: App,
    session: Session,
    mail: InboundEmail,
    inbound_id: int,
    resolution: Resolution,
    now: datetime,
) -> Applied:
    """An out-of-office on a ticket is noted there and changes nothing else."""
    ref = resolution.reference
    ticket = tickets.get_by_reference(session, ref) if ref else None
    if ticket is None:
        return Applied("auto_reply", ignored=True)
    tickets.add_event(session, ticket, "auto_reply", mail.sender_addr, now,
                      subject=mail.subject[:200], message_id=mail.message_id)
    return Applied("auto_reply", ticket.id, ticket.reference, ignored=True)


def _bounce(
    app: App, session: Session, mail: InboundEmail, classification: Classification, now: datetime
) -> Applied:
    bounce = classification.bounce
    if bounce is None:
        return Applied("bounce", ignored=True)
    # Only a bounce of mail we sent counts: anyone can write a DSN, and one
    # that names no mail of ours would otherwise silence a client's
    # confirmations for weeks (RFC 3464 §2.3.2's Final-Recipient is just text).
    ticket = None
    sent_to: set[str] | None = None  # unknown for a signed id without its row
    if bounce.original_message_id:
        ours = session.exec(
            select(Ticket, Message).join(Message, Message.ticket_id == Ticket.id)  # type: ignore[arg-type]
            .where(Message.message_id == bounce.original_message_id,
                   Message.direction == "outbound")
        ).first()
        if ours is not None:
            ticket, sent = ours
            sent_to = {a for a in (*sent.to_addrs.split("\n"), *sent.cc_addrs.split("\n")) if a}
    if ticket is None and bounce.original_message_id:
        ref = parse_message_id(bounce.original_message_id, app.settings.helpdesk.support_domain,
                               app.settings.helpdesk.secret)
        ticket = tickets.get_by_reference(session, ref) if ref else None
    if ticket is None:
        log(logger, logging.INFO, "bounce of no mail of ours", message_id=mail.message_id,
            original=bounce.original_message_id, recipients=",".join(bounce.recipients))
        return Applied("bounce", ignored=True)
    days = app.settings.outbound.undeliverable_days
    for rcpt in bounce.recipients:
        if sent_to is not None and rcpt not in sent_to:
            continue  # that mail did not go there
        if bounce.permanent:
            until = now + timedelta(days=days)
            row = session.get(Undeliverable, rcpt)
            if row is None:
                session.add(Undeliverable(addr=rcpt, until=until, reason=bounce.reason[:500]))
            else:
                row.until, row.reason = until, bounce.reason[:500]
                session.add(row)
        tickets.add_event(session, ticket, "bounce", rcpt, now,
                          text=f"delivery to {rcpt} failed: {bounce.reason}",
                          permanent=bounce.permanent)
        notice = notify.build(
            app, ticket, "bounce_notice", now, _staff_recipients(app, ticket),
            context={"recipient": rcpt, "reason": bounce.reason,
                     "permanent": bounce.permanent,
                     "until": (now + timedelta(days=days)).date().isoformat()},
            subject=f"{tag_for(ticket)} Delivery failed: {rcpt}",
        )
        outbox.enqueue(session, app.settings.outbound, notice, now, ticket.id,
                       rate_limited=False)
    return Applied("bounce", ticket.id, ticket.reference, ignored=True)


# -- staff commands -------------------------------------------------------------

def _apply_commands(
    app: App,
    session: Session,
    ticket: Ticket,
    commands: tuple[staff_commands.Command, ...],
    actor: str,
    now: datetime,
) -> bool:
    """Carry out validated commands; True when one of them set the status."""
    explicit_status = False
    for command in commands:
        if command.verb == "status":
            tickets.set_status(app, session, ticket, command.value, now, actor)
            explicit_status = True
        elif command.verb == "priority":
            tickets.set_priority(app, session, ticket, Priority(command.value), now, actor)
        elif command.verb == "assign":
            assignee = actor if command.value == "me" else command.value.lower()
            tickets.add_event(session, ticket, "assigned", actor, now,
                              old=ticket.assignee, new=assignee)
            ticket.assignee = assignee
            session.add(ticket)
        elif command.verb == "cc_add":
            _add_cc(app, session, ticket, [Address(command.value)], actor, now)
        elif command.verb == "cc_remove" and tickets.remove_participant(
            session, ticket, command.value
        ):
            tickets.add_event(session, ticket, "cc_removed", actor, now, address=command.value)
    return explicit_status


# -- helpers ------------------------------------------------------------------

def _add_cc(app: App, session: Session, ticket: Ticket, people: Sequence[Address], actor: str,
            now: datetime) -> None:
    """Put ``people`` on the ticket in copy, each newcomer in its history."""
    for addr in tickets.add_participants(app, session, ticket, people, "cc"):
        tickets.add_event(session, ticket, "cc_added", actor, now, address=addr)


def tag_for(ticket: Ticket) -> str:
    return f"[{ticket.reference}]"


def _staff_recipients(app: App, ticket: Ticket) -> tuple[Address, ...]:
    if ticket.assignee:
        return (Address(ticket.assignee),)
    return notify.team(app, ticket)


def _last_client_mail(session: Session, ticket: Ticket) -> tuple[str, tuple[str, ...]]:
    """The Message-ID and References of the client's last mail, which a
    relay answers: RFC 5322 §3.6.4 has a reply's References be its parent's
    plus the parent, so the client's mail program threads the whole chain."""
    row = session.exec(
        select(Message.message_id, Message.references, Message.in_reply_to)
        .where(Message.ticket_id == ticket.id, Message.direction == "inbound",
               Message.kind == "client")
        .order_by(Message.id.desc())  # type: ignore[union-attr]
    ).first()
    if row is None:
        return "", ()
    message_id, references, parent = row
    chain = tuple(r for r in references.split("\n") if r)
    # §3.6.4: without References, the parent's id (In-Reply-To) begins the chain.
    return message_id, chain or tuple(parent.split())


def _record_outbound(session: Session, ticket: Ticket, out: Outgoing, outbox_id: int,
                     now: datetime, kind: str | None = None) -> None:
    """Outbound mail to the client is part of the ticket's conversation, and
    its Message-ID is how the client's reply finds its way back."""
    tickets.add_message(
        session, ticket, direction="outbound", kind=kind or out.purpose, now=now,
        body=out.text, subject=out.subject, from_addr=out.envelope_from,
        to=out.recipients, message_id=out.message_id,
        outbox_id=outbox_id,
    )


