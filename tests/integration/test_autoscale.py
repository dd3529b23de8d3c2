"""Autoscaling on a real mesh.

In one process: the placement agents build only what the KV record assigns them, retire
orphans, and unconfiguring a capability drains it away. On real processes (three voter nodes,
each with a placement agent and a candidate autoscaler singleton): a client ramps load up and
replicas grow to the bound, spread over the nodes; the node running the autoscaler is killed
under load and the next one carries on from the record; the load ramps down and the replicas
shrink back to the minimum, drained, with no call failing."""
from __future__ import annotations

import asyncio
import logging

import pytest

import mesh
from mesh.errors import MeshError, RemoteError
from mesh.patterns.autoscale import (STATE_PREFIX, Autoscaler, PlacementAgent, PlacementRefused, configure,
                                     record, unconfigure)
from mesh.patterns.scaling_policy import ScalingConfig
from tests.conftest import run_async
from tests.integration.agents_autoscale import Worker
from tests.integration.cluster import NodeProcess
from tests.integration.test_kv_coordination import until

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

AGENTS = "tests.integration.agents_autoscale"
NODES = ["n1", "n2", "n3"]
CAP = "work"


def work_agents(node: mesh.Node) -> dict[str, str]:
    """Replicas of ``work`` in ``node``'s directory: name -> node id."""
    return {a: n for a, (n, caps) in node.directory().items() if CAP in caps}


# -- in one process ----------------------------------------------------------------------------


def test_placement_builds_only_what_the_record_assigns_and_retires_orphans(tmp_path):
    async def main():
        nodes, placements = [], []
        for name in NODES:
            node = mesh.Node(name, seeds=[nodes[0].address] if nodes else [], data_dir=tmp_path / name,
                             raft_voters=NODES)
            placement = node.add(PlacementAgent(f"_place.{name}", factories={"worker": Worker},
                                                allow_import=False, sweep_interval=0))
            node.add(Autoscaler(interval=0.1, lost_after=1.0), singleton=True, singleton_ttl=1.0)
            await node.start()
            nodes.append(node)
            placements.append(placement)
        client = mesh.Node("client", seeds=[nodes[0].address])
        await client.start()
        try:
            await configure(client.kv, CAP, "worker", ScalingConfig(min_replicas=2, max_replicas=3),
                            timeout=10)
            await until(lambda: len(work_agents(client)) == 2, timeout=15)
            rec = await record(client.kv, CAP)
            assert set(rec["replicas"]) == set(work_agents(client)) == {"work.1", "work.2"}
            assert len(set(work_agents(client).values())) == 2        # on two nodes: least loaded
            assert sum(p.spawned for p in placements) == 2

            # A spawn the record does not hold is refused, locally and from afar.
            with pytest.raises(PlacementRefused):
                await nodes[0].call("_place.n1", "spawn", CAP, "work.77")
            with pytest.raises(RemoteError, match="PlacementRefused"):
                await client.call("_place.n1", "spawn", CAP, "work.77")
            where = rec["replicas"]["work.1"]["node"]
            other = next(n for n in NODES if n != where)
            with pytest.raises(RemoteError, match="does not assign"):
                await client.call(f"_place.{other}", "spawn", CAP, "work.1")
            # ... and asking the right node again changes nothing (idempotent)
            assert await client.call(f"_place.{where}", "spawn", CAP, "work.1") == where
            assert sum(p.spawned for p in placements) == 2

            # A recorded replica that vanished from its node is built again, there, same name.
            host = nodes[NODES.index(where)]
            host.remove("work.1")
            await until(lambda: "work.1" in host.agents, timeout=10)
            assert sum(p.spawned for p in placements) == 3
            assert await record(client.kv, CAP) == rec

            # A replica its node hosts but the record does not know is retired by the sweep.
            stray = nodes[2].add(Worker("work.99"))
            placements[2].hosted["work.99"] = CAP
            assert await placements[2].sweep() == ["work.99"]
            assert "work.99" not in nodes[2].agents and stray.node is None

            # Unconfigured: every replica drains away and the record goes.
            await unconfigure(client.kv, CAP)
            await until(lambda: not work_agents(client), timeout=15)
            for _ in range(100):
                if await client.kv.get(STATE_PREFIX + CAP) is None:
                    break
                await asyncio.sleep(0.05)
            assert await client.kv.get(STATE_PREFIX + CAP) is None
        finally:
            for n in [client] + nodes:
                await n.stop()
    run_async(main)


# -- on real processes -------------------------------------------------------------------------

# Small numbers so that the ramp fits in a test: two calls in flight per replica is the set point
# (a Worker runs two at a time), a few hundred milliseconds of sustained load is enough.
RAMP = ScalingConfig(min_replicas=1, max_replicas=5, target_outstanding=2.0, scale_up_at=1.25,
                     scale_down_at=0.5, up_after_s=0.5, down_after_s=1.5, up_cooldown_s=1.0,
                     down_cooldown_s=1.5, max_step_up=2, max_step_down=1, smoothing_s=0.5)


class Load:
    """Closed-loop callers of ``call_any("work", ...)``; each call's outcome is counted by phase."""

    def __init__(self, client: mesh.Node) -> None:
        self.client = client
        self.phase = "start"
        self.ok: dict[str, int] = {}
        self.failed: dict[str, list[str]] = {}
        self._callers: list[tuple[asyncio.Task, list[bool]]] = []

    def set(self, count: int) -> None:
        while len(self._callers) < count:
            running = [True]
            self._callers.append((asyncio.ensure_future(self._caller(running)), running))
        for _, running in self._callers[count:]:
            running[0] = False        # finishes its call, then stops: nothing is cancelled
        del self._callers[count:]

    async def _caller(self, running: list[bool]) -> None:
        while running[0]:
            try:
                await self.client.call_any(CAP, "work", 20, timeout=5.0)
                self.ok[self.phase] = self.ok.get(self.phase, 0) + 1
            except MeshError as exc:       # counted in the phase it failed in
                self.failed.setdefault(self.phase, []).append(repr(exc))
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        tasks = [t for t, _ in self._callers]
        self.set(0)
        await asyncio.gather(*tasks)


