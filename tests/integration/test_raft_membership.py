"""Raft membership and leases on real processes: 3 voters grow to 5 (each new one a learner
first, promoted once caught up) and shrink back to 3 under a write load, the leader among
those removed, and every acknowledged write is there at the end; a singleton agent moves
when the node running it is killed."""
from __future__ import annotations

import asyncio

import pytest

import mesh
from mesh.errors import MeshError
from tests.conftest import run_async
from tests.integration.cluster import NodeProcess

AGENTS = "tests.integration.agents"

pytestmark = pytest.mark.integration

BOOT = ["v1", "v2", "v3"]


def start_voters(tmp_path) -> dict[str, NodeProcess]:
    procs = {"v1": NodeProcess("v1", [], data_dir=tmp_path / "v1", raft_voters=BOOT).start()}
    for name in BOOT[1:]:
        procs[name] = NodeProcess(name, [], join=[procs["v1"].address], data_dir=tmp_path / name,
                                  raft_voters=BOOT).start()
    return procs


def test_three_voters_grow_to_five_and_shrink_to_three_under_load(tmp_path):
    procs = start_voters(tmp_path)
    first = procs["v1"]
    for name in ("v4", "v5"):
        procs[name] = NodeProcess(name, [], join=[first.address], data_dir=tmp_path / name,
                                  raft_voters=BOOT, extra_args=["--raft-member"]).start()

    async def main():
        async with mesh.Node("client", seeds=[first.address], join_timeout=10) as client:
            kv = client.kv
            acked: dict[str, int] = {}
            failed = 0
            running = True

            async def writer(w):
                nonlocal failed
                i = 0
                while running:
                    key = f"w{w}/{i}"
                    try:
                        await kv.put(key, i, timeout=10)
                        acked[key] = i
                    except MeshError:
                        failed += 1
                    i += 1

            await kv.put("warmup", 0, timeout=20)
            writers = [asyncio.ensure_future(writer(w)) for w in range(4)]
            try:
                await asyncio.sleep(0.5)
                assert (await kv.add_voter("v4", timeout=20))["voters"] == BOOT + ["v4"]
                await asyncio.sleep(0.3)
                assert (await kv.add_voter("v5", timeout=20))["voters"] == BOOT + ["v4", "v5"]
                await asyncio.sleep(0.3)
                leader = (await client.call("_raft.v4", "status"))["leader"]
                assert leader in BOOT
                conf = await kv.remove_member(leader, timeout=20)    # the leader steps down
                assert leader not in conf["voters"] and len(conf["voters"]) == 4
                other = next(v for v in BOOT if v != leader and v in conf["voters"])
                await asyncio.sleep(0.3)
                conf = await kv.remove_member(other, timeout=20)
                assert len(conf["voters"]) == 3 and {"v4", "v5"} <= set(conf["voters"])
                for gone in (leader, other):                     # the removed ones stop for good
                    assert procs[gone].terminate() == 0
                before = len(acked)
                await asyncio.sleep(1.0)
                assert len(acked) > before                       # the new three take writes
            finally:
                running = False
                await asyncio.gather(*writers)
            assert len(acked) > 50, (len(acked), failed)
            for key, value in acked.items():
                assert await kv.get(key, timeout=10) == value, key
            members = await kv.members()
            assert set(members["voters"]) == set(conf["voters"]) and members["learners"] == []
    try:
        run_async(main)
    finally:
        for p in procs.values():
            p.kill()


def test_a_singleton_moves_when_its_node_is_killed(tmp_path):
    """Two nodes offer the same singleton (``--singleton``); kill -9 the one running it: its
    lease expires and the other takes over, and calls reach it there."""
    procs = start_voters(tmp_path)
    first = procs["v1"]
    for name in ("h1", "h2"):
        procs[name] = NodeProcess(name, [], join=[first.address],
                                  extra_args=["--singleton", f"{AGENTS}:Calc=executor"]).start()

    async def where(client):
        for _ in range(300):
            try:
                return await client.call("executor", "whoami", timeout=1.0)
            except MeshError:
                await asyncio.sleep(0.05)
        raise AssertionError("the singleton never answered")

    async def main():
        async with mesh.Node("client", seeds=[first.address], join_timeout=10) as client:
            holder = await where(client)
            assert holder in ("h1", "h2")
            other = "h2" if holder == "h1" else "h1"
            procs[holder].kill()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            while True:                              # calls fail until the lease (5 s) lets h2 in
                try:
                    if await client.call("executor", "whoami", timeout=1.0) == other:
                        break
                except MeshError:
                    pass
                assert loop.time() - t0 < 20, "the singleton did not move"
                await asyncio.sleep(0.05)
            assert await client.kv.range("_singletons/") == {"_singletons/executor": other}
    try:
        run_async(main)
    finally:
        for p in procs.values():
            p.kill()
