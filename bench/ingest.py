"""Benchmark 1: ingest throughput of ``helpdesk run --once`` against Dovecot.

N messages of the standard mix (see ``bench.corpus``) are APPENDed to a
fresh mailbox (MULTIAPPEND, not timed), then ``helpdesk run --once`` runs as
a subprocess on a fresh database and is timed from start to exit: start-up,
fetch, parse, classify, thread, commit, confirmation queued, IMAP MOVE to
Processed, then the SLA pass and sending the whole outbox into a Maildir
folder. The daemon's "pass finished" log line gives its own split: the
ingest phase (fetched, parsed, committed, confirmation queued, IMAP-moved:
the issue's list), the SLA pass and sending.

With a time budget, a pilot run measures the
rate first (500 messages per database) and N is cut to what fits; the cut
is printed and recorded.

The ceiling is the same mailbox read by a bare UID FETCH (the daemon's aioimaplib client) in
batches of 200 (the daemon's batch size) plus ``parse_email`` on every
message, in one process and one thread, storing nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from bench import corpus, cpu, servers
from bench.report import Figure, show
from helpdesk.ingest.imap import Client, uid_set
from helpdesk.ingest.parse import parse_email
from tests.support.config import write_config
from tests.support.dovecot import Dovecot, ImapAccount

BATCH = 200
TARGETS = {"sqlite": ">= 700", "postgres": ">= 400"}


async def _bare_fetch(account: ImapAccount, batch: int) -> tuple[float, float, int]:
    """(fetch seconds, parse seconds, messages) for the whole INBOX."""
    # The daemon's own client, so the ceiling fetches as the daemon does.
    client = Client(host=account.host, port=account.port, timeout=120)
    await client.wait_hello_from_server()
    await client.login(account.user, account.password)
    await client.select("INBOX")
    response = await client.uid_search("ALL", charset=None)
    uids = sorted(int(t) for line in response.lines[:-1] if isinstance(line, bytes)
                  for t in line.split() if t.isdigit())
    fetch_s = parse_s = 0.0
    n = 0
    for i in range(0, len(uids), batch):
        t0 = time.perf_counter()
        response = await client.uid("fetch", uid_set(uids[i:i + batch]), "(UID BODY.PEEK[])")
        bodies = [bytes(line) for line in response.lines if isinstance(line, bytearray)]
        t1 = time.perf_counter()
        for raw in bodies:
            parse_email(raw)
        t2 = time.perf_counter()
        fetch_s += t1 - t0
        parse_s += t2 - t1
        n += len(bodies)
    await client.logout()
    return fetch_s, parse_s, n


def ceiling(account: ImapAccount, batch: int = BATCH) -> tuple[float, float, int]:
    return asyncio.run(_bare_fetch(account, batch))


def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            q = {
                "tickets": "SELECT count(*) FROM ticket",
                "inbound": "SELECT count(*) FROM inbound_mail",
                "quarantined": "SELECT count(*) FROM inbound_mail WHERE status = 'quarantined'",
                "confirmations": "SELECT count(*) FROM outbox WHERE purpose = 'confirmation'",
                "outbox": "SELECT count(*) FROM outbox",
                "sent": "SELECT count(*) FROM outbox WHERE status = 'sent'",
            }
            return {k: int(conn.execute(text(sql)).scalar_one()) for k, sql in q.items()}
    finally:
        engine.dispose()


def _phases(log: Path) -> dict[str, float]:
    """The daemon's own phase times from its "pass finished" log line:
    ingest (fetch, parse, commit, confirmation queued, IMAP MOVE), the
    periodic jobs (SLA pass) and sending the outbox."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if 'event="pass finished"' in line:
            fields = dict(re.findall(r"(\w+)=(\S+)", line))
            return {k: float(fields[f"{k}_seconds"]) for k in ("ingest", "periodic", "send")}
    return {"ingest": float("nan"), "periodic": float("nan"), "send": float("nan")}


