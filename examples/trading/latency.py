"""Latency histograms across processes: mesh's log-bucketed (HDR-style) histogram on the wire.

Each agent records into a :class:`mesh.observe.histogram.LogHistogram` (nanoseconds, buckets
at most 1/64 of their value wide, a few hundred nanoseconds a record: the histogram mesh's own
per-handler metrics use). The driver fetches them with :func:`to_wire`, merges them with
:func:`from_wire` and reads p50/p99/p99.9 with :func:`summary`; :func:`cdf` gives the points
of the latency plot.
"""
from __future__ import annotations

from typing import Any, Iterable

from mesh.observe.histogram import LogHistogram, bucket_bounds


def to_wire(h: LogHistogram) -> dict[str, Any]:
    """A msgpack-able copy: counts trimmed of trailing zeros, plus count, total and max."""
    counts = h.counts
    end = len(counts)
    while end and not counts[end - 1]:
        end -= 1
    return {"counts": counts[:end], "count": h.count, "total": h.total, "max": h.max}


def from_wire(data: dict[str, Any]) -> LogHistogram:
    h = LogHistogram()
    counts = list(data["counts"])
    if len(counts) > len(h.counts):
        h.counts = counts
    else:
        h.counts[:len(counts)] = counts
    h.count = data["count"]
    h.total = data["total"]
    h.max = data["max"]
    return h


def merged(parts: Iterable[dict[str, Any]]) -> LogHistogram:
    out = LogHistogram()
    for part in parts:
        out.merge(from_wire(part))
    return out


def summary(h: LogHistogram) -> dict[str, float]:
    """count, mean, p50, p90, p99, p99.9 and max, in milliseconds (count as is)."""
    if not h.count:
        return {"count": 0}
    ms = 1e-6
    return {"count": h.count, "mean_ms": h.total / h.count * ms,
            "p50_ms": h.value_at_quantile(0.50) * ms, "p90_ms": h.value_at_quantile(0.90) * ms,
            "p99_ms": h.value_at_quantile(0.99) * ms, "p999_ms": h.value_at_quantile(0.999) * ms,
            "max_ms": h.max * ms}


def cdf(h: LogHistogram) -> list[tuple[float, float]]:
    """``(value_ms, fraction of values above it)`` at the top of every non-empty bucket."""
    out = []
    seen = 0
    for index, n in enumerate(h.counts):
        if n:
            seen += n
            out.append((min(bucket_bounds(index)[1], h.max) * 1e-6, 1.0 - seen / h.count))
    return out
