"""Real Dovecot in, real SMTP out: the core promises of the daemon."""

from __future__ import annotations

import asyncio
import email
import time
from email.policy import default
from pathlib import Path

import pytest
from sqlmodel import Session, select

from helpdesk.daemon import Daemon, Ingester
from helpdesk.models import InboundMail, Outbox, Ticket
from tests.support.config import cli, cli_json, imap_inbound, make_app, smtp_outbound, write_config
from tests.support.dovecot import Dovecot, ImapAccount
from tests.support.mail import make_mail
from tests.support.proxy import ProxyFactory
from tests.support.smtpd import SmtpCapture


def _mails(n: int, size: int = 0) -> list[bytes]:
    filler = ("lorem ipsum dolor sit amet " * (size // 27 + 1))[:size]
    return [
        make_mail(sender=f"client{i}@client.test", subject=f"Problem number {i}",
                  message_id=f"<p{i}@client.test>", body=f"Body {i}\n{filler}\n")
        for i in range(n)
    ]


def _tickets(app_or_config: object) -> list[Ticket]:
    with Session(app_or_config.engine) as session:  # type: ignore[attr-defined]
        return list(session.exec(select(Ticket).order_by(Ticket.id)).all())  # type: ignore[arg-type]


def test_appended_mail_becomes_tickets_and_confirmations(
    dovecot: Dovecot, imap_account: ImapAccount, smtp_server: SmtpCapture, db_url: str,
    tmp_path: Path,
) -> None:
    for raw in _mails(3):
        dovecot.append(imap_account.user, "INBOX", raw)
    config = write_config(tmp_path, db_url=db_url, inbound=imap_inbound(imap_account),
                          outbound=smtp_outbound(smtp_server))
    code, _, err = cli(config, "run", "--once")
    assert code == 0, err
    tickets = cli_json(config, "tickets", "list")
    assert sorted(t["subject"] for t in tickets) == [f"Problem number {i}" for i in range(3)]
    assert [t["reference"] for t in tickets] == ["HD-000001", "HD-000002", "HD-000003"]
    # One confirmation per client, plus one team notification per ticket.
    captured = smtp_server.wait_for_messages(6)
    to_clients = [m for m in captured if m.rcpt_tos[0].startswith("client")]
    assert sorted(m.rcpt_tos[0] for m in to_clients) == [f"client{i}@client.test" for i in range(3)]
    for m in to_clients:
        msg = email.message_from_bytes(m.raw, policy=default)
        assert msg["Auto-Submitted"] == "auto-replied"
        assert msg["Subject"].startswith("[HD-00000")
        assert m.mail_from == "support@example.test"
    assert dovecot.list_uids(imap_account.user, "INBOX") == []
    assert len(dovecot.list_uids(imap_account.user, "Processed")) == 3


def test_uidvalidity_change_does_not_reimport(
    dovecot: Dovecot, imap_account: ImapAccount, smtp_server: SmtpCapture, tmp_path: Path
) -> None:
    for raw in _mails(2):
        dovecot.append(imap_account.user, "INBOX", raw)
    config = write_config(tmp_path, inbound=imap_inbound(imap_account, acknowledge="seen"),
                          outbound=smtp_outbound(smtp_server))
    assert cli(config, "run", "--once")[0] == 0
    assert len(cli_json(config, "tickets", "list")) == 2
    # The server is rebuilt: new UIDVALIDITY, and the \Seen flags are gone too.
    with dovecot.connect(imap_account.user) as conn:
        conn.select("INBOX")
        conn.store("1:*", "-FLAGS.SILENT", r"(\Seen)")
    old = dovecot.uidvalidity(imap_account.user, "INBOX")
    assert dovecot.change_uidvalidity(imap_account.user, "INBOX") != old
    dovecot.append(imap_account.user, "INBOX", make_mail(message_id="<late@client.test>",
                                                         subject="Arrived later"))
    assert cli(config, "run", "--once")[0] == 0
    subjects = [t["subject"] for t in cli_json(config, "tickets", "list")]
    assert subjects == ["Problem number 0", "Problem number 1", "Arrived later"]
    flags = dovecot.flags(imap_account.user, "INBOX")
    assert len(flags) == 3 and all("\\Seen" in f for f in flags.values())


async def test_connection_cut_mid_fetch_loses_nothing(
    dovecot: Dovecot, imap_account: ImapAccount, tcp_proxy: ProxyFactory, tmp_path: Path
) -> None:
    for raw in _mails(8, size=20_000):
        dovecot.append(imap_account.user, "INBOX", raw)
    proxy = tcp_proxy(imap_account.host, imap_account.port)
    proxy.cut_after_bytes(60_000, once=True)  # dies in the middle of the batch FETCH
    # A command timeout far beyond the 30 s allowed below: the FETCH in
    # flight must fail when the connection goes, not when it times out.
    config = write_config(tmp_path, inbound=imap_inbound(imap_account, port=proxy.port,
                                                         batch_size=50, timeout=120))
    app = make_app(config)
    ingester = Ingester(app, app.settings.inbound[0])
    stop = asyncio.Event()
    task = asyncio.create_task(ingester.run(stop))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_tickets(app)) < 8:
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 15)
    assert proxy.cuts >= 1 and proxy.accepted >= 2
    expected = sorted(f"Problem number {i}" for i in range(8))
    assert sorted(t.subject for t in _tickets(app)) == expected
    assert len(dovecot.list_uids(imap_account.user, "Processed")) == 8
    app.dispose()


