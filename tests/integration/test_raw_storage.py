"""Stored bytes come back exactly: raw messages (``inbound_raw``) and
attachments (``blob``), small ones bound as usual and large ones written in
slices (a blob handle on SQLite, COPY on PostgreSQL), from a Maildir and from
a real Dovecot; and the migration that moved the raw bytes."""

from __future__ import annotations

import mailbox
import random
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from bench.servers import crlf
from helpdesk.db import HEAD, alembic_config
from helpdesk.streamed import STREAM_ABOVE
from tests.support.config import cli, cli_json, imap_inbound, smtp_outbound, write_config
from tests.support.dovecot import Dovecot, ImapAccount
from tests.support.mail import make_mail
from tests.support.smtpd import SmtpCapture

BIG = STREAM_ABOVE * 2 + 12_345  # not a multiple of the slices written


def _deliver(tmp_path: Path, *raws: bytes) -> None:
    box = mailbox.Maildir(str(tmp_path / "mail"), create=True)
    for raw in raws:
        box.add(raw)


def _with_attachment(payload: bytes, message_id: str, sender: str = "carol@client.test") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.test"
    msg["Subject"] = f"Disk image {message_id}"
    msg["Date"] = format_datetime(datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    msg["Message-ID"] = f"<{message_id}>"
    msg.set_content("The image is attached.\n")
    msg.add_attachment(payload, maintype="application", subtype="octet-stream",
                       filename="disk.img")
    return msg.as_bytes()


def _payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def _raws(url: str) -> dict[str, bytes]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT m.message_id, r.raw FROM inbound_mail m "
                "JOIN inbound_raw r ON r.inbound_mail_id = m.id")).all()
    finally:
        engine.dispose()
    return {str(mid): bytes(raw) for mid, raw in rows}


def _blobs(url: str) -> list[bytes]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [bytes(data) for data in conn.execute(text("SELECT data FROM blob")).scalars()]
    finally:
        engine.dispose()


def test_raw_bytes_round_trip_small_and_large(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, db_url=db_url)
    small = make_mail(message_id="<small@client.test>")
    large = _with_attachment(_payload(BIG), "large@client.test")
    assert len(small) < STREAM_ABOVE < len(large)
    _deliver(tmp_path, small, large)
    code, _, err = cli(config, "run", "--once")
    assert code == 0, err
    assert len(cli_json(config, "tickets", "list")) == 2
    assert _raws(db_url) == {"small@client.test": small, "large@client.test": large}


def test_large_attachment_is_stored_exactly_and_once(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, db_url=db_url)
    payload = _payload(BIG)
    small = _payload(5_000)
    _deliver(tmp_path, _with_attachment(payload, "a1@client.test"),
             _with_attachment(payload, "a2@client.test", sender="dan@client.test"),
             _with_attachment(small, "a3@client.test"))
    code, _, err = cli(config, "run", "--once")
    assert code == 0, err
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            blobs = conn.execute(text("SELECT size, data FROM blob")).all()
            attached = conn.execute(text("SELECT size FROM attachment")).scalars().all()
    finally:
        engine.dispose()
    assert sorted(attached) == [len(small), BIG, BIG]
    # One row per content: the second copy of the large one wrote nothing.
    assert sorted((size, bytes(data)) for size, data in blobs) == [
        (len(small), small), (BIG, payload)]


def test_quarantined_large_message_replays(db_url: str, tmp_path: Path) -> None:
    write_config(tmp_path, db_url=db_url)
    payload = _payload(BIG)
    large = _with_attachment(payload, "held@client.test")
    _deliver(tmp_path, large)
    # A template the administrator broke makes processing fail: quarantine.
    # (One naming a value it is not given is refused at start; this one
    # fails only as it renders.)
    broken = tmp_path / "broken.txt.j2"
    broken.write_text("{{ reference.no_such_attribute }}\n")
    bad = write_config(tmp_path, db_url=db_url,
                       extra=f'\n[templates]\nconfirmation = "{broken}"\n')
    assert cli(bad, "run", "--once")[0] == 0
    held = cli_json(bad, "quarantine", "list")
    assert [(h["reason"], h["size"]) for h in held] == [("apply_failed", len(large))]
    code, out, _ = cli(bad, "quarantine", "show", str(held[0]["id"]))
    assert code == 0 and "Message-ID: <held@client.test>" in out
    good = write_config(tmp_path, db_url=db_url)
    code, out, err = cli(good, "quarantine", "replay", "--all")
    assert code == 0, err
    assert '"status": "replayed"' in out and '"reference": "HD-000001"' in out
    assert _raws(db_url) == {"held@client.test": large}
    assert _blobs(db_url) == [payload]


