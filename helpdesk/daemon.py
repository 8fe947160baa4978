"""The daemon: every inbound source, the outbox sender and the periodic jobs
in one asyncio process (I/O shell).

SIGTERM/SIGINT set the stop event: the batch in hand is finished, committed
and acknowledged, then the process exits. Network failures reconnect with
exponential backoff and jitter; nothing is acknowledged before its commit.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from helpdesk import closing, held
from helpdesk.app import App
from helpdesk.errors import SystemUnwellError
from helpdesk.ingest.imap import ImapSource
from helpdesk.ingest.maildir import MaildirSource
from helpdesk.ingest.pipeline import Outcome, Pipeline
from helpdesk.ingest.source import Acknowledgement, Fetched, Source
from helpdesk.logs import log
from helpdesk.sender import OutboxSender
from helpdesk.settings import FETCH_HEADROOM, InboundSettings
from helpdesk.sla.tick import SlaTicker, next_due

logger = logging.getLogger(__name__)

# How often held mail nobody was told of, and tickets long resolved, are
# looked for: a quarantine notice is late by at most this beyond its hour.
HOUSEKEEPING_INTERVAL = 300.0


def make_source(app: App, cfg: InboundSettings) -> Source:
    limit = cfg.max_fetch_bytes or app.settings.helpdesk.max_message_size + FETCH_HEADROOM
    if cfg.kind == "imap":
        return ImapSource(cfg, limit)
    return MaildirSource(cfg.path, limit, poll_interval=min(cfg.poll_interval, 1.0))


class Ingester:
    """Fetch, process, acknowledge, wait: for one source, forever."""

    def __init__(self, app: App, cfg: InboundSettings, source: Source | None = None,
                 on_batch: Callable[[], None] | None = None) -> None:
        self.app = app
        self.cfg = cfg
        self.source = source or make_source(app, cfg)
        self.pipeline = Pipeline(app)
        self.on_batch = on_batch
        self.rng = random.Random()
        self._opened = False

    async def _ensure_open(self) -> None:
        if not self._opened or not getattr(self.source, "is_open", True):
            await self.source.open()
            self._opened = True

    async def drain(self, stop: asyncio.Event | None = None) -> list[Outcome]:
        """Process everything waiting now; returns the outcomes."""
        results: list[Outcome] = []
        # Mail another daemon stored and is moving: not fetched again in
        # this drain, or it would be fetched over and over until moved.
        left: set[str] = set()
        await self._ensure_open()
        batch = await self.source.fetch(self.cfg.batch_size)
        while batch and (stop is None or not stop.is_set()):
            processing = asyncio.ensure_future(asyncio.to_thread(self.pipeline.process, batch))
            ahead: list[Fetched] = []
            try:
                if len(batch) >= self.cfg.batch_size and (stop is None or not stop.is_set()):
                    # The next batch is fetched while this one is stored, so
                    # the IMAP round trips overlap the database work. It is
                    # only read (BODY.PEEK): if this batch fails, it waits.
                    ahead = await self.source.fetch(
                        self.cfg.batch_size, frozenset(f.handle for f in batch) | left)
            finally:
                outcomes = await processing
            # Mail another daemon stored is left to it to move. Where
            # processed mail is only flagged, a second flag is harmless, and
            # setting it now spares fetching that mail again until its
            # storer flags it.
            repeatable = self.source.is_processed_ack_repeatable
            ours: list[Outcome] = []
            for o in outcomes:
                if not o.left_to or (repeatable and not o.to_quarantine):
                    ours.append(o)
                else:
                    left.add(o.fetched.handle)
            await self.source.acknowledge(Acknowledgement(
                processed=tuple(o.fetched for o in ours if not o.to_quarantine),
                quarantined=tuple(o.fetched for o in ours if o.to_quarantine),
            ))
            # Keep what happened, not the mail: a long drain must not hold
            # every message it has processed in memory.
            results.extend(o.without_raw() for o in outcomes)
            if self.on_batch is not None:
                self.on_batch()
            batch = ahead
        return results

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                await self.drain(stop)
                failures = 0
                if stop.is_set():
                    break
                await _until_stop(stop, self.source.wait(self.cfg.poll_interval))
            except Exception as exc:
                failures += 1
                self._opened = False
                delay = min(60.0, 0.5 * 2 ** min(failures, 7)) * self.rng.uniform(0.5, 1.0)
                if isinstance(exc, (SystemUnwellError, OSError, TimeoutError)):
                    log(logger, logging.WARNING, "source failed; reconnecting",
                        source=self.source.key, error=str(exc)[:300], retry_in=round(delay, 2))
                else:
                    # Our own bug: were this task to end, the daemon would
                    # go on sending and checking SLAs but take no mail, and
                    # say nothing. Nothing of the batch was committed.
                    logger.exception("ingest failed; retrying", extra={
                        "source": self.source.key, "retry_in": round(delay, 2)})
                try:
                    await self.source.close()
                except Exception:
                    pass
                await _sleep_or_stop(stop, delay)
        await self.source.close()
        self.pipeline.close()


async def _until_stop(stop: asyncio.Event, waiting: Awaitable[None]) -> None:
    wait_task = asyncio.ensure_future(waiting)
    stop_task = asyncio.ensure_future(stop.wait())
    done, pending = await asyncio.wait({wait_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
    if wait_task in done:
        wait_task.result()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


class Daemon:
    def __init__(self, app: App) -> None:
        self.app = app
        self.sender = OutboxSender(app.engine, app.settings.outbound, app.clock)
        self.ingesters = [
            Ingester(app, cfg, on_batch=self.sender.wakeup.set) for cfg in app.settings.inbound
        ]
        self.ticker = SlaTicker(app)
        self.periodic: list[Callable[[], Awaitable[object]]] = [self.sla_pass,
                                                                    self.housekeeping]
        self.scheduler: AsyncIOScheduler | None = None

    async def sla_pass(self) -> int:
        """One SLA pass; then plan a one-shot wake-up at the next deadline so a
        notice goes out within seconds of its time, not at the next interval."""
        try:
            sent = await asyncio.to_thread(self.ticker.run_pass)
        except Exception:
            logger.exception("sla pass failed")
            return 0
        if sent:
            self.sender.wakeup.set()
        if self.scheduler is not None:
            upcoming = await asyncio.to_thread(next_due, self.app)
            if upcoming is not None:
                # The app clock may be shifted (tests); the scheduler runs on real time.
                real = datetime.now(UTC) + (upcoming - self.app.clock.now())
                self.scheduler.add_job(self.sla_pass, "date", run_date=real, id="sla-wakeup",
                                       replace_existing=True, misfire_grace_time=None)
        return sent

    async def housekeeping(self) -> int:
        """Tell the team of mail held since the last notice, once the hour
        after it is over (helpdesk.held), and close tickets long resolved
        (helpdesk.closing). Each failing alone is logged, not fatal."""
        sent = 0
        for job in (held.run_pass, closing.run_pass):
            try:
                sent += await asyncio.to_thread(job, self.app)
            except Exception:
                logger.exception("housekeeping failed", extra={"job": job.__module__})
        if sent:
            self.sender.wakeup.set()
        return sent

    async def once(self) -> list[Outcome]:
        """Take everything waiting, process it, run one pass of each periodic
        job, send what is due, and return."""
        outcomes: list[Outcome] = []
        started = time.perf_counter()
        for ingester in self.ingesters:
            outcomes.extend(await ingester.drain())
            await ingester.source.close()
            ingester.pipeline.close()
        ingested = time.perf_counter()
        for job in self.periodic:
            await job()
        checked = time.perf_counter()
        sent = 0
        while handled := await self.sender.send_due():
            sent += handled
        await self.sender.transport.close()
        # Where a pass spent its time, for an operator sizing a cron interval.
        log(logger, logging.INFO, "pass finished", messages=len(outcomes), mails_handled=sent,
            ingest_seconds=round(ingested - started, 3),
            periodic_seconds=round(checked - ingested, 3),
            send_seconds=round(time.perf_counter() - checked, 3))
        return outcomes

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        log(logger, logging.INFO, "daemon started",
            sources=",".join(i.source.key for i in self.ingesters))
        tasks = [asyncio.create_task(i.run(stop)) for i in self.ingesters]
        tasks.append(asyncio.create_task(self.sender.run(stop)))
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        # First run at start: notices whose time passed while we were down go now.
        self.scheduler.add_job(self.sla_pass, "interval", seconds=self.app.settings.sla.interval,
                               id="sla", next_run_time=datetime.now(UTC), coalesce=True,
                               max_instances=1)
        self.scheduler.add_job(self.housekeeping, "interval", seconds=HOUSEKEEPING_INTERVAL,
                               id="housekeeping", coalesce=True, max_instances=1)
        self.scheduler.start()
        await stop.wait()
        self.scheduler.shutdown(wait=False)
        await asyncio.gather(*tasks, return_exceptions=True)
        log(logger, logging.INFO, "daemon stopped")