async def test_idle_picks_up_new_mail_without_polling(
    dovecot: Dovecot, imap_account: ImapAccount, tmp_path: Path
) -> None:
    # Polling is every 60 s here, so only IDLE can deliver the mail in time.
    config = write_config(tmp_path, inbound=imap_inbound(imap_account, poll_interval=60))
    app = make_app(config)
    ingester = Ingester(app, app.settings.inbound[0])
    stop = asyncio.Event()
    task = asyncio.create_task(ingester.run(stop))
    await asyncio.sleep(1.0)  # connected and idling
    started = time.monotonic()
    dovecot.append(imap_account.user, "INBOX", make_mail(message_id="<idle@client.test>"))
    while time.monotonic() - started < 10 and not _tickets(app):
        await asyncio.sleep(0.02)
    latency = time.monotonic() - started
    stop.set()
    await asyncio.wait_for(task, 15)
    print(f"IDLE: APPEND to committed ticket in {latency * 1000:.0f} ms")
    assert [t.subject for t in _tickets(app)] == ["Printer is broken"]
    app.dispose()


async def test_smtp_421_then_accept_delivers_once(
    smtp_server: SmtpCapture, db_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, db_url=db_url, outbound=smtp_outbound(smtp_server))
    raw = tmp_path / "in.eml"
    raw.write_bytes(make_mail(sender="carol@client.test", message_id="<t421@client.test>"))
    assert cli(config, "ingest", str(raw))[0] == 0
    smtp_server.refuse(code=421, times=3, stage="RCPT")
    app = make_app(config)
    sender = Daemon(app).sender
    for _ in range(100):
        await sender.send_due()
        if len(smtp_server.messages) >= 2:
            break
        await asyncio.sleep(0.05)
    await sender.transport.close()
    to_carol = [m for m in smtp_server.messages if m.rcpt_tos == ("carol@client.test",)]
    assert len(to_carol) == 1
    assert smtp_server.refused >= 3
    rows = cli_json(config, "outbox", "list")
    confirmation = next(r for r in rows if r["purpose"] == "confirmation")
    assert confirmation["status"] == "sent" and confirmation["attempts"] >= 2
    app.dispose()


async def test_smtp_550_marks_failed_with_reason_and_retry_requeues(
    smtp_server: SmtpCapture, tmp_path: Path
) -> None:
    config = write_config(tmp_path, outbound=smtp_outbound(smtp_server))
    raw = tmp_path / "in.eml"
    raw.write_bytes(make_mail(sender="gone@client.test", message_id="<t550@client.test>"))
    cli(config, "ingest", str(raw))
    smtp_server.refuse(code=550, stage="RCPT")
    app = make_app(config)
    sender = Daemon(app).sender
    await sender.send_due()
    await sender.transport.close()
    failed = cli_json(config, "outbox", "list", "--status", "failed")
    assert {r["purpose"] for r in failed} >= {"confirmation"}
    assert all("550" in r["last_error"] for r in failed)
    smtp_server.accept()
    code, out, _ = cli(config, "outbox", "retry", "--failed")
    assert code == 0 and '"requeued": 2' in out
    await asyncio.to_thread(cli, config, "run", "--once")
    assert any(m.rcpt_tos == ("gone@client.test",) for m in smtp_server.messages)
    app.dispose()


