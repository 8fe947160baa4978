"""The outbox sender loop and its transports (I/O shell).

SMTP: one aiosmtplib connection reused across messages. A 4xx reply or a
network error is temporary (RFC 5321 §4.2.1) and retried with exponential
backoff and jitter until the attempts or the maximum age run out; a 5xx
reply is permanent and marks the row failed with the server's answer.

Maildir: a claimed batch is written in one hop to a worker thread, each
mail into tmp/ then renamed into new/; a mail that cannot be written is
retried like a temporary SMTP failure, and the rest of its batch goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import aiosmtplib
from sqlalchemy import Connection, Engine

from helpdesk import outbox
from helpdesk.clock import Clock
from helpdesk.db import session_scope
from helpdesk.hangup import hang_up
from helpdesk.ingest.maildir import ensure_maildir
from helpdesk.logs import log
from helpdesk.outbox import Claimed
from helpdesk.settings import OutboundSettings
from helpdesk.workers import alive_here, this_worker

logger = logging.getLogger(__name__)


LOCAL_BATCH = 200  # rows claimed per pass by an idempotent (local) transport


@dataclass(frozen=True)
class SendResult:
    ok: bool
    permanent: bool = False
    detail: str = ""


@dataclass(frozen=True)
class Mail:
    """One outbox row as a transport sees it."""

    envelope_from: str
    recipients: tuple[str, ...]
    raw: bytes
    key: str = ""  # the outbox row's; an idempotent transport names the delivery by it


class Transport(Protocol):
    # True when sending the same ``key`` twice delivers it once: the sender
    # may then hand over a whole batch and record its results in one
    # transaction, since a crash before that commit only makes it deliver
    # the same files again. Otherwise it hands over one mail at a time and
    # commits each result before the next send.
    idempotent: bool

    async def send_many(self, mails: Sequence[Mail]) -> list[SendResult]:
        """One result per mail, in order. A mail that cannot be sent gets a
        failed result; it must not cost the others theirs."""
        ...

    async def close(self) -> None: ...


class MaildirTransport:
    """Writes each mail into a local Maildir, so a newcomer can read what
    would have been sent (the embedded default)."""

    idempotent = True  # a key names its file: the same key replaces, never adds

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        # Per mail, the host name lookup and pathlib joins cost more than
        # writing the file: work them out once.
        self._host = socket.gethostname()
        self._tmp = os.path.join(path, "tmp", "")
        self._new = os.path.join(path, "new", "")
        self._seq = 0
        self._ready = False

    async def send_many(self, mails: Sequence[Mail]) -> list[SendResult]:
        # File I/O off the event loop, which serves IMAP IDLE meanwhile; the
        # whole batch in one hop, as a hop per mail cost more than the write.
        return await asyncio.to_thread(self._deliver_all, mails)

    def _deliver_all(self, mails: Sequence[Mail]) -> list[SendResult]:
        if not self._ready:
            # Raises: without the folders no mail can go, and none is at fault.
            ensure_maildir(self.path)
            self._ready = True
        return [self._deliver(mail) for mail in mails]

    def _deliver(self, mail: Mail) -> SendResult:
        self._seq += 1
        unique = mail.key or f"{time.time():.6f}.{os.getpid()}_{self._seq}"
        name = f"{unique}.{self._host}"
        tmp = self._tmp + name
        header = (f"X-Envelope-From: <{mail.envelope_from}>\n"
                  f"X-Envelope-To: {', '.join(mail.recipients)}\n")
        try:
            _write_file(tmp, header.encode() + mail.raw)
            os.replace(tmp, self._new + name)  # Maildir delivery: tmp/ then rename
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # ours (named by key and host); readers only sweep old ones
            # Temporary, like a network error on SMTP: retried with backoff.
            return SendResult(False, False, f"{type(exc).__name__}: {exc}")
        return SendResult(ok=True)

    async def close(self) -> None:
        return None


def _write_file(path: str, data: bytes) -> None:
    """Create or truncate ``path`` and write ``data`` with plain os calls,
    which cost a fraction of pathlib's ``write_bytes``. Mode 0o666 less the
    umask, as ``write_bytes`` gave."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than it was given
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


