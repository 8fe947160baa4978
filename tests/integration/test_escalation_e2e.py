"""Escalation end to end: real Dovecot in, real SMTP out, a manual clock.

Three incident managers (not in the staff list: being a manager is enough
for their answers to count as staff) follow the sun (Sydney, New York, London, each
09:00-17:00 local on weekdays). The clock is set so that exactly the
manager each test expects is at work, and the SLA pass is run in-process.

On Monday 23 November 2026: at 10:00 UTC only London works (New York is at
05:00, Sydney at 21:00); at 15:00 UTC London and New York both work and New
York has more of its shift left; at 23:00 UTC only Sydney works (Tuesday
10:00 there).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from helpdesk.sla.tick import SlaTicker
from tests.support.config import STAFF
from tests.support.desk import (
    ALICE,
    CAROL,
    Desk,
    DeskFactory,
    Sent,
    events,
    only,
    purposes,
    staff_reply,
)
from tests.support.dovecot import Dovecot, ImapAccount
from tests.support.mail import make_mail
from tests.support.smtpd import SmtpCapture

APAC = ("Priya Shah", "priya@incident.example.test")
AMER = ("Marcus Reed", "marcus@incident.example.test")
EMEA = ("Emma Stone", "emma@incident.example.test")
MANAGERS = """
[escalation]
window_hours = 4
review_minutes = 60

[[escalation.managers]]
name = "Priya Shah"
address = "priya@incident.example.test"
region = "APAC"
timezone = "Australia/Sydney"

[[escalation.managers]]
name = "Marcus Reed"
address = "marcus@incident.example.test"
region = "AMER"
timezone = "America/New_York"