async def test_row_left_sending_by_a_crash_is_sent_after_the_lease(
    smtp_server: SmtpCapture, tmp_path: Path
) -> None:
    from datetime import timedelta

    from helpdesk import outbox
    from helpdesk.clock import ManualClock
    from helpdesk.db import session_scope

    config = write_config(tmp_path, outbound=smtp_outbound(smtp_server))
    raw = tmp_path / "in.eml"
    raw.write_bytes(make_mail(sender="carol@client.test", message_id="<lease@client.test>"))
    cli(config, "ingest", str(raw))
    clock = ManualClock(make_app(config).clock.now())
    app = make_app(config, clock)
    with session_scope(app.engine) as session:  # a sender claims, then dies
        claimed = outbox.claim_due(session, clock.now(), "dead-worker", 10, timedelta(minutes=5))
    assert len(claimed) == 2
    sender = Daemon(app).sender
    assert await sender.send_due() == 0  # still leased to the dead worker
    clock.advance(timedelta(minutes=6))
    assert await sender.send_due() == 2
    assert await sender.send_due() == 0
    await sender.transport.close()
    assert len(smtp_server.messages) == 2
    app.dispose()


async def test_rows_a_dead_sender_on_this_host_claimed_are_sent_at_once(
    smtp_server: SmtpCapture, tmp_path: Path
) -> None:
    """On its own host a restarted daemon tells a dead sender by its pid and
    resends its rows now; a live one's rows wait for their lease."""
    import socket
    import subprocess
    import sys
    from datetime import timedelta

    from helpdesk import outbox
    from helpdesk.db import session_scope

    config = write_config(tmp_path, outbound=smtp_outbound(smtp_server))
    for who in ("dead", "live"):
        raw = tmp_path / f"{who}.eml"
        raw.write_bytes(make_mail(sender=f"{who}@client.test", message_id=f"<{who}@client.test>"))
        assert cli(config, "ingest", str(raw))[0] == 0
    app = make_app(config)
    host = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with session_scope(app.engine) as session:  # each claims one mail's two rows
            claims = [outbox.claim_due(session, app.clock.now(), f"{host}:{pid}", 2,
                                       timedelta(minutes=5)) for pid in (gone.pid, live.pid)]
        assert [len(c) for c in claims] == [2, 2]
        sender = Daemon(app).sender
        assert await sender.send_due() == 2
        assert await sender.send_due() == 0
        await sender.transport.close()
        assert sorted({r for m in smtp_server.messages for r in m.rcpt_tos}
                      - {"team@example.test"}) == ["dead@client.test"]
    finally:
        live.kill()
        live.wait()
        app.dispose()


def test_inbound_rows_are_unique_per_message(
    dovecot: Dovecot, imap_account: ImapAccount, tmp_path: Path
) -> None:
    for raw in _mails(2):
        dovecot.append(imap_account.user, "INBOX", raw)
    config = write_config(tmp_path, inbound=imap_inbound(imap_account))
    cli(config, "run", "--once")
    app = make_app(config)
    with Session(app.engine) as session:
        rows = session.exec(select(InboundMail)).all()
        queued = session.exec(select(Outbox).where(Outbox.purpose == "confirmation")).all()
    assert len(rows) == 2 and {r.status for r in rows} == {"done"}
    assert all(r.uidvalidity and r.uid for r in rows)
    assert len(queued) == 2
    app.dispose()


