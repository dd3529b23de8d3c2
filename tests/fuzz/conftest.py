"""Say, at the end of a run, how many cases each decoder was fed (CI reports these)."""
from __future__ import annotations

from typing import Any

from tests.fuzz.targets import CASES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if CASES:
        total = ", ".join(f"{name} {count:,}" for name, count in sorted(CASES.items()))
        terminalreporter.write_line(f"fuzz cases per decoder: {total}")
