"""Run prebuilt Core statements straight on the driver's cursor (I/O shell).

The ingest path runs about twenty small statements per message. Around each
one, ``Connection.execute`` spends about 35 µs of Python (cache key,
execution context, result wrapper) where sqlite3 takes 3 µs to run it; that
was a third of the time spent storing a message. Here a statement is
compiled once per dialect and set of parameter names, and run with the
driver's own ``execute``: the same SQL text and the same bind processing
SQLAlchemy would use, on the same DBAPI connection, so inside the caller's
transaction and savepoint. Driver errors go through SQLAlchemy's own
handler: callers see the usual ``DBAPIError``, and a lost connection is
invalidated as usual.

Statements that need more than that are handed to ``Connection.execute``
unchanged: an expanding ``IN``, a Python-side default that is not a
constant, or several rows with RETURNING (SQLAlchemy batches those).
Results come back as the driver returns them, so callers use this for
statements that return integers and text, not datetimes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, NoReturn

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler

Params = Mapping[str, Any]
_IMMUTABLE = (datetime, date, time, str, bytes, int, float)


@dataclass(frozen=True)
class _Plan:
    sql: str
    order: tuple[str, ...] | None  # positional drivers (sqlite3): the parameters' order
    fixed: Mapping[str, Any]  # values the statement carries: literals, constant defaults
    processors: Mapping[str, Callable[[Any], Any]]
    returns_rows: bool

    def bind(self, params: Params) -> Any:
        values = {**self.fixed, **params}
        for name, process in self.processors.items():
            if name in values:
                values[name] = process(values[name])
        if self.order is None:
            return values
        return tuple(values[name] for name in self.order)


# Keyed by the statement's id; the statement itself is kept in the value, so
# the id cannot be reused by another object while its entry exists.
_MAX_PLANS = 1024
_CURSOR = "helpdesk.prepared.cursor"  # Connection.info key
_PLANS: dict[tuple[int, str, tuple[str, ...]], tuple[Executable, _Plan | None]] = {}


def _plan(stmt: Executable, dialect: Dialect, names: tuple[str, ...]) -> _Plan | None:
    key = (id(stmt), dialect.name, names)
    found = _PLANS.get(key)
    if found is not None and found[0] is stmt:
        return found[1]
    if len(_PLANS) >= _MAX_PLANS:
        # Callers pass statements built once; this only bounds a caller
        # that builds one per call, which would gain nothing here anyway.
        _PLANS.clear()
    plan = _compile(stmt, dialect, names)
    _PLANS[key] = (stmt, plan)
    return plan


def _compile(stmt: Executable, dialect: Dialect, names: tuple[str, ...]) -> _Plan | None:
    explicit_returning = bool(getattr(stmt, "_returning", ()))
    # for_executemany: no implicit RETURNING of the primary key, which
    # SQLAlchemy adds to a single-row INSERT only to fill inserted_primary_key.
    compiled = stmt.compile(  # type: ignore[attr-defined]
        dialect=dialect, column_keys=list(names), for_executemany=not explicit_returning
    )
    assert isinstance(compiled, SQLCompiler)
    if (any(bind.expanding for bind in compiled.binds.values())
            or compiled.literal_execute_params or compiled.post_compile_params
            or compiled.escaped_bind_names or compiled.implicit_returning):
        return None
    processors: dict[str, Callable[[Any], Any]] = {}
    for name, process in compiled._bind_processors.items():
        if not callable(process):
            return None  # tuple binds: one processor per element
        processors[name] = _last_one(process)
    fixed: dict[str, Any] = {}
    for column in compiled.prefetch:  # Python-side defaults of columns not given
        default = column.default
        if default is None or not default.is_scalar:
            return None
        fixed[column.key] = default.arg
    params = compiled.construct_params(_check=False)
    fixed.update({name: value for name, value in (params or {}).items()
                  if name not in names and name not in fixed})
    return _Plan(
        sql=compiled.string,
        order=tuple(compiled.positiontup or ()) if compiled.positional else None,
        fixed=fixed,
        processors=processors,
        returns_rows=bool(compiled._result_columns),
    )


def _last_one(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``process`` remembering its last answer: the rows of one message carry
    the same ``now`` object in several columns, and turning a datetime into
    SQLite's text form costs more than the INSERT's own Python."""
    # One (value, answer) pair, replaced whole: threads share a plan (the
    # pipeline, the SLA pass and the sender each run in their own), and a
    # pair written in two steps could match one value with another's answer.
    last: list[tuple[Any, Any]] = [(None, None)]

    def processed(value: Any) -> Any:
        seen, answer = last[0]
        if value is seen and value is not None:
            return answer
        answer = process(value)
        if isinstance(value, _IMMUTABLE):  # the same object is then the same value
            last[0] = (value, answer)
        return answer

    return processed


