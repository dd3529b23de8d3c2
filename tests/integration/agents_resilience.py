"""Agents the resilience tests host in real node processes."""
from __future__ import annotations

import asyncio

import mesh
from mesh.resilience import remaining

FAILING = {"on": False}     # per process: flipped through Switch
REACHED = {"work": 0}       # calls of Flaky.work that reached this process


class Flaky(mesh.Agent):
    capabilities = ("flaky",)

    @mesh.rpc
    def work(self, x):
        REACHED["work"] += 1
        if FAILING["on"]:
            raise RuntimeError("backend down")
        return [self.node.node_id, x]


class Switch(mesh.Agent):
    """Controls this process's Flaky agents (a separate target: its own breaker)."""

    @mesh.rpc
    def set_failing(self, on):
        FAILING["on"] = bool(on)

    @mesh.rpc
    def reached(self):
        return REACHED["work"]


class Narrow(mesh.Agent):
    """One request at a time, eight waiting: for deadlines in the mailbox and Overloaded."""

    max_concurrency = 1
    mailbox = 8

    def __init__(self, name=None):
        super().__init__(name)
        self.executed: list = []

    @mesh.rpc
    async def hold(self, seconds):
        await asyncio.sleep(seconds)
        self.executed.append(f"hold {seconds}")

    @mesh.rpc
    def mark(self, tag):
        self.executed.append(tag)
        return tag

    @mesh.rpc(name="executed", eager=True)
    def executed_tags(self):
        return self.executed

    @mesh.rpc
    def load(self):
        return self.node.agent_load(self.name)


class Sink(mesh.Agent):
    """Four at a time, 64 waiting, 20 ms each: floods must be shed, not buffered."""

    capabilities = ("sink",)
    max_concurrency = 4
    mailbox = 64

    def __init__(self, name=None):
        super().__init__(name)
        self.running = 0
        self.peak = 0

    @mesh.rpc
    async def work(self, blob):
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0.02)
        finally:
            self.running -= 1
        return len(blob)

    @mesh.rpc
    def stats(self):
        return {"peak": self.peak, **self.node.agent_load(self.name)}


class Budget(mesh.Agent):
    """Shows the deadline a handler inherits."""

    @mesh.rpc
    async def remaining(self):
        return remaining()

    @mesh.rpc
    async def relay(self, target):
        # asks for 30 s, but may only get what is left of the budget of the call it serves
        return await self.call(target, "remaining", timeout=30.0)
