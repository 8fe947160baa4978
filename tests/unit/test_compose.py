from __future__ import annotations

import email
from datetime import UTC, datetime
from email.policy import default
from pathlib import Path

import pytest

from helpdesk.compose import LOOP_HEADER, Draft, UndeliverableAddressError, compose
from helpdesk.ingest.inbound import Address
from tests.support.mail import make_draft

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


_draft = make_draft


def _parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=default)  # type: ignore[return-value]


def test_subject_and_name_with_line_breaks_cannot_inject_headers() -> None:
    out = compose(_draft(
        subject="Hi\r\nBcc: victim@evil.test\r\nX-Injected: yes",
        to=(Address("carol@client.test", "Carol\r\nBcc: victim2@evil.test"),),
    ))
    msg = _parse(out.raw)
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    assert "victim@evil.test" in msg["Subject"]  # kept as text on the one line
    assert out.recipients == ("carol@client.test",)
    header_block = out.raw.split(b"\r\n\r\n", 1)[0]
    assert not any(line.startswith((b"Bcc", b"X-Injected")) for line in header_block.splitlines())


def test_address_with_line_break_is_refused() -> None:
    with pytest.raises(ValueError):
        compose(_draft(to=(Address("carol@client.test\r\nBcc: x@evil.test"),)))


def test_a_subject_with_separators_stays_on_one_line() -> None:
    subject = "Invoice " + "x" * 70 + "\x1cBcc: victim@evil.test\x1dX-A: b\x1e"
    out = compose(_draft(subject=subject))
    msg = _parse(out.raw)
    assert msg["Bcc"] is None and msg["X-A"] is None
    assert out.subject == "Invoice " + "x" * 70 + " Bcc: victim@evil.test X-A: b"


@pytest.mark.parametrize("control", ["\x1c", "\x1d", "\x1e", "\x00", "\x1b", "\x7f", "\t"])
def test_address_with_a_control_character_is_refused(control: str) -> None:
    # FS, GS and RS end a line for Python's str.splitlines, so the email
    # library would split a long To line there; none belongs in an address.
    with pytest.raises(UndeliverableAddressError):
        compose(_draft(to=(Address(f'"carol{control}x"@client.test'),)))


def test_non_ascii_subject_and_names_round_trip() -> None:
    out = compose(_draft(
        subject="[HD-000002] Überweisung fehlgeschlagen – 请帮忙",
        to=(Address("jose@client.test", "José Müller"),),
        from_addr=Address("support@example.test", "Support Ünïcode"),
        text="Grüße, 你好\n",
    ))
    assert out.raw.isascii()  # RFC 2047 / quoted-printable on the wire
    msg = _parse(out.raw)
    assert msg["Subject"] == "[HD-000002] Überweisung fehlgeschlagen – 请帮忙"
    assert msg["To"].addresses[0].display_name == "José Müller"
    body = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert body.rstrip() == "Grüße, 你好"


def test_automatic_mail_headers_and_threading() -> None:
    msg = _parse(compose(_draft(in_reply_to="orig@client.test", references=("a@x",))).raw)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg[LOOP_HEADER] == "support@example.test"
    assert msg["In-Reply-To"] == "<orig@client.test>"
    assert msg["References"] == "<a@x> <orig@client.test>"
    assert msg["Message-ID"] == "<hd.HD-000001.abc.tag@example.test>"


def test_only_ascii_ids_are_copied_into_threading_headers() -> None:
    """A client's 8-bit id (here U+2028, a line break to some parsers) is not
    sent on: RFC 5322 ids are ASCII, and SMTPUTF8 is not assumed."""
    out = compose(_draft(in_reply_to="\u2028Bcc:w@evil.test",
                         references=("a@x", "b\u2028Bcc:w@evil.test", "jörg@bäckerei.test",
                                     "c<d>@x", "ok@y")))
    assert out.raw.isascii()
    msg = _parse(out.raw)
    assert msg["In-Reply-To"] is None
    assert msg["References"] == "<a@x> <ok@y>"
    assert b"Bcc" not in out.raw
    none = _parse(compose(_draft(in_reply_to="jörg@bäckerei.test", references=())).raw)
    assert none["In-Reply-To"] is None and none["References"] is None


def test_relayed_human_reply_is_not_marked_automatic() -> None:
    msg = _parse(compose(_draft(automatic=False)).raw)
    assert msg["Auto-Submitted"] is None and msg["Precedence"] is None
    assert msg[LOOP_HEADER] == "support@example.test"  # every mail names the instance


