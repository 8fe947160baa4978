"""Profile the ingest path in-process: ``Daemon(app).once()`` under cProfile.

``asyncio.to_thread`` is replaced by an inline call for the run, so the
pipeline (which the daemon runs in a worker thread) is profiled in the main
thread too; cProfile sees one thread only. Phase times (fetch, process,
acknowledge, SLA pass, sending) are measured by wrapping those methods.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bench import corpus, servers
from bench.report import RESULTS
from tests.support.config import make_app, write_config
from tests.support.dovecot import ImapAccount

T = TypeVar("T")


async def _inline(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    return func(*args, **kwargs)


class Phases:
    """Wall time per phase, collected by wrapping bound methods."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap_async(self, obj: object, name: str, label: str) -> None:
        method: Callable[..., Awaitable[Any]] = getattr(obj, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t0

        setattr(obj, name, timed)

    def wrap(self, obj: object, name: str, label: str) -> None:
        method: Callable[..., Any] = getattr(obj, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t0

        setattr(obj, name, timed)


def _count_database_work(app: Any, daemon: Any) -> dict[str, int]:
    """Count SQL statements, flushes and commits, split between the pipeline
    and the outbox sender, with SQLAlchemy events."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    counts: dict[str, int] = defaultdict(int)
    where = {"phase": "other"}

    def on_execute(*_args: Any) -> None:
        counts[f"{where['phase']} statements"] += 1

    def on_flush(*_args: Any) -> None:
        counts[f"{where['phase']} flushes"] += 1

    def on_commit(*_args: Any) -> None:
        counts[f"{where['phase']} commits"] += 1

    event.listen(app.engine, "before_cursor_execute", on_execute)
    event.listen(Session, "after_flush", on_flush)
    event.listen(app.engine, "commit", on_commit)

    def in_phase(obj: object, name: str, phase: str, is_async: bool) -> None:
        method = getattr(obj, name)
        if is_async:
            async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
                where["phase"] = phase
                try:
                    result = await method(*args, **kwargs)
                finally:
                    where["phase"] = "other"
                if phase == "send":
                    counts["sent"] += int(result or 0)
                return result
            setattr(obj, name, wrapped_async)
        else:
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                where["phase"] = phase
                try:
                    return method(*args, **kwargs)
                finally:
                    where["phase"] = "other"
            setattr(obj, name, wrapped)

    for ingester in daemon.ingesters:
        in_phase(ingester.pipeline, "process", "ingest", False)
    in_phase(daemon.sender, "send_due", "send", True)
    return counts


def profile_once(account: ImapAccount, db_url: str, folder: Path, *, use_profiler: bool = True
                 ) -> tuple[pstats.Stats | None, dict[str, float], float, int]:
    from helpdesk.daemon import Daemon
    from helpdesk.ingest import pipeline as pipeline_module

    config = write_config(folder, db_url=db_url, inbound=servers.imap_inbound(account),
                          outbound={"kind": "maildir", "path": str(folder / "sent")})
    app = make_app(config)
    daemon = Daemon(app)
    phases = Phases()
    for ingester in daemon.ingesters:
        phases.wrap_async(ingester.source, "fetch", "IMAP fetch (SEARCH, SIZE, BODY)")
        phases.wrap_async(ingester.source, "acknowledge", "IMAP acknowledge (UID MOVE)")
        phases.wrap(ingester.pipeline, "_one", "store+classify+thread+apply (_one)")
    original_parse = pipeline_module.parse_fetched
    phases.wrap(pipeline_module, "parse_fetched", "parse (parse_fetched)")
    counts = _count_database_work(app, daemon)
    phases.wrap_async(daemon, "sla_pass", "SLA pass")
    phases.wrap_async(daemon.sender, "send_due", "outbox sending")
    original = asyncio.to_thread
    asyncio.to_thread = _inline
    profiler = cProfile.Profile() if use_profiler else None
    try:
        t0 = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        outcomes = asyncio.run(daemon.once())
        if profiler is not None:
            profiler.disable()
        total = time.perf_counter() - t0
    finally:
        asyncio.to_thread = original
        pipeline_module.parse_fetched = original_parse
        app.dispose()
    stats = pstats.Stats(profiler) if profiler is not None else None
    n = max(1, len(outcomes))
    print(f"   database work per message, ingest (Pipeline.process): "
          f"{counts['ingest statements'] / n:.1f} statements, "
          f"{counts['ingest flushes'] / n:.1f} flushes; sending: "
          f"{counts['send statements'] / max(1, counts['sent']):.1f} statements and "
          f"{counts['send commits'] / max(1, counts['sent']):.2f} transactions per mail sent "
          f"({counts['sent']} sent)")
    return stats, dict(phases.seconds), total, len(outcomes)


def top(stats: pstats.Stats, total: float, limit: int = 40, key: str = "cumulative"
        ) -> list[tuple[str, int, float, float, float]]:
    """(function, calls, own s, cumulative s, cumulative share) sorted by ``key``."""
    rows: list[tuple[str, int, float, float, float]] = []
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in raw.items():
        where = _short(filename)
        rows.append((f"{where}:{line}({func})", nc, tt, ct, ct / total if total else 0.0))
    index = 3 if key == "cumulative" else 2
    rows.sort(key=lambda r: r[index], reverse=True)
    return rows[:limit]


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def run(n: int = 1000, db: str = "sqlite", limit: int = 45, seed: int = 3,
        out: Path | None = None) -> dict[str, Any]:
    print(f"\n== profile: Daemon.once() over {n} messages on {db} (cProfile, in-process)",
          flush=True)
    mails = corpus.generate(n, seed=seed, tag="p")
    with servers.dovecot() as server, servers.workdir("profile") as folder:
        account = servers.new_account(server)
        servers.append_all(account, [m.raw for m in mails])
        with servers.database(db, folder) as url:
            stats, phases, total, processed = profile_once(account, url, folder)
    assert stats is not None
    print(f"   {processed} messages in {total:.1f} s under cProfile "
          f"({processed / total:,.1f} msg/s, profiler overhead included)")
    print("   phases (wall time, share of the run):")
    for label, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"     {label:<40} {seconds:8.2f} s  {seconds / total:6.1%}")
    rows = top(stats, total, limit)
    print(f"   top {limit} functions by cumulative time:")
    print(f"     {'cum %':>6} {'cum s':>8} {'own s':>8} {'calls':>9}  function")
    for name, calls, own, cum, share in rows:
        print(f"     {share:6.1%} {cum:8.2f} {own:8.2f} {calls:9d}  {name}")
    own_rows = top(stats, total, 25, key="own")
    print("   top 25 by own time:")
    for name, calls, own, cum, _share in own_rows:
        print(f"     {own / total:6.1%} {own:8.2f} {cum:8.2f} {calls:9d}  {name}")
    out = out or RESULTS / f"profile-{db}.pstats"
    out.parent.mkdir(parents=True, exist_ok=True)
    stats.dump_stats(str(out))
    text = io.StringIO()
    pstats.Stats(str(out), stream=text).sort_stats("cumulative").print_stats(80)
    out.with_suffix(".txt").write_text(text.getvalue())
    print(f"   full profile: {out} (and .txt)")
    return {"n": processed, "seconds": total, "phases": phases,
            "top": [r[:1] + r[1:] for r in rows]}


# -- py-spy: the real subprocess, sampled (no tracing overhead) ------------------

PHASES = (  # (label, frame marker); the first marker found from the root wins
    ("IMAP fetch", "ImapSource.fetch ("),
    ("IMAP acknowledge (MOVE)", "ImapSource.acknowledge ("),
    ("parse (parse_fetched)", "parse_fetched ("),
    ("store + apply (Pipeline._one)", "Pipeline._one ("),
    ("batch commit (Pipeline.process)", "Pipeline.process ("),
    ("SLA pass", "SlaTicker.run_pass ("),
    ("outbox: claim", "OutboxSender._claim ("),
    ("outbox: record sent (one transaction per batch)", "OutboxSender._record ("),
    ("outbox: write the mail (transport)", "Transport._deliver_all ("),
    ("start-up: imports, config, schema check", "<module> (<string>"),
)
DB_MARKERS = (  # where database time goes, by innermost marker
    ("COMMIT (driver; SQLite: WAL write, PostgreSQL: WAL fsync)", "DefaultDialect.do_commit ("),
    ("connection close (SQLite: checkpoint of the WAL)", "DefaultDialect.do_close ("),
    ("connection set-up (NullPool connect + PRAGMAs)", "Pool._create_connection ("),
    ("statement execution (driver)", "DefaultDialect.do_execute"),
    ("psycopg round trips (execute)", "Cursor.execute (psycopg"),
)


def _is_idle(frames: list[str]) -> bool:
    leaf = frames[-1] if frames else ""
    return (leaf.startswith("_worker (concurrent/futures/thread.py")
            or "Selector.select (selectors.py" in leaf
            or leaf.startswith("Thread._wait_for_tstate_lock"))


def analyse_spy(path: Path, limit: int = 45) -> dict[str, Any]:
    """Wall-time shares from py-spy's raw output (``--idle --threads``):
    samples of threads waiting for work (the idle event loop, idle pool
    workers) are dropped; the rest is time something was being done."""
    inclusive: dict[str, int] = defaultdict(int)
    own: dict[str, int] = defaultdict(int)
    phases: dict[str, int] = defaultdict(int)
    db: dict[str, int] = defaultdict(int)
    busy = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")[1:]
        if _is_idle(frames):
            idle += n
            continue
        busy += n
        names = [f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in frames]
        for name in set(names):
            inclusive[name] += n
        own[names[-1] if names else "?"] += n
        joined = ";".join(frames)
        phase = next((label for label, marker in PHASES if marker in joined),
                     "thread hand-offs (asyncio.to_thread) and unattributed")
        if phase == "start-up: imports, config, schema check" and "Daemon.once (" in joined:
            phase = "other (event loop, logging)"
        phases[phase] += n
        inner = max(((joined.rfind(m), label) for label, m in DB_MARKERS), default=(-1, ""))
        if inner[0] >= 0:
            db[inner[1]] += n
    def share(table: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, v / busy) for k, v in sorted(table.items(), key=lambda kv: -kv[1])]

    return {"busy_samples": busy, "idle_samples": idle, "phases": share(phases),
            "db": share(db), "inclusive": share(inclusive)[:limit],
            "own": share(own)[:25]}


def py_spy(n: int = 1000, db: str = "sqlite", rate: int = 250, seed: int = 3,
           limit: int = 45) -> dict[str, Any]:
    """Run the real ``helpdesk run --once`` over ``n`` messages under py-spy."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(binary).exists():
        print("   py-spy is not installed (pip install py-spy); skipped")
        return {}
    print(f"\n== py-spy: helpdesk run --once over {n} messages on {db} "
          f"({rate} samples/s, all threads)", flush=True)
    mails = corpus.generate(n, seed=seed, tag="y")
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / f"py-spy-{db}.txt"
    with servers.dovecot() as server, servers.workdir("py-spy") as folder:
        account = servers.new_account(server)
        servers.append_all(account, [m.raw for m in mails])
        with servers.database(db, folder) as url:
            config = write_config(folder, db_url=url, inbound=servers.imap_inbound(account),
                                  outbound={"kind": "maildir", "path": str(folder / "sent")})
            servers.upgrade(config, folder / "upgrade.log")
            t0 = time.perf_counter()
            with (folder / "run.log").open("wb") as err:
                subprocess.run([binary, "record", "--format", "raw", "--idle", "--threads",
                                "-r", str(rate), "-o", str(raw), "--",
                                *servers.CLI, "--config", str(config), "run", "--once"],
                               stdout=subprocess.DEVNULL, stderr=err, check=True)
            took = time.perf_counter() - t0
    result = analyse_spy(raw, limit)
    print(f"   {n} messages in {took:.1f} s under py-spy ({n / took:.1f} msg/s); "
          f"raw stacks: {raw}")
    print("   wall time by phase (busy samples; waiting-for-work samples dropped):")
    for label, frac in result["phases"]:
        print(f"     {frac:6.1%}  {label}")
    print("   database time by kind (share of all busy samples):")
    for label, frac in result["db"]:
        print(f"     {frac:6.1%}  {label}")
    print(f"   top {limit} functions, inclusive:")
    for name, frac in result["inclusive"]:
        print(f"     {frac:6.1%}  {name}")
    print("   top 25, own time:")
    for name, frac in result["own"]:
        print(f"     {frac:6.1%}  {name}")
    return result | {"seconds": took, "n": n}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Profile the ingest path (cProfile).")
    p.add_argument("-n", "--messages", type=int, default=1000)
    p.add_argument("--db", choices=servers.DB_KINDS, default="sqlite")
    p.add_argument("--limit", type=int, default=45)
    p.add_argument("--py-spy", action="store_true",
                   help="sample the real subprocess with py-spy instead of cProfile")
    args = p.parse_args(argv)
    if args.py_spy:
        py_spy(args.messages, args.db, limit=args.limit)
    else:
        run(args.messages, args.db, args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
