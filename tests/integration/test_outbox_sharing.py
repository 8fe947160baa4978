"""Outbox rows shared by several daemons, and templates the administrator overrides."""

from __future__ import annotations

import asyncio
import email
from email.policy import default
from pathlib import Path

from helpdesk.daemon import Daemon
from helpdesk.ingest.pipeline import Pipeline
from helpdesk.ingest.source import Fetched
from tests.support.config import cli, cli_json, make_app, smtp_outbound, write_config
from tests.support.mail import make_mail
from tests.support.smtpd import SmtpCapture


async def test_two_senders_on_postgresql_send_each_row_once(
    pg_url: str, smtp_server: SmtpCapture, tmp_path: Path
) -> None:
    config = write_config(tmp_path, db_url=pg_url,
                          outbound=smtp_outbound(smtp_server, in_flight=3))
    apps = [make_app(config), make_app(config)]
    pipeline = Pipeline(apps[0])
    pipeline.process([
        Fetched("t", str(i), make_mail(sender=f"c{i}@client.test", message_id=f"<s{i}@c.test>"))
        for i in range(20)
    ])
    senders = [Daemon(app).sender for app in apps]
    for _ in range(30):
        handled = await asyncio.gather(*(s.send_due() for s in senders))
        if not any(handled):
            break
    for sender in senders:
        await sender.transport.close()
    rcpts = [m.rcpt_tos for m in smtp_server.messages]
    assert len(rcpts) == 40  # 20 confirmations and 20 team notifications
    confirmations = sorted(r[0] for r in rcpts if r[0] != "team@example.test")
    assert confirmations == sorted(f"c{i}@client.test" for i in range(20))
    rows = cli_json(config, "outbox", "list")
    assert {r["status"] for r in rows} == {"sent"} and all(r["attempts"] == 1 for r in rows)
    for app in apps:
        app.dispose()


def test_administrator_overrides_a_template_by_path(tmp_path: Path) -> None:
    custom = tmp_path / "my-confirmation.txt.j2"
    custom.write_text("Dear {{ requester_name or 'customer' }}, ticket {{ reference }} "
                      "({{ priority }}) is ours now. {{ first_response_due }}\n")
    config = write_config(tmp_path, extra=f'\n[templates]\nconfirmation = "{custom}"\n')
    maildir = tmp_path / "mail" / "new"
    maildir.mkdir(parents=True)
    (maildir / "1.eml").write_bytes(make_mail(message_id="<tpl@client.test>"))
    assert cli(config, "run", "--once")[0] == 0
    sent = [email.message_from_bytes(p.read_bytes(), policy=default)
            for p in (tmp_path / "sent" / "new").iterdir()]
    confirmation = next(m for m in sent if "carol@client.test" in str(m["To"]))
    body = confirmation.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert body.startswith("Dear Carol Client, ticket HD-000001 (medium) is ours now. by ")
    missing = write_config(tmp_path, extra='\n[templates]\nconfirmation = "/nonexistent.j2"\n')
    code, _, err = cli(missing, "run", "--once")
    assert code == 78 and "templates.confirmation" in err
