"""The SLA promises end to end: real SQLite and PostgreSQL, real SMTP capture.

Mail goes in through the real pipeline, time moves on a :class:`ManualClock`,
and each step runs the daemon's ``once`` (ingest, SLA pass, outbox) in
process. What counts is what the SMTP server received and what the ticket
records, read as an operator would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from helpdesk import tickets
from helpdesk.app import App
from helpdesk.clock import ManualClock
from helpdesk.daemon import Daemon
from helpdesk.db import session_scope
from helpdesk.ingest.pipeline import Outcome, Pipeline
from helpdesk.ingest.source import Fetched
from helpdesk.models import Event, Notice, Outbox, Ticket
from helpdesk.sla import report_cli
from tests.support.config import STAFF, make_app, smtp_outbound, write_config
from tests.support.mail import make_mail
from tests.support.smtpd import SmtpCapture

LONDON = ZoneInfo("Europe/London")
# Monday 23 November 2026 (GMT, so London time is UTC): inside office hours.
MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=LONDON)
CAROL = "Carol Client <carol@client.test>"
TEAM = "team@example.test"
BOB = "bob@staff.example.test"
MANAGER = "sam@example.test"
MANAGERS = """
[[escalation.managers]]
name = "Sam Lee"
address = "sam@example.test"
region = "EMEA"
timezone = "Europe/London"
days = ["mon", "tue", "wed", "thu", "fri"]
start = "08:00"
end = "18:00"
"""


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """A London wall-clock time in the week of Monday 23 November 2026."""
    return datetime(2026, 11, day, hour, minute, tzinfo=LONDON)


@dataclass(frozen=True)
class Sent:
    """One mail the SMTP server accepted, with the outbox purpose it was queued for."""

    purpose: str
    rcpt: frozenset[str]
    msg: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.msg["Subject"])

    @property
    def text(self) -> str:
        part = self.msg.get_body(("plain",))
        assert part is not None
        return str(part.get_content())


@dataclass
class Desk:
    """A helpdesk (one App: one daemon) on a database, the SMTP capture and a manual clock."""

    config: Path
    clock: ManualClock
    app: App
    smtp: SmtpCapture
    seen: int = 0
    delivered: int = 0
    purposes: dict[str, str] = field(default_factory=dict)

    def deliver(self, raw: bytes) -> Outcome:
        """One mail through the real pipeline, at the clock's time."""
        self.delivered += 1
        (outcome,) = Pipeline(self.app).process([Fetched("test", str(self.delivered), raw)])
        assert outcome.status == "done", outcome
        return outcome

    def once(self) -> None:
        """One daemon step: an SLA pass, then the outbox until it is empty."""
        asyncio.run(Daemon(self.app).once())

    def step(self, when: datetime) -> list[Sent]:
        """Move the clock to ``when``, run the daemon once, return what arrived."""
        self.clock.set(when)
        self.once()
        return self.sent()

    def sent(self) -> list[Sent]:
        """The mail the SMTP server received since the last call."""
        captured = self.smtp.messages
        new, self.seen = captured[self.seen :], len(captured)
        with Session(self.app.engine) as session:
            for row in session.exec(select(Outbox)).all():
                self.purposes[row.message_id] = row.purpose
        out: list[Sent] = []
        for m in new:
            msg = email.message_from_bytes(m.raw, policy=default)
            assert isinstance(msg, EmailMessage)
            purpose = self.purposes.get(str(msg["Message-ID"]).strip("<>"), "?")
            out.append(Sent(purpose, frozenset(r.lower() for r in m.rcpt_tos), msg))
        return out

    def ticket(self, reference: str = "HD-000001") -> Ticket:
        with Session(self.app.engine) as session:
            found = tickets.get_by_reference(session, reference)
            assert found is not None
            return found

    def events(self, kind: str, reference: str = "HD-000001") -> list[dict[str, Any]]:
        ticket_id = self.ticket(reference).id
        with Session(self.app.engine) as session:
            rows = session.exec(
                select(Event).where(Event.ticket_id == ticket_id, Event.kind == kind)
                .order_by(Event.id)  # type: ignore[arg-type]
            ).all()
            return [json.loads(e.detail) for e in rows]

    def notices(self) -> list[tuple[int, str, str, int]]:
        with Session(self.app.engine) as session:
            return sorted((n.ticket_id, n.target, n.kind, n.cycle)
                          for n in session.exec(select(Notice)).all())

    def restart(self) -> Desk:
        """A new daemon on the same database and clock (the old one is gone)."""
        self.app.dispose()
        return Desk(self.config, self.clock, make_app(self.config, self.clock), self.smtp,
                    seen=self.seen, delivered=self.delivered, purposes=self.purposes)


