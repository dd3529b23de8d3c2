"""The demo's agents: a small order flow across three nodes.

trader (n3) --call_any("pricing")--> pricer-1 (n1) / pricer-2 (n2)
            --call_any("risk")-----> risk-1 (n1)
            --publish("fills.SYM")-> blotter (n2)
"""
from __future__ import annotations

import asyncio
import random
import time

import mesh
from mesh.errors import MeshError

SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOG")


class Pricer(mesh.Agent):
    capabilities = ("pricing",)

    @mesh.rpc
    def quote(self, order: dict) -> dict:
        base = 100.0 + 10.0 * SYMBOLS.index(order["symbol"])
        return {**order, "px": round(base + (order["order_id"] % 100) / 100.0, 2), "by": self.name}


class Risk(mesh.Agent):
    capabilities = ("risk",)
    limit = 150_000.0

    @mesh.rpc
    def check(self, order: dict) -> bool:
        return order["qty"] * order["px"] <= self.limit


class Blotter(mesh.Agent):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.fills = 0

    @mesh.on("fills.*")
    def on_fill(self, topic: str, order: dict) -> None:
        self.fills += 1

    @mesh.rpc
    def count(self) -> int:
        return self.fills


class Trader(mesh.Agent):
    """Runs ``workers`` order loops; each order is a priced call, a risk call and a publish."""

    workers = 2

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.samples_ns: list[int] = []
        self.calls = self.errors = self.fills = 0
        self._tasks: list[asyncio.Task] = []

    async def on_start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(i)) for i in range(self.workers)]

    async def on_stop(self) -> None:
        for t in self._tasks:
            t.cancel()

    async def _run(self, worker: int) -> None:
        rng = random.Random(worker)
        order_id = worker * 1_000_000_000
        while True:
            order_id += 1
            order = {"symbol": rng.choice(SYMBOLS), "side": rng.choice(("buy", "sell")),
                     "qty": rng.randrange(1, 1000), "order_id": order_id, "account": "demo"}
            try:
                t0 = time.perf_counter_ns()
                quoted = await self.call_any("pricing", "quote", order, timeout=1.0)
                t1 = time.perf_counter_ns()
                ok = await self.call_any("risk", "check", quoted, timeout=1.0)
                t2 = time.perf_counter_ns()
                self.samples_ns += (t1 - t0, t2 - t1)
                self.calls += 2
                if ok:
                    await self.publish(f"fills.{quoted['symbol']}", quoted)
                    self.fills += 1
            except MeshError:
                self.errors += 1
                await asyncio.sleep(0.05)   # the mesh is still assembling, or a node is gone

    @mesh.rpc
    def pause(self) -> None:
        """Stop sending orders (the final counts are then settled)."""
        for t in self._tasks:
            t.cancel()

    @mesh.rpc
    def stats(self) -> dict:
        """Counters since start, and latency percentiles (µs) of the calls since the last ask."""
        samples, self.samples_ns = sorted(self.samples_ns), []
        pct = (lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] / 1000.0) if samples else (lambda q: 0.0)
        return {"calls": self.calls, "fills": self.fills, "errors": self.errors,
                "window_calls": len(samples), "p50_us": pct(0.50), "p99_us": pct(0.99)}
