"""A seeded synthetic exchange feed: the ticks one exchange would send, at a steady rate.

Theory of operation
-------------------
* Tick ``k`` of a feed *happens* at ``start_ns + k * period``: the exchange emits ticks at the
  configured rate whether or not anyone keeps up. Its timestamp is that moment (the
  machine-wide ``CLOCK_MONOTONIC``, so other processes on the host can subtract it from their
  own ``time.monotonic_ns()``), not the moment our code got round to building it. Latency
  measured from it therefore includes the time a tick waited for its batch and any time the
  feed process itself fell behind (no coordinated omission).
* :meth:`SyntheticFeed.due` returns, as one batch, every tick whose moment has passed and that
  was not returned before (at most ``max_batch``; the rest come next time, still stamped
  with their own moments). The market-data agent calls it about once a millisecond.
* Everything random comes from one ``random.Random`` seeded with ``(seed, feed)``: the k-th
  tick of a feed (symbol, price, size) is the same in every run; only how the ticks are
  grouped into batches depends on timing. Prices follow a multiplicative random walk.
* A batch is columnar (one list per field), so msgpack packs it without a Python loop and a
  consumer walks it with ``zip``.
"""
from __future__ import annotations

import random
from typing import Any

from examples.trading.universe import FEEDS, first_symbol

MOVE = 0.002            # largest relative price move per tick (uniform in ±MOVE/2)


class SyntheticFeed:
    """The ticks of feed ``feed`` (0..2) at ``rate_per_s``, starting at ``start_ns``."""

    def __init__(self, feed: int, seed: int, rate_per_s: float, start_ns: int, max_batch: int = 4096) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.feed = feed
        self.symbols = FEEDS[feed]
        self.base = first_symbol(feed)          # ticks carry indices into universe.SYMBOLS
        self.rng = random.Random(f"trading-feed:{seed}:{feed}")
        self.prices = [round(self.rng.uniform(20.0, 500.0), 2) for _ in self.symbols]
        self.period_ns = 1e9 / rate_per_s
        self.start_ns = start_ns
        self.max_batch = max_batch
        self.emitted = 0

    def due(self, now_ns: int) -> dict[str, Any] | None:
        """The batch of ticks whose moment is at or before ``now_ns`` (None if there is none)."""
        target = int((now_ns - self.start_ns) / self.period_ns) + 1
        n = min(target - self.emitted, self.max_batch)
        if n <= 0:
            return None
        first = self.emitted
        self.emitted += n
        rnd = self.rng.random
        prices = self.prices
        nsym = len(prices)
        start, period = self.start_ns, self.period_ns
        ts = [start + int(k * period) for k in range(first, first + n)]
        local = [int(rnd() * nsym) for _ in range(n)]
        pxs = []
        qtys = []
        for s in local:
            px = prices[s] = round(prices[s] * (1.0 + MOVE * (rnd() - 0.5)), 2)
            pxs.append(px)
            qtys.append(100 * (1 + int(rnd() * 5)))
        base = self.base
        return {"feed": self.feed, "seq": first, "t": ts, "sym": [base + s for s in local], "px": pxs, "qty": qtys}