def sla_mail(sent: list[Sent]) -> list[Sent]:
    return [s for s in sent if s.purpose.startswith("sla_")]


def client_mail(subject: str = "[Critical] Payroll server down", *, message_id: str,
                sender: str = CAROL, body: str = "Nobody can log in.\n") -> bytes:
    return make_mail(sender=sender, subject=subject, message_id=message_id, body=body)


def staff_mail(body: str, *, message_id: str, reference: str = "HD-000001") -> bytes:
    return make_mail(sender=f"Alice Staff <{STAFF}>", subject=f"Re: [{reference}] Payroll",
                     body=body, message_id=message_id)


DeskFactory = Callable[..., Desk]


@pytest.fixture
def make_desk(tmp_path: Path, smtp_server: SmtpCapture, db_url: str) -> Iterator[DeskFactory]:
    desks: list[Desk] = []

    def make(start: datetime = MONDAY_10, extra: str = "") -> Desk:
        config = write_config(tmp_path, db_url=db_url, outbound=smtp_outbound(smtp_server),
                              extra=extra)
        clock = ManualClock(start)
        desk = Desk(config, clock, make_app(config, clock), smtp_server)
        desks.append(desk)
        return desk

    yield make
    for desk in desks:
        desk.app.dispose()


# -- warning and breach --------------------------------------------------------------------


def by_ticket(sent: list[Sent]) -> dict[str, Sent]:
    """SLA mail keyed by the ticket reference its subject starts with; one each."""
    found = {s.subject.split("]")[0].lstrip("["): s for s in sla_mail(sent)}
    assert len(found) == len(sla_mail(sent)), [s.subject for s in sla_mail(sent)]
    return found


def test_warning_then_breach_arrive_on_time_and_once(make_desk: DeskFactory) -> None:
    """Critical on Standard, opened Monday 10:00: first response due 11:00, so
    the warning is due at 10:45 (75 % of the hour) and the breach at 11:00.
    HD-000001 stays unassigned; HD-000002 is assigned to Bob at 10:10."""
    desk: Desk = make_desk(extra=MANAGERS)
    desk.deliver(client_mail(message_id="<crit1@client.test>"))
    desk.deliver(client_mail("[Critical] Mail relay down", message_id="<crit2@client.test>",
                             sender="Dan Client <dan@client.test>"))
    opened = desk.step(at(23, 10, 0))
    assert sorted(s.purpose for s in opened) == ["confirmation"] * 2 + ["staff_new_ticket"] * 2
    ticket = desk.ticket()
    assert ticket.priority == "critical"
    assert ticket.first_response_due == at(23, 11, 0)
    assert ticket.next_sla_at == at(23, 10, 45)
    desk.clock.set(at(23, 10, 10))
    assert desk.deliver(staff_mail(f"#assign {BOB}\n", message_id="<assign@staff.test>",
                                   reference="HD-000002")).detail == "staff_commands"

    assert sla_mail(desk.step(at(23, 10, 40))) == []
    assert sla_mail(desk.step(at(23, 10, 44))) == []

    warnings = by_ticket(desk.step(at(23, 10, 45)))
    assert {ref: (w.purpose, set(w.rcpt)) for ref, w in warnings.items()} == {
        "HD-000001": ("sla_warning", {TEAM}),
        "HD-000002": ("sla_warning", {BOB}),  # the person on it, not the whole team
    }
    warning = warnings["HD-000001"]
    assert warning.subject == "[HD-000001] SLA warning: first response - Payroll server down"
    # The deadline itself, not the moment the warning fell due (10:45).
    assert "first response is due by 11:00 GMT today" in warning.text
    assert "This notice is late" not in warning.text

    assert sla_mail(desk.step(at(23, 10, 50))) == []
    assert sla_mail(desk.step(at(23, 10, 59))) == []

    breaches = by_ticket(desk.step(at(23, 11, 0)))
    assert {ref: (b.purpose, set(b.rcpt)) for ref, b in breaches.items()} == {
        "HD-000001": ("sla_breach", {TEAM, MANAGER}),
        "HD-000002": ("sla_breach", {TEAM, BOB, MANAGER}),
    }
    breach = breaches["HD-000001"]
    assert breach.subject == "[HD-000001] SLA BREACH: first response - Payroll server down"
    assert "first response was due by 11:00 GMT today" in breach.text
    assert "This notice is late" not in breach.text

    # More passes, later on, send nothing more for the first response.
    assert sla_mail(desk.step(at(23, 11, 1))) == []
    assert sla_mail(desk.step(at(23, 12, 30))) == []
    [warned] = desk.events("sla_warning")
    assert (warned["target"], warned["late"]) == ("first_response", False)
    assert datetime.fromisoformat(warned["due_at"]) == at(23, 10, 45)
    assert datetime.fromisoformat(warned["deadline"]) == at(23, 11, 0)
    [breached] = desk.events("sla_breach")
    assert (breached["target"], breached["late"]) == ("first_response", False)
    first, second = desk.ticket().id, desk.ticket("HD-000002").id
    assert desk.notices() == sorted(
        (t, "first_response", kind, 0) for t in (first, second) for kind in ("warning", "breach")
    )


