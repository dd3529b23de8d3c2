"""Sharding on real sockets: ``call_key`` routes each key to one owner, the shard map in the
Raft KV follows the providers and survives a leader change, and owners change under a steady
stream of calls without losing, repeating or overlapping any. Three voter nodes, provider
nodes and a client in one process (one clock, so handler intervals can be compared), and one
provider in a real process that is killed."""
from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict

import pytest

import mesh
from mesh._core import router as core_router
from mesh.errors import UnknownAgent, UnknownMethod
from mesh.patterns.sharding import ShardConfig, ShardMap, Sharded, map_key, moved_fraction, shard_router
from tests.conftest import run_async
from tests.integration.cluster import NodeProcess
from tests.integration.test_kv import leader_of, start_voters

pytestmark = pytest.mark.integration

CAP = "store"
CONFIG = ShardConfig(lease_ttl_s=1.5, settle_s=0.2, poll_s=0.05, drain_s=10.0)
EXECUTED: list[tuple] = []          # (key, call id, agent, started, ended): every handler run in this process


class Plain(mesh.Agent):
    """Offers a capability without being Sharded: call_key must say so."""
    capabilities = ("plain",)

    @mesh.rpc
    def where(self, key):
        return self.name


class Store(Sharded):
    capabilities = (CAP,)

    @mesh.rpc
    def where(self, key):
        return self.name

    @mesh.rpc
    async def put(self, key, call_id):
        started = time.monotonic()
        await asyncio.sleep(0.01)           # long enough for calls on one partition to overlap
        EXECUTED.append((key, call_id, self.name, started, time.monotonic()))
        return self.name


def configured(node):
    shard_router(node).config = CONFIG
    return node


async def provider(name, seed):
    node = configured(mesh.Node(name, seeds=[seed]))
    node.add(Store(f"store-{name}"))
    await node.start()
    return node


async def stop_all(nodes):
    for n in nodes:
        if n._started:
            await shard_router(n).stop()        # idempotent: the node may do it itself
            await n.stop()


async def until(predicate, timeout=15.0, step=0.02):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


async def stored_map(node) -> ShardMap | None:
    return await shard_router(node).load_map(CAP, timeout=10)


def map_over(node, providers):
    async def check():
        m = await stored_map(node)
        return m if m is not None and m.providers == tuple(providers) else None
    return check


async def cluster(tmp_path, providers):
    voters = await start_voters(tmp_path)
    for v in voters:
        configured(v)
    nodes = [await provider(name, voters[0].address) for name in providers]
    client = configured(mesh.Node("client", seeds=[voters[0].address]))
    await client.start()
    await client.kv.put("warmup", 1, timeout=10)
    return voters, nodes, client


KEYS = [f"user:{i}" for i in range(120)]


def test_call_key_routes_each_key_to_one_owner_and_the_map_follows_the_providers(tmp_path):
    async def main():
        voters, (p1, p2), client = await cluster(tmp_path, ["p1", "p2"])
        p3 = None
        try:
            answers = [await client.call_key(CAP, k, "where", k, timeout=10) for k in KEYS]
            first = await stored_map(client)
            assert first.epoch == 1 and first.providers == ("store-p1", "store-p2") and first.partitions == CONFIG.partitions
            assert answers == [first.owner_of(k) for k in KEYS]                 # the map decides
            assert set(answers) == {"store-p1", "store-p2"}
            assert [await p1.call_key(CAP, k, "where", k) for k in KEYS] == answers   # from any node
            with pytest.raises(UnknownAgent, match="no agent offers"):
                await client.call_key("nobody", "k", "where", "k", timeout=5)
            p2.add(Plain("plain-1"))
            await until(lambda: "plain-1" in client.directory())
            with pytest.raises(UnknownMethod, match="not a mesh.patterns.sharding.Sharded agent"):
                await client.call_key("plain", "k", "where", "k", timeout=5)
            with pytest.raises(TypeError, match="key must be str or bytes"):
                await client.call_key(CAP, 42, "where", 42)

            p3 = await provider("p3", voters[0].address)                         # n: 2 -> 3
            grown = await until(map_over(client, ["store-p1", "store-p2", "store-p3"]))
            assert grown.epoch == 2
            assert 0.5 / 3 < moved_fraction(first, grown) < 1.6 / 3
            assert [await client.call_key(CAP, k, "where", k) for k in KEYS] == [grown.owner_of(k) for k in KEYS]

            await stop_all([p3])                                                 # n: 3 -> 2
            shrunk = await until(map_over(client, ["store-p1", "store-p2"]))
            assert shrunk.epoch == 3 and shrunk.owners == first.owners          # placement is a function of the providers
            assert 0.5 / 3 < moved_fraction(grown, shrunk) < 1.6 / 3
            assert [await client.call_key(CAP, k, "where", k) for k in KEYS] == answers
        finally:
            await stop_all([client, p1, p2] + ([p3] if p3 else []) + voters)
    run_async(main)


