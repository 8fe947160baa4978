"""Benchmark 3: one SLA pass over a large database.

The ticket table is seeded with 1,000,000 tickets (default), 100,000 of them
open, in bulk (one executemany transaction for SQLite, COPY for PostgreSQL,
secondary indexes dropped during the load and rebuilt, then ANALYZE). Open
tickets get their deadlines and ``next_sla_at`` from the pure SLA functions
(``compute_sla`` and ``next_wakeup``) for their priority, plan and age, all
in the future; each open ticket also has its "created" event.

The app runs on a ManualClock fixed at a Wednesday 11:00 UTC (office hours),
so the result does not depend on when the benchmark runs. Then
``SlaTicker(app).run_pass()`` is timed:

* with nothing due: median of 5 passes (the first, cold one is shown too);
* with N notices due (default 1,000): tickets whose first-response warning is
  exactly due now (found with ``due_notices``); the pass composes every
  notice into the outbox. Timed once; the outbox rows are counted.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench import servers
from bench.report import Figure, show
from helpdesk.app import App
from helpdesk.clock import ManualClock
from helpdesk.db import upgrade
from helpdesk.models import Ticket
from helpdesk.settings import load_settings
from helpdesk.sla.deadlines import TicketClock, compute_sla
from helpdesk.sla.notices import due_notices, next_wakeup
from helpdesk.sla.policy import Plan, Priority, SlaPolicy
from helpdesk.sla.tick import SlaTicker
from tests.support.config import write_config

PROFILE = False  # --profile: the due pass under cProfile
NOW = datetime(2026, 11, 25, 11, 0, tzinfo=UTC)  # a Wednesday, in office hours
PRIORITIES = ((Priority.CRITICAL, 2), (Priority.HIGH, 18), (Priority.MEDIUM, 50),
              (Priority.LOW, 30))
PLANS = ((Plan.STANDARD, 80), (Plan.ENHANCED, 15), (Plan.ENTERPRISE, 5))


def _naive(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.astimezone(UTC).replace(tzinfo=None)


def _weighted(rng: random.Random, table: Sequence[tuple[Any, int]]) -> Any:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


class Templates:
    """Open-ticket SLA fields from the pure functions, computed once per
    (priority, plan, age) and reused: the SLA maths is not what is measured."""

    def __init__(self, policy: SlaPolicy, rng: random.Random, count: int = 400) -> None:
        self.future: list[dict[str, Any]] = []
        self.due_one: list[dict[str, Any]] = []
        tries = 0
        while len(self.future) < count and tries < count * 20:
            tries += 1
            priority = _weighted(rng, PRIORITIES)
            plan = _weighted(rng, PLANS)
            age = timedelta(minutes=rng.uniform(1, 60 * 24 * 3))
            fields = self._fields(policy, priority, plan, NOW - age)
            if fields is not None and fields["next_sla_at"] > _naive(NOW + timedelta(minutes=5)):
                self.future.append(fields)
        # Tickets with exactly one notice due at NOW (a first-response warning).
        age_minutes = 1.0
        while len(self.due_one) < 50 and age_minutes < 60 * 24 * 20:
            for priority in (Priority.MEDIUM, Priority.LOW, Priority.HIGH):
                created = NOW - timedelta(minutes=age_minutes)
                clock = TicketClock(created_at=created, priority=priority, plan=Plan.STANDARD)
                state = compute_sla(clock, policy)
                if len(due_notices(state, NOW, set())) == 1:
                    fields = self._fields(policy, priority, Plan.STANDARD, created)
                    if fields is not None:
                        self.due_one.append(fields)
            age_minutes *= 1.07
        if not self.future or not self.due_one:
            raise RuntimeError("could not build SLA templates")

    @staticmethod
    def _fields(policy: SlaPolicy, priority: Priority, plan: Plan, created: datetime
                ) -> dict[str, Any] | None:
        state = compute_sla(TicketClock(created_at=created, priority=priority, plan=plan), policy)
        wake = next_wakeup(state, set())
        if wake is None:
            return None
        return {"priority": priority.value, "plan": plan.value, "created_at": _naive(created),
                "updated_at": _naive(created),
                "first_response_due": _naive(state.first_response.due_at),
                "resolution_due": _naive(state.resolution.due_at),
                "next_sla_at": _naive(wake)}


def _text_time(value: Any) -> Any:
    # SQLAlchemy's SQLite DateTime stores this exact text form; comparisons are textual.
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="microseconds")
    return value


_VARIANT_COLUMNS = ("status", "priority", "plan", "created_at", "updated_at",
                    "first_response_at", "first_response_due", "resolution_due", "resolved_at",
                    "closed_at", "next_sla_at")


def _variants(templates: Templates, rng: random.Random, closed_count: int = 4096
              ) -> dict[str, list[dict[str, Any]]]:
    """Per group ("due", "future", "closed"), the field values tickets cycle through."""
    closed: list[dict[str, Any]] = []
    for _ in range(closed_count):
        created = NOW - timedelta(minutes=rng.uniform(60 * 24 * 4, 60 * 24 * 365 * 3))
        done = created + timedelta(hours=rng.uniform(1, 24 * 10))
        closed.append({
            "status": "closed", "priority": _weighted(rng, PRIORITIES).value,
            "plan": "standard", "created_at": _naive(created), "updated_at": _naive(done),
            "first_response_at": _naive(created + timedelta(minutes=30)),
            "resolved_at": _naive(done), "closed_at": _naive(done),
        })
    return {"due": templates.due_one, "future": templates.future, "closed": closed}


def _drop_indexes(engine: Engine) -> list[str]:
    """Drop the secondary indexes of ticket and event; returns their DDL."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            ddl = [r[0] for r in conn.execute(text(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                "AND tbl_name IN ('ticket', 'event')"))]
        else:
            ddl = [r[0] for r in conn.execute(text(
                "SELECT indexdef FROM pg_indexes WHERE tablename IN ('ticket', 'event') "
                "AND indexdef NOT LIKE '%UNIQUE%'"))]
        for sql in ddl:
            conn.execute(text("DROP INDEX " + sql.split(" INDEX ", 1)[1].split(" ON ")[0]))
    return ddl


