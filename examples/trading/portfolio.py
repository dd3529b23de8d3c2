"""The portfolio agent: positions, cash and P&L per strategy, built from the fills.

Theory of operation
-------------------
A singleton like the executor (it keeps one book; it moves when its node dies). It follows
the fills the executor publishes on ``fills.<strategy>`` and keeps each one once, by order
key (the executor publishes a fill again when it replays it, and the portfolio may also read
it from the KV). Pub/sub is at-most-once and a new portfolio misses what was published while
it was not running, so the book is reconciled against the executor's durable records
(``trading/orders/`` in the Raft KV, one linearizable range read) when the agent starts and
whenever :meth:`Portfolio.report` is asked: the KV is the source of truth, the stream only
makes the book current between reconciliations.
"""
from __future__ import annotations

import logging
from typing import Any

import mesh
from mesh.errors import MeshError
from mesh.resilience import detached

from examples.trading.execution import fill_from_record
from examples.trading.universe import ORDERS

log = logging.getLogger(__name__)

MAX_FILLS = 1_000_000       # fills kept (one small tuple each); more are counted, not kept


class Portfolio(mesh.Agent):
    """``portfolio``: add it with ``singleton=True`` on the execution nodes."""

    capabilities = ("portfolio",)

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name or "portfolio")
        self.fills: dict[str, tuple[str, str, int, float]] = {}   # key -> (strategy, sym, qty, px)
        self.last_px: dict[str, float] = {}
        self.counters = {"streamed": 0, "repeated": 0, "reconciled": 0, "overflow": 0}

    async def on_start(self) -> None:
        detached(self._reconcile_quietly())

    @mesh.on("fills.*", queue=4096, overflow="drop")
    def on_fill(self, topic: str, fill: dict[str, Any]) -> None:
        if self._add(fill):
            self.counters["streamed"] += 1

    @mesh.rpc
    async def report(self) -> dict[str, Any]:
        """Reconcile with the KV, then: positions by ``strategy/SYM``, and per strategy cash,
        gross traded value and P&L marked at each symbol's last fill price."""
        await self._reconcile()
        positions: dict[str, int] = {}
        cash: dict[str, float] = {}
        gross: dict[str, float] = {}
        for strategy, sym, qty, px in self.fills.values():
            book = f"{strategy}/{sym}"
            positions[book] = positions.get(book, 0) + qty
            cash[strategy] = cash.get(strategy, 0.0) - qty * px
            gross[strategy] = gross.get(strategy, 0.0) + abs(qty) * px
        pnl = dict(cash)
        for book, qty in positions.items():
            strategy, sym = book.split("/", 1)
            pnl[strategy] += qty * self.last_px.get(sym, 0.0)
        return {"node": self.node.node_id, "fills": len(self.fills), "positions": positions,
                "cash": cash, "gross": gross, "pnl": pnl, **self.counters}

    def _add(self, fill: dict[str, Any]) -> bool:
        key = fill["key"]
        if key in self.fills:
            self.counters["repeated"] += 1
            return False
        if len(self.fills) >= MAX_FILLS:
            self.counters["overflow"] += 1
            return False
        self.fills[key] = (fill["strategy"], fill["sym"], fill["qty"], fill["px"])
        self.last_px[fill["sym"]] = fill["px"]
        return True

    async def _reconcile(self) -> None:
        records = await self.node.kv.range(ORDERS, timeout=10.0)
        for record_key, record in records.items():
            if record[0] == "filled" and self._add(fill_from_record(record_key[len(ORDERS):], record)):
                self.counters["reconciled"] += 1

    async def _reconcile_quietly(self) -> None:
        try:
            await self._reconcile()
        except MeshError as exc:
            log.warning("portfolio: reconciling with the KV failed (%s); the next report will", exc)