def test_the_map_survives_a_leader_change(tmp_path):
    async def main():
        voters, (p1, p2), client = await cluster(tmp_path, ["p1", "p2"])
        p3 = None
        try:
            before = [await client.call_key(CAP, k, "where", k, timeout=10) for k in KEYS[:40]]
            stored = await stored_map(client)
            old = leader_of(voters)
            await stop_all([old])                                                # not a provider: no rebalance
            rest = [v for v in voters if v is not old]
            await until(lambda: leader_of(rest) is not None)
            after = await stored_map(client)
            assert (after.epoch, after.owners, after.providers) == (stored.epoch, stored.owners, stored.providers)
            assert [await client.call_key(CAP, k, "where", k, timeout=10) for k in KEYS[:40]] == before
            p3 = await provider("p3", rest[0].address)                          # the new leader rewrites it
            grown = await until(map_over(client, ["store-p1", "store-p2", "store-p3"]))
            assert grown.epoch == stored.epoch + 1
        finally:
            await stop_all([client, p1, p2] + ([p3] if p3 else []) + voters)
    run_async(main)


def test_owners_change_under_a_steady_stream_of_calls_and_none_is_lost_repeated_or_overlapped(tmp_path):
    """Owners change by hand (move), by a provider joining and by one leaving gracefully, while
    12 workers call without pause. Every call must get its answer, run exactly once, and per
    partition the handler runs must form one run per owner in the order the maps gave the
    partition out, each run ending before the next begins."""
    async def main():
        EXECUTED.clear()
        voters, (p1, p2), client = await cluster(tmp_path, ["p1", "p2"])
        p3 = None
        history: dict[int, tuple[str, ...]] = {}
        answered: list[tuple] = []
        failed: list[BaseException] = []
        running = True

        async def record_maps(after):
            async for event in client.kv.watch(map_key(CAP), after=after):
                if event.kind == "put":
                    m = ShardMap.from_wire(CAP, event.value)
                    history[m.epoch] = m.owners

        async def worker(w):
            i = 0
            while running:
                # half the calls on six hot keys, two workers each: their partitions, the ones
                # moved by hand, always have calls in flight when they change owner
                key = KEYS[w % 6] if i % 2 == 0 else KEYS[(w * 7 + i) % 48]
                call_id = f"{w}-{i}"
                try:
                    agent = await client.call_key(CAP, key, "put", key, call_id, timeout=10)
                    answered.append((key, call_id, agent))
                except Exception as exc:                    # noqa: BLE001 - any failure fails the test
                    failed.append(exc)
                i += 1

        def runs_on(agent):
            return sum(1 for e in EXECUTED if e[2] == agent)

        try:
            await client.call_key(CAP, KEYS[0], "where", KEYS[0], timeout=10)
            revision, items = await client.kv.range(map_key(CAP), revision=True)
            first = ShardMap.from_wire(CAP, items[map_key(CAP)])
            history[first.epoch] = first.owners
            watcher = asyncio.ensure_future(record_maps(revision))
            workers = [asyncio.ensure_future(worker(w)) for w in range(12)]
            await until(lambda: len(answered) > 200)

            router, mover = shard_router(client), shard_router(voters[1])
            partitions = sorted({core_router.partition_of(k, CONFIG.partitions) for k in KEYS[:6]})
            for round_ in range(3):                             # hand moves, back and forth
                for p in partitions:
                    m = router.shard_map(CAP)
                    target = "store-p2" if m.owners[p] == "store-p1" else "store-p1"
                    await mover.move(CAP, p, target, timeout=10)   # elsewhere: the client learns late
                mark = len(answered)
                await until(lambda: len(answered) > mark + 200)

            p3 = await provider("p3", voters[0].address)        # a provider joins
            await until(map_over(client, ["store-p1", "store-p2", "store-p3"]))
            await until(lambda: runs_on("store-p3") > 50)

            await stop_all([p2])                                # and one leaves
            await until(map_over(client, ["store-p1", "store-p3"]))
            mark = len(answered)
            await until(lambda: len(answered) > mark + 300)

            running = False
            await asyncio.gather(*workers)
            watcher.cancel()
        finally:
            running = False
            await stop_all([client, p1, p2] + ([p3] if p3 else []) + voters)

        assert not failed, failed[:3]
        ids = Counter(e[1] for e in EXECUTED)
        assert all(n == 1 for n in ids.values()), [i for i, n in ids.items() if n > 1][:5]   # none twice
        ran_on = {e[1]: e[2] for e in EXECUTED}
        assert {a[1]: a[2] for a in answered} == ran_on          # none lost; each answer from its run
        assert max(history) >= 1 + 3 * len(partitions)          # the moves, the join and the leave happened

        by_partition = defaultdict(list)
        for key, call_id, agent, started, ended in EXECUTED:
            by_partition[core_router.partition_of(key, CONFIG.partitions)].append((started, ended, agent))
        changed = 0
        for p, calls in by_partition.items():
            calls.sort()
            owners = [calls[0][2]]
            run_end = calls[0][1]                  # when the current owner's last call so far ended
            for started, ended, agent in calls[1:]:
                if agent != owners[-1]:
                    assert started >= run_end, f"partition {p}: {agent} began before {owners[-1]} was done"
                    owners.append(agent)
                    run_end = ended
                else:
                    run_end = max(run_end, ended)
            # the owners ran in the order the maps handed the partition on (no flip-flops)
            given = [history[e][p] for e in sorted(history)]
            given = [a for i, a in enumerate(given) if i == 0 or a != given[i - 1]]
            it = iter(given)
            assert all(any(a == b for b in it) for a in owners), (p, owners, given)
            changed += len(owners) > 1
        assert changed >= len(partitions)
    run_async(main)


