"""Per-subscription delivery (bounded queues, drop / drop_oldest / block across nodes),
retiring an agent without failing its callers, and bulkheads on local calls — two nodes in
one process on real sockets."""
from __future__ import annotations

import asyncio

import pytest

import mesh
from mesh.errors import Overloaded, UnknownAgent
from tests.conftest import run_async

pytestmark = pytest.mark.integration


class Slow(mesh.Agent):
    """Subscriptions whose handlers wait for ``gate``: the queues fill up behind them."""

    def __init__(self, name=None):
        super().__init__(name)
        self.gate = asyncio.Event()
        self.got: dict[str, list] = {"drop": [], "oldest": [], "block": []}

    @mesh.on("d.*", queue=4, overflow="drop")
    async def on_drop(self, topic, payload):
        await self.gate.wait()
        self.got["drop"].append(payload)

    @mesh.on("o.*", queue=4, overflow="drop_oldest")
    async def on_oldest(self, topic, payload):
        await self.gate.wait()
        self.got["oldest"].append(payload)

    @mesh.on("b.*", queue=2, overflow="block")
    async def on_block(self, topic, payload):
        await self.gate.wait()
        self.got["block"].append(payload)


class Worker(mesh.Agent):
    capabilities = ("work",)
    max_concurrency = 2
    mailbox = 2

    def __init__(self, name=None):
        super().__init__(name)
        self.done = 0

    @mesh.rpc
    async def step(self, seconds):
        await asyncio.sleep(seconds)
        self.done += 1
        return self.name


async def pair(*agents_b):
    a = mesh.Node("da")
    await a.start()
    b = mesh.Node("db", seeds=[a.address])
    for agent in agents_b:
        b.add(agent)
    await b.start()
    names = {agent.name for agent in agents_b}
    subscribes = any(agent.topic_table for agent in agents_b)

    def linked() -> bool:      # a has learnt b's agents and subscriptions, and its link is up
        return any(m["id"] == "db" and m["link"] == "up" and names <= set(m["agents"])
                   and bool(m["topics"]) == subscribes for m in a.members()) and names <= set(a.directory())
    await until(linked, timeout=20.0)
    return a, b


