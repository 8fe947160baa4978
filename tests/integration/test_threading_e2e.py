"""Threading and staff mail end to end: real Dovecot in, real SMTP out.

Each test APPENDs mail to a fresh Dovecot mailbox, runs the daemon's
``once`` in-process on a :class:`ManualClock` (so deadlines and the reopen
window are deterministic), and reads the result the way an operator would:
``helpdesk tickets show --json`` and the mail the SMTP capture received.
"""

from __future__ import annotations

import email
import email.message
from datetime import timedelta
from email.policy import default

import pytest

from helpdesk import tickets
from helpdesk.db import session_scope
from tests.support.config import STAFF
from tests.support.desk import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    NOTE_ADDRESS,
    QUOTED_HISTORY,
    START,
    SUPPORT,
    VERIFYING,
    DeskFactory,
    addrs,
    events,
    kinds,
    only,
    open_ticket,
    purposes,
    staff_reply,
)
from tests.support.mail import make_mail

# -- client replies --------------------------------------------------------------


async def test_reply_with_changed_subject_threads_by_reply_token(make_desk: DeskFactory) -> None:
    desk = make_desk()
    confirmation, _ = await open_ticket(desk)
    assert confirmation.rcpt == ("carol@client.test",)
    assert confirmation.reply_to.startswith("support+hd-000001.")
    # Carol answers with a subject of her own and a client that drops
    # In-Reply-To and References: only the signed Reply-To is left.
    assert await desk.deliver_by_cli(make_mail(sender=CAROL, to=confirmation.reply_to,
                                 subject="Still nothing on floor two",
                                 body="Any news? It is still broken.\n",
                                 message_id="<carol-2@client.test>")) == {
        "processed": 1, "done": 1}
    # And a second reply that keeps only the Message-ID chain.
    await desk.deliver(make_mail(sender=CAROL, subject="one more thing",
                                 body="It also smells of smoke.\n",
                                 message_id="<carol-3@client.test>",
                                 in_reply_to=f"<{confirmation.message_id}>"))
    assert desk.references() == ["HD-000001"]
    data = desk.show()
    client = [m for m in data["messages"] if m["kind"] == "client"]
    assert [m["body"].strip() for m in client] == [
        "Hello,\nthe printer on floor 2 is broken.\nCarol",
        "Any news? It is still broken.",
        "It also smells of smoke.",
    ]
    sent = desk.sent()
    assert purposes(sent) == ["staff_client_reply", "staff_client_reply"]
    assert all(s.rcpt == ("team@example.test",) for s in sent)


async def test_outlook_reply_without_references_threads(make_desk: DeskFactory) -> None:
    desk = make_desk()
    await open_ticket(desk)
    # Exchange: no In-Reply-To, no References, only Thread-Topic/Thread-Index,
    # to the plain support address and with Outlook's "RE:".
    await desk.deliver(make_mail(
        sender=CAROL, subject="RE: Printer is broken", body="Sorry, it is floor 3.\n",
        message_id="<outlook-1@client.test>",
        headers={"Thread-Topic": "Printer is broken",
                 "Thread-Index": "AQHZ1234567890abcdefABCDEFghij=="},
    ))
    # The requester retyping the reference is enough too.
    await desk.deliver(make_mail(
        sender=CAROL, subject="RE: [HD-000001] a different title",
        body="And floor 4.\n", message_id="<outlook-2@client.test>",
    ))
    assert desk.references() == ["HD-000001"]
    bodies = [m["body"].strip() for m in desk.show()["messages"] if m["kind"] == "client"]
    assert bodies[1:] == ["Sorry, it is floor 3.", "And floor 4."]


