"""IMAP literals (RFC 3501 §4.3) are collected straight into the bytes kept."""

from __future__ import annotations

from helpdesk.ingest.imap import HEADER_ONLY, Literal, LiteralFetch, header_section


def _command(cap: int = 1 << 20) -> LiteralFetch:
    return LiteralFetch("A1", "1:2", "(UID BODY.PEEK[])", cap=cap, prefix="UID",
                        timeout=60)


async def test_a_literal_arriving_in_pieces_becomes_one_bytes_object() -> None:
    command = _command()
    command.append_to_resp(b"1 FETCH (UID 7 BODY[] {10}")
    assert command.begin_literal_data(10, b"abc") == b""
    assert command.wait_literal_data()
    assert command.append_literal_data(b"defg") == b""
    # The rest of the chunk is the response line that follows the literal.
    assert command.append_literal_data(b"hij)\r\n") == b")\r\n"
    assert not command.wait_literal_data()
    literal = command.response.lines[-1]
    assert isinstance(literal, Literal)
    assert type(literal.data) is bytes
    assert literal.data == b"abcdefghij"
    # Not bytes: FETCH's wait_data counts parentheses in the lines only.
    command.append_to_resp(b")")
    assert not command.wait_data()


async def test_a_literal_longer_than_the_cap_is_read_to_its_end_but_cut() -> None:
    command = _command(cap=4)
    command.begin_literal_data(9, b"")
    for piece in (b"12", b"345", b"67"):
        assert command.append_literal_data(piece) == b""
        assert command.wait_literal_data()
    # What follows the literal is handed back: the stream stays in step.
    assert command.append_literal_data(b"89 UID 7)\r\n") == b" UID 7)\r\n"
    literal = command.response.lines[-1]
    assert literal == Literal(b"1234", 9) and literal.is_cut


async def test_an_announced_50_mb_literal_keeps_no_more_than_the_cap() -> None:
    command = _command(cap=20_000)
    chunk = b"x" * 65536
    total = 50_000_000
    command.begin_literal_data(total, b"")
    sent = 0
    while sent + len(chunk) <= total:
        assert command.append_literal_data(chunk) == b""
        sent += len(chunk)
    assert command.append_literal_data(chunk[: total - sent] + b")\r\n") == b")\r\n"
    literal = command.response.lines[-1]
    assert isinstance(literal, Literal)
    assert (len(literal.data), literal.size, literal.is_cut) == (20_000, total, True)


def test_header_section_ends_with_the_empty_line() -> None:
    raw = b"Subject: hi\r\nFrom: a@b.test\r\n\r\nbody\r\n"
    assert header_section(raw) == b"Subject: hi\r\nFrom: a@b.test\r\n\r\n"
    assert header_section(b"X: " + b"y" * 100_000) == (b"X: " + b"y" * 100_000)[:HEADER_ONLY]


async def test_an_empty_literal() -> None:
    command = _command()
    assert command.begin_literal_data(0, b")\r\n") == b")\r\n"
    assert not command.wait_literal_data()
    assert command.response.lines[-1] == Literal(b"", 0)