async def test_acknowledge_without_move_copies_flags_and_expunges(
    dovecot: Dovecot, imap_account: ImapAccount
) -> None:
    from helpdesk.ingest.imap import ImapSource
    from helpdesk.ingest.source import Acknowledgement
    from helpdesk.settings import InboundSettings

    for raw in _mails(3):
        dovecot.append(imap_account.user, "INBOX", raw)
    cfg = InboundSettings(kind="imap", host=imap_account.host, port=imap_account.port,
                          security="none", username=imap_account.user,
                          password=imap_account.password)
    source = ImapSource(cfg, 10_000_000)
    await source.open()
    # As on a server without RFC 6851 MOVE: the RFC 4315 path must be taken.
    source.capabilities = source.capabilities - {"MOVE"}
    fetched = await source.fetch(10)
    assert len(fetched) == 3
    await source.acknowledge(Acknowledgement(processed=tuple(fetched[:2]),
                                             quarantined=tuple(fetched[2:])))
    await source.close()
    assert dovecot.list_uids(imap_account.user, "INBOX") == []
    assert len(dovecot.list_uids(imap_account.user, "Processed")) == 2
    assert len(dovecot.list_uids(imap_account.user, "Quarantine")) == 1


@pytest.mark.parametrize("move", [True, False], ids=["move", "copy-expunge"])
async def test_acknowledging_mail_another_daemon_moved_first(
    dovecot: Dovecot, imap_account: ImapAccount, move: bool
) -> None:
    """Two daemons fetched the same mail; the first moved two of the three
    away. The second's acknowledgement of all three meets NO [EXPUNGEISSUED]
    (RFC 5530) for those two: it must move the one still there and not fail."""
    from helpdesk.ingest.imap import ImapSource
    from helpdesk.ingest.source import Acknowledgement
    from helpdesk.settings import InboundSettings

    for raw in _mails(3):
        dovecot.append(imap_account.user, "INBOX", raw)
    cfg = InboundSettings(kind="imap", host=imap_account.host, port=imap_account.port,
                          security="none", username=imap_account.user,
                          password=imap_account.password)
    first, second = ImapSource(cfg, 10_000_000), ImapSource(cfg, 10_000_000)
    await first.open()
    await second.open()
    try:
        if not move:  # as on a server without RFC 6851 MOVE
            first.capabilities = first.capabilities - {"MOVE"}
            second.capabilities = second.capabilities - {"MOVE"}
        mine, theirs = await first.fetch(10), await second.fetch(10)
        assert [f.uid for f in mine] == [f.uid for f in theirs] and len(mine) == 3
        await first.acknowledge(Acknowledgement(processed=tuple(mine[:2]), quarantined=()))
        await second.acknowledge(Acknowledgement(processed=tuple(theirs), quarantined=()))
    finally:
        await first.close()
        await second.close()
    assert dovecot.list_uids(imap_account.user, "INBOX") == []
    assert len(dovecot.list_uids(imap_account.user, "Processed")) == 3


@pytest.mark.parametrize("acknowledge", ["move", "seen"])
async def test_mail_another_live_daemon_stored_is_left_to_it_unless_only_flagged(
    dovecot: Dovecot, imap_account: ImapAccount, tmp_path: Path, acknowledge: str
) -> None:
    """A daemon stored a mail and has not acknowledged it yet; a second one
    fetches it too. Two MOVEs of one message can leave two copies, so with
    "move" the second leaves it where it is, for the first. With "seen" the
    acknowledgement is a \\Seen flag, harmless twice: the second sets it,
    and does not fetch that mail again. Both daemons live in this process."""
    from helpdesk.ingest.pipeline import Pipeline
    from helpdesk.ingest.source import Fetched

    raw = _mails(1)[0]
    dovecot.append(imap_account.user, "INBOX", raw)
    config = write_config(tmp_path, inbound=imap_inbound(imap_account, acknowledge=acknowledge))
    app = make_app(config)
    try:
        (uid,) = dovecot.list_uids(imap_account.user, "INBOX")
        cfg = app.settings.inbound[0]
        stored = Fetched(cfg.source_key, str(uid), raw,
                         uidvalidity=dovecot.uidvalidity(imap_account.user, "INBOX"), uid=uid)
        first = Pipeline(app)
        (stored_by_first,) = first.process([stored])
        assert stored_by_first.status == "done"
        second = Ingester(app, cfg)
        (outcome,) = await second.drain()
        assert (outcome.status, bool(outcome.left_to)) == ("duplicate", True)
        again = await second.drain()
        await second.source.close()
        second.pipeline.close()
        first.close()
        flags = dovecot.flags(imap_account.user, "INBOX")
        if acknowledge == "seen":
            assert again == []  # the search is for UNSEEN mail
            assert flags == {uid: frozenset({"\\Seen"})}
        else:
            assert [o.status for o in again] == ["duplicate"]  # still the first's to move
            assert list(flags) == [uid] and "\\Seen" not in flags[uid]
        assert dovecot.list_uids(imap_account.user, "INBOX") == [uid]  # never moved
        assert len(_tickets(app)) == 1
    finally:
        app.dispose()


