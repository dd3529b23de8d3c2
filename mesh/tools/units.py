"""Numbers as people read them: durations, rates and counts with their unit, short."""
from __future__ import annotations


def duration_ms(ms: float | None) -> str:
    """12.3 µs, 1.25 ms, 3.4 s; '-' for None."""
    if ms is None:
        return "-"
    if ms < 1.0:
        return f"{ms * 1000:.1f} µs"
    if ms < 1000.0:
        return f"{ms:.3g} ms" if ms < 100 else f"{ms:.0f} ms"
    return f"{ms / 1000:.3g} s"


def rate(per_s: float | None) -> str:
    """0, 12.5, 840, 12.3k, 1.2M (per second is in the column name)."""
    if per_s is None:
        return "-"
    if per_s < 100:
        return f"{per_s:.1f}".rstrip("0").rstrip(".") if per_s else "0"
    return count(per_s)


def count(n: float | None) -> str:
    """1234 -> 1.23k, 5_600_000 -> 5.6M; small numbers as they are."""
    if n is None:
        return "-"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.3g}{suffix}"
    return f"{n:.0f}" if float(n).is_integer() or abs(n) >= 100 else f"{n:.3g}"


def uptime(seconds: float) -> str:
    """45s, 12m03s, 3h07m, 2d04h."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