[[escalation.managers]]
name = "Emma Stone"
address = "emma@incident.example.test"
region = "EMEA"
timezone = "Europe/London"
"""
AFTERNOON = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # London and New York at work
MALLORY = "Mallory <mallory@evil.test>"
ESCALATIONS = "escalations@example.test"


@pytest.fixture
def make_desk(
    dovecot: Dovecot, imap_account: ImapAccount, smtp_server: SmtpCapture, tmp_path: Path
) -> Iterator[DeskFactory]:
    desks: list[Desk] = []

    def make(**options: Any) -> Desk:
        options.setdefault("extra", MANAGERS)
        desk = Desk.create(dovecot, imap_account, smtp_server, tmp_path, **options)
        desks.append(desk)
        return desk

    yield make
    for desk in desks:
        desk.app.dispose()


async def carol_writes_in(desk: Desk) -> Sent:
    """Carol opens HD-000001; returns her confirmation."""
    await desk.deliver(make_mail(sender=CAROL, message_id="<orig@client.test>"))
    sent = desk.sent()
    assert purposes(sent) == ["confirmation", "staff_new_ticket"]
    return only(sent, "confirmation")


def mail_purposes(sent: list[Sent]) -> list[str]:
    """Purposes apart from SLA notices, which moving the clock brings on their own."""
    return [p for p in purposes(sent) if not p.startswith("sla_")]


NOTICES = ["escalation_ack", "escalation_briefing", "escalation_notice"]


def escalations(data: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(e["detail"]["decision"], e["detail"]["trigger"], e["detail"]["level"])
            for e in events(data, "escalation")]


async def test_marker_on_a_reply_escalates_the_ticket(make_desk: DeskFactory) -> None:
    desk = make_desk()
    confirmation = await carol_writes_in(desk)
    desk.clock.set(AFTERNOON)
    await desk.deliver(make_mail(
        sender=CAROL, to=confirmation.reply_to,
        subject="Re: [HD-000001] Printer is broken [ESCALATE]",
        body="Nobody has answered in five hours.\n", message_id="<carol-esc@client.test>",
        in_reply_to=f"<{confirmation.message_id}>",
    ))
    data = desk.show()
    assert data["escalated"] is True
    assert data["escalation_level"] == 1
    assert data["priority"] == "high"  # one step up from medium
    assert data["escalation_manager"] == AMER[1]
    assert escalations(data) == [("new", "marker", 1)]
    assert [(e["detail"]["old"], e["detail"]["new"]) for e in events(data, "priority")] == [
        ("medium", "high")]
    assert data["subject"] == "Printer is broken"
    assert data["messages"][-1]["subject"] == "Re: [HD-000001] Printer is broken"
    sent = desk.sent()
    assert mail_purposes(sent) == [*NOTICES, "staff_client_reply"]
    ack = only(sent, "escalation_ack")
    assert ack.rcpt == ("carol@client.test",)
    assert ack.msg["In-Reply-To"] == "<carol-esc@client.test>"
    assert "Marcus Reed" in ack.text
    assert "by 16:00 GMT today" in ack.text  # an hour of review, both managers at work
    assert "[ESCALATE]" not in ack.subject
    briefing = only(sent, "escalation_briefing")
    assert briefing.rcpt == (AMER[1],)
    assert briefing.reply_to.startswith("support+hd-000001.")
    assert "Nobody has answered in five hours." in briefing.text
    assert "level 1" in briefing.subject
    notice = only(sent, "escalation_notice")
    assert notice.rcpt == ("team@example.test",)
    assert AMER[1] in notice.text
    # The notice of the reply itself shows the ticket as the escalation left it.
    assert "Priority: High." in only(sent, "staff_client_reply").text


async def test_marker_on_a_new_mail_opens_an_escalated_ticket(make_desk: DeskFactory) -> None:
    desk = make_desk()
    await desk.deliver(make_mail(sender=CAROL, subject="[ESCALATE] Printer is broken",
                                 message_id="<esc-new@client.test>"))
    data = desk.show()
    assert data["subject"] == "Printer is broken"
    assert data["escalated"] is True and data["escalation_level"] == 1
    assert data["priority"] == "high"
    assert data["escalation_manager"] == EMEA[1]  # only London is at work at 10:00 UTC
    assert escalations(data) == [("new", "marker", 1)]
    sent = desk.sent()
    # The acknowledgement replaces the plain confirmation.
    assert mail_purposes(sent) == [*NOTICES, "staff_new_ticket"]
    ack = only(sent, "escalation_ack")
    assert "Emma Stone" in ack.text and "by 11:00 GMT today" in ack.text
    assert only(sent, "escalation_briefing").rcpt == (EMEA[1],)


async def test_mail_to_the_escalation_address(make_desk: DeskFactory, db_url: str) -> None:
    desk = make_desk(db_url=db_url)
    await carol_writes_in(desk)
    desk.clock.set(datetime(2026, 11, 23, 23, 0, tzinfo=UTC))
    # With a reference, from the requester: that ticket is escalated.
    await desk.deliver(make_mail(sender=CAROL, to=ESCALATIONS,
                                 subject="HD-000001 still not fixed",
                                 body="Please escalate.\n", message_id="<esc-1@client.test>"))
    data = desk.show()
    assert data["escalated"] is True and data["escalation_manager"] == APAC[1]
    assert escalations(data) == [("new", "address", 1)]
    assert desk.references() == ["HD-000001"]
    assert "Priya Shah" in only(desk.sent(), "escalation_ack").text
    # Without one: a new ticket, escalated from the start.
    await desk.deliver(make_mail(sender=CAROL, to=ESCALATIONS, subject="Projector is broken",
                                 message_id="<esc-2@client.test>"))
    new = desk.show("HD-000002")
    assert new["escalated"] is True and new["escalation_level"] == 1
    assert new["linked_to"] == "" and new["mentions"] == []
    assert escalations(new) == [("new", "address", 1)]
    assert mail_purposes(desk.sent()) == [*NOTICES, "staff_new_ticket"]


async def test_mail_to_the_escalation_address_quoting_the_reference_in_its_text(
    make_desk: DeskFactory,
) -> None:
    """The confirmation asks for mail to the escalation address "quoting"
    the reference: in the text counts as in the subject, for the ticket's
    own people; a stranger's still opens their own, linked ticket."""
    desk = make_desk()
    await carol_writes_in(desk)
    await desk.deliver(make_mail(sender=CAROL, to=ESCALATIONS, subject="Still broken",
                                 body="Please escalate HD-000001, nobody has answered.\n",
                                 message_id="<esc-body@client.test>"))
    assert desk.references() == ["HD-000001"]
    assert escalations(desk.show()) == [("new", "address", 1)]
    await desk.deliver(make_mail(sender=MALLORY, to=ESCALATIONS, subject="Hurry",
                                 body="Escalate HD-000001 now.\n",
                                 message_id="<mal-body@evil.test>"))
    assert desk.references() == ["HD-000001", "HD-000002"]
    assert desk.show("HD-000002")["linked_to"] == "HD-000001"
    # Mail to the support address is not read for references in its text.
    await desk.deliver(make_mail(sender=CAROL, subject="Another thing",
                                 body="Unlike HD-000001, this is new.\n",
                                 message_id="<new-body@client.test>"))
    assert desk.references() == ["HD-000001", "HD-000002", "HD-000003"]


