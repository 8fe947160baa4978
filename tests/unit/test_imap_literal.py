"""IMAP literals (RFC 3501 §4.3) are collected straight into the bytes kept."""

from __future__ import annotations

from helpdesk.ingest.imap import Literal, LiteralFetch


def _command(presize: int = 1 << 20) -> LiteralFetch:
    return LiteralFetch("A1", "1:2", "(UID BODY.PEEK[])", presize=presize, prefix="UID",
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


async def test_a_literal_longer_than_announced_presize_still_arrives_whole() -> None:
    command = _command(presize=4)
    command.begin_literal_data(9, b"")
    for piece in (b"12", b"345", b"6789"):
        command.append_literal_data(piece)
    literal = command.response.lines[-1]
    assert isinstance(literal, Literal) and literal.data == b"123456789"


async def test_an_empty_literal() -> None:
    command = _command()
    assert command.begin_literal_data(0, b")\r\n") == b")\r\n"
    assert not command.wait_literal_data()
    assert command.response.lines[-1] == Literal(b"")
