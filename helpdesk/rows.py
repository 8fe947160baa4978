"""Write rows with single INSERT statements instead of the ORM's unit of work
(I/O shell).

The ingest path writes several rows per message that nothing reads back as
objects in the same transaction (events, participants, messages, thread ids,
outbox rows). Tracking each as an ORM instance and flushing it cost more
than the INSERT itself, and was most of the time spent per message. These
helpers run Core statements on the session's connection, so the rows land
in its transaction (and its savepoint); pending objects are flushed first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session, SQLModel

from helpdesk.prepared import run

Row = Mapping[str, Any]

# session.info key: ((the outer and the innermost transaction), their connection)
_HELD = "helpdesk.rows.connection"


def model_table(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


@cache
def _plain(model: type[SQLModel], returning_id: bool) -> Insert:
    # Built once per table: SQLAlchemy's compiled cache then skips compiling.
    table = model_table(model)
    stmt = table.insert()
    return stmt.returning(table.c.id) if returning_id else stmt


@cache
def _on_conflict(model: type[SQLModel], dialect: str, key: tuple[str, ...],
                 update: tuple[str, ...]) -> Insert:
    table = model_table(model)
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    if not update:
        return stmt.on_conflict_do_nothing(index_elements=list(key))
    return stmt.on_conflict_do_update(
        index_elements=list(key), set_={name: stmt.excluded[name] for name in update}
    )


@cache
def _unless_taken(model: type[SQLModel], dialect: str) -> Insert:
    # No conflict target: a clash on any unique constraint does nothing.
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model_table(model))
    return stmt.on_conflict_do_nothing().returning(model_table(model).c.id)


@cache
def _on_conflict_returning(model: type[SQLModel], dialect: str, key: tuple[str, ...]) -> Insert:
    columns = model_table(model).c
    return _on_conflict(model, dialect, key, ()).returning(*(columns[name] for name in key))


def connection(session: Session) -> Connection:
    # Rows written here may point at objects still pending in the session
    # (a ticket just added): flush those first, as a query would. A clean
    # session returns at once, cheaper than asking it what is dirty.
    session.flush()
    # Session.connection() costs more than the INSERTs it serves, so the
    # connection is kept while the same transaction is current. A savepoint
    # begun with begin_nested() is only emitted when the session is next
    # asked for its connection: a new innermost transaction asks again.
    current = (session.get_transaction(), session.get_nested_transaction())
    held = session.info.get(_HELD)
    if current[0] is not None and held is not None and held[0] == current:
        conn: Connection = held[1]
        return conn
    conn = session.connection()
    session.info[_HELD] = ((session.get_transaction(), session.get_nested_transaction()), conn)
    return conn


def insert_rows(session: Session, model: type[SQLModel], rows: Sequence[Row]) -> None:
    """INSERT ``rows`` (one executemany)."""
    if rows:
        run(connection(session), _plain(model, False), rows)


def insert_returning_id(session: Session, model: type[SQLModel], row: Row) -> int:
    """INSERT one row and return its generated ``id`` (RETURNING: SQLite
    3.35+ and PostgreSQL both have it)."""
    return int(run(connection(session), _plain(model, True), row)[0][0])


def insert_id_unless_taken(session: Session, model: type[SQLModel], row: Row) -> int | None:
    """INSERT ``row`` and return its new ``id``; None when a unique key of
    it is taken already, and nothing was written. One statement where
    asking first took two; and a writer racing ours on PostgreSQL waits for
    it and then finds the key taken, instead of failing."""
    dialect = session.get_bind().dialect.name
    rows = run(connection(session), _unless_taken(model, dialect), row)
    return int(rows[0][0]) if rows else None


def insert_missing(
    session: Session, model: type[SQLModel], rows: Sequence[Row], key: Sequence[str]
) -> None:
    """INSERT ``rows`` whose ``key`` is not taken yet; others are left as
    they are (ON CONFLICT DO NOTHING, so two daemons racing do not fail)."""
    if rows:
        dialect = session.get_bind().dialect.name
        run(connection(session), _on_conflict(model, dialect, tuple(key), ()), rows)


def insert_new(
    session: Session, model: type[SQLModel], rows: Sequence[Row], key: Sequence[str]
) -> list[tuple[Any, ...]]:
    """As :func:`insert_missing`, and return the ``key`` of each row this call
    inserted (RETURNING): with two writers racing, each key goes to one."""
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    return run(connection(session), _on_conflict_returning(model, dialect, tuple(key)), rows)


def upsert(
    session: Session, model: type[SQLModel], row: Row, key: Sequence[str],
    update: Sequence[str],
) -> None:
    """INSERT ``row``, or overwrite the ``update`` columns of the row that
    holds its ``key`` already (ON CONFLICT DO UPDATE)."""
    dialect = session.get_bind().dialect.name
    run(connection(session), _on_conflict(model, dialect, tuple(key), tuple(update)), row)
