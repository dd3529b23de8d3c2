"""The replicated KV store on real sockets and real fsync: three voter nodes and a client in
one process (each node with its own data folder). Writes through any node, linearizable
reads, compare-and-set, a leader that stops, a voter that restarts from its disk."""
from __future__ import annotations

import pytest

import mesh
from mesh._core import codec
from mesh.errors import Unavailable
from tests.conftest import run_async

pytestmark = pytest.mark.integration

VOTERS = ["v1", "v2", "v3"]


async def start_voters(tmp_path):
    first = mesh.Node("v1", data_dir=tmp_path / "v1", raft_voters=VOTERS)
    await first.start()
    nodes = [first]
    for name in VOTERS[1:]:
        n = mesh.Node(name, seeds=[first.address], data_dir=tmp_path / name, raft_voters=VOTERS)
        await n.start()
        nodes.append(n)
    return nodes


def leader_of(nodes):
    leaders = [n for n in nodes if n._raft is not None and n._raft.is_leader]
    return leaders[0] if len(leaders) == 1 else None


def test_writes_reads_and_cas_from_any_node(tmp_path):
    async def main():
        voters = await start_voters(tmp_path)
        client = mesh.Node("client", seeds=[voters[0].address])
        await client.start()
        try:
            rev = await client.kv.put("limits/AAPL", 1000, timeout=10)
            assert rev > 0
            assert await client.kv.get("limits/AAPL") == 1000
            follower = next(n for n in voters if not n._raft.is_leader)
            assert await follower.kv.put("limits/MSFT", {"max": 5}) > rev     # forwarded to the leader
            assert await client.kv.get("limits/MSFT") == {"max": 5}           # read-your-writes elsewhere
            assert await client.kv.cas("limits/AAPL", 1000, 2000) is True
            assert await client.kv.cas("limits/AAPL", 1000, 3000) is False
            assert await follower.kv.get("limits/AAPL") == 2000
            assert await client.kv.delete("limits/AAPL") is True
            assert await client.kv.get("limits/AAPL") is None
            assert await client.kv.cas("lock", None, "client") is True         # create-if-absent
            assert await follower.kv.cas("lock", None, "follower") is False
        finally:
            for n in [client] + voters:
                await n.stop()
    run_async(main)


def test_acknowledged_writes_survive_a_leader_stop_and_a_restart(tmp_path):
    async def main():
        voters = await start_voters(tmp_path)
        client = mesh.Node("client", seeds=[voters[0].address])
        await client.start()
        acked = {}
        try:
            for i in range(50):
                await client.kv.put(f"k{i}", i, timeout=10)
                acked[f"k{i}"] = i
            old = leader_of(voters)
            await old.stop()                                   # the leader goes away
            survivors = [n for n in voters if n is not old]
            for i in range(50, 80):
                await client.kv.put(f"k{i}", i, timeout=10)    # a new leader takes writes
                acked[f"k{i}"] = i
            assert leader_of(survivors) is not None
            for key, value in acked.items():
                assert await client.kv.get(key) == value
            # the old leader comes back from its disk and catches up
            back = mesh.Node(old.node_id, seeds=[survivors[0].address], data_dir=tmp_path / old.node_id,
                             raft_voters=VOTERS)
            await back.start()
            survivors.append(back)
            await client.kv.put("after", 1, timeout=10)
            for _ in range(200):
                if back._raft.applied >= leader_of(survivors)._raft.applied:
                    break
                await __import__("asyncio").sleep(0.02)
            machine = back._raft.machine
            assert {k: machine.get(k).value for k in acked} == acked
        finally:
            for n in [client] + voters + survivors[2:]:
                await n.stop()
    run_async(main)


def test_a_node_without_voters_has_no_store(tmp_path):
    async def main():
        async with mesh.Node("alone") as node:
            with pytest.raises(Unavailable):
                await node.kv.put("k", 1, timeout=0.3)
    run_async(main)


def test_bad_raft_frames_are_dropped_and_counted(tmp_path):
    async def main():
        voters = await start_voters(tmp_path)
        try:
            await voters[0].kv.put("k", 1, timeout=10)
            target = voters[1]
            before = target.stats()["raft_malformed"]
            bad = [codec.encode(66, 1, 0, "v1", "", "", ["v1", "v2", "not-a-term"]),
                   codec.encode(64, 1, 0, "v1", "", "", ["v3", "v2", 99, 0, 0, False, False])]  # names another sender
            for frame in bad:
                target._on_frame("v1", frame, True)
            assert target.stats()["raft_malformed"] == before + 2
            assert await voters[2].kv.get("k") == 1
        finally:
            for n in voters:
                await n.stop()
    run_async(main)


def test_leadership_moves_on_request_and_when_the_leader_stops(tmp_path):
    async def main():
        voters = await start_voters(tmp_path)
        try:
            await voters[0].kv.put("k", 1, timeout=10)
            target = next(n for n in voters if not n._raft.is_leader).node_id
            assert await voters[0].kv.transfer_leader(target) == target
            assert leader_of(voters).node_id == target
            old = leader_of(voters)
            await old.stop()                        # hands over before it goes
            survivors = [n for n in voters if n is not old]
            assert leader_of(survivors) is not None and leader_of(survivors)._raft.status()["term"] > 0
            assert await survivors[0].kv.get("k") == 1
        finally:
            for n in voters:
                await n.stop()
    run_async(main)
