"""The outbox: every mail we send is a row written in the transaction that
caused it, and a sender loop delivers the rows afterwards.

Nothing is sent from inside a transaction, so a crash can only delay mail,
never lose it; a row left ``sending`` by a crash is picked up again once its
lease runs out. Several daemons on one PostgreSQL database claim rows with
``FOR UPDATE SKIP LOCKED``, so each row is sent by one of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, case, func, update
from sqlalchemy import select as core_select
from sqlmodel import Session, select

from helpdesk.compose import Outgoing
from helpdesk.logs import log
from helpdesk.models import Outbox, Undeliverable
from helpdesk.prepared import run
from helpdesk.rows import connection, insert_returning_id, model_table
from helpdesk.settings import OutboundSettings

logger = logging.getLogger(__name__)
# What an outbox row can be: waiting, claimed by a sender, done, given up,
# or held back by the automatic-mail limits.
STATUSES = ("queued", "sending", "sent", "failed", "suppressed")
# Results are recorded one row per transaction, right after each send (a
# crash can then repeat at most the mail in flight): Core statements on a
# plain connection keep that cheap.
_TABLE = model_table(Outbox)
_UNDELIVERABLE = model_table(Undeliverable)
_SENT = (
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("row_id"))
    .values(status="sent", sent_at=bindparam("at"), locked_at=None, last_error="",
            attempts=_TABLE.c.attempts + 1)
)
_CLAIM = (
    update(_TABLE)
    .where(_TABLE.c.id.in_(bindparam("ids", expanding=True)))
    .values(status="sending", locked_by=bindparam("worker"), locked_at=bindparam("at"))
)
# Asked for every confirmation: built once (see helpdesk.prepared). One
# statement answers both questions; the reason for a block is read only
# when there is one.
_BLOCKED = core_select(_UNDELIVERABLE.c.until, _UNDELIVERABLE.c.reason).where(
    _UNDELIVERABLE.c.addr == bindparam("rcpt"))
_CHECK = core_select(
    func.count(),
    func.coalesce(func.sum(case((_TABLE.c.created_at > bindparam("since_hour"), 1), else_=0)), 0),
    core_select(func.count()).where(
        _UNDELIVERABLE.c.addr == bindparam("rcpt"), _UNDELIVERABLE.c.until > bindparam("now"),
    ).scalar_subquery(),
).where(
    _TABLE.c.rcpt == bindparam("rcpt"),
    _TABLE.c.automatic.is_(True),
    _TABLE.c.status != "suppressed",
    _TABLE.c.created_at > bindparam("since_day"),
)


def suppression_reason(
    session: Session, cfg: OutboundSettings, rcpt: str, now: datetime
) -> str | None:
    """Why automatic mail to ``rcpt`` must not go now, or None."""
    conn = connection(session)
    [(in_day, in_hour, blocked)] = run(conn, _CHECK, {
        "rcpt": rcpt, "now": now, "since_day": now - timedelta(days=1),
        "since_hour": now - timedelta(hours=1)})
    if blocked:
        until, reason = conn.execute(_BLOCKED, {"rcpt": rcpt}).one()
        return f"undeliverable until {until:%Y-%m-%d}: {reason[:80]}"
    if in_hour >= cfg.auto_per_hour:
        return f"rate limit: {in_hour} automatic mails in the last hour"
    if in_day >= cfg.auto_per_day:
        return f"rate limit: {in_day} automatic mails in the last day"
    return None


def row(outgoing: Outgoing, now: datetime, ticket_id: int | None, status: str = "queued",
        error: str = "") -> dict[str, object]:
    """The outbox row for ``outgoing``, due now."""
    return {
        "ticket_id": ticket_id,
        "purpose": outgoing.purpose,
        "automatic": outgoing.automatic,
        "rcpt": outgoing.rcpt,
        "envelope_from": outgoing.envelope_from,
        "recipients": "\n".join(outgoing.recipients),
        "message_id": outgoing.message_id,
        "raw": outgoing.raw,
        "status": status,
        "attempts": 0,
        "locked_by": "",
        "last_error": error,
        "next_attempt_at": now,
        "created_at": now,
    }


class Queued(NamedTuple):
    id: int
    held_back: str  # why it is suppressed, or ""


def enqueue(
    session: Session,
    cfg: OutboundSettings,
    outgoing: Outgoing,
    now: datetime,
    ticket_id: int | None = None,
    rate_limited: bool = True,
) -> Queued:
    """Add ``outgoing`` to the outbox in the caller's transaction.

    Automatic mail to outside recipients (``rate_limited``) is subject to the
    per-recipient limits and the undeliverable list; beyond them the row is
    kept as ``suppressed`` so the decision is visible, and nothing is sent.
    Returns the row's id, and why the mail is held back ("" if it is not).
    """
    status, error = "queued", ""
    if outgoing.automatic and rate_limited:
        reason = suppression_reason(session, cfg, outgoing.rcpt, now)
        if reason:
            status, error = "suppressed", reason
            log(logger, logging.INFO, "automatic mail suppressed", rcpt=outgoing.rcpt,
                purpose=outgoing.purpose, reason=reason, message_id=outgoing.message_id)
    row_id = insert_returning_id(session, Outbox, row(outgoing, now, ticket_id, status, error))
    if ticket_id is not None and outgoing.message_id:
        # Staff answering a notification thread by its Message-ID too.
        from helpdesk.tickets import remember_ids

        remember_ids(session, ticket_id, outgoing.message_id, fresh=True)
    return Queued(row_id, error)


@dataclass(frozen=True, slots=True)
class Claimed:
    """An outbox row taken for sending: what sending and recording it need."""

    id: int
    ticket_id: int | None
    purpose: str
    envelope_from: str
    recipients: str  # newline-separated
    message_id: str
    raw: bytes
    attempts: int
    created_at: datetime


_DUE = (
    core_select(_TABLE.c.id)
    .where(
        ((_TABLE.c.status == "queued") & (_TABLE.c.next_attempt_at <= bindparam("now")))
        | ((_TABLE.c.status == "sending") & (_TABLE.c.locked_at < bindparam("stale")))
    )
    .order_by(_TABLE.c.next_attempt_at, _TABLE.c.id)
    .limit(bindparam("limit"))
)
_DUE_LOCKED = _DUE.with_for_update(skip_locked=True)
_CLAIMED = core_select(
    *(_TABLE.c[name] for name in Claimed.__dataclass_fields__)
).where(_TABLE.c.id.in_(bindparam("ids", expanding=True)))


def claim_due(
    session: Session, now: datetime, worker: str, limit: int, lease: timedelta
) -> list[Claimed]:
    """Mark up to ``limit`` due rows ``sending`` for ``worker`` and return them."""
    # Ids first, the rows after: ordering whole rows made the database sort
    # every due row with its message bytes to keep ``limit`` of them, so a
    # long queue cost more with every claim.
    due = _DUE_LOCKED if session.get_bind().dialect.name == "postgresql" else _DUE
    conn = connection(session)
    ids = [int(i) for i in conn.execute(due, {"now": now, "stale": now - lease,
                                              "limit": limit}).scalars()]
    if not ids:
        return []
    # Plain rows, not ORM objects: loading those cost a third of sending.
    found = {row.id: Claimed(*row) for row in conn.execute(_CLAIMED, {"ids": ids})}
    conn.execute(_CLAIM, {"ids": ids, "worker": worker, "at": now})
    return [found[i] for i in ids]  # in due order


def release_dead_workers(session: Session, host: str,
                         alive_here: Callable[[str], bool | None]) -> int:
    """Put rows claimed by dead processes on this host back in the queue.

    A crash leaves rows ``sending``; other hosts must wait out the lease, but
    on our own host we can tell a dead PID at once, so a restart resends now.
    """
    rows = session.exec(
        select(Outbox).where(
            Outbox.status == "sending",
            Outbox.locked_by.startswith(f"{host}:"),
        )
    ).all()
    released = 0
    for row in rows:
        if alive_here(row.locked_by) is False:
            row.status, row.locked_at, row.locked_by = "queued", None, ""
            session.add(row)
            released += 1
    return released


def mark_sent(conn: Connection, row_ids: Sequence[int], now: datetime) -> None:
    """Record delivery of ``row_ids`` (one executemany)."""
    if row_ids:
        conn.execute(_SENT, [{"row_id": i, "at": now} for i in row_ids])


def mark_failed(conn: Connection, row_id: int, error: str) -> None:
    conn.execute(
        update(_TABLE)
        .where(_TABLE.c.id == row_id)
        .values(status="failed", locked_at=None, last_error=error[:2000],
                attempts=_TABLE.c.attempts + 1)
    )


def mark_retry(conn: Connection, row_id: int, error: str, at: datetime) -> None:
    conn.execute(
        update(_TABLE)
        .where(_TABLE.c.id == row_id)
        .values(status="queued", locked_at=None, last_error=error[:2000],
                attempts=_TABLE.c.attempts + 1, next_attempt_at=at)
    )


def retry(session: Session, now: datetime, row_id: int | None = None) -> int:
    """Queue a failed (or suppressed) row again, or every failed row."""
    stmt = update(Outbox).values(status="queued", next_attempt_at=now, attempts=0, last_error="")
    if row_id is None:
        stmt = stmt.where(Outbox.status == "failed")  # type: ignore[arg-type]
    else:
        stmt = stmt.where(Outbox.id == row_id, Outbox.status.in_(("failed", "suppressed")))  # type: ignore[arg-type, attr-defined]
    result = session.exec(stmt)
    return int(result.rowcount or 0)
