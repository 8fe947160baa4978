"""Our confirmation meets a robot that answers every mail: no loop.

The robot's answers are delivered into the real Dovecot inbox the helpdesk
reads, and what the helpdesk sends is captured by the real SMTP server; we
step a movable clock through ten minutes of simulated time.
"""

from __future__ import annotations

import email
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from email.utils import make_msgid
from pathlib import Path

import pytest

from helpdesk.clock import ManualClock
from helpdesk.daemon import Daemon
from tests.support.config import cli_json, imap_inbound, make_app, smtp_outbound, write_config
from tests.support.dovecot import Dovecot, ImapAccount
from tests.support.mail import make_mail
from tests.support.smtpd import CapturedMessage, SmtpCapture

ROBOT = "robot@partner.test"
Robot = Callable[[EmailMessage], bytes]


def _answer(original: EmailMessage, subject: str, headers: dict[str, str]) -> bytes:
    reply = EmailMessage()
    reply["From"] = ROBOT
    reply["To"] = str(original["Reply-To"] or original["From"])
    reply["Subject"] = subject
    reply["Message-ID"] = make_msgid(domain="partner.test")
    reply["In-Reply-To"] = str(original["Message-ID"])
    reply["References"] = str(original["Message-ID"])
    for name, value in headers.items():
        reply[name] = value
    reply.set_content("I am away until Monday and will read your message then.\n")
    return reply.as_bytes()


def rfc3834_robot(original: EmailMessage) -> bytes:
    return _answer(original, f"Auto: {original['Subject']}", {"Auto-Submitted": "auto-replied"})


def subject_only_robot(original: EmailMessage) -> bytes:
    return _answer(original, f"Out of Office: {original['Subject']}", {})


def naive_robot(original: EmailMessage) -> bytes:
    # No marker at all: it looks like a human reply on the thread.
    return _answer(original, f"Re: {original['Subject']}", {})


@pytest.mark.parametrize("robot", [rfc3834_robot, subject_only_robot, naive_robot])
async def test_robot_and_helpdesk_exchange_at_most_one_automatic_mail_each(
    robot: Robot, dovecot: Dovecot, imap_account: ImapAccount, smtp_server: SmtpCapture,
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, inbound=imap_inbound(imap_account),
                          outbound=smtp_outbound(smtp_server))
    clock = ManualClock(datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    app = make_app(config, clock)
    dovecot.append(imap_account.user, "INBOX", make_mail(sender=ROBOT, subject="Order 42",
                                                         message_id="<start@partner.test>"))
    answered: set[int] = set()
    robot_sent = 0
    for _ in range(10):  # ten simulated minutes
        await Daemon(app).once()
        for index, captured in enumerate(list(smtp_server.messages)):
            if index in answered or ROBOT not in captured.rcpt_tos:
                continue
            answered.add(index)
            original = email.message_from_bytes(captured.raw, policy=default)
            dovecot.append(imap_account.user, "INBOX", robot(original))  # type: ignore[arg-type]
            robot_sent += 1
        clock.advance(timedelta(minutes=1))

    to_robot: list[CapturedMessage] = [m for m in smtp_server.messages if ROBOT in m.rcpt_tos]
    automatic = [m for m in to_robot
                 if email.message_from_bytes(m.raw, policy=default)["Auto-Submitted"]]
    assert len(automatic) == 1  # the one confirmation
    assert robot_sent <= 1
    assert len(to_robot) == 1
    # The robot's answer is recorded on the ticket, not answered.
    assert dovecot.list_uids(imap_account.user, "INBOX") == []
    shown = cli_json(config, "tickets", "show", "HD-000001")
    from_robot = [m for m in shown["messages"] if m["from"] == ROBOT]
    if robot is naive_robot:
        assert len(from_robot) == 2  # the first mail, then the "reply" on the thread
    else:
        assert len(from_robot) == 1
        assert [e["kind"] for e in shown["events"]].count("auto_reply") == 1
    assert len(cli_json(config, "tickets", "list")) == 1
    app.dispose()
