"""Build test mail with the email library (never by string pasting)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from helpdesk.compose import Draft
from helpdesk.ingest.inbound import Address


def make_mail(
    sender: str = "Carol Client <carol@client.test>",
    to: str = "support@example.test",
    subject: str = "Printer is broken",
    body: str = "Hello,\nthe printer on floor 2 is broken.\nCarol\n",
    message_id: str | None = None,
    cc: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    headers: dict[str, str] | None = None,
    date: datetime | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    msg["Message-ID"] = message_id or make_msgid(domain="client.test")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes()


DRAFT_DATE = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def make_draft(**over: object) -> Draft:
    """A confirmation-like draft; keyword arguments replace its fields."""
    base: dict[str, object] = dict(
        purpose="confirmation",
        from_addr=Address("support@example.test", "Example Support"),
        to=(Address("carol@client.test", "Carol"),),
        subject="[HD-000001] Printer",
        text="Hello\n",
        message_id="hd.HD-000001.abc.tag@example.test",
        date=DRAFT_DATE,
        automatic=True,
        loop_value="support@example.test",
    )
    base.update(over)
    return Draft(**base)  # type: ignore[arg-type]
