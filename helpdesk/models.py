"""What is stored: SQLModel tables shared by SQLite and PostgreSQL.

Times are stored as naive UTC and handed back timezone-aware (UTC), so the
same code reads both databases. The schema itself is owned by the Alembic
migrations in ``helpdesk/migrations``; these classes must match them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python, naive UTC in the database (SQLite has no zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        if not isinstance(moment, datetime):
            raise TypeError(f"not a timestamp: {value!r}")
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def _text(nullable: bool = False) -> Any:
    return Field(default="", sa_column=Column(Text, nullable=nullable))


class Counter(SQLModel, table=True):
    """Named sequences; ``UPDATE ... RETURNING`` takes a row lock, so ticket
    numbers stay gap-free and unique across daemons sharing PostgreSQL."""

    __tablename__ = "counter"
    name: str = Field(primary_key=True, max_length=64)
    value: int = 0


class InboundMail(SQLModel, table=True):
    """Every fetched message: the idempotency record. Its bytes are stored
    first too, in the same transaction, but apart (``InboundRaw``)."""

    __tablename__ = "inbound_mail"
    __table_args__ = (
        UniqueConstraint("source", "uidvalidity", "uid", name="uq_inbound_source_uid"),
        UniqueConstraint("dedup_key", name="uq_inbound_dedup"),
    )
    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=512)
    uidvalidity: int | None = None
    uid: int | None = None
    message_id: str = Field(default="", max_length=998, index=True)
    sha256: str = Field(max_length=64)
    dedup_key: str = Field(max_length=128)
    size: int = 0
    received_at: datetime = _ts(nullable=False)
    status: str = Field(default="pending", max_length=16, index=True)
    outcome: str = Field(default="", max_length=32)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id")
    error: str = _text()
    # host:pid of the daemon that stored it (helpdesk.workers); "" before 0004
    worker: str = Field(default="", max_length=300)


class InboundRaw(SQLModel, table=True):
    """The raw bytes of an ``inbound_mail`` row, kept for quarantine and replay.

    A table of their own, so the status written after the apply rewrites a
    small row, not the whole message (SQLite rewrites a row to change one
    column). On SQLite the key is the rowid, which large bytes are streamed
    into (``helpdesk.streamed``); the bytes are the last column, so
    reading the key never walks their overflow pages.
    """

    __tablename__ = "inbound_raw"
    inbound_mail_id: int = Field(sa_column=Column(
        Integer, ForeignKey("inbound_mail.id"), primary_key=True, autoincrement=False))
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Ticket(SQLModel, table=True):
    __tablename__ = "ticket"
    __table_args__ = (
        Index("ix_ticket_next_sla_at", "next_sla_at"),
        Index("ix_ticket_status", "status"),
    )
    id: int | None = Field(default=None, primary_key=True)
    number: int = Field(unique=True)
    reference: str = Field(max_length=32, unique=True)
    subject: str = _text()
    subject_key: str = Field(default="", max_length=255, index=True)
    requester_addr: str = Field(max_length=320, index=True)
    requester_name: str = Field(default="", max_length=255)
    status: str = Field(default="new", max_length=16)
    priority: str = Field(default="medium", max_length=16)
    priority_source: str = Field(default="default", max_length=16)
    category: str = Field(default="other", max_length=32)
    plan: str = Field(default="standard", max_length=16)
    customer: str = Field(default="", max_length=255)
    region: str = Field(default="", max_length=8)
    assignee: str = Field(default="", max_length=320)
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    first_response_at: datetime | None = _ts()
    first_response_due: datetime | None = _ts()
    resolution_due: datetime | None = _ts()
    resolved_at: datetime | None = _ts()
    closed_at: datetime | None = _ts()
    next_sla_at: datetime | None = _ts()
    sla_cycle: int = 0
    escalated: bool = False
    escalation_level: int = 0
    escalated_at: datetime | None = _ts()
    last_escalated_at: datetime | None = _ts()
    escalation_trigger: str = Field(default="", max_length=32)
    escalation_manager: str = Field(default="", max_length=320)
    escalation_ack_due: datetime | None = _ts()
    linked_to: str = Field(default="", max_length=32)
    mentions: str = Field(default="", max_length=255)


class Participant(SQLModel, table=True):
    __tablename__ = "participant"
    __table_args__ = (UniqueConstraint("ticket_id", "addr", name="uq_participant"),)
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    addr: str = Field(max_length=320, index=True)
    name: str = Field(default="", max_length=255)
    role: str = Field(default="cc", max_length=16)  # requester | cc | staff


class Message(SQLModel, table=True):
    """One mail on a ticket, inbound or outbound, with its new text."""

    __tablename__ = "message"
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    direction: str = Field(max_length=8)  # inbound | outbound
    kind: str = Field(max_length=24)
    from_addr: str = Field(default="", max_length=320)
    from_name: str = Field(default="", max_length=255)
    to_addrs: str = _text()
    cc_addrs: str = _text()
    message_id: str = Field(default="", max_length=998, index=True)
    in_reply_to: str = _text()
    references: str = _text()
    subject: str = _text()
    body: str = _text()
    inbound_mail_id: int | None = Field(default=None, foreign_key="inbound_mail.id")
    outbox_id: int | None = Field(default=None, foreign_key="outbox.id")
    created_at: datetime = _ts(nullable=False)


class ThreadId(SQLModel, table=True):
    """Message-ID -> ticket, for every id we stored or were pointed at.

    A mail's own id replaces any earlier entry; the ids it references are
    added only when unknown ("ghosts", as in jwz threading), so a reply whose
    parent never reached us still finds the thread through its grandparent.
    """

    __tablename__ = "thread_id"
    message_id: str = Field(primary_key=True, max_length=998)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)


class Blob(SQLModel, table=True):
    """Attachment bytes, stored once per content hash."""

    __tablename__ = "blob"
    sha256: str = Field(primary_key=True, max_length=64)
    size: int = 0
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class AttachmentRow(SQLModel, table=True):
    """An attachment's metadata; ``filename`` is data, never a path."""

    __tablename__ = "attachment"
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", index=True)
    sha256: str = Field(foreign_key="blob.sha256", max_length=64)
    filename: str = Field(default="", max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=255)
    size: int = 0


