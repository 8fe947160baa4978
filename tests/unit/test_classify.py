"""The kind of each inbound mail, and the order in which kinds are decided."""

from __future__ import annotations

from email.message import EmailMessage, Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from helpdesk.ingest.classify import Classification, Kind, classify
from helpdesk.ingest.parse import parse_email

OWN_ADDRESSES = frozenset({"support@helpdesk.example.org"})
OWN_DOMAINS = frozenset({"helpdesk.example.org"})
LOOP_VALUE = "instance-7"
MAX_SIZE = 100_000


def _client_mail(headers: dict[str, str] | None = None, body: str = "Help!\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Jane Customer <jane@example.net>"
    msg["To"] = "support@helpdesk.example.org"
    msg["Subject"] = "Printer on fire"
    msg["Message-ID"] = "<abc.123@mail.example.net>"
    for name, value in (headers or {}).items():
        del msg[name]
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes()


def _bounce(padding: int = 0) -> bytes:
    original = EmailMessage()
    original["From"] = "support@helpdesk.example.org"
    original["To"] = "jane@example.net"
    original["Message-ID"] = "<ticket-42.x@helpdesk.example.org>"
    original.set_content("We are on it.\n" + "x" * padding)
    report = MIMEMultipart("report")
    report.set_param("report-type", "delivery-status")
    report["From"] = "MAILER-DAEMON@mx.example.net"
    report["To"] = "support@helpdesk.example.org"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Return-Path"] = "<>"
    report.attach(MIMEText("Your message could not be delivered.\n"))
    status = Message()
    status.set_type("message/delivery-status")
    block = Message()
    block["Final-Recipient"] = "rfc822; jane@example.net"
    block["Action"] = "failed"
    block["Status"] = "5.1.1"
    status.set_payload([Message(), block])
    report.attach(status)
    report.attach(MIMEMessage(original))
    return report.as_bytes()


def _classify(raw: bytes, max_size: int = MAX_SIZE) -> Classification:
    return classify(
        parse_email(raw),
        max_size=max_size,
        own_addresses=OWN_ADDRESSES,
        own_domains=OWN_DOMAINS,
        loop_value=LOOP_VALUE,
        raw=raw,
    )


def test_client_mail_is_normal_and_may_be_answered() -> None:
    result = _classify(_client_mail())
    assert result == Classification(Kind.NORMAL, None, None)


def test_our_loop_header_is_an_own_loop() -> None:
    result = _classify(_client_mail({"X-Helpdesk-Loop": LOOP_VALUE}))
    assert result.kind is Kind.OWN_LOOP
    assert result.no_auto_reply_reason == "own-loop"


def test_a_custom_loop_header_name_is_honoured() -> None:
    raw = _client_mail({"X-Acme-Desk": LOOP_VALUE})
    result = classify(
        parse_email(raw),
        max_size=MAX_SIZE,
        own_addresses=OWN_ADDRESSES,
        own_domains=OWN_DOMAINS,
        loop_header="X-Acme-Desk",
        loop_value=LOOP_VALUE,
    )
    assert result.kind is Kind.OWN_LOOP
    assert _classify(raw).kind is Kind.NORMAL  # the default header name is not present


def test_mail_from_our_support_address_is_an_own_loop() -> None:
    result = _classify(_client_mail({"From": "Support <support@helpdesk.example.org>"}))
    assert result.kind is Kind.OWN_LOOP
    assert result.no_auto_reply_reason == "own-address"


def test_our_own_message_id_is_an_own_loop() -> None:
    result = _classify(_client_mail({"Message-ID": "<ticket-42.x@helpdesk.example.org>"}))
    assert result.kind is Kind.OWN_LOOP
    assert result.no_auto_reply_reason == "own-message-id"


def test_bounce_carries_the_bounce() -> None:
    result = _classify(_bounce())
    assert result.kind is Kind.BOUNCE
    assert result.bounce is not None
    assert result.bounce.recipients == ("jane@example.net",)
    assert result.bounce.original_message_id == "ticket-42.x@helpdesk.example.org"
    assert result.no_auto_reply_reason is not None


def test_a_large_bounce_is_still_a_bounce() -> None:
    raw = _bounce(padding=5_000)
    assert len(raw) > 4_000
    result = _classify(raw, max_size=4_000)
    assert result.kind is Kind.BOUNCE


def test_too_large_mail() -> None:
    raw = _client_mail(body="x" * 2_000)
    assert _classify(raw, max_size=len(raw) - 1).kind is Kind.TOO_LARGE
    assert _classify(raw, max_size=len(raw)).kind is Kind.NORMAL


def test_too_large_mail_keeps_its_reason_not_to_answer() -> None:
    raw = _client_mail({"Auto-Submitted": "auto-replied"}, body="x" * 2_000)
    result = _classify(raw, max_size=100)
    assert result.kind is Kind.TOO_LARGE
    assert result.no_auto_reply_reason == "auto-submitted"


def test_out_of_office_is_an_auto_reply() -> None:
    result = _classify(_client_mail({"Subject": "Automatic reply: Printer on fire"}))
    assert result.kind is Kind.AUTO_REPLY
    assert result.bounce is None
    assert result.no_auto_reply_reason == "auto-reply-subject"


def test_list_mail_is_normal_but_never_answered() -> None:
    result = _classify(_client_mail({"List-Id": "<printers.lists.example.net>"}))
    assert result.kind is Kind.NORMAL
    assert result.no_auto_reply_reason == "list-id"


def test_success_notice_is_automatic_not_a_bounce() -> None:
    raw = (
        _bounce()
        .replace(b"Action: failed", b"Action: delivered")
        .replace(b"Status: 5.1.1", b"Status: 2.0.0")
    )
    result = _classify(raw)
    assert result.kind is Kind.AUTO_REPLY
    assert result.bounce is None
    assert result.no_auto_reply_reason == "report:delivery-status"


def test_kind_values_are_stable_strings() -> None:
    # Stored in the database and in logs.
    assert [k.value for k in Kind] == ["normal", "bounce", "auto_reply", "own_loop", "too_large"]


def test_bounce_written_by_our_own_mta_is_still_a_bounce() -> None:
    raw = _bounce().replace(
        b"Subject: Undelivered", b"Message-ID: <dsn.7@helpdesk.example.org>\nSubject: Undelivered"
    )
    result = _classify(raw)
    assert result.kind is Kind.BOUNCE
    assert result.no_auto_reply_reason == "own-message-id"
