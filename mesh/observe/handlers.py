"""Per agent and method: how many requests a node's handlers served, how many failed, and a
latency histogram of handler time. Recorded once per handler run, on the hot path, so it
is one dict lookup and one :class:`~mesh.observe.histogram.LogHistogram` record; everything
else (totals, percentiles, Prometheus buckets) is computed when someone reads."""
from __future__ import annotations

from mesh.observe.histogram import LogHistogram

MAX_SERIES = 10_000    # (agent, method) pairs tracked; more are folded into one ("", "") entry


class MethodStats:
    __slots__ = ("errors", "histogram")

    def __init__(self) -> None:
        self.errors = 0
        self.histogram = LogHistogram()      # handler time, nanoseconds

    @property
    def calls(self) -> int:
        return self.histogram.count


class HandlerStats:
    """Handler runs by (agent, method); totals survive agents leaving."""

    def __init__(self) -> None:
        self.by_method: dict[tuple[str, str], MethodStats] = {}
        self._gone = (0, 0, 0)     # calls, errors, nanoseconds of forgotten agents

    def record(self, agent: str, method: str, elapsed_s: float, ok: bool) -> None:
        stats = self.by_method.get((agent, method))
        if stats is None:
            stats = self._new(agent, method)
        stats.histogram.record(int(elapsed_s * 1e9))
        if not ok:
            stats.errors += 1

    def _new(self, agent: str, method: str) -> MethodStats:
        key = (agent, method) if len(self.by_method) < MAX_SERIES else ("", "")
        stats = self.by_method.get(key)
        if stats is None:
            stats = self.by_method[key] = MethodStats()
        return stats

    def forget(self, agent: str) -> None:
        """Drop the series of an agent that left this node (its counts stay in the totals)."""
        calls, errors, ns = self._gone
        for key in [k for k in self.by_method if k[0] == agent]:
            s = self.by_method.pop(key)
            calls, errors, ns = calls + s.calls, errors + s.errors, ns + s.histogram.total
        self._gone = (calls, errors, ns)

    def totals(self) -> tuple[int, int, float]:
        """(handler runs, failed runs, handler seconds) since the node started."""
        calls, errors, ns = self._gone
        for s in self.by_method.values():
            calls += s.histogram.count
            errors += s.errors
            ns += s.histogram.total
        return calls, errors, ns / 1e9
