from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from helpdesk.threading.commands import Command, parse_commands


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("#status open", Command("status", "open")),
        ("#status pending", Command("status", "pending")),
        ("#status resolved", Command("status", "resolved")),
        ("#STATUS Closed", Command("status", "closed")),
        ("#status: resolved", Command("status", "resolved")),
        ("#priority critical", Command("priority", "critical")),
        ("#priority high", Command("priority", "high")),
        ("#priority medium", Command("priority", "medium")),
        ("#priority low", Command("priority", "low")),
        ("#assign me", Command("assign", "me")),
        ("#assign Bob@Example.Test", Command("assign", "bob@example.test")),
        ("#assign <bob@example.test>", Command("assign", "bob@example.test")),
        ("#cc add carol@example.org", Command("cc_add", "carol@example.org")),
        ("#cc ADD mailto:carol@example.org", Command("cc_add", "carol@example.org")),
        ("#cc remove carol@example.org", Command("cc_remove", "carol@example.org")),
        ("  #status\tpending  ", Command("status", "pending")),
    ],
)
def test_each_command(line: str, expected: Command) -> None:
    result = parse_commands(f"{line}\nThanks, fixed.\n")
    assert result.commands == (expected,)
    assert result.errors == ()
    assert result.ok
    assert result.remaining_text == "Thanks, fixed.\n"
    assert not result.is_note


def test_a_block_with_leading_and_inner_blank_lines() -> None:
    text = "\n\n#status resolved\n\n#priority low\n#cc add c@example.org\n\nHello,\n\n#1 is done.\n"
    result = parse_commands(text)
    assert result.commands == (
        Command("status", "resolved"),
        Command("priority", "low"),
        Command("cc_add", "c@example.org"),
    )
    assert result.errors == ()
    assert result.remaining_text == "Hello,\n\n#1 is done.\n"


def test_commands_below_the_text_are_text() -> None:
    text = "Hello,\n#status closed\n"
    result = parse_commands(text)
    assert result.commands == ()
    assert result.remaining_text == text


@pytest.mark.parametrize("text", ["# Summary\nall good\n", "#1 priority is speed\n", "#\n"])
def test_hash_without_a_letter_is_not_a_command(text: str) -> None:
    result = parse_commands(text)
    assert (result.commands, result.errors, result.remaining_text) == ((), (), text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("#stauts resolved\nhi", "unknown command '#stauts'"),
        ("#status done\nhi", "#status open|pending|resolved|closed"),
        ("#status\nhi", "#status open|pending|resolved|closed"),
        ("#status open now\nhi", "#status"),
        ("#priority urgent\nhi", "#priority critical|high|medium|low"),
        ("#assign\nhi", "#assign me"),
        ("#assign bob\nhi", "'bob' is not an email address"),
        ("#assign bob@localhost\nhi", "not an email address"),
        ("#cc add\nhi", "#cc add <address>"),
        ("#cc invite c@example.org\nhi", "#cc add <address>"),
        ("#cc add c@example.org d@example.org\nhi", "#cc add <address>"),
        ("#notes\nhi", "unknown command '#notes'"),
    ],
)
def test_invalid_commands_are_errors(text: str, fragment: str) -> None:
    result = parse_commands(text)
    assert not result.ok
    assert len(result.errors) == 1
    assert fragment in result.errors[0]
    assert result.errors[0].startswith("line 1: ")


def test_errors_name_their_line_and_valid_commands_are_still_reported() -> None:
    result = parse_commands("#status resolved\n\n#prio high\nDone.\n")
    assert result.commands == (Command("status", "resolved"),)
    assert result.errors == ("line 3: '#prio high': unknown command '#prio'",)
    assert result.remaining_text == "Done.\n"


@pytest.mark.parametrize(
    "text",
    [
        "#status open\n#status closed\n",
        "#priority low\n#priority high\n",
        "#assign me\n#assign bob@example.test\n",
        "#cc add c@example.org\n#cc remove c@example.org\n",
    ],
)
def test_contradictory_commands_are_errors(text: str) -> None:
    assert not parse_commands(text).ok


def test_repeating_a_command_is_harmless() -> None:
    result = parse_commands("#status open\n#status open\n#cc add c@x.org\n#cc add d@x.org\n")
    assert result.ok
    assert result.commands == (
        Command("status", "open"),
        Command("cc_add", "c@x.org"),
        Command("cc_add", "d@x.org"),
    )


@pytest.mark.parametrize("first", ["#note", "#NOTE", "  #note  ", "#note:"])
def test_note_marker_on_the_first_line(first: str) -> None:
    result = parse_commands(f"{first}\n\nCustomer called, will retry.\n")
    assert result.is_note
    assert result.ok
    assert result.remaining_text == "Customer called, will retry.\n"


def test_note_with_its_text_on_the_same_line() -> None:
    result = parse_commands("#note: customer called\nwill retry\n")
    assert result.is_note
    assert result.remaining_text == "customer called\nwill retry\n"


def test_note_combines_with_commands_in_either_order() -> None:
    for text in ("#note\n#status pending\nwaiting\n", "#status pending\n#note\nwaiting\n"):
        result = parse_commands(text)
        assert result.is_note
        assert result.commands == (Command("status", "pending"),)
        assert result.remaining_text == "waiting\n"


def test_note_further_down_is_text() -> None:
    result = parse_commands("Hello\n#note\n")
    assert not result.is_note


def test_crlf_text_keeps_its_line_endings() -> None:
    result = parse_commands("#status resolved\r\n\r\nDone.\r\nBye\r\n")
    assert result.commands == (Command("status", "resolved"),)
    assert result.remaining_text == "Done.\r\nBye\r\n"


def test_commands_only_leaves_no_text() -> None:
    result = parse_commands("#status closed\n")
    assert result.commands == (Command("status", "closed"),)
    assert result.remaining_text == ""


@given(st.text())
def test_text_not_starting_with_a_command_is_left_alone(text: str) -> None:
    first = next((line for line in text.splitlines() if line.strip()), "")
    assume(not re.match(r"\s*#[A-Za-z]", first))
    result = parse_commands(text)
    assert result.remaining_text == text
    assert (result.commands, result.errors, result.is_note) == ((), (), False)


@given(
    st.lists(
        st.sampled_from(
            ["#status open", "#priority high", "#assign me", "#cc add a@example.org", ""]
        ),
        max_size=5,
    ),
    st.text(min_size=1).filter(lambda t: t.strip() and not t.lstrip().startswith("#")),
)
def test_valid_commands_are_removed_and_the_text_kept(block: list[str], body: str) -> None:
    text = "\n".join([*block, body])
    result = parse_commands(text)
    assert result.ok
    assert len(result.commands) == len({line for line in block if line})
    assert result.remaining_text.strip() == body.strip()


def test_cc_accepts_a_display_name_pasted_from_a_mail_client() -> None:
    result = parse_commands("#cc add Erin Example <Erin@Client.test>\nHello\n")
    assert result.errors == ()
    assert [(c.verb, c.value) for c in result.commands] == [("cc_add", "erin@client.test")]
    bad = parse_commands("#cc add erin@client.test and more\n")
    assert bad.errors and not bad.commands