@pytest.mark.parametrize("others", [6, 20], ids=["eight-ids", "twenty-two-ids"])
async def test_reply_found_far_down_a_references_chain(make_desk: DeskFactory,
                                                       others: int, db_url: str) -> None:
    """Only the oldest id of the chain is ours (a mailing-list thread that
    went on without us): every id is looked up, not only the first ones. On
    SQLite, with eight ids to try (the mail's own included) the last slot of
    the prepared lookup, with more the lookup built for their number; on
    PostgreSQL one array of them all."""
    desk = make_desk(db_url=db_url)
    await open_ticket(desk)
    ids = [f"<z{i}@elsewhere.test>" for i in range(1, others + 1)]
    await desk.deliver(make_mail(
        sender=CAROL, subject="Where the thread went", body="Still broken.\n",
        message_id="<carol-far@client.test>", in_reply_to=ids[-1],
        references=" ".join(["<orig@client.test>", *ids]),
    ))
    assert desk.references() == ["HD-000001"]
    assert [m["body"].strip() for m in desk.show()["messages"] if m["kind"] == "client"][
        -1] == "Still broken."


async def test_reply_from_cc_colleague_threads_and_is_copied_on_staff_reply(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    _, notification = await open_ticket(desk, cc=DAVE)
    # Dave never got our confirmation: he replies to all on Carol's mail.
    await desk.deliver(make_mail(
        sender=DAVE, to=f"{CAROL}, {SUPPORT}", subject="Re: Printer is broken",
        body="Same on floor 3.\n", message_id="<dave-1@client.test>",
        in_reply_to="<orig@client.test>", references="<orig@client.test>",
    ))
    assert len(desk.references()) == 1
    data = desk.show()
    assert [m["from"] for m in data["messages"] if m["kind"] == "client"] == [
        "carol@client.test", "dave@client.test"]
    desk.sent()
    await desk.deliver(staff_reply(notification, "We are on our way."))
    relay = only(desk.sent(), "reply_relay")
    assert addrs(relay.msg, "To") == ["carol@client.test"]
    assert addrs(relay.msg, "Cc") == ["dave@client.test"]
    assert set(relay.rcpt) == {"carol@client.test", "dave@client.test"}


# -- staff replies -------------------------------------------------------------


async def test_verified_staff_reply_is_relayed_from_support(
    make_desk: DeskFactory, db_url: str
) -> None:
    desk = make_desk(db_url=db_url, helpdesk=VERIFYING)
    _, notification = await open_ticket(desk, cc=DAVE)
    # The notification invites a reply, and its Reply-To is signed.
    assert notification.rcpt == ("team@example.test",)
    assert notification.reply_to.startswith("support+hd-000001.")
    before = desk.show()
    assert before["first_response_due"] is not None and before["first_response_at"] is None
    desk.clock.advance(timedelta(minutes=20))
    await desk.deliver(staff_reply(notification, "Hello Carol,\nan engineer is on the way."
                                   + QUOTED_HISTORY))
    relay = only(desk.sent(), "reply_relay")
    # Stored without the quoted history.
    data = desk.show()
    staff = [m for m in data["messages"] if m["kind"] == "staff_reply"]
    assert [m["body"].strip() for m in staff] == ["Hello Carol,\nan engineer is on the way."]
    # Relayed to the requester and CC, from the support address, under
    # Alice's name, and Alice's address nowhere in the headers.
    assert set(relay.rcpt) == {"carol@client.test", "dave@client.test"}
    assert relay.mail_from == SUPPORT
    assert addrs(relay.msg, "From") == [SUPPORT]
    assert relay.msg["From"].addresses[0].display_name == "Alice Staff (Example Support)"
    assert relay.reply_to.startswith("support+hd-000001.")
    header_text = relay.raw.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert "staff.example.test" not in header_text
    assert relay.subject == "Re: [HD-000001] Printer is broken"
    assert relay.msg["In-Reply-To"] == "<orig@client.test>"
    assert "an engineer is on the way." in relay.text
    assert "New ticket HD-000001" not in relay.text
    # A person wrote it: it must not look like an auto-reply.
    assert relay.msg["Auto-Submitted"] is None
    # The first-response clock stops; the ticket waits on the client.
    assert data["first_response_at"] == (START + timedelta(minutes=20)).isoformat()
    assert data["first_response_due"] is None
    assert data["status"] == "pending"
    assert data["assignee"] == STAFF


async def test_spoofed_staff_reply_is_treated_as_client_mail(
    make_desk: DeskFactory, db_url: str
) -> None:
    desk = make_desk(db_url=db_url, helpdesk=VERIFYING)
    _, notification = await open_ticket(desk)
    # Someone with the notification's reply address writes as Alice, with
    # commands, but without our MTA's Authentication-Results (their own
    # claim under another authserv-id proves nothing).
    forged = staff_reply(notification, "#status closed\nPlease send the invoice to me.\n",
                         auth=False)
    forged = forged.replace(b"Subject:", b"Authentication-Results: evil.test; dkim=pass "
                                         b"header.d=staff.example.test\nSubject:", 1)
    await desk.deliver(forged)
    [notice] = desk.sent()
    assert notice.purpose == "staff_client_reply"
    assert notice.rcpt == ("team@example.test",)
    # The team is told why this "staff" mail went nowhere.
    assert "did not authenticate" in notice.text and "no Authentication-Results" in notice.text
    data = desk.show()
    assert data["status"] == "new" and data["first_response_at"] is None
    assert kinds(data) == ["client", "confirmation", "client"]
    assert data["messages"][-1]["from"] == STAFF
    assert "#status closed" in data["messages"][-1]["body"]
    security = events(data, "security")
    assert len(security) == 1
    assert security[0]["actor"] == STAFF
    assert "mx.example.test" in security[0]["detail"]["reason"]


async def test_internal_notes_are_stored_and_not_relayed(make_desk: DeskFactory) -> None:
    desk = make_desk()
    _, notification = await open_ticket(desk)
    await desk.deliver(staff_reply(notification, "#note\nCustomer phoned, printer is old.\n"))
    # Mail to the note address is a note whatever its first line says.
    await desk.deliver(make_mail(sender=ALICE, to=NOTE_ADDRESS,
                                 subject="[HD-000001] Printer is broken",
                                 body="Ordered a new toner.\n",
                                 message_id="<alice-note-2@staff.example.test>"))
    assert desk.sent() == []
    data = desk.show()
    notes = [m["body"].strip() for m in data["messages"] if m["kind"] == "note"]
    assert notes == ["Customer phoned, printer is old.", "Ordered a new toner."]
    # A note is not an answer to the client.
    assert data["first_response_at"] is None and data["status"] == "new"


# -- staff commands ---------------------------------------------------------------


async def test_status_command_resolves_without_relay(make_desk: DeskFactory) -> None:
    desk = make_desk()
    _, notification = await open_ticket(desk)
    await desk.deliver(staff_reply(notification, "#status resolved\n"))
    assert desk.sent() == []
    data = desk.show()
    assert data["status"] == "resolved"
    assert [(e["detail"]["old"], e["detail"]["new"]) for e in events(data, "status")] == [
        ("new", "resolved")]


async def test_status_command_with_text_relays_and_keeps_the_status(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    _, notification = await open_ticket(desk)
    await desk.deliver(staff_reply(notification, "#status resolved\n\nFixed: new fuser.\n"))
    relay = only(desk.sent(), "reply_relay")
    assert "Fixed: new fuser." in relay.text and "#status" not in relay.text
    assert desk.show()["status"] == "resolved"


async def test_priority_command_recomputes_deadlines(make_desk: DeskFactory) -> None:
    desk = make_desk()
    _, notification = await open_ticket(desk)
    before = desk.show()
    assert before["priority"] == "medium"
    await desk.deliver(staff_reply(notification, "#priority critical\n"))
    after = desk.show()
    assert after["priority"] == "critical"
    assert after["first_response_due"] < before["first_response_due"]
    assert after["resolution_due"] < before["resolution_due"]
    [change] = events(after, "priority")
    assert change["detail"] == {"old": "medium", "new": "critical"}
    assert change["actor"] == STAFF


async def test_assign_commands(make_desk: DeskFactory) -> None:
    desk = make_desk()
    _, notification = await open_ticket(desk)
    await desk.deliver(staff_reply(notification, "#assign me\n"))
    assert desk.show()["assignee"] == STAFF
    await desk.deliver(staff_reply(notification, "#assign Bob@Staff.Example.Test\n",
                                   message_id="<alice-2@staff.example.test>"))
    data = desk.show()
    assert data["assignee"] == BOB
    assert [(e["detail"]["old"], e["detail"]["new"]) for e in events(data, "assigned")] == [
        ("", STAFF), (STAFF, BOB)]
    # The assignee, not the whole team, hears about the client's next reply.
    desk.sent()
    await desk.deliver(make_mail(sender=CAROL, subject="Re: [HD-000001] Printer is broken",
                                 body="Thanks!\n", message_id="<carol-2@client.test>"))
    assert [s.rcpt for s in desk.sent()] == [(BOB,)]


async def test_assigning_to_someone_not_on_staff_is_refused(make_desk: DeskFactory) -> None:
    desk = make_desk()
    _, notification = await open_ticket(desk)
    await desk.deliver(staff_reply(notification, "#assign carol@client.test\n\nOn it.\n"))
    [refusal] = desk.sent()
    assert refusal.purpose == "command_error" and refusal.rcpt == (STAFF,)
    assert "#assign carol@client.test: not a staff address" in refusal.text
    data = desk.show()
    assert data["assignee"] == "" and events(data, "assigned") == []
    assert data["messages"][-1]["kind"] == "staff_rejected"
    # A staff member, or an incident manager, is fine.
    await desk.deliver(staff_reply(notification, f"#assign {BOB}\n",
                                   message_id="<alice-2@staff.example.test>"))
    assert desk.show()["assignee"] == BOB


async def test_mail_with_no_sender_is_a_ticket_whose_replies_are_returned(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    raw = make_mail(sender="undisclosed-recipients:;", message_id="<anon@client.test>")
    [outcome] = await desk.deliver(raw)
    assert outcome.reference == "HD-000001"
    [notification] = desk.sent()
    assert notification.purpose == "staff_new_ticket"
    assert "New ticket HD-000001 from (no sender)" in notification.text
    assert "nobody\r\nwas sent a confirmation" in notification.text
    await desk.deliver(staff_reply(notification, "Hello?\n"))
    [refusal] = desk.sent()
    assert refusal.purpose == "command_error" and refusal.rcpt == (STAFF,)
    assert "the client cannot be written to" in refusal.text


async def test_someone_in_copy_who_cannot_be_written_to_does_not_stop_the_answer(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    raw = make_mail(sender=CAROL, cc="idn@placeholder.test", message_id="<orig@client.test>")
    # RFC 6532: UTF-8 straight in the header, as an SMTPUTF8 relay delivers it.
    await desk.deliver(raw.replace(b"idn@placeholder.test", "jörg@bäckerei.example".encode()))
    notification = only(desk.sent(), "staff_new_ticket")
    assert "jörg@bäckerei.example" in {p["address"] for p in desk.show()["participants"]}
    await desk.deliver(staff_reply(notification, "On it.\n"))
    assert only(desk.sent(), "reply_relay").rcpt == ("carol@client.test",)
    [skipped] = events(desk.show(), "cc_not_written_to")
    assert skipped["detail"] == {"addresses": ["jörg@bäckerei.example"]}


async def test_staff_reply_to_a_client_that_cannot_be_written_to_is_returned(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    # SMTPUTF8 is not assumed of the relay, so this address cannot be written to.
    # RFC 6532: UTF-8 straight in the header, as an SMTPUTF8 relay delivers it.
    raw = make_mail(sender="Joerg <joerg@client.test>", message_id="<joerg@client.test>")
    await desk.deliver(raw.replace(b"joerg@client.test>", "jörg@bäckerei.example>".encode()))
    [notification] = desk.sent()
    assert notification.purpose == "staff_new_ticket"
    assert len(events(desk.show(), "confirmation_not_sent")) == 1
    [outcome] = await desk.deliver(staff_reply(notification, "#priority high\n\nHello!\n"))
    assert outcome.status == "done"
    [refusal] = desk.sent()
    assert refusal.purpose == "command_error" and refusal.rcpt == (STAFF,)
    assert "the client cannot be written to" in refusal.text
    data = desk.show()
    assert data["priority"] == "high"  # the commands stand
    assert data["messages"][-1]["kind"] == "staff_rejected"


async def test_a_reply_found_by_its_subject_cannot_add_people_to_the_ticket(
    make_desk: DeskFactory,
) -> None:
    """From anyone can write and the subject anyone can type: such a mail is
    kept on the ticket, but its Cc does not start receiving staff replies
    (unless the configuration trusts every From, trust_staff_from)."""
    desk = make_desk(helpdesk=VERIFYING)
    confirmation, notification = await open_ticket(desk)
    await desk.deliver(make_mail(sender=CAROL, subject="Re: [HD-000001] Printer is broken",
                                 cc="Spy <spy@evil.test>", body="Any news?\n",
                                 message_id="<forged@evil.test>"))
    [notice] = desk.sent()
    assert notice.purpose == "staff_client_reply"
    assert "Not added to the ticket: spy@evil.test." in notice.text.replace("\r\n", " ")
    data = desk.show()
    assert "spy@evil.test" not in {p["address"] for p in data["participants"]}
    [held] = events(data, "cc_not_added")
    assert held["detail"] == {"addresses": ["spy@evil.test"], "matched_by": "subject"}
    await desk.deliver(staff_reply(notification, "It is fixed.\n"))
    assert only(desk.sent(), "reply_relay").rcpt == ("carol@client.test",)
    # Answering our mail at its signed reply address may bring a colleague in.
    await desk.deliver(make_mail(sender=CAROL, to=confirmation.reply_to, cc="erin@client.test",
                                 subject="Re: [HD-000001] Printer is broken",
                                 message_id="<carol-2@client.test>"))
    assert "erin@client.test" in {p["address"] for p in desk.show()["participants"]}
    # So may a sender our server authenticated, whatever matched the mail.
    await desk.deliver(make_mail(sender=CAROL, cc="frank@client.test",
                                 subject="Re: [HD-000001] Printer is broken",
                                 message_id="<carol-3@client.test>",
                                 headers={"Authentication-Results":
                                          "mx.example.test; dkim=pass header.d=client.test"}))
    assert "frank@client.test" in {p["address"] for p in desk.show()["participants"]}
    # Authenticated, but not on the ticket: a genuine From is no right to it.
    await desk.deliver(make_mail(sender="mallory@evil.test", cc="spy@evil.test",
                                 subject="Re: Printer is broken", in_reply_to="<orig@client.test>",
                                 message_id="<mal-1@evil.test>",
                                 headers={"Authentication-Results":
                                          "mx.example.test; dkim=pass header.d=evil.test"}))
    assert "spy@evil.test" not in {p["address"] for p in desk.show()["participants"]}


@pytest.mark.parametrize("with_references", [True, False])
async def test_a_relay_carries_the_whole_chain_of_the_mail_it_answers(
    make_desk: DeskFactory, with_references: bool
) -> None:
    """RFC 5322 §3.6.4: the parent's References plus the parent; without
    References, the parent's In-Reply-To begins the chain."""
    desk = make_desk()
    confirmation, notification = await open_ticket(desk)
    chain = f"<orig@client.test> <{confirmation.message_id}>" if with_references else None
    await desk.deliver(make_mail(
        sender=CAROL, to=confirmation.reply_to, subject="Re: [HD-000001] Printer is broken",
        message_id="<carol-2@client.test>", in_reply_to=f"<{confirmation.message_id}>",
        references=chain))
    desk.sent()
    await desk.deliver(staff_reply(notification, "On it.\n"))
    relay = only(desk.sent(), "reply_relay")
    assert relay.msg["In-Reply-To"] == "<carol-2@client.test>"
    assert relay.msg["References"].split() == [
        *(["<orig@client.test>"] if with_references else []),
        f"<{confirmation.message_id}>", "<carol-2@client.test>"]


async def test_a_staff_follow_up_leaves_a_resolved_ticket_resolved(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    _, notification = await open_ticket(desk)
    await desk.deliver(staff_reply(notification, "#status resolved\n\nFixed.\n"))
    assert desk.show()["status"] == "resolved"
    desk.sent()
    await desk.deliver(staff_reply(notification, "The fix is deployed, nothing to do.\n",
                                   message_id="<alice-2@staff.example.test>"))
    data = desk.show()
    assert data["status"] == "resolved"
    assert only(desk.sent(), "reply_relay").rcpt == ("carol@client.test",)


async def test_automatic_mail_says_whether_it_answers_a_mail(make_desk: DeskFactory) -> None:
    """RFC 3834 §5: a confirmation answers its sender ("auto-replied"); a
    notice to the team answers nobody ("auto-generated")."""
    desk = make_desk()
    confirmation, notification = await open_ticket(desk)
    assert confirmation.msg["Auto-Submitted"] == "auto-replied"
    assert notification.msg["Auto-Submitted"] == "auto-generated"


async def test_a_message_id_reused_by_another_mail_does_not_lose_it(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    await open_ticket(desk)  # Carol's <orig@client.test> is HD-000001
    # The same mail again by another route: other trace fields, same mail.
    copy = make_mail(sender=CAROL, message_id="<orig@client.test>",
                     headers={"Received": "from mx2.client.test by mx.example.test",
                              "Delivered-To": "support-alias@example.test"})
    # And through a list, which adds a footer: the same mail still.
    listed = make_mail(sender=CAROL, message_id="<orig@client.test>",
                       subject="[it-help] Printer is broken",
                       body="Hello,\nthe printer on floor 2 is broken.\nCarol\n--\n"
                            "You received this because you are on it-help@client.test\n")
    outcomes = await desk.deliver(copy, listed)
    assert [(o.status, o.detail) for o in outcomes] == [("ignored", "duplicate_message_id")] * 2
    assert desk.sent() == [] and desk.references() == ["HD-000001"]
    # Another sender's mail under that id (a printer, a script): kept.
    other = make_mail(sender="quentin@other.test", subject="Our server is down",
                      body="Production outage since 9:00.\n", message_id="<orig@client.test>")
    [outcome] = await desk.deliver(other)
    assert (outcome.status, outcome.reference) == ("done", "HD-000002")
    assert events(desk.show("HD-000002"), "message_id_reused")
    assert {s.purpose for s in desk.sent()} == {"confirmation", "staff_new_ticket"}
    # A monitor reusing its one id for every alert: each alert is kept.
    alerts = [make_mail(sender="monitor@client.test", subject=subject, body=body,
                        message_id="<alert@monitor.client.test>")
              for subject, body in (("Disk full", "/var is full.\n"),
                                    ("Production outage", "The site is down.\n"))]
    outcomes = await desk.deliver(*alerts)
    assert [(o.status, o.reference) for o in outcomes] == [
        ("done", "HD-000003"), ("done", "HD-000004")]
    # Carol's own mail by that id still leads to her ticket.
    await desk.deliver(make_mail(sender=CAROL, subject="more", message_id="<c2@client.test>",
                                 in_reply_to="<orig@client.test>"))
    assert len(desk.show("HD-000001")["messages"]) == 3  # hers, the confirmation, this


async def test_staff_writing_to_the_client_directly_is_recorded_not_relayed(
    make_desk: DeskFactory,
) -> None:
    """Support only in copy: the client has the mail, so a relay would send
    it twice, and to the ticket's other people whom its writer left out."""
    desk = make_desk()
    await open_ticket(desk, cc="bob@client.test")
    [outcome] = await desk.deliver(make_mail(
        sender=f"Alice <{STAFF}>", to=CAROL, cc="support@example.test",
        subject="Re: [HD-000001] Printer is broken", body="I have ordered a new drum.\n",
        message_id="<alice-direct@staff.example.test>"))
    assert outcome.detail == "staff_reply_direct"
    assert desk.sent() == []
    # Bob was in copy from the start; nobody else was added.
    assert {p["address"] for p in desk.show()["participants"]} == {
        "carol@client.test", "bob@client.test"}
    await desk.deliver(make_mail(
        sender=f"Alice <{STAFF}>", to=CAROL, cc="support@example.test, nora@client.test",
        subject="Re: [HD-000001] Printer is broken", body="Nora will fit it.\n",
        message_id="<alice-direct2@staff.example.test>"))
    data = desk.show()
    assert "nora@client.test" in {p["address"] for p in data["participants"]}
    assert [e["detail"]["address"] for e in events(data, "cc_added")] == ["nora@client.test"]
    data = desk.show()
    assert data["status"] == "pending" and data["first_response_at"]
    assert data["messages"][-1]["kind"] == "staff_reply"
    # Carol answering Alice, support still in copy, lands on the ticket.
    [outcome] = await desk.deliver(make_mail(
        sender=CAROL, to=STAFF, cc="support@example.test", subject="Re: Printer is broken",
        message_id="<carol-3@client.test>", in_reply_to="<alice-direct@staff.example.test>"))
    assert (outcome.detail, outcome.reference) == ("reply", "HD-000001")


def _with_file(raw: bytes, name: str, data: bytes) -> bytes:
    msg = email.message_from_bytes(raw, policy=default)
    assert isinstance(msg, email.message.EmailMessage)
    msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return msg.as_bytes()


async def test_files_travel_through_the_real_servers(
    make_desk: DeskFactory, db_url: str
) -> None:
    """Fetched from Dovecot, stored, and sent through the SMTP server: the
    client's file to staff, the staff's file to the client."""
    desk = make_desk(db_url=db_url)
    report = b"%PDF-1.4 " + bytes(range(256)) * 40
    await desk.deliver(_with_file(make_mail(sender=CAROL, message_id="<orig@client.test>"),
                                  "rapport é.pdf", report))
    notification = only(desk.sent(), "staff_new_ticket")
    assert [(p.get_filename(), p.get_payload(decode=True))
            for p in notification.msg.iter_attachments()] == [("rapport é.pdf", report)]
    fix = b"%PDF-1.4 fix"
    await desk.deliver(_with_file(staff_reply(notification, "The fix is attached.\n"),
                                  "fix.pdf", fix))
    relay = only(desk.sent(), "reply_relay")
    assert relay.rcpt == ("carol@client.test",)
    assert [(p.get_filename(), p.get_payload(decode=True))
            for p in relay.msg.iter_attachments()] == [("fix.pdf", fix)]
    assert relay.msg.get_body(("plain",)).get_content().startswith(  # type: ignore[union-attr]
        "The fix is attached.")


async def test_cc_commands_change_who_gets_the_relay(make_desk: DeskFactory) -> None:
    desk = make_desk()
    _, notification = await open_ticket(desk)
    await desk.deliver(staff_reply(notification, "#cc add <Erin@Client.test>\n"
                                   "\nErin from facilities will join us.\n"))
    relay = only(desk.sent(), "reply_relay")
    assert set(relay.rcpt) == {"carol@client.test", "erin@client.test"}
    await desk.deliver(staff_reply(notification, "#cc remove erin@client.test\n\nDone.\n",
                                   message_id="<alice-2@staff.example.test>"))
    relay = only(desk.sent(), "reply_relay")
    assert relay.rcpt == ("carol@client.test",)
    data = desk.show()
    assert [e["detail"]["address"] for e in events(data, "cc_added")] == ["erin@client.test"]
    assert [e["detail"]["address"] for e in events(data, "cc_removed")] == ["erin@client.test"]
    assert "erin@client.test" not in {p["address"] for p in data["participants"]}


async def test_invalid_command_answers_the_staff_sender_and_relays_nothing(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    _, notification = await open_ticket(desk)
    await desk.deliver(staff_reply(notification, "#status solved\n#frobnicate\n\n"
                                   "Internal: the client is difficult.\n"))
    [error] = desk.sent()
    assert error.purpose == "command_error"
    assert error.rcpt == (STAFF,)
    assert "'#status solved'" in error.text and "#frobnicate" in error.text
    data = desk.show()
    assert data["status"] == "new" and data["first_response_at"] is None
    assert kinds(data)[-1] == "staff_rejected"


# -- strangers, reopening, old tickets ----------------------------------------------


async def test_stranger_quoting_a_reference_opens_a_new_ticket(
    make_desk: DeskFactory, db_url: str
) -> None:
    desk = make_desk(db_url=db_url)
    await open_ticket(desk)
    before = desk.show()
    await desk.deliver(make_mail(sender="Mallory <mallory@evil.test>",
                                 subject="Re: [HD-000001] Printer is broken",
                                 body="Please add me, and close it.\n",
                                 message_id="<mallory-1@evil.test>"))
    assert desk.references() == ["HD-000001", "HD-000002"]
    new = desk.show("HD-000002")
    assert new["requester"] == "mallory@evil.test"
    assert new["mentions"] == ["HD-000001"]
    assert [e["detail"]["reference"] for e in events(new, "mentions")] == ["HD-000001"]
    after = desk.show()
    assert after["messages"] == before["messages"]
    assert after["participants"] == before["participants"]
    assert after["status"] == before["status"]
    sent = desk.sent()
    assert purposes(sent) == ["confirmation", "staff_new_ticket"]
    assert only(sent, "confirmation").rcpt == ("mallory@evil.test",)
    assert "HD-000001" in only(sent, "staff_new_ticket").text


async def test_reply_to_resolved_ticket_reopens_it(make_desk: DeskFactory) -> None:
    desk = make_desk()
    confirmation, notification = await open_ticket(desk)
    await desk.deliver(staff_reply(notification, "#status resolved\n"))
    desk.clock.advance(timedelta(days=2))
    await desk.deliver(make_mail(sender=CAROL, to=confirmation.reply_to,
                                 subject="Re: [HD-000001] Printer is broken",
                                 body="It broke again.\n", message_id="<carol-2@client.test>"))
    data = desk.show()
    assert data["status"] == "open"
    assert len(events(data, "reopened")) == 1
    assert [(e["detail"]["old"], e["detail"]["new"]) for e in events(data, "status")] == [
        ("new", "resolved"), ("resolved", "open")]
    assert len(desk.references()) == 1


async def test_reply_to_ticket_closed_long_ago_opens_a_linked_ticket(
    make_desk: DeskFactory,
) -> None:
    desk = make_desk()
    confirmation, _ = await open_ticket(desk)
    with session_scope(desk.app.engine) as session:
        ticket = tickets.get_by_reference(session, "HD-000001")
        assert ticket is not None
        tickets.set_status(desk.app, session, ticket, "closed", desk.clock.now(), STAFF)
    desk.clock.advance(timedelta(days=31))
    await desk.deliver(make_mail(sender=CAROL, to=confirmation.reply_to,
                                 subject="Re: [HD-000001] Printer is broken",
                                 body="It is broken again.\n",
                                 message_id="<carol-late@client.test>",
                                 in_reply_to=f"<{confirmation.message_id}>"))
    assert desk.references() == ["HD-000001", "HD-000002"]
    new = desk.show("HD-000002")
    assert new["linked_to"] == "HD-000001"
    assert [e["detail"]["to"] for e in events(new, "linked")] == ["HD-000001"]
    assert [m["body"].strip() for m in new["messages"] if m["kind"] == "client"] == [
        "It is broken again."]
    old = desk.show()
    assert old["status"] == "closed"
    assert [m["kind"] for m in old["messages"]] == ["client", "confirmation"]
    sent = desk.sent()
    assert only(sent, "confirmation").subject.startswith("[HD-000002]")
    assert "Linked to: HD-000001" in only(sent, "staff_new_ticket").text


async def test_reply_to_ticket_closed_recently_reopens_it(make_desk: DeskFactory) -> None:
    desk = make_desk()
    confirmation, notification = await open_ticket(desk)
    await desk.deliver(staff_reply(notification, "#status closed\n"))
    desk.clock.advance(timedelta(days=29))
    await desk.deliver(make_mail(sender=CAROL, to=confirmation.reply_to,
                                 subject="Re: [HD-000001] Printer is broken",
                                 body="Back again.\n", message_id="<carol-2@client.test>"))
    assert len(desk.references()) == 1
    assert desk.show()["status"] == "open"
