"""Fixtures for integration tests against real servers (see ``tests/support``).

- ``dovecot`` (session): one Dovecot for the whole run, with ``support@example.test`` and
  ``robot@example.test``, password ``secret``.
- ``imap_account`` (function): a brand-new user on that server, so a brand-new, empty Maildir
  (INBOX only). This is the isolation to prefer: creating a user costs one small file, nothing
  is shared between tests, and a client left running by a failed test cannot touch the next
  test's mail.
- ``clean_dovecot`` (function): the session server after emptying the two well-known users
  (every mailbox but INBOX deleted, INBOX expunged), for tests that need those addresses. It
  cleans *before* the test, so a failed test's mail stays inspectable until the next one.
- ``smtp_server`` (function): a capturing ``SmtpCapture``.
- ``tcp_proxy`` (function): a factory, ``tcp_proxy(host, port) -> TcpProxy``; all proxies stop at
  teardown.
- ``pg_url`` (function): the URL of a fresh scratch PostgreSQL database, dropped afterwards.
- ``db_url`` (function, parametrised ``sqlite`` / ``postgres``): a SQLAlchemy URL, either a
  SQLite file in ``tmp_path`` or ``pg_url``.
- ``schema_engine`` (function): the daemon's own engine (``helpdesk.db.make_engine``) on
  ``db_url``, with the schema in place.

Tests that use ``dovecot`` (or the fixtures built on it) get the ``dovecot`` marker, tests that
use ``pg_url`` the ``postgres`` marker, so ``-m "not dovecot and not postgres"`` runs the rest.
A missing service skips the test, or fails it when ``CI`` is set (``tests.support.services``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from helpdesk.db import ensure_schema, make_engine
from helpdesk.settings import DatabaseSettings
from tests.support.desk import Desk, DeskFactory
from tests.support.dovecot import Dovecot, ImapAccount
from tests.support.proxy import ProxyFactory, TcpProxy
from tests.support.services import postgres_url, require_dovecot, scratch_database
from tests.support.smtpd import SmtpCapture

SUPPORT_USER = "support@example.test"
ROBOT_USER = "robot@example.test"
PASSWORD = "secret"

_DOVECOT_FIXTURES = {"dovecot", "imap_account", "clean_dovecot"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _DOVECOT_FIXTURES:
            item.add_marker(pytest.mark.dovecot)
        if "pg_url" in names:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    require_dovecot()
    with Dovecot({SUPPORT_USER: PASSWORD, ROBOT_USER: PASSWORD}) as server:
        yield server


@pytest.fixture
def imap_account(dovecot: Dovecot) -> ImapAccount:
    return dovecot.add_user(f"t-{secrets.token_hex(6)}@example.test", PASSWORD)


@pytest.fixture
def clean_dovecot(dovecot: Dovecot) -> Dovecot:
    for user in (SUPPORT_USER, ROBOT_USER):
        dovecot.reset_user(user)
    return dovecot


@pytest.fixture
def smtp_server() -> Iterator[SmtpCapture]:
    with SmtpCapture() as server:
        yield server


@pytest.fixture
def tcp_proxy() -> Iterator[ProxyFactory]:
    with ExitStack() as stack:

        def make(host: str, port: int) -> TcpProxy:
            return stack.enter_context(TcpProxy(host, port))

        yield make


@pytest.fixture
def pg_url() -> Iterator[str]:
    with scratch_database(postgres_url()) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path / 'helpdesk.db'}"


@pytest.fixture
def schema_engine(db_url: str) -> Iterator[Engine]:
    """The daemon's own engine on ``db_url``, its schema in place. On SQLite
    its BEGIN handling is what makes SAVEPOINT work at all."""
    settings = DatabaseSettings(url=db_url, auto_upgrade=True)
    engine = make_engine(settings)
    try:
        ensure_schema(engine, settings)
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def make_desk(
    dovecot: Dovecot, imap_account: ImapAccount, smtp_server: SmtpCapture, tmp_path: Path
) -> Iterator[DeskFactory]:
    desks: list[Desk] = []

    def make(**options: Any) -> Desk:
        desk = Desk.create(dovecot, imap_account, smtp_server, tmp_path, **options)
        desks.append(desk)
        return desk

    yield make
    for desk in desks:
        desk.app.dispose()