class SmtpTransport:
    idempotent = False  # a crash after the server's 250 and before our commit resends

    def __init__(self, cfg: OutboundSettings) -> None:
        self.cfg = cfg
        self._client: aiosmtplib.SMTP | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            return self._client
        cfg = self.cfg
        tls = cfg.security in ("tls", "starttls")
        client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            timeout=cfg.timeout,
            use_tls=cfg.security == "tls",
            start_tls=cfg.security == "starttls",
            tls_context=ssl.create_default_context(cafile=cfg.ca_file or None) if tls else None,
        )
        await client.connect()
        try:
            if cfg.username:
                await client.login(cfg.username, cfg.password)
        except BaseException:
            await _discard(client)
            raise
        self._client = client
        return client

    async def send(self, envelope_from: str, recipients: list[str], raw: bytes,
                   key: str = "") -> SendResult:
        try:
            client = await self._connect()
            errors, response = await client.sendmail(envelope_from, recipients, raw)
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Our credentials are wrong: every mail would fail the same way, and
            # none of them is at fault. Keep them queued until an admin fixes it.
            await self._drop()
            log(logger, logging.ERROR, "SMTP authentication failed; check outbound.username "
                "and HELPDESK_OUTBOUND__PASSWORD", code=exc.code)
            return SendResult(False, False, f"authentication failed: {exc.code} {exc.message}")
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            permanent = all(500 <= c < 600 for c in codes)
            detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            return SendResult(False, permanent, detail)
        except aiosmtplib.SMTPResponseException as exc:
            await self._drop()
            return SendResult(False, 500 <= exc.code < 600, f"{exc.code} {exc.message}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self._drop()
            return SendResult(False, False, f"{type(exc).__name__}: {exc}")
        refused = {rcpt: err for rcpt, err in errors.items()}
        if refused:
            detail = "; ".join(f"{r}: {e.code} {e.message}" for r, e in refused.items())
            log(logger, logging.WARNING, "some recipients refused", detail=detail)
        return SendResult(True, detail=response)

    async def send_many(self, mails: Sequence[Mail]) -> list[SendResult]:
        # One after another on the one connection; the sender gives us a
        # single mail at a time, as we are not idempotent.
        return [await self.send(m.envelope_from, list(m.recipients), m.raw, m.key)
                for m in mails]

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _discard(client)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        transport = client.transport  # QUIT's close() forgets it
        if client.is_connected:
            with contextlib.suppress(Exception):
                await client.quit()  # the polite goodbye; the socket goes below either way
        await _discard(client, transport)


def _mail(row: Claimed) -> Mail:
    recipients = tuple(r for r in row.recipients.split("\n") if r)
    return Mail(row.envelope_from, recipients, row.raw, key=f"{row.id:012d}")


def _fields(row: Claimed) -> dict[str, object]:
    return {"outbox_id": row.id, "message_id": row.message_id, "purpose": row.purpose,
            "ticket_id": row.ticket_id}


async def _discard(client: aiosmtplib.SMTP, transport: object = None) -> None:
    """Drop a connection, its socket with it (``hang_up``): also one given up
    on, whose TLS close nobody would complete. ``transport``: the client's,
    when it has already forgotten it."""
    transport = client.transport if transport is None else transport
    with contextlib.suppress(Exception):
        client.close()
    await hang_up(transport)


def make_transport(cfg: OutboundSettings) -> Transport:
    return MaildirTransport(cfg.path) if cfg.kind == "maildir" else SmtpTransport(cfg)


def backoff(cfg: OutboundSettings, attempts: int, rng: random.Random) -> timedelta:
    """Exponential backoff with full jitter, capped."""
    ceiling = min(cfg.backoff_max, cfg.backoff_base * (2 ** max(attempts - 1, 0)))
    return timedelta(seconds=rng.uniform(ceiling / 2, ceiling))


class OutboxSender:
    def __init__(
        self,
        engine: Engine,
        cfg: OutboundSettings,
        clock: Clock,
        transport: Transport | None = None,
        worker: str | None = None,
        lease: timedelta = timedelta(minutes=5),
    ) -> None:
        self.engine = engine
        self.cfg = cfg
        self.clock = clock
        self.transport = transport or make_transport(cfg)
        self.worker = worker or this_worker()
        self.lease = lease
        self.rng = random.Random()
        self.wakeup = asyncio.Event()
        self._released = False

    @property
    def batch(self) -> int:
        """Rows claimed per pass. ``in_flight`` bounds what a network
        transport holds locked at once; a local, idempotent one commits a
        whole batch together and waits on nothing, so it takes more, and the
        claim's cost is shared by more mail."""
        return max(self.cfg.in_flight, LOCAL_BATCH) if self.transport.idempotent else (
            self.cfg.in_flight)

    async def send_due(self) -> int:
        """One pass: claim what is due, send it, record each result. Returns
        how many rows were handled.

        Each result is committed right after its send, so a crash repeats at
        most the mail in flight; an idempotent transport is given the whole
        batch at once and its results are committed together."""
        now = self.clock.now()
        rows = await asyncio.to_thread(self._claim, now)
        if not rows:
            return 0
        batches = [rows] if self.transport.idempotent else [[row] for row in rows]
        for batch in batches:
            results = await self.transport.send_many([_mail(row) for row in batch])
            await asyncio.to_thread(self._record, list(zip(batch, results, strict=True)))
        return len(rows)

    def _claim(self, now: datetime) -> list[Claimed]:
        with session_scope(self.engine) as session:
            if not self._released:
                released = outbox.release_dead_workers(session, socket.gethostname(), alive_here)
                if released:
                    log(logger, logging.INFO, "requeued mail of a crashed sender", rows=released)
                self._released = True
            return outbox.claim_due(session, now, self.worker, self.batch, self.lease)

    def _record(self, done: list[tuple[Claimed, SendResult]]) -> None:
        now = self.clock.now()
        with self.engine.begin() as conn:
            sent = [row for row, result in done if result.ok]
            outbox.mark_sent(conn, [row.id for row in sent], now)
            for row in sent:
                log(logger, logging.INFO, "mail sent", **_fields(row))
            for row, result in done:
                if not result.ok:
                    self._record_failure(conn, row, result, now)

    def _record_failure(self, conn: Connection, row: Claimed, result: SendResult,
                        now: datetime) -> None:
        attempts = row.attempts + 1
        too_old = now - row.created_at > timedelta(hours=self.cfg.max_age_hours)
        if result.permanent or attempts >= self.cfg.max_attempts or too_old:
            outbox.mark_failed(conn, row.id, result.detail)
            log(logger, logging.ERROR, "mail failed", detail=result.detail, **_fields(row))
            return
        at = now + backoff(self.cfg, attempts, self.rng)
        outbox.mark_retry(conn, row.id, result.detail, at)
        log(logger, logging.WARNING, "mail deferred", detail=result.detail,
            retry_at=at.isoformat(), **_fields(row))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                handled = await self.send_due()
            except Exception:
                logger.exception("outbox pass failed")
                handled = 0
            if handled >= self.batch:
                continue  # more may be waiting
            self.wakeup.clear()
            waiters = {
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self.wakeup.wait()),
            }
            _, pending = await asyncio.wait(
                waiters, timeout=self.cfg.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
        await self.transport.close()