def test_html_alternative() -> None:
    msg = _parse(compose(_draft(html="<p>Hello</p>")).raw)
    assert msg.get_content_type() == "multipart/alternative"
    assert "<p>Hello</p>" in msg.get_body(("html",)).get_content()  # type: ignore[union-attr]


def test_headers_written_without_folding_are_the_bytes_compat32_folds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The short-cut for one-line ASCII headers changes no byte: random
    subjects, names and References (long, non-ASCII, encoded-word look-alikes,
    doubled spaces) compose exactly as with the stdlib's compat32 policy."""
    import random
    from email.policy import compat32

    from helpdesk import compose as module

    rng = random.Random(5)
    words = ["printer", "[HD-000123]", "Re:", "x" * 70, "a" * 200, "ünïcode", "  ", "\t",
             "日本語", "=?utf-8?q?x?=", ";", ",", '"q"', "(c)", "Grüße", "ok"]
    stdlib = compat32.clone(linesep="\r\n")
    for i in range(1500):
        subject = " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        name = " ".join(rng.choice(words) for _ in range(rng.randint(0, 4)))
        draft = Draft(
            purpose="p", from_addr=Address("support@example.test", name),
            to=(Address("carol@client.test", name[::-1]),), subject=subject, text="hi",
            message_id=f"id{i}@example.test", date=datetime(2026, 1, 1, tzinfo=UTC),
            automatic=bool(i % 2), loop_value=subject[:40] or "x",
            references=tuple(f"r{j}.{'y' * rng.randint(1, 60)}@x"
                             for j in range(rng.randint(0, 6))),
            in_reply_to="p@x" if i % 3 else "",
        )
        ours = compose(draft).raw
        monkeypatch.setattr(module, "_WIRE", stdlib)
        assert compose(draft).raw == ours, (subject, name)
        monkeypatch.undo()


def test_files_go_in_multipart_mixed_without_reaching_the_headers() -> None:
    from helpdesk.ingest.inbound import Attachment

    def file(name: str, ctype: str, data: bytes) -> Attachment:
        return Attachment(filename=name, content_type=ctype, payload=data, sha256="")

    out = compose(_draft(text="See the files.", attachments=(
        file('a"\r\nBcc: victim@evil.test\r\n.pdf', "application/pdf\r\nX-Injected: 1", b"%PDF"),
        file("C:\\Users\\me\\résumé.docx", "application/vnd.openxmlformats", b"PK"),
        file("", "text/plain", b"x" * 200),
        file("é" * 200, "application/pdf", b"%PDF"),
        file("forwarded.eml", "message/rfc822", b"From: a@b.test\r\n\r\nhi\r\n"),
    )))
    msg = _parse(out.raw)
    assert msg.get_content_type() == "multipart/mixed"
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    assert out.recipients == ("carol@client.test",)
    body, *files = msg.iter_parts()
    assert body.get_content().strip() == "See the files."  # type: ignore[attr-defined]
    assert [(f.get_filename(), f.get_content_type(), f.get_payload(decode=True))
            for f in files] == [
        ('a"__Bcc: victim@evil.test__.pdf', "application/octet-stream", b"%PDF"),
        ("résumé.docx", "application/vnd.openxmlformats", b"PK"),
        ("attachment", "text/plain", b"x" * 200),
        ("é" * 200, "application/pdf", b"%PDF"),  # RFC 2231 §3 pieces
        # RFC 2046 §5.2.1: a message/* part may not be base64.
        ("forwarded.eml", "application/octet-stream", b"From: a@b.test\r\n\r\nhi\r\n"),
    ]
    # Every line within RFC 5322 §2.1.1's 78 columns: the headers, the
    # parts' headers, the base64 and the quoted-printable.
    assert max(len(line) for line in out.raw.split(b"\r\n")) <= 78


def test_every_ticket_mail_is_given_the_names_templates_are_checked_against(
    tmp_path: Path,
) -> None:
    from helpdesk.models import Ticket
    from helpdesk.notify import base_context
    from helpdesk.templates import TICKET_NAMES
    from tests.support.config import make_app, write_config

    app = make_app(write_config(tmp_path))
    ticket = Ticket(reference="HD-000001", subject="s", priority="medium", plan="standard",
                    status="new", requester_addr="c@client.test", created_at=NOW,
                    updated_at=NOW)
    assert set(base_context(app, ticket, NOW)) == TICKET_NAMES
    app.dispose()
