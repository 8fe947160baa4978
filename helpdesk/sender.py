"""The outbox sender loop and its transports (I/O shell).

SMTP: one aiosmtplib connection reused across messages. A 4xx reply or a
network error is temporary (RFC 5321 §4.2.1) and retried with exponential
backoff and jitter until the attempts or the maximum age run out; a 5xx
reply is permanent and marks the row failed with the server's answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import aiosmtplib
from sqlalchemy import Connection, Engine

from helpdesk import outbox
from helpdesk.clock import Clock
from helpdesk.db import session_scope
from helpdesk.ingest.maildir import ensure_maildir
from helpdesk.logs import log
from helpdesk.models import Outbox
from helpdesk.settings import OutboundSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    ok: bool
    permanent: bool = False
    detail: str = ""


class Transport(Protocol):
    # True when sending the same ``key`` twice delivers it once: the sender
    # may then record a whole batch's results in one transaction, since a
    # crash before that commit only makes it deliver the same files again.
    idempotent: bool

    async def send(self, envelope_from: str, recipients: list[str], raw: bytes,
                   key: str = "") -> SendResult: ...

    async def close(self) -> None: ...


class MaildirTransport:
    """Writes each mail into a local Maildir, so a newcomer can read what
    would have been sent (the embedded default)."""

    idempotent = True  # a key names its file: the same key replaces, never adds

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._seq = 0
        self._ready = False

    async def send(self, envelope_from: str, recipients: list[str], raw: bytes,
                   key: str = "") -> SendResult:
        # File I/O off the event loop, which serves IMAP IDLE meanwhile.
        return await asyncio.to_thread(self._deliver, envelope_from, recipients, raw, key)

    def _deliver(self, envelope_from: str, recipients: list[str], raw: bytes,
                 key: str) -> SendResult:
        if not self._ready:
            ensure_maildir(self.path)
            self._ready = True
        self._seq += 1
        unique = key or f"{time.time():.6f}.{os.getpid()}_{self._seq}"
        name = f"{unique}.{socket.gethostname()}"
        tmp = self.path / "tmp" / name
        header = f"X-Envelope-From: <{envelope_from}>\nX-Envelope-To: {', '.join(recipients)}\n"
        tmp.write_bytes(header.encode() + raw)
        os.replace(tmp, self.path / "new" / name)  # Maildir delivery: tmp/ then rename
        return SendResult(ok=True)

    async def close(self) -> None:
        return None


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
            _discard(client)
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

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            _discard(client)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except Exception:
                client.close()


def _fields(row: Outbox) -> dict[str, object]:
    return {"outbox_id": row.id, "message_id": row.message_id, "purpose": row.purpose,
            "ticket_id": row.ticket_id}


def _discard(client: aiosmtplib.SMTP) -> None:
    """Drop a connection we gave up on; abort() so a TLS transport does not
    linger waiting for a close_notify exchange nobody will complete."""
    transport = client.transport
    try:
        client.close()
    except Exception:
        pass
    if isinstance(transport, asyncio.Transport):
        transport.abort()


def make_transport(cfg: OutboundSettings) -> Transport:
    return MaildirTransport(cfg.path) if cfg.kind == "maildir" else SmtpTransport(cfg)


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.lease = lease
        self.rng = random.Random()
        self.wakeup = asyncio.Event()
        self._released = False

    async def send_due(self) -> int:
        """One pass: claim what is due, send it, record each result. Returns
        how many rows were handled.

        Each result is committed right after its send, so a crash repeats at
        most the mail in flight; an idempotent transport's results are
        committed together at the end of the batch."""
        now = self.clock.now()
        rows = await asyncio.to_thread(self._claim, now)
        done: list[tuple[Outbox, SendResult]] = []
        for row in rows:
            result = await self.transport.send(
                row.envelope_from, [r for r in row.recipients.split("\n") if r], row.raw,
                key=f"{row.id:012d}",
            )
            done.append((row, result))
            if not self.transport.idempotent:
                await asyncio.to_thread(self._record, done)
                done = []
        if done:
            await asyncio.to_thread(self._record, done)
        return len(rows)

    def _claim(self, now: datetime) -> list[Outbox]:
        with session_scope(self.engine) as session:
            if not self._released:
                released = outbox.release_dead_workers(session, socket.gethostname(), _is_alive)
                if released:
                    log(logger, logging.INFO, "requeued mail of a crashed sender", rows=released)
                self._released = True
            return outbox.claim_due(session, now, self.worker, self.cfg.in_flight, self.lease)

    def _record(self, done: list[tuple[Outbox, SendResult]]) -> None:
        now = self.clock.now()
        with self.engine.begin() as conn:
            sent = [row for row, result in done if result.ok]
            outbox.mark_sent(conn, [row.id for row in sent if row.id is not None], now)
            for row in sent:
                log(logger, logging.INFO, "mail sent", **_fields(row))
            for row, result in done:
                if not result.ok:
                    self._record_failure(conn, row, result, now)

    def _record_failure(self, conn: Connection, row: Outbox, result: SendResult,
                        now: datetime) -> None:
        assert row.id is not None
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
            if handled >= self.cfg.in_flight:
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
