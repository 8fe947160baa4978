"""Held mail is told of once, by one daemon, whatever the timing.

Against a real PostgreSQL: two daemons' passes at once, and a hold whose
transaction was still open when a notice was made.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from helpdesk import held
from helpdesk.app import App
from helpdesk.clock import ManualClock, SystemClock
from helpdesk.db import session_scope
from helpdesk.ingest.pipeline import Pipeline
from helpdesk.ingest.source import Fetched
from helpdesk.models import Outbox, Quarantine
from tests.support.config import make_app, write_config
from tests.support.mail import make_mail

pytestmark = pytest.mark.postgres


def _app(tmp_path: Path, url: str) -> App:
    config = write_config(tmp_path, db_url=url, helpdesk={"max_message_size": 1000})
    app: App = make_app(config, ManualClock(SystemClock().now()))
    return app


def _hold(app: App, n: int) -> None:
    raw = make_mail(message_id=f"<big{n}@client.test>", body="x" * 2000 + "\n")
    pipeline = Pipeline(app)
    try:
        [outcome] = pipeline.process([Fetched("test", str(n), raw)])
    finally:
        pipeline.close()
    assert outcome.status == "quarantined"


def _notices(app: App) -> int:
    with Session(app.engine) as session:
        return len(session.exec(select(Outbox).where(Outbox.purpose == held.PURPOSE)).all())


def _one_told_one_waiting(tmp_path: Path, url: str) -> tuple[App, ManualClock]:
    """Two holds ten minutes apart, the second left for the next notice; the
    clock two hours on, when that notice is due."""
    app = _app(tmp_path, url)
    clock = app.clock
    assert isinstance(clock, ManualClock)
    _hold(app, 1)  # told at once
    clock.advance(timedelta(minutes=10))
    _hold(app, 2)  # within the hour: waits
    assert _notices(app) == 1
    clock.advance(timedelta(hours=2))
    return app, clock


def test_two_daemons_passing_at_once_tell_of_a_hold_once(tmp_path: Path, pg_url: str) -> None:
    app, clock = _one_told_one_waiting(tmp_path, pg_url)
    with session_scope(app.engine) as first:
        assert held.tell_team(app, first, clock.now())
        # The other daemon, before the first commits: the hold is claimed.
        with session_scope(app.engine) as second:
            assert not held.tell_team(app, second, clock.now())
    assert _notices(app) == 2
    with Session(app.engine) as session:
        assert all(q.notified_at for q in session.exec(select(Quarantine)).all())
    app.dispose()


def test_a_hold_committed_after_a_notice_is_in_the_next(tmp_path: Path, pg_url: str) -> None:
    """Its created_at is before the notice's; it is still told of, later."""
    app, clock = _one_told_one_waiting(tmp_path, pg_url)
    late = Session(app.engine)
    try:
        # A hold made now, its transaction still open ...
        late.add(Quarantine(inbound_mail_id=_inbound_id(app), reason="apply_failed",
                            created_at=clock.now()))
        late.flush()
        clock.advance(timedelta(seconds=1))
        # ... while a pass tells of hold 2, at a time after the late one's.
        assert held.run_pass(app) == 1
        late.commit()
    finally:
        late.close()
    clock.advance(timedelta(hours=1, minutes=1))
    assert held.run_pass(app) == 1
    assert _notices(app) == 3
    with Session(app.engine) as session:
        assert all(q.notified_at for q in session.exec(select(Quarantine)).all())
    app.dispose()


def _inbound_id(app: App) -> int:
    from helpdesk.models import InboundMail

    with Session(app.engine) as session:
        row = session.exec(select(InboundMail)).first()
        assert row is not None and row.id is not None
        return row.id