@dataclass(frozen=True)
class Run:
    n: int
    seconds: float
    cpu_seconds: float
    phases: dict[str, float]  # the daemon's ingest, periodic and send seconds
    counts: dict[str, int]
    server_cpu: dict[str, float]  # CPU seconds each server spent during the run

    def cpu_per_message(self) -> dict[str, float]:
        """Milliseconds of CPU per message: the daemon's, then each server's."""
        spent = {"daemon": self.cpu_seconds, **self.server_cpu}
        return {who: seconds * 1000 / self.n for who, seconds in spent.items()}

    @property
    def rate(self) -> float:
        return self.n / self.seconds


def run_once(db: str, mails: Sequence[corpus.Mail], server: Dovecot,
             account: ImapAccount | None = None) -> Run:
    """Time one ``run --once`` over ``mails`` on a fresh mailbox and database."""
    if account is None:
        account = servers.new_account(server)
        servers.append_all(account, [m.raw for m in mails])
    with servers.workdir(f"ingest-{db}") as folder, servers.database(db, folder) as url:
        config = write_config(folder, db_url=url, inbound=servers.imap_inbound(account),
                              outbound={"kind": "maildir", "path": str(folder / "sent")})
        servers.upgrade(config, folder / "upgrade.log")
        # Each server's whole process tree: PostgreSQL's includes its
        # background processes (WAL writer, checkpointer; autovacuum where
        # it is on) and any other database's sessions, so run it alone.
        roots = {"Dovecot": server.master_pid}
        postmaster = servers.postmaster_pid(url) if db == "postgres" else None
        if postmaster is not None:
            roots["PostgreSQL"] = postmaster
            servers.wait_for_no_backends(url)  # the upgrade's and our own look's are gone
        before = {name: cpu.tree_seconds(pid) for name, pid in roots.items()}
        result = servers.helpdesk(config, "run", "--once", log=folder / "run.log")
        if postmaster is not None:
            servers.wait_for_no_backends(url)
        server_cpu = {name: cpu.tree_seconds(pid) - before[name] for name, pid in roots.items()}
        counts = _counts(url)
        phases = _phases(folder / "run.log")
    counts["processed"] = int(result.summary.get("processed", 0))
    left = servers.count(account, "INBOX")
    if counts["processed"] != len(mails) or left:
        raise RuntimeError(f"{db}: processed {counts['processed']} of {len(mails)}; "
                           f"{left} left in INBOX")
    return Run(len(mails), result.seconds, result.cpu_seconds, phases, counts, server_cpu)


def _fits(pilot: Run, budget: float) -> int:
    """How many messages a run of ``budget`` seconds holds, to the hundred.

    Start-up and exit cost the same at any N, so they are taken off once:
    scaling the pilot's whole rate (start-up is a large share of 500
    messages) cut N to about half of what fits."""
    working = sum(pilot.phases.values())
    if math.isnan(working) or working <= 0:  # no "pass finished" line was found
        return int(pilot.rate * budget / 100) * 100
    fixed = max(0.0, pilot.seconds - working)
    return int((budget - fixed) * pilot.n / working / 100) * 100