async def until(check, timeout=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


def stats_of(node, handler):
    return next(s for s in node.subscription_stats() if s["handler"] == handler)


def test_a_slow_subscriber_drops_and_counts_without_stalling_its_publisher():
    async def main():
        slow = Slow("slow")
        a, b = await pair(slow)
        try:
            for i in range(20):
                await a.publish("d.x", i)     # returns at once: the subscriber is on its own
                await a.publish("o.x", i)
            await until(lambda: stats_of(b, "on_drop")["dropped"] == 15 and stats_of(b, "on_oldest")["dropped"] == 15)
            slow.gate.set()
            await until(lambda: len(slow.got["drop"]) == 5 and len(slow.got["oldest"]) == 5)
            assert slow.got["drop"] == [0, 1, 2, 3, 4]           # the first, then the queue; new ones dropped
            assert slow.got["oldest"] == [0, 16, 17, 18, 19]     # the first, then the freshest four
            assert b.stats()["subscription_drops"] == 30
        finally:
            await b.stop()
            await a.stop()
    run_async(main)


def test_a_blocking_subscriber_slows_its_remote_publisher_and_loses_nothing():
    async def main():
        slow = Slow("slow")
        a, b = await pair(slow)
        try:
            done = []

            async def publisher():
                for i in range(10):
                    await a.publish("b.x", i)
                    done.append(i)

            task = asyncio.ensure_future(publisher())
            # 1 in the handler + 2 queued + 1 publisher waiting for room, held there
            await until(lambda: stats_of(b, "on_block")["blocked_publishers"] == 1)
            await asyncio.sleep(0.1)
            assert len(done) == 3 and not task.done()
            slow.gate.set()
            await asyncio.wait_for(task, 5)
            await until(lambda: len(slow.got["block"]) == 10)
            assert slow.got["block"] == list(range(10))          # all of them, in order
            assert stats_of(b, "on_block")["dropped"] == 0
        finally:
            await b.stop()
            await a.stop()
    run_async(main)


def test_a_blocking_subscriber_on_the_same_node_makes_publish_wait():
    async def main():
        slow = Slow("slow")
        a = mesh.Node("solo")
        a.add(slow)
        await a.start()
        try:
            for i in range(3):
                await a.publish("b.x", i)        # 1 running, 2 queued
            waiting = asyncio.ensure_future(a.publish("b.x", 3))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            slow.gate.set()
            await asyncio.wait_for(waiting, 5)
            await until(lambda: slow.got["block"] == [0, 1, 2, 3])
        finally:
            await a.stop()
    run_async(main)


def test_retiring_an_agent_lets_its_calls_finish_and_call_any_moves_on():
    async def main():
        w1, w2 = Worker("w1"), Worker("w2")
        a, b = await pair(w1, w2)
        try:
            await until(lambda: {"w1", "w2"} <= set(a.directory()))
            failures = []

            async def caller():
                for _ in range(15):
                    try:
                        await a.call_any("work", "step", 0.02, timeout=5)
                    except Exception as exc:   # noqa: BLE001 - any failure fails the test below
                        failures.append(exc)

            callers = [asyncio.ensure_future(caller()) for _ in range(4)]
            await asyncio.sleep(0.1)
            retired = await b.retire("w1", timeout=5)
            assert retired is w1 and "w1" not in b.agents
            await asyncio.gather(*callers)
            assert failures == []
            assert w1.done > 0 and w2.done > 0 and w1.done + w2.done == 60
            with pytest.raises(UnknownAgent):
                await b.call("w1", "step", 0)
        finally:
            await b.stop()
            await a.stop()
    run_async(main)


def test_local_calls_share_the_agents_bulkhead():
    async def main():
        node = mesh.Node("bulk")
        w = node.add(Worker("w"))
        await node.start()
        try:
            calls = [asyncio.ensure_future(node.call("w", "step", 0.1)) for _ in range(5)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            # two run, two wait in the mailbox, the fifth is refused at once
            assert sum(r == "w" for r in results) == 4
            assert [type(r) for r in results if r != "w"] == [Overloaded]
            load = node.agent_load("w")
            assert load["calls"] == 4 and load["rejected"] == 1 and load["inflight"] == 0
            assert w.done == 4

            for _ in range(4):                        # one-way sends share the bulkhead too
                await node.send("w", "step", 0.05)
            with pytest.raises(Overloaded):
                await node.send("w", "step", 0.05)
            await until(lambda: w.done == 8)
            assert node.agent_load("w")["rejected"] == 2
        finally:
            await node.stop()
    run_async(main)


class Plain(mesh.Agent):
    capabilities = ("plain",)

    def __init__(self, name=None, capacity=1.0):
        super().__init__(name)
        self.capacity = capacity
        self.done = 0

    @mesh.rpc
    async def step(self):
        await asyncio.sleep(0.002)
        self.done += 1


def test_capacity_travels_with_gossip_and_weights_call_any():
    async def main():
        small, big = Plain("small", 1.0), Plain("big", 4.0)
        a, b = await pair(small, big)
        try:
            await until(lambda: {"small", "big"} <= set(a.directory()))
            assert next(m for m in a.members() if m["id"] == "db")["load"] is not None
            assert a._scores.stats("big")[3] == 4.0          # the weight b published
            sem = asyncio.Semaphore(8)

            async def one():
                async with sem:
                    await a.call_any("plain", "step")
            await asyncio.gather(*(one() for _ in range(400)))
            assert small.done + big.done == 400
            assert big.done > 2 * small.done, (big.done, small.done)
        finally:
            await b.stop()
            await a.stop()
    run_async(main)


class Spawner(mesh.Agent):
    def __init__(self, name=None):
        super().__init__(name)
        self.seen: dict[str, object] = {}

    @mesh.rpc
    async def start(self):
        from mesh.resilience import detached, remaining

        async def report(tag):
            await asyncio.sleep(0.01)
            self.seen[tag] = remaining()
        asyncio.ensure_future(report("inherited"))
        detached(report("detached"))
        return remaining()


def test_tasks_a_handler_starts_inherit_its_budget_unless_detached():
    async def main():
        s = Spawner("s")
        a, b = await pair(s)
        try:
            left = await a.call("s", "start", timeout=2.0)
            assert 0 < left <= 2.0
            await until(lambda: len(s.seen) == 2)
            assert 0 < s.seen["inherited"] <= 2.0
            assert s.seen["detached"] is None
        finally:
            await b.stop()
            await a.stop()
    run_async(main)


def test_an_eager_handler_awaiting_a_suspending_local_handler():
    """A's handler starts eagerly and awaits B on the same node, whose handler suspends: the
    caller resumes in its task's context, where context tokens made before are not valid.
    (It raised 'Token was created in a different Context' after B's work was done.)"""
    class B(mesh.Agent):
        @mesh.rpc(eager=False)
        async def slow(self):
            await asyncio.sleep(0.01)
            return "done"

    class A(mesh.Agent):
        @mesh.rpc
        async def outer(self):
            return await self.call("b", "slow")

    async def main():
        async with mesh.Node("n1", insecure=True) as n1:
            n1.add(A("a"))
            n1.add(B("b"))
            assert await n1.call("a", "outer") == "done"
            n2 = mesh.Node("n2", seeds=[n1.address], insecure=True)
            await n2.start()
            try:
                while "a" not in n2.directory():
                    await asyncio.sleep(0.02)
                assert await n2.call("a", "outer") == "done"     # remote caller, eager A, local B
            finally:
                await n2.stop()
    run_async(main)
