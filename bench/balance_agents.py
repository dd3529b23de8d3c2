"""The replica agent that ``python -m bench.balance`` hosts, one per node process:

    python -m mesh.node --id r1 --bind tcp://127.0.0.1:* --agent bench.balance_agents:Replica=r1 --log-level warning

A replica models a service with a fixed pool of workers (a thread pool, a pool of database
connections): ``work`` waits for a free worker, holds it for the service time, and answers
with the replica's name (so the client can count where each call went). Service times are
``asyncio.sleep``, not busy loops: a replica costs no CPU while it "works", so several of them
and the client can share two cores without the replicas' work distorting one another.
Sleeps have millisecond granularity in uvloop (a 0.5 ms sleep returns at once), which is why
service times are whole milliseconds.

The benchmark configures every replica over the mesh before each case (:meth:`Replica.configure`),
so the same processes serve all the cases. A replica is *healthy*, or one of two kinds of sick:

* ``slow``: every call takes ``factor`` times the service time, with the same workers (so a
  tenth of the capacity at ``factor=10``): a degraded replica — a throttled or overcommitted
  host, a cold cache, a slow disk under it. It queues as soon as it gets more than its share.
* ``stall``: the replica's event loop freezes for ``stall_ms`` every ``period_ms`` on average
  (``time.sleep`` on the loop: a stop-the-world pause, as a garbage collection of a large
  heap or a blocking call on the loop makes). Nothing is answered during a pause, and the
  calls that arrived meanwhile are all late; between pauses the replica is healthy.
"""
from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import mesh

MODES = ("healthy", "slow", "stall")


class Replica(mesh.Agent):
    """A ``work`` provider with a pool of workers and a configurable sickness."""

    capabilities = ("work",)

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.service_ms = 1.0
        self.workers = 4
        self.mode = "healthy"
        self.factor = 10.0
        self.stall_ms = 30.0
        self.period_ms = 300.0
        self._pool: asyncio.Semaphore | None = None
        self._staller: asyncio.Task | None = None
        self.served = 0
        self.stalls = 0

    async def on_stop(self) -> None:
        self._stop_stalls()

    @mesh.rpc
    async def configure(self, service_ms: float = 1.0, workers: int = 4, mode: str = "healthy",
                        factor: float = 10.0, stall_ms: float = 30.0, period_ms: float = 300.0,
                        seed: int = 0) -> dict[str, Any]:
        """Set the service model; counters restart. Returns the settings in force."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if service_ms < 0 or workers < 1 or factor <= 0 or stall_ms < 0 or period_ms <= stall_ms:
            raise ValueError("need service_ms >= 0, workers >= 1, factor > 0, period_ms > stall_ms >= 0")
        self._stop_stalls()
        self.service_ms, self.workers, self.mode = float(service_ms), int(workers), mode
        self.factor, self.stall_ms, self.period_ms = float(factor), float(stall_ms), float(period_ms)
        self._pool = asyncio.Semaphore(self.workers)
        self.served = self.stalls = 0
        if mode == "stall":
            self._staller = asyncio.get_running_loop().create_task(self._stall_forever(random.Random(seed)))
        return self.settings()

    @mesh.rpc
    async def work(self, payload: Any = None) -> str:
        """Hold one worker for the service time; answer with this replica's name."""
        pool = self._pool
        if pool is None:
            pool = self._pool = asyncio.Semaphore(self.workers)
        service_s = self.service_ms / 1000.0
        if self.mode == "slow":
            service_s *= self.factor
        async with pool:
            await asyncio.sleep(service_s)
        self.served += 1
        return self.name

    @mesh.rpc
    async def counters(self) -> dict[str, Any]:
        return {"served": self.served, "stalls": self.stalls, **self.settings()}

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "service_ms": self.service_ms, "workers": self.workers, "mode": self.mode,
                "factor": self.factor, "stall_ms": self.stall_ms, "period_ms": self.period_ms}

    async def _stall_forever(self, rng: random.Random) -> None:
        # Gaps are exponential (mean period - stall), so pauses do not fall in step with the
        # benchmark's rounds; the pause itself blocks the whole loop, like a GC would.
        gap_s = (self.period_ms - self.stall_ms) / 1000.0
        while True:
            await asyncio.sleep(rng.expovariate(1.0 / gap_s))
            time.sleep(self.stall_ms / 1000.0)
            self.stalls += 1

    def _stop_stalls(self) -> None:
        if self._staller is not None:
            self._staller.cancel()
            self._staller = None
