"""Self-tests of the real-server harness in ``tests/support``: if these fail, trust no other
integration test."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import smtplib
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email import policy
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import psycopg
import pytest
from aioimaplib import aioimaplib
from sqlalchemy import create_engine, text

from tests.support.dovecot import Dovecot, DovecotError, ImapAccount
from tests.support.ports import free_port
from tests.support.proxy import ProxyFactory
from tests.support.services import postgres_url, require_dovecot, scratch_database
from tests.support.smtpd import SmtpCapture


def make_message(subject: str = "Printer on fire", body: str = "Help!\n") -> bytes:
    message = EmailMessage()
    message["From"] = "Customer <customer@example.test>"
    message["To"] = "support@example.test"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '.')}@example.test>"
    message.set_content(body)
    return message.as_bytes(policy=policy.SMTP)  # CRLF line ends, as IMAP stores them


@asynccontextmanager
async def imap_session(
    host: str,
    port: int,
    account: ImapAccount,
    *,
    timeout: float = 5.0,
    on_lost: Callable[[Exception | None], None] | None = None,
) -> AsyncIterator[aioimaplib.IMAP4]:
    """A logged-in aioimaplib client; logged out and closed afterwards.

    aioimaplib's ``logout()`` leaves the socket to the server's close; if the test's loop ends
    first, the transport is reported unclosed (an error under ``-W error``), so close it here.
    """
    client = aioimaplib.IMAP4(host=host, port=port, timeout=timeout, conn_lost_cb=on_lost)
    try:
        await client.wait_hello_from_server()
        response = await client.login(account.user, account.password)
        assert response.result == "OK", response
        yield client
    finally:
        transport = client.protocol.transport
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(aioimaplib.AioImapException, TimeoutError):
                await client.logout()
            transport.close()
            await asyncio.sleep(0)  # let the transport run connection_lost and close the socket


# -- Dovecot -------------------------------------------------------------------------------


def test_append_list_and_fetch(dovecot: Dovecot, imap_account: ImapAccount) -> None:
    user = imap_account.user
    first, second = make_message("one"), make_message("two")
    dovecot.append(user, "INBOX", first)
    dovecot.append(user, "INBOX", second, flags=r"(\Seen)")

    assert dovecot.list_uids(user, "INBOX") == [1, 2]
    assert dovecot.fetch_all(user, "INBOX") == [first, second]
    assert r"\Seen" in dovecot.flags(user, "INBOX")[2]
    assert r"\Seen" not in dovecot.flags(user, "INBOX")[1]  # fetch_all does not mark as read


def test_each_test_gets_an_empty_account(dovecot: Dovecot, imap_account: ImapAccount) -> None:
    assert dovecot.list_mailboxes(imap_account.user) == ["INBOX"]
    assert dovecot.list_uids(imap_account.user, "INBOX") == []


def test_clean_dovecot_empties_the_well_known_users(clean_dovecot: Dovecot) -> None:
    user = "support@example.test"
    clean_dovecot.create_mailbox(user, "Processed")
    clean_dovecot.create_mailbox(user, "Quarantine/Bad")
    clean_dovecot.append(user, "INBOX", make_message())

    clean_dovecot.reset_user(user)

    assert clean_dovecot.list_mailboxes(user) == ["INBOX"]
    assert clean_dovecot.list_uids(user, "INBOX") == []


def test_harness_operations_log_no_errors(dovecot: Dovecot, imap_account: ImapAccount) -> None:
    dovecot.create_mailbox(imap_account.user, "Processed")
    dovecot.append(imap_account.user, "INBOX", make_message())
    dovecot.change_uidvalidity(imap_account.user, "Processed")
    dovecot.reset_user(imap_account.user)
    assert dovecot.log_errors() == []


def test_wrong_password_is_refused_quickly(dovecot: Dovecot, imap_account: ImapAccount) -> None:
    started = time.monotonic()
    conn = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=5)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            conn.login(imap_account.user, "not-the-password")
    finally:
        conn.logout()
    # and no auth penalty slows down the good logins that follow
    assert dovecot.list_uids(imap_account.user, "INBOX") == []
    assert time.monotonic() - started < 2.0


async def test_capabilities_after_login(dovecot: Dovecot, imap_account: ImapAccount) -> None:
    async with imap_session(dovecot.host, dovecot.port, imap_account) as client:
        for capability in ("IDLE", "MOVE", "UIDPLUS", "CONDSTORE"):
            assert client.has_capability(capability), capability


async def test_idle_sees_a_new_message(dovecot: Dovecot, imap_account: ImapAccount) -> None:
    async with imap_session(dovecot.host, dovecot.port, imap_account) as client:
        await client.select("INBOX")
        idle = await client.idle_start(timeout=30)
        started = time.monotonic()
        await asyncio.to_thread(dovecot.append, imap_account.user, "INBOX", make_message())

        pushed = await client.wait_server_push(timeout=5)
        latency = time.monotonic() - started

        assert b"1 EXISTS" in pushed, pushed
        assert latency < 3.0
        client.idle_done()
        await asyncio.wait_for(idle, 5)


async def test_uid_move_to_another_folder(dovecot: Dovecot, imap_account: ImapAccount) -> None:
    user = imap_account.user
    dovecot.create_mailbox(user, "Processed")
    dovecot.append(user, "INBOX", make_message("keep"))
    dovecot.append(user, "INBOX", make_message("move me"))

    async with imap_session(dovecot.host, dovecot.port, imap_account) as client:
        await client.select("INBOX")
        response = await client.uid("move", "2", "Processed")

    assert response.result == "OK", response
    assert any(b"COPYUID" in line for line in response.lines)  # UIDPLUS reports the new UID
    assert dovecot.list_uids(user, "INBOX") == [1]
    assert dovecot.fetch_all(user, "Processed") == [make_message("move me")]


def test_uidvalidity_change_keeps_messages(dovecot: Dovecot, imap_account: ImapAccount) -> None:
    user = imap_account.user
    dovecot.append(user, "INBOX", make_message())
    before = dovecot.uidvalidity(user, "INBOX")

    watcher = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=5)
    watcher.login(user, imap_account.password)
    watcher.select("INBOX")
    after = dovecot.change_uidvalidity(user, "INBOX")

    assert after != before
    assert dovecot.uidvalidity(user, "INBOX") == after
    assert dovecot.fetch_all(user, "INBOX") == [make_message()]
    # Dovecot drops sessions that had the mailbox selected: a client must notice and resync.
    with pytest.raises(imaplib.IMAP4.abort):
        watcher.noop()
    watcher.shutdown()


def test_uidvalidity_change_on_another_folder(dovecot: Dovecot, imap_account: ImapAccount) -> None:
    user = imap_account.user
    dovecot.create_mailbox(user, "Processed")
    before = dovecot.uidvalidity(user, "Processed")
    assert dovecot.change_uidvalidity(user, "Processed", before + 1000) == before + 1000
    assert dovecot.uidvalidity(user, "Processed") == before + 1000


@pytest.mark.dovecot
def test_a_private_server_starts_restarts_and_stops_cleanly() -> None:
    require_dovecot()
    server = Dovecot({"solo@example.test": "pw"})
    started = time.monotonic()
    with server:
        startup = time.monotonic() - started
        directory = server.directory
        server.append("solo@example.test", "INBOX", make_message())
        server.restart()
        assert server.list_uids("solo@example.test", "INBOX") == [1]
        pid = int((directory / "run" / "master.pid").read_text())
        assert server.log_errors() == []
    assert startup < 2.0
    assert not directory.exists()
    assert not Path(f"/proc/{pid}").exists()


@pytest.mark.dovecot
def test_a_server_that_fails_to_start_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_dovecot()
    fake = tmp_path / "dovecot"
    fake.write_text("#!/bin/sh\necho 'Fatal: this is not dovecot' >&2\nexit 89\n")
    fake.chmod(0o755)
    server = Dovecot({"solo@example.test": "pw"}, binary=str(fake))

    with pytest.raises(DovecotError, match="this is not dovecot"):
        server.start()

    assert not server.is_running
    assert "this is not dovecot" in capsys.readouterr().err  # the log is printed for the reader


# -- SMTP ----------------------------------------------------------------------------------


def outbound(subject: str = "Re: Printer on fire") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "support@example.test"
    message["To"] = "customer@example.test"
    message["Subject"] = subject
    message.set_content("We are on it.\n.\nA line with only a dot, above.\n")
    return message


async def test_smtp_captures_with_aiosmtplib(smtp_server: SmtpCapture) -> None:
    await aiosmtplib.send(
        outbound(),
        hostname=smtp_server.host,
        port=smtp_server.port,
        recipients=["customer@example.test", "agent@example.test"],
    )
    [message] = await smtp_server.wait_for_messages_async(1)

    assert message.mail_from == "support@example.test"
    assert message.rcpt_tos == ("customer@example.test", "agent@example.test")
    assert b"\r\n.\r\nA line with only a dot" in message.raw  # dot-unstuffed
    assert message.received_at.tzinfo is not None


def test_smtp_captures_with_a_sync_client(smtp_server: SmtpCapture) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        client.send_message(outbound("first"))
        client.send_message(outbound("second"))

    messages = smtp_server.wait_for_messages(2)
    assert [b"Subject: first" in m.raw for m in messages] == [True, False]
    assert smtp_server.attempts == 2


async def test_smtp_421_at_rcpt_then_accepts(smtp_server: SmtpCapture) -> None:
    smtp_server.refuse("RCPT", 421, "Try again later", times=1)
    send = aiosmtplib.send(outbound(), hostname=smtp_server.host, port=smtp_server.port)

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await send
    assert refused.value.recipients[0].code == 421

    await aiosmtplib.send(outbound(), hostname=smtp_server.host, port=smtp_server.port)
    assert len(await smtp_server.wait_for_messages_async(1)) == 1
    assert (smtp_server.attempts, smtp_server.refused) == (2, 1)


async def test_smtp_550_at_data_until_accept(smtp_server: SmtpCapture) -> None:
    smtp_server.refuse("DATA", 550, "No such user")
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await aiosmtplib.send(outbound(), hostname=smtp_server.host, port=smtp_server.port)
        assert refused.value.code == 550
    assert smtp_server.messages == []

    smtp_server.accept()
    await aiosmtplib.send(outbound(), hostname=smtp_server.host, port=smtp_server.port)
    assert len(await smtp_server.wait_for_messages_async(1)) == 1


def test_smtp_wait_times_out(smtp_server: SmtpCapture) -> None:
    with pytest.raises(TimeoutError, match="0 of 1 messages"):
        smtp_server.wait_for_messages(1, timeout=0.05)


# -- TCP proxy -----------------------------------------------------------------------------


async def test_proxy_forwards_and_cut_all_breaks_the_connection(
    dovecot: Dovecot, imap_account: ImapAccount, tcp_proxy: ProxyFactory
) -> None:
    proxy = tcp_proxy(dovecot.host, dovecot.port)
    lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def on_lost(exc: Exception | None) -> None:
        if not lost.done():
            lost.set_result(exc)

    async with imap_session(proxy.host, proxy.port, imap_account, on_lost=on_lost) as client:
        assert (await client.select("INBOX")).result == "OK"
        assert proxy.accepted == 1
        assert proxy.active == 1

        assert proxy.cut_all() == 1
        await asyncio.wait_for(lost, 2)
        # aioimaplib does not fail commands on a dropped connection: it times out instead.
        client.timeout = 0.5
        with pytest.raises(TimeoutError):
            await client.noop()

    assert proxy.cuts == 1
    async with imap_session(proxy.host, proxy.port, imap_account) as again:  # new ones go through
        assert (await again.select("INBOX")).result == "OK"
    assert proxy.accepted == 2


async def test_proxy_cuts_mid_fetch_once(
    dovecot: Dovecot, imap_account: ImapAccount, tcp_proxy: ProxyFactory
) -> None:
    big = make_message("big", ("z" * 76 + "\n") * 2000)  # ~150 KB
    dovecot.append(imap_account.user, "INBOX", big)
    proxy = tcp_proxy(dovecot.host, dovecot.port)
    lost = asyncio.Event()

    async with imap_session(
        proxy.host, proxy.port, imap_account, timeout=1, on_lost=lambda _: lost.set()
    ) as client:
        await client.select("INBOX")
        proxy.cut_after_bytes(50_000, once=True)
        with pytest.raises(aioimaplib.CommandTimeout):  # aioimaplib waits out its timeout
            await client.uid("fetch", "1", "(BODY.PEEK[])")
        assert lost.is_set()

    assert proxy.cuts == 1
    async with imap_session(proxy.host, proxy.port, imap_account) as again:  # disarmed: once
        await again.select("INBOX")
        response = await again.uid("fetch", "1", "(BODY.PEEK[])")
        assert response.result == "OK"
        assert bytes(response.lines[1]) == big


def read_greeting(host: str, port: int, timeout: float) -> bytes:
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        sock.makefile("rb") as stream,
    ):
        return stream.readline()


def test_proxy_blackhole_and_delay(dovecot: Dovecot, tcp_proxy: ProxyFactory) -> None:
    proxy = tcp_proxy(dovecot.host, dovecot.port)
    assert read_greeting(proxy.host, proxy.port, 2).startswith(b"* OK")

    proxy.set_blackhole(True)
    with pytest.raises(TimeoutError):
        read_greeting(proxy.host, proxy.port, 0.3)  # accepted, but nothing comes back
    assert proxy.accepted == 2

    proxy.set_blackhole(False)
    proxy.set_delay(0.3)
    started = time.monotonic()
    assert read_greeting(proxy.host, proxy.port, 2).startswith(b"* OK")
    assert time.monotonic() - started >= 0.3


def test_proxy_cut_after_bytes_delivers_exactly_n_bytes(
    dovecot: Dovecot, tcp_proxy: ProxyFactory
) -> None:
    proxy = tcp_proxy(dovecot.host, dovecot.port)
    proxy.cut_after_bytes(7)  # stays armed: every connection is cut
    for _ in range(2):
        with socket.create_connection((proxy.host, proxy.port), timeout=2) as sock:
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
        assert received == b"* OK [C"
    assert proxy.cuts == 2


def test_proxy_to_a_closed_port_closes_the_client(tcp_proxy: ProxyFactory) -> None:
    proxy = tcp_proxy("127.0.0.1", free_port())
    assert read_greeting(proxy.host, proxy.port, 2) == b""


# -- PostgreSQL ----------------------------------------------------------------------------


@pytest.mark.postgres
def test_pg_scratch_database_round_trip_and_drop() -> None:
    base = postgres_url()
    with scratch_database(base) as url:
        name = url.rsplit("/", 1)[1]
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE ticket (id serial PRIMARY KEY, subject text)"))
            conn.execute(text("INSERT INTO ticket (subject) VALUES ('Printer on fire')"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == name
            assert conn.execute(text("SELECT subject FROM ticket")).scalar() == "Printer on fire"
        idle = engine.connect()  # still open at the DROP, on purpose: WITH (FORCE) ends it
    idle.invalidate()
    idle.close()
    engine.dispose()
    libpq = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(libpq) as admin:
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert found is None


def test_db_url_round_trip(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE probe (id integer PRIMARY KEY, note text)"))
            conn.execute(text("INSERT INTO probe VALUES (1, 'hello')"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT note FROM probe")).scalar() == "hello"
    finally:
        engine.dispose()


def test_pg_url_is_a_fresh_database(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema='public'")
            ).scalar()
        assert tables == 0
    finally:
        engine.dispose()
