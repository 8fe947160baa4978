"""Bounce recognition, one rule at a time, on messages built here."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage, Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from helpdesk.ingest.bounce import Bounce, detect_bounce
from helpdesk.ingest.inbound import Address, InboundEmail, MimePart
from helpdesk.ingest.parse import parse_email

ORIGINAL_ID = "ticket-42.a1b2@helpdesk.example.org"


def _original(to: str = "customer@example.net") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Support <support@helpdesk.example.org>"
    msg["To"] = to
    msg["Subject"] = "Re: [#42] Printer on fire"
    msg["Message-ID"] = f"<{ORIGINAL_ID}>"
    msg.set_content("We are on it.\n")
    return msg


def _block(**fields: str) -> Message:
    block = Message()
    for name, value in fields.items():
        block[name.replace("_", "-")] = value
    return block


def _dsn(
    *recipients: Message,
    notice: str = "Your message could not be delivered.\n",
    third: Message | None = None,
    subject: str = "Undelivered Mail Returned to Sender",
) -> bytes:
    """An RFC 3464 / RFC 3462 multipart/report."""
    report = MIMEMultipart("report")
    report.set_param("report-type", "delivery-status")
    report["From"] = "Mail Delivery System <MAILER-DAEMON@mx.example.net>"
    report["To"] = "support@helpdesk.example.org"
    report["Subject"] = subject
    report["Return-Path"] = "<>"
    report["Message-ID"] = "<dsn-1@mx.example.net>"
    report.attach(MIMEText(notice))
    status = Message()
    status.set_type("message/delivery-status")
    status.set_payload([_block(Reporting_MTA="dns; mx.example.net"), *recipients])
    report.attach(status)
    report.attach(third if third is not None else MIMEMessage(_original()))
    return report.as_bytes()


def _plain_notice(
    body: str,
    *,
    subject: str = "failure notice",
    sender: str = "MAILER-DAEMON@mx.example.net",
    return_path: str = "<>",
    extra: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["Return-Path"] = return_path
    msg["From"] = sender
    msg["To"] = "support@helpdesk.example.org"
    msg["Subject"] = subject
    msg["Message-ID"] = "<notice-1@mx.example.net>"
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes()


def _detect(raw: bytes, *, with_raw: bool = True) -> Bounce | None:
    return detect_bounce(parse_email(raw), raw if with_raw else None)


# -- RFC 3464 delivery status notifications ------------------------------------


def test_failed_recipient_with_5xx_status_is_a_permanent_bounce() -> None:
    raw = _dsn(
        _block(
            Final_Recipient="rfc822; customer@example.net",
            Action="failed",
            Status="5.1.1",
            Diagnostic_Code="smtp; 550 5.1.1 <customer@example.net>: User unknown",
        )
    )
    bounce = _detect(raw, with_raw=False)
    assert bounce is not None
    assert bounce.recipients == ("customer@example.net",)
    assert bounce.permanent is True
    assert "5.1.1" in bounce.reason and "User unknown" in bounce.reason
    assert bounce.original_message_id == ORIGINAL_ID


def test_delayed_action_is_a_temporary_bounce() -> None:
    raw = _dsn(
        _block(
            Final_Recipient="rfc822; customer@example.net",
            Action="delayed",
            Status="4.4.1",
        ),
        subject="Delayed Mail (still being retried)",
    )
    bounce = _detect(raw)
    assert bounce is not None
    assert bounce.recipients == ("customer@example.net",)
    assert bounce.permanent is False


def test_failed_action_with_4xx_status_is_not_permanent() -> None:
    # RFC 3463: class 4 is a persistent transient failure; the address was not refused.
    raw = _dsn(
        _block(Final_Recipient="rfc822; customer@example.net", Action="failed", Status="4.4.7")
    )
    bounce = _detect(raw)
    assert bounce is not None and bounce.permanent is False


def test_original_recipient_wins_over_the_expanded_final_recipient() -> None:
    raw = _dsn(
        _block(
            Final_Recipient="rfc822; mailbox7@store.example.net",
            Original_Recipient="rfc822; customer@example.net",
            Action="failed",
            Status="5.2.2",
        )
    )
    bounce = _detect(raw)
    assert bounce is not None and bounce.recipients == ("customer@example.net",)


def test_mixed_notice_reports_the_permanent_failures() -> None:
    raw = _dsn(
        _block(Final_Recipient="rfc822; gone@example.net", Action="failed", Status="5.1.1"),
        _block(Final_Recipient="rfc822; slow@example.org", Action="delayed", Status="4.4.1"),
        _block(Final_Recipient="rfc822; Also.Gone@Example.NET", Action="failed", Status="5.1.1"),
    )
    bounce = _detect(raw)
    assert bounce is not None
    assert bounce.recipients == ("gone@example.net", "also.gone@example.net")
    assert bounce.permanent is True


def test_success_notice_is_not_a_bounce() -> None:
    raw = _dsn(
        _block(Final_Recipient="rfc822; customer@example.net", Action="delivered", Status="2.0.0"),
        subject="Successful Mail Delivery Report",
    )
    assert _detect(raw) is None


def test_unknown_action_expired_counts_as_a_transient_failure() -> None:
    raw = _dsn(
        _block(
            Final_Recipient="rfc822; customer@example.net",
            Action="expired",
            Diagnostic_Code="Connection timed out",
        )
    )
    bounce = _detect(raw)
    assert bounce is not None and bounce.permanent is False


def test_missing_status_falls_back_to_the_smtp_code_of_the_diagnostic() -> None:
    raw = _dsn(
        _block(
            Original_Recipient="<customer@example.net>",
            Action="failed",
            Diagnostic_Code="smtp; 452 mailbox full",
        )
    )
    bounce = _detect(raw)
    assert bounce is not None and bounce.permanent is False


def test_original_message_id_from_rfc822_headers_part() -> None:
    headers = MIMEText(
        f"From: support@helpdesk.example.org\nMessage-ID: <{ORIGINAL_ID}>\nSubject: x\n",
        "rfc822-headers",
    )
    raw = _dsn(
        _block(Final_Recipient="rfc822; customer@example.net", Action="failed", Status="5.0.0"),
        third=headers,
    )
    bounce = _detect(raw)
    assert bounce is not None and bounce.original_message_id == ORIGINAL_ID


def test_dsn_fields_quoted_in_a_plain_text_notice() -> None:
    body = (
        "An error occurred while trying to deliver the mail to the following recipients:\n"
        "customer@example.net\n\nTechnical report:\n\nReporting-MTA: dns; mx.example.net\n\n"
        "Action: failed\nFinal-Recipient: rfc822; customer@example.net\nStatus: 5.1.1\n"
    )
    bounce = _detect(_plain_notice(body, subject="Delivery Status Notification (Failure)"))
    assert bounce is not None
    assert bounce.recipients == ("customer@example.net",)
    assert bounce.permanent is True


def test_quoted_local_part_is_kept() -> None:
    raw = _dsn(
        _block(Final_Recipient='rfc822; "john..doe"@example.net', Action="failed", Status="5.1.1")
    )
    bounce = _detect(raw)
    assert bounce is not None and bounce.recipients == ('"john..doe"@example.net',)


# -- well-known non-standard notices -------------------------------------------

QMAIL = """Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<customer@example.net>:
Remote host said: 550 5.1.1 <customer@example.net>... User Unknown
Giving up on 192.0.2.7.

