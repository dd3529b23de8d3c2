"""Aligned text tables for terminal output: left-aligned text, right-aligned numbers."""
from __future__ import annotations

from typing import Any, Iterable, Sequence


def render(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Iterable[int] = (),
           indent: str = "") -> str:
    """The table as text, one line per row under a header line; columns ``numeric`` (by
    position) are right-aligned. Cells are shown with ``str``; None as '-'."""
    right = set(numeric)
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))

    def line(row: Sequence[str]) -> str:
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        return (indent + "  ".join(parts)).rstrip()

    return "\n".join([line(list(headers))] + [line(row) for row in cells])
