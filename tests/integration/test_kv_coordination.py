"""Coordination on the replicated store, on real sockets and real fsync: prefix watches,
leases, locks, singleton agents, and snapshots that bound the log. Three voter nodes and
non-voting clients in one process, each voter with its own data folder."""
from __future__ import annotations

import asyncio
import os

import pytest

import mesh
from mesh.errors import MeshError, ProtocolError
from mesh.raft.config import RaftConfig
from tests.conftest import run_async
from tests.integration.test_kv import VOTERS, leader_of, start_voters

pytestmark = pytest.mark.integration


async def until(predicate, timeout=10.0, step=0.02):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


async def stop_all(nodes):
    for n in nodes:
        await n.stop()


class Counter(mesh.Agent):
    """A singleton: it should run on one node at a time."""
    def __init__(self, name="ledger"):
        super().__init__(name)
        self.calls = 0

    @mesh.rpc
    def where(self) -> str:
        self.calls += 1
        return self.node.node_id


def test_watch_sees_every_change_under_its_prefix_in_order_across_a_leader_stop(tmp_path):
    async def main():
        voters = await start_voters(tmp_path)
        client = mesh.Node("client", seeds=[voters[0].address])
        await client.start()
        seen = []

        async def watcher():
            async for event in client.kv.watch("orders/"):
                seen.append((event.kind, event.key, event.value, event.revision))

        try:
            await client.kv.put("warmup", 0, timeout=10)
            task = asyncio.ensure_future(watcher())
            await asyncio.sleep(0.3)                            # the watch is polling
            expected = []
            for i in range(20):
                rev = await client.kv.put(f"orders/{i % 4}", i)
                expected.append(("put", f"orders/{i % 4}", i, rev))
                await client.kv.put(f"other/{i}", i)            # not under the prefix
            await client.kv.delete("orders/0")
            expected.append(("delete", "orders/0", None, None))
            old = leader_of(voters)
            await old.stop()                                    # its polls fail over
            for i in range(20, 30):
                rev = await client.kv.put(f"orders/{i % 4}", i, timeout=10)
                expected.append(("put", f"orders/{i % 4}", i, rev))
            await until(lambda: len(seen) >= len(expected), timeout=15)
            await asyncio.sleep(0.3)
            task.cancel()
            assert [e[:3] for e in seen] == [e[:3] for e in expected]        # none missed, none twice
            assert [e[3] for e in seen if e[0] == "put"] == [e[3] for e in expected if e[0] == "put"]
            revisions = [e[3] for e in seen]
            assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
        finally:
            await stop_all([client] + [v for v in voters if v._started])
    run_async(main)


def test_a_watch_resumes_from_a_revision_and_resets_when_it_fell_behind(tmp_path):
    async def main():
        voters = await start_voters(tmp_path)
        for v in voters:
            v._raft.history.capacity = 5                        # a tiny window of kept changes
        try:
            first = await voters[0].kv.put("cfg/a", 1, timeout=10)
            await voters[0].kv.put("cfg/b", 2)
            events = []
            async for ev in voters[1].kv.watch("cfg/", after=first - 1):
                events.append((ev.kind, ev.key, ev.value))
                if len(events) == 2:
                    break
            assert events == [("put", "cfg/a", 1), ("put", "cfg/b", 2)]
            for i in range(10):
                await voters[0].kv.put(f"cfg/c{i}", i)          # pushes cfg/a out of the window
            events = []
            async for ev in voters[2].kv.watch("cfg/", after=first - 1):
                events.append((ev.kind, ev.key, ev.value))
                if len(events) == 13:
                    break
            assert events[0][0] == "reset"
            assert dict((k, v) for kind, k, v in events[1:]) == \
                {"cfg/a": 1, "cfg/b": 2, **{f"cfg/c{i}": i for i in range(10)}}
        finally:
            await stop_all(voters)
    run_async(main)


def test_a_lease_keeps_its_keys_while_kept_alive_and_drops_them_when_it_expires(tmp_path):
    async def main():
        voters = await start_voters(tmp_path)
        client = mesh.Node("client", seeds=[voters[0].address])
        await client.start()
        try:
            kept = await client.kv.grant(0.6, timeout=10)
            let_go = await client.kv.grant(0.6)
            revoked = await client.kv.grant(30)
            await client.kv.put("svc/kept", "a", lease=kept)
            await client.kv.put("svc/let-go", "b", lease=let_go)
            await client.kv.put("svc/revoked", "c", lease=revoked)
            await client.kv.put("svc/plain", "d")
            assert await client.kv.revoke(revoked) is True
            assert await client.kv.get("svc/revoked") is None
            for _ in range(8):                                  # 1.6 s: past two TTLs
                assert await client.kv.keepalive(kept) is True
                await asyncio.sleep(0.2)
            assert await client.kv.range("svc/") == {"svc/kept": "a", "svc/plain": "d"}
            assert await client.kv.keepalive(let_go) is False   # it ended on its own
            await asyncio.sleep(1.2)                            # stop renewing: gone within a TTL or so
            assert await client.kv.range("svc/") == {"svc/plain": "d"}
            with pytest.raises(ProtocolError, match="lease"):
                await client.kv.put("svc/late", 1, lease=kept)  # the lease no longer exists
        finally:
            await stop_all([client] + voters)
    run_async(main)


