"""Large byte values written in slices (``helpdesk.streamed``): inside the
caller's transaction and savepoint, keyed rows written once, nothing left
behind on the connection, and a connection lost mid-stream reported as any
lost connection is."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, make_url, select, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from helpdesk.db import ensure_schema, make_engine
from helpdesk.models import Blob
from helpdesk.rows import connection
from helpdesk.settings import DatabaseSettings
from helpdesk.streamed import SLICE, STREAM_ABOVE, insert_streamed
from tests.support.proxy import TcpProxy

LARGE = STREAM_ABOVE + 3 * SLICE // 2 + 7  # streamed, and not a whole number of slices


def _bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _blob(sha: str, data: bytes) -> dict[str, object]:
    return {"sha256": sha, "size": len(data), "data": data}


def _stored(engine: Engine) -> dict[str, bytes]:
    with Session(engine) as session:
        return {sha: bytes(data) for sha, data in session.exec(
            select(Blob.sha256, Blob.data))}  # type: ignore[call-overload]


def test_large_values_land_in_the_savepoint_and_keyed_rows_once(schema_engine: Engine) -> None:
    first, other, kept = _bytes(LARGE, 1), _bytes(LARGE, 2), _bytes(LARGE, 3)
    with Session(schema_engine) as session:
        insert_streamed(session, Blob, _blob("a" * 64, first), "data", key=["sha256"])
        # The same key again, with other bytes: nothing is written.
        insert_streamed(session, Blob, _blob("a" * 64, other), "data", key=["sha256"])
        nested = session.begin_nested()
        insert_streamed(session, Blob, _blob("b" * 64, other), "data", key=["sha256"])
        nested.rollback()
        # After a rollback that may have taken the upload table with it.
        insert_streamed(session, Blob, _blob("c" * 64, kept), "data", key=["sha256"])
        if schema_engine.dialect.name == "postgresql":
            left = connection(session).exec_driver_sql("SELECT count(*) FROM helpdesk_upload")
            assert left.scalar() == 0
        session.commit()
    assert _stored(schema_engine) == {"a" * 64: first, "c" * 64: kept}


def test_small_values_are_bound_as_usual(schema_engine: Engine) -> None:
    small = _bytes(STREAM_ABOVE, 4)  # the limit itself is not streamed
    with Session(schema_engine) as session:
        insert_streamed(session, Blob, _blob("d" * 64, small), "data", key=["sha256"])
        if schema_engine.dialect.name == "postgresql":
            # No upload table was needed, so none was made.
            found = connection(session).exec_driver_sql(
                "SELECT to_regclass('pg_temp.helpdesk_upload')").scalar()
            assert found is None
        session.commit()
    assert _stored(schema_engine) == {"d" * 64: small}


@pytest.mark.postgres
def test_connection_lost_mid_copy_is_a_lost_connection(
    pg_url: str, tcp_proxy: Callable[[str, int], TcpProxy]
) -> None:
    settings = DatabaseSettings(url=pg_url, auto_upgrade=True)
    direct = make_engine(settings)
    ensure_schema(direct, settings)
    url = make_url(pg_url)
    assert url.host and url.port
    proxy = tcp_proxy(url.host, url.port)
    through = url.set(host=proxy.host, port=proxy.port)
    engine = make_engine(DatabaseSettings(url=through.render_as_string(hide_password=False)))
    try:
        with Session(engine) as session:
            connection(session)  # connected before the proxy slows down
            # Each 64 kB chunk now takes 50 ms: the COPY of ~2.5 MB takes
            # about two seconds, and the cut lands in the middle of it.
            proxy.set_delay(0.05)
            cut = threading.Timer(1.0, proxy.cut_all)
            cut.start()
            try:
                with pytest.raises(DBAPIError) as raised:
                    insert_streamed(session, Blob, _blob("e" * 64, _bytes(LARGE, 5)), "data")
            finally:
                cut.join()
            assert raised.value.connection_invalidated
            assert "COPY" in str(raised.value)
        assert _stored(direct) == {}
    finally:
        engine.dispose()
        direct.dispose()
