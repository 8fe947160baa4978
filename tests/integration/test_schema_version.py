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
from sqlalchemy import Engine

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
