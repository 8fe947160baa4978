"""``helpdesk sla report [--since DATE] [--json]`` (I/O shell).

Kept out of ``helpdesk/cli.py`` so the SLA report can change without touching
the main command; ``cli.py`` calls :func:`add_parser` while building its
parser and maps the ``sla`` command to :func:`cmd_sla`.
"""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from sqlmodel import Session

from helpdesk.app import App
from helpdesk.db import ensure_schema
from helpdesk.sla.report import build_report, render_table, report_json
from helpdesk.sla.report_query import load_report_rows

EX_OK = 0


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``sla`` command to the main parser's subcommands."""
    sla = subparsers.add_parser("sla", help="service-level figures")
    sla.add_argument("action", choices=["report"],
                     help="per priority and plan: met, breached, at risk")
    sla.add_argument("--since", type=_date, metavar="YYYY-MM-DD",
                     help="only tickets opened on or after this day (in the helpdesk's "
                          "timezone); default: all tickets")
    sla.add_argument("--json", action="store_true", help="machine-readable output")
    return sla


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        # argparse turns this into "argument --since: ..." and exit status 2.
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-30") from None


def start_of_day(day: date, tz: str) -> datetime:
    """Local midnight of ``day`` in ``tz``, as an aware datetime."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(tz))


def cmd_sla(app: App, args: argparse.Namespace) -> int:
    ensure_schema(app.engine, app.settings.database)
    tz = app.settings.helpdesk.timezone
    now = app.clock.now()
    since = start_of_day(args.since, tz) if args.since is not None else None
    with Session(app.engine) as session:
        rows = load_report_rows(session, since)
    report = build_report(rows.tickets, now, app.policy, since=since, skipped=rows.skipped,
                          breaches_told=rows.breaches_told)
    if args.json:
        print(json.dumps(report_json(report), indent=2))
    else:
        print(render_table(report, tz), end="")
    return EX_OK
