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
* PostgreSQL: the bytes are streamed with ``COPY … FROM STDIN`` in binary
  format into a temporary table of this connection, and moved into place
  with ``INSERT … SELECT``, which also keeps ``ON CONFLICT DO NOTHING`` for
  a keyed row. The temporary table is emptied straight after.

Smaller values are bound as usual: one statement, as every other row.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Sequence
from functools import cache

from sqlalchemy import Connection, Table, bindparam, column, func, literal_column, select
from sqlalchemy import table as table_clause
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import LargeBinary
from sqlmodel import Session, SQLModel

from helpdesk.prepared import raise_driver_error
from helpdesk.rows import Row, connection, insert_missing, insert_rows, model_table

STREAM_ABOVE = 1 << 20
SLICE = 1 << 20
_SIZE = "zeroblob_size"  # not a column name: SQLAlchemy reserves those for VALUES

# Only this connection sees a temporary table; rolled back with the
# savepoint that created it, and made again by the next large value.
_UPLOAD = "helpdesk_upload"
_CREATE_UPLOAD = f"CREATE TEMPORARY TABLE IF NOT EXISTS {_UPLOAD} (data bytea NOT NULL)"
_COPY_UPLOAD = f"COPY {_UPLOAD} (data) FROM STDIN (FORMAT binary)"
# TRUNCATE, not DELETE: nothing vacuums a temporary table, and deleted
# rows would keep their bytes on disk for as long as the connection lives.
_EMPTY_UPLOAD = f"TRUNCATE {_UPLOAD}"
# COPY's binary format (PostgreSQL manual, "COPY", File Formats): the
# signature, a flags word and the header extension length; then each row as
# its field count and each field as its length and bytes; -1 ends the data.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_END = struct.pack("!h", -1)


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
    view = memoryview(data)
    try:
        with driver.blobopen(model_table(model).name, column_name, int(rowid)) as blob:
            for start in range(0, len(view), SLICE):
                blob.write(view[start:start + SLICE])
    except sqlite3.Error as exc:
        raise_driver_error(conn, exc, f"blob write into {model_table(model).name}", (), None)


@cache
def _from_upload(model: type[SQLModel], column_name: str, names: tuple[str, ...],
                 key: tuple[str, ...]) -> Insert:
    """INSERT INTO the model's table the uploaded bytes, with the other
    ``names`` bound as parameters."""
    table: Table = model_table(model)
    upload = table_clause(_UPLOAD, column("data", LargeBinary))
    values = [bindparam(name, type_=table.c[name].type) for name in names]
    stmt = postgresql.insert(table).from_select(
        [*names, column_name], select(*values, upload.c.data))
    return stmt.on_conflict_do_nothing(index_elements=list(key)) if key else stmt


def _into_postgresql(conn: Connection, model: type[SQLModel], row: Row, column_name: str,
                     key: tuple[str, ...]) -> None:
    data: bytes = row[column_name]
    others = {name: value for name, value in row.items() if name != column_name}
    conn.exec_driver_sql(_CREATE_UPLOAD)
    driver = conn.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        with cursor.copy(_COPY_UPLOAD) as copy:
            copy.write(_COPY_HEADER + struct.pack("!hi", 1, len(data)))
            view = memoryview(data)
            for start in range(0, len(view), SLICE):
                copy.write(view[start:start + SLICE])
            copy.write(_COPY_END)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise_driver_error(conn, exc, _COPY_UPLOAD, (), cursor)
    finally:
        cursor.close()
    conn.execute(_from_upload(model, column_name, tuple(others), key), others)
    conn.exec_driver_sql(_EMPTY_UPLOAD)
