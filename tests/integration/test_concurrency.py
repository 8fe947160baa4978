"""Several daemons on one database: numbers stay unique and sequential."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, select

from helpdesk.daemon import Ingester
from helpdesk.ingest.pipeline import LEAVE_FOR, Outcome, Pipeline
from helpdesk.ingest.source import Acknowledgement, Fetched
from helpdesk.models import InboundMail, Ticket
from helpdesk.workers import this_worker
from tests.support.config import make_app, write_config
from tests.support.mail import make_mail

PER_DAEMON = 24
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def test_two_daemons_number_tickets_without_gaps_or_duplicates(
    db_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, db_url=db_url)
    apps = [make_app(config), make_app(config)]  # two engines, as two processes would have
    errors: list[BaseException] = []

    def work(index: int) -> None:
        pipeline = Pipeline(apps[index])
        items = [
            Fetched(f"daemon{index}", str(i), make_mail(
                sender=f"c{index}-{i}@client.test", subject=f"from daemon {index} #{i}",
                message_id=f"<d{index}-{i}@client.test>"))
            for i in range(PER_DAEMON)
        ]
        try:
            for start in range(0, PER_DAEMON, 3):
                outcomes = pipeline.process(items[start : start + 3])
                assert {o.status for o in outcomes} == {"done"}, outcomes
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with Session(apps[0].engine) as session:
        numbers = sorted(session.exec(select(Ticket.number)).all())
        references = session.exec(select(Ticket.reference)).all()
    assert numbers == list(range(1, 2 * PER_DAEMON + 1))
    assert len(set(references)) == 2 * PER_DAEMON
    for app in apps:
        app.dispose()


def test_a_message_two_daemons_take_at_once_is_stored_once(db_url: str, tmp_path: Path) -> None:
    """Two daemons on one mailbox can fetch the same UID before either has
    moved it. The second waits for the first's transaction, then finds the
    message stored and reports a duplicate: no error, no second ticket."""
    config = write_config(tmp_path, db_url=db_url)
    first, second = make_app(config), make_app(config)
    raw = make_mail(sender="ann@client.test", subject="Both took me",
                    message_id="<both@client.test>")
    item = Fetched("imap://support@mail.example.test/INBOX", "7", raw, uidvalidity=3, uid=7)
    outcomes: list[Outcome] = []
    errors: list[BaseException] = []

    def take() -> None:
        try:
            outcomes.extend(Pipeline(second).process([item]))
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    try:
        with Session(first.engine) as holding:
            # The first daemon's batch, not yet committed, has stored the UID.
            holding.add(InboundMail(source=item.source, uidvalidity=3, uid=7,
                                    message_id="both@client.test", sha256="0" * 64,
                                    dedup_key="first", received_at=NOW, status="done"))
            holding.flush()
            racer = threading.Thread(target=take)
            racer.start()
            racer.join(0.5)
            # Still going: it waits on our uncommitted row (PostgreSQL) or
            # on the write lock (SQLite), so it meets the race, not its end.
            assert racer.is_alive()
            holding.commit()
        racer.join(60)
        assert not errors, errors
        assert [(o.status, o.detail) for o in outcomes] == [("duplicate", "already stored")]
        with Session(first.engine) as session:
            assert len(session.exec(select(InboundMail)).all()) == 1
            assert session.exec(select(Ticket)).all() == []
    finally:
        for app in (first, second):
            app.dispose()


def _stored_again(pipeline: Pipeline, engine: Engine, item: Fetched, worker: str,
                  received_at: datetime) -> Outcome:
    with Session(engine) as session:
        row = session.exec(select(InboundMail).where(
            InboundMail.message_id == "left@client.test")).one()
        row.worker, row.received_at = worker, received_at
        session.add(row)
        session.commit()
    (outcome,) = pipeline.process([item])
    assert outcome.status == "duplicate"
    return outcome


def _left_mail() -> Fetched:
    return Fetched(SOURCE, "9", make_mail(message_id="<left@client.test>"), uidvalidity=3,
                   uid=9)


SOURCE = "imap://support@mail.example.test/INBOX"


def test_mail_another_daemon_stored_is_left_to_it_while_it_may_be_moving_it(
    db_url: str, tmp_path: Path
) -> None:
    """Two sessions moving one message at once can both copy it, so a daemon
    that finds a mail stored by another leaves the move to it, while that
    one may still be at work: a live process on this host, or one elsewhere,
    within the lease. A dead process's mail, its own, and the same bytes
    under another UID it moves itself."""
    app = make_app(write_config(tmp_path, db_url=db_url))
    pipeline = Pipeline(app)
    item = _left_mail()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (first,) = pipeline.process([item])
        assert (first.status, first.left_to) == ("done", "")
        now = app.clock.now()
        host = socket.gethostname()
        live = f"{host}:{other.pid}"
        late = now - LEAVE_FOR - timedelta(seconds=1)
        cases = [
            (pipeline.worker, now, ""),  # its own: a MOVE of ours that failed
            (live, now, live),
            (f"{live}/ingester", now, f"{live}/ingester"),
            (f"{this_worker()}/another", now, f"{this_worker()}/another"),  # same process
            (live, late, ""),  # alive, yet past the lease (its pid reused, say)
            (f"{host}:0", now, ""),
            ("elsewhere.test:42", now - timedelta(minutes=1), "elsewhere.test:42"),
            ("elsewhere.test:42", late, ""),
            ("", now, ""),  # stored before workers were recorded
        ]
        for worker, received_at, left_to in cases:
            outcome = _stored_again(pipeline, app.engine, item, worker, received_at)
            assert outcome.left_to == left_to, (worker, received_at)
        # The same bytes under another UID: the storer will not move that one.
        moved_back = Fetched(SOURCE, "12", item.raw, uidvalidity=3, uid=12)
        _stored_again(pipeline, app.engine, item, live, now)
        (outcome,) = pipeline.process([moved_back])
        assert (outcome.status, outcome.left_to) == ("duplicate", "")
        other.kill()
        other.wait()
        assert _stored_again(pipeline, app.engine, item, live, now).left_to == ""  # died
    finally:
        other.kill()
        other.wait()
        pipeline.close()
        app.dispose()


class _ListSource:
    """A source over a list: what was fetched with which skip, what acknowledged."""

    key = SOURCE
    is_processed_ack_repeatable = False

    def __init__(self, items: list[Fetched]) -> None:
        self.waiting = list(items)
        self.fetches: list[list[str]] = []
        self.acknowledged: list[str] = []  # as processed
        self.quarantined: list[str] = []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def fetch(self, limit: int, skip: frozenset[str] = frozenset()) -> list[Fetched]:
        batch = [i for i in self.waiting if i.handle not in skip][:limit]
        self.fetches.append([i.handle for i in batch])
        return batch

    async def acknowledge(self, ack: Acknowledgement) -> None:
        self.acknowledged.extend(sorted((f.handle for f in ack.processed), key=int))
        self.quarantined.extend(sorted((f.handle for f in ack.quarantined), key=int))
        done = {f.handle for f in (*ack.processed, *ack.quarantined)}
        self.waiting = [i for i in self.waiting if i.handle not in done]

    async def wait(self, timeout: float) -> None:
        return None


async def _drain_beside_a_live_storer(
    tmp_path: Path, stored: list[Fetched], waiting: list[Fetched], *, repeatable: bool = False
) -> tuple[list[str], list[Outcome], _ListSource]:
    """Store ``stored`` as a live daemon on this host would have, then drain
    ``waiting`` (batches of two) with its own pipeline; return the statuses
    ``stored`` got, the drain's outcomes, and the source it drained."""
    config = write_config(tmp_path, inbound={"kind": "maildir", "path": str(tmp_path / "mail"),
                                             "batch_size": 2})
    app = make_app(config)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        statuses = [o.status for o in Pipeline(app).process(stored)]
        with Session(app.engine) as session:
            for row in session.exec(select(InboundMail)).all():
                row.worker = f"{socket.gethostname()}:{other.pid}"
                session.add(row)
            session.commit()
        source = _ListSource(waiting)
        source.is_processed_ack_repeatable = repeatable
        ingester = Ingester(app, app.settings.inbound[0], source=source)
        outcomes = await ingester.drain()
        ingester.pipeline.close()
        return statuses, outcomes, source
    finally:
        other.kill()
        other.wait()
        app.dispose()


