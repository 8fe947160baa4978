"""Which ticket an inbound mail belongs to: the pure decision.

The shell gathers what the database knows into :class:`Facts` (using
:func:`tokens_in`, :func:`chain_candidates`, :func:`signed_chain_refs` and
:func:`thread_topic_key` to know what to ask) and calls :func:`resolve`.
The evidence is weighed strongest first:

1. a signed reply address among the recipients (only we can make one);
2. the Message-ID chain, RFC 5322 §3.6.4: In-Reply-To, then References
   from the newest id back, then the mail's own Message-ID;
3. a reference in the subject, but only from someone already on that
   ticket or from verified staff, because anyone can type "[HD-000123]";
4. Outlook's Thread-Topic naming a ticket the sender is on (weaker than an
   explicit reference: two tickets of one customer may share a topic);
5. otherwise a new ticket, noting any references the subject mentioned.

The Message-ID store contract, for the shell: after a mail is placed on a
ticket, store its own Message-ID for that ticket (replacing what was there),
and each of :func:`referenced_ids` only if the store has not got it yet.
Those "ghost" entries (notmuch's term) stand for parents we never received,
so two replies to the same missing message meet in one ticket, and a parent
that arrives after its reply (delivery is not ordered) finds the reply's
ticket through its own Message-ID.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from helpdesk.ingest.inbound import InboundEmail
from helpdesk.threading.reference import subject_key
from helpdesk.threading.tokens import parse_message_id, parse_reply_address

Action = Literal["new", "reply", "new_linked"]
MatchedBy = Literal["token", "message_id", "thread_topic", "subject"]

DEFAULT_REOPEN_WINDOW = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """What the decision needs to know about one existing ticket.

    ``participants`` are lower-cased addresses: requester, CCs and staff on
    the ticket. A naive ``closed_at`` (SQLite drops the zone) is taken as UTC.
    """

    reference: str
    status: str
    closed_at: datetime | None = None
    participants: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Facts:
    """What the shell found in the database for one inbound mail.

    ``token_refs``: references of valid reply tokens, from :func:`tokens_in`.
    ``chain_refs``: Message-ID -> reference for the :func:`chain_candidates`
    the store knows, merged with :func:`signed_chain_refs` (which win).
    ``thread_topic_refs``: tickets whose subject key equals
    :func:`thread_topic_key` and that have the sender as a participant,
    most recently active first.
    ``subject_refs``: references in the subject, from
    ``find_subject_references``.
    ``tickets``: facts for every reference named above that exists; a
    reference missing here is treated as no evidence at all.
    """

    token_refs: tuple[str, ...] = ()
    chain_refs: Mapping[str, str] = field(default_factory=dict)
    thread_topic_refs: tuple[str, ...] = ()
    subject_refs: tuple[str, ...] = ()
    tickets: Mapping[str, TicketFacts] = field(default_factory=dict)
    is_staff_verified: bool = False


@dataclass(frozen=True, slots=True)
class Resolution:
    """The decision.

    ``reply``: add the mail to ``reference`` (reopening it when ``reopen``).
    ``new``: open a ticket. ``new_linked``: open a ticket linked to
    ``linked_to``, a ticket closed too long ago to reopen. ``matched_by``
    says which evidence found the existing ticket (None for ``new``);
    ``mentions`` are other existing tickets the mail named, for staff.
    """

    action: Action
    reference: str | None
    matched_by: MatchedBy | None
    mentions: tuple[str, ...] = ()
    linked_to: str | None = None
    reopen: bool = False

    def __post_init__(self) -> None:
        if (self.action == "reply") != (self.reference is not None):
            raise ValueError("a reply names its ticket, and only a reply does")
        if (self.action == "new_linked") != (self.linked_to is not None):
            raise ValueError("new_linked names the ticket it links to, and only it does")
        if (self.action == "new") != (self.matched_by is None):
            raise ValueError("matched_by is set exactly when an existing ticket was found")
        if self.reopen and self.action != "reply":
            raise ValueError("only a reply can reopen a ticket")


def chain_candidates(mail: InboundEmail) -> list[str]:
    """Message-IDs to look up, strongest first.

    In-Reply-To names the parent itself (RFC 5322 §3.6.4). References lists
    ancestors oldest first, so it is read backwards; every id is tried, not
    only the last, because the parent may be a mail we never received and
    because Apple Mail sometimes rewrites References to ids from its own view
    of the conversation. The mail's own Message-ID comes last: it is known
    when the same mail reached us twice or a reply to it arrived first.
    """
    return _unique([*_pointers(mail, reversed(mail.references)), mail.message_id])


def referenced_ids(mail: InboundEmail) -> list[str]:
    """The ids this mail points at, to be stored as ghosts (see module doc)."""
    ids = _unique(_pointers(mail, mail.references))
    return [i for i in ids if i != mail.message_id]


def _pointers(mail: InboundEmail, references: Iterable[str]) -> list[str]:
    # RFC 822 allowed a phrase in In-Reply-To, and old clients still write
    # 'Message from Ann <ann@example.org>': the bracketed part parses as an
    # id but is an address, and a ghost for it would join every reply to Ann.
    # An id equal to one of the mail's own addresses is taken to be such.
    addresses = {a.addr for a in (*mail.recipients, *mail.reply_to)}
    if mail.from_ is not None:
        addresses.add(mail.from_.addr)
    ids = [*mail.in_reply_to, *references]
    return [i for i in ids if i.lower() not in addresses]


def signed_chain_refs(mail: InboundEmail, domain: str, secret: str | bytes) -> dict[str, str]:
    """Chain ids that are our own signed Message-IDs, with their references.

    These need no database: a reply still threads when the outbound row is
    gone or was never written (a crash between sending and recording).
    """
    found: dict[str, str] = {}
    for msgid in chain_candidates(mail):
        reference = parse_message_id(msgid, domain, secret)
        if reference is not None:
            found[msgid] = reference
    return found


def tokens_in(mail: InboundEmail, support_address: str, secret: str | bytes) -> tuple[str, ...]:
    """References of valid reply tokens in To, Cc, Delivered-To and
    X-Original-To, in that order; invalid tokens are ignored."""
    refs = (parse_reply_address(a.addr, support_address, secret) for a in mail.recipients)
    return tuple(_unique([r for r in refs if r is not None]))


def thread_topic_key(mail: InboundEmail) -> str | None:
    """The subject key to look tickets up by, from Outlook's Thread-Topic.

    Outlook and Exchange sometimes send a reply with Thread-Topic and
    Thread-Index but no In-Reply-To or References. Thread-Topic holds the
    conversation's subject without prefixes; we compare it as a subject key.
    """
    value = mail.header("thread-topic")
    if not value:
        return None
    return subject_key(value) or None


def resolve(
    mail: InboundEmail,
    facts: Facts,
    now: datetime,
    reopen_window: timedelta = DEFAULT_REOPEN_WINDOW,
) -> Resolution:
    """Decide where ``mail`` goes. See the module docstring for the order.

    Verified staff never reopen a ticket or split off a linked one by
    replying: staff write to resolved and old tickets on purpose, and change
    the status with ``#status`` when they mean to.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    match = _find(mail, facts)
    mentions = _mentions(facts, match[0].reference if match else None)
    if match is None:
        return Resolution("new", None, None, mentions)
    ticket, matched_by = match
    staff = facts.is_staff_verified
    if ticket.status == "closed" and not staff and _closed_long_ago(ticket, now, reopen_window):
        return Resolution("new_linked", None, matched_by, mentions, linked_to=ticket.reference)
    reopen = ticket.status in ("resolved", "closed") and not staff
    return Resolution("reply", ticket.reference, matched_by, mentions, reopen=reopen)


