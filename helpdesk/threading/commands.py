"""Commands at the top of a staff mail, and the ``#note`` marker.

A command block is the run of lines at the very top of the text (blank lines
before and between them allowed) that start with ``#`` and a letter. The
first other line ends it, so a ``#`` further down is just text, and so is
"# Heading" or "#1 issue". Within the block every line must be a valid
command: an unknown or malformed one is an error, the staff sender is told,
and nothing is relayed, because a typo could otherwise send an internal
remark to the customer.

``#note`` anywhere in the block (alone, or followed by text on the same line)
makes the mail an internal note. Erring towards "note" is safe: a note is
never shown to the customer.

This module only reads text. Whether the sender may use commands (verified
staff) and what "me" means is the caller's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Verb = Literal["status", "priority", "assign", "cc_add", "cc_remove"]

STATUSES = ("open", "pending", "resolved", "closed")
PRIORITIES = ("critical", "high", "medium", "low")

_COMMAND_LINE_RE = re.compile(r"\s*#[A-Za-z]")
_NOTE_RE = re.compile(r"\s*#note(?![A-Za-z0-9_-])[\s:]*(?P<rest>.*)", re.IGNORECASE | re.DOTALL)
# Deliberately plain: one "@", something on each side, a dot in the domain.
_ADDRESS_RE = re.compile(r"[^@\s<>(),;:\"]+@[^@\s<>(),;:\"]+\.[^@\s<>(),;:\".]+")


@dataclass(frozen=True, slots=True)
class Command:
    """One command. ``value`` is the status, priority or address; for
    ``assign`` it may be "me", which the caller resolves to the sender."""

    verb: Verb
    value: str


@dataclass(frozen=True, slots=True)
class CommandResult:
    commands: tuple[Command, ...]
    errors: tuple[str, ...]
    remaining_text: str
    is_note: bool

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_commands(text: str) -> CommandResult:
    """Split ``text`` into its leading commands and the text to relay."""
    lines = text.splitlines(keepends=True)
    commands: list[Command] = []
    errors: list[str] = []
    is_note = False
    note_text = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
            continue
        if not _COMMAND_LINE_RE.match(line):
            break
        index += 1
        note = _NOTE_RE.fullmatch(line.rstrip("\r\n"))
        if note is not None:
            is_note = True
            if note.group("rest").strip():
                # "#note customer called": the words are the note's first line.
                note_text = note.group("rest").strip() + "\n"
                break
            continue
        command, error = _parse_line(line.strip())
        if error:
            errors.append(f"line {index}: {error}")
        elif command is not None:
            errors.extend(f"line {index}: {e}" for e in _conflicts(command, commands))
            if command not in commands:
                commands.append(command)
    if not commands and not is_note and not errors:
        return CommandResult((), (), text, False)
    while index < len(lines) and not lines[index].strip():
        index += 1
    remaining = note_text + "".join(lines[index:])
    return CommandResult(tuple(commands), tuple(errors), remaining, is_note)


def _parse_line(line: str) -> tuple[Command | None, str]:
    name, *args = line[1:].split()
    name = name.lower().rstrip(":")
    if name == "status":
        return _choice("status", args, STATUSES, line)
    if name == "priority":
        return _choice("priority", args, PRIORITIES, line)
    if name == "assign":
        if len(args) != 1:
            return None, f"{line!r}: use '#assign me' or '#assign <address>'"
        if args[0].lower() == "me":
            return Command("assign", "me"), ""
        return _with_address("assign", args[0], line)
    if name == "cc":
        if len(args) < 2 or args[0].lower() not in ("add", "remove"):
            return None, f"{line!r}: use '#cc add <address>' or '#cc remove <address>'"
        verb: Verb = "cc_add" if args[0].lower() == "add" else "cc_remove"
        # Pasted from a mail client as `Erin Example <erin@x.test>`: the address
        # is the last word; a display name before it is allowed, nothing else.
        if len(args) > 2 and not (args[-1].startswith("<") and args[-1].endswith(">")):
            return None, f"{line!r}: use '#cc add <address>' or '#cc remove <address>'"
        return _with_address(verb, args[-1], line)
    return None, f"{line!r}: unknown command '#{name}'"


def _choice(
    verb: Verb, args: list[str], allowed: tuple[str, ...], line: str
) -> tuple[Command | None, str]:
    if len(args) != 1 or args[0].lower() not in allowed:
        return None, f"{line!r}: use '#{verb} {'|'.join(allowed)}'"
    return Command(verb, args[0].lower()), ""


def _with_address(verb: Verb, arg: str, line: str) -> tuple[Command | None, str]:
    address = arg.strip("<>").removeprefix("mailto:").lower()
    if not _ADDRESS_RE.fullmatch(address):
        return None, f"{line!r}: {arg!r} is not an email address"
    return Command(verb, address), ""


def _conflicts(command: Command, earlier: list[Command]) -> list[str]:
    """Two different values for a one-valued setting, or adding and removing
    the same CC: we cannot guess which was meant."""
    errors: list[str] = []
    for other in earlier:
        if other == command:
            continue
        if other.verb == command.verb and command.verb in ("status", "priority", "assign"):
            errors.append(f"'#{command.verb}' given twice with different values")
        elif {other.verb, command.verb} == {"cc_add", "cc_remove"} and other.value == command.value:
            errors.append(f"{command.value} is both added to and removed from CC")
    return errors
