"""Closing long-resolved tickets against a real PostgreSQL, beside a reply
reopening one at the same moment."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from helpdesk import closing, tickets
from helpdesk.app import App
from helpdesk.clock import ManualClock, SystemClock
from helpdesk.ingest.pipeline import Pipeline
from helpdesk.ingest.source import Fetched
from helpdesk.models import Ticket
from tests.support.config import make_app, write_config
from tests.support.mail import make_mail

pytestmark = pytest.mark.postgres


def test_a_ticket_being_reopened_is_not_closed_over_it(tmp_path: Path, pg_url: str) -> None:
    app: App = make_app(write_config(tmp_path, db_url=pg_url),
                        ManualClock(SystemClock().now()))
    clock = app.clock
    assert isinstance(clock, ManualClock)
    pipeline = Pipeline(app)
    try:
        pipeline.process([Fetched("test", "1", make_mail(message_id="<m1@client.test>"))])
    finally:
        pipeline.close()
    with Session(app.engine) as session:
        ticket = session.exec(select(Ticket)).one()
        tickets.set_status(app, session, ticket, "resolved", clock.now(), "alice@staff.test")
        session.commit()
    clock.advance(timedelta(days=8))
    reopening = Session(app.engine)
    try:
        ticket = reopening.exec(select(Ticket)).one()
        tickets.set_status(app, reopening, ticket, "open", clock.now(), "carol@client.test")
        # The reply's transaction holds the row: the pass leaves it.
        assert closing.run_pass(app) == 0
        reopening.commit()
    finally:
        reopening.close()
    with Session(app.engine) as session:
        assert session.exec(select(Ticket)).one().status == "open"
    app.dispose()