def _find(mail: InboundEmail, facts: Facts) -> tuple[TicketFacts, MatchedBy] | None:
    known = facts.tickets
    for reference in facts.token_refs:
        if reference in known:
            return known[reference], "token"
    for msgid in chain_candidates(mail):
        chained = facts.chain_refs.get(msgid)
        if chained is not None and chained in known:
            return known[chained], "message_id"
    sender = mail.sender_addr.lower()

    def may_use(ticket: TicketFacts) -> bool:
        return facts.is_staff_verified or (bool(sender) and sender in ticket.participants)

    for reference in facts.subject_refs:
        if reference in known and may_use(known[reference]):
            return known[reference], "subject"
    # The shell filters by participant already; checked again because a
    # topic match without it would let anyone join a ticket by its subject.
    for reference in facts.thread_topic_refs:
        if reference in known and may_use(known[reference]):
            return known[reference], "thread_topic"
    return None


def _mentions(facts: Facts, matched: str | None) -> tuple[str, ...]:
    named = [*facts.subject_refs, *facts.token_refs]
    return tuple(_unique([r for r in named if r in facts.tickets and r != matched]))


def _closed_long_ago(ticket: TicketFacts, now: datetime, window: timedelta) -> bool:
    if ticket.closed_at is None:
        # Closed at an unknown time: the safe choice is not to reopen.
        return True
    closed_at = ticket.closed_at
    if closed_at.tzinfo is None:
        closed_at = closed_at.replace(tzinfo=UTC)
    return now - closed_at > window


def _unique(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        if item and item not in seen:
            seen.add(item)
            out.append(item)
    return out