def test_a_lock_admits_one_holder_at_a_time(tmp_path):
    async def main():
        voters = await start_voters(tmp_path)
        a = mesh.Node("a", seeds=[voters[0].address])
        b = mesh.Node("b", seeds=[voters[0].address])
        await a.start()
        await b.start()
        inside, most, entries = 0, 0, []

        async def worker(node, tag):
            nonlocal inside, most
            for _ in range(3):
                async with node.kv.lock("books", ttl=2.0) as held:
                    inside += 1
                    most = max(most, inside)
                    entries.append(tag)
                    await asyncio.sleep(0.05)
                    assert not held.lost.is_set()
                    inside -= 1

        try:
            await a.kv.put("warmup", 1, timeout=10)
            await asyncio.wait_for(asyncio.gather(worker(a, "a"), worker(b, "b"), worker(a, "a2")), 60)
            assert most == 1 and len(entries) == 9
            assert await a.kv.range("_locks/") == {}             # released, not left to expire
        finally:
            await stop_all([a, b] + voters)
    run_async(main)


def test_a_singleton_runs_on_one_node_and_moves_when_its_node_stops(tmp_path):
    async def main():
        voters = await start_voters(tmp_path)
        hosts = [mesh.Node(f"h{i}", seeds=[voters[0].address]) for i in range(3)]
        agents = [Counter() for _ in hosts]
        for h, agent in zip(hosts, agents):
            h.add(agent, singleton=True, singleton_ttl=1.0)
            await h.start()
        caller = mesh.Node("caller", seeds=[voters[0].address])
        await caller.start()
        try:
            await until(lambda: sum("ledger" in h.agents for h in hosts) == 1, timeout=15)
            holder = next(h for h in hosts if "ledger" in h.agents)

            async def answer():
                for _ in range(200):
                    try:
                        return await caller.call("ledger", "where", timeout=1.0)
                    except MeshError:
                        await asyncio.sleep(0.05)
                raise AssertionError("the singleton never answered")

            assert await answer() == holder.node_id
            await holder.stop()                                 # resigns: another takes over
            rest = [h for h in hosts if h is not holder]
            await until(lambda: sum("ledger" in h.agents for h in rest) == 1, timeout=15)
            second = next(h for h in rest if "ledger" in h.agents)
            await until(lambda: "ledger" in caller.directory() and
                        caller.directory()["ledger"][0] == second.node_id, timeout=15)
            assert await answer() == second.node_id
            assert sum("ledger" in h.agents for h in rest) == 1
        finally:
            await stop_all([caller] + [h for h in hosts if h._started] + voters)
    run_async(main)


def test_snapshots_bound_the_log_and_a_voter_far_behind_catches_up_from_one(tmp_path):
    async def main():
        cfg = RaftConfig(snapshot_entries=50)
        first = mesh.Node("v1", data_dir=tmp_path / "v1", raft_voters=VOTERS, raft=cfg)
        await first.start()
        second = mesh.Node("v2", seeds=[first.address], data_dir=tmp_path / "v2", raft_voters=VOTERS, raft=cfg)
        await second.start()
        late = None
        try:
            for i in range(200):                                # v3 is not there: it misses all of it
                await first.kv.put(f"k{i}", i, timeout=10)
            assert first._raft.status()["snapshot_index"] >= 150
            assert second._raft.status()["snapshot_index"] >= 150
            segments = os.listdir(tmp_path / "v1" / "raft")
            late = mesh.Node("v3", seeds=[first.address], data_dir=tmp_path / "v3", raft_voters=VOTERS, raft=cfg)
            await late.start()
            await first.kv.put("after", 1)
            await until(lambda: late._raft.machine.get("after") is not None, timeout=15)
            assert {f"k{i}": late._raft.machine.get(f"k{i}").value for i in range(200)} == {f"k{i}": i for i in range(200)}
            await late.stop()                                   # and it restarts from its snapshot
            late = mesh.Node("v3", seeds=[first.address], data_dir=tmp_path / "v3", raft_voters=VOTERS, raft=cfg)
            await late.start()
            assert late._raft.machine.get("k199").value == 199
            assert segments                                     # (the folder is real)
        finally:
            await stop_all([n for n in (late, second, first) if n is not None and n._started])
    run_async(main)
