"""The header block the parser sees is bounded in fields and bytes.

The parser's time grows with the block (a 5 MB mail of "To:" lines took
8.8 s, 25 MB 48 s); what it is given is measured here, not the time.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from helpdesk.ingest import parse
from helpdesk.ingest.parse import MAX_FIELDS_FOR_PARSER, MAX_HEADER_BLOCK, parse_email

JUNK = 200_000


def _mail(junk: bytes, count: int = JUNK, body: bytes = b"body\r\n") -> bytes:
    return (
        b"Received: from a by b\r\n"
        + junk * count
        + b"From: Ann <ann@example.org>\r\nTo: desk@example.com\r\nSubject: Printer\r\n"
        b"Message-ID: <late@example.org>\r\nIn-Reply-To: <t1@example.com>\r\n"
        b"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
    )


@pytest.fixture
def parsed_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    parse_tree = parse._parse_tree

    def recording(data: bytes) -> tuple[object, tuple[str, ...]]:
        sizes.append(len(data))
        return parse_tree(data)

    monkeypatch.setattr(parse, "_parse_tree", recording)
    return sizes


def test_fields_after_thousands_of_junk_fields_are_read(parsed_sizes: list[int]) -> None:
    raw = _mail(b"X-Junk: 1\r\n")
    mail = parse_email(raw)
    assert mail.from_ is not None and mail.from_.addr == "ann@example.org"
    assert [a.addr for a in mail.to] == ["desk@example.com"]
    assert mail.subject == "Printer"
    assert mail.message_id == "late@example.org"
    assert mail.in_reply_to == ("t1@example.com",)
    assert ("auto-submitted", "auto-replied") in mail.headers
    assert mail.text == "body"
    assert "HeaderBlockTooLong" in mail.defects
    # 500 fields and the late ones: the junk is 2.2 MB
    assert len(parsed_sizes) == 1 and parsed_sizes[0] < len(raw) // 100


def test_many_fields_of_a_name_that_is_read_are_bounded(parsed_sizes: list[int]) -> None:
    raw = _mail(b"To: x@y.example\r\n")
    mail = parse_email(raw)
    # _addresses reads the first 20 To fields; all of them are the same
    assert [a.addr for a in mail.to] == ["x@y.example"]
    assert mail.message_id == "late@example.org"
    assert "HeaderBlockTooLong" in mail.defects
    assert parsed_sizes[0] < 2 * MAX_HEADER_BLOCK < len(raw) // 4


def test_big_fields_fill_the_byte_bound_before_the_count(parsed_sizes: list[int]) -> None:
    mail = parse_email(_mail(b"X-Big: " + b"v" * 8_000 + b"\r\n", count=200))
    assert mail.subject == "Printer"
    assert mail.defects == ("HeaderBlockTooLong",)
    assert parsed_sizes[0] < MAX_HEADER_BLOCK + 8_200 * 10


def test_a_block_within_the_bounds_is_untouched(parsed_sizes: list[int]) -> None:
    raw = _mail(b"X-Junk: 1\r\n", count=MAX_FIELDS_FOR_PARSER - 9)  # 500 in all
    mail = parse_email(raw)
    assert mail.defects == ()
    assert len(mail.headers) == MAX_FIELDS_FOR_PARSER
    assert parsed_sizes == [len(raw)]


def test_the_skeleton_parse_agrees_on_a_cut_block() -> None:
    attachment = (
        b'--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64'
        b"\r\n\r\n" + b"QUJD" * 40_000 + b"\r\n--b--\r\n"
    )
    raw = _mail(b"X-Junk: 1\r\n", count=5_000, body=b"").replace(
        b"Content-Type: text/plain; charset=utf-8",
        b'Content-Type: multipart/mixed; boundary="b"',
    ) + b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n" + attachment
    full = parse_email(raw, lazy_above=1 << 62)
    lazy = parse_email(raw, lazy_above=0, cut_above=0)
    assert parse._parse_lazily(raw, "0" * 64, 0) is not None
    assert replace(lazy, defects=()) == replace(full, defects=())
    assert "HeaderBlockTooLong" in full.defects and "HeaderBlockTooLong" in lazy.defects
    assert full.text == "hello" and len(full.attachments) == 1
