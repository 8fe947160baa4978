"""Automatic-mail recognition and the reasons we must not answer, rule by rule."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from helpdesk.ingest.autoreply import (
    automatic_mail_reason,
    is_auto_reply,
    is_feedback_report,
    own_mail_reason,
)
from helpdesk.ingest.inbound import InboundEmail
from helpdesk.ingest.parse import parse_email

OWN_ADDRESSES = frozenset({"support@helpdesk.example.org"})
OWN_DOMAINS = frozenset({"helpdesk.example.org"})
LOOP_HEADER = "X-Helpdesk-Loop"
LOOP_VALUE = "instance-7"


def _mail(
    headers: dict[str, str] | None = None,
    *,
    subject: str = "Printer on fire",
    sender: str = "Jane Customer <jane@example.net>",
    body: str = "Hello, the printer is on fire.\n",
) -> InboundEmail:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@helpdesk.example.org"
    msg["Subject"] = subject
    msg["Message-ID"] = "<abc.123@mail.example.net>"
    for name, value in (headers or {}).items():
        del msg[name]
        msg[name] = value
    msg.set_content(body)
    return parse_email(msg.as_bytes())


def _reason(mail: InboundEmail) -> str | None:
    return automatic_mail_reason(mail, OWN_ADDRESSES, OWN_DOMAINS, LOOP_HEADER, LOOP_VALUE)


def test_plain_client_mail_is_neither_automatic_nor_silenced() -> None:
    mail = _mail()
    assert is_auto_reply(mail) is False
    assert _reason(mail) is None


# -- is_auto_reply -------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["auto-replied", "auto-generated", "auto-notified", "Auto-Replied; owner=x@y.z"]
)
def test_auto_submitted_other_than_no_is_automatic(value: str) -> None:
    mail = _mail({"Auto-Submitted": value})
    assert is_auto_reply(mail) is True
    assert _reason(mail) == "auto-submitted"


def test_auto_submitted_no_is_a_person() -> None:
    mail = _mail({"Auto-Submitted": "no"})
    assert is_auto_reply(mail) is False
    assert _reason(mail) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [("X-Autoreply", "x-autoreply"), ("X-Autorespond", "x-autorespond")],
)
def test_responder_headers(name: str, reason: str) -> None:
    mail = _mail({name: "yes"})
    assert is_auto_reply(mail) is True
    assert _reason(mail) == reason


def test_precedence_auto_reply() -> None:
    mail = _mail({"Precedence": "auto_reply"})
    assert is_auto_reply(mail) is True
    assert _reason(mail) == "precedence:auto_reply"


@pytest.mark.parametrize(
    "subject",
    [
        "Out of Office: Printer on fire",
        "Out of the office until Monday",
        "Automatic reply: Printer on fire",
        "AutoReply: Printer on fire",
        "Auto-Reply: Printer on fire",
        "Auto Response",
        "Abwesenheitsnotiz: Drucker brennt",
        "Réponse automatique : Imprimante en feu",
        "Respuesta automática: Impresora en llamas",
        "I am out of the office",
        "Jane Customer is out of the office.",
        "[AUTO GENERATED] Some subject",
    ],
)
def test_responder_subjects(subject: str) -> None:
    mail = _mail(subject=subject)
    assert is_auto_reply(mail) is True
    assert _reason(mail) == "auto-reply-subject"


@pytest.mark.parametrize(
    "subject",
    [
        "Re: Out of office again?",
        "Question about automatic replies",
        "Office move next week",
        "Printer out of paper",
        "Fw: Automatic reply settings",
        "Auto reply settings are broken",
        "Out of office next week, please call me",
        "Automatic replies keep coming",
    ],
)
def test_ordinary_subjects_are_not_responders(subject: str) -> None:
    mail = _mail(subject=subject)
    assert is_auto_reply(mail) is False
    assert _reason(mail) is None


def test_auto_response_suppress_is_a_request_not_a_marker() -> None:
    # Outlook sets it on ordinary mail too: the person still wrote the mail,
    # but asked not to get automatic answers (MS-OXCMAIL 2.1.3.2.20).
    mail = _mail({"X-Auto-Response-Suppress": "All"})
    assert is_auto_reply(mail) is False
    assert _reason(mail) == "auto-response-suppress"


@pytest.mark.parametrize(
    "value", ["AutoReply", "OOF, AutoReply", "DR, NDR, RN, NRN, OOF, AutoReply"]
)
def test_auto_response_suppress_of_auto_replies_is_honoured(value: str) -> None:
    assert _reason(_mail({"X-Auto-Response-Suppress": value})) == "auto-response-suppress"


@pytest.mark.parametrize("value", ["DR", "RN, NRN", "OOF", "None"])
def test_auto_response_suppress_of_other_things_is_ignored(value: str) -> None:
    assert _reason(_mail({"X-Auto-Response-Suppress": value})) is None


# -- automatic_mail_reason -----------------------------------------------------


@pytest.mark.parametrize("value", ["bulk", "junk", "list", "Bulk"])
def test_precedence_bulk_junk_list(value: str) -> None:
    mail = _mail({"Precedence": value})
    assert is_auto_reply(mail) is False  # list mail is written by people
    assert _reason(mail) == f"precedence:{value.lower()}"


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("List-Id", "Printers <printers.lists.example.net>", "list-id"),
        ("List-Unsubscribe", "<mailto:leave@lists.example.net>", "list-unsubscribe"),
        ("List-Post", "<mailto:printers@lists.example.net>", "list-header"),
    ],
)
def test_list_headers(name: str, value: str, reason: str) -> None:
    assert _reason(_mail({name: value})) == reason


def test_null_return_path() -> None:
    assert _reason(_mail({"Return-Path": "<>"})) == "null-return-path"


def test_missing_return_path_says_nothing() -> None:
    # Mail handed over by pipes or copied over IMAP often has no Return-Path.
    mail = _mail()
    assert mail.header("return-path") is None
    assert _reason(mail) is None


def test_ordinary_return_path_says_nothing() -> None:
    assert _reason(_mail({"Return-Path": "<jane@example.net>"})) is None


@pytest.mark.parametrize(
    "sender",
    [
        "MAILER-DAEMON@mx.example.net",
        "Mail Delivery System <mailer-daemon@example.net>",
        "postmaster@example.net",
        "no-reply@shop.example.net",
        "noreply+orders@shop.example.net",
        "do-not-reply@bank.example.net",
        "DoNotReply@bank.example.net",
        "MAILER-DAEMON <>",
    ],
)
def test_robot_senders(sender: str) -> None:
    assert _reason(_mail(sender=sender)) == "robot-sender"


def test_robot_sender_with_a_human_reply_to_gets_an_answer() -> None:
    # Web forms send from noreply@ and put the customer in Reply-To.
    mail = _mail({"Reply-To": "jane@example.net"}, sender="noreply@forms.example.net")
    assert _reason(mail) is None


def test_ordinary_local_parts_that_merely_contain_robot_words() -> None:
    assert _reason(_mail(sender="replyguy@example.net")) is None
    assert _reason(_mail(sender="postmasters-guild@example.net")) is None


def test_report_structures_are_machine_mail() -> None:
    msg = EmailMessage()
    msg["From"] = "jane@example.net"
    msg["To"] = "support@helpdesk.example.org"
    msg["Subject"] = "Read: Printer on fire"
    msg.set_content("Your message was read.\n")
    msg.replace_header("Content-Type", "multipart/report; report-type=disposition-notification")
    mail = parse_email(msg.as_bytes())
    assert _reason(mail) == "report:disposition-notification"


def test_feedback_report_is_recognised() -> None:
    msg = EmailMessage()
    msg["From"] = "feedback@fbl.example.net"
    msg["To"] = "support@helpdesk.example.org"
    msg["Subject"] = "Abuse report"
    msg.set_content("This is an abuse report.\n")
    msg.replace_header("Content-Type", "multipart/report; report-type=feedback-report")
    mail = parse_email(msg.as_bytes())
    assert is_feedback_report(mail) is True
    assert _reason(mail) == "feedback-report"
    assert is_feedback_report(_mail()) is False


# -- our own mail ---------------------------------------------------------------


def test_own_loop_header_with_our_value() -> None:
    mail = _mail({LOOP_HEADER: LOOP_VALUE, "Auto-Submitted": "auto-replied"})
    assert _reason(mail) == "own-loop"  # our own mail wins over the general reasons
    assert own_mail_reason(mail, OWN_ADDRESSES, OWN_DOMAINS, LOOP_HEADER, LOOP_VALUE) == "own-loop"


def test_loop_header_of_another_instance_is_not_ours() -> None:
    mail = _mail({LOOP_HEADER: "instance-8"})
    assert _reason(mail) is None
    assert own_mail_reason(mail, OWN_ADDRESSES, OWN_DOMAINS, LOOP_HEADER, LOOP_VALUE) is None


def test_mail_from_our_own_address() -> None:
    mail = _mail(sender="Support <SUPPORT@helpdesk.example.org>")
    assert _reason(mail) == "own-address"


def test_message_id_under_our_domain() -> None:
    mail = _mail({"Message-ID": "<ticket-42.x@helpdesk.example.org>"})
    assert _reason(mail) == "own-message-id"


def test_message_id_under_a_sub_domain_is_not_ours() -> None:
    mail = _mail({"Message-ID": "<abc@mail.helpdesk.example.org>"})
    assert _reason(mail) is None


def test_hotmail_complaint_forwarding_the_message_is_a_feedback_report() -> None:
    complained = EmailMessage()
    complained["X-HmXmrOriginalRecipient"] = "someone@hotmail.example"
    complained["From"] = "support@helpdesk.example.org"
    complained["Subject"] = "Re: [#42]"
    complained.set_content("We are on it.\n")
    msg = EmailMessage()
    msg["From"] = "staff@hotmail.example"
    msg["To"] = "abuse@helpdesk.example.org"
    msg["Subject"] = "complaint about message from 192.0.2.1"
    msg.set_content("")
    msg.add_attachment(complained, disposition="inline")
    mail = parse_email(msg.as_bytes())
    assert is_feedback_report(mail) is True
    assert _reason(mail) == "feedback-report"
    plain_forward = msg.as_bytes().replace(b"X-HmXmrOriginalRecipient", b"X-Original-To")
    assert is_feedback_report(parse_email(plain_forward)) is False