@pytest.mark.parametrize("auto", [False, True], ids=["db-upgrade", "auto-upgrade"])
def test_upgrade_from_0001_moves_raw_bytes(db_url: str, tmp_path: Path, auto: bool) -> None:
    config = write_config(tmp_path, db_url=db_url, auto_upgrade=auto)
    small = make_mail(message_id="<old-small@client.test>")
    large = _with_attachment(_payload(BIG), "old-large@client.test")
    engine = create_engine(db_url)
    try:
        command.upgrade(alembic_config(engine), "0001")
        with engine.begin() as conn:
            for n, (mid, raw) in enumerate(
                    [("old-small@client.test", small), ("old-large@client.test", large)], 1):
                conn.execute(text(
                    "INSERT INTO inbound_mail (id, source, uidvalidity, uid, message_id, sha256,"
                    " dedup_key, size, raw, received_at, status, outcome, error) VALUES (:id,"
                    " 'maildir', NULL, NULL, :mid, :sha, :key, :size, :raw, :at, 'quarantined',"
                    " 'apply_failed', 'boom')"),
                    {"id": n, "mid": mid, "sha": f"{n:064x}", "key": f"key{n}",
                     "size": len(raw), "raw": raw, "at": datetime(2026, 11, 23, 10, 0)})
                # Rows pointing at inbound_mail: the column must go without
                # dropping the table they refer to.
                conn.execute(text(
                    "INSERT INTO quarantine (inbound_mail_id, reason, detail, created_at,"
                    " status) VALUES (:id, 'apply_failed', 'boom', :at, 'held')"),
                    {"id": n, "at": datetime(2026, 11, 23, 10, 0)})
    finally:
        engine.dispose()
    if not auto:
        code, _, err = cli(config, "tickets", "list")
        assert code == 78 and "helpdesk db upgrade" in err
        code, out, err = cli(config, "db", "upgrade")
        assert code == 0 and f'"current": "{HEAD}"' in out, err
    held = cli_json(config, "quarantine", "list")
    assert [h["message_id"] for h in held] == ["old-small@client.test", "old-large@client.test"]
    assert _raws(db_url) == {"old-small@client.test": small, "old-large@client.test": large}
    engine = create_engine(db_url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("inbound_mail")}
    finally:
        engine.dispose()
    assert "raw" not in columns and "size" in columns
    # The moved bytes are what replay reads.
    code, out, err = cli(config, "quarantine", "replay", "--all")
    assert code == 0, err
    assert out.count('"status": "replayed"') == 2
    assert len(cli_json(config, "tickets", "list")) == 2


def test_large_mail_over_imap_is_stored_exactly_moved_and_confirmed(
    dovecot: Dovecot, imap_account: ImapAccount, smtp_server: SmtpCapture, db_url: str,
    tmp_path: Path,
) -> None:
    """End to end through the real servers: a message above STREAM_ABOVE
    fetched from Dovecot is written in slices (a blob handle on SQLite, COPY
    on PostgreSQL), byte for byte as the server holds it; then moved, and
    confirmed at the SMTP server."""
    payload = _payload(BIG)
    large = crlf(_with_attachment(payload, "imap-large@client.test"))
    dovecot.append(imap_account.user, "INBOX", large)
    config = write_config(tmp_path, db_url=db_url, inbound=imap_inbound(imap_account),
                          outbound=smtp_outbound(smtp_server))
    code, _, err = cli(config, "run", "--once")
    assert code == 0, err
    assert _raws(db_url) == {"imap-large@client.test": large}
    assert _blobs(db_url) == [payload]
    assert dovecot.list_uids(imap_account.user, "INBOX") == []
    assert len(dovecot.list_uids(imap_account.user, "Processed")) == 1
    to_client = [m for m in smtp_server.wait_for_messages(2)
                 if m.rcpt_tos[0] == "carol@client.test"]
    assert len(to_client) == 1 and b"HD-000001" in to_client[0].raw
