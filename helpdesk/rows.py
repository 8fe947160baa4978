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

import sqlite3
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, literal_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session, SQLModel

from helpdesk.prepared import run

Row = Mapping[str, Any]

# Bytes above this go into SQLite through an incremental blob handle
# (``insert_streamed``); smaller ones are bound as usual, in one statement.
STREAM_ABOVE = 1 << 20
_SLICE = 1 << 20
_SIZE = "zeroblob_size"  # not a column name: SQLAlchemy reserves those for VALUES
# session.info key: ((the outer and the innermost transaction), their connection)
_HELD = "helpdesk.rows.connection"


def _table(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


@cache
def _plain(model: type[SQLModel], returning_id: bool) -> Insert:
    # Built once per table: SQLAlchemy's compiled cache then skips compiling.
    table = _table(model)
    stmt = table.insert()
    return stmt.returning(table.c.id) if returning_id else stmt


@cache
def _on_conflict(model: type[SQLModel], dialect: str, key: tuple[str, ...],
                 update: tuple[str, ...]) -> Insert:
    table = _table(model)
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    if not update:
        return stmt.on_conflict_do_nothing(index_elements=list(key))
    return stmt.on_conflict_do_update(
        index_elements=list(key), set_={name: stmt.excluded[name] for name in update}
    )


@cache
def _unless_taken(model: type[SQLModel], dialect: str) -> Insert:
    # No conflict target: a clash on any unique constraint does nothing.
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_table(model))
    return stmt.on_conflict_do_nothing().returning(_table(model).c.id)


@cache
def _on_conflict_returning(model: type[SQLModel], dialect: str, key: tuple[str, ...]) -> Insert:
    return _on_conflict(model, dialect, key, ()).returning(*(_table(model).c[name] for name in key))


@cache
def _zeroblob(model: type[SQLModel], column: str, key: tuple[str, ...]) -> Insert:
    table = _table(model)
    stmt = sqlite.insert(table).values({column: func.zeroblob(bindparam(_SIZE))})
    if key:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
    return stmt.returning(literal_column("rowid"))


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


def insert_streamed(
    session: Session, model: type[SQLModel], row: Row, column: str, key: Sequence[str] = ()
) -> None:
    """INSERT ``row``, whose ``column`` holds bytes that may be large; with
    ``key``, only when that key is not taken yet (as ``insert_missing``).

    sqlite3 copies a bound blob twice on the way in and keeps one copy bound
    to its cached statement until that statement runs again: 25 MB of mail
    cost 75 MB more. So on SQLite, bytes above ``STREAM_ABOVE`` are inserted
    as a zeroblob of their size and written through a blob handle in slices,
    on the same connection, so inside the caller's transaction and savepoint.
    psycopg sends bound bytes as they are: PostgreSQL takes the plain INSERT.
    """
    data: bytes = row[column]
    conn = connection(session)
    if len(data) <= STREAM_ABOVE or conn.dialect.name != "sqlite":
        if key:
            insert_missing(session, model, [row], key)
        else:
            insert_rows(session, model, [row])
        return
    params = {name: value for name, value in row.items() if name != column}
    params[_SIZE] = len(data)
    rowid = conn.execute(_zeroblob(model, column, tuple(key)), params).scalar()
    if rowid is None:
        return  # the key was taken: those bytes are stored already
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    view = memoryview(data)
    with driver.blobopen(_table(model).name, column, int(rowid)) as blob:
        for start in range(0, len(view), _SLICE):
            blob.write(view[start:start + _SLICE])
