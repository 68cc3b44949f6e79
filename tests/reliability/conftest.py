"""The reliability suite's counts, printed as one summary line at the end of the test run."""

from __future__ import annotations

import pytest

COUNTS: dict[str, int] = {}


@pytest.fixture
def tally():
    """`tally("kills survived", 20)` adds to the summary line."""
    def add(what: str, n: int = 1) -> None:
        COUNTS[what] = COUNTS.get(what, 0) + n
    return add


def pytest_terminal_summary(terminalreporter):
    if COUNTS:
        terminalreporter.write_line("reliability: " + ", ".join(f"{n:,} {what}" for what, n in COUNTS.items()))
