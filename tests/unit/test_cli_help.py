"""Every command and argument of the CLI says what it is for in --help."""

from __future__ import annotations

import argparse

from helpdesk.cli import _parser


def test_every_command_and_argument_has_help() -> None:
    root = _parser()
    [commands] = [a for a in root._actions if isinstance(a, argparse._SubParsersAction)]
    described = {c.dest: c.help for c in commands._choices_actions}
    missing: list[str] = []
    for name, sub in commands.choices.items():
        if not described.get(name):
            missing.append(name)
        missing.extend(f"{name} {a.dest}" for a in sub._actions
                       if not isinstance(a, argparse._HelpAction) and not a.help)
    assert missing == []
