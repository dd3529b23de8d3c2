"""The risk agent: pre-trade checks against limits and positions that live in the Raft KV.

Theory of operation
-------------------
* **Limits** (``trading/limits/<SYM>``: the largest absolute position a strategy may hold in
  a symbol) are read once and then followed with a KV watch, so a check never waits for a
  read and a limit changed in the KV applies to the next check (the watch delivers every
  change, in order, none missed).
* **Positions** (``trading/positions/<strategy>/<SYM>`` = ``[qty, key of the last order]``) are
  written by the check itself, with compare-and-set: the order carries the record its
  strategy last saw, the check computes the new quantity, refuses it if it would break the
  limit (reducing a position is always allowed), and otherwise swaps the record for
  ``[new qty, this order's key]``. The swap succeeds only if nobody wrote in between, so any
  number of risk agents (one per execution node here, reached with ``call_any``) keep one
  consistent book with no state of their own to lose. Every approved order is executed
  exactly once (see :mod:`examples.trading.execution`) and fills in full, so the approved
  position is the filled one; the portfolio and the exchange confirm it at the end.
* **Retries are safe**: if the answer to an approval is lost and the strategy asks again with
  the same order, the swap fails (the record moved) but the record names this order's key,
  so the check answers "approved" again instead of approving twice. A strategy has one order
  per symbol in flight at most, so no other order can have moved the record in between.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import mesh
from mesh.errors import MeshError
from mesh.resilience import detached

from examples.trading.universe import DEFAULT_LIMIT, LIMITS, position_key

log = logging.getLogger(__name__)

KV_TIMEOUT_S = 5.0


class Risk(mesh.Agent):
    """``risk-<node>``: any number of them, all offering the capability ``risk``."""

    capabilities = ("risk",)

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name or "risk")
        self.limits: dict[str, int] = {}
        self.limits_revision = 0
        self._watcher: asyncio.Task | None = None
        self.counters = {"approved": 0, "rejected": 0, "stale": 0, "repeated": 0}

    async def on_start(self) -> None:
        self._watcher = detached(self._follow_limits())

    async def on_stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    @mesh.rpc
    async def check(self, order: dict[str, Any]) -> dict[str, Any]:
        """Approve ``order`` (``{"key", "strategy", "sym", "qty", "pos"}``, ``pos`` the position
        record the strategy last saw) and book it, or refuse it. Answers ``{"ok", "why",
        "pos"}`` with the position record as it now stands."""
        sym = order["sym"]
        held = order["pos"]
        qty = held[0] if held else 0
        new_qty = qty + order["qty"]
        limit = self.limits.get(sym, DEFAULT_LIMIT)
        if abs(new_qty) > limit and abs(new_qty) > abs(qty):
            self.counters["rejected"] += 1
            return {"ok": False, "why": "limit", "pos": held}
        kv = self.node.kv
        book = position_key(order["strategy"], sym)
        new = [new_qty, order["key"]]
        if await kv.cas(book, held, new, timeout=KV_TIMEOUT_S):
            self.counters["approved"] += 1
            return {"ok": True, "why": "", "pos": new}
        current = await kv.get(book, timeout=KV_TIMEOUT_S)
        if current is not None and current[1] == order["key"]:
            self.counters["repeated"] += 1            # approved before; the answer was lost
            return {"ok": True, "why": "", "pos": current}
        self.counters["stale"] += 1
        return {"ok": False, "why": "stale", "pos": current}

    @mesh.rpc
    def stats(self) -> dict[str, Any]:
        return dict(self.counters, limits=len(self.limits), limits_revision=self.limits_revision)

    async def _follow_limits(self) -> None:
        kv = self.node.kv
        while True:
            try:
                revision, items = await kv.range(LIMITS, revision=True)
                self.limits = {k[len(LIMITS):]: v for k, v in items.items()}
                self.limits_revision = revision
                async for event in kv.watch(LIMITS, after=revision):
                    sym = event.key[len(LIMITS):]
                    if event.kind == "reset":
                        self.limits = {}
                    elif event.kind == "put":
                        self.limits[sym] = event.value
                    else:
                        self.limits.pop(sym, None)
                    self.limits_revision = event.revision
            except MeshError as exc:         # no quorum for a while: read everything again
                log.info("%s: limits watch interrupted (%s); resuming", self.name, exc)
                await asyncio.sleep(0.5)
