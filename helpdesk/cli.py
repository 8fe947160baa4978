"""The ``helpdesk`` command (I/O shell). JSON output is for scripts: keep it stable."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from helpdesk import db, logs, outbox
from helpdesk.app import App, check
from helpdesk.clock import Clock, OffsetClock, SystemClock
from helpdesk.errors import ConfigError, HelpdeskError, SchemaOutdatedError
from helpdesk.models import (
    AttachmentRow,
    Blob,
    Event,
    InboundMail,
    InboundRaw,
    Message,
    Outbox,
    Quarantine,
    Ticket,
    Undeliverable,
)
from helpdesk.settings import (
    Settings,
    load_settings,
    mask_url,
    masked,
    resolve_config_path,
    secret_warnings,
)
from helpdesk.sla import report_cli
from helpdesk.templates import SHARED_NAMES
from helpdesk.tickets import STATUSES as TICKET_STATUSES
from helpdesk.wire import attachment_name

EX_OK = 0
EX_USAGE = 64
EX_CONFIG = 78
EX_TEMPFAIL = 75


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(_config_path(args), os.environ)
    except ConfigError as exc:
        print(f"helpdesk: configuration error: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "ingest" else EX_CONFIG
    logs.configure(settings.helpdesk.log_level, settings.helpdesk.log_format)
    if args.command == "check-config":
        try:
            check(settings)
        except ConfigError as exc:
            print(f"helpdesk: configuration error: {exc}", file=sys.stderr)
            return EX_CONFIG
        _warn_of_secrets(settings)
        print(json.dumps(masked(settings), indent=2, default=str))
        return EX_OK
    try:
        app = App.create(settings, _clock(os.environ))
    except ConfigError as exc:
        print(f"helpdesk: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    try:
        handler = _HANDLERS[args.command]
        return handler(app, args)
    except BrokenPipeError:
        # Output piped into `head` and the like, which stopped reading: not
        # an error worth a traceback. Further writes go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EX_OK
    except SchemaOutdatedError as exc:
        print(f"helpdesk: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "ingest" else EX_CONFIG
    except ConfigError as exc:
        print(f"helpdesk: configuration error: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "ingest" else EX_CONFIG
    except HelpdeskError as exc:
        print(f"helpdesk: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "ingest" else 1
    except OperationalError as exc:
        if not db.is_connection_error(exc):
            raise  # a statement at fault (no such column, disk full): a bug to report
        # The database cannot be reached (or went away): a temporary failure
        # to report in one line, not a traceback. The driver's message names
        # host and port, never the password; the URL is shown masked.
        reason = str(exc.orig or exc).strip().splitlines()[0]
        print(f"helpdesk: database unavailable ({mask_url(settings.database.url)}): {reason}",
              file=sys.stderr)
        return EX_TEMPFAIL
    finally:
        app.dispose()


def _clock(env: os._Environ[str] | dict[str, str]) -> Clock:
    """``HELPDESK_CLOCK_OFFSET_SECONDS`` shifts the daemon's idea of now, for
    SLA drills and crash tests that start a daemon after a deadline."""
    raw = env.get("HELPDESK_CLOCK_OFFSET_SECONDS", "")
    if not raw:
        return SystemClock()
    try:
        return OffsetClock(timedelta(seconds=float(raw)))
    except ValueError:
        raise ConfigError("HELPDESK_CLOCK_OFFSET_SECONDS", f"{raw!r} is not a number") from None


def _config_path(args: argparse.Namespace) -> Path | None:
    path = resolve_config_path(args.config, os.environ)
    if args.config is None and not os.environ.get("HELPDESK_CONFIG") and not path.exists():
        return None  # embedded defaults
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="helpdesk", description="Email-driven helpdesk daemon.")
    p.add_argument("--config", help="TOML file (default: $HELPDESK_CONFIG or config/helpdesk.toml)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--once", action="store_true", help="process what is waiting, then exit")
    sub.add_parser("check-config", help="validate and print the configuration, secrets masked")
    dbp = sub.add_parser("db", help="database schema")
    dbp.add_argument("action", choices=["upgrade", "status"],
                     help="upgrade: apply the migrations; status: show the revision")
    ing = sub.add_parser("ingest", help="store one RFC 5322 message (MTA delivery)")
    ing.add_argument("file", nargs="?", default="-", help="the message file; - reads stdin")
    q = sub.add_parser("quarantine", help="messages that could not be processed")
    q.add_argument("action", choices=["list", "show", "replay", "dismiss"],
                   help="show, replay or dismiss takes an ID")
    q.add_argument("id", nargs="?", type=int, help="the quarantine id, as list shows it")
    q.add_argument("--all", action="store_true", help="replay every held message")
    q.add_argument("--json", action="store_true", help="list as JSON")
    t = sub.add_parser("tickets", help="list or show tickets")
    t.add_argument("action", choices=["list", "show"], help="show takes a REFERENCE")
    t.add_argument("reference", nargs="?", help="a ticket reference, such as HD-000001")
    t.add_argument("--status", choices=TICKET_STATUSES, help="list only tickets in this status")
    t.add_argument("--json", action="store_true", help="JSON, stable for scripts")
    o = sub.add_parser("outbox", help="outgoing mail")
    o.add_argument("action", choices=["list", "retry"],
                   help="retry sends a failed or held-back mail again")
    o.add_argument("id", nargs="?", type=int, help="the outbox id to retry")
    o.add_argument("--status", choices=outbox.STATUSES, help="list only mail in this status")
    o.add_argument("--failed", action="store_true", help="retry every failed mail")
    o.add_argument("--json", action="store_true", help="list as JSON")
    a = sub.add_parser("attachments", help="save a ticket's attachment to a folder")
    a.add_argument("action", choices=["save"], help="save one attachment")
    a.add_argument("id", type=int, help="the attachment's id, as tickets show lists it")
    a.add_argument("--to", default=".", help="the folder to save into (default: here)")
    u = sub.add_parser("undeliverable",
                       help="addresses that bounced: automatic mail to them is held back")
    u.add_argument("action", choices=["list", "clear"],
                   help="clear lets automatic mail go to ADDRESS again")
    u.add_argument("address", nargs="?", help="the address to clear")
    u.add_argument("--json", action="store_true", help="list as JSON")
    report_cli.add_parser(sub)
    return p


def _ready(app: App) -> None:
    db.ensure_schema(app.engine, app.settings.database)


# -- commands -----------------------------------------------------------------

def cmd_run(app: App, args: argparse.Namespace) -> int:
    from helpdesk.daemon import Daemon

    # A template that does not compile would quarantine every mail that
    # needs it: refuse to start (ConfigError, exit 78), before any migration.
    app.templates.compile_all(SHARED_NAMES)
    _ready(app)
    daemon = Daemon(app)
    if args.once:
        outcomes = asyncio.run(daemon.once())
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        print(json.dumps({"processed": len(outcomes), **counts}))
        return EX_OK
    _print_banner(app.settings)
    _warn_of_secrets(app.settings)
    asyncio.run(daemon.run())
    return EX_OK


def _warn_of_secrets(s: Settings) -> None:
    for warning in secret_warnings(s):
        print(f"helpdesk: warning: {warning}", file=sys.stderr)


def _print_banner(s: Settings) -> None:
    for src in s.inbound:
        if src.kind == "maildir":
            print(f"helpdesk: drop mail into {Path(src.path) / 'new'}/", file=sys.stderr)
        else:
            print(f"helpdesk: reading imap://{src.host}:{src.port}/{src.mailbox}", file=sys.stderr)
    if s.outbound.kind == "maildir":
        print(f"helpdesk: outgoing mail appears in {Path(s.outbound.path) / 'new'}/",
              file=sys.stderr)
    else:
        print(f"helpdesk: sending through smtp://{s.outbound.host}:{s.outbound.port}",
              file=sys.stderr)
    print(f"helpdesk: tickets in {mask_url(s.database.url)}; see `helpdesk tickets list`",
          file=sys.stderr)


def cmd_db(app: App, args: argparse.Namespace) -> int:
    if args.action == "upgrade":
        db.upgrade(app.engine)
    print(json.dumps({"current": db.current_revision(app.engine),
                      "head": db.head_revision(app.engine)}))
    return EX_OK


def cmd_ingest(app: App, args: argparse.Namespace) -> int:
    """Exit 0 once stored (ticket, reply or quarantine); 75 so the MTA retries."""
    from helpdesk.ingest.pipeline import Pipeline
    from helpdesk.ingest.source import Fetched

    limit = app.settings.helpdesk.max_message_size
    try:
        stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
        with stream:
            raw = stream.read(limit + 1)
    except OSError as exc:
        print(f"helpdesk: cannot read {args.file}: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.file == "-" else EX_USAGE
    item = Fetched("pipe", "-", raw[:limit], too_large=len(raw) > limit)
    try:
        _ready(app)
        (outcome,) = Pipeline(app).process([item])
    except Exception as exc:  # anything but "stored" must make the MTA retry
        print(f"helpdesk: not stored, try again later: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    print(json.dumps({"status": outcome.status, "detail": outcome.detail,
                      "reference": outcome.reference}))
    return EX_OK


def cmd_quarantine(app: App, args: argparse.Namespace) -> int:
    from helpdesk.ingest.pipeline import replay

    _ready(app)
    with Session(app.engine) as session:
        if args.action == "list":
            rows = session.exec(select(Quarantine, InboundMail)
                                .join(InboundMail, InboundMail.id == Quarantine.inbound_mail_id)  # type: ignore[arg-type]
                                .order_by(Quarantine.id)).all()  # type: ignore[arg-type]
            items = [_quarantine_json(q, m) for q, m in rows]
            _emit(items, args.json, ("id", "status", "reason", "message_id", "created_at"))
            return EX_OK
        if args.action == "show":
            if args.id is None:
                raise HelpdeskError("quarantine show needs an ID")
            q = session.get(Quarantine, args.id)
            if q is None:
                raise HelpdeskError(f"no quarantined message {args.id}")
            m = session.get(InboundMail, q.inbound_mail_id)
            assert m is not None
            # Only the start is shown: 20,000 characters are at most 80,000
            # bytes of UTF-8, and the database cuts them from a message of
            # any size.
            start = session.exec(select(func.substr(InboundRaw.raw, 1, 80_000))
                                 .where(InboundRaw.inbound_mail_id == m.id)).one()
            # An empty message comes back as NULL (SQLite's substr of a
            # zero-length blob).
            data = _quarantine_json(q, m) | {
                "detail": q.detail,
                "raw": bytes(start or b"").decode("utf-8", "replace")[:20000]}
            print(json.dumps(data, indent=2))
            return EX_OK
    if args.action == "dismiss":
        if args.id is None:
            raise HelpdeskError("quarantine dismiss needs an ID")
        with db.session_scope(app.engine) as session:
            q = session.get(Quarantine, args.id)
            if q is None or q.status != "held":
                raise HelpdeskError(f"no held message {args.id}")
            # Kept, bytes and all, for the record: only no longer waiting.
            q.status = "dismissed"
            session.add(q)
        print(json.dumps({"id": args.id, "status": "dismissed"}))
        return EX_OK
    if args.id is None and not args.all:
        raise HelpdeskError("quarantine replay needs an ID or --all")
    results = replay(app, None if args.all else args.id)
    print(json.dumps(results, indent=2))
    return EX_OK


def _quarantine_json(q: Quarantine, m: InboundMail) -> dict[str, Any]:
    return {"id": q.id, "status": q.status, "reason": q.reason, "message_id": m.message_id,
            "source": m.source, "size": m.size, "created_at": _iso(q.created_at)}


def cmd_tickets(app: App, args: argparse.Namespace) -> int:
    from helpdesk.tickets import get_by_reference

    _ready(app)
    with Session(app.engine) as session:
        if args.action == "list":
            query = select(Ticket).order_by(Ticket.id)  # type: ignore[arg-type]
            if args.status:
                query = query.where(Ticket.status == args.status)
            items = [ticket_json(t) for t in session.exec(query).all()]
            _emit(items, args.json, ("reference", "status", "priority", "requester", "subject"))
            return EX_OK
        if not args.reference:
            raise HelpdeskError("tickets show needs a reference")
        ticket = get_by_reference(session, args.reference)
        if ticket is None:
            raise HelpdeskError(f"no ticket {args.reference}")
        data = ticket_detail_json(session, ticket)
        if args.json:
            _print_json(data)
        else:
            _print_ticket(data)
        return EX_OK


def ticket_json(t: Ticket) -> dict[str, Any]:
    return {
        "reference": t.reference,
        "subject": t.subject,
        "requester": t.requester_addr,
        "requester_name": t.requester_name,
        "status": t.status,
        "priority": t.priority,
        "priority_source": t.priority_source,
        "category": t.category,
        "plan": t.plan,
        "assignee": t.assignee,
        "escalated": t.escalated,
        "escalation_level": t.escalation_level,
        "escalation_manager": t.escalation_manager,
        "created_at": _iso(t.created_at),
        "updated_at": _iso(t.updated_at),
        "first_response_at": _iso(t.first_response_at),
        "first_response_due": _iso(t.first_response_due),
        "resolution_due": _iso(t.resolution_due),
        "linked_to": t.linked_to,
        "mentions": [m for m in t.mentions.split(",") if m],
    }


def ticket_detail_json(session: Session, t: Ticket) -> dict[str, Any]:
    from helpdesk.tickets import participants

    assert t.id is not None
    messages = session.exec(select(Message).where(Message.ticket_id == t.id)
                            .order_by(Message.id)).all()  # type: ignore[arg-type]
    events = session.exec(select(Event).where(Event.ticket_id == t.id)
                          .order_by(Event.id)).all()  # type: ignore[arg-type]
    files: dict[int, list[dict[str, Any]]] = {}
    for a in session.exec(
        select(AttachmentRow).join(Message, AttachmentRow.message_id == Message.id)  # type: ignore[arg-type]
        .where(Message.ticket_id == t.id).order_by(AttachmentRow.id)  # type: ignore[arg-type]
    ).all():
        files.setdefault(a.message_id, []).append(
            {"id": a.id, "filename": a.filename, "content_type": a.content_type,
             "size": a.size})
    return ticket_json(t) | {
        "participants": [{"address": p.addr, "name": p.name, "role": p.role}
                         for p in participants(session, t.id).values()],
        "messages": [
            {
                "direction": m.direction,
                "kind": m.kind,
                "from": m.from_addr,
                "to": [a for a in m.to_addrs.split("\n") if a],
                "cc": [a for a in m.cc_addrs.split("\n") if a],
                "subject": m.subject,
                "body": m.body,
                "message_id": m.message_id,
                "created_at": _iso(m.created_at),
                "attachments": files.get(m.id or 0, []),
            }
            for m in messages
        ],
        "events": [
            {"kind": e.kind, "actor": e.actor, "detail": json.loads(e.detail or "{}"),
             "created_at": _iso(e.created_at)}
            for e in events
        ],
    }


# Client text reaches an operator's terminal: ESC and the other C0 and C1
# controls (ECMA-48) would let a mail move the cursor, clear the screen or
# set the clipboard (OSC 52). They are shown as U+FFFD; newlines and tabs stay.
_CONTROLS_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# JSON escapes C0 itself (RFC 8259 §7) but may leave C1 as it is.
_C1_ESCAPES = {c: f"\\u{c:04x}" for c in range(0x80, 0xA0)}


def shown(value: object) -> str:
    """``value`` as text safe to print to a terminal."""
    return _CONTROLS_RE.sub("\ufffd", str(value))


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False).translate(_C1_ESCAPES))


def _print_ticket(data: dict[str, Any]) -> None:
    for key in ("reference", "subject", "requester", "status", "priority", "category", "plan",
                "assignee", "first_response_due", "resolution_due", "escalated"):
        print(f"{key:>20}: {shown(data[key])}")
    for m in data["messages"]:
        print(shown(f"\n--- {m['created_at']} {m['direction']} {m['kind']} from {m['from']}"))
        print(shown(m["body"]))
        for a in m["attachments"]:
            print(shown(f"[attachment {a['id']}: {a['filename'] or '(no name)'}, "
                        f"{a['content_type']}, {a['size']} bytes]"))


def cmd_outbox(app: App, args: argparse.Namespace) -> int:
    _ready(app)
    now = app.clock.now()
    if args.action == "retry":
        if args.id is None and not args.failed:
            raise HelpdeskError("outbox retry needs an ID or --failed")
        with db.session_scope(app.engine) as session:
            n = outbox.retry(session, now, None if args.failed else args.id)
        if not n and not args.failed:
            raise HelpdeskError(f"no failed or suppressed outbox row {args.id}")
        print(json.dumps({"requeued": n}))
        return EX_OK
    with Session(app.engine) as session:
        query = select(Outbox).order_by(Outbox.id)  # type: ignore[arg-type]
        if args.status:
            query = query.where(Outbox.status == args.status)
        items = [
            {"id": r.id, "status": r.status, "purpose": r.purpose,
             "to": ", ".join(a for a in r.recipients.split("\n") if a) or r.rcpt,
             "automatic": r.automatic, "attempts": r.attempts, "message_id": r.message_id,
             "last_error": r.last_error, "created_at": _iso(r.created_at),
             "sent_at": _iso(r.sent_at)}
            for r in session.exec(query).all()
        ]
    _emit(items, args.json, ("id", "status", "purpose", "to", "attempts", "last_error"))
    return EX_OK


def cmd_attachments(app: App, args: argparse.Namespace) -> int:
    """Write one attachment to ``--to``, under a name of our making: its id,
    then the sender's name cut to a plain file name. The sender's name is
    never a path (no folder part, no leading dot), and nothing is overwritten."""
    _ready(app)
    with Session(app.engine) as session:
        row = session.get(AttachmentRow, args.id)
        blob = session.get(Blob, row.sha256) if row is not None else None
        if row is None or blob is None:
            raise HelpdeskError(f"no attachment {args.id}")
        safe = _SAFE_FILE_RE.sub("_", attachment_name(row.filename)).lstrip(".")[:100]
        path = Path(args.to) / f"{row.id}-{safe or 'attachment'}"
        try:
            with open(path, "xb") as out:
                out.write(blob.data)
        except FileExistsError:
            raise HelpdeskError(f"{path} exists already") from None
    print(json.dumps({"saved": str(path), "size": len(blob.data)}))
    return EX_OK


# A saved file's name: letters, digits and a few marks; the rest becomes "_".
_SAFE_FILE_RE = re.compile(r"[^A-Za-z0-9._+-]")


def cmd_undeliverable(app: App, args: argparse.Namespace) -> int:
    _ready(app)
    now = app.clock.now()
    with db.session_scope(app.engine) as session:
        if args.action == "clear":
            if not args.address:
                raise HelpdeskError("undeliverable clear needs an ADDRESS")
            row = session.get(Undeliverable, args.address.strip().lower())
            if row is None:
                raise HelpdeskError(f"{args.address} is not held back")
            session.delete(row)
            print(json.dumps({"cleared": row.addr}))
            return EX_OK
        query = (select(Undeliverable).where(Undeliverable.until > now)
                 .order_by(Undeliverable.addr))
        items = [{"address": r.addr, "until": _iso(r.until), "reason": r.reason}
                 for r in session.exec(query).all()]
    _emit(items, args.json, ("address", "until", "reason"))
    return EX_OK


def _emit(items: list[dict[str, Any]], as_json: bool, columns: Sequence[str]) -> None:
    if as_json:
        _print_json(items)
        return
    widths = {c: max([len(c), *(len(shown(i.get(c, ""))[:60]) for i in items)]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for item in items:
        print("  ".join(shown(item.get(c, ""))[:60].ljust(widths[c]) for c in columns))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


_HANDLERS = {
    "run": cmd_run,
    "db": cmd_db,
    "ingest": cmd_ingest,
    "quarantine": cmd_quarantine,
    "tickets": cmd_tickets,
    "outbox": cmd_outbox,
    "undeliverable": cmd_undeliverable,
    "attachments": cmd_attachments,
    "sla": report_cli.cmd_sla,
}
