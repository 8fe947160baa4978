"""The per-message pipeline: store, parse, classify, resolve, apply, in one
transaction per batch with a savepoint per message (I/O shell).

A message that fails on its own is rolled back to its savepoint and
quarantined with its raw bytes and the reason, and the batch carries on. A
failure of the system (the database going away) aborts the whole batch, so
nothing is acknowledged and everything is fetched again later.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from helpdesk import held as held_mail
from helpdesk.app import App
from helpdesk.db import is_connection_error, session_scope
from helpdesk.errors import BadMessageError, SystemUnwellError
from helpdesk.ingest import apply
from helpdesk.ingest.classify import Classification, Kind, classify
from helpdesk.ingest.inbound import InboundEmail
from helpdesk.ingest.parallel import ParsePool
from helpdesk.ingest.reading import parse_result
from helpdesk.ingest.source import Fetched
from helpdesk.logs import log
from helpdesk.models import InboundMail, InboundRaw, Quarantine
from helpdesk.prepared import run
from helpdesk.rows import connection, insert_id_unless_taken, model_table
from helpdesk.streamed import insert_streamed
from helpdesk.threading.tokens import parse_message_id
from helpdesk.workers import may_be_at_it, this_worker

logger = logging.getLogger(__name__)

# Statements run once or twice per message, built once (building a
# statement costs more than SQLite takes to run it).
_INBOUND = model_table(InboundMail)
_FOUND = select(_INBOUND.c.id, _INBOUND.c.status, _INBOUND.c.worker, _INBOUND.c.received_at,
                _INBOUND.c.source, _INBOUND.c.uidvalidity, _INBOUND.c.uid).limit(1)
# Quarantine reason of a message stored whole but above max_message_size.
OVER_MAX_SIZE = "over_max_size"
# How long mail another daemon stored is left for it to move. It moves it
# after its batch commits, which a long batch or a reconnect can delay;
# past this, the storer is taken to be gone (a host down) and anyone moves
# it: the mail itself was stored and answered long before.
LEAVE_FOR = timedelta(minutes=30)
_BY_KEY = _FOUND.where(_INBOUND.c.dedup_key == bindparam("key"))
_BY_KEY_OR_UID = _FOUND.where(or_(
    and_(_INBOUND.c.source == bindparam("source"),
         _INBOUND.c.uidvalidity == bindparam("uidvalidity"),
         _INBOUND.c.uid == bindparam("uid")),
    _INBOUND.c.dedup_key == bindparam("key"),
))
_SET_RESULT = (
    update(_INBOUND)
    .where(_INBOUND.c.id == bindparam("row_id"))
    .values(status=bindparam("new_status"), outcome=bindparam("new_outcome"),
            ticket_id=bindparam("new_ticket_id"))
)


@dataclass(frozen=True)
class Outcome:
    fetched: Fetched
    status: str  # done | ignored | quarantined | duplicate
    detail: str = ""
    reference: str = ""
    # A duplicate that another daemon stored and may still be moving: it is
    # left to that daemon (two sessions moving one message can both copy it).
    left_to: str = ""

    @property
    def to_quarantine(self) -> bool:
        return self.status == "quarantined"

    def without_raw(self) -> Outcome:
        """The same outcome without the message bytes, to keep in a summary."""
        return replace(self, fetched=replace(self.fetched, raw=b""))


@dataclass(frozen=True)
class Parsed:
    fetched: Fetched
    mail: InboundEmail | None
    error: str = ""
    new_text: str | None = None  # the text without quoted history, when known


def dedup_key(message_id: str, sha256: str) -> str:
    """Message-ID plus content hash: the same mail fetched twice (a crash
    before the acknowledgement, a UIDVALIDITY reset) is recognised."""
    return hashlib.sha256(f"{message_id}\0{sha256}".encode()).hexdigest()


def parse_fetched(item: Fetched) -> Parsed:
    return Parsed(item, *parse_result(item))


class Pipeline:
    def __init__(self, app: App) -> None:
        self.app = app
        # The process, and this pipeline in it: two ingesters in one process
        # (two sources, or two daemons in a test) must not take each other's
        # mail for their own.
        self.worker = f"{this_worker()}/{secrets.token_hex(4)}"
        self.parser = ParsePool(parse_result, app.settings.helpdesk.parse_workers)

    def process(self, items: Sequence[Fetched]) -> list[Outcome]:
        """Process a batch in one transaction. Raises SystemUnwellError when the
        database fails; then nothing was committed and nothing may be acked.

        Each message is stored as soon as it is parsed, while workers parse
        the next ones."""
        parsed = zip(items, self.parser.map(items), strict=True)
        try:
            with session_scope(self.app.engine) as session:
                results: list[dict[str, object]] = []
                outcomes = [self._one(session, Parsed(item, *result), results)
                            for item, result in parsed]
                if results:
                    # Every stored message's result in one statement, a
                    # round trip per batch instead of per message.
                    run(connection(session), _SET_RESULT, results)
                return outcomes
        except (OperationalError, DBAPIError) as exc:
            raise SystemUnwellError(f"database failed during a batch: {exc}") from exc

    def close(self) -> None:
        self.parser.close()

    def _one(self, session: Session, parsed: Parsed, results: list[dict[str, object]]
             ) -> Outcome:
        """Store one message and apply it; its inbound row's result is added
        to ``results``, for the caller to write with the batch's."""
        item = parsed.fetched
        now = self.app.clock.now()
        mail = parsed.mail
        message_id = mail.message_id if mail else ""
        sha = mail.sha256 if mail else hashlib.sha256(item.raw).hexdigest()
        key = dedup_key(message_id, sha)
        inbound_id = insert_id_unless_taken(session, InboundMail, {
            "source": item.source,
            "uidvalidity": item.uidvalidity,
            "uid": item.uid,
            "message_id": message_id[:998],
            "sha256": sha,
            "dedup_key": key,
            "size": len(item.raw),
            "status": "pending",
            "outcome": "",
            "error": "",
            "received_at": now,
            "worker": self.worker,
        })
        if inbound_id is None:
            # Its UID or its Message-ID and content are stored already.
            existing = self._existing(session, item, key)
            if existing is None:
                # Taken, yet not there: nothing may be acknowledged.
                raise SystemUnwellError(f"inbound row for {message_id!r} clashed but is gone")
            stored_id, stored_status, worker, received_at, same_uid = existing
            status = "quarantined" if stored_status == "quarantined" else "duplicate"
            # Only the very message it fetched will the storer move: the same
            # bytes under another UID (mail moved back) are nobody else's.
            left_to = worker if same_uid and worker != self.worker and may_be_at_it(
                worker, received_at, now, LEAVE_FOR) else ""
            log(logger, logging.INFO, "already stored", message_id=message_id,
                inbound_id=stored_id, status=stored_status, left_to=left_to)
            return Outcome(item, status, "already stored", left_to=left_to)
        insert_streamed(session, InboundRaw, {"inbound_mail_id": inbound_id, "raw": item.raw},
                        "raw")
        if mail is None:
            return self._quarantine(session, item, inbound_id, message_id,
                                    parsed.error.split(":")[0], parsed.error, now)
        try:
            try:
                with session.begin_nested():
                    result = self._apply(session, mail, inbound_id, item.raw, now,
                                         parsed.new_text)
            except BaseException:
                # The savepoint took back this mail's rows, among them a
                # ticket the session holds as written (helpdesk.rows); drop
                # every object, or the next ticket, given the same id, could
                # not be attached. Earlier mails were flushed already.
                session.expunge_all()
                raise
        except BadMessageError as exc:
            return self._quarantine(session, item, inbound_id, message_id, exc.reason,
                                    str(exc), now)
        except (OperationalError, DBAPIError) as exc:
            if is_connection_error(exc):
                raise
            return self._quarantine(session, item, inbound_id, message_id, "apply_failed",
                                    repr(exc), now)
        except Exception as exc:
            logger.exception("message failed", extra={"message_id": message_id})
            return self._quarantine(session, item, inbound_id, message_id, "apply_failed",
                                    f"{type(exc).__name__}: {exc}", now)
        status = "ignored" if result.ignored else "done"
        results.append({"row_id": inbound_id, "new_status": status,
                        "new_outcome": result.outcome, "new_ticket_id": result.ticket_id})
        log(logger, logging.INFO, "message processed", message_id=message_id,
            ticket=result.reference, outcome=result.outcome)
        return Outcome(item, status, result.outcome, result.reference)

    def _existing(self, session: Session, item: Fetched, key: str
                  ) -> tuple[int, str, str, datetime, bool] | None:
        """(id, status, worker, received_at, whether it is this very UID) of
        the stored copy of this message, if any. Through SQLAlchemy's
        execute, which makes the datetime aware; one statement more only
        for mail stored already."""
        params: dict[str, object] = {"key": key}
        if item.uid is None:
            query = _BY_KEY
        else:
            query = _BY_KEY_OR_UID
            params.update(source=item.source, uidvalidity=item.uidvalidity, uid=item.uid)
        row = connection(session).execute(query, params).first()
        if row is None:
            return None
        same_uid = item.uid is not None and (row.source, row.uidvalidity, row.uid) == (
            item.source, item.uidvalidity, item.uid)
        return int(row.id), str(row.status), str(row.worker), row.received_at, same_uid

    def _apply(self, session: Session, mail: InboundEmail, inbound_id: int, raw: bytes,
               now: datetime, new_text: str | None = None) -> apply.Applied:
        app = self.app
        h = app.settings.helpdesk
        classification = classify(
            mail,
            max_size=h.max_message_size,
            own_addresses=app.own_addresses,
            # Our own Message-IDs are recognised by their signature below, not
            # by domain: staff mail clients often use the company domain too.
            own_domains=frozenset(),
            loop_value=h.loop_value,
            raw=raw,
        )
        if classification.kind is Kind.NORMAL and parse_message_id(
            mail.message_id, h.support_domain, h.secret
        ):
            classification = Classification(Kind.OWN_LOOP, None, "own-message-id")
        if classification.kind is Kind.TOO_LARGE:
            # The whole message is stored (unlike "too_large", where only its
            # start was fetched), so raising the limit and replaying it works.
            raise BadMessageError(OVER_MAX_SIZE)
        return apply.apply_mail(app, session, mail, inbound_id, classification, now, new_text)

    def _quarantine(self, session: Session, item: Fetched, inbound_id: int, message_id: str,
                    reason: str, detail: str, now: datetime) -> Outcome:
        session.execute(
            update(InboundMail)
            .where(col(InboundMail.id) == inbound_id)
            .values(status="quarantined", outcome=reason[:32], error=detail[:4000])
        )
        session.add(Quarantine(inbound_mail_id=inbound_id, reason=reason[:64],
                               detail=detail[:4000], created_at=now))
        # Written before the notice's savepoint, so that taking the notice
        # back never takes the hold with it.
        session.flush()
        log(logger, logging.WARNING, "message quarantined", message_id=message_id,
            reason=reason, detail=detail[:200])
        try:
            with session.begin_nested():
                held_mail.tell_team(self.app, session, now)
        except Exception as exc:
            if isinstance(exc, DBAPIError) and is_connection_error(exc):
                raise
            # A notice is news of the hold, not the hold: a template that
            # fails must not take the batch down with it.
            logger.exception("quarantine notice failed", extra={"message_id": message_id})
        return Outcome(item, "quarantined", reason)

