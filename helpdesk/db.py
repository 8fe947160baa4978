"""Database engine, sessions and schema version checks (I/O shell)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from helpdesk.errors import SchemaOutdatedError
from helpdesk.settings import DatabaseSettings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest migration in MIGRATIONS, which this code needs. Knowing it here
# spares every start (the daemon, each piped message of `helpdesk ingest`)
# loading alembic and its scripts to be told that nothing is to be done. A
# test holds it equal to what alembic finds; any other revision is left to
# alembic (ensure_schema).
HEAD = "0005"


def make_engine(settings: DatabaseSettings) -> Engine:
    url = settings.url
    if settings.is_sqlite:
        _ensure_sqlite_dir(url)
        # A pool, not a connection per session: opening runs the PRAGMAs, and
        # closing the last connection to a WAL database checkpoints it, which
        # made every commit cost milliseconds. Sessions hand connections
        # between the event loop and worker threads, one user at a time.
        engine = create_engine(
            url,
            echo=settings.echo,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=5,
            max_overflow=5,
            pool_pre_ping=False,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return _plain_savepoints(engine)
    return _plain_savepoints(create_engine(url, echo=settings.echo, pool_pre_ping=True,
                                           pool_size=5))


def _plain_savepoints(engine: Engine) -> Engine:
    """SAVEPOINT, RELEASE and ROLLBACK TO as plain SQL text.

    The pipeline takes a savepoint per message, and SQLAlchemy names each
    anew (sa_savepoint_1, _2, ...). Its default builds a statement object
    per name, so every SAVEPOINT and RELEASE was compiled afresh, and kept
    in the engine's compiled cache, never to be used again.
    """
    dialect = engine.dialect
    quote = dialect.identifier_preparer.quote

    def do_savepoint(conn: Connection, name: str) -> None:
        conn.exec_driver_sql(f"SAVEPOINT {quote(name)}")

    def do_release_savepoint(conn: Connection, name: str) -> None:
        conn.exec_driver_sql(f"RELEASE SAVEPOINT {quote(name)}")

    def do_rollback_to_savepoint(conn: Connection, name: str) -> None:
        conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {quote(name)}")

    # The dialect's own hooks for exactly this; set on this engine's
    # dialect instance only.
    vars(dialect).update(do_savepoint=do_savepoint, do_release_savepoint=do_release_savepoint,
                         do_rollback_to_savepoint=do_rollback_to_savepoint)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # We issue BEGIN ourselves (below): pysqlite's implicit transactions break
    # SAVEPOINT, which the pipeline uses to fail one message alone.
    dbapi_conn.isolation_level = None
    # WAL lets readers (the CLI) work while the daemon writes; NORMAL sync is
    # durable across process crashes in WAL mode, which is what we promise.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # IMMEDIATE takes the write lock up front, so a second process (the CLI, a
    # pipe delivery) waits for busy_timeout instead of failing with
    # SQLITE_BUSY when its read transaction later needs to write.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def is_connection_error(exc: DBAPIError) -> bool:
    """Whether ``exc`` is the database being unreachable or busy, not a
    statement at fault: retry later rather than blame the message."""
    return bool(exc.connection_invalidated) or (isinstance(exc, OperationalError) and (
        "database is locked" in str(exc) or "connection" in str(exc).lower()
    ))


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # The option is read through configparser, whose interpolation takes
    # "%" as its own: a percent-encoded password ("p%40ss") or path failed.
    url = engine.url.render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision(engine: Engine) -> str | None:
    """The newest revision among the migration scripts, as alembic finds it."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision alembic recorded in the database; None when it has none."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return None if value is None else str(value)


def upgrade(engine: Engine) -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), "head")


def ensure_schema(engine: Engine, settings: DatabaseSettings) -> None:
    """Upgrade the embedded default; elsewhere refuse an outdated schema."""
    current = current_revision(engine)
    if current == HEAD:
        return
    # Not the head we know: alembic decides, so a migration added without
    # moving HEAD costs a slower start, never a refusal to start.
    head = head_revision(engine)
    if current == head:
        return
    if settings.upgrades_itself:
        upgrade(engine)
        return
    raise SchemaOutdatedError(
        f"database schema is at {current or 'nothing'}, code needs {head}; "
        "run `helpdesk db upgrade`"
    )
