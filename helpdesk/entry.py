"""The ``helpdesk`` command: the CLI, imported only when the command runs.

A parse worker (:mod:`helpdesk.ingest.parallel`) is started with
multiprocessing's spawn method, and a spawned process first imports the
parent's main module: for the installed command, the console script, which
imports this module. Were the CLI imported here at module level, every
worker would load the database layer it never uses (0.5 s and 40 MB more).
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from helpdesk.cli import main as run

    return run(argv)