async def test_staff_writing_to_the_escalation_address_reach_managers_not_the_client(
    make_desk: DeskFactory,
) -> None:
    """Naming the ticket in the subject escalates it and keeps the mail as a
    note; naming it only in the text, as staff do in passing, does not put
    the mail on that ticket at all. Neither is relayed to the client."""
    desk = make_desk()
    await carol_writes_in(desk)
    await desk.deliver(make_mail(sender=ALICE, to=ESCALATIONS, subject="Angry customer",
                                 body="Can a manager look at HD-000001? Between us, they "
                                      "broke it themselves.\n",
                                 message_id="<alice-esc1@staff.example.test>"))
    await desk.deliver(make_mail(sender=ALICE, to=ESCALATIONS,
                                 subject="[HD-000001] needs a manager",
                                 body="Between us, they broke it themselves.\n",
                                 message_id="<alice-esc2@staff.example.test>"))
    sent = desk.sent()
    assert not [s for s in sent if "carol@client.test" in s.rcpt]
    data = desk.show()
    assert data["escalated"] is True
    assert [m["kind"] for m in data["messages"]][-1] == "note"
    assert all("broke it" not in m["body"] for m in data["messages"]
               if m["direction"] == "outbound")


async def test_strangers_escalation_opens_their_own_linked_ticket(
    make_desk: DeskFactory, db_url: str
) -> None:
    desk = make_desk(db_url=db_url)
    await carol_writes_in(desk)
    before = desk.show()
    await desk.deliver(make_mail(sender=MALLORY, subject="Re: [HD-000001] Printer [ESCALATE]",
                                 body="Escalate this now.\n", message_id="<mal@evil.test>"))
    await desk.deliver(make_mail(sender=MALLORY, to=ESCALATIONS, subject="About HD-000001",
                                 body="And again.\n", message_id="<mal-2@evil.test>"))
    after = desk.show()
    assert after == before  # nothing happened on Carol's ticket
    assert desk.references() == ["HD-000001", "HD-000002", "HD-000003"]
    for reference in ("HD-000002", "HD-000003"):
        new = desk.show(reference)
        assert new["requester"] == "mallory@evil.test"
        assert new["escalated"] is True
        assert new["linked_to"] == "HD-000001"
        assert new["mentions"] == ["HD-000001"]
    sent = desk.sent()
    assert all("Linked to: HD-000001" in s.text for s in sent if s.purpose == "staff_new_ticket")
    acks = [s for s in sent if s.purpose == "escalation_ack"]
    assert [s.rcpt for s in acks] == [("mallory@evil.test",)] * 2
    assert all("carol@client.test" not in s.rcpt for s in sent)


