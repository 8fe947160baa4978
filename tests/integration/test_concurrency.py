"""Several daemons on one database: numbers stay unique and sequential."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlmodel import Session, select

from helpdesk.ingest.pipeline import Pipeline
from helpdesk.ingest.source import Fetched
from helpdesk.models import Ticket
from tests.support.config import make_app, write_config
from tests.support.mail import make_mail

PER_DAEMON = 24


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