# -- pending pauses the resolution clock ---------------------------------------------------


def resolution_mail(sent: list[Sent]) -> list[Sent]:
    return [s for s in sla_mail(sent) if ": resolution - " in s.subject]


@pytest.mark.parametrize("how", ["staff_mail", "set_status"])
def test_pending_does_not_breach_and_client_reply_resumes(make_desk: DeskFactory, how: str) -> None:
    """Critical, opened Monday 10:00: resolution due 14:00. Pending from 10:30
    (half an hour used, 3.5 h left) until the client answers on Tuesday at
    11:00: then due 14:30, with the warning at 13:30 (3 h of 4 used)."""
    desk: Desk = make_desk()
    desk.deliver(client_mail(message_id="<crit@client.test>"))
    desk.step(at(23, 10, 0))
    assert desk.ticket().resolution_due == at(23, 14, 0)

    desk.clock.set(at(23, 10, 30))
    if how == "staff_mail":
        outcome = desk.deliver(staff_mail("#status pending\n\nCould you send the server logs?\n",
                                          message_id="<ask@staff.test>"))
        assert outcome.detail == "staff_reply"
    else:
        with session_scope(desk.app.engine) as session:
            ticket = tickets.get_by_reference(session, "HD-000001")
            assert ticket is not None
            tickets.set_status(desk.app, session, ticket, "pending", at(23, 10, 30), STAFF)
    paused = desk.ticket()
    assert (paused.status, paused.resolution_due) == ("pending", None)

    while_pending = [desk.step(when) for when in
                     (at(23, 10, 30), at(23, 13, 0), at(23, 14, 0), at(23, 17, 0), at(24, 10, 59))]
    assert [resolution_mail(sent) for sent in while_pending] == [[]] * 5
    if how == "staff_mail":
        # The public reply met the first response: nothing at all was due.
        assert [sla_mail(sent) for sent in while_pending] == [[]] * 5
    else:
        # Pending without a word to the client still owes them a first response.
        [[breach]] = [sla_mail(sent) for sent in while_pending if sla_mail(sent)]
        assert breach.subject.startswith("[HD-000001] SLA BREACH: first response")
    # The first-response warning (10:45) was overtaken by its breach: never sent.
    assert desk.events("sla_warning") == []

    desk.clock.set(at(24, 11, 0))
    assert desk.deliver(client_mail("Re: [HD-000001] Payroll server down",
                                    message_id="<logs@client.test>",
                                    body="Logs attached.\n")).detail == "reply"
    resumed = desk.ticket()
    assert (resumed.status, resumed.resolution_due) == ("open", at(24, 14, 30))

    assert resolution_mail(desk.step(at(24, 13, 29))) == []
    [warning] = resolution_mail(desk.step(at(24, 13, 30)))
    assert warning.purpose == "sla_warning"
    assert "resolution is due by 14:30 GMT today" in warning.text
    assert resolution_mail(desk.step(at(24, 14, 29))) == []
    [breach] = resolution_mail(desk.step(at(24, 14, 30)))
    assert breach.purpose == "sla_breach"
    assert "This notice is late" not in breach.text
    assert resolution_mail(desk.step(at(24, 16, 0))) == []


