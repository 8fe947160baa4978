"""Bounces and flood limits, end to end through the CLI and the real pipeline."""

from __future__ import annotations

import mailbox
from datetime import UTC, datetime, timedelta
from pathlib import Path

from helpdesk.clock import ManualClock
from helpdesk.ingest.pipeline import Pipeline
from helpdesk.ingest.source import Fetched
from tests.support.config import cli, cli_json, make_app, write_config
from tests.support.mail import make_mail


def _deliver(tmp_path: Path, raw: bytes) -> None:
    mailbox.Maildir(str(tmp_path / "mail"), create=True).add(raw)


def _dsn(original_message_id: str, recipient: str, status: str = "5.1.1") -> bytes:
    """A delivery status notification laid out as RFC 3464 says."""
    return (
        "Return-Path: <>\r\n"
        "From: Mail Delivery System <MAILER-DAEMON@mx.client.test>\r\n"
        "To: support@example.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn-1@mx.client.test>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
        f"<{recipient}>: host mx.client.test said: 550 5.1.1 User unknown\r\n"
        "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.client.test\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: <{original_message_id}>\r\nTo: {recipient}\r\n"
        "From: support@example.test\r\nSubject: [HD-000001] Printer\r\n"
        "\r\n--B--\r\n"
    ).encode()


