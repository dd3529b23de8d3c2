"""The simulated exchange (venue) the order executor trades with, in a process of its own.

Theory of operation
-------------------
* It fills every order it accepts, in full, at the order's price, and counts the fills of
  each idempotency key. It does **not** deduplicate: a key executed twice is filled twice
  and shows up as ``duplicated`` in :meth:`Exchange.audit`. That is the point of keeping it
  apart from the executor: whether execution was exactly-once is observed here, outside the
  component that claims it.
* It does check fencing tokens, as real venues check session sequence numbers. A token is
  ``[epoch, attempt]``: the epoch is the executor's (a Raft KV revision, larger for every new
  executor), the attempt a counter of that executor's own tries. The exchange remembers the
  largest epoch it has seen and, per key, the largest token; a request with an older epoch,
  or an older token for that key, is refused with :class:`~examples.trading.errors.Fenced`.
  So once a new executor has asked about a key (:meth:`Exchange.status` with its token), a
  request for that key from the executor it replaced, or from one of its own earlier
  attempts, cannot land later and fill it a second time: the answer to ``status`` is final.
* ``status`` is the venue's "order status by client order id": how the executor resolves an
  order that an earlier executor claimed but may have died before or after sending.
* Memory is bounded: at most ``MAX_KEYS`` keys are remembered; beyond that orders are refused
  (``Overloaded``) rather than remembered partially.
"""
from __future__ import annotations

import itertools
import logging
from typing import Any

import mesh
from mesh.errors import Overloaded

from examples.trading.errors import Fenced
from examples.trading.universe import order_key

log = logging.getLogger(__name__)

MAX_KEYS = 2_000_000
SAMPLE = 20                  # keys listed in an audit's examples of what went wrong


class Exchange(mesh.Agent):
    capabilities = ("exchange",)

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name or "exchange")
        # key -> [fills, largest token seen, last fill]
        self.orders: dict[str, list[Any]] = {}
        self.max_epoch = 0
        self.net: dict[str, int] = {}            # "strategy/SYM" -> net quantity filled
        self._fill_ids = itertools.count(1)
        self.counters = {"fills": 0, "status": 0, "fenced": 0}

    @mesh.rpc
    def execute(self, key: str, order: dict[str, Any], token: list[int]) -> dict[str, Any]:
        """Fill ``order`` (whose idempotency key is ``key``) now; refuse it if ``token`` is stale."""
        entry = self._admit(key, token)
        fill = {"key": key, "fill_id": next(self._fill_ids), "strategy": order["strategy"],
                "sym": order["sym"], "qty": order["qty"], "px": order["px"]}
        entry[0] += 1
        entry[2] = fill
        book = f"{order['strategy']}/{order['sym']}"
        self.net[book] = self.net.get(book, 0) + order["qty"]
        self.counters["fills"] += 1
        return fill

    @mesh.rpc
    def status(self, key: str, token: list[int]) -> dict[str, Any] | None:
        """The fill of ``key`` if it was filled, else None; from now on requests for ``key``
        with a token older than ``token`` are refused, so the answer cannot go stale."""
        self.counters["status"] += 1
        return self._admit(key, token)[2]

    @mesh.rpc
    def audit(self, sent: dict[str, list[int]]) -> dict[str, Any]:
        """Compare the orders the strategies sent (``{strategy: [seq, ...]}``) with the fills:
        executed (sent and filled at least once), duplicated (filled more than once), lost
        (sent, never filled), phantom (filled, never sent)."""
        keys = {order_key(strategy, seq) for strategy, seqs in sent.items() for seq in seqs}
        duplicated = [k for k, e in self.orders.items() if e[0] > 1]
        lost = [k for k in keys if k not in self.orders or not self.orders[k][0]]
        phantom = [k for k, e in self.orders.items() if e[0] and k not in keys]
        return {"sent": len(keys), "executed": len(keys) - len(lost), "duplicated": len(duplicated),
                "lost": len(lost), "phantom": len(phantom), "fills": self.counters["fills"],
                "duplicated_keys": sorted(duplicated)[:SAMPLE], "lost_keys": sorted(lost)[:SAMPLE],
                "phantom_keys": sorted(phantom)[:SAMPLE], "net": dict(self.net)}

    @mesh.rpc
    def stats(self) -> dict[str, Any]:
        return dict(self.counters, keys=len(self.orders), max_epoch=self.max_epoch)

    def _admit(self, key: str, token: list[int]) -> list[Any]:
        epoch, attempt = int(token[0]), int(token[1])
        if epoch < self.max_epoch:
            self.counters["fenced"] += 1
            raise Fenced(f"{key}: epoch {epoch} is older than {self.max_epoch}")
        self.max_epoch = epoch
        entry = self.orders.get(key)
        if entry is None:
            if len(self.orders) >= MAX_KEYS:
                raise Overloaded(f"the exchange remembers {MAX_KEYS} orders at most")
            entry = self.orders[key] = [0, (epoch, attempt), None]
        elif (epoch, attempt) < entry[1]:
            self.counters["fenced"] += 1
            raise Fenced(f"{key}: token {[epoch, attempt]} is older than {list(entry[1])}")
        else:
            entry[1] = (epoch, attempt)
        return entry
