"""Publish-subscribe: topic patterns across nodes; each message crosses the network once per
subscribing node, however many subscribers that node hosts; slow subscribers have bounded
queues and never stall the publisher.

    python examples/patterns/pubsub.py

Two node processes host six subscribers to ``ticks.*``; this script is a third node that
publishes ticks:

    sub-1   fast-1, fast-2, fast-3                       (handle each tick at once)
    sub-2   fast-4, slow-drop, slow-latest               (the slow two take 5 ms a tick)

``slow-drop`` subscribes with ``@mesh.on("ticks.*", queue=8, overflow="drop")``: once 8
ticks wait, new ones are dropped and counted (it keeps the oldest). ``slow-latest`` uses
``overflow="drop_oldest"``: the oldest waiting tick makes room (it keeps the freshest, what a
price display wants). ``overflow="block"`` would make the publisher wait instead.
"""
from __future__ import annotations

import asyncio
from typing import Any

from launch import NodeProcess, bootstrap

bootstrap()

import mesh                                                              # noqa: E402

TICKS = 300
SYMBOLS = ("AAPL", "MSFT", "NVDA")


class Recorder(mesh.Agent):
    """Counts the ticks it handled and remembers their sequence numbers."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.seqs: list[int] = []

    @mesh.rpc
    def seen(self) -> dict[str, Any]:
        return {"count": len(self.seqs), "first": self.seqs[:1], "last": self.seqs[-1:]}


class TickCounter(Recorder):
    @mesh.on("ticks.*")
    def on_tick(self, topic: str, tick: dict) -> None:
        self.seqs.append(tick["seq"])


class SlowDrop(Recorder):
    @mesh.on("ticks.*", queue=8, overflow="drop")
    async def on_tick(self, topic: str, tick: dict) -> None:
        await asyncio.sleep(0.005)
        self.seqs.append(tick["seq"])


class SlowLatest(Recorder):
    @mesh.on("ticks.*", queue=8, overflow="drop_oldest")
    async def on_tick(self, topic: str, tick: dict) -> None:
        await asyncio.sleep(0.005)
        self.seqs.append(tick["seq"])


class NodeStats(mesh.Agent):
    """Lets the publisher read a subscriber node's counters."""

    @mesh.rpc
    def stats(self) -> dict[str, int]:
        return self.node.stats()

    @mesh.rpc
    def subscriptions(self) -> list[dict[str, Any]]:
        return self.node.subscription_stats()


async def wait_for(probe, ok, timeout: float = 8.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if ok(value):
            return value
        if loop.time() > deadline:
            raise SystemExit(f"gave up waiting; last: {value!r}")
        await asyncio.sleep(0.05)


async def publish(seeds: list[str]) -> None:
    node = mesh.Node("pub", seeds=seeds, default_timeout=2.0)
    await node.start()
    try:
        # the subscriptions reach the publisher by gossip, in each node's metadata
        await wait_for(lambda: asyncio.sleep(0, {m["id"]: m["topics"] for m in node.members()}),
                       lambda t: "ticks.*" in t.get("sub-1", ()) and "ticks.*" in t.get("sub-2", ()))
        print("pub sees 6 subscribers to 'ticks.*' on 2 nodes (sub-1, sub-2)")
        before = {n: await node.call(f"stats-{n[-1]}", "stats") for n in ("sub-1", "sub-2")}
        mine = node.stats()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for seq in range(TICKS):
            await node.publish(f"ticks.{SYMBOLS[seq % 3]}", {"seq": seq, "px": 100.0 + seq / 100})
            # one publish per loop turn, so each leaves in its own frame (the transport
            # batches what is sent to a peer in the same turn into one frame)
            await asyncio.sleep(0)
        elapsed_ms = (loop.time() - t0) * 1000
        after = node.stats()
        frames = after["frames_out"] - mine["frames_out"]
        gossip = after["gossip_out"] - mine["gossip_out"]
        print(f"published {TICKS} ticks in {elapsed_ms:.0f} ms: {frames} frames out, {gossip} of them gossip "
              f"-> {(frames - gossip) / TICKS:.1f} frames per tick = one per subscribing node (2), "
              f"not one per subscriber (6)")

        names = {"sub-1": ("fast-1", "fast-2", "fast-3"), "sub-2": ("fast-4", "slow-drop", "slow-latest")}
        for n in ("sub-1", "sub-2"):
            # the slow ones are done when every tick was handled or dropped
            subs = await wait_for(lambda: node.call(f"stats-{n[-1]}", "subscriptions"),
                                  lambda s: all(r["delivered"] + r["dropped"] == TICKS and r["queued"] == 0
                                                for r in s))
            stats = await node.call(f"stats-{n[-1]}", "stats")
            print(f"{n}: {stats['publishes_in'] - before[n]['publishes_in']} ticks arrived once for its "
                  f"{len(names[n])} subscribers")
            for row in sorted(subs, key=lambda r: r["agent"]):
                seen = await node.call(row["agent"], "seen")
                if row["dropped"] == 0:
                    print(f"  {row['agent']:<12} got {seen['count']}/{TICKS}")
                else:
                    why = ("new ticks are dropped while its queue is full" if row["overflow"] == "drop"
                           else "the oldest waiting tick makes room: the newest is kept")
                    print(f"  {row['agent']:<12} queue={row['capacity']} overflow={row['overflow']}: handled "
                          f"{seen['count']}, dropped {row['dropped']} (counted by {n}); "
                          f"last tick handled {seen['last'][0]} ({why})")
        print(f"the publisher never waited for the slow subscribers ({elapsed_ms:.0f} ms for {TICKS} ticks, "
              f"while each slow one takes 5 ms per tick)")
    finally:
        await node.stop()


def main() -> None:
    sub1 = NodeProcess("sub-1", ["pubsub:TickCounter=fast-1", "pubsub:TickCounter=fast-2",
                                 "pubsub:TickCounter=fast-3", "pubsub:NodeStats=stats-1"]).start()
    sub2 = NodeProcess("sub-2", ["pubsub:TickCounter=fast-4", "pubsub:SlowDrop=slow-drop",
                                 "pubsub:SlowLatest=slow-latest", "pubsub:NodeStats=stats-2"],
                       join=[sub1.address]).start()
    print("node processes sub-1 and sub-2 started")
    try:
        asyncio.run(publish([sub1.address]))
    finally:
        sub2.stop()
        sub1.stop()
    print("done")


if __name__ == "__main__":
    main()