def test_bounce_is_recorded_on_the_ticket_and_pauses_automatic_mail(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _deliver(tmp_path, make_mail(sender="gone@client.test", message_id="<b1@client.test>"))
    assert cli(config, "run", "--once")[0] == 0
    shown = cli_json(config, "tickets", "show", "HD-000001")
    confirmation = next(m for m in shown["messages"] if m["kind"] == "confirmation")

    _deliver(tmp_path, _dsn(confirmation["message_id"], "gone@client.test"))
    assert cli(config, "run", "--once")[0] == 0
    assert len(cli_json(config, "tickets", "list")) == 1  # a bounce never opens a ticket
    shown = cli_json(config, "tickets", "show", "HD-000001")
    bounce = [e for e in shown["events"] if e["kind"] == "bounce"]
    assert len(bounce) == 1
    assert "delivery to gone@client.test failed" in bounce[0]["detail"]["text"]
    notices = [r for r in cli_json(config, "outbox", "list") if r["purpose"] == "bounce_notice"]
    assert [r["to"] for r in notices] == ["team@example.test"]

    # The address is now undeliverable for automatic mail: the SLA notices
    # and confirmations meant for it are held back, visibly.
    held = cli_json(config, "undeliverable", "list")
    assert [(r["address"], r["until"][:10]) for r in held] == [("gone@client.test", (
        datetime.now(UTC) + timedelta(days=30)).date().isoformat())]
    # Until it writes again: a person is there, and is answered.
    _deliver(tmp_path, make_mail(sender="gone@client.test", subject="Another one",
                                 message_id="<b2@client.test>"))
    assert cli(config, "run", "--once")[0] == 0
    assert len(cli_json(config, "tickets", "list")) == 2
    assert cli_json(config, "outbox", "list", "--status", "suppressed") == []
    assert cli_json(config, "undeliverable", "list") == []


def test_an_undeliverable_address_can_be_cleared_by_hand(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _deliver(tmp_path, make_mail(sender="gone@client.test", cc="boss@client.test",
                                 message_id="<b1@client.test>"))
    assert cli(config, "run", "--once")[0] == 0
    shown = cli_json(config, "tickets", "show", "HD-000001")
    confirmation = next(m for m in shown["messages"] if m["kind"] == "confirmation")
    _deliver(tmp_path, _dsn(confirmation["message_id"], "gone@client.test"))
    assert cli(config, "run", "--once")[0] == 0
    assert [r["address"] for r in cli_json(config, "undeliverable", "list")] == [
        "gone@client.test"]
    # Automatic mail to it is held back, visibly: the boss escalates, and
    # the acknowledgement meant for the requester is not sent.
    _deliver(tmp_path, make_mail(sender="boss@client.test", subject="Re: [HD-000001] [ESCALATE]",
                                 message_id="<boss-1@client.test>"))
    assert cli(config, "run", "--once")[0] == 0
    held = cli_json(config, "outbox", "list", "--status", "suppressed")
    assert [(r["purpose"], r["to"]) for r in held] == [("escalation_ack", "gone@client.test")]
    assert "undeliverable" in held[0]["last_error"]
    # The operator, told the mailbox is fixed, clears it by hand.
    code, out, _ = cli(config, "undeliverable", "clear", "Gone@Client.test")
    assert code == 0 and '"cleared": "gone@client.test"' in out
    assert cli_json(config, "undeliverable", "list") == []
    code, _, err = cli(config, "undeliverable", "clear", "gone@client.test")
    assert code != 0 and "not held back" in err


def test_a_bounce_of_no_mail_of_ours_silences_nobody(tmp_path: Path) -> None:
    """Anyone can write a DSN: one naming mail we never sent, or a recipient
    our mail did not go to, holds nothing back."""
    config = write_config(tmp_path)
    _deliver(tmp_path, make_mail(sender="jane@client.test", message_id="<j1@client.test>"))
    assert cli(config, "run", "--once")[0] == 0
    shown = cli_json(config, "tickets", "show", "HD-000001")
    confirmation = next(m for m in shown["messages"] if m["kind"] == "confirmation")
    _deliver(tmp_path, _dsn("made-up@evil.test", "jane@client.test"))
    _deliver(tmp_path, _dsn("j1@client.test", "jane@client.test"))  # her own mail, not ours
    _deliver(tmp_path, _dsn(confirmation["message_id"], "dan@other.test"))
    assert cli(config, "run", "--once")[0] == 0
    assert cli_json(config, "undeliverable", "list") == []
    shown = cli_json(config, "tickets", "show", "HD-000001")
    assert [e for e in shown["events"] if e["kind"] == "bounce"] == []
    assert [r["purpose"] for r in cli_json(config, "outbox", "list")].count("bounce_notice") == 0


def test_rate_limit_suppresses_automatic_mail_but_keeps_tickets(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    clock = ManualClock(datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    app = make_app(config, clock)
    pipeline = Pipeline(app)
    for i in range(7):
        raw = make_mail(sender="chatty@client.test", subject=f"Question {i}",
                        message_id=f"<q{i}@client.test>")
        (outcome,) = pipeline.process([Fetched("test", str(i), raw)])
        assert outcome.detail == "new_ticket"
        clock.advance(timedelta(minutes=5))
    rows = cli_json(config, "outbox", "list")
    confirmations = [r for r in rows if r["purpose"] == "confirmation"]
    assert [r["status"] for r in confirmations] == ["queued"] * 5 + ["suppressed"] * 2
    assert all("rate limit" in r["last_error"] for r in confirmations[5:])
    # Staff notifications are not limited: every ticket was announced.
    assert len([r for r in rows if r["purpose"] == "staff_new_ticket"]) == 7
    # An hour later the client is answered again.
    clock.advance(timedelta(hours=1))
    raw = make_mail(sender="chatty@client.test", subject="Later", message_id="<q9@client.test>")
    pipeline.process([Fetched("test", "9", raw)])
    last = [r for r in cli_json(config, "outbox", "list") if r["purpose"] == "confirmation"][-1]
    assert last["status"] == "queued"
    app.dispose()


def test_staff_are_told_when_a_client_got_no_confirmation(tmp_path: Path) -> None:
    """Past the hourly limit the ticket is opened but its confirmation held
    back: the team's notice says so, as the client has no reference."""
    import email
    from email.policy import default

    config = write_config(tmp_path)
    for i in range(6):
        _deliver(tmp_path, make_mail(sender="chatty@client.test", subject=f"Question {i}",
                                     message_id=f"<q{i}@client.test>"))
    assert cli(config, "run", "--once")[0] == 0
    notices = {}
    for path in (tmp_path / "sent" / "new").iterdir():
        msg = email.message_from_bytes(path.read_bytes(), policy=default)
        if "New:" in str(msg["Subject"]):
            notices[str(msg["Subject"])] = msg.get_body().get_content()  # type: ignore[union-attr]
    assert len(notices) == 6
    told = [s for s, text in notices.items() if "was sent no confirmation (rate limit" in text]
    assert told == ["[HD-000006] New: Question 5"]
