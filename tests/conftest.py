from __future__ import annotations

import pytest

from tests.corpus import scorecard


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    table = scorecard.render()
    if table:
        terminalreporter.section("corpus scorecard")
        terminalreporter.write_line(table)