class Event(SQLModel, table=True):
    """Ticket history: status and priority changes, bounces, security events."""

    __tablename__ = "event"
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    kind: str = Field(max_length=32)
    actor: str = Field(default="", max_length=320)
    detail: str = _text()
    created_at: datetime = _ts(nullable=False)


class Outbox(SQLModel, table=True):
    """A composed mail waiting to go; written in the transaction that caused it."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_rcpt_auto", "rcpt", "automatic", "created_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    purpose: str = Field(max_length=32)
    automatic: bool = True
    rcpt: str = Field(default="", max_length=320)  # primary recipient, for rate limits
    envelope_from: str = Field(default="", max_length=320)
    recipients: str = _text()  # newline-separated envelope recipients
    message_id: str = Field(default="", max_length=998)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: str = Field(default="queued", max_length=16)  # queued|sending|sent|failed|suppressed
    attempts: int = 0
    next_attempt_at: datetime = _ts(nullable=False)
    locked_at: datetime | None = _ts()
    locked_by: str = Field(default="", max_length=128)
    last_error: str = _text()
    created_at: datetime = _ts(nullable=False)
    sent_at: datetime | None = _ts()


class Quarantine(SQLModel, table=True):
    __tablename__ = "quarantine"
    id: int | None = Field(default=None, primary_key=True)
    inbound_mail_id: int = Field(foreign_key="inbound_mail.id", index=True)
    reason: str = Field(max_length=64)
    detail: str = _text()
    created_at: datetime = _ts(nullable=False)
    replayed_at: datetime | None = _ts()
    status: str = Field(default="held", max_length=16)  # held | replayed | dismissed
    notified_at: datetime | None = _ts()  # when a notice told the team of it (helpdesk.held)


class Notice(SQLModel, table=True):
    """Exactly-once SLA and escalation notices: the unique key is the guard."""

    __tablename__ = "notice"
    __table_args__ = (
        UniqueConstraint("ticket_id", "target", "kind", "cycle", name="uq_notice"),
    )
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    target: str = Field(max_length=32)
    kind: str = Field(max_length=16)
    cycle: int = 0
    due_at: datetime = _ts(nullable=False)
    sent_at: datetime = _ts(nullable=False)
    late: bool = False


class Undeliverable(SQLModel, table=True):
    __tablename__ = "undeliverable"
    addr: str = Field(primary_key=True, max_length=320)
    until: datetime = _ts(nullable=False)
    reason: str = _text()