def seed(engine: Engine, total: int, open_count: int, due: int, policy: SlaPolicy) -> float:
    """Bulk-load ``total`` tickets (and open tickets' "created" events) with
    one INSERT ... SELECT over a number sequence joined to a small table of
    precomputed variants; returns seconds."""
    rng = random.Random(11)
    groups = _variants(Templates(policy, rng), rng)
    sqlite = engine.dialect.name == "sqlite"
    conv = _text_time if sqlite else (lambda v: v)
    start = time.perf_counter()
    ddl = _drop_indexes(engine)
    variant_rows = [
        {"grp": grp, "k": k, **{c: conv(v.get(c)) for c in _VARIANT_COLUMNS}}
        for grp, items in groups.items() for k, v in enumerate(items)
    ]
    n_due, n_future, n_closed = (len(groups[g]) for g in ("due", "future", "closed"))
    time_type = "TEXT" if sqlite else "TIMESTAMP"
    sequence = (
        f"WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {total})"
        if sqlite else f"WITH seq(i) AS (SELECT generate_series(1, {total}))"
    )
    reference = "printf('HD-%07d', i)" if sqlite else "'HD-' || lpad(i::text, 7, '0')"
    insert = f"""
        {sequence}
        INSERT INTO ticket (id, number, reference, subject, subject_key, requester_addr,
            requester_name, status, priority, priority_source, category, plan, customer,
            region, assignee, created_at, updated_at, first_response_at, first_response_due,
            resolution_due, resolved_at, closed_at, next_sla_at, sla_cycle, escalated,
            escalation_level, escalated_at, last_escalated_at, escalation_trigger,
            escalation_manager, escalation_ack_due, linked_to, mentions)
        SELECT i, i, {reference}, 'Seeded ticket ' || i || ' about the printer',
            'seeded ticket ' || (i % 50000), 'user' || (i % 200000) || '@client' || (i % 997)
            || '.example.org', 'User ' || (i % 200000),
            CASE WHEN v.grp = 'closed' THEN 'closed' WHEN i % 3 = 0 THEN 'open' ELSE 'new' END,
            v.priority, 'default', 'other', v.plan, '', '', '', v.created_at, v.updated_at,
            v.first_response_at, v.first_response_due, v.resolution_due, v.resolved_at,
            v.closed_at, v.next_sla_at, 0, FALSE, 0, NULL, NULL, '', '', NULL, '', ''
        FROM seq JOIN seed_variant v ON
            v.grp = CASE WHEN i <= {due} THEN 'due' WHEN i <= {open_count} THEN 'future'
                         ELSE 'closed' END
            AND v.k = CASE WHEN i <= {due} THEN i % {n_due}
                           WHEN i <= {open_count} THEN i % {n_future} ELSE i % {n_closed} END
    """
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE TEMPORARY TABLE seed_variant (grp VARCHAR(8), k INTEGER, "
            "status VARCHAR(16), priority VARCHAR(16), plan VARCHAR(16), "
            + ", ".join(f"{c} {time_type}" for c in _VARIANT_COLUMNS[3:])
            + ", PRIMARY KEY (grp, k))"))
        conn.execute(text(
            f"INSERT INTO seed_variant (grp, k, {', '.join(_VARIANT_COLUMNS)}) VALUES "
            f"(:grp, :k, {', '.join(':' + c for c in _VARIANT_COLUMNS)})"), variant_rows)
        conn.execute(text(insert))
        conn.execute(text(
            "INSERT INTO event (ticket_id, kind, actor, detail, created_at) "
            "SELECT id, 'created', 'seed', '{}', created_at FROM ticket "
            "WHERE status <> 'closed'"))
        conn.execute(text("DELETE FROM counter WHERE name = 'ticket'"))
        conn.execute(text("INSERT INTO counter (name, value) VALUES ('ticket', :n)"),
                     {"n": total})
        if not sqlite:
            conn.execute(text("SELECT setval(pg_get_serial_sequence('ticket', 'id'), :n)"),
                         {"n": total})
        conn.execute(text("DROP TABLE seed_variant"))
        for sql in ddl:
            conn.execute(text(sql))
    with engine.connect() as conn:
        if sqlite:
            conn.execute(text("ANALYZE"))
            conn.commit()
        else:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    return time.perf_counter() - start


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def run_db(db: str, total: int, open_count: int, due: int, folder: Path) -> list[Figure]:
    with servers.database(db, folder) as url:
        config = write_config(folder, db_url=url)
        app = App.create(load_settings(config, {}), ManualClock(NOW))
        try:
            upgrade(app.engine)
            seconds = seed(app.engine, total, open_count, due, app.policy)
            print(f"   {db}: seeded {total:,} tickets ({open_count:,} open, {due:,} due) "
                  f"in {seconds:.1f} s", flush=True)
            return _measure(app, db, due)
        finally:
            app.dispose()