async def test_repeat_escalation_inside_the_window_sends_nothing(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    confirmation = await carol_writes_in(desk)

    def escalate_mail(n: int) -> bytes:
        return make_mail(sender=CAROL, to=confirmation.reply_to,
                         subject="Re: [HD-000001] Printer is broken [ESCALATE]",
                         body=f"Escalation number {n}.\n", message_id=f"<esc-{n}@client.test>")

    desk.clock.set(AFTERNOON)
    await desk.deliver(escalate_mail(1))
    desk.sent()
    desk.clock.advance(timedelta(hours=3, minutes=59))
    await desk.deliver(escalate_mail(2))
    # The ordinary "client replied" notice (and, the review being overdue by
    # now, the reminder); no new acknowledgement, briefing or notice.
    assert mail_purposes(desk.sent()) == ["escalation_reminder", "staff_client_reply"]
    data = desk.show()
    assert data["escalation_level"] == 1 and data["priority"] == "high"
    assert escalations(data) == [("new", "marker", 1), ("repeat_in_window", "marker", 1)]
    # Four hours after the first, the level goes up and everyone is told again,
    # the same dedicated manager included.
    desk.clock.set(AFTERNOON + timedelta(hours=4))
    await desk.deliver(escalate_mail(3))
    data = desk.show()
    assert data["escalation_level"] == 2 and data["priority"] == "critical"
    assert data["escalation_manager"] == AMER[1]
    assert escalations(data)[-1] == ("raise_level", "marker", 2)
    sent = desk.sent()
    assert mail_purposes(sent) == [*NOTICES, "staff_client_reply"]
    assert only(sent, "escalation_briefing").rcpt == (AMER[1],)
    assert "level 2" in only(sent, "escalation_briefing").subject
    # Critical's hour from 10:00 is long past: the client is not promised it.
    assert "First response:  overdue (it was due by 11:00 GMT today)" in only(
        sent, "escalation_ack").text


async def test_missed_acknowledgement_reminds_manager_and_next_on_duty_once(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    await desk.deliver(make_mail(sender=CAROL, subject="Printer is broken [ESCALATE]",
                                 message_id="<esc@client.test>", date=AFTERNOON))
    desk.clock.set(AFTERNOON)  # the ticket above was opened at START, 10:00: EMEA
    data = desk.show()
    assert data["escalation_manager"] == EMEA[1]
    desk.sent()
    ticker = SlaTicker(desk.app)
    # Review was due at 11:00 UTC; it is now 15:00 and nobody acted.
    assert ticker.run_pass() >= 1
    await desk.deliver()
    reminders = [s for s in desk.sent() if s.purpose == "escalation_reminder"]
    assert len(reminders) == 1
    # Emma, and whoever else is at work now: New York has more shift left.
    assert set(reminders[0].rcpt) == {EMEA[1], AMER[1]}
    assert "Emma Stone" in reminders[0].text
    assert "was due for review by 11:00 GMT today and" in reminders[0].text
    desk.clock.advance(timedelta(hours=1))
    ticker.run_pass()
    await desk.deliver()
    assert [s for s in desk.sent() if s.purpose == "escalation_reminder"] == []
    assert len(events(desk.show(), "escalation_reminder")) == 1


async def test_briefing_says_when_staff_last_asked_the_client_in_words(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    await carol_writes_in(desk)
    await desk.deliver(make_mail(sender=CAROL, message_id="<orig2@client.test>",
                                 subject="Re: [HD-000001] Printer is broken"))
    staff_notice = only(desk.sent(), "staff_client_reply")
    desk.clock.advance(timedelta(minutes=30))
    await desk.deliver(staff_reply(staff_notice, "Which floor is the printer on?\n"))
    desk.clock.set(AFTERNOON)
    await desk.deliver(make_mail(sender=CAROL, subject="Re: [HD-000001] Printer [ESCALATE]",
                                 message_id="<esc2@client.test>"))
    briefing = only(desk.sent(), "escalation_briefing")
    assert "Last request to the client (10:30 GMT today):" in briefing.text
    assert "Which floor is the printer on?" in briefing.text


async def test_staff_action_before_the_review_deadline_prevents_the_reminder(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    await desk.deliver(make_mail(sender=CAROL, subject="Printer is broken [ESCALATE]",
                                 message_id="<esc@client.test>"))
    briefing = only(desk.sent(), "escalation_briefing")
    desk.clock.advance(timedelta(minutes=30))
    await desk.deliver(staff_reply(briefing, "Hello Carol, I am on it.\n",
                                   sender=f"Emma Stone <{EMEA[1]}>"))
    assert only(desk.sent(), "reply_relay").rcpt == ("carol@client.test",)
    desk.clock.advance(timedelta(hours=2))
    SlaTicker(desk.app).run_pass()
    await desk.deliver()
    assert [s for s in desk.sent() if s.purpose == "escalation_reminder"] == []
    assert events(desk.show(), "escalation_reminder") == []


async def test_a_note_before_the_deadline_also_counts_as_acknowledging(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    await desk.deliver(make_mail(sender=CAROL, subject="Printer is broken [ESCALATE]",
                                 message_id="<esc@client.test>"))
    briefing = only(desk.sent(), "escalation_briefing")
    desk.clock.advance(timedelta(minutes=10))
    await desk.deliver(staff_reply(briefing, "#note\nCalled the engineer.\n", sender=ALICE))
    desk.clock.advance(timedelta(hours=2))
    SlaTicker(desk.app).run_pass()
    await desk.deliver()
    assert [s for s in desk.sent() if s.purpose == "escalation_reminder"] == []



async def test_escalation_notice_goes_to_the_assignee(make_desk: DeskFactory) -> None:
    desk = make_desk()
    confirmation = await carol_writes_in(desk)
    await desk.deliver(make_mail(sender=ALICE, to=confirmation.reply_to,
                                 subject="[HD-000001] Printer is broken", body="#assign me\n",
                                 message_id="<assign@staff.example.test>"))
    await desk.deliver(make_mail(sender=CAROL, to=confirmation.reply_to,
                                 subject="Re: [HD-000001] Printer is broken [ESCALATE]",
                                 message_id="<esc@client.test>"))
    sent = desk.sent()
    assert only(sent, "escalation_notice").rcpt == (STAFF,)
    assert only(sent, "staff_client_reply").rcpt == (STAFF,)


async def test_staff_escalation_does_not_acknowledge_to_the_client(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    await carol_writes_in(desk)
    await desk.deliver(make_mail(sender=ALICE, subject="[HD-000001] Printer [ESCALATE]",
                                 body="#note\nThis needs a manager.\n",
                                 message_id="<alice-esc@staff.example.test>"))
    data = desk.show()
    assert data["escalated"] is True and data["escalation_manager"] == EMEA[1]
    assert escalations(data) == [("new", "marker", 1)]
    assert [m["kind"] for m in data["messages"]][-1] == "note"
    sent = desk.sent()
    assert mail_purposes(sent) == ["escalation_briefing", "escalation_notice"]
    assert all("carol@client.test" not in s.rcpt for s in sent)
