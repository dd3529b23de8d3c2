"""Agents for the autoscaling tests, hosted in real node processes."""
from __future__ import annotations

import asyncio

import mesh
from mesh.patterns.autoscale import Autoscaler


class Worker(mesh.Agent):
    """A replica: two calls at a time (a bulkhead), the rest wait in its mailbox, so the
    queue depth the autoscaler sees grows with the number of concurrent callers."""

    capabilities = ("work",)
    max_concurrency = 2

    @mesh.rpc
    async def work(self, ms: float = 20.0) -> str:
        await asyncio.sleep(ms / 1000)
        return self.name


class QuickAutoscaler(Autoscaler):
    """The autoscaler with short rounds and a short loss timeout, for tests."""

    def __init__(self, name: str = "_autoscaler") -> None:
        super().__init__(name, interval=0.25, lost_after=2.0, drain_timeout=5.0)
