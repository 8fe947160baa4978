"""Telling the team of mail held in quarantine.

Held mail nobody hears of is mail lost to the team. One notice an hour at
most lists every hold not yet told of: a flood of bad mail must not become
a flood of mail. It is sent where a mail is held, in that mail's
transaction, and by a periodic pass, which tells of holds that came in the
hour after a notice and were followed by nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32

from sqlalchemy import func
from sqlmodel import Session, col, select

from helpdesk import notify, outbox
from helpdesk.app import App
from helpdesk.db import session_scope
from helpdesk.ingest.headers import clean_line, decode_value
from helpdesk.models import InboundMail, InboundRaw, Outbox, Quarantine

NOTICE_GAP = timedelta(hours=1)
MAX_LISTED = 20
MAX_CLAIMED = 5_000  # a flood's holds beyond this are in the next notice
PURPOSE = "quarantine_notice"
_HEADER_BYTES = 65_536  # a hold is described by its header block alone


def tell_team(app: App, session: Session, now: datetime) -> bool:
    """Queue a notice of the holds not yet told of, unless one went out
    within the hour; True when one was queued.

    The holds are claimed (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite
    writes one transaction at a time) and marked told in this transaction:
    two daemons never list one hold twice, and a hold committed after a
    notice was made is in the next.
    """
    last = session.exec(select(func.max(Outbox.created_at)).where(Outbox.purpose == PURPOSE)
                        ).one()
    if last is not None and now - last < NOTICE_GAP:
        return False
    rows = session.exec(
        select(Quarantine, InboundMail)
        .join(InboundMail, col(InboundMail.id) == Quarantine.inbound_mail_id)
        .where(Quarantine.status == "held", col(Quarantine.notified_at).is_(None))
        .order_by(col(Quarantine.id))
        .limit(MAX_CLAIMED)
        .with_for_update(skip_locked=True, of=Quarantine)
    ).all()
    if not rows:
        return False
    holds = [_described(session, q, m) for q, m in rows[:MAX_LISTED]]
    for q, _ in rows:
        q.notified_at = now
        session.add(q)
    count = len(rows)
    notice = notify.team_notice(
        app, PURPOSE, now, {"holds": holds, "count": count, "more": count - len(holds)},
        subject=(f"Mail held in quarantine: {holds[0]['reason']}" if count == 1
                 else f"{count} mails held in quarantine"),
    )
    outbox.enqueue(session, app.settings.outbound, notice, now, rate_limited=False)
    return True


def run_pass(app: App) -> int:
    """The periodic pass: 1 when a notice was queued."""
    with session_scope(app.engine) as session:
        return int(tell_team(app, session, app.clock.now()))


def _described(session: Session, held: Quarantine, mail: InboundMail) -> dict[str, object]:
    start = session.exec(select(func.substr(InboundRaw.raw, 1, _HEADER_BYTES))
                         .where(InboundRaw.inbound_mail_id == mail.id)).first()
    fields = BytesHeaderParser(policy=compat32).parsebytes(bytes(start or b""))
    return {
        "id": held.id, "reason": held.reason, "detail": held.detail[:300],
        "message_id": mail.message_id,
        "sender": clean_line(decode_value(fields.get("from", "")))[:200],
        "subject": clean_line(decode_value(fields.get("subject", "")))[:200],
    }