def test_oversized_mail_is_quarantined_without_reading_it_all(
    dovecot: Dovecot, imap_account: ImapAccount, tmp_path: Path
) -> None:
    dovecot.append(imap_account.user, "INBOX", _mails(1, size=50_000)[0])
    dovecot.append(imap_account.user, "INBOX", make_mail(message_id="<small@client.test>"))
    config = write_config(tmp_path, inbound=imap_inbound(imap_account, max_fetch_bytes=20_000),
                          helpdesk={"max_message_size": 20_000})
    assert cli(config, "run", "--once")[0] == 0
    held = cli_json(config, "quarantine", "list")
    assert [h["reason"] for h in held] == ["too_large"]
    assert held[0]["size"] < 20_000  # only the headers were read
    assert [t["subject"] for t in cli_json(config, "tickets", "list")] == ["Printer is broken"]
    assert len(dovecot.list_uids(imap_account.user, "Quarantine")) == 1
    code, out, _ = cli(config, "quarantine", "replay", str(held[0]["id"]))
    assert code == 0 and "max_message_size" in out


def test_quarantined_message_can_be_replayed(tmp_path: Path) -> None:
    from helpdesk.db import session_scope
    from helpdesk.models import Quarantine

    write_config(tmp_path)
    maildir = tmp_path / "mail" / "new"
    maildir.mkdir(parents=True)
    (maildir / "1.eml").write_bytes(make_mail(message_id="<replay@client.test>"))
    # A template the administrator broke makes processing fail: quarantine.
    # (One naming a value it is not given is refused at start; this one
    # fails only as it renders.)
    broken = tmp_path / "broken.txt.j2"
    broken.write_text("{{ reference.no_such_attribute }}\n")
    bad = write_config(tmp_path, extra=f'\n[templates]\nconfirmation = "{broken}"\n')
    assert cli(bad, "run", "--once")[0] == 0
    held = cli_json(bad, "quarantine", "list")
    assert [h["reason"] for h in held] == ["apply_failed"]
    code, out, _ = cli(bad, "quarantine", "show", str(held[0]["id"]))
    assert code == 0 and "no_such_attribute" in out and "replay@client.test" in out
    # Fixed: replay stores it, once.
    good = write_config(tmp_path)
    code, out, err = cli(good, "quarantine", "replay", "--all")
    assert code == 0, err
    assert '"status": "replayed"' in out and '"reference": "HD-000001"' in out
    assert len(cli_json(good, "tickets", "list")) == 1
    assert cli_json(good, "quarantine", "list")[0]["status"] == "replayed"
    app = make_app(good)
    with session_scope(app.engine) as session:
        row = session.get(Quarantine, held[0]["id"])
        assert row is not None and row.replayed_at is not None
    app.dispose()


async def test_mail_that_just_arrived_is_seen_by_the_next_search(
    dovecot: Dovecot, imap_account: ImapAccount
) -> None:
    """Dovecot reports a message APPENDed by another session as an untagged
    EXISTS; the source must sync before searching, or that mail waits for
    the next IDLE push or poll."""
    from helpdesk.ingest.imap import ImapSource
    from helpdesk.settings import InboundSettings

    cfg = InboundSettings(kind="imap", host=imap_account.host, port=imap_account.port,
                          security="none", username=imap_account.user,
                          password=imap_account.password)
    source = ImapSource(cfg, 10_000_000)
    await source.open()
    try:
        for i in range(5):
            dovecot.append(imap_account.user, "INBOX", make_mail(message_id=f"<now{i}@c.test>"))
            assert len(await source.waiting_uids()) == i + 1
    finally:
        await source.close()


