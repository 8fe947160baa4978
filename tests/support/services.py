"""Which real services a test may use, and what happens when one is missing.

Policy: on a developer's machine a test whose service is absent is *skipped* with a reason that
says what to install or start. In CI (environment variable ``CI`` is ``true`` or ``1``) the same
absence *fails* the test, so a broken CI machine cannot turn into a green run of skips.

- ``require_dovecot()``: the ``dovecot`` binary (Debian ``dovecot-imapd``), run as root.
- ``postgres_url()``: the SQLAlchemy URL of a reachable PostgreSQL, from ``HELPDESK_TEST_PG_URL``
  (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
- ``scratch_database(url)``: a context manager that creates an empty database
  ``helpdesk_test_<random>`` on that server, yields its URL (same driver as ``url``) and drops
  it afterwards with ``DROP DATABASE ... WITH (FORCE)``, which also ends sessions left open.
  Engines should still be disposed by the test: psycopg warns (an error under ``-W error``)
  about connections that are garbage-collected while open.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from tests.support.dovecot import find_binary

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_URL_VARIABLE = "HELPDESK_TEST_PG_URL"
SCRATCH_PREFIX = "helpdesk_test_"


def is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def unavailable(reason: str) -> NoReturn:
    """Skip the current test, or fail it in CI, because a required service is missing."""
    if is_ci():
        pytest.fail(f"{reason} (CI is set: required services must be present)", pytrace=False)
    pytest.skip(reason)


def require_dovecot() -> None:
    if find_binary("dovecot") is None:
        unavailable("Dovecot is not installed (apt-get install dovecot-imapd)")
    if os.geteuid() != 0:
        unavailable("the test Dovecot needs root to switch to its dovecot/dovenull users")


def postgres_url() -> str:
    """The URL of the test PostgreSQL server; skips (fails in CI) when it is unreachable."""
    url = os.environ.get(PG_URL_VARIABLE, DEFAULT_PG_URL)
    error = _connection_error(url)
    if error is not None:
        unavailable(f"PostgreSQL at {_redacted(url)} is not reachable ({PG_URL_VARIABLE}): {error}")
    return url


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """Create a fresh, uniquely named database next to ``url``'s; yield its URL; drop it."""
    base = make_url(url)
    name = SCRATCH_PREFIX + secrets.token_hex(6)
    with _admin_connection(base) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with _admin_connection(base) as conn:
            _drop_database(conn, name)


def _drop_database(conn: psycopg.Connection[TupleRow], name: str) -> None:
    ident = sql.Identifier(name)
    if conn.info.server_version >= 130000:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        return
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
    )
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))


def _admin_connection(base: URL) -> psycopg.Connection[TupleRow]:
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    return psycopg.connect(libpq_url(base), autocommit=True, connect_timeout=5)


@functools.cache
def _connection_error(url: str) -> str | None:
    """Why ``url`` cannot be reached, or None; cached so a missing server costs one timeout."""
    try:
        with psycopg.connect(libpq_url(make_url(url)), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except (psycopg.Error, ArgumentError) as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def libpq_url(url: URL) -> str:
    """A libpq connection URI for a SQLAlchemy URL (``postgresql+psycopg://`` -> ``postgresql://``)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _redacted(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"
