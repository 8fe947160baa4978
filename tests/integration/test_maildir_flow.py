"""The embedded default end to end: Maildir in, SQLite, Maildir out, via the CLI."""

from __future__ import annotations

import asyncio
import email
import mailbox
import subprocess
import sys
from email.policy import default
from pathlib import Path

import pytest

from helpdesk.db import HEAD
from helpdesk.ingest.maildir import MaildirSource
from tests.support.config import cli, cli_json, write_config
from tests.support.mail import make_mail


def _deliver(tmp_path: Path, *raws: bytes) -> None:
    box = mailbox.Maildir(str(tmp_path / "mail"), create=True)
    for raw in raws:
        box.add(raw)


def _sent(tmp_path: Path) -> list[email.message.EmailMessage]:
    folder = tmp_path / "sent" / "new"
    return [
        email.message_from_bytes(p.read_bytes(), policy=default)  # type: ignore[misc]
        for p in sorted(folder.iterdir())
    ] if folder.exists() else []


def test_new_mail_becomes_ticket_with_confirmation(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _deliver(tmp_path, make_mail(subject="Printer is broken", message_id="<m1@client.test>"),
             make_mail(sender="dan@client.test", subject="[High] VPN down",
                       message_id="<m2@client.test>"))
    code, _, err = cli(config, "run", "--once")
    assert code == 0, err

    listed = cli_json(config, "tickets", "list")
    assert [t["reference"] for t in listed] == ["HD-000001", "HD-000002"]
    assert listed[1]["priority"] == "high"
    assert listed[1]["subject"] == "VPN down"
    assert all(t["first_response_due"] for t in listed)

    shown = cli_json(config, "tickets", "show", "HD-000001")
    inbound = [m for m in shown["messages"] if m["direction"] == "inbound"]
    assert inbound[0]["message_id"] == "m1@client.test"
    assert "printer on floor 2" in inbound[0]["body"]

    sent = _sent(tmp_path)
    confirmations = [m for m in sent if m["To"] and "carol@client.test" in m["To"]]
    assert len(confirmations) == 1
    conf = confirmations[0]
    assert conf["Subject"] == "[HD-000001] Printer is broken"
    assert conf["Auto-Submitted"] == "auto-replied"
    assert conf["In-Reply-To"] == "<m1@client.test>"
    assert conf["Reply-To"].addresses[0].addr_spec.startswith("support+HD-000001.")
    text = conf.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "HD-000001" in text and "Medium" in text and "First response" in text
    # The inbox is empty and both mails are kept in the Processed folder.
    assert not list((tmp_path / "mail" / "new").iterdir())
    assert len(list((tmp_path / "mail" / ".Processed" / "cur").iterdir())) == 2


def test_running_twice_does_not_duplicate(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    raw = make_mail(message_id="<same@client.test>")
    _deliver(tmp_path, raw)
    assert cli(config, "run", "--once")[0] == 0
    # The same bytes arrive again (a crash before the acknowledgement).
    _deliver(tmp_path, raw)
    assert cli(config, "run", "--once")[0] == 0
    assert len(cli_json(config, "tickets", "list")) == 1


def test_reply_to_confirmation_threads(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _deliver(tmp_path, make_mail(message_id="<orig@client.test>"))
    cli(config, "run", "--once")
    conf = _sent(tmp_path)[0] if "carol" in str(_sent(tmp_path)[0]["To"]) else _sent(tmp_path)[1]
    reply = make_mail(subject="Re: something else entirely", body="Any news?\n",
                      message_id="<reply@client.test>", in_reply_to=conf["Message-ID"],
                      references=f"<orig@client.test> {conf['Message-ID']}")
    _deliver(tmp_path, reply)
    cli(config, "run", "--once")
    tickets = cli_json(config, "tickets", "list")
    assert len(tickets) == 1
    shown = cli_json(config, "tickets", "show", "HD-000001")
    bodies = [m["body"] for m in shown["messages"] if m["direction"] == "inbound"]
    assert bodies[-1].strip() == "Any news?"


def test_empty_message_is_quarantined_and_next_processed(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _deliver(tmp_path, b"\r\n\r\n", make_mail(message_id="<after@client.test>"))
    assert cli(config, "run", "--once")[0] == 0
    held = cli_json(config, "quarantine", "list")
    assert len(held) == 1 and held[0]["reason"] == "unparseable"
    assert len(cli_json(config, "tickets", "list")) == 1
    assert len(list((tmp_path / "mail" / ".Quarantine" / "cur").iterdir())) == 1


def test_the_team_hears_of_held_mail_once_an_hour_and_can_dismiss_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, helpdesk={"max_message_size": 1000})
    _deliver(tmp_path, make_mail(sender="kim@client.test", subject="Logs attached",
                                 message_id="<big1@client.test>", body="x" * 2000 + "\n"),
             b"\r\n\r\n", make_mail(message_id="<big2@client.test>", body="y" * 2000 + "\n"))
    assert cli(config, "run", "--once")[0] == 0
    held = cli_json(config, "quarantine", "list")
    assert [h["reason"] for h in held] == ["over_max_size", "unparseable", "over_max_size"]

    def notices() -> list[email.message.EmailMessage]:
        return [m for m in _sent(tmp_path) if "held in quarantine" in str(m["Subject"])]

    [notice] = notices()
    assert str(notice["To"]) == "Example Support team <team@example.test>"
    assert notice["Auto-Submitted"] == "auto-generated"  # RFC 3834 §5: answers no mail
    text = notice.get_body().get_content()  # type: ignore[union-attr]
    assert f"id {held[0]['id']}: over_max_size" in text
    assert "From:       kim@client.test" in text and "Subject:    Logs attached" in text
    assert "helpdesk quarantine replay ID" in text
    # The other two came within the hour: no notice of their own, and none
    # while the hour lasts ...
    assert cli(config, "run", "--once")[0] == 0
    assert len(notices()) == 1
    # ... then one for both, though no more mail was held.
    monkeypatch.setenv("HELPDESK_CLOCK_OFFSET_SECONDS", "3700")
    assert cli(config, "run", "--once")[0] == 0
    [_, later] = notices()  # in the order sent
    text = later.get_body().get_content()  # type: ignore[union-attr]
    assert str(later["Subject"]) == "2 mails held in quarantine"
    assert f"id {held[1]['id']}: unparseable" in text and f"id {held[2]['id']}" in text
    assert f"id {held[0]['id']}:" not in text
    assert cli(config, "run", "--once")[0] == 0
    assert len(notices()) == 2  # told once
    code, _, err = cli(config, "quarantine", "dismiss", str(held[1]["id"]))
    assert code == 0, err
    assert [h["status"] for h in cli_json(config, "quarantine", "list")] == [
        "held", "dismissed", "held"]
    (result,) = cli_json(config, "quarantine", "replay", str(held[1]["id"]))
    assert result["status"] == "dismissed"  # not processed again
    assert cli(config, "quarantine", "dismiss", str(held[1]["id"]))[0] != 0


def test_a_quarantine_notice_that_fails_takes_nothing_else_down(tmp_path: Path) -> None:
    """A replacement template that fails as it renders (a sixth hold where
    there is one): the mail is still held, and the next one processed."""
    template = tmp_path / "held.txt.j2"
    template.write_text("Held: {{ holds[5].id }}\n")
    config = write_config(tmp_path, helpdesk={"max_message_size": 1000},
                          extra=f'[templates]\nquarantine_notice = "{template}"\n')
    _deliver(tmp_path, make_mail(message_id="<big@client.test>", body="x" * 2000 + "\n"),
             make_mail(message_id="<fine@client.test>"))
    code, _, err = cli(config, "run", "--once")
    assert code == 0, err
    assert [h["reason"] for h in cli_json(config, "quarantine", "list")] == ["over_max_size"]
    assert [t["reference"] for t in cli_json(config, "tickets", "list")] == ["HD-000001"]
    assert not [m for m in _sent(tmp_path) if "quarantine" in str(m["Subject"])]


def test_mail_over_max_message_size_is_kept_whole_and_replays_once_the_limit_is_raised(
    tmp_path: Path,
) -> None:
    """Fetched whole but above the limit: unlike mail of which only the start
    was fetched, nothing needs to come back from the mailbox."""
    small = write_config(tmp_path, helpdesk={"max_message_size": 1000})
    _deliver(tmp_path, make_mail(message_id="<big@client.test>", body="x" * 2000 + "\n"))
    assert cli(small, "run", "--once")[0] == 0
    (held,) = cli_json(small, "quarantine", "list")
    assert held["reason"] == "over_max_size" and held["size"] > 2000
    (again,) = cli_json(small, "quarantine", "replay", str(held["id"]))
    assert again["status"] == "held" and "raise it and replay" in again["detail"]
    raised = write_config(tmp_path)
    (replayed,) = cli_json(raised, "quarantine", "replay", str(held["id"]))
    assert replayed["status"] == "replayed" and replayed["reference"] == "HD-000001"
    assert [t["reference"] for t in cli_json(raised, "tickets", "list")] == ["HD-000001"]


def test_the_cli_refuses_statuses_and_rows_that_do_not_exist(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    for command in (["tickets", "list", "--status", "opne"],
                    ["outbox", "list", "--status", "lost"]):
        with pytest.raises(SystemExit) as stopped:  # argparse: "invalid choice", usage
            cli(config, *command)
        assert stopped.value.code == 2
    assert cli(config, "tickets", "list", "--status", "open")[0] == 0
    code, out, err = cli(config, "outbox", "retry", "999")
    assert code == 1 and out == "" and "no failed or suppressed outbox row 999" in err


def test_output_piped_into_a_reader_that_stops_is_no_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _deliver(tmp_path, *(make_mail(sender=f"c{i}@client.test", message_id=f"<bp{i}@client.test>")
                         for i in range(300)))
    assert cli(config, "run", "--once")[0] == 0
    command = Path(sys.executable).with_name("helpdesk")
    # `head -c 1` exits after one byte; the listing (300 tickets) is far
    # more than the pipe holds, so later writes meet a closed pipe.
    done = subprocess.run(
        ["bash", "-c", f"'{command}' --config '{config}' tickets list --json | head -c 1;"
                       " exit ${PIPESTATUS[0]}"],
        capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "[", "")


def test_the_priority_phrases_of_the_config_decide_new_tickets(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra='\n[priority]\ncritical = ["payroll down"]\n')
    _deliver(tmp_path, make_mail(subject="Payroll down again", message_id="<pd@client.test>"),
             make_mail(subject="Outage planned tonight?", message_id="<op@client.test>",
                       sender="other@client.test"))
    assert cli(config, "run", "--once")[0] == 0
    by_subject = {t["subject"]: t["priority"] for t in cli_json(config, "tickets", "list")}
    assert by_subject == {"Payroll down again": "critical", "Outage planned tonight?": "medium"}


def test_an_empty_quarantined_message_can_be_shown(tmp_path: Path) -> None:
    """Zero bytes come back from the database as no value at all."""
    config = write_config(tmp_path)
    (tmp_path / "mail" / "new").mkdir(parents=True)
    (tmp_path / "mail" / "new" / "1.empty").write_bytes(b"")
    assert cli(config, "run", "--once")[0] == 0
    (held,) = cli_json(config, "quarantine", "list")
    shown = cli_json(config, "quarantine", "show", str(held["id"]))
    assert (shown["reason"], shown["raw"]) == ("unparseable", "")


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    broken = write_config(tmp_path, db_url="postgresql+psycopg://nobody:hunter2@127.0.0.1:1/none")
    for command in (["tickets", "list"], ["db", "status"], ["sla", "report"]):
        code, out, err = cli(broken, *command)
        assert code == 75, (command, err)
        assert err.startswith("helpdesk: database unavailable (postgresql+psycopg://nobody:****")
        assert "port 1 failed" in err and len(err.strip().splitlines()) == 1
        assert "hunter2" not in out + err


def test_a_statement_at_fault_is_not_reported_as_an_unreachable_database(
    tmp_path: Path,
) -> None:
    """SQLite reports "no such column" as an OperationalError too: that is a
    bug to see in full, not a reason for an MTA to retry for days."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    config = write_config(tmp_path)
    assert cli(config, "tickets", "list")[0] == 0
    with sqlite3.connect(tmp_path / "helpdesk.db") as conn:
        conn.execute("ALTER TABLE ticket RENAME COLUMN subject TO subject_renamed")
    with pytest.raises(OperationalError, match="no such column"):
        cli(config, "tickets", "list")


def test_pipe_ingest_exit_codes(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    raw_path = tmp_path / "in.eml"
    raw_path.write_bytes(make_mail(message_id="<pipe@client.test>"))
    code, out, _ = cli(config, "ingest", str(raw_path))
    assert code == 0 and '"HD-000001"' in out
    # A database that cannot be reached: the MTA must retry (EX_TEMPFAIL).
    broken = write_config(tmp_path, db_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert cli(broken, "ingest", str(raw_path))[0] == 75


def test_outdated_schema_is_refused_with_the_fix(pg_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, db_url=pg_url, auto_upgrade=False)
    code, _, err = cli(config, "tickets", "list")
    assert code == 78 and "helpdesk db upgrade" in err
    code, out, _ = cli(config, "db", "upgrade")
    assert code == 0 and f'"current": "{HEAD}"' in out
    assert cli(config, "tickets", "list")[0] == 0


def test_check_config_refuses_what_the_daemon_would_refuse(tmp_path: Path) -> None:
    """Without starting anything: no secret file written, no database opened."""
    pg = write_config(tmp_path, db_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
                      helpdesk={"secret": ""})
    code, _, err = cli(pg, "check-config")
    assert code == 78 and "helpdesk.secret" in err and "required with PostgreSQL" in err
    embedded = write_config(tmp_path, helpdesk={"secret": ""})
    assert cli(embedded, "check-config")[0] == 0
    assert not list(tmp_path.glob("helpdesk.db*"))  # neither the database nor its secret
    missing = write_config(tmp_path, extra='\n[templates]\nconfirmation = "/nowhere.txt.j2"\n')
    code, _, err = cli(missing, "check-config")
    assert code == 78 and "templates.confirmation" in err
    broken = tmp_path / "broken.txt.j2"
    broken.write_text("Your reference is {{ reference }.\n")
    config = write_config(tmp_path, extra=f'\n[templates]\nconfirmation = "{broken}"\n')
    code, _, err = cli(config, "check-config")
    assert code == 78 and "templates.confirmation" in err and "confirmation.txt" in err
    # The daemon refuses it too, before taking any mail.
    _deliver(tmp_path, make_mail(message_id="<kept@client.test>"))
    code, _, err = cli(config, "run", "--once")
    assert code == 78 and "templates.confirmation" in err
    assert len(list((tmp_path / "mail" / "new").iterdir())) == 1


def test_a_replacement_template_naming_what_its_mail_is_not_given_is_refused(
    tmp_path: Path,
) -> None:
    """Rendered strictly, it would fail every confirmation, and with it the
    ingest of every new mail: refused at start, naming the key."""
    wrong = tmp_path / "confirmation.txt.j2"
    wrong.write_text("Ticket {{ reference }}: see {{ ticket_url }}\n")
    config = write_config(tmp_path, extra=f'\n[templates]\nconfirmation = "{wrong}"\n')
    for command in (("check-config",), ("run", "--once")):
        code, _, err = cli(config, *command)
        assert code == 78 and "templates.confirmation" in err and "ticket_url" in err
    # Any name every ticket mail is given will do, used by the built-in one or not.
    wrong.write_text("Ticket {{ reference }} on the {{ plan }} plan, {{ first_response_due }}\n")
    assert cli(config, "check-config")[0] == 0
    template = tmp_path / "held.txt.j2"
    template.write_text("Held: {{ reference }}\n")  # a notice about no ticket
    config = write_config(tmp_path, extra=f'\n[templates]\nquarantine_notice = "{template}"\n')
    code, _, err = cli(config, "check-config")
    assert code == 78 and "templates.quarantine_notice" in err and "reference" in err


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    config = write_config(tmp_path, helpdesk={"secret": "very-secret-token"})
    code, out, _ = cli(config, "check-config")
    assert code == 0 and "very-secret-token" not in out and "********" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[outbound]\nport = "twenty-five"\n')
    code, _, err = cli(bad, "run", "--once")
    assert code == 78 and "outbound.port" in err and "whole number" in err


def test_billing_query_is_categorised_and_the_billing_address_told(tmp_path: Path) -> None:
    config = write_config(tmp_path, helpdesk={"billing_address": "billing@example.test"})
    _deliver(tmp_path, make_mail(subject="[Billing] Invoice 42 charged twice",
                                 message_id="<bill@client.test>"),
             make_mail(sender="dan@client.test", subject="Printer jam",
                       message_id="<jam@client.test>"))
    assert cli(config, "run", "--once")[0] == 0
    tickets = {t["subject"]: t for t in cli_json(config, "tickets", "list")}
    assert tickets["Invoice 42 charged twice"]["category"] == "billing"
    assert tickets["Printer jam"]["category"] != "billing"
    to_billing = [m for m in _sent(tmp_path) if "billing@example.test" in str(m["To"])]
    assert len(to_billing) == 1
    assert "Invoice 42 charged twice" in str(to_billing[0]["Subject"])


def test_customer_plan_region_and_team_address_come_from_the_config(tmp_path: Path) -> None:
    extra = ('\n[[customers]]\nname = "Acme"\ndomains = ["acme.test"]\nplan = "enterprise"\n'
             'region = "APAC"\nteam_address = "acme-desk@example.test"\n')
    config = write_config(tmp_path, extra=extra)
    _deliver(tmp_path, make_mail(sender="ops@acme.test", subject="[High] Sync broken",
                                 message_id="<acme@acme.test>"),
             make_mail(sender="someone@elsewhere.test", subject="Hello",
                       message_id="<other@elsewhere.test>"))
    assert cli(config, "run", "--once")[0] == 0
    tickets = {t["requester"]: t for t in cli_json(config, "tickets", "list")}
    assert tickets["ops@acme.test"]["plan"] == "enterprise"
    assert tickets["someone@elsewhere.test"]["plan"] == "standard"
    news = {str(m["To"]) for m in _sent(tmp_path) if "New:" in str(m["Subject"])}
    assert any("acme-desk@example.test" in to for to in news)
    assert any("team@example.test" in to for to in news)


def test_a_mail_failing_after_its_ticket_was_made_fails_alone(tmp_path: Path) -> None:
    """Its savepoint takes the ticket back (number included); the mails
    around it in the same batch, on either side, are stored as usual."""
    template = tmp_path / "confirm.txt.j2"
    # Fails only while rendering the confirmation for "boom", after the
    # ticket row, its participants and its first event were written.
    template.write_text('{% if "boom" in subject %}{{ subject.no_such_attribute }}{% endif %}'
                        "Your reference is {{ reference }}.\n")
    config = write_config(tmp_path, extra=f'\n[templates]\nconfirmation = "{template}"\n')
    subjects = ["first fine", "boom one", "second fine", "boom two", "third fine"]
    _deliver(tmp_path, *(make_mail(subject=s, message_id=f"<m{i}@client.test>")
                         for i, s in enumerate(subjects)))
    assert cli(config, "run", "--once")[0] == 0
    held = cli_json(config, "quarantine", "list")
    assert len(held) == 2 and {h["reason"] for h in held} == {"apply_failed"}
    made = sorted((t["reference"], t["subject"]) for t in cli_json(config, "tickets", "list"))
    # Numbers stay gap-free: the failed mails' numbers were rolled back too.
    assert [r for r, _ in made] == ["HD-000001", "HD-000002", "HD-000003"]
    assert sorted(s for _, s in made) == ["first fine", "second fine", "third fine"]
    confirmations = [m for m in _sent(tmp_path) if "Your reference is" in m.get_content()]
    assert len(confirmations) == 3


def test_batches_fetched_ahead_are_each_processed_once(tmp_path: Path) -> None:
    """The next batch is read while one is stored; with batches of 3, ten
    mails make four batches and every mail one ticket, none twice."""
    config = write_config(tmp_path, inbound={"kind": "maildir", "path": str(tmp_path / "mail"),
                                             "batch_size": 3})
    _deliver(tmp_path, *(make_mail(subject=f"request {i}", message_id=f"<b{i}@client.test>")
                         for i in range(10)))
    source = MaildirSource(str(tmp_path / "mail"), 1 << 20)
    first = asyncio.run(source.fetch(3))
    ahead = asyncio.run(source.fetch(3, frozenset(f.handle for f in first)))
    assert len(first) == len(ahead) == 3
    assert not {f.handle for f in first} & {f.handle for f in ahead}
    code, out, _ = cli(config, "run", "--once")
    assert code == 0 and '"processed": 10' in out
    subjects = sorted(t["subject"] for t in cli_json(config, "tickets", "list"))
    assert subjects == sorted(f"request {i}" for i in range(10))
    assert not list((tmp_path / "mail" / "new").iterdir())


def test_eight_bit_message_ids_are_stored_not_fatal(tmp_path: Path) -> None:
    """8-bit bytes in Message-ID, In-Reply-To and Return-Path (RFC 6532
    allows UTF-8 there) once reached the dedup key as surrogate escapes,
    which no codec writes: the whole pass failed on that one mail."""
    config = write_config(tmp_path)
    raw = make_mail(message_id="<m1@client.test>", headers={"Return-Path": "<r@client.test>"})
    raw = raw.replace(b"<m1@client.test>", "<jörg-1@bäckerei.test>".encode())
    raw = raw.replace(b"<r@client.test>", b"<r\xff@client.test>")
    _deliver(tmp_path, raw)
    code, _, err = cli(config, "run", "--once")
    assert code == 0, err
    shown = cli_json(config, "tickets", "show", "HD-000001")
    assert shown["messages"][0]["message_id"] == "jörg-1@bäckerei.test"


async def test_an_unexpected_failure_does_not_end_the_ingest_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug on one batch is logged and retried; the ingester must not end in
    silence while the rest of the daemon runs on."""
    from helpdesk.daemon import Ingester
    from helpdesk.ingest.pipeline import Pipeline
    from tests.support.config import make_app

    app = make_app(write_config(tmp_path))
    ingester = Ingester(app, app.settings.inbound[0])
    real = Pipeline.process
    calls: list[int] = []

    def first_fails(self: Pipeline, items: list[object]) -> object:
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real(self, items)  # type: ignore[arg-type]

    monkeypatch.setattr(Pipeline, "process", first_fails)
    monkeypatch.setattr(ingester.rng, "uniform", lambda a, b: 0.01)
    _deliver(tmp_path, make_mail(message_id="<m1@client.test>"))
    stop = asyncio.Event()
    task = asyncio.create_task(ingester.run(stop))
    for _ in range(200):
        if len(calls) >= 2 and not list((tmp_path / "mail" / "new").iterdir()):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert calls[:2] == [1, 1]
    assert cli_json(write_config(tmp_path), "tickets", "list")[0]["reference"] == "HD-000001"


def test_terminal_controls_in_client_text_are_not_printed(tmp_path: Path) -> None:
    """ESC sequences (clear screen, OSC 52 clipboard) and C1 controls from a
    mail must not reach the operator's terminal."""
    config = write_config(tmp_path)
    body = "Hello\x1b[2J\x1b]52;c;aGVsbG8=\x07 there\x9b31m\r\nbye\n"
    _deliver(tmp_path, make_mail(subject="Help\x1b[5m", body=body,
                                 message_id="<m1@client.test>"))
    assert cli(config, "run", "--once")[0] == 0
    for args in (("tickets", "show", "HD-000001"), ("tickets", "list"),
                 ("tickets", "show", "HD-000001", "--json"), ("tickets", "list", "--json")):
        code, out, err = cli(config, *args)
        assert code == 0, err
        assert not any(c in out for c in "\x1b\x07\x9b\r"), args
    code, out, _ = cli(config, "tickets", "show", "HD-000001")
    assert "Hello\ufffd[2J\ufffd]52;c;aGVsbG8=\ufffd there\ufffd31m" in out
    shown = cli_json(config, "tickets", "show", "HD-000001")
    assert "\x1b[2J" in shown["messages"][0]["body"]  # kept as it came, only shown safely


def _with_files(raw: bytes, *files: tuple[str, str, bytes]) -> bytes:
    msg = email.message_from_bytes(raw, policy=default)
    assert isinstance(msg, email.message.EmailMessage)
    for name, ctype, data in files:
        main, sub = ctype.split("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes()


def _files(msg: email.message.EmailMessage) -> list[tuple[str | None, bytes]]:
    return [(part.get_filename(), part.get_payload(decode=True))  # type: ignore[misc]
            for part in msg.iter_attachments()]


def test_attachments_reach_staff_and_client_and_can_be_saved(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    pdf, shot = b"%PDF-1.4 report" * 100, b"\x89PNG" + bytes(range(256)) * 40
    _deliver(tmp_path, _with_files(
        make_mail(subject="Printer is broken", message_id="<m1@client.test>"),
        ("../../etc/passwd", "text/plain", b"root:x:0:0\n"),
        ("rapport é.pdf", "application/pdf", pdf), ("screen.png", "image/png", shot)))
    assert cli(config, "run", "--once")[0] == 0
    [notice] = [m for m in _sent(tmp_path) if "team@example.test" in str(m["To"])]
    assert _files(notice) == [("passwd", b"root:x:0:0\n"), ("rapport é.pdf", pdf),
                              ("screen.png", shot)]
    [confirmation] = [m for m in _sent(tmp_path) if "carol" in str(m["To"])]
    assert _files(confirmation) == []  # the client has her files

    shown = cli_json(config, "tickets", "show", "HD-000001")
    listed = shown["messages"][0]["attachments"]
    assert [(a["filename"], a["size"]) for a in listed] == [
        ("../../etc/passwd", 11), ("rapport é.pdf", len(pdf)), ("screen.png", len(shot))]
    code, out, _ = cli(config, "tickets", "show", "HD-000001")
    assert f"[attachment {listed[1]['id']}: rapport é.pdf, application/pdf" in out
    folder = tmp_path / "saved"
    folder.mkdir()
    for a in listed:
        code, out, err = cli(config, "attachments", "save", str(a["id"]), "--to", str(folder))
        assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{listed[0]['id']}-passwd", f"{listed[1]['id']}-rapport__.pdf",
        f"{listed[2]['id']}-screen.png"]
    assert (folder / f"{listed[1]['id']}-rapport__.pdf").read_bytes() == pdf
    code, _, err = cli(config, "attachments", "save", str(listed[0]["id"]), "--to", str(folder))
    assert code != 0 and "exists already" in err
    assert cli(config, "attachments", "save", "999", "--to", str(folder))[0] != 0

    # Staff answer with a file of their own: the client gets it.
    _deliver(tmp_path, _with_files(
        make_mail(sender="Alice <alice@staff.example.test>",
                  subject="Re: [HD-000001] Printer is broken", body="The driver is attached.\n",
                  message_id="<a1@staff.example.test>"),
        ("driver-v2.zip", "application/zip", b"PK\x03\x04zip")))
    assert cli(config, "run", "--once")[0] == 0
    [relay] = [m for m in _sent(tmp_path)
               if "carol" in str(m["To"]) and "driver" in m.get_body().get_content()]
    assert _files(relay) == [("driver-v2.zip", b"PK\x03\x04zip")]


def test_web_form_mail_is_answered_at_its_reply_to(tmp_path: Path) -> None:
    """From noreply@ with the customer in Reply-To (RFC 5322 §3.6.2): the
    customer is the requester; a person's own Reply-To changes nothing."""
    config = write_config(tmp_path)
    _deliver(tmp_path,
             make_mail(sender="Portal <no-reply@portal.client.test>", subject="Form: VPN",
                       message_id="<f1@portal.client.test>",
                       headers={"Reply-To": "Kim Customer <kim@client.test>"}),
             make_mail(sender="Carol <carol@client.test>", subject="Printer",
                       message_id="<c1@client.test>",
                       headers={"Reply-To": "it-team@client.test"}),
             # A form's Reply-To naming staff does not make staff the requester.
             make_mail(sender="noreply@evil.test", subject="Form: refund",
                       message_id="<f2@evil.test>",
                       headers={"Reply-To": "alice@staff.example.test"}))
    assert cli(config, "run", "--once")[0] == 0
    listed = {t["subject"]: t["requester"] for t in cli_json(config, "tickets", "list")}
    assert listed == {"Form: VPN": "kim@client.test", "Printer": "carol@client.test",
                      "Form: refund": "noreply@evil.test"}
    confirmed = sorted(str(m["To"]) for m in _sent(tmp_path)
                       if m["Auto-Submitted"] and "client.test" in str(m["To"]))
    assert confirmed == ["Carol <carol@client.test>", "Kim Customer <kim@client.test>"]


def test_outbox_list_shows_every_recipient(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _deliver(tmp_path, make_mail(cc="bob@client.test", message_id="<m1@client.test>"))
    assert cli(config, "run", "--once")[0] == 0
    _deliver(tmp_path, make_mail(sender="Alice <alice@staff.example.test>",
                                 subject="Re: [HD-000001] Printer is broken",
                                 body="Fixed.\n", message_id="<a1@staff.example.test>"))
    assert cli(config, "run", "--once")[0] == 0
    rows = {r["purpose"]: r["to"] for r in cli_json(config, "outbox", "list")}
    assert rows["reply_relay"] == "carol@client.test, bob@client.test"


def test_files_above_the_sending_limit_are_listed_not_attached(tmp_path: Path) -> None:
    """A relay refuses mail above its size limit: a notice carrying too much
    would bounce, and a staff answer sent without some of its files would not
    be the answer written."""
    config = write_config(tmp_path, outbound={"kind": "maildir", "path": str(tmp_path / "sent"),
                                              "max_attach_bytes": 5000})
    small, big = b"s" * 3000, b"b" * 4000
    _deliver(tmp_path, _with_files(make_mail(message_id="<m1@client.test>"),
                                   ("small.log", "text/plain", small),
                                   ("big.log", "text/plain", big)))
    assert cli(config, "run", "--once")[0] == 0
    [notice] = [m for m in _sent(tmp_path) if "team@example.test" in str(m["To"])]
    assert _files(notice) == [("small.log", small)]
    text = notice.get_body().get_content()  # type: ignore[union-attr]
    assert "Not attached here" in text and "big.log (4000 bytes)" in text
    _deliver(tmp_path, _with_files(
        make_mail(sender="Alice <alice@staff.example.test>",
                  subject="Re: [HD-000001] Printer is broken",
                  body="#status resolved\n\nBoth logs back.\n",
                  message_id="<a1@staff.example.test>"),
        ("one.log", "text/plain", small), ("two.log", "text/plain", big)))
    assert cli(config, "run", "--once")[0] == 0
    mails = _sent(tmp_path)
    assert not [m for m in mails if "carol" in str(m["To"]) and "logs back" in str(m)]
    [refusal] = [m for m in mails if "Not relayed" in str(m["Subject"])]
    assert "two.log (4000 bytes) is more than outbound.max_attach_bytes (5000)" in (
        refusal.get_body().get_content())  # type: ignore[union-attr]
    # None of it was done: the ticket is not resolved without its answer.
    assert cli_json(config, "tickets", "show", "HD-000001")["status"] != "resolved"


def test_resolved_tickets_close_after_a_quiet_week(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Left resolved, a reply years later would reopen the ticket; closed, a
    reply after the reopen window opens a new one linked to it."""
    config = write_config(tmp_path)
    _deliver(tmp_path, make_mail(message_id="<m1@client.test>"))
    assert cli(config, "run", "--once")[0] == 0
    _deliver(tmp_path, make_mail(sender="Alice <alice@staff.example.test>",
                                 subject="Re: [HD-000001] Printer is broken",
                                 body="#status resolved\n\nFixed.\n",
                                 message_id="<a1@staff.example.test>"))
    assert cli(config, "run", "--once")[0] == 0
    day = 86_400
    monkeypatch.setenv("HELPDESK_CLOCK_OFFSET_SECONDS", str(6 * day))
    # A staff follow-up leaves it resolved, and the quiet week starts again.
    _deliver(tmp_path, make_mail(sender="Alice <alice@staff.example.test>",
                                 subject="Re: [HD-000001] Printer is broken",
                                 body="The new drum is fitted too.\n",
                                 message_id="<a2@staff.example.test>"))
    assert cli(config, "run", "--once")[0] == 0
    assert cli_json(config, "tickets", "show", "HD-000001")["status"] == "resolved"
    monkeypatch.setenv("HELPDESK_CLOCK_OFFSET_SECONDS", str(8 * day))
    assert cli(config, "run", "--once")[0] == 0
    assert cli_json(config, "tickets", "show", "HD-000001")["status"] == "resolved"
    monkeypatch.setenv("HELPDESK_CLOCK_OFFSET_SECONDS", str(14 * day))
    assert cli(config, "run", "--once")[0] == 0
    shown = cli_json(config, "tickets", "show", "HD-000001")
    assert shown["status"] == "closed"
    assert [(e["actor"], e["detail"]) for e in shown["events"] if e["kind"] == "status"][-1] == (
        "helpdesk", {"old": "resolved", "new": "closed"})
    monkeypatch.setenv("HELPDESK_CLOCK_OFFSET_SECONDS", str(46 * day))
    _deliver(tmp_path, make_mail(subject="Re: [HD-000001] Printer is broken",
                                 body="It is broken again.\n", message_id="<m2@client.test>"))
    assert cli(config, "run", "--once")[0] == 0
    assert cli_json(config, "tickets", "show", "HD-000002")["linked_to"] == "HD-000001"