async def test_a_long_drain_through_the_parse_worker_and_fetch_ahead(
    dovecot: Dovecot, imap_account: ImapAccount, smtp_server: SmtpCapture, db_url: str,
    tmp_path: Path,
) -> None:
    """Forty-five mails in batches of ten: a worker process parses them, each
    next batch is fetched while the one before is stored, and every mail
    becomes one ticket with one confirmation at the SMTP server, on SQLite
    and PostgreSQL, and leaves the inbox once."""
    raws = _mails(45, size=3_000)
    for raw in raws:
        dovecot.append(imap_account.user, "INBOX", raw)
    config = write_config(tmp_path, db_url=db_url,
                          inbound=imap_inbound(imap_account, batch_size=10),
                          outbound=smtp_outbound(smtp_server))
    app = make_app(config)
    daemon = Daemon(app)
    parser = daemon.ingesters[0].pipeline.parser
    parser.start().result(timeout=60)  # up before the drain, so it takes its share
    outcomes = await daemon.once()
    assert [o.status for o in outcomes] == ["done"] * 45
    assert parser.parsed_by_workers > 30
    assert sorted(t.subject for t in _tickets(app)) == sorted(
        f"Problem number {i}" for i in range(45))
    confirmations = [m for m in smtp_server.messages
                     if m.rcpt_tos[0].startswith("client")]
    assert sorted(m.rcpt_tos[0] for m in confirmations) == sorted(
        f"client{i}@client.test" for i in range(45))
    assert len(dovecot.list_uids(imap_account.user, "Processed")) == 45
    assert not dovecot.list_uids(imap_account.user, "INBOX")
    with Session(app.engine) as session:
        stored = session.exec(select(InboundMail.message_id)).all()
    assert sorted(stored) == sorted(f"p{i}@client.test" for i in range(45))
    app.dispose()


async def test_two_daemons_on_one_mailbox_store_and_answer_each_mail_once(
    dovecot: Dovecot, imap_account: ImapAccount, smtp_server: SmtpCapture, db_url: str,
    tmp_path: Path,
) -> None:
    """Two daemons (their own engines, as two processes would have) drain the
    same IMAP mailbox into one database at the same time, in small batches
    that overlap. Whatever UIDs both fetch, each mail becomes one ticket and
    one confirmation, nothing is quarantined, and the inbox ends empty."""
    count = 40
    for raw in _mails(count):
        dovecot.append(imap_account.user, "INBOX", raw)
    config = write_config(tmp_path, db_url=db_url,
                          inbound=imap_inbound(imap_account, batch_size=4),
                          outbound=smtp_outbound(smtp_server))
    apps = [make_app(config), make_app(config)]
    try:
        first, second = await asyncio.gather(*(Daemon(app).once() for app in apps))
        outcomes = [*first, *second]
        assert {o.status for o in outcomes} <= {"done", "duplicate"}
        assert sorted(o.fetched.uid or 0 for o in outcomes if o.status == "done") == sorted(
            dovecot.list_uids(imap_account.user, "Processed"))
        assert sorted(t.subject for t in _tickets(apps[0])) == sorted(
            f"Problem number {i}" for i in range(count))
        with Session(apps[0].engine) as session:
            stored = session.exec(select(InboundMail.message_id)).all()
            sent = session.exec(select(Outbox.status)).all()
        assert sorted(stored) == sorted(f"p{i}@client.test" for i in range(count))
        assert set(sent) == {"sent"} and len(sent) == 2 * count
        confirmations = [m for m in smtp_server.wait_for_messages(2 * count)
                         if m.rcpt_tos[0].startswith("client")]
        assert sorted(m.rcpt_tos[0] for m in confirmations) == sorted(
            f"client{i}@client.test" for i in range(count))
        assert dovecot.list_uids(imap_account.user, "INBOX") == []
        assert len(dovecot.list_uids(imap_account.user, "Processed")) == count
    finally:
        for app in apps:
            app.dispose()
