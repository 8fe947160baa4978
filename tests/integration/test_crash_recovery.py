"""kill -9 the daemon at random points, over and over: nothing lost, nothing twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlmodel import Session, func, select

from helpdesk.models import InboundMail, Outbox, Ticket
from tests.support.config import cli, imap_inbound, make_app, smtp_outbound, write_config
from tests.support.dovecot import Dovecot, ImapAccount
from tests.support.mail import make_mail
from tests.support.smtpd import SmtpCapture

DAEMON = [sys.executable, "-c", "from helpdesk.cli import main; raise SystemExit(main())"]
MESSAGES = 60


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as stderr:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [*DAEMON, "--config", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _wait_for_a_ticket(app: Any, seconds: float = 20) -> None:
    """Until the daemon under test has committed its first ticket."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with Session(app.engine) as session:
            if session.exec(select(Ticket)).first() is not None:
                return
        time.sleep(0.05)
    raise AssertionError("the daemon committed no ticket in time")


def test_kill_9_at_random_points_leaves_every_message_exactly_once(
    dovecot: Dovecot, imap_account: ImapAccount, smtp_server: SmtpCapture, db_url: str,
    tmp_path: Path,
) -> None:
    rng = random.Random(20261123)
    for i in range(MESSAGES):
        dovecot.append(imap_account.user, "INBOX", make_mail(
            sender=f"client{i}@client.test", subject=f"Crash case {i}",
            message_id=f"<crash{i}@client.test>", body=f"Body {i}\n" + "x" * rng.randint(0, 4000),
        ))
    # Small batches, so kills land between fetch, commit, MOVE and SMTP.
    config = write_config(tmp_path, db_url=db_url,
                          inbound=imap_inbound(imap_account, batch_size=4, poll_interval=1),
                          outbound=smtp_outbound(smtp_server))
    assert cli(config, "db", "upgrade")[0] == 0
    app = make_app(config)
    log = tmp_path / "daemon.log"
    kills = 0
    for _ in range(8):
        proc = _start(config, log)
        time.sleep(rng.uniform(0.8, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
        with Session(app.engine) as session:
            done = session.exec(select(func.count()).select_from(Ticket)).one()
        if done >= MESSAGES:
            break
    # Finish the work with a clean run.
    code, _, err = cli(config, "run", "--once")
    assert code == 0, err

    with Session(app.engine) as session:
        subjects = sorted(session.exec(select(Ticket.subject)).all())
        inbound = session.exec(select(InboundMail)).all()
        confirmations = session.exec(
            select(Outbox.rcpt).where(Outbox.purpose == "confirmation")
        ).all()
        unsent = session.exec(select(Outbox).where(Outbox.status != "sent")).all()
    assert kills >= 1
    assert subjects == sorted(f"Crash case {i}" for i in range(MESSAGES))
    assert len(inbound) == MESSAGES and {r.status for r in inbound} == {"done"}
    assert sorted(confirmations) == sorted(f"client{i}@client.test" for i in range(MESSAGES))
    assert unsent == []
    # Every client's confirmation reached the SMTP server; a kill in the instant
    # between the server's 250 and our commit may repeat one, never lose one.
    delivered = [m.rcpt_tos[0] for m in smtp_server.messages if m.rcpt_tos[0].startswith("client")]
    assert set(delivered) == {f"client{i}@client.test" for i in range(MESSAGES)}
    assert len(delivered) - MESSAGES <= kills
    assert dovecot.list_uids(imap_account.user, "INBOX") == []
    assert len(dovecot.list_uids(imap_account.user, "Processed")) == MESSAGES
    app.dispose()


def test_killed_between_commit_and_send_sends_after_restart_once(
    smtp_server: SmtpCapture, tmp_path: Path
) -> None:
    """The confirmation is committed with the ticket; the process dies before
    the sender runs; the next start sends it, once."""
    config = write_config(tmp_path, outbound=smtp_outbound(smtp_server))
    smtp_server.refuse(code=421, stage="RCPT")  # nothing can go out yet
    maildir = tmp_path / "mail" / "new"
    maildir.mkdir(parents=True)
    (maildir / "1.eml").write_bytes(make_mail(sender="carol@client.test",
                                              message_id="<k1@client.test>"))
    proc = _start(config, tmp_path / "daemon.log")
    app = make_app(config)
    _wait_for_a_ticket(app)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert not [m for m in smtp_server.messages if m.rcpt_tos == ("carol@client.test",)]
    smtp_server.accept()
    code, _, err = cli(config, "outbox", "retry", "--failed")
    assert code == 0, err
    # Backoff may have pushed the retry a little into the future.
    env = {**os.environ, "HELPDESK_CLOCK_OFFSET_SECONDS": "5"}
    done = subprocess.run([*DAEMON, "--config", str(config), "run", "--once"], env=env,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    to_carol = [m for m in smtp_server.messages if m.rcpt_tos == ("carol@client.test",)]
    assert len(to_carol) == 1
    done = subprocess.run([*DAEMON, "--config", str(config), "run", "--once"], env=env,
                          capture_output=True, timeout=60)
    assert done.returncode == 0
    assert len([m for m in smtp_server.messages if m.rcpt_tos == ("carol@client.test",)]) == 1
    app.dispose()


def test_sigterm_finishes_cleanly_and_keeps_everything(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    maildir = tmp_path / "mail" / "new"
    maildir.mkdir(parents=True)
    (maildir / "1.eml").write_bytes(make_mail(message_id="<term@client.test>"))
    proc = subprocess.Popen([*DAEMON, "--config", str(config), "run"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    app = make_app(config)
    _wait_for_a_ticket(app)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert b"daemon stopped" in err
    assert list((tmp_path / "mail" / ".Processed" / "cur").iterdir())
    app.dispose()


def test_scheduler_wakes_at_the_next_deadline_not_the_next_interval(tmp_path: Path) -> None:
    """Enterprise plan (24x7), Critical: the warning falls due 45 minutes after
    creation. The daemon starts 8 seconds before that, with an SLA interval
    of ten minutes: only the one-shot wake-up at next_sla_at can send it."""
    config = write_config(tmp_path, extra='\n[sla]\ninterval = 600\ndefault_plan = "enterprise"\n')
    raw = tmp_path / "in.eml"
    raw.write_bytes(make_mail(subject="[Critical] Payroll down", message_id="<wake@client.test>"))
    created = time.monotonic()
    assert cli(config, "ingest", str(raw))[0] == 0
    offset = 45 * 60 - 8 - (time.monotonic() - created)
    env = {**os.environ, "HELPDESK_CLOCK_OFFSET_SECONDS": str(offset)}
    with open(tmp_path / "daemon.log", "ab") as stderr:
        proc = subprocess.Popen([*DAEMON, "--config", str(config), "run"],
                                stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    sent = tmp_path / "sent" / "new"
    warning = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and warning is None:
        for path in sent.glob("*") if sent.exists() else []:
            if b"SLA warning" in path.read_bytes():
                warning = path
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    assert warning is not None, (tmp_path / "daemon.log").read_text()
    assert b"[HD-000001] SLA warning: first response" in warning.read_bytes()