# -- restarts and several daemons ----------------------------------------------------------


def test_restart_after_deadline_sends_breach_once_marked_late(make_desk: DeskFactory) -> None:
    """The daemon stops after Monday 10:00 and comes back at 11:30: HD-000001's
    breach (due 11:00) goes once, marked late, without the stale 10:45
    warning; HD-000002, answered and resolved at 11:10 while it was down,
    gets nothing."""
    desk: Desk = make_desk(extra=MANAGERS)
    desk.deliver(client_mail(message_id="<crit1@client.test>"))
    desk.deliver(client_mail("[Critical] Mail relay down", message_id="<crit2@client.test>",
                             sender="Dan Client <dan@client.test>"))
    desk.step(at(23, 10, 0))
    # The daemon is down; the MTA still delivers through `helpdesk ingest`, its own process.
    desk.clock.set(at(23, 11, 10))
    mta = make_app(desk.config, desk.clock)
    Pipeline(mta).process([Fetched("pipe", "-", staff_mail(
        "#status resolved\n\nRestarted the relay.\n", message_id="<fixed@staff.test>",
        reference="HD-000002"))])
    mta.dispose()
    assert desk.ticket("HD-000002").status == "resolved"

    desk.clock.set(at(23, 11, 30))
    restarted = desk.restart()
    restarted.once()
    sent = restarted.sent()
    [breach] = sla_mail(sent)
    assert breach.subject.startswith("[HD-000001] SLA BREACH: first response")
    assert breach.rcpt == {TEAM, MANAGER}
    assert "first response was due by 11:00 GMT today" in breach.text
    assert "This notice is late" in breach.text
    [event] = restarted.events("sla_breach")
    assert (event["target"], event["late"]) == ("first_response", True)
    assert restarted.events("sla_warning") == []
    assert restarted.events("sla_breach", "HD-000002") == []
    # The staff answer queued while the daemon was down goes out now too.
    assert [s.purpose for s in sent if s.purpose != "sla_breach"] == ["reply_relay"]

    assert sla_mail(restarted.step(at(23, 11, 31))) == []
    again = restarted.restart()
    assert sla_mail(again.step(at(23, 11, 32))) == []
    with Session(again.app.engine) as session:
        rows = session.exec(select(Notice)).all()
        assert [(n.target, n.kind, n.late) for n in rows] == [("first_response", "breach", True)]
    again.app.dispose()


TICKETS = 20