def test_autoscaler_grows_and_shrinks_under_a_load_ramp_and_survives_its_node_dying(tmp_path):
    procs: dict[str, NodeProcess] = {}
    for name in NODES:
        procs[name] = NodeProcess(
            name, [f"mesh.patterns.autoscale:PlacementAgent=_place.{name}"],
            join=[procs["n1"].address] if procs else [], data_dir=tmp_path / name, raft_voters=NODES,
            extra_args=["--singleton", f"{AGENTS}:QuickAutoscaler", "--log-level", "info"],
            log_file=tmp_path / f"{name}.log").start()
    timeline: list[tuple] = []

    async def main():
        async with mesh.Node("client", seeds=[procs["n1"].address], join_timeout=10) as client:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            load = Load(client)
            most = 0

            async def sample():
                nonlocal most
                while True:
                    placed = work_agents(client)
                    most = max(most, len(placed))
                    per_node = {n: sum(1 for v in placed.values() if v == n) for n in NODES}
                    timeline.append((round(loop.time() - t0, 1), load.phase, len(load._callers), len(placed),
                                     per_node))
                    await asyncio.sleep(0.25)

            async def reach(count, timeout, where=None):
                def ok():
                    placed = work_agents(client)
                    return len(placed) == count and (where is None or set(placed.values()) <= where)
                await until(ok, timeout=timeout, step=0.1)

            sampler = asyncio.ensure_future(sample())
            try:
                await configure(client.kv, CAP, f"{AGENTS}:Worker", RAMP, timeout=20)
                await reach(1, 20)                                   # min_replicas, with no load
                # Ramp up. Each replica serves two calls at a time, the set point: with N callers
                # the autoscaler aims at ceil(N / 2) replicas, and inside the band it holds.
                load.phase = "ramp up"
                load.set(2)                                          # 2 / (1 * 2) = 1.0: in the band
                await asyncio.sleep(1.5)
                assert len(work_agents(client)) == 1
                load.set(6)                                          # 6 / 2 = 3.0: grow, to 3
                await reach(3, 25)
                load.set(12)                                         # 12 / 6 = 2.0: grow, to max 5
                await reach(5, 25)
                placed = work_agents(client)
                counts = sorted(sum(1 for v in placed.values() if v == n) for n in NODES)
                assert counts[0] >= 1 and counts[-1] - counts[0] <= 1, placed   # spread by load
                await asyncio.sleep(1.0)
                assert len(work_agents(client)) == 5                 # held at the bound under load

                # Kill -9 the node running the autoscaler, under load.
                load.phase = "failover"
                victim = client.directory()["_autoscaler"][0]
                survivors = [n for n in NODES if n != victim]
                before = {n: await client.call(f"_place.{n}", "load") for n in NODES}
                kept = {r for n in survivors for r in before[n]["replicas"]}
                rec_before = await record(client.kv, CAP)
                procs[victim].kill()
                await until(lambda: client.directory().get("_autoscaler", (victim,))[0] != victim,
                            timeout=20, step=0.1)
                await reach(5, 30, where=set(survivors))             # replaced on the survivors
                after = {n: await client.call(f"_place.{n}", "load") for n in survivors}
                assert kept <= {r for n in survivors for r in after[n]["replicas"]}   # kept, not rebuilt
                rec = await record(client.kv, CAP)
                assert rec["next"] > rec_before["next"]              # numbering carried on from the record

                # Ramp down: shrink to min, every replica drained before it goes.
                load.phase = "ramp down"
                load.set(4)                                          # 4 / 10: shrink, one at a time
                await until(lambda: len(work_agents(client)) <= 4, timeout=30, step=0.1)
                load.set(1)
                await reach(1, 40)
                await asyncio.sleep(0.5)
                load.phase = "end"
                await load.stop()

                # The record, the directory and the nodes agree; every name was built once.
                rec = await record(client.kv, CAP)
                hosted = {n: await client.call(f"_place.{n}", "load") for n in survivors}
                assert set(rec["replicas"]) == set(work_agents(client)) == \
                    {r for h in hosted.values() for r in h["replicas"]}
                built = before[victim]["spawned"] + sum(h["spawned"] for h in hosted.values())
                assert built == rec["next"] - 1, (built, rec)        # no name spawned twice
                assert most <= RAMP.max_replicas
                assert load.failed.get("ramp up", []) == [], load.failed
                assert load.failed.get("ramp down", []) == [], load.failed   # drained: none failed
                assert load.ok["ramp down"] > 100 and load.ok["ramp up"] > 100, load.ok
                status = await client.call("_autoscaler", "status")
                assert status[CAP]["replicas"] == 1
            finally:
                sampler.cancel()
                await load.stop()
                print_timeline(timeline, load)
    try:
        run_async(main)
    finally:
        for p in procs.values():
            p.kill()


def print_timeline(timeline: list[tuple], load: Load) -> None:
    """Replica counts when they changed (shown with ``pytest -s``)."""
    last = None
    for t, phase, callers, count, per_node in timeline:
        if (phase, callers, count) != last:
            print(f"t={t:5.1f}s  {phase:<10} callers={callers:<3} replicas={count}  {per_node}")
            last = (phase, callers, count)
    print("calls ok:", load.ok, "failed:", {k: len(v) for k, v in load.failed.items()})