def run(n: int = 5000, dbs: Sequence[str] = servers.DB_KINDS, seed: int = 1,
        budget: float | None = None, pilot: int = 500) -> list[Figure]:
    """With ``budget`` (seconds per database), a pilot run of ``pilot``
    messages estimates the rate, and N is cut to what fits the budget."""
    print(f"\n== ingest: up to {n:,} messages, run --once, databases {', '.join(dbs)}"
          + (f", {budget:.0f} s budget per database" if budget else ""), flush=True)
    figures: list[Figure] = []
    with servers.dovecot() as server:
        sizes: dict[str, int] = {}
        pilots: dict[str, Run] = {}
        for db in dbs:
            sizes[db] = n
            if budget and n > pilot:
                pilots[db] = run_once(db, corpus.generate(pilot, seed=seed, tag="i"), server)
                fits = _fits(pilots[db], budget)
                sizes[db] = max(pilot, min(n, fits))
                print(f"   {db}: pilot {pilot} messages at {pilots[db].rate:,.1f} msg/s -> "
                      f"N = {sizes[db]:,}" + ("" if sizes[db] == n else
                                              f" (cut from {n:,} to fit the budget)"),
                      flush=True)
        t0 = time.perf_counter()
        mails = corpus.generate(max(sizes.values()), seed=seed, tag="i")
        print(f"   mix: {corpus.describe(mails[:sizes[dbs[0]]])} "
              f"(generated in {time.perf_counter() - t0:.1f} s)", flush=True)
        ceil = float("nan")
        for i, db in enumerate(dbs):
            batch = mails[:sizes[db]]
            account = servers.new_account(server)
            took = servers.append_all(account, [m.raw for m in batch])
            print(f"   {db}: appended {len(batch):,} in {took:.1f} s (MULTIAPPEND, not timed)",
                  flush=True)
            if i == 0:
                fetch_s, parse_s, fetched = ceiling(account)
                ceil = fetched / (fetch_s + parse_s)
                print(f"   ceiling over the same {fetched:,}: bare UID FETCH "
                      f"{fetched / fetch_s:,.0f} msg/s, parse_email {fetched / parse_s:,.0f} "
                      f"msg/s, together {ceil:,.0f} msg/s", flush=True)
                figures.append(Figure("ingest", "ceiling: bare FETCH + parse_email", "-", ceil,
                                      "msg/s", extra={"fetch_s": fetch_s, "parse_s": parse_s,
                                                      "n": fetched}))
            r = run_once(db, batch, server, account)
            p = r.phases
            split = (f"; ingest {p['ingest']:.1f} s, SLA pass {p['periodic']:.2f} s, sending "
                     f"{r.counts['sent']:,} mails {p['send']:.1f} s, start-up and exit "
                     f"{r.seconds - sum(p.values()):.1f} s")
            print(f"   {db}: run --once {r.seconds:.1f} s for {r.n:,} -> {r.rate:,.1f} msg/s "
                  f"({r.n / r.cpu_seconds:,.1f} msg per CPU-second of the daemon){split}; "
                  f"{r.counts}", flush=True)
            per = r.cpu_per_message()
            total = sum(per.values())
            cores = os.cpu_count() or 1
            bound = cores * 1000 / total if total > 0 else float("nan")  # NaN > 0 is false
            spent = ", ".join(f"{who} {ms:.2f}" for who, ms in per.items())
            print(f"   {db}: CPU per message, ms: {spent}; {total:.2f} in all -> {cores} cores "
                  f"at that cost: at most {bound:,.0f} msg/s", flush=True)
            note = f"N={r.n:,}" + ("" if r.n == n else f" (cut from {n:,})")
            extra = {"seconds": r.seconds, "cpu_seconds": r.cpu_seconds,
                     "phase_seconds": r.phases, "n": r.n, **r.counts,
                     "pilot_rate": pilots[db].rate if db in pilots else None}
            figures.append(Figure("ingest", "end to end (run --once)", db, r.rate, "msg/s",
                                  TARGETS[db], note=note, extra=extra))
            figures.append(Figure("ingest", "CPU bound: cores / CPU per message (daemon, servers)",
                                  db, bound, "msg/s", note=f"ms per message: {spent}",
                                  extra={"ms_per_message": per, "cores": cores}))
            moved = r.n / r.phases["ingest"]
            figures.append(Figure("ingest", "fetched .. committed, queued, MOVEd (ingest phase)",
                                  db, moved, "msg/s", TARGETS[db],
                                  note="the daemon's own timing; no start-up, SLA pass, sending"))
            figures.append(Figure("ingest", "end to end / ceiling", db, r.rate / ceil, "ratio",
                                  ">= 0.5" if db == "sqlite" else ""))
            figures.append(Figure("ingest", "ingest phase / ceiling", db, moved / ceil, "ratio",
                                  ">= 0.5" if db == "sqlite" else ""))
    show(figures)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Ingest throughput of run --once.")
    p.add_argument("-n", "--messages", type=int, default=5000)
    p.add_argument("--budget", type=float, default=None,
                   help="seconds per database; N is cut after a pilot run to fit")
    p.add_argument("--db", choices=servers.DB_KINDS, action="append")
    args = p.parse_args(argv)
    run(args.messages, args.db or servers.DB_KINDS, budget=args.budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
