"""The outbox sender on SQLite and PostgreSQL: a Maildir outbound takes a
claimed batch at once (up to LOCAL_BATCH rows a pass), one mail it cannot
write is retried alone, and a transport that is not idempotent gets one mail
at a time, at most ``in_flight`` a pass."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from helpdesk import outbox
from helpdesk.app import App
from helpdesk.clock import ManualClock, SystemClock
from helpdesk.compose import Outgoing
from helpdesk.db import session_scope
from helpdesk.models import Outbox
from helpdesk.sender import LOCAL_BATCH, Mail, OutboxSender, SendResult
from tests.support.config import make_app, write_config


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[App]:
    app = make_app(write_config(tmp_path, db_url=db_url), ManualClock(SystemClock().now()))
    yield app
    app.dispose()


def _queue(app: App, count: int) -> list[int]:
    with session_scope(app.engine) as session:
        return [
            outbox.enqueue(session, app.settings.outbound, Outgoing(
                purpose="reply", automatic=False, envelope_from="support@example.test",
                recipients=(f"c{i}@client.test",), message_id=f"<o{i}@example.test>",
                subject="s", text="t", raw=f"Subject: {i}\r\n\r\nbody\r\n".encode(),
            ), app.clock.now()).id
            for i in range(count)
        ]


def _rows(app: App) -> dict[int, Outbox]:
    with session_scope(app.engine) as session:
        return {r.id: r for r in session.exec(select(Outbox)) if r.id is not None}


async def test_one_unwritable_mail_is_deferred_and_the_rest_are_sent(
    app: App, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = _queue(app, 3)
    blocker = tmp_path / "sent" / "new" / f"{ids[1]:012d}.{socket.gethostname()}"
    blocker.mkdir(parents=True)  # holds the second mail's name in new/
    sender = OutboxSender(app.engine, app.settings.outbound, app.clock)

    assert await sender.send_due() == 3
    rows = _rows(app)
    assert [rows[i].status for i in ids] == ["sent", "queued", "sent"]
    deferred = rows[ids[1]]
    assert deferred.attempts == 1 and "IsADirectoryError" in deferred.last_error
    assert deferred.next_attempt_at > app.clock.now()
    assert "mail deferred" in caplog.text
    assert not list((tmp_path / "sent" / "tmp").iterdir())

    blocker.rmdir()
    assert isinstance(app.clock, ManualClock)
    app.clock.advance(timedelta(seconds=app.settings.outbound.backoff_max))
    assert await sender.send_due() == 1
    assert {r.status for r in _rows(app).values()} == {"sent"}
    assert len(list((tmp_path / "sent" / "new").iterdir())) == 3
    await sender.transport.close()


class _OneAtATime:
    """Not idempotent, like SMTP: must get one mail per call, with the
    previous mail's result already committed."""

    idempotent = False

    def __init__(self, app: App) -> None:
        self.app = app
        self.statuses: list[list[str]] = []

    async def send_many(self, mails: Sequence[Mail]) -> list[SendResult]:
        assert len(mails) == 1
        self.statuses.append(sorted(r.status for r in _rows(self.app).values()))
        return [SendResult(ok=True)]

    async def close(self) -> None:
        return None


async def test_a_transport_that_is_not_idempotent_has_each_result_committed(
    app: App,
) -> None:
    _queue(app, 3)
    transport = _OneAtATime(app)
    sender = OutboxSender(app.engine, app.settings.outbound, app.clock, transport)
    assert await sender.send_due() == 3
    assert transport.statuses == [["sending"] * 3, ["sending", "sending", "sent"],
                                  ["sending", "sent", "sent"]]


async def test_a_local_transport_claims_a_large_batch_a_network_one_in_flight(
    app: App, tmp_path: Path
) -> None:
    _queue(app, LOCAL_BATCH + 5)
    sender = OutboxSender(app.engine, app.settings.outbound, app.clock)
    assert sender.transport.idempotent
    assert await sender.send_due() == LOCAL_BATCH
    assert await sender.send_due() == 5
    assert len(list((tmp_path / "sent" / "new").iterdir())) == LOCAL_BATCH + 5

    _queue(app, app.settings.outbound.in_flight + 2)
    one_by_one = OutboxSender(app.engine, app.settings.outbound, app.clock, _OneAtATime(app))
    assert await one_by_one.send_due() == app.settings.outbound.in_flight
    assert await one_by_one.send_due() == 2
    await sender.transport.close()
