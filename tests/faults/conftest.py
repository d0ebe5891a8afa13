"""Print the fault figures at the end of the run, whatever pytest captured."""

from __future__ import annotations

import pytest

from tests.faults.harness import REPORTS, SCALE


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORTS:
        return
    terminalreporter.section(f"fault injection at 20,000 items/h (scale {SCALE:g})")
    for report in REPORTS:
        terminalreporter.write_line(report.line())
