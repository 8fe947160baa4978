"""A helpdesk under test: real Dovecot in, real SMTP out, a movable clock.

Shared by the end-to-end threading, staff and escalation tests.
"""

from __future__ import annotations

import asyncio
import email
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from helpdesk.app import App
from helpdesk.clock import ManualClock
from helpdesk.daemon import Daemon
from helpdesk.ingest.pipeline import Outcome
from helpdesk.models import Outbox
from tests.support.config import (
    STAFF,
    cli,
    cli_json,
    imap_inbound,
    make_app,
    smtp_outbound,
    write_config,
)
from tests.support.dovecot import Dovecot, ImapAccount
from tests.support.mail import make_mail
from tests.support.smtpd import SmtpCapture

# Monday 23 November 2026, 10:00 in London: inside business hours, so the
# first-response clock is running from the first mail on.
START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
CAROL = "Carol Client <carol@client.test>"
DAVE = "Dave Colleague <dave@client.test>"
ALICE = f"Alice Staff <{STAFF}>"
BOB = "bob@staff.example.test"
SUPPORT = "support@example.test"
NOTE_ADDRESS = "support+note@example.test"
AUTH_OK = "mx.example.test; dkim=pass header.d=staff.example.test"
OFFSET = "HELPDESK_CLOCK_OFFSET_SECONDS"
VERIFYING = {"trust_staff_from": False, "authserv_id": "mx.example.test"}


@dataclass(frozen=True)
class Sent:
    """One mail the SMTP server accepted, with the purpose the outbox gave it."""

    purpose: str
    rcpt: tuple[str, ...]
    mail_from: str
    msg: EmailMessage
    raw: bytes

    @property
    def subject(self) -> str:
        return str(self.msg["Subject"])

    @property
    def message_id(self) -> str:
        return str(self.msg["Message-ID"]).strip("<>")

    @property
    def reply_to(self) -> str:
        return addrs(self.msg, "Reply-To")[0]

    @property
    def text(self) -> str:
        part = self.msg.get_body(("plain",))
        assert part is not None
        return str(part.get_content())


def addrs(msg: EmailMessage, name: str) -> list[str]:
    return [a.lower() for _, a in getaddresses([str(v) for v in msg.get_all(name, [])])]


@dataclass
class Desk:
    """One helpdesk wired to a fresh mailbox, the SMTP capture and a manual clock."""

    dovecot: Dovecot
    account: ImapAccount
    smtp: SmtpCapture
    config: Path
    clock: ManualClock
    app: App
    seen: int = 0
    purposes: dict[str, str] = field(default_factory=dict)

    async def deliver(self, *raws: bytes) -> list[Outcome]:
        """APPEND to the inbox, then one daemon pass: ingest, SLA, send."""
        for raw in raws:
            self.dovecot.append(self.account.user, "INBOX", raw)
        return await Daemon(self.app).once()

    async def deliver_by_cli(self, *raws: bytes) -> dict[str, int]:
        """The same through ``helpdesk run --once``, at the desk's time (the
        CLI's clock offset), so its SLA pass sees what ``deliver`` would."""
        for raw in raws:
            self.dovecot.append(self.account.user, "INBOX", raw)
        offset = (self.clock.now() - datetime.now(UTC)).total_seconds()
        saved = os.environ.get(OFFSET)
        os.environ[OFFSET] = str(offset)
        try:
            code, out, err = await asyncio.to_thread(cli, self.config, "run", "--once")
        finally:
            if saved is None:
                del os.environ[OFFSET]
            else:
                os.environ[OFFSET] = saved
        assert code == 0, err
        counts: dict[str, int] = json.loads(out)
        return counts

    def sent(self) -> list[Sent]:
        """The mail received since the last call."""
        captured = self.smtp.messages
        new, self.seen = captured[self.seen :], len(captured)
        with Session(self.app.engine) as session:
            for row in session.exec(select(Outbox)).all():
                self.purposes[row.message_id] = row.purpose
        out: list[Sent] = []
        for m in new:
            msg = email.message_from_bytes(m.raw, policy=default)
            assert isinstance(msg, EmailMessage)
            mid = str(msg["Message-ID"]).strip("<>")
            out.append(Sent(self.purposes.get(mid, "?"), m.rcpt_tos, m.mail_from, msg, m.raw))
        return out

    def show(self, reference: str = "HD-000001") -> dict[str, Any]:
        data: dict[str, Any] = cli_json(self.config, "tickets", "show", reference)
        return data

    def references(self) -> list[str]:
        """Every ticket's reference, oldest first."""
        return [t["reference"] for t in cli_json(self.config, "tickets", "list")]


    @classmethod
    def create(cls, dovecot: Dovecot, account: ImapAccount, smtp: SmtpCapture, tmp_path: Path,
               *, start: datetime = START, db_url: str | None = None,
               helpdesk: dict[str, Any] | None = None, extra: str = "") -> Desk:
        config = write_config(tmp_path, db_url=db_url, inbound=imap_inbound(account),
                              outbound=smtp_outbound(smtp), helpdesk=helpdesk, extra=extra)
        clock = ManualClock(start)
        return cls(dovecot, account, smtp, config, clock, make_app(config, clock))


DeskFactory = Callable[..., Desk]


def only(sent: Sequence[Sent], purpose: str) -> Sent:
    found = [s for s in sent if s.purpose == purpose]
    assert len(found) == 1, f"expected one {purpose}, got {[s.purpose for s in sent]}"
    return found[0]


def purposes(sent: Sequence[Sent]) -> list[str]:
    return sorted(s.purpose for s in sent)


def kinds(data: dict[str, Any]) -> list[str]:
    return [m["kind"] for m in data["messages"]]


def events(data: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in data["events"] if e["kind"] == kind]


async def open_ticket(desk: Desk, cc: str | None = None) -> tuple[Sent, Sent]:
    """Carol writes in; returns (her confirmation, the team's notification)."""
    await desk.deliver(make_mail(sender=CAROL, cc=cc, message_id="<orig@client.test>"))
    sent = desk.sent()
    assert purposes(sent) == ["confirmation", "staff_new_ticket"]
    return only(sent, "confirmation"), only(sent, "staff_new_ticket")


def staff_reply(notification: Sent, body: str, *, sender: str = ALICE, to: str | None = None,
                auth: bool = True, message_id: str = "<alice-1@staff.example.test>") -> bytes:
    """Alice answers the staff notification with her mail client's "Reply"."""
    headers = {"Authentication-Results": AUTH_OK} if auth else {}
    return make_mail(
        sender=sender, to=to or notification.reply_to,
        subject="Re: " + notification.subject, body=body, message_id=message_id,
        in_reply_to=f"<{notification.message_id}>", references=f"<{notification.message_id}>",
        headers=headers,
    )


QUOTED_HISTORY = (
    "\n\nOn Mon, 23 Nov 2026 at 10:00, Example Support <support@example.test> wrote:\n"
    "> New ticket HD-000001 from carol@client.test\n"
    "> the printer on floor 2 is broken.\n"
)