def test_calls_to_a_killed_owner_are_retried_on_the_next_owner(tmp_path):
    """kill -9 a provider's process while calls run: calls to it fail over (at least once) to
    the next owner once the map has dropped it and its lease has ended; none is lost."""
    async def main():
        voters, (p1,), client = await cluster(tmp_path, ["p1"])
        child = NodeProcess("p9", [f"{__name__}:Store=store-p9"], join=[voters[0].address],
                            log_file=tmp_path / "p9.log")
        await asyncio.get_running_loop().run_in_executor(None, child.start)
        answered: list[str] = []
        failed: list[BaseException] = []
        running = True

        async def worker(w):
            i = 0
            while running:
                key = KEYS[(w * 5 + i) % 40]
                try:
                    answered.append(await client.call_key(CAP, key, "put", key, f"{w}-{i}", timeout=20))
                except Exception as exc:                    # noqa: BLE001 - any failure fails the test
                    failed.append(exc)
                i += 1

        try:
            await until(lambda: "store-p9" in client.directory())
            workers = [asyncio.ensure_future(worker(w)) for w in range(8)]
            await until(map_over(client, ["store-p1", "store-p9"]))
            await until(lambda: answered.count("store-p9") > 50)   # it serves, under its lease
            child.kill()
            await until(map_over(client, ["store-p1"]))
            mark = len(answered)
            await until(lambda: len(answered) > mark + 200)      # every key is on p1 now
            running = False
            await asyncio.gather(*workers)
        finally:
            running = False
            child.kill()
            await stop_all([client, p1] + voters)
        assert not failed, failed[:3]
        assert set(answered[mark:]) == {"store-p1"}
    run_async(main)