def replay(app: App, quarantine_id: int | None) -> list[dict[str, object]]:
    """Process held messages again (one, or all when ``quarantine_id`` is None).

    Each replay runs in its own transaction; a message that fails again
    stays held with the new reason.
    """
    with session_scope(app.engine) as session:
        query = orm_select(Quarantine.id).where(Quarantine.status == "held")
        if quarantine_id is not None:
            query = orm_select(Quarantine.id).where(Quarantine.id == quarantine_id)
        ids = list(session.exec(query).all())
    if quarantine_id is not None and not ids:
        raise BadMessageError(f"no quarantined message {quarantine_id}")
    return [_replay_one(app, qid) for qid in ids if qid is not None]


def _replay_one(app: App, quarantine_id: int) -> dict[str, object]:
    pipeline = Pipeline(app)
    now = app.clock.now()
    with session_scope(app.engine) as session:
        held = session.get(Quarantine, quarantine_id)
        inbound = session.get(InboundMail, held.inbound_mail_id) if held else None
        stored = session.get(InboundRaw, held.inbound_mail_id) if held else None
        if held is None or inbound is None or stored is None:
            return {"id": quarantine_id, "status": "missing"}
        if held.status != "held":
            return {"id": quarantine_id, "status": held.status}
        if held.reason == "too_large":
            return {"id": quarantine_id, "status": "held",
                    "detail": "only the headers were kept; raise max_message_size and move "
                              "the message from the quarantine mailbox back to the inbox"}
        limit = app.settings.helpdesk.max_message_size
        if held.reason == OVER_MAX_SIZE and len(stored.raw) > limit:
            return {"id": quarantine_id, "status": "held",
                    "detail": f"still {len(stored.raw)} bytes, above helpdesk.max_message_size "
                              f"({limit}); raise it and replay"}
        raw = stored.raw
        parsed = parse_fetched(Fetched(inbound.source, "replay", raw))
        if parsed.mail is None:
            held.detail = parsed.error
            session.add(held)
            return {"id": quarantine_id, "status": "held", "detail": parsed.error}
        try:
            with session.begin_nested():
                assert inbound.id is not None
                result = pipeline._apply(session, parsed.mail, inbound.id, raw, now)
        except Exception as exc:
            held.detail = f"replay failed: {type(exc).__name__}: {exc}"[:4000]
            session.add(held)
            return {"id": quarantine_id, "status": "held", "detail": held.detail}
        inbound.status = "ignored" if result.ignored else "done"
        inbound.outcome = result.outcome
        inbound.ticket_id = result.ticket_id
        held.status = "replayed"
        held.replayed_at = now
        session.add(inbound)
        session.add(held)
        log(logger, logging.INFO, "quarantine replayed", message_id=inbound.message_id,
            ticket=result.reference, outcome=result.outcome)
        return {"id": quarantine_id, "status": "replayed", "outcome": result.outcome,
                "reference": result.reference}