def _new_mail(*uids: int) -> list[Fetched]:
    return [Fetched(SOURCE, str(uid), make_mail(sender=f"n{uid}@client.test",
                                                message_id=f"<n{uid}@client.test>"),
                    uidvalidity=3, uid=uid) for uid in uids]


async def test_a_drain_leaves_such_mail_in_place_and_does_not_fetch_it_again(
    tmp_path: Path,
) -> None:
    left = _left_mail()
    _, outcomes, source = await _drain_beside_a_live_storer(
        tmp_path, [left], [left, *_new_mail(10, 11, 13, 14, 15)])
    assert [(o.fetched.handle, o.status, bool(o.left_to)) for o in outcomes] == [
        ("9", "duplicate", True), ("10", "done", False), ("11", "done", False),
        ("13", "done", False), ("14", "done", False), ("15", "done", False)]
    assert source.acknowledged == ["10", "11", "13", "14", "15"]
    assert sum(fetch.count("9") for fetch in source.fetches) == 1
    assert [i.handle for i in source.waiting] == ["9"]  # for its storer to move


async def test_where_processed_mail_is_only_flagged_a_drain_flags_it_but_leaves_quarantined(
    tmp_path: Path,
) -> None:
    """A second flag is harmless, so mail another daemon stored as processed
    is acknowledged at once; mail it quarantined is moved in every mode, so
    that is still left to it."""
    left = _left_mail()
    held = Fetched(SOURCE, "12", b"", uidvalidity=3, uid=12)  # empty: quarantined
    new = _new_mail(10, 11, 13, 14, 15, 16)
    statuses, outcomes, source = await _drain_beside_a_live_storer(
        tmp_path, [left, held], [left, *new[:2], held, *new[2:]], repeatable=True)
    assert statuses == ["done", "quarantined"]
    assert [(o.fetched.handle, o.status, bool(o.left_to)) for o in outcomes] == [
        ("9", "duplicate", True), ("10", "done", False), ("11", "done", False),
        ("12", "quarantined", True), ("13", "done", False), ("14", "done", False),
        ("15", "done", False), ("16", "done", False)]
    assert source.acknowledged == ["9", "10", "11", "13", "14", "15", "16"]
    assert source.quarantined == []
    # Batches of two, each next one read while one is stored: 12 would
    # be read again with 15 but for the drain's memory of it.
    assert sum(fetch.count("12") for fetch in source.fetches) == 1
    assert [i.handle for i in source.waiting] == ["12"]  # for its storer to move
