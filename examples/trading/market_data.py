"""Market-data agents: each reads one synthetic exchange feed and publishes its ticks in batches.

Theory of operation
-------------------
``md-<i>`` owns feed ``i`` (:mod:`examples.trading.feed`). Once the driver calls
:meth:`MarketData.start` it is woken about once a millisecond (the event loop's timer
resolution; one :class:`Pacer` wakes all the market-data agents of a process together), takes
every tick that has happened since the last wake-up and publishes them as one message on
``ticks.<i>``. One publish per batch, not per tick, is what lets Python carry
tens of thousands of ticks a second: the per-message costs (a syscall, a wake-up on the
receiving node, the handler call) are paid once per batch, and the per-tick work is the
msgpack packing of a few list items. The price is the batching delay, at most a wake-up
interval, which the decision latency includes (ticks are stamped when they happen).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import mesh
from mesh.observe.histogram import LogHistogram

from examples.trading.feed import SyntheticFeed
from examples.trading.latency import to_wire
from examples.trading.universe import lane_of, ticks_topic, topic_matches

log = logging.getLogger(__name__)


class Pacer:
    """One timer for every market-data agent of a process (and interval): each wake-up takes
    every feed's batch in the same turn of the event loop, so their publishes leave in one
    frame per subscribing node (the transport sends what is queued in one turn together),
    and the analysis node wakes once for all three feeds instead of three times."""

    _running: dict[float, Pacer] = {}

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.members: list[MarketData] = []
        self.task: asyncio.Task | None = None

    @classmethod
    def join(cls, agent: MarketData, interval_s: float) -> None:
        pacer = cls._running.get(interval_s)
        if pacer is None:
            pacer = cls._running[interval_s] = Pacer(interval_s)
            pacer.task = asyncio.ensure_future(pacer._run())
        pacer.members.append(agent)

    @classmethod
    def leave(cls, agent: MarketData) -> None:
        for pacer in cls._running.values():
            if agent in pacer.members:
                pacer.members.remove(agent)
                agent.finished()

    async def _run(self) -> None:
        try:
            while self.members:
                await asyncio.sleep(self.interval_s)
                now = time.monotonic_ns()
                for agent in list(self.members):
                    try:
                        done = await agent.step(now)
                    except mesh.errors.MeshError as exc:       # the node is stopping
                        log.warning("%s stopped: %s", agent.name, exc)
                        done = True
                    if done and agent in self.members:
                        self.members.remove(agent)
                        agent.finished()
        finally:
            del Pacer._running[self.interval_s]


class MarketData(mesh.Agent):
    """``md-0`` .. ``md-2``: feed ``i``, published on ``ticks.<i>``."""

    capabilities = ("market-data",)

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name or "md-0")
        self.index = lane_of(self.name)
        self.topic = ticks_topic(self.index)
        self.feed: SyntheticFeed | None = None
        self.from_ns = 0
        self.end_ns = 0
        self._done: asyncio.Event | None = None
        self.batches = 0
        self.in_window = 0
        self.largest_batch = 0
        self.age = LogHistogram()          # age of a batch's oldest tick when it is published (ns)

    @mesh.rpc
    def subscribed(self) -> bool:
        """Whether a live member has subscribed to this feed's topic (gossip has told us)."""
        return any(topic_matches(p, self.topic) for m in self.node.members()
                   if not m["self"] and m["state"] == "alive" for p in m["topics"])

    @mesh.rpc
    def start(self, rate_per_s: float, seed: int, start_ns: int, from_ns: int, interval_ms: float = 1.0) -> None:
        """Emit ticks at ``rate_per_s`` from ``start_ns``; count those at or after ``from_ns``."""
        if self._done is not None:
            raise RuntimeError(f"{self.name} has already run")
        self.feed = SyntheticFeed(self.index, seed, rate_per_s, start_ns)
        self.from_ns = from_ns
        self._done = asyncio.Event()
        Pacer.join(self, interval_ms / 1e3)

    @mesh.rpc
    async def finish(self, end_ns: int) -> dict[str, Any]:
        """Publish every tick up to ``end_ns``, stop, and return :meth:`stats`."""
        self.end_ns = end_ns
        if self._done is not None:
            await self._done.wait()
        return self.stats()

    @mesh.rpc
    def stats(self) -> dict[str, Any]:
        feed = self.feed
        return {"agent": self.name, "ticks": feed.emitted if feed else 0, "in_window": self.in_window,
                "batches": self.batches, "largest_batch": self.largest_batch, "age": to_wire(self.age)}

    async def on_stop(self) -> None:
        Pacer.leave(self)

    async def step(self, now: int) -> bool:
        """Publish the ticks due at ``now``; True once the feed has reached its end."""
        end = self.end_ns
        batch = self.feed.due(min(now, end) if end else now)
        if batch is None:
            return bool(end) and now >= end
        ts = batch["t"]
        n = len(ts)
        from_ns = self.from_ns
        if ts[-1] >= from_ns:
            self.in_window += n if ts[0] >= from_ns else sum(1 for t in ts if t >= from_ns)
        self.batches += 1
        if n > self.largest_batch:
            self.largest_batch = n
        self.age.record(time.monotonic_ns() - ts[0])
        await self.node.publish(self.topic, batch)
        return False

    def finished(self) -> None:
        if self._done is not None:
            self._done.set()
