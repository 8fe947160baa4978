"""Statements run on the driver's cursor (helpdesk.prepared) write and read
exactly what SQLAlchemy's own execution does, inside the same transaction and
savepoint, and fail with SQLAlchemy's exceptions; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    bindparam,
    create_engine,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

from helpdesk import prepared
from helpdesk.db import ensure_schema, make_engine
from helpdesk.models import Event, Participant, ThreadId, Ticket
from helpdesk.rows import (
    connection,
    insert_missing,
    insert_returning_id,
    insert_rows,
    model_table,
    upsert,
)
from helpdesk.settings import DatabaseSettings
from tests.support.proxy import TcpProxy

NOW = datetime(2026, 12, 7, 9, 30, 15, 123456, tzinfo=UTC)
_EVENTS = model_table(Event)
_TICKETS = model_table(Ticket)
_BY_KIND = select(_EVENTS.c.id, _EVENTS.c.actor).where(
    _EVENTS.c.kind == bindparam("kind"), _EVENTS.c.detail != "skip"
).order_by(_EVENTS.c.id)
_RENAME = update(_EVENTS).where(_EVENTS.c.id == bindparam("row_id")).values(
    actor=bindparam("new_actor"))
_IN = select(_EVENTS.c.id).where(_EVENTS.c.kind.in_(bindparam("kinds", expanding=True)))


def _ticket(session: Session, number: int) -> int:
    # Only the columns without a default: the others come from the model's
    # constant defaults, which the direct path must fill in as SQLAlchemy does.
    return insert_returning_id(session, Ticket, {
        "number": number, "reference": f"HD-{number:06d}", "subject": "Printer on fire",
        "requester_addr": "ann@client.test", "created_at": NOW, "updated_at": NOW,
    })


def _event(ticket_id: int, kind: str, actor: str, when: datetime = NOW) -> dict[str, object]:
    return {"ticket_id": ticket_id, "kind": kind, "actor": actor, "detail": "{}",
            "created_at": when}


def test_rows_written_directly_read_back_as_through_the_orm(schema_engine: Engine) -> None:
    with Session(schema_engine) as session:
        ticket_id = _ticket(session, 1)
        insert_rows(session, Event, [_event(ticket_id, "created", "ann@client.test"),
                                     _event(ticket_id, "note", "bob@example.test",
                                            NOW + timedelta(hours=1))])
        session.commit()
    with Session(schema_engine) as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        assert (ticket.reference, ticket.status, ticket.priority, ticket.escalated) == (
            "HD-000001", "new", "medium", False)
        assert ticket.created_at == NOW  # the datetime went through the column's type
        events = session.exec(select(Event).order_by(Event.id)).all()  # type: ignore[call-overload, arg-type]
        assert [(e.kind, e.actor, e.created_at) for (e,) in events] == [
            ("created", "ann@client.test", NOW), ("note", "bob@example.test",
                                                  NOW + timedelta(hours=1))]


def test_selects_updates_and_literal_values(schema_engine: Engine) -> None:
    with Session(schema_engine) as session:
        ticket_id = _ticket(session, 1)
        insert_rows(session, Event, [_event(ticket_id, "a", "x"), _event(ticket_id, "b", "y")])
        conn = connection(session)
        [(first_id, actor)] = prepared.run(conn, _BY_KIND, {"kind": "a"})
        assert actor == "x"
        prepared.run(conn, _RENAME, {"row_id": first_id, "new_actor": "z"})
        assert prepared.run(conn, _BY_KIND, {"kind": "a"}) == [(first_id, "z")]
        assert prepared.run(conn, _BY_KIND, {"kind": "none"}) == []
        # An expanding IN is handed to SQLAlchemy, with the same answer shape.
        assert sorted(prepared.run(conn, _IN, {"kinds": ["a", "b"]})) == sorted(
            tuple(r) for r in conn.execute(_IN, {"kinds": ["a", "b"]}))


def _server_prepared(conn: Connection, marker: str) -> int:
    return int(conn.execute(text(
        "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE :like"
    ), {"like": f"%{marker}%"}).scalar_one())


def test_unprepared_runs_give_the_same_rows_and_refuse_what_they_cannot_honour(
    schema_engine: Engine,
) -> None:
    with Session(schema_engine) as session:
        ticket_id = _ticket(session, 1)
        insert_rows(session, Event, [_event(ticket_id, "a", "x"), _event(ticket_id, "a", "y")])
        conn = connection(session)
        expected = [tuple(r) for r in conn.execute(_BY_KIND, {"kind": "a"})]
        for _ in range(8):  # past psycopg's threshold for preparing a statement
            assert prepared.run(conn, _BY_KIND, {"kind": "a"}, prepare=False) == expected
        if conn.dialect.name == "postgresql":
            assert _server_prepared(conn, "event.detail") == 0
            for _ in range(8):
                assert prepared.run(conn, _BY_KIND, {"kind": "a"}) == expected
            assert _server_prepared(conn, "event.detail") == 1
        # SQLAlchemy's execute (an expanding IN) and executemany prepare as
        # they see fit: asked not to, run refuses rather than pretend.
        with pytest.raises(ValueError, match="prepare=False"):
            prepared.run(conn, _IN, {"kinds": ["a"]}, prepare=False)
        with pytest.raises(ValueError, match="prepare=False"):
            prepared.run(conn, _RENAME, [{"row_id": 1, "new_actor": "p"},
                                         {"row_id": 2, "new_actor": "q"}], prepare=False)


def test_conflicts_upserts_and_many_rows(schema_engine: Engine) -> None:
    with Session(schema_engine) as session:
        ticket_id = _ticket(session, 1)
        other = _ticket(session, 2)
        insert_missing(session, ThreadId, [{"message_id": f"m{i}@x", "ticket_id": ticket_id}
                                           for i in range(3)], key=["message_id"])
        insert_missing(session, ThreadId, [{"message_id": "m1@x", "ticket_id": other},
                                           {"message_id": "m9@x", "ticket_id": other}],
                       key=["message_id"])
        upsert(session, ThreadId, {"message_id": "m2@x", "ticket_id": other},
               key=["message_id"], update=["ticket_id"])
        session.commit()
        rows = session.execute(text("SELECT message_id, ticket_id FROM thread_id")).all()
    assert sorted(tuple(r) for r in rows) == [
        ("m0@x", ticket_id), ("m1@x", ticket_id), ("m2@x", other), ("m9@x", other)]


def test_a_rolled_back_savepoint_takes_direct_writes_with_it(schema_engine: Engine) -> None:
    with Session(schema_engine) as session:
        ticket_id = _ticket(session, 1)
        try:
            with session.begin_nested():
                insert_rows(session, Participant, [{"ticket_id": ticket_id, "addr": "a@x",
                                                    "name": "", "role": "cc"}])
                raise RuntimeError("this message fails")
        except RuntimeError:
            pass
        insert_rows(session, Participant, [{"ticket_id": ticket_id, "addr": "b@x",
                                            "name": "", "role": "cc"}])
        session.commit()
        addrs = session.execute(text("SELECT addr FROM participant")).scalars().all()
    assert addrs == ["b@x"]


def test_driver_errors_are_sqlalchemy_errors_and_the_session_recovers(
    schema_engine: Engine,
) -> None:
    with Session(schema_engine) as session:
        _ticket(session, 1)
        with pytest.raises(IntegrityError), session.begin_nested():
            _ticket(session, 1)  # the same number and reference again
        assert _ticket(session, 2) > 0
        session.commit()
        numbers = session.execute(text("SELECT number FROM ticket ORDER BY number")).all()
    assert [n for (n,) in numbers] == [1, 2]


def test_a_statement_built_per_call_does_not_grow_the_cache() -> None:
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        for i in range(prepared._MAX_PLANS + 10):
            assert prepared.run(conn, text(f"SELECT {i} AS n").columns(n=Integer)) == [(i,)]
            assert len(prepared._PLANS) <= prepared._MAX_PLANS


def test_repeated_and_alternating_values_bind_as_themselves(schema_engine: Engine) -> None:
    # The bind processing remembers its last value by identity: alternate two
    # datetimes, repeat one, and pass an equal copy; each row keeps its own.
    later = NOW + timedelta(minutes=5)
    sequence = [NOW, NOW, later, NOW, later, later, NOW.replace(), NOW + timedelta(0)]
    with Session(schema_engine) as session:
        ticket_id = _ticket(session, 1)
        for i, when in enumerate(sequence):
            insert_rows(session, Event, [_event(ticket_id, f"k{i}", "a", when)])
        session.commit()
        stored = session.execute(select(_EVENTS.c.created_at).order_by(_EVENTS.c.id)).scalars()
        assert [when.replace(tzinfo=UTC) if when.tzinfo is None else when
                for when in stored] == sequence


@pytest.fixture
def proxied(pg_url: str, tcp_proxy: Callable[[str, int], TcpProxy]
            ) -> Iterator[tuple[Engine, TcpProxy]]:
    """The daemon's engine on ``pg_url`` through a TCP proxy, its schema in
    place and one ticket (number 1) stored."""
    url = make_url(pg_url)
    assert url.host and url.port
    proxy = tcp_proxy(url.host, url.port)
    through = url.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
    settings = DatabaseSettings(url=through, auto_upgrade=True)
    engine = make_engine(settings)
    try:
        ensure_schema(engine, settings)
        with Session(engine) as session:
            _ticket(session, 1)
            session.commit()
        yield engine, proxy
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_after_a_lost_connection_statements_run_on_the_new_one(
    proxied: tuple[Engine, TcpProxy],
) -> None:
    """The driver cursor these statements share belongs to one connection:
    once that connection is lost, the next session's statements run on a
    new connection (and its own cursor), not on the dead one."""
    engine, proxy = proxied
    with Session(engine) as session:
        _ticket(session, 2)  # in a transaction on the connection about to be lost
        proxy.cut_all()
        with pytest.raises(DBAPIError) as raised:
            _ticket(session, 3)
        assert raised.value.connection_invalidated
    with Session(engine) as session:
        _ticket(session, 4)
        conn = connection(session)
        assert prepared.run(conn, select(_TICKETS.c.number).order_by(_TICKETS.c.number)) == [
            (1,), (4,)]
        session.commit()


@pytest.mark.postgres
def test_a_connection_cut_while_idle_in_the_pool_gets_a_new_cursor(
    proxied: tuple[Engine, TcpProxy],
) -> None:
    """Cut while no session holds it: the pool's ping finds the connection
    dead and opens another in its slot, and the next statements must run on
    that one, not on the cursor of the dead one."""
    engine, proxy = proxied
    proxy.cut_all()
    with Session(engine) as session:
        _ticket(session, 2)
        session.commit()
        numbers = prepared.run(connection(session),
                               select(_TICKETS.c.number).order_by(_TICKETS.c.number))
    assert numbers == [(1,), (2,)]


def test_rows_a_statement_leaves_unread_do_not_hold_the_database(tmp_path: Path) -> None:
    """A SELECT written as text has no result columns in its plan; its rows
    are read all the same. An unfinished SELECT left on SQLite's cursor would
    keep its read snapshot after the commit: the WAL could not be
    checkpointed, and once another connection wrote, every later write
    transaction on this pooled connection failed as locked."""
    settings = DatabaseSettings(url=f"sqlite:///{tmp_path / 'helpdesk.db'}", auto_upgrade=True)
    engine = make_engine(settings)
    other = create_engine(f"sqlite:///{tmp_path / 'helpdesk.db'}")
    try:
        ensure_schema(engine, settings)
        with Session(engine) as session:
            for number in range(1, 4):
                _ticket(session, number)
            session.commit()
        with Session(engine) as session:
            prepared.run(connection(session), text("SELECT number FROM ticket"))
            session.commit()
        with other.begin() as conn:
            conn.execute(text("UPDATE ticket SET subject = 'Printer fixed' WHERE number = 1"))
        with other.connect() as conn:
            busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        assert busy == 0
        with Session(engine) as session:
            assert _ticket(session, 4) > 0
            session.commit()
    finally:
        other.dispose()
        engine.dispose()