def _measure(app: App, db: str, due: int) -> list[Figure]:
    ticker = SlaTicker(app)
    clock = app.clock
    assert isinstance(clock, ManualClock)
    # Nothing due: the clock one second before the earliest next_sla_at.
    scheduled = _count(app.engine, "SELECT count(*) FROM ticket WHERE next_sla_at IS NOT NULL")
    clock.set(_first_due(app) - timedelta(seconds=1))
    idle: list[float] = []
    for _ in range(5):
        t0 = time.perf_counter()
        sent = ticker.run_pass()
        idle.append(time.perf_counter() - t0)
        assert sent == 0, f"{sent} notices sent when nothing was due"
    clock.set(NOW)
    outbox_before = _count(app.engine, "SELECT count(*) FROM outbox")
    profiler = cProfile.Profile() if PROFILE else None
    t0 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    sent = ticker.run_pass()
    if profiler is not None:
        profiler.disable()
    busy = time.perf_counter() - t0
    if profiler is not None:
        _print_profile(profiler, busy, db)
    outbox_rows = _count(app.engine, "SELECT count(*) FROM outbox") - outbox_before
    print(f"   {db}: nothing due: median {statistics.median(idle) * 1000:.1f} ms "
          f"(first {idle[0] * 1000:.1f} ms, all {', '.join(f'{x * 1000:.1f}' for x in idle)}); "
          f"{sent} due: {busy:.2f} s, {outbox_rows} outbox rows; "
          f"{scheduled:,} tickets with next_sla_at", flush=True)
    if sent != due:
        print(f"   WARNING: expected {due} notices, the pass sent {sent}")
    return [
        Figure("sla", "pass, nothing due (median of 5)", db, statistics.median(idle) * 1000,
               "ms", "<= 50", extra={"runs_ms": [x * 1000 for x in idle]}),
        Figure("sla", f"pass, {sent:,} notices due", db, busy, "s", "<= 2",
               extra={"sent": sent, "outbox_rows": outbox_rows}),
    ]


def _print_profile(profiler: cProfile.Profile, seconds: float, db: str) -> None:
    from bench.profile import top

    stats = pstats.Stats(profiler)
    total = max(v[3] for v in stats.stats.values())  # type: ignore[attr-defined]
    print(f"   {db}: the due pass under cProfile took {seconds:.2f} s; top functions:")
    for name, calls, own, cum, share in top(stats, total, 400):
        if ("helpdesk/" in name or "do_" in name or "commit" in name) and share >= 0.01:
            print(f"     {share:6.1%} {cum:7.2f} s {own:6.2f} s {calls:7d}  {name}")


def _first_due(app: App) -> datetime:
    from sqlmodel import Session, select

    with Session(app.engine) as session:
        first = session.exec(select(Ticket.next_sla_at)
                             .where(Ticket.next_sla_at.is_not(None))  # type: ignore[union-attr]
                             .order_by(Ticket.next_sla_at).limit(1)).first()  # type: ignore[arg-type]
    assert first is not None
    return first


def run(total: int = 1_000_000, open_count: int = 100_000, due: int = 1000,
        dbs: Sequence[str] = servers.DB_KINDS) -> list[Figure]:
    print(f"\n== sla: one run_pass() over {total:,} tickets ({open_count:,} open)", flush=True)
    figures: list[Figure] = []
    for db in dbs:
        with servers.workdir(f"sla-{db}") as folder:
            figures += run_db(db, total, open_count, due, folder)
    show(figures)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="SLA pass at scale.")
    p.add_argument("--tickets", type=int, default=1_000_000)
    p.add_argument("--open", type=int, default=100_000)
    p.add_argument("--due", type=int, default=1000)
    p.add_argument("--db", choices=servers.DB_KINDS, action="append")
    p.add_argument("--profile", action="store_true", help="profile the due pass (cProfile)")
    args = p.parse_args(argv)
    global PROFILE
    PROFILE = args.profile
    run(args.tickets, args.open, args.due, args.db or servers.DB_KINDS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
