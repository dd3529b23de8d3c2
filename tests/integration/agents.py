"""Agents the integration tests host in real node processes."""
from __future__ import annotations

import asyncio

import mesh


class Calc(mesh.Agent):
    capabilities = ("calc",)

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.seen: list = []

    @mesh.rpc
    async def add(self, a, b):
        return a + b

    @mesh.rpc
    def whoami(self):                     # a plain (sync) handler
        return self.node.node_id

    @mesh.rpc
    async def fail(self, message="boom"):
        raise ValueError(message)

    @mesh.rpc
    async def slow(self, seconds):
        await asyncio.sleep(seconds)
        return seconds

    @mesh.rpc
    async def relay(self, target, a, b):
        """Agent-to-agent: ask another agent (on any node) to add."""
        return await self.call(target, "add", a, b, timeout=5.0)

    @mesh.rpc
    async def record(self, item):
        self.seen.append(item)

    @mesh.rpc
    async def recorded(self):
        return self.seen


class Listener(mesh.Agent):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.got: list = []

    @mesh.on("signals.*")
    async def on_signal(self, topic, payload):
        self.got.append([topic, payload])

    @mesh.on("audit.#")
    def on_audit(self, topic, payload):
        self.got.append([topic, payload])

    @mesh.rpc
    async def received(self):
        return self.got


class Inspector(mesh.Agent):
    """Lets a test read a node process's own view of the mesh."""

    @mesh.rpc
    def members(self):
        return self.node.members()

    @mesh.rpc
    def stats(self):
        return self.node.stats()
