"""The schema version check every start makes (``helpdesk.db``), on SQLite
and PostgreSQL: an empty or outdated database is upgraded or refused, and a
current one is recognised without loading alembic."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text

from helpdesk import db
from helpdesk.errors import SchemaOutdatedError
from helpdesk.settings import DatabaseSettings

ROOT = Path(__file__).parents[2]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = db.make_engine(DatabaseSettings(url=db_url))
    try:
        yield engine
    finally:
        engine.dispose()


def test_the_known_head_is_the_newest_migration(engine: Engine) -> None:
    """db.HEAD is written down by hand; a new migration must move it."""
    assert db.head_revision(engine) == db.HEAD


def test_an_empty_database_has_no_revision_and_is_built(engine: Engine, db_url: str) -> None:
    assert db.current_revision(engine) is None
    db.ensure_schema(engine, DatabaseSettings(url=db_url, auto_upgrade=True))
    assert db.current_revision(engine) == db.HEAD


def test_an_outdated_schema_is_upgraded_or_refused_with_both_revisions(
        engine: Engine, db_url: str) -> None:
    command.upgrade(db.alembic_config(engine), "0001")
    assert db.current_revision(engine) == "0001"
    refusing = DatabaseSettings(url=db_url, auto_upgrade=False)
    with pytest.raises(SchemaOutdatedError) as raised:
        db.ensure_schema(engine, refusing)
    assert "at 0001" in str(raised.value) and f"needs {db.HEAD}" in str(raised.value)
    assert db.current_revision(engine) == "0001"
    db.ensure_schema(engine, DatabaseSettings(url=db_url, auto_upgrade=True))
    assert db.current_revision(engine) == db.HEAD


def test_a_database_past_a_head_not_moved_is_left_to_alembic(
        engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration added without moving db.HEAD (which the test above
    catches) must not stop the daemon on a database at alembic's head: any
    revision but HEAD is decided by alembic."""
    db.upgrade(engine)
    newest = db.HEAD
    # As if the newest migration were new and HEAD not moved to it.
    monkeypatch.setattr(db, "HEAD", f"{int(newest) - 1:04d}")
    db.ensure_schema(engine, DatabaseSettings(url=db_url, auto_upgrade=False))
    assert db.current_revision(engine) == newest


@pytest.mark.postgres
def test_a_url_with_percent_signs_migrates(pg_url: str, tmp_path: Path) -> None:
    """A percent-encoded password (p@ss as p%40ss) and a path with a percent
    sign in it: alembic's configuration once took "%" for interpolation."""
    with_password = pg_url.replace("postgres@", "postgres:p%40ss%25@", 1)
    assert with_password != pg_url  # the server trusts local users: any password does
    folder = tmp_path / "100% sure"
    folder.mkdir()
    for url in (with_password, f"sqlite:///{folder / 'helpdesk.db'}"):
        engine = db.make_engine(DatabaseSettings(url=url))
        try:
            db.ensure_schema(engine, DatabaseSettings(url=url, auto_upgrade=True))
            assert db.current_revision(engine) == db.HEAD
            assert db.head_revision(engine) == db.HEAD
        finally:
            engine.dispose()


_CHECK = """
import sys
from helpdesk import db
from helpdesk.settings import DatabaseSettings
settings = DatabaseSettings(url=sys.argv[1], auto_upgrade=False)
engine = db.make_engine(settings)
db.ensure_schema(engine, settings)
print(sorted(name for name in sys.modules if name.split(".")[0] == "alembic"))
"""


def test_a_current_schema_is_checked_without_loading_alembic(
        engine: Engine, db_url: str) -> None:
    """Each piped message (`helpdesk ingest`) is a new process: loading
    alembic to learn that nothing is to be done cost it a fifth of a second."""
    db.upgrade(engine)
    out = subprocess.run([sys.executable, "-c", _CHECK, db_url], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "[]"


_COMPRESSION = text(
    "SELECT c.relname, a.attname, a.attcompression FROM pg_attribute a"
    " JOIN pg_class c ON c.oid = a.attrelid"
    " WHERE c.relname IN ('inbound_raw', 'blob', 'outbox', 'message')"
    " AND a.attname IN ('raw', 'data', 'body') AND a.attnum > 0"
)
_LZ4 = {("inbound_raw", "raw"), ("blob", "data"), ("outbox", "raw"), ("message", "body")}


@pytest.mark.postgres
def test_large_columns_are_compressed_with_lz4_where_the_server_has_it(pg_url: str) -> None:
    engine = db.make_engine(DatabaseSettings(url=pg_url))
    try:
        command.upgrade(db.alembic_config(engine), "0002")
        raw = b"Subject: kept\r\n\r\n" + b"an old mail, compressed with pglz " * 400
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO inbound_mail (id, source, message_id, sha256, dedup_key, size,"
                " received_at, status, outcome, error) VALUES (1, 'maildir', 'old@client.test',"
                " :sha, 'k1', :size, now(), 'done', '', '')"), {"sha": "0" * 64, "size": len(raw)})
            conn.execute(text("INSERT INTO inbound_raw (inbound_mail_id, raw) VALUES (1, :raw)"),
                         {"raw": raw})
        db.upgrade(engine)
        with engine.connect() as conn:
            choices = conn.execute(text(
                "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"
            )).scalar()
            found = {(table, column): method for table, column, method
                     in conn.execute(_COMPRESSION) if (table, column) in _LZ4}
            # Stored before the change, read back as it was.
            assert conn.execute(text("SELECT raw FROM inbound_raw")).scalar() == raw
        assert set(found) == _LZ4
        # 'l' is lz4, '' the server's default; a server built without lz4 keeps it.
        assert set(found.values()) == ({"l"} if "lz4" in (choices or []) else {""})
        command.downgrade(db.alembic_config(engine), "0002")
        with engine.connect() as conn:
            assert {method for table, column, method in conn.execute(_COMPRESSION)
                    if (table, column) in _LZ4} == {""}
    finally:
        engine.dispose()


def test_the_compression_migration_leaves_sqlite_as_it_is(tmp_path: Path) -> None:
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'h.db'}"))
    try:
        db.upgrade(engine)
        assert db.current_revision(engine) == db.HEAD
        command.downgrade(db.alembic_config(engine), "0002")
        assert db.current_revision(engine) == "0002"
    finally:
        engine.dispose()
