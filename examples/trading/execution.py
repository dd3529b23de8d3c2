"""The order executor: a Raft-elected singleton that sends each order to the exchange exactly once.

Theory of operation
-------------------
Every execution node adds the executor with ``--singleton``; the mesh runs it on one of them
(elected through a lease in the Raft KV) and starts it on another when that node dies. A
strategy calls ``executor.execute(order)`` and retries, with the same idempotency key
(``strategy:seq``), until it gets an answer — across timeouts and across a failover. So the
executor sees some keys more than once and must act on each key once. Per key:

1. **Claim** it in the KV, put-if-absent: ``cas(orders/<key>, None, ["pending", epoch])``.
2. If the claim succeeded, nobody has sent this order: send it to the exchange.
3. If the key was already there: ``["filled", ...]`` means it was executed — answer with the
   recorded fill (**replayed**). ``["pending", e]`` means an executor (the one that died, or
   an earlier try of this one) claimed it and may or may not have reached the exchange: ask
   the exchange for the key's status and send the order only if the exchange has not filled it
   (**recovered** when it had, **resumed** when it had not).
4. **Record** the fill durably, ``put(orders/<key>, ["filled", ...])`` — on a majority of the
   voters, fsynced — *before* answering, then publish it on ``fills.<strategy>`` for the
   portfolio and answer the strategy.

A crash anywhere leaves either no record (the order was never sent: step 2 on retry), a
pending record (step 3 asks the exchange) or a filled one (step 3 replays). What makes the
status answer trustworthy is fencing: each executor takes a new **epoch**, the KV revision of
its write to ``trading/executor/epoch`` (larger than any earlier executor's), and every
request to the exchange carries ``[epoch, attempt]``. The exchange refuses tokens older than
one it has seen (:mod:`examples.trading.exchange`), so a request from a deposed executor, or a
slow earlier attempt, cannot fill a key after its status was read.

Within one executor, a retry that arrives while the first request for the same key is still
being worked on joins it (**joined**) instead of starting a second one. The work runs in a
task of its own (detached from the caller's deadline), so a caller that gives up does not
abandon the order half-way.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import mesh
from mesh.errors import MeshError, RemoteError
from mesh.observe.histogram import LogHistogram
from mesh.resilience import detached

from examples.trading.errors import Fenced
from examples.trading.latency import to_wire
from examples.trading.universe import EPOCH_KEY, ORDERS

log = logging.getLogger(__name__)

EXCHANGE = "exchange"
KV_TIMEOUT_S = 10.0
EXCHANGE_TIMEOUT_S = 1.0


def fill_record(fill: dict[str, Any], epoch: int) -> list[Any]:
    return ["filled", epoch, fill["strategy"], fill["sym"], fill["qty"], fill["px"], fill["fill_id"]]


def fill_from_record(key: str, record: list[Any]) -> dict[str, Any]:
    _, _, strategy, sym, qty, px, fill_id = record
    return {"key": key, "fill_id": fill_id, "strategy": strategy, "sym": sym, "qty": qty, "px": px}


class OrderExecutor(mesh.Agent):
    """``executor``: add it with ``singleton=True`` (``--singleton``) on every execution node."""

    capabilities = ("execution",)
    mailbox = 4096

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name or "executor")
        self.epoch = 0
        self.ready_ns = 0
        self.first_ack_ns = 0
        self._ready = asyncio.Event()
        self._inflight: dict[str, asyncio.Task] = {}
        self._attempts = itertools.count(1)
        # where an order's time goes (ns): claim in the KV, the exchange, the durable record
        self.stages = {"claim": LogHistogram(), "exchange": LogHistogram(), "record": LogHistogram()}
        self.counters = {"acks": 0, "executed": 0, "replayed": 0, "recovered": 0, "resumed": 0, "joined": 0,
                         "exchange_retries": 0, "fenced": 0}

    async def on_start(self) -> None:
        # A fresh epoch: the revision of this write, larger than any earlier executor's.
        while True:
            try:
                self.epoch = await self.node.kv.put(EPOCH_KEY, self.node.node_id, timeout=KV_TIMEOUT_S)
                break
            except MeshError as exc:        # no quorum yet: orders wait for the epoch
                log.warning("executor on %s: no epoch yet (%s); trying again", self.node.node_id, exc)
        self.ready_ns = time.monotonic_ns()
        self._ready.set()
        log.info("executor ready on %s, epoch %d", self.node.node_id, self.epoch)

    async def on_stop(self) -> None:
        self._ready.clear()
        for task in list(self._inflight.values()):
            task.cancel()

    @mesh.rpc
    async def execute(self, order: dict[str, Any]) -> dict[str, Any]:
        """Execute ``order`` (``{"key", "strategy", "sym", "qty", "px", ...}``) once, however
        often it is asked; answer with its fill."""
        if not self._ready.is_set():
            await self._ready.wait()
        key = order["key"]
        task = self._inflight.get(key)
        if task is None:
            task = self._inflight[key] = detached(self._execute(key, order))
            task.add_done_callback(lambda t, k=key: self._forget(k, t))
        else:
            self.counters["joined"] += 1
        fill = await asyncio.shield(task)
        self.counters["acks"] += 1
        if not self.first_ack_ns:
            self.first_ack_ns = time.monotonic_ns()
        return fill

    @mesh.rpc
    def info(self) -> dict[str, Any]:
        return dict(self.counters, node=self.node.node_id, epoch=self.epoch, ready_ns=self.ready_ns,
                    first_ack_ns=self.first_ack_ns, inflight=len(self._inflight),
                    stages={k: to_wire(h) for k, h in self.stages.items()})

    def _forget(self, key: str, task: asyncio.Task) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()           # retrieved: the callers got it

    async def _execute(self, key: str, order: dict[str, Any]) -> dict[str, Any]:
        kv = self.node.kv
        record_key = ORDERS + key
        stages = self.stages
        while True:
            t0 = time.monotonic_ns()
            claimed = await kv.cas(record_key, None, ["pending", self.epoch], timeout=KV_TIMEOUT_S)
            t1 = time.monotonic_ns()
            stages["claim"].record(t1 - t0)
            if claimed:
                fill = await self._trade(key, order, maybe_sent=False)
                break
            record = await kv.get(record_key, timeout=KV_TIMEOUT_S)
            if record is None:         # not possible unless someone deleted it: claim again
                continue
            if record[0] == "filled":
                self.counters["replayed"] += 1
                fill = fill_from_record(key, record)
                # published again: the first executor may have died before publishing
                await self.node.publish(f"fills.{fill['strategy']}", fill)
                return fill
            fill = await self._trade(key, order, maybe_sent=True)
            break
        t2 = time.monotonic_ns()
        stages["exchange"].record(t2 - t1)
        await kv.put(record_key, fill_record(fill, self.epoch), timeout=KV_TIMEOUT_S)
        stages["record"].record(time.monotonic_ns() - t2)
        await self.node.publish(f"fills.{fill['strategy']}", fill)
        return fill

    async def _trade(self, key: str, order: dict[str, Any], maybe_sent: bool) -> dict[str, Any]:
        """The fill of ``order`` from the exchange, sending it only if the exchange has not
        filled it already (asked first whenever an earlier request may have got there)."""
        delay = 0.01
        while True:
            token = [self.epoch, next(self._attempts)]
            try:
                if maybe_sent:
                    fill = await self.call(EXCHANGE, "status", key, token, timeout=EXCHANGE_TIMEOUT_S)
                    if fill is not None:
                        self.counters["recovered"] += 1
                        return fill
                fill = await self.call(EXCHANGE, "execute", key, order, token, timeout=EXCHANGE_TIMEOUT_S)
                self.counters["resumed" if maybe_sent else "executed"] += 1
                return fill
            except (Fenced, RemoteError) as exc:   # Fenced itself when the exchange shares our node
                if isinstance(exc, Fenced) or exc.type == Fenced.__name__:
                    self.counters["fenced"] += 1
                    raise Fenced(f"executor epoch {self.epoch} was superseded: {exc}") from None
                raise
            except MeshError as exc:   # timeout, link down, overloaded: the request may have got there
                log.info("exchange request for %s failed (%s); asking again", key, exc)
                self.counters["exchange_retries"] += 1
                maybe_sent = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