--- Below this line is a copy of the message.

Return-Path: <support@helpdesk.example.org>
Message-ID: <ticket-42.a1b2@helpdesk.example.org>
From: support@helpdesk.example.org
To: customer@example.net

We are on it.
"""


def test_qmail_notice() -> None:
    bounce = _detect(_plain_notice(QMAIL), with_raw=False)
    assert bounce is not None
    assert bounce.recipients == ("customer@example.net",)
    assert bounce.permanent is True
    assert "550 5.1.1" in bounce.reason
    assert bounce.original_message_id == ORIGINAL_ID


def test_qmail_notice_with_transient_code_is_temporary() -> None:
    body = QMAIL.replace(
        "Remote host said: 550 5.1.1 <customer@example.net>... User Unknown",
        "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)",
    )
    bounce = _detect(_plain_notice(body))
    assert bounce is not None and bounce.permanent is False


EXIM = """This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  customer@example.net
    SMTP error from remote mail server after RCPT TO:<customer@example.net>:
    host mx.example.net [192.0.2.20]: 550 5.1.1 User unknown

------ This is a copy of the message, including all the headers. ------

Message-Id: <ticket-42.a1b2@helpdesk.example.org>
From: support@helpdesk.example.org
"""


def test_exim_notice_and_its_failed_recipients_header() -> None:
    raw = _plain_notice(
        EXIM,
        subject="Mail delivery failed: returning message to sender",
        extra={"X-Failed-Recipients": "customer@example.net"},
    )
    bounce = _detect(raw)
    assert bounce is not None
    assert bounce.recipients == ("customer@example.net",)
    assert bounce.permanent is True
    assert bounce.original_message_id == ORIGINAL_ID


def test_exim_retry_timeout_is_permanent_when_the_notice_says_so() -> None:
    body = EXIM.replace(
        "    SMTP error from remote mail server after RCPT TO:<customer@example.net>:\n"
        "    host mx.example.net [192.0.2.20]: 550 5.1.1 User unknown\n",
        "    retry timeout exceeded\n",
    )
    bounce = _detect(_plain_notice(body, subject="Mail delivery failed"))
    assert bounce is not None and bounce.permanent is True


def test_expiry_without_a_code_is_temporary() -> None:
    body = (
        "There was an error delivering your mail to <customer@example.net>.\n\n"
        "Could not deliver for the last 432000 seconds. Giving up.\n"
    )
    bounce = _detect(_plain_notice(body, subject="Mail delivery failed"))
    assert bounce is not None
    assert bounce.recipients == ("customer@example.net",)
    assert bounce.permanent is False


def test_exim_delay_warning_is_temporary() -> None:
    body = (
        "This message was created automatically by mail delivery software.\n"
        "A message that you sent has not yet been delivered to one or more of its\n"
        "recipients after more than 24 hours on the queue on mx.example.net.\n\n"
        "The address to which the message has not yet been delivered is:\n\n"
        "  customer@example.net\n"
        "    Delay reason: 550 5.7.1 go away\n"
    )
    bounce = _detect(_plain_notice(body, subject="Warning: message 1abc-00 delayed 24 hours"))
    assert bounce is not None and bounce.permanent is False


def test_sendmail_notice() -> None:
    body = (
        "The original message was received at Thu, 29 Apr 2010 23:34:45 +0900\n"
        "from mail.helpdesk.example.org [192.0.2.1]\n\n"
        "   ----- The following addresses had permanent fatal errors -----\n"
        "<customer@example.net>\n"
        "    (reason: 550 5.1.1 <customer@example.net>... User unknown)\n\n"
        "   ----- Transcript of session follows -----\n"
        "... while talking to mx.example.net.:\n"
        ">>> DATA\n<<< 550 5.1.1 <customer@example.net>... User unknown\n"
    )
    bounce = _detect(_plain_notice(body, subject="Returned mail: see transcript for details"))
    assert bounce is not None
    assert bounce.recipients == ("customer@example.net",)
    assert bounce.permanent is True


def test_exchange_notice_lists_several_recipients() -> None:
    body = (
        "Your message\n\n  To:      support@helpdesk.example.org\n  Subject: Re: [#42]\n\n"
        "did not reach the following recipient(s):\n\n"
        "alice@example.net on Thu, 29 Apr 2010 00:00:00 -0000\n"
        "    The recipient name is not recognized\n"
        "bob@example.net on Thu, 29 Apr 2010 00:00:00 -0000\n"
        "    The recipient name is not recognized\n"
    )
    raw = _plain_notice(body, subject="Undeliverable: Re: [#42]", sender="postmaster@example.net")
    bounce = _detect(raw)
    assert bounce is not None
    assert bounce.recipients == ("alice@example.net", "bob@example.net")


def test_gmail_delay_notice_is_temporary() -> None:
    body = (
        "Delivery to the following recipient has been delayed:\n\n"
        "     customer@example.net\n\n"
        "Message will be retried for 2 more day(s)\n"
    )
    bounce = _detect(_plain_notice(body, subject="Delivery Status Notification (Delay)"))
    assert bounce is not None
    assert bounce.recipients == ("customer@example.net",)
    assert bounce.permanent is False


@pytest.mark.parametrize(("kind", "permanent"), [("Permanent", True), ("Transient", False)])
def test_amazon_ses_json_notification(kind: str, permanent: bool) -> None:
    body = (
        '{"notificationType":"Bounce","bounce":{"bounceType":"' + kind + '",'
        '"bouncedRecipients":[{"emailAddress":"customer@example.net","status":"5.1.1"}]},'
        '"mail":{"source":"support@helpdesk.example.org"}}\n'
    )
    raw = _plain_notice(
        body,
        subject="AWS Notification Message",
        sender="no-reply@sns.amazonaws.com",
        return_path="<x@amazonses.com>",
    )
    bounce = _detect(raw)
    assert bounce is not None
    assert bounce.recipients == ("customer@example.net",)
    assert bounce.permanent is permanent


def test_amazon_ses_delivery_notification_is_not_a_bounce() -> None:
    body = '{"notificationType":"Delivery","delivery":{"recipients":["customer@example.net"]}}\n'
    raw = _plain_notice(
        body, subject="AWS Notification Message", sender="no-reply@sns.amazonaws.com"
    )
    assert _detect(raw) is None


# -- heuristics ----------------------------------------------------------------


def test_heuristic_notice_skips_the_original_sender() -> None:
    body = (
        "Message from mail.example.net.\n"
        "Unable to deliver message to the following address(es).\n\n"
        "<customer@example.net>:\n"
        "This user doesn't have an account here.\n"
        "(sent by support@helpdesk.example.org)\n"
    )
    bounce = _detect(_plain_notice(body, subject="Delivery failure"))
    assert bounce is not None
    assert bounce.recipients == ("customer@example.net",)


def test_notice_without_an_address_falls_back_to_the_returned_recipient() -> None:
    body = (
        "   ----- Transcript of session follows -----\n"
        "421 example.net (smtp)... Deferred: Connection timed out\n\n"
        "   ----- Unsent message follows -----\n"
        "From: support@helpdesk.example.org\nTo: customer@example.net\nSubject: Re: [#42]\n\n"
        "We are on it.\n"
    )
    bounce = _detect(_plain_notice(body, subject="Returned mail: Cannot send message for 5 days"))
    assert bounce is not None
    assert bounce.recipients == ("customer@example.net",)
    assert bounce.permanent is False


def test_broken_mime_structure_is_still_read() -> None:
    # The inner boundary parameter sits on a line of its own, so no MIME
    # parser finds the text part. The parse keeps the unsplit multipart body
    # as text, and the raw bytes are a second way in: both must find it.
    raw = (
        b"From: post_master@sms.example.net\r\nTo: support@helpdesk.example.org\r\n"
        b"Subject: Re: Test message\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        b"--outer\r\nContent-Type: multipart/alternative;\r\n"
        b'boundary="inner"\r\n\r\n--inner\r\nContent-Type: text/plain\r\n\r\n'
        b"Error: Invalid user address\r\n\r\nError message below:\r\n"
        b"550 - Requested action not taken: no such user here\r\n\r\n"
        b"Message details:\r\n  MAIL FROM: support@helpdesk.example.org\r\n"
        b"  RCPT TO: 5550100@sms.example.net\r\n--inner--\r\n--outer--\r\n"
    )
    for bounce in (_detect(raw, with_raw=False), _detect(raw)):
        assert bounce is not None
        assert bounce.recipients == ("5550100@sms.example.net",)
        assert bounce.permanent is True


def test_original_message_id_falls_back_to_in_reply_to() -> None:
    body = "Delivery to the following recipient failed permanently:\n\n     customer@example.net\n"
    raw = _plain_notice(
        body,
        subject="Delivery Status Notification (Failure)",
        extra={"In-Reply-To": f"<{ORIGINAL_ID}>"},
    )
    bounce = _detect(raw)
    assert bounce is not None and bounce.original_message_id == ORIGINAL_ID


# -- what is not a bounce ------------------------------------------------------


def test_a_person_writing_about_a_failed_delivery_is_not_a_bounce() -> None:
    msg = EmailMessage()
    msg["From"] = "Jane Customer <jane@example.net>"
    msg["To"] = "support@helpdesk.example.org"
    msg["Subject"] = "Delivery failure: my parcel could not be delivered to jane@example.net"
    msg["Return-Path"] = "<jane@example.net>"
    msg.set_content(
        "Hello,\nyour courier says the parcel could not be delivered to:\n"
        "  jane@example.net\nUser unknown at the door?! 550 reasons to be angry.\n"
    )
    assert _detect(msg.as_bytes()) is None


def test_a_person_forwarding_a_bounce_is_not_a_bounce() -> None:
    msg = EmailMessage()
    msg["From"] = "Jane Customer <jane@example.net>"
    msg["To"] = "support@helpdesk.example.org"
    msg["Subject"] = "Fwd: Undelivered Mail Returned to Sender"
    msg.set_content("Why did this bounce?\n")
    msg.add_attachment(_original(), disposition="inline")
    assert _detect(msg.as_bytes()) is None


def test_abuse_feedback_report_is_not_a_bounce() -> None:
    report = MIMEMultipart("report")
    report.set_param("report-type", "feedback-report")
    report["From"] = "feedback@fbl.example.net"
    report["To"] = "support@helpdesk.example.org"
    report["Subject"] = "Abuse report"
    report.attach(MIMEText("This is an abuse report.\n"))
    feedback = Message()
    feedback.set_type("message/feedback-report")
    feedback.set_payload("Feedback-Type: abuse\nUser-Agent: FBL/1.0\nVersion: 1\n")
    report.attach(feedback)
    report.attach(MIMEMessage(_original()))
    assert _detect(report.as_bytes()) is None


def test_flufl_failure_is_never_our_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import flufl.bounce

    def explode(_: object) -> object:
        raise RuntimeError("detector crashed")

    monkeypatch.setattr(flufl.bounce, "all_failures", explode)
    # A notice that names nobody, so that flufl.bounce is consulted.
    raw = _plain_notice("Something went wrong.\n", subject="Undelivered Mail Returned to Sender")
    assert _detect(raw) is None


def test_flufl_second_opinion_is_used_when_the_prose_is_unreadable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flufl.bounce

    def found(_: object) -> tuple[frozenset[bytes], frozenset[bytes]]:
        return frozenset(), frozenset({b"Customer@Example.NET"})

    monkeypatch.setattr(flufl.bounce, "all_failures", found)
    raw = _plain_notice("Something went wrong.\n", subject="Undelivered Mail Returned to Sender")
    bounce = _detect(raw)
    assert bounce is not None and bounce.recipients == ("customer@example.net",)
    assert _detect(raw, with_raw=False) is None  # flufl.bounce needs the bytes


def test_failed_recipients_header_names_what_the_text_does_not() -> None:
    body = EXIM.replace(
        "  customer@example.net\n"
        "    SMTP error from remote mail server after RCPT TO:<customer@example.net>:\n"
        "    host mx.example.net [192.0.2.20]: 550 5.1.1 User unknown\n",
        "  save to /var/mail/c/customer\n    mailbox is full\n",
    )
    raw = _plain_notice(
        body,
        subject="Mail delivery failed: returning message to sender",
        extra={"X-Failed-Recipients": "customer@example.net"},
    )
    bounce = _detect(raw, with_raw=False)
    assert bounce is not None and bounce.recipients == ("customer@example.net",)


def test_dsn_status_decides_when_its_recipient_field_is_unreadable() -> None:
    raw = _dsn(
        _block(Final_Recipient="rfc822; @mx.example.net", Action="failed", Status="4.2.2"),
        notice="<customer@example.net>: host mx.example.net said: mailbox over quota\n",
    )
    bounce = _detect(raw)
    assert bounce is not None
    assert bounce.recipients == ("customer@example.net",)
    assert bounce.permanent is False


def test_a_person_pasting_delivery_status_fields_is_not_a_bounce() -> None:
    msg = EmailMessage()
    msg["From"] = "Jane Customer <jane@example.net>"
    msg["To"] = "support@helpdesk.example.org"
    msg["Subject"] = "Why can't I reach my colleague?"
    msg.set_content(
        "Hi, my mail server said this:\n\n"
        "Final-Recipient: rfc822; colleague@example.org\nAction: failed\nStatus: 5.1.1\n"
    )
    assert _detect(msg.as_bytes()) is None


def test_a_person_pasting_ses_json_is_not_a_bounce() -> None:
    msg = EmailMessage()
    msg["From"] = "Dev <dev@example.net>"
    msg["To"] = "support@helpdesk.example.org"
    msg["Subject"] = "AWS question"
    msg.set_content(
        'We got this, what does it mean?\n{"notificationType":"Bounce","bounce":{"bounceType":'
        '"Permanent","bouncedRecipients":[{"emailAddress":"customer@example.net"}]}}\n'
    )
    assert _detect(msg.as_bytes()) is None


def test_a_person_forwarding_a_delivery_report_as_attachment_is_not_a_bounce() -> None:
    dsn = _dsn(
        _block(Final_Recipient="rfc822; customer@example.net", Action="failed", Status="5.1.1")
    )
    msg = EmailMessage()
    msg["From"] = "Jane Customer <jane@example.net>"
    msg["To"] = "support@helpdesk.example.org"
    msg["Subject"] = "Fwd: Undelivered Mail Returned to Sender"
    msg.set_content("What does this mean?\n")
    msg.add_attachment(message_from_bytes(dsn))
    assert _detect(msg.as_bytes()) is None


def test_relay_that_wraps_the_dsn_it_received_is_still_read() -> None:
    inner = _dsn(
        _block(Final_Recipient="rfc822; customer@example.net", Action="failed", Status="5.1.1")
    )
    outer = EmailMessage()
    outer["From"] = "Mail Delivery Subsystem <MAILER-DAEMON@relay.example.org>"
    outer["To"] = "support@helpdesk.example.org"
    outer["Subject"] = "Returned mail: User unknown"
    outer.set_content("The original message was received at Thu, 13 Oct 2015\n")
    outer.add_attachment(message_from_bytes(inner))
    bounce = _detect(outer.as_bytes(), with_raw=False)
    assert bounce is not None
    assert bounce.recipients == ("customer@example.net",)


def test_multipart_whose_boundary_was_lost_is_read_as_text() -> None:
    # What the parser keeps when it never finds a boundary: the whole body as
    # the text of the multipart part itself.
    body = (
        "--lost\nContent-Type: text/plain\n\n"
        "   ----- The following addresses had permanent fatal errors -----\n"
        "<customer@example.net>\n    (reason: 550 5.1.1 User unknown)\n"
    )
    mail = InboundEmail(
        message_id="dsn-9@mx.example.net",
        subject="Returned mail: see transcript for details",
        from_=Address("mailer-daemon@mx.example.net"),
        to=(Address("support@helpdesk.example.org"),),
        return_path="",
        headers=(("return-path", "<>"), ("from", "MAILER-DAEMON@mx.example.net")),
        content_type="multipart/report",
        parts=(MimePart("multipart/report", text=body),),
    )
    bounce = detect_bounce(mail)
    assert bounce is not None
    assert bounce.recipients == ("customer@example.net",)
    assert bounce.permanent is True
