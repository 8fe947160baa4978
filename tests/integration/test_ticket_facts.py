"""What threading is told about an existing ticket (``tickets.facts``): one
joined statement, on SQLite and PostgreSQL, gives what the ticket and its
participants loaded as ORM objects give."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlmodel import Session

from helpdesk import tickets
from helpdesk.models import Participant, Ticket
from helpdesk.rows import insert_returning_id, insert_rows

OPENED = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CLOSED = datetime(2026, 11, 30, 17, 45, 30, 250000, tzinfo=UTC)


def _ticket(session: Session, number: int, status: str, closed_at: datetime | None,
            people: list[str]) -> int:
    ticket_id = insert_returning_id(session, Ticket, {
        "number": number, "reference": f"HD-{number:06d}", "subject": "VPN drops",
        "requester_addr": people[0] if people else "", "status": status,
        "created_at": OPENED, "updated_at": OPENED, "closed_at": closed_at,
    })
    insert_rows(session, Participant, [
        {"ticket_id": ticket_id, "addr": addr, "name": "", "role": "cc"} for addr in people])
    return ticket_id


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite keeps no zone; TicketFacts documents a naive value as UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def test_facts_match_the_ticket_and_its_participants(schema_engine: Engine) -> None:
    with Session(schema_engine) as session:
        closed = _ticket(session, 7, "closed", CLOSED, ["ann@client.test", "bob@client.test"])
        _ticket(session, 8, "open", None, ["cat@client.test"])
        session.commit()

        facts = tickets.facts(session, "hd-000007")  # a reference is matched in upper case
        assert facts is not None
        assert (facts.reference, facts.status) == ("HD-000007", "closed")
        assert _as_utc(facts.closed_at) == CLOSED
        assert facts.participants == frozenset({"ann@client.test", "bob@client.test"})

        ticket = session.get(Ticket, closed)
        assert ticket is not None
        assert facts.participants == frozenset(tickets.participants(session, closed))
        assert tickets.addresses(session, closed) == set(facts.participants)
        assert _as_utc(facts.closed_at) == _as_utc(ticket.closed_at)

        other = tickets.facts(session, "HD-000008")
        assert other is not None
        assert (other.status, other.closed_at) == ("open", None)
        assert other.participants == frozenset({"cat@client.test"})


def test_a_ticket_with_nobody_on_it_and_an_unknown_reference(schema_engine: Engine) -> None:
    with Session(schema_engine) as session:
        _ticket(session, 9, "new", None, [])
        session.commit()
        alone = tickets.facts(session, "HD-000009")
        assert alone is not None
        assert alone.participants == frozenset()
        assert tickets.facts(session, "HD-000010") is None


def test_facts_see_rows_written_earlier_in_the_same_transaction(schema_engine: Engine) -> None:
    """Threading runs inside the batch's transaction: a ticket opened by an
    earlier message of the same batch must be found by a later one."""
    with Session(schema_engine) as session:
        _ticket(session, 11, "new", None, ["dan@client.test"])
        with session.begin_nested():
            facts = tickets.facts(session, "HD-000011")
        assert facts is not None and facts.participants == frozenset({"dan@client.test"})
        session.rollback()
        assert tickets.facts(session, "HD-000011") is None
