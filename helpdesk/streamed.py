"""Large byte values (raw mail, attachments) written without extra copies in
memory (I/O shell).

Binding a value copies it inside the driver: sqlite3 twice on the way in,
keeping one copy with its cached statement; psycopg into the parameter
array and again into libpq's send buffer. For a 25 MB message that was 50 to
75 MB more than the message itself. So bytes above ``STREAM_ABOVE`` are
written in slices of ``SLICE`` bytes instead, on the session's connection,
so inside the caller's transaction and savepoint:

* SQLite: the row is inserted with a ``zeroblob`` of the right size, which
  is then filled through an incremental blob handle;
* PostgreSQL: the row is sent with ``COPY … FROM STDIN`` in binary format,
  its other columns encoded here. COPY knows no ``ON CONFLICT``: a keyed row
  is looked for first, and written under a savepoint of its own, so that a
  writer racing ours with the same key costs a rollback to it, not an error.

Smaller values are bound as usual: one statement, as every other row.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    SmallInteger,
    String,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.selectable import Select
from sqlalchemy.types import LargeBinary, TypeDecorator, TypeEngine
from sqlmodel import Session, SQLModel

from helpdesk.prepared import raise_driver_error
from helpdesk.rows import Row, connection, insert_missing, insert_rows, model_table

STREAM_ABOVE = 1 << 20
SLICE = 1 << 20
_SIZE = "zeroblob_size"  # not a column name: SQLAlchemy reserves those for VALUES

# COPY's binary format (PostgreSQL manual, "COPY", File Formats): the
# signature, a flags word and the header extension length; then each row as
# its field count and each field as its length (-1: NULL) and bytes in the
# type's binary form (network byte order); -1 where a row would start ends it.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_END = struct.pack("!h", -1)
# Subclasses before Integer, which they are too.
_INTEGERS: tuple[tuple[type[Integer], str, int], ...] = (
    (BigInteger, "!iq", 8), (SmallInteger, "!ih", 2), (Integer, "!ii", 4))
_SAVEPOINT = "helpdesk_streamed"


def insert_streamed(
    session: Session, model: type[SQLModel], row: Row, column_name: str, key: Sequence[str] = ()
) -> None:
    """INSERT ``row``, whose ``column_name`` holds bytes that may be large;
    with ``key``, only when that key is not taken yet (as ``insert_missing``)."""
    data: bytes = row[column_name]
    conn = connection(session)
    if len(data) <= STREAM_ABOVE:
        if key:
            insert_missing(session, model, [row], key)
        else:
            insert_rows(session, model, [row])
    elif conn.dialect.name == "sqlite":
        _into_sqlite(conn, model, row, column_name, tuple(key))
    else:
        _into_postgresql(conn, model, row, column_name, tuple(key))


def _slices(data: bytes) -> Iterator[memoryview]:
    """``data`` in SLICE-sized views, none of them a copy."""
    view = memoryview(data)
    for start in range(0, len(view), SLICE):
        yield view[start:start + SLICE]


@cache
def _zeroblob(model: type[SQLModel], column_name: str, key: tuple[str, ...]) -> Insert:
    table = model_table(model)
    stmt = sqlite.insert(table).values({column_name: func.zeroblob(bindparam(_SIZE))})
    if key:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
    return stmt.returning(literal_column("rowid"))


def _into_sqlite(conn: Connection, model: type[SQLModel], row: Row, column_name: str,
                 key: tuple[str, ...]) -> None:
    data: bytes = row[column_name]
    params = {name: value for name, value in row.items() if name != column_name}
    params[_SIZE] = len(data)
    rowid = conn.execute(_zeroblob(model, column_name, key), params).scalar()
    if rowid is None:
        return  # the key was taken: those bytes are stored already
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    try:
        with driver.blobopen(model_table(model).name, column_name, int(rowid)) as blob:
            for piece in _slices(data):
                blob.write(piece)
    except sqlite3.Error as exc:
        where = f"{model_table(model).name}.{column_name} rowid {rowid}"
        raise_driver_error(conn, exc, f"(incremental blob write into {where})", (), None)


def _field(value: Any, kind: TypeEngine[Any], encoding: str) -> bytes:
    """One column value of a binary COPY row: its length, then its bytes
    (text in the connection's client encoding, as COPY reads it)."""
    if value is None:
        return struct.pack("!i", -1)
    while isinstance(kind, TypeDecorator):  # SQLModel's AutoString is one, over VARCHAR
        kind = kind.impl_instance
    for integer, layout, width in _INTEGERS:
        if isinstance(kind, integer):
            return struct.pack(layout, width, int(value))
    if isinstance(kind, String):
        data = str(value).encode(encoding)
        return struct.pack("!i", len(data)) + data
    if isinstance(kind, LargeBinary):
        data = bytes(value)
        return struct.pack("!i", len(data)) + data
    raise TypeError(f"no binary COPY form here for {kind!r}")


@cache
def _exists(model: type[SQLModel], key: tuple[str, ...]) -> Select[Any]:
    table = model_table(model)
    return select(literal_column("1")).select_from(table).where(
        *(table.c[name] == bindparam(name) for name in key)).limit(1)


def _into_postgresql(conn: Connection, model: type[SQLModel], row: Row, column_name: str,
                     key: tuple[str, ...]) -> None:
    if not key:
        _copy_row(conn, model, row, column_name)
        return
    probe = _exists(model, key)
    values = {name: row[name] for name in key}
    if conn.execute(probe, values).first():
        return  # those bytes are stored already: none of them need sending
    conn.exec_driver_sql(f"SAVEPOINT {_SAVEPOINT}")
    try:
        _copy_row(conn, model, row, column_name)
    except IntegrityError:
        conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        if not conn.execute(probe, values).first():
            raise  # not the key: the row itself is at fault
        # Another writer stored the same key since we looked: as ON
        # CONFLICT DO NOTHING would, keep theirs.
    conn.exec_driver_sql(f"RELEASE SAVEPOINT {_SAVEPOINT}")


def _copy_row(conn: Connection, model: type[SQLModel], row: Row, column_name: str) -> None:
    """COPY one row whose ``column_name`` is sent in slices, the last field."""
    import psycopg  # only PostgreSQL deployments need it loaded

    table = model_table(model)
    names = [name for name in row if name != column_name]
    # COPY applies the server's defaults only, not those SQLAlchemy would
    # have filled in for an INSERT: every such column must be given.
    unfilled = [c.name for c in table.columns if c.default is not None and c.name not in row]
    if unfilled:
        raise ValueError(f"COPY into {table.name} needs values for {unfilled}")
    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    quote = conn.dialect.identifier_preparer.quote
    columns = ", ".join(quote(name) for name in [*names, column_name])
    sql = f"COPY {quote(table.name)} ({columns}) FROM STDIN (FORMAT binary)"
    data: bytes = row[column_name]
    encoding = driver.info.encoding
    head = _COPY_HEADER + struct.pack("!h", len(names) + 1) + b"".join(
        _field(row[name], table.c[name].type, encoding) for name in names
    ) + struct.pack("!i", len(data))
    try:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:
            copy.write(head)
            for piece in _slices(data):
                copy.write(piece)
            copy.write(_COPY_END)
    except psycopg.Error as exc:
        raise_driver_error(conn, exc, sql, (), None)
