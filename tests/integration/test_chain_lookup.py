"""The Message-ID chain lookup that threads every mail: right answers for any
length of chain, and on PostgreSQL no scan of ``thread_id`` once the table
has grown, however often the lookup ran while it was small (a plan the
server caches for a prepared statement is made for the tables as they were
then, and is kept until they are analyzed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from helpdesk.ingest.apply import _chain_refs
from helpdesk.models import ThreadId, Ticket
from helpdesk.rows import connection, insert_returning_id, insert_rows

OPENED = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
GROWN = 20_000  # rows: a scan of thread_id is then many pages, an index probe a few


def _ticket(session: Session, number: int) -> int:
    return insert_returning_id(session, Ticket, {
        "number": number, "reference": f"HD-{number:06d}", "subject": "VPN drops",
        "requester_addr": "ann@client.test", "status": "open",
        "created_at": OPENED, "updated_at": OPENED,
    })


def _thread(session: Session, ticket_id: int, *ids: str) -> None:
    insert_rows(session, ThreadId, [{"message_id": i, "ticket_id": ticket_id} for i in ids])


def test_chain_of_any_length_finds_each_stored_id(schema_engine: Engine) -> None:
    with Session(schema_engine) as session:
        first, second = _ticket(session, 1), _ticket(session, 2)
        _thread(session, first, "a@x.test", "b@x.test")
        _thread(session, second, "c@x.test")
        session.commit()
        assert _chain_refs(session, ["a@x.test"]) == {"a@x.test": "HD-000001"}
        assert _chain_refs(session, ["nobody@x.test"]) == {}
        for others in (0, 6, 30):  # within the SQLite slots, in the last one, beyond them
            chain = [f"z{i}@elsewhere.test" for i in range(others)]
            assert _chain_refs(session, ["b@x.test", *chain, "c@x.test"]) == {
                "b@x.test": "HD-000001", "c@x.test": "HD-000002"}
        assert _chain_refs(session, ["a@x.test", "a@x.test", "c@x.test"]) == {
            "a@x.test": "HD-000001", "c@x.test": "HD-000002"}


def _scans_of_thread_id(session: Session) -> int:
    # Counts not yet published to other sessions, which include this
    # transaction's: read twice in one transaction, the difference is its own.
    return int(session.execute(text(
        "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'thread_id'"
    )).scalar_one())


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgres_lookup_uses_the_key_after_the_table_grew(schema_engine: Engine) -> None:
    with Session(schema_engine) as session:
        ticket_id = _ticket(session, 1)
        _thread(session, ticket_id, "own@client.test")
        session.commit()
        # Run often enough while thread_id is tiny for psycopg to prepare the
        # statement and for the server to settle on a plan for it.
        for i in range(20):
            assert _chain_refs(session, [f"new{i}@client.test", "own@client.test"]) == {
                "own@client.test": "HD-000001"}
        session.commit()
        connection(session).exec_driver_sql(
            "INSERT INTO thread_id (message_id, ticket_id) SELECT 'm' || n || '@list.test', "
            f"{ticket_id} FROM generate_series(1, {GROWN}) AS n")
        session.commit()

        before = _scans_of_thread_id(session)
        for i in range(5):
            found = _chain_refs(session, [f"later{i}@client.test", f"m{i + 1}@list.test"])
            assert found == {f"m{i + 1}@list.test": "HD-000001"}
        assert _scans_of_thread_id(session) == before