def test_two_daemons_send_one_breach_each(tmp_path: Path, smtp_server: SmtpCapture,
                                          pg_url: str) -> None:
    """Two daemons (two Apps) on one PostgreSQL database, each running whole
    daemon steps in its own thread at the same moment: every due breach goes
    out once, not twice."""
    config = write_config(tmp_path, db_url=pg_url, outbound=smtp_outbound(smtp_server))
    clock = ManualClock(MONDAY_10)
    first, second = make_app(config, clock), make_app(config, clock)
    try:
        Pipeline(first).process([
            Fetched("test", str(i), client_mail(f"[Critical] Outage {i}",
                                                message_id=f"<outage{i}@client.test>",
                                                sender=f"client{i}@client.test"))
            for i in range(TICKETS)
        ])
        clock.set(at(23, 11, 1))  # every first response is a minute overdue
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def daemon(app: App) -> None:
            try:
                start.wait(timeout=30)
                for _ in range(3):
                    asyncio.run(Daemon(app).once())
            except BaseException as exc:  # handed to the test thread below
                errors.append(exc)

        threads = [threading.Thread(target=daemon, args=(app,)) for app in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        assert not any(thread.is_alive() for thread in threads)

        breaches = [m for m in smtp_server.messages
                    if b"SLA BREACH" in m.raw and m.rcpt_tos == (TEAM,)]
        subjects = sorted(str(email.message_from_bytes(m.raw, policy=default)["Subject"])
                          for m in breaches)
        assert subjects == sorted(
            f"[HD-{n:06d}] SLA BREACH: first response - Outage {n - 1}"
            for n in range(1, TICKETS + 1)
        )
        with Session(first.engine) as session:
            assert len(session.exec(select(Notice)).all()) == TICKETS
            queued = session.exec(select(Outbox).where(Outbox.purpose == "sla_breach")).all()
            assert len(queued) == TICKETS and {r.status for r in queued} == {"sent"}
    finally:
        first.dispose()
        second.dispose()


# -- what the client is told, and priority changes ----------------------------------------


def test_confirmation_states_priority_and_first_response_deadline(make_desk: DeskFactory) -> None:
    # Low (two business days, 17 open hours) from Friday 27 March 2026, 10:00
    # GMT: Tuesday, by then on summer time (the clocks go forward on the 29th).
    desk: Desk = make_desk(start=datetime(2026, 3, 27, 10, 0, tzinfo=LONDON))
    desk.deliver(client_mail("[Low] Typo on the invoice page", message_id="<mar@client.test>",
                             sender="Erin Client <erin@client.test>"))
    desk.once()
    # Medium (one business day, 8.5 open hours) from Friday 09:30: Monday 09:30.
    desk.clock.set(at(27, 9, 30))
    desk.deliver(client_mail("Printer is broken", message_id="<fri@client.test>"))
    desk.once()
    desk.clock.set(at(30, 10, 0))
    desk.deliver(client_mail("[Critical] Payroll server down", message_id="<mon@client.test>",
                             sender="Dan Client <dan@client.test>"))
    desk.once()
    confirmations = {s.subject: s.text for s in desk.sent() if s.purpose == "confirmation"}
    march = confirmations["[HD-000001] Typo on the invoice page"]
    assert "Priority:        Low" in march
    assert "First response:  by Tuesday 31 March, 10:00 BST" in march
    friday = confirmations["[HD-000002] Printer is broken"]
    assert "Priority:        Medium" in friday
    assert "First response:  by Monday 30 November, 09:30 GMT" in friday
    monday = confirmations["[HD-000003] Payroll server down"]
    assert "Priority:        Critical" in monday
    assert "First response:  by 11:00 GMT today" in monday


def test_priority_change_recomputes_from_creation_and_never_repeats(make_desk: DeskFactory) -> None:
    """High, opened Monday 10:00: first response due 14:00 (warning 13:00). At
    13:10 staff make it Critical: due 11:00 and resolution 14:00, both counted
    from 10:00. The first-response breach goes at once, on time rather than
    "late" (the deadline only moved into the past now), and the warning
    already sent is not sent again; lowering the priority later repeats
    nothing either."""
    desk: Desk = make_desk()
    desk.deliver(client_mail("[High] VPN drops every hour", message_id="<vpn@client.test>"))
    desk.step(at(23, 10, 0))
    assert desk.ticket().first_response_due == at(23, 14, 0)
    [warning] = sla_mail(desk.step(at(23, 13, 0)))
    assert warning.subject.startswith("[HD-000001] SLA warning: first response")

    desk.clock.set(at(23, 13, 10))
    assert desk.deliver(staff_mail("#priority critical\n", message_id="<p1@staff.test>",
                                   reference="HD-000001")).detail == "staff_commands"
    raised = desk.ticket()
    assert raised.priority == "critical"
    assert (raised.first_response_due, raised.resolution_due) == (at(23, 11, 0), at(23, 14, 0))

    sent = sla_mail(desk.step(at(23, 13, 10)))
    assert sorted(s.subject.split(" - ")[0] for s in sent) == [
        "[HD-000001] SLA BREACH: first response",
        "[HD-000001] SLA warning: resolution",
    ]
    assert not [s for s in sent if "This notice is late" in s.text]
    assert [e["late"] for e in desk.events("sla_breach")] == [False]
    assert sla_mail(desk.step(at(23, 13, 30))) == []
    [breach] = sla_mail(desk.step(at(23, 14, 0)))
    assert breach.subject.startswith("[HD-000001] SLA BREACH: resolution")

    desk.clock.set(at(23, 14, 10))
    desk.deliver(staff_mail("#priority medium\n", message_id="<p2@staff.test>"))
    lowered = desk.ticket()
    # Medium from 10:00 Monday: a business day (8.5 h) for the first response.
    assert lowered.first_response_due == at(24, 10, 0)
    later = [desk.step(when) for when in (at(23, 16, 0), at(24, 10, 0), at(26, 17, 0))]
    assert [sla_mail(sent) for sent in later] == [[], [], []]
    ticket_id = lowered.id
    assert desk.notices() == [
        (ticket_id, "first_response", "breach", 0),
        (ticket_id, "first_response", "warning", 0),
        (ticket_id, "resolution", "breach", 0),
        (ticket_id, "resolution", "warning", 0),
    ]


def test_a_ticket_the_pass_cannot_handle_does_not_stop_the_others(make_desk: DeskFactory) -> None:
    desk: Desk = make_desk()
    desk.deliver(client_mail(message_id="<crit1@client.test>"))
    desk.deliver(client_mail("[Critical] Mail relay down", message_id="<crit2@client.test>",
                             sender="Dan Client <dan@client.test>"))
    desk.step(at(23, 10, 0))
    with session_scope(desk.app.engine) as session:
        broken = tickets.get_by_reference(session, "HD-000001")
        assert broken is not None
        broken.priority = "urgent"  # not a priority this version knows
        session.add(broken)

    [breach] = sla_mail(desk.step(at(23, 11, 0)))
    assert breach.subject.startswith("[HD-000002] SLA BREACH: first response")
    # Put off, not dropped: tried again a few minutes later.
    assert desk.ticket().next_sla_at == at(23, 11, 5)
    assert sla_mail(desk.step(at(23, 11, 1))) == []

    with session_scope(desk.app.engine) as session:
        mended = tickets.get_by_reference(session, "HD-000001")
        assert mended is not None
        mended.priority = "critical"
        session.add(mended)
    [breach] = sla_mail(desk.step(at(23, 11, 5)))
    assert breach.subject.startswith("[HD-000001] SLA BREACH: first response")


def refuse_outbox_rows(app: App, ticket_id: int | None) -> None:
    """A database trigger that refuses the outbox rows of one ticket (None:
    drop it): a write that fails inside the database, not in our code."""
    with app.engine.begin() as conn:
        if app.engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS refuse_outbox"))
            if ticket_id is not None:
                conn.execute(text(
                    "CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox "
                    f"WHEN NEW.ticket_id = {ticket_id} "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"))
            return
        conn.execute(text("DROP TRIGGER IF EXISTS refuse_outbox ON outbox"))
        if ticket_id is not None:
            conn.execute(text(
                "CREATE OR REPLACE FUNCTION refuse_outbox() RETURNS trigger LANGUAGE plpgsql "
                f"AS $$ BEGIN IF NEW.ticket_id = {ticket_id} THEN "
                "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$"))
            conn.execute(text(
                "CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox "
                "FOR EACH ROW EXECUTE FUNCTION refuse_outbox()"))


def test_a_ticket_whose_rows_the_database_refuses_does_not_stop_the_others(
    make_desk: DeskFactory,
) -> None:
    """The pass writes a batch of tickets together; when the database
    refuses one ticket's rows, the others are still written, and the refused
    ticket's notice is not recorded as sent: it goes out once the fault is gone."""
    desk: Desk = make_desk()
    desk.deliver(client_mail(message_id="<crit1@client.test>"))
    desk.deliver(client_mail("[Critical] Mail relay down", message_id="<crit2@client.test>",
                             sender="Dan Client <dan@client.test>"))
    desk.step(at(23, 10, 0))
    refused = desk.ticket()
    refuse_outbox_rows(desk.app, refused.id)

    [breach] = sla_mail(desk.step(at(23, 11, 0)))
    assert breach.subject.startswith("[HD-000002] SLA BREACH: first response")
    assert desk.ticket().next_sla_at == at(23, 11, 5)
    assert [n for n in desk.notices() if n[0] == refused.id] == []
    assert desk.events("sla_breach") == []

    refuse_outbox_rows(desk.app, None)
    [breach] = sla_mail(desk.step(at(23, 11, 5)))
    assert breach.subject.startswith("[HD-000001] SLA BREACH: first response")
    assert [e["target"] for e in desk.events("sla_breach")] == ["first_response"]
    assert sla_mail(desk.step(at(23, 11, 10))) == []


# -- the SLA report ------------------------------------------------------------------------

BIG_CO = """
[[customers]]
name = "Big Co"
domains = ["bigco.test"]
plan = "enterprise"
"""


def sla_report(app: App, *argv: str) -> str:
    """``helpdesk sla report ARGV`` on ``app`` (and so on its clock), as cli.py wires it."""
    parser = argparse.ArgumentParser(prog="helpdesk")
    report_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sla", "report", *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert report_cli.cmd_sla(app, args) == 0
    return out.getvalue()


def test_sla_report_end_to_end(make_desk: DeskFactory) -> None:
    desk: Desk = make_desk(start=at(20, 10), extra=BIG_CO)
    # Friday: before the reporting period.
    desk.deliver(client_mail("Printer is broken", message_id="<fri@client.test>"))
    desk.clock.set(at(23, 10))
    desk.deliver(client_mail(message_id="<c1@client.test>"))  # HD-000002, critical
    desk.deliver(client_mail("[Critical] Mail relay down", message_id="<c2@client.test>",
                             sender="dan@client.test"))  # HD-000003, never answered
    desk.deliver(client_mail("[High] VPN drops", message_id="<h1@client.test>",
                             sender="erin@client.test"))  # HD-000004
    desk.deliver(client_mail("[Low] A question", message_id="<l1@bigco.test>",
                             sender="fay@bigco.test"))  # HD-000005, Enterprise plan
    desk.clock.set(at(23, 10, 30))
    desk.deliver(staff_mail("Could you send the logs?\n", message_id="<s1@staff.test>",
                            reference="HD-000002"))  # answered; pending on the client
    desk.clock.set(at(23, 11))
    desk.deliver(staff_mail("#status resolved\n\nFixed the VPN.\n", message_id="<s2@staff.test>",
                            reference="HD-000004"))
    desk.clock.set(at(23, 13, 30))  # HD-000003's resolution passed its warning point (13:00)

    data = json.loads(sla_report(desk.app, "--since", "2026-11-23", "--json"))
    assert data["now"] == "2026-11-23T13:30:00+00:00"
    assert data["since"] == "2026-11-23T00:00:00+00:00"
    groups = {g["group"]: g for g in [*data["by_priority"], *data["by_plan"], data["total"]]}
    assert groups["critical"] == {
        "group": "critical",
        "tickets": 2,
        "first_response": {"met": 1, "breached": 1, "at_risk": 0, "median_seconds": 1800.0},
        "resolution": {"met": 0, "breached": 0, "at_risk": 1, "median_seconds": None},
    }
    assert groups["high"]["first_response"] == {
        "met": 1, "breached": 0, "at_risk": 0, "median_seconds": 3600.0}
    assert groups["high"]["resolution"] == {
        "met": 1, "breached": 0, "at_risk": 0, "median_seconds": 3600.0}
    assert [groups[p]["tickets"] for p in ("medium", "low")] == [0, 1]
    assert [groups[p]["tickets"] for p in ("standard", "enhanced", "enterprise")] == [3, 0, 1]
    assert groups["all"]["tickets"] == 4
    assert groups["all"]["first_response"] == {
        "met": 2, "breached": 1, "at_risk": 0, "median_seconds": 2700.0}
    assert data["skipped"] == []

    # Without --since, Friday's unanswered Medium ticket (due Monday 10:00) counts too.
    everything = json.loads(sla_report(desk.app, "--json"))
    assert everything["since"] is None
    assert everything["total"]["tickets"] == 5
    assert everything["by_priority"][2]["first_response"]["breached"] == 1

    table = sla_report(desk.app, "--since", "2026-11-23")
    assert table.splitlines()[0] == (
        "SLA report at 2026-11-23 13:30 GMT, tickets opened since 2026-11-23 00:00 GMT"
    )
    [critical] = [line.split() for line in table.splitlines() if "critical" in line]
    assert critical == ["priority", "critical", "2", "1", "1", "0", "30m", "0", "0", "1", "-"]



def test_a_breach_told_stays_in_the_report_after_the_priority_is_lowered(
    make_desk: DeskFactory,
) -> None:
    """Replayed at Low, the first response (4 h, not yet run out) would now
    count as on track; but the breach mail went out at Critical's hour."""
    desk: Desk = make_desk(start=at(23, 10))
    desk.deliver(client_mail(message_id="<c1@client.test>"))  # Critical: 1 h to answer
    [breach] = sla_mail(desk.step(at(23, 11, 5)))
    assert breach.subject.startswith("[HD-000001] SLA BREACH: first response")
    desk.clock.set(at(23, 11, 10))
    desk.deliver(staff_mail("#priority low\n", message_id="<s1@staff.test>"))
    assert desk.ticket().priority == "low"
    data = json.loads(sla_report(desk.app, "--json"))
    assert data["total"]["first_response"]["breached"] == 1
    assert data["by_priority"][3]["first_response"]["breached"] == 1  # counted where it is now


def test_no_escalation_reminder_for_a_ticket_resolved_meanwhile(make_desk: DeskFactory) -> None:
    """An escalation's review is due an hour after it (11:00 here); a ticket
    resolved before then, by any means, needs nobody reminded."""
    desk: Desk = make_desk(extra=MANAGERS)
    desk.deliver(client_mail("[ESCALATE] Payroll server down", message_id="<esc@client.test>"))
    desk.deliver(client_mail("[ESCALATE] Mail relay down", message_id="<esc2@client.test>",
                             sender="dan@client.test"))
    desk.step(at(23, 10))
    assert desk.ticket().escalation_ack_due == at(23, 11)
    with session_scope(desk.app.engine) as session:
        ticket = tickets.get_by_reference(session, "HD-000001")
        assert ticket is not None
        tickets.set_status(desk.app, session, ticket, "resolved", at(23, 10, 30), STAFF)

    sent = desk.step(at(23, 11, 1))
    # HD-000002, still open and unacknowledged, is the control.
    assert [s.subject for s in sent if s.purpose == "escalation_reminder"] == [
        "[HD-000002] Escalation not yet acknowledged - Mail relay down"
    ]
    assert desk.ticket().escalation_ack_due is None
    assert desk.events("escalation_reminder") == []


def test_client_breach_notice_is_optional_and_written_for_the_client(
    make_desk: DeskFactory,
) -> None:
    desk: Desk = make_desk(extra="\n[sla]\nbreach_notify_client = true\n")
    desk.deliver(client_mail(message_id="<clientbreach@client.test>"))
    desk.step(at(23, 10, 0))
    breaches = [s for s in desk.step(at(23, 11, 0)) if s.purpose == "sla_breach_client"]
    assert len(breaches) == 1
    assert breaches[0].rcpt == {"carol@client.test"}
    assert "we did not meet our first response target" in breaches[0].text
    assert "Assignee" not in breaches[0].text  # staff details stay internal
    assert [s for s in desk.step(at(23, 11, 5)) if s.purpose == "sla_breach_client"] == []


def test_optional_automatic_escalation_on_a_resolution_breach(make_desk: DeskFactory) -> None:
    """Critical, opened Monday 10:00: resolution due 14:00. With the option on,
    the breach also escalates the ticket to the on-duty incident manager."""
    desk: Desk = make_desk(extra=MANAGERS + "\n[escalation]\nauto_on_breach = true\n")
    desk.deliver(client_mail(message_id="<autoesc@client.test>"))
    desk.step(at(23, 10, 0))
    desk.step(at(23, 11, 0))  # the first-response breach does not escalate
    assert not desk.ticket().escalated
    sent = desk.step(at(23, 14, 0))
    ticket = desk.ticket()
    assert ticket.escalated and ticket.escalation_level == 1
    assert ticket.escalation_trigger == "resolution_breach"
    assert ticket.escalation_manager == MANAGER
    [event] = desk.events("escalation")
    assert event["trigger"] == "resolution_breach"
    purposes = sorted(s.purpose for s in sent)
    assert "escalation_briefing" in purposes and "escalation_ack" in purposes
    ack = next(s for s in sent if s.purpose == "escalation_ack")
    assert ack.rcpt == {"carol@client.test"} and "Sam Lee" in ack.text
    # Nobody acknowledged within the hour: the manager is reminded, but the
    # ticket is not escalated again.
    later = [s.purpose for s in desk.step(at(23, 15, 0)) if s.purpose.startswith("escalation")]
    assert later == ["escalation_reminder"]
    assert len(desk.events("escalation")) == 1


def test_automatic_escalation_is_off_by_default(make_desk: DeskFactory) -> None:
    desk: Desk = make_desk(extra=MANAGERS)
    desk.deliver(client_mail(message_id="<noauto@client.test>"))
    desk.step(at(23, 10, 0))
    desk.step(at(23, 14, 0))
    assert not desk.ticket().escalated