def run(conn: Connection, stmt: Executable, params: Params | Sequence[Params] = (), *,
        prepare: bool = True) -> list[tuple[Any, ...]]:
    """Execute ``stmt`` with one set of ``params`` (a mapping) or many (a
    sequence of mappings with the same names); return its rows.

    ``prepare=False`` (one set of ``params``): on PostgreSQL, planned for
    its own values every time instead of being prepared once on the server,
    whose cached plan was made for the tables as they were then. (SQLite
    plans for the table sizes only once ANALYZE has run.)"""
    rows = [params] if isinstance(params, Mapping) else list(params)
    if not rows:
        rows = [{}]
    plan = _plan(stmt, conn.dialect, tuple(rows[0]))
    if not prepare and (plan is None or len(rows) > 1):
        # SQLAlchemy's execute and psycopg's executemany prepare as they see fit.
        raise ValueError("prepare=False is for one set of params of a plain statement")
    if plan is None or (plan.returns_rows and len(rows) > 1):
        result = conn.execute(stmt, rows if len(rows) > 1 else rows[0])
        return [tuple(row) for row in result] if result.returns_rows else []
    args = [plan.bind(row) for row in rows]
    info = conn.info
    cursor = _cursor(conn, info)
    try:
        if len(args) > 1:
            cursor.executemany(plan.sql, args)
            return []
        if prepare or conn.dialect.driver != "psycopg":
            cursor.execute(plan.sql, args[0])
        else:
            cursor.execute(plan.sql, args[0], prepare=False)
        # Every row is read, whatever the plan says (a text() SELECT has no
        # result columns there): an unfinished SELECT on the shared sqlite3
        # cursor keeps its read snapshot past the commit, so the WAL cannot
        # be checkpointed and, once another connection writes, each later
        # write transaction on this connection fails as locked.
        return [] if cursor.description is None else [tuple(row) for row in cursor.fetchall()]
    except conn.dialect.loaded_dbapi.Error as exc:
        _forget(info, cursor)  # SQLAlchemy closes the cursor of a failed statement
        raise_driver_error(conn, exc, plan.sql, args, cursor)
    except BaseException:
        # Not a statement's failure (an interrupt, say): what the cursor
        # holds is unknown, so it goes.
        _forget(info, cursor)
        cursor.close()
        raise


def _cursor(conn: Connection, info: dict[Any, Any]) -> Any:
    """The driver cursor these statements share on ``conn``'s connection.

    Opening one per statement cost psycopg 8 µs of its 40 µs per statement.
    It lives in the connection's ``info``, which belongs to the pool's slot:
    SQLAlchemy empties it when the slot gets a new driver connection (after
    an invalidation, a failed ping, a recycle), so a cursor never outlives
    the connection it was opened on. (A psycopg cursor closed by hand is
    replaced; sqlite3 cursors do not say.)"""
    cursor = info.get(_CURSOR)
    if cursor is None or getattr(cursor, "closed", False):
        driver = conn.connection.driver_connection
        assert driver is not None
        cursor = info[_CURSOR] = driver.cursor()
    return cursor


def _forget(info: dict[Any, Any], cursor: Any) -> None:
    if info.get(_CURSOR) is cursor:
        del info[_CURSOR]


def raise_driver_error(conn: Connection, exc: Exception, sql: str, args: Any, cursor: Any
                       ) -> NoReturn:
    """Raise a driver's ``exc`` as SQLAlchemy would have: a ``DBAPIError``,
    with a lost connection invalidated, so callers that work on the driver
    directly fail the way every other statement does."""
    conn._handle_dbapi_exception(exc, sql, args, cursor, None)
    raise AssertionError("unreachable: SQLAlchemy re-raises") from exc
