"""Benchmark 2: latency of the running daemon, IDLE on and off.

``helpdesk run`` runs as a subprocess against Dovecot and an aiosmtpd
capture, while messages (new requests from distinct senders, 10% with a
100 KB attachment) are APPENDed at a steady rate. Measured per message, all
against the wall clock of this machine (every process shares it):

* APPEND -> committed: the APPEND time is taken when Dovecot answers OK; the
  commit time is when a poller in this process (every 5 ms, its own
  connection) first sees the message's ``inbound_mail`` row, which is written
  in the same transaction as the ticket, so it is visible only once committed.
  ``ticket.created_at`` (the pipeline's clock reading inside the transaction,
  before the commit) is reported alongside.
* APPEND -> confirmation at the SMTP server: the capture's ``received_at`` of
  the confirmation whose In-Reply-To is the appended Message-ID.

The daemon is warmed up with one message (its confirmation awaited) before
measuring. With IDLE off it polls at the default 60 s: a few messages are
appended at spread-out moments of one poll cycle (SQLite only: the database
does not matter to a 60 s wait). The floor is a bare aioimaplib IDLE client:
APPEND OK -> the untagged EXISTS it is pushed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import imaplib
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aioimaplib import aioimaplib
from sqlalchemy import create_engine, text

from bench import corpus, servers
from bench.report import Figure, show
from tests.support.config import write_config
from tests.support.dovecot import Dovecot, ImapAccount, quote
from tests.support.smtpd import SmtpCapture

POLL_EVERY = 0.005
NO_IDLE_POLL = 60.0  # the default poll_interval


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Watcher:
    """Polls ``inbound_mail`` and notes when each Message-ID first shows up."""

    url: str
    seen: dict[str, datetime] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        engine = create_engine(self.url, connect_args={"timeout": 30}
                               if self.url.startswith("sqlite") else {})
        last = 0
        try:
            with engine.connect() as conn:
                while not self._stop.is_set():
                    rows = conn.execute(text(
                        "SELECT id, message_id FROM inbound_mail WHERE id > :last ORDER BY id"),
                        {"last": last}).all()
                    now = datetime.now(UTC)
                    conn.rollback()  # end the read transaction: see later commits
                    for row_id, message_id in rows:
                        self.seen.setdefault(message_id, now)
                        last = max(last, row_id)
                    time.sleep(POLL_EVERY)
        finally:
            engine.dispose()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


class Appender:
    """One persistent imaplib connection; APPEND returns the time of Dovecot's OK."""

    def __init__(self, account: ImapAccount) -> None:
        self.conn = imaplib.IMAP4(account.host, account.port, timeout=30)
        self.conn.login(account.user, account.password)

    def append(self, raw: bytes) -> datetime:
        status, data = self.conn.append(quote("INBOX"), None, None, raw)
        if status != "OK":
            raise RuntimeError(f"APPEND failed: {data!r}")
        return datetime.now(UTC)

    def close(self) -> None:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            self.conn.logout()


@contextlib.contextmanager
def daemon(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as err:
        proc = subprocess.Popen([*servers.CLI, "--config", str(config), "run"],
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _confirmations(smtp: SmtpCapture) -> dict[str, datetime]:
    """In-Reply-To Message-ID -> when the confirmation reached the server (the
    team's new-ticket notice has no In-Reply-To; the confirmation answers the mail)."""
    out: dict[str, datetime] = {}
    for m in smtp.messages:
        parent = email.message_from_bytes(m.raw).get("In-Reply-To")
        if parent:
            out.setdefault(str(parent).strip().strip("<>"), m.received_at)
    return out


def _created_at(url: str) -> dict[str, datetime]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT m.message_id, t.created_at FROM inbound_mail m "
                "JOIN ticket t ON t.id = m.ticket_id")).all()
    finally:
        engine.dispose()
    out: dict[str, datetime] = {}
    for mid, created in rows:
        if isinstance(created, str):
            created = datetime.fromisoformat(created)
        out[mid] = created.replace(tzinfo=UTC) if created.tzinfo is None else created
    return out


@dataclass(frozen=True)
class Series:
    """Latencies in seconds; a message not seen within the run counts as
    infinitely late, so it weighs on the percentiles instead of vanishing."""

    to_commit: list[float]
    to_created: list[float]
    to_confirmation: list[float]
    sent: int
    waited: float  # how long after the last APPEND the run waited for stragglers

    @staticmethod
    def missing(values: Sequence[float]) -> int:
        return sum(1 for v in values if v == float("inf"))


