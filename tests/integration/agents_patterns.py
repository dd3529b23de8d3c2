"""Agents the pattern tests (test_patterns.py) host in real node processes."""
from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import mesh
from mesh.patterns.supervisor import ChildSpec, Supervisor


class Worker(mesh.Agent):
    """Lives as long as its run(); ``crash`` makes run() raise. ``generation`` counts the
    instances of this name made in this process, so a restart shows from the outside."""

    made: ClassVar[dict[str, int]] = {}

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.generation = Worker.made[self.name] = Worker.made.get(self.name, 0) + 1
        self._crash = asyncio.Event()

    async def run(self) -> None:
        await self._crash.wait()
        raise RuntimeError(f"{self.name} was told to crash")

    @mesh.rpc
    def whoami(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node.node_id, "generation": self.generation}

    @mesh.rpc
    def crash(self) -> None:
        self._crash.set()


class Team(Supervisor):
    strategy, max_restarts, period_s = "one_for_one", 1, 60.0
    child_specs = (ChildSpec("w1", Worker), ChildSpec("w2", Worker))


class Plant(Supervisor):
    """plant -> team -> w1, w2; each supervisor allows 1 restart a minute."""

    strategy, max_restarts, period_s = "one_for_one", 1, 60.0
    child_specs = (ChildSpec("team", Team),)


class Peer(mesh.Agent):
    """Calls an agent on whatever node hosts it."""

    @mesh.rpc
    async def ask(self, agent: str) -> Any:
        return await self.call(agent, "whoami", timeout=2.0)


class TickSink(mesh.Agent):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.count = 0

    @mesh.on("ticks.*")
    def on_tick(self, topic: str, payload: Any) -> None:
        self.count += 1

    @mesh.rpc
    def received(self) -> int:
        return self.count
