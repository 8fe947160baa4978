"""Large byte values written in slices (``helpdesk.streamed``): inside the
caller's transaction and savepoint, keyed rows written once even with a
writer racing, the connection usable after a failed write, and a connection
lost mid-stream reported as any lost connection is."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, make_url, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

from helpdesk import streamed
from helpdesk.db import ensure_schema, make_engine
from helpdesk.models import Blob, InboundRaw
from helpdesk.rows import connection
from helpdesk.settings import DatabaseSettings
from helpdesk.streamed import SLICE, STREAM_ABOVE, insert_streamed
from tests.support.proxy import TcpProxy

LARGE = STREAM_ABOVE + 3 * SLICE // 2 + 7  # streamed, and not a whole number of slices


def _bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _blob(sha: str, data: bytes) -> dict[str, object]:
    return {"sha256": sha, "size": len(data), "data": data}


def _stored(engine: Engine) -> dict[str, tuple[int, bytes]]:
    with Session(engine) as session:
        rows = session.exec(select(Blob.sha256, Blob.size, Blob.data))  # type: ignore[call-overload]
        return {sha: (size, bytes(data)) for sha, size, data in rows}


def test_keyed_rows_are_written_once_and_savepoints_hold(schema_engine: Engine) -> None:
    first, other, kept = _bytes(LARGE, 1), _bytes(LARGE, 2), _bytes(LARGE, 3)
    with Session(schema_engine) as session:
        insert_streamed(session, Blob, _blob("a" * 64, first), "data", key=["sha256"])
        # The same key again, with other bytes: nothing is written.
        insert_streamed(session, Blob, _blob("a" * 64, other), "data", key=["sha256"])
        nested = session.begin_nested()
        insert_streamed(session, Blob, _blob("b" * 64, other), "data", key=["sha256"])
        nested.rollback()
        # A write that fails (its message row does not exist) is taken back
        # with its savepoint, and the connection goes on writing.
        nested = session.begin_nested()
        with pytest.raises(IntegrityError):
            insert_streamed(session, InboundRaw, {"inbound_mail_id": 999, "raw": other}, "raw")
        nested.rollback()
        insert_streamed(session, Blob, _blob("c" * 64, kept), "data", key=["sha256"])
        session.commit()
    assert _stored(schema_engine) == {"a" * 64: (LARGE, first), "c" * 64: (LARGE, kept)}


def test_values_up_to_the_limit_are_bound_and_larger_ones_streamed(
    schema_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the other path was taken")

    at_limit, above = _bytes(STREAM_ABOVE, 4), _bytes(STREAM_ABOVE + 1, 10)
    with Session(schema_engine) as session:
        with monkeypatch.context() as patched:
            patched.setattr(streamed, "_into_sqlite", refuse)
            patched.setattr(streamed, "_into_postgresql", refuse)
            insert_streamed(session, Blob, _blob("d" * 64, at_limit), "data", key=["sha256"])
            insert_streamed(session, Blob, _blob("d" * 64, b"other"), "data", key=["sha256"])
        with monkeypatch.context() as patched:
            patched.setattr(streamed, "insert_missing", refuse)
            insert_streamed(session, Blob, _blob("1" * 64, above), "data", key=["sha256"])
        session.commit()
    assert _stored(schema_engine) == {"d" * 64: (STREAM_ABOVE, at_limit),
                                      "1" * 64: (STREAM_ABOVE + 1, above)}


def test_a_keyed_row_at_fault_itself_still_fails(schema_engine: Engine) -> None:
    data = _bytes(LARGE, 11)
    with Session(schema_engine) as session:
        nested = session.begin_nested()
        with pytest.raises(IntegrityError):  # size is NOT NULL: not a clash on the key
            insert_streamed(session, Blob, {"sha256": "2" * 64, "size": None, "data": data},
                            "data", key=["sha256"])
        nested.rollback()
        insert_streamed(session, Blob, _blob("2" * 64, data), "data", key=["sha256"])
        session.commit()
    assert _stored(schema_engine) == {"2" * 64: (LARGE, data)}


def _pg_engine(url: str) -> Engine:
    settings = DatabaseSettings(url=url, auto_upgrade=True)
    engine = make_engine(settings)
    ensure_schema(engine, settings)
    return engine


@pytest.mark.postgres
def test_a_writer_racing_with_the_same_key_wins_and_ours_goes_on(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _pg_engine(pg_url)
    theirs, ours, later = _bytes(LARGE, 6), _bytes(LARGE, 7), _bytes(LARGE, 8)
    rival = create_engine(pg_url)
    clashes: list[str] = []
    try:
        with rival.connect() as other, Session(engine) as session:
            other.execute(text("INSERT INTO blob (sha256, size, data) VALUES (:k, :s, :d)"),
                          {"k": "f" * 64, "s": len(theirs), "d": theirs})
            copy_row = streamed._copy_row

            def racing(*args: Any) -> None:
                # Our look found nothing (theirs is not committed); now our
                # COPY waits on their key, and meets it when they commit.
                monkeypatch.setattr(streamed, "_copy_row", copy_row)  # the first COPY only
                done = threading.Timer(0.3, other.commit)
                done.start()
                try:
                    copy_row(*args)
                except IntegrityError as exc:
                    clashes.append(str(getattr(exc.orig, "sqlstate", "")))
                    raise
                finally:
                    done.join()

            monkeypatch.setattr(streamed, "_copy_row", racing)
            insert_streamed(session, Blob, _blob("f" * 64, ours), "data", key=["sha256"])
            insert_streamed(session, Blob, _blob("0" * 64, later), "data", key=["sha256"])
            session.commit()
        assert clashes == ["23505"]  # unique_violation: the race was run, and lost
        assert _stored(engine) == {"f" * 64: (LARGE, theirs), "0" * 64: (LARGE, later)}
    finally:
        rival.dispose()
        engine.dispose()


@pytest.mark.postgres
def test_connection_lost_mid_copy_is_a_lost_connection(
    pg_url: str, tcp_proxy: Callable[[str, int], TcpProxy]
) -> None:
    direct = _pg_engine(pg_url)
    url = make_url(pg_url)
    assert url.host and url.port
    proxy = tcp_proxy(url.host, url.port)
    through = url.set(host=proxy.host, port=proxy.port)
    engine = make_engine(DatabaseSettings(url=through.render_as_string(hide_password=False)))
    lost, kept = _bytes(LARGE, 5), _bytes(LARGE, 9)
    try:
        with Session(engine) as session:
            session.connection()  # connected before the proxy slows down
            # Each 64 kB chunk now takes 50 ms: the COPY of ~2.5 MB takes
            # about two seconds, and the cut lands in the middle of it.
            proxy.set_delay(0.05)
            cut = threading.Timer(1.0, proxy.cut_all)
            cut.start()
            try:
                with pytest.raises(DBAPIError) as raised:
                    insert_streamed(session, Blob, _blob("e" * 64, lost), "data")
            finally:
                cut.join()
            assert raised.value.connection_invalidated
            assert "COPY blob" in str(raised.value)
        proxy.set_delay(0)
        # The pool hands out a new connection, not the broken one.
        with Session(engine) as session:
            insert_streamed(session, Blob, _blob("9" * 64, kept), "data")
            session.commit()
        assert _stored(direct) == {"9" * 64: (LARGE, kept)}
    finally:
        engine.dispose()
        direct.dispose()


def test_a_failed_blob_write_on_sqlite_is_a_sqlalchemy_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blob handle fails the way every statement does (``DBAPIError``,
    naming the row), the savepoint takes the row back, and the session goes
    on. The failure is real: the row is changed under the open handle, which
    SQLite then refuses to write through (SQLITE_ABORT)."""
    settings = DatabaseSettings(url=f"sqlite:///{tmp_path / 'helpdesk.db'}", auto_upgrade=True)
    engine = make_engine(settings)
    ensure_schema(engine, settings)
    real_slices = streamed._slices
    drivers: list[sqlite3.Connection] = []

    def then_change_the_row(data: bytes) -> Iterator[memoryview]:
        pieces = real_slices(data)
        yield next(pieces)
        drivers[0].execute("UPDATE blob SET size = size + 1 WHERE sha256 = ?", ("f" * 64,))
        yield from pieces

    kept = _bytes(LARGE, 11)
    try:
        with Session(engine) as session:
            driver = connection(session).connection.driver_connection
            assert isinstance(driver, sqlite3.Connection)
            drivers.append(driver)
            nested = session.begin_nested()
            with monkeypatch.context() as patched:
                patched.setattr(streamed, "_slices", then_change_the_row)
                with pytest.raises(DBAPIError) as raised:
                    insert_streamed(session, Blob, _blob("f" * 64, _bytes(LARGE, 6)), "data")
            assert isinstance(raised.value.orig, sqlite3.OperationalError)
            assert "incremental blob write into blob.data" in str(raised.value)
            nested.rollback()
            insert_streamed(session, Blob, _blob("2" * 64, kept), "data", key=["sha256"])
            session.commit()
        assert _stored(engine) == {"2" * 64: (LARGE, kept)}
    finally:
        engine.dispose()