def _wait_for(smtp: SmtpCapture, message_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if message_id in _confirmations(smtp):
            return
        time.sleep(0.05)
    raise TimeoutError(f"no confirmation for {message_id} within {timeout} s")


def measure(db: str, server: Dovecot, *, idle: bool, schedule: Sequence[float],
            tag: str, settle: float = 15.0) -> Series:
    """Run the daemon, APPEND one message at each offset of ``schedule``
    (seconds after the start of measuring), wait up to ``settle`` seconds
    after the last APPEND for every confirmation, collect the latencies."""
    mails = corpus.generate(len(schedule) + 1, seed=5, tag=tag,
                            mix=corpus.Mix(reply_share=0.0, machine_share=0.0))
    warmup, measured = mails[0], mails[1:]
    account = servers.new_account(server)
    with servers.workdir(f"latency-{db}") as folder, servers.database(db, folder) as url, \
            SmtpCapture() as smtp:
        outbound = {"kind": "smtp", "host": "127.0.0.1", "port": smtp.port,
                    "security": "none", "poll_interval": 2}
        config = write_config(folder, db_url=url,
                              inbound=servers.imap_inbound(account, idle=idle),
                              outbound=outbound)
        servers.upgrade(config, folder / "upgrade.log")
        watcher = Watcher(url)
        appender = Appender(account)
        appended: dict[str, datetime] = {}
        try:
            with daemon(config, folder / "daemon.log") as proc:
                if idle:
                    appender.append(warmup.raw)
                    _wait_for(smtp, warmup.message_id, 30)
                else:
                    time.sleep(3)  # connected and through its first (empty) drain
                watcher.start()
                start = time.monotonic()
                for mail, offset in zip(measured, schedule, strict=True):
                    delay = start + offset - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    appended[mail.message_id] = appender.append(mail.raw)
                last_append = time.monotonic()
                while time.monotonic() < last_append + settle:
                    if all(m in _confirmations(smtp) for m in appended):
                        break
                    if proc.poll() is not None:
                        raise RuntimeError("the daemon exited: "
                                           + (folder / "daemon.log").read_text()[-2000:])
                    time.sleep(0.1)
                time.sleep(0.2)
                waited = time.monotonic() - last_append
        finally:
            watcher.stop()
            appender.close()
        confirmed = _confirmations(smtp)
        created = _created_at(url)

    def since(table: dict[str, datetime]) -> list[float]:
        return [(table[m] - at).total_seconds() if m in table else float("inf")
                for m, at in appended.items()]

    return Series(since(watcher.seen), since(created), since(confirmed), len(appended), waited)


async def _floor(account: ImapAccount, rounds: int) -> list[float]:
    client = aioimaplib.IMAP4(host=account.host, port=account.port, timeout=30)
    await client.wait_hello_from_server()
    await client.login(account.user, account.password)
    await client.select("INBOX")
    appender = Appender(account)
    mails = corpus.generate(rounds, seed=9, tag="f",
                            mix=corpus.Mix(reply_share=0.0, machine_share=0.0,
                                           attachment_share=0.0))
    out: list[float] = []
    try:
        for mail in mails:
            idle = await client.idle_start(timeout=60)
            await asyncio.sleep(0.3)  # IDLE is in place ("+ idling")
            appended = await asyncio.to_thread(appender.append, mail.raw)
            while True:
                push = await client.wait_server_push(timeout=10)
                if any(b"EXISTS" in bytes(x) for x in push
                       if isinstance(x, (bytes, bytearray))):
                    break
            out.append((datetime.now(UTC) - appended).total_seconds())
            client.idle_done()
            await asyncio.wait_for(idle, 10)
    finally:
        appender.close()
        await client.logout()
    return out


def _stats(name: str, values: Sequence[float]) -> str:
    if not values:
        return f"{name}: no data"
    seen = [v for v in values if v != float("inf")]
    lost = len(values) - len(seen)
    tail = f", {lost} not seen within the run" if lost else ""
    return (f"{name}: p50 {_s(percentile(values, 50))}, p95 {_s(percentile(values, 95))}, "
            f"p99 {_s(percentile(values, 99))}, max {_s(max(seen, default=float('nan')))} "
            f"(n={len(values)}{tail})")


def _s(value: float) -> str:
    return "never" if value == float("inf") else f"{value:.3f} s"


def _note(values: Sequence[float], waited: float) -> str:
    seen = [v for v in values if v != float("inf")]
    lost = len(values) - len(seen)
    note = f"max {max(seen):.2f} s" if seen else ""
    if lost:
        note += f"; {lost} of {len(values)} not seen {waited:.0f} s after the last APPEND"
    return note


def run(rate: float = 5.0, duration: float = 60.0, dbs: Sequence[str] = servers.DB_KINDS,
        no_idle_messages: int = 3, floor_rounds: int = 12) -> list[Figure]:
    count = int(rate * duration)
    print(f"\n== latency: {count} messages at {rate:g}/s over {duration:g} s, daemon with IDLE; "
          f"then IDLE off ({no_idle_messages} messages, 60 s poll)", flush=True)
    figures: list[Figure] = []
    with servers.dovecot() as server:
        floor = asyncio.run(_floor(servers.new_account(server), floor_rounds))
        print(f"   floor (bare IDLE client, APPEND OK -> EXISTS): {_stats('', floor)[2:]}")
        figures.append(Figure("latency", "floor: APPEND -> IDLE EXISTS, p50", "-",
                              percentile(floor, 50), "s", extra={"values": floor}))
        schedule = [i / rate for i in range(count)]
        for db in dbs:
            s = measure(db, server, idle=True, schedule=schedule, tag=f"l{db[0]}")
            print(f"   {db}, IDLE on, {s.sent} appended:")
            print(f"     {_stats('APPEND -> committed (DB poll)', s.to_commit)}")
            print(f"     {_stats('APPEND -> ticket.created_at', s.to_created)}")
            print(f"     {_stats('APPEND -> confirmation at SMTP', s.to_confirmation)}",
                  flush=True)
            figures += [
                Figure("latency", "IDLE: APPEND -> ticket committed, p50", db,
                       percentile(s.to_commit, 50), "s", "<= 0.6",
                       extra={"values": s.to_commit, "created_at": s.to_created}),
                Figure("latency", "IDLE: APPEND -> ticket committed, p95", db,
                       percentile(s.to_commit, 95), "s"),
                Figure("latency", "IDLE: APPEND -> ticket committed, p99", db,
                       percentile(s.to_commit, 99), "s", "<= 1",
                       note=_note(s.to_commit, s.waited)),
                Figure("latency", "IDLE: APPEND -> confirmation at SMTP, p50", db,
                       percentile(s.to_confirmation, 50), "s"),
                Figure("latency", "IDLE: APPEND -> confirmation at SMTP, p95", db,
                       percentile(s.to_confirmation, 95), "s"),
                Figure("latency", "IDLE: APPEND -> confirmation at SMTP, p99", db,
                       percentile(s.to_confirmation, 99), "s", "<= 2",
                       note=_note(s.to_confirmation, s.waited),
                       extra={"values": s.to_confirmation}),
            ]
        if no_idle_messages:
            spread = [5 + i * 50 / max(1, no_idle_messages - 1) for i in range(no_idle_messages)]
            s = measure("sqlite", server, idle=False, schedule=spread, tag="ln",
                        settle=2 * NO_IDLE_POLL + 10)
            print(f"   sqlite, IDLE off, poll every {NO_IDLE_POLL:.0f} s, {s.sent} appended at "
                  f"{', '.join(f'+{x:.0f} s' for x in spread)} after the daemon's start:")
            print(f"     APPEND -> committed: {', '.join(_s(x) for x in s.to_commit)}")
            print(f"     APPEND -> confirmation: {', '.join(_s(x) for x in s.to_confirmation)}",
                  flush=True)
            seen = [x for x in s.to_commit if x != float("inf")]
            figures.append(Figure(
                "latency", f"IDLE off ({NO_IDLE_POLL:.0f} s poll): APPEND -> committed, mean",
                "sqlite", statistics.fmean(seen) if seen else float("nan"), "s",
                note=f"{len(s.to_commit)} messages; "
                     + ", ".join(f"{x:.0f}" for x in seen) + " s",
                extra={"values": s.to_commit}))
    show(figures)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Latency with IDLE on and off.")
    p.add_argument("--rate", type=float, default=5.0)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--quick", action="store_true", help="15 s per database, no IDLE-off run")
    p.add_argument("--no-idle-messages", type=int, default=3)
    p.add_argument("--db", choices=servers.DB_KINDS, action="append")
    args = p.parse_args(argv)
    duration = 15.0 if args.quick else args.duration
    run(args.rate, duration, args.db or servers.DB_KINDS,
        0 if args.quick else args.no_idle_messages)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
