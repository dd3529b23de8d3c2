"""Raft and ``node.kv`` with real voter processes (``python -m mesh.node --raft-voters ...``) on
loopback, each with its own data folder, and a client ``mesh.Node`` in the test process.

* kill -9 of the leader under a concurrent write load: a new leader takes writes within
  seconds, and every acknowledged write is there, also after the old leader restarts from
  its disk and has to be part of the quorum;
* a voter restarted over a damaged log tail: a torn tail (cut short, garbage appended, a
  flipped byte) is cut and the voter catches up; damage to a record the voter knew to be
  committed makes it refuse to start rather than forget it;
* a history of concurrent put/get/cas while voters are killed and restarted is checked
  with the Wing-Gong checker (:mod:`mesh.sim.linearizability`).
"""
from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

import mesh
from mesh.errors import MeshError
from mesh.kv.machine import KVMachine, encode_command
from mesh.raft.messages import EntryKind
from mesh.sim.linearizability import History, check
from mesh.storage import Entry, RaftStorage
from mesh.storage.log import is_segment_file
from mesh.storage.records import encode_frame
from tests.conftest import run_async
from tests.integration.cluster import NodeProcess
from tests.integration.test_processes import eventually

pytestmark = pytest.mark.integration

VOTERS = ["v1", "v2", "v3"]
# Bounds are generous: the machine is small (2 cores) and shared. Elections take 150-300 ms.
NEW_LEADER_WITHIN_S = 5.0
OP_TIMEOUT_S = 5.0


class VoterCluster:
    """Three ``python -m mesh.node`` voters, each with its data folder and log file under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs = {name: NodeProcess(name, [], data_dir=root / name, raft_voters=VOTERS,
                                        log_file=root / f"{name}.log") for name in VOTERS}

    def start(self) -> VoterCluster:
        first = self.procs[VOTERS[0]].start()
        for name in VOTERS[1:]:
            self.procs[name].join = [first.address]
            self.procs[name].start()
        return self

    def addresses(self) -> list[str]:
        return [p.address for p in self.procs.values()]

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def restart(self, name: str) -> NodeProcess:
        proc = self.procs[name]
        proc.join = [p.address for n, p in self.procs.items() if n != name]   # any live one will do
        return proc.start()

    def alive(self, name: str) -> bool:
        proc = self.procs[name].proc
        return proc is not None and proc.poll() is None

    def segment(self, name: str) -> Path:
        """The newest log segment file of ``name`` (see mesh/storage/log.py for the layout)."""
        folder = self.root / name / "raft"
        return folder / max(n for n in os.listdir(folder) if is_segment_file(n))

    def log_text(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()


@pytest.fixture
def cluster(tmp_path):
    c = VoterCluster(tmp_path)
    try:
        yield c.start()
    finally:
        c.close()


def client_of(cluster: VoterCluster) -> mesh.Node:
    return mesh.Node("client", seeds=cluster.addresses(), join_timeout=10)


async def status(client: mesh.Node, name: str) -> dict | None:
    try:
        return await client.call(f"_raft.{name}", "status", timeout=1.0)
    except MeshError:
        return None


async def leader_of(client: mesh.Node, cluster: VoterCluster) -> str | None:
    """The voter that says it leads, if the others that answer agree."""
    views = [s for s in await asyncio.gather(*(status(client, n) for n in VOTERS if cluster.alive(n)))
             if s is not None]
    leaders = {s["id"] for s in views if s["role"] == "leader"}
    if len(leaders) != 1:
        return None
    (leader,) = leaders
    term = next(s["term"] for s in views if s["id"] == leader)
    return leader if all(s["leader"] in (leader, None) or s["term"] < term for s in views) else None


async def caught_up(client: mesh.Node, cluster: VoterCluster, name: str) -> bool:
    """``name`` has applied everything the leader had committed when asked."""
    leader = await leader_of(client, cluster)
    if leader is None:
        return False
    lead, me = await status(client, leader), await status(client, name)
    return lead is not None and me is not None and me["applied"] >= lead["commit"] \
        and me["commit"] >= lead["commit"]


async def put_all(client: mesh.Node, items: dict[str, object]) -> None:
    for key, value in items.items():
        await client.kv.put(key, value, timeout=OP_TIMEOUT_S)


async def read_all(client: mesh.Node, keys, parallel: int = 16) -> dict[str, object]:
    """Linearizable reads of ``keys`` through the leader, a few at a time."""
    keys = list(keys)
    out: dict[str, object] = {}
    for i in range(0, len(keys), parallel):
        chunk = keys[i:i + parallel]
        values = await asyncio.gather(*(client.kv.get(k, timeout=OP_TIMEOUT_S) for k in chunk))
        out.update(zip(chunk, values))
    return out


def condition(pred):
    """``pred()`` as the coroutine function that ``eventually`` polls."""
    async def poll() -> bool:
        return pred()
    return poll


def missing_or_wrong(acked: dict[str, object], seen: dict[str, object]) -> dict[str, tuple]:
    return {k: (v, seen.get(k)) for k, v in acked.items() if seen.get(k) != v}


# -- 1. kill -9 the leader under write load -----------------------------------------------------

WRITERS = 6


def test_leader_killed_under_write_load_loses_no_acknowledged_write(cluster):
    async def main():
        async with client_of(cluster) as client:
            await client.kv.put("warm", 1, timeout=20)          # retried until a leader is elected
            old = await eventually(lambda: leader_of(client, cluster), timeout=10)
            old_term = (await status(client, old))["term"]
            acked: dict[str, str] = {}
            errors: Counter[str] = Counter()
            after_kill: list[float] = []        # completion offsets of writes invoked after the kill
            killed_at: list[float] = []
            stop = asyncio.Event()

            async def writer(w: int) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    key, value = f"w{w}/{n}", f"{w}.{n}"
                    invoked = time.monotonic()
                    try:
                        await client.kv.put(key, value, timeout=OP_TIMEOUT_S)
                    except MeshError as exc:       # may or may not have taken effect: not checked
                        errors[type(exc).__name__] += 1
                        continue
                    acked[key] = value
                    if killed_at and invoked >= killed_at[0]:
                        after_kill.append(time.monotonic() - killed_at[0])

            writers = [asyncio.create_task(writer(w)) for w in range(WRITERS)]
            try:
                await eventually(condition(lambda: len(acked) >= 150), timeout=20)
                cluster.kill(old)                  # returns once the process is gone
                killed_at.append(time.monotonic())
                before_kill = len(acked)
                await eventually(condition(lambda: len(after_kill) >= 100), timeout=NEW_LEADER_WITHIN_S + 15)
            finally:
                stop.set()
                await asyncio.gather(*writers)
            first_s = min(after_kill)
            print(f"\n{len(acked)} writes acknowledged ({before_kill} before the kill), errors {dict(errors)}; "
                  f"first write after killing leader {old} acknowledged after {first_s:.2f} s")
            assert first_s < NEW_LEADER_WITHIN_S
            new = await eventually(lambda: leader_of(client, cluster), timeout=10)
            assert (await status(client, new))["term"] > old_term

            assert missing_or_wrong(acked, await read_all(client, acked)) == {}

            # the old leader comes back from its disk and catches up ...
            await asyncio.get_running_loop().run_in_executor(None, cluster.restart, old)
            await eventually(lambda: caught_up(client, cluster, old), timeout=15)
            # ... and has to be in every quorum once the current leader is gone too
            cluster.kill(new)
            await client.kv.put("after", 2, timeout=20)
            assert missing_or_wrong(acked, await read_all(client, acked)) == {}
            assert await client.kv.get("warm", timeout=OP_TIMEOUT_S) == 1
        # the restarted voter's own disk holds them all
        cluster.kill(old)
        machine = _replay(cluster.root / old / "raft")
        assert missing_or_wrong(acked, {k: v.value for k, v in machine.data.items()}) == {}
    run_async(main)


# -- 2. restart over a damaged log tail ---------------------------------------------------------

def _durable_state(cluster: VoterCluster, name: str, scratch: Path) -> tuple[int, int, int]:
    """(commit, last index, last term) of a stopped voter, read from a copy of its folder so
    that the recovery of the real one is left to the voter itself."""
    copy = scratch / f"{name}-copy-{time.monotonic_ns()}"
    shutil.copytree(cluster.root / name / "raft", copy)
    try:
        with RaftStorage.open(copy, fsync=False) as st:
            return st.hard_state.commit, st.last_index, st.last_term
    finally:
        shutil.rmtree(copy)


def _replay(folder: Path) -> KVMachine:
    """The state machine as a stopped voter's own disk has it: its snapshot, if any, and
    then its committed entries, applied."""
    machine = KVMachine()
    with RaftStorage.open(folder, fsync=False) as st:
        snap = st.load_snapshot()
        if snap is not None:
            machine.restore(snap[1])
        for e in st.entries(max(st.first_index, machine.applied + 1), st.hard_state.commit + 1):
            if e.kind == EntryKind.NORMAL:
                machine.apply(e.index, e.data)
    return machine


def _damage(segment: Path, how: str, ghost: bytes, rng: random.Random) -> int:
    """Damage the tail of ``segment`` the way a crash in the middle of appending ``ghost``
    (a record nobody acknowledged) could; returns how many bytes recovery must cut."""
    size = segment.stat().st_size
    with open(segment, "ab") as f:
        if how == "garbage":
            junk = bytes(rng.randrange(256) for _ in range(300))
            f.write(junk)
            return len(junk)
        f.write(ghost)
    if how == "cut-record":                       # truncate the last N bytes: the payload is torn
        keep = len(ghost) // 2
    elif how == "cut-header":                     # only part of the 8-byte frame header landed
        keep = 5
    else:
        assert how == "flipped-byte"              # every byte there, one of them wrong
        with open(segment, "r+b") as f:
            at = size + len(ghost) - 3
            f.seek(at)
            byte = f.read(1)[0]
            f.seek(at)
            f.write(bytes([byte ^ 0x10]))
        return len(ghost)
    os.truncate(segment, size + keep)
    return keep


@pytest.mark.parametrize("how", ["cut-record", "cut-header", "garbage", "flipped-byte"])
def test_voter_restarts_over_a_torn_log_tail_and_catches_up(cluster, tmp_path, how):
    """A follower is killed; its newest segment then ends in what a crash in the middle of an
    append leaves: the record after its last one (a write nobody acknowledged, beyond its
    durable commit) cut short -- the last N bytes truncated, or only part of the header --,
    garbage, or complete with a flipped byte. It restarts, cuts exactly those bytes, catches
    up on what it missed, and its disk then holds every acknowledged write and not the torn
    one. (Damage to a record it knew to be committed is the next test.)"""
    async def main():
        async with client_of(cluster) as client:
            await client.kv.put("warm", 0, timeout=20)
            acked = {f"k{i}": i for i in range(40)}
            await put_all(client, acked)
            leader = await eventually(lambda: leader_of(client, cluster), timeout=10)
            victim, other = [n for n in VOTERS if n != leader]
            await eventually(lambda: caught_up(client, cluster, victim), timeout=10)
            cluster.kill(victim)

            # while it is down the others go on: it will have to catch up on these
            down = {f"d{i}": {"i": i} for i in range(40)}
            await put_all(client, down)
            acked.update(down)

            commit, last, term = _durable_state(cluster, victim, tmp_path)
            assert commit == last > 40
            ghost = encode_frame(Entry(last + 1, term, int(EntryKind.NORMAL),
                                       encode_command("ghost", 1, "put", "ghost", "boo", 0)))
            segment = cluster.segment(victim)
            size = segment.stat().st_size
            cut = _damage(segment, how, ghost, random.Random(7))
            assert segment.stat().st_size == size + cut

            await asyncio.get_running_loop().run_in_executor(None, cluster.restart, victim)
            text = cluster.log_text(victim)
            assert "torn tail" in text and f"cutting {cut} bytes at offset {size}" in text, text

            more = {f"m{i}": [i] for i in range(20)}
            await put_all(client, more)
            acked.update(more)
            await eventually(lambda: caught_up(client, cluster, victim), timeout=15)

            # with the other follower gone, the repaired voter is in every quorum
            cluster.kill(other)
            assert missing_or_wrong(acked, await read_all(client, acked)) == {}
            assert await client.kv.get("ghost", timeout=OP_TIMEOUT_S) is None
            await client.kv.put("last", "written", timeout=OP_TIMEOUT_S)
            await eventually(lambda: caught_up(client, cluster, victim), timeout=15)
            acked["last"] = "written"
        # and its own disk holds every acknowledged write, and not the torn one
        cluster.kill(victim)
        machine = _replay(cluster.root / victim / "raft")
        on_disk = {k: v.value for k, v in machine.data.items()}
        assert missing_or_wrong(acked, on_disk) == {}
        assert "ghost" not in on_disk
    run_async(main)


async def _damage_a_committed_tail(cluster: VoterCluster, client: mesh.Node, scratch: Path,
                                   how: str) -> tuple[str, dict, Path, bytes]:
    """Kill a caught-up follower and damage the last record of its log, one it knew to be
    committed. Returns (victim, acknowledged writes, segment, the damaged segment's bytes)."""
    await client.kv.put("warm", 0, timeout=20)
    acked = {f"k{i}": i for i in range(30)}
    await put_all(client, acked)
    leader = await eventually(lambda: leader_of(client, cluster), timeout=10)
    victim = next(n for n in VOTERS if n != leader)
    await eventually(lambda: caught_up(client, cluster, victim), timeout=10)
    cluster.kill(victim)
    commit, last, _ = _durable_state(cluster, victim, scratch)
    assert commit == last            # the last record is one it knew to be committed
    segment = cluster.segment(victim)
    size = segment.stat().st_size
    if how == "cut":
        os.truncate(segment, size - 10)
    else:
        assert how == "flipped-byte"
        with open(segment, "r+b") as f:
            f.seek(size - 3)
            byte = f.read(1)[0]
            f.seek(size - 3)
            f.write(bytes([byte ^ 0x01]))
    return victim, acked, segment, segment.read_bytes()


@pytest.mark.parametrize("how", ["cut", "flipped-byte"])
def test_voter_refuses_to_start_when_a_committed_record_is_damaged(cluster, tmp_path, how):
    """A damaged last record the voter had known to be committed is not a torn write: the
    storage refuses to open (CorruptLog, "committed entries are missing") instead of serving
    a log without it, every time it is started; the other two go on serving."""
    async def main():
        async with client_of(cluster) as client:
            victim, acked, _, _ = await _damage_a_committed_tail(cluster, client, tmp_path, how)
            for attempt in range(2):
                with pytest.raises(RuntimeError, match="did not start"):
                    await asyncio.get_running_loop().run_in_executor(None, cluster.restart, victim)
                assert cluster.procs[victim].proc.returncode == 1
                text = cluster.log_text(victim)
                assert text.count("committed entries are missing") == attempt + 1, text
            await client.kv.put("still", "serving", timeout=OP_TIMEOUT_S)
            assert missing_or_wrong(acked, await read_all(client, acked)) == {}
    run_async(main)


def test_a_voter_that_refuses_to_start_leaves_its_damaged_log_as_it_was(cluster, tmp_path):
    async def main():
        async with client_of(cluster) as client:
            victim, _, segment, damaged = await _damage_a_committed_tail(cluster, client, tmp_path,
                                                                         "flipped-byte")
            with pytest.raises(RuntimeError, match="did not start"):
                await asyncio.get_running_loop().run_in_executor(None, cluster.restart, victim)
            assert "committed entries are missing" in cluster.log_text(victim)
            # one flipped bit in a complete record: still there for an operator to look at
            assert segment.stat().st_size == len(damaged)
            assert segment.read_bytes() == damaged
    run_async(main)


# -- 3. linearizability of a real history under kill -9 ---------------------------------------

KEYS = ("a", "b", "c")
CLIENT_TASKS = 5
FAULT_ROUNDS = 3


def test_concurrent_history_under_kill_9_and_restarts_is_linearizable(cluster):
    history = History(clock=time.monotonic)
    outcomes: Counter[str] = Counter()
    faults: list[str] = []

    async def main():
        async with client_of(cluster) as client:
            await client.kv.put("warm", 0, timeout=20)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            async def run_op(name: str, kind: str, key: str, value=None, expected=None) -> int:
                if kind == "put":
                    op = history.invoke(name, "put", key, value)
                    call = client.kv.put(key, value, timeout=OP_TIMEOUT_S)
                elif kind == "cas":
                    op = history.invoke(name, "cas", key, value, expected=expected)
                    call = client.kv.cas(key, expected, value, timeout=OP_TIMEOUT_S)
                else:
                    op = history.invoke(name, "get", key)
                    call = client.kv.get(key, timeout=OP_TIMEOUT_S)
                try:
                    result = await call
                except MeshError as exc:
                    # timed out, or the answer was lost: it may take effect later, or never
                    history.info(op)
                    outcomes[f"info {type(exc).__name__}"] += 1
                    return op
                history.ok(op, None if kind == "put" else result)
                outcomes[f"ok {kind}" + (f" {result}" if kind == "cas" else "")] += 1
                return op

            async def client_task(c: int) -> None:
                rng = random.Random(c)
                name = f"c{c}"
                seen: dict[str, object] = {}
                n = 0
                while not stop.is_set():
                    n += 1
                    key = rng.choice(KEYS)
                    kind = rng.choices(("put", "get", "cas"), (4, 4, 2))[0]
                    value = f"{name}.{n}"
                    if kind == "cas":
                        # mostly the value this client last saw there: some succeed, some do not
                        expected = seen.get(key) if rng.random() < 0.8 else None
                        op = history[await run_op(name, "cas", key, value, expected)]
                    else:
                        op = history[await run_op(name, kind, key, value if kind == "put" else None)]
                    if op.known:
                        if kind == "get":
                            seen[key] = op.result
                        elif kind == "put" or (kind == "cas" and op.result):
                            seen[key] = value

            tasks = [asyncio.create_task(client_task(c)) for c in range(CLIENT_TASKS)]
            try:
                await asyncio.sleep(1.0)
                for round_no in range(FAULT_ROUNDS):
                    leader = await eventually(lambda: leader_of(client, cluster), timeout=15)
                    victim = leader if round_no % 2 == 0 else next(n for n in VOTERS if n != leader)
                    cluster.kill(victim)
                    faults.append(f"{victim} ({'leader' if victim == leader else 'follower'})")
                    await asyncio.sleep(0.8)
                    await loop.run_in_executor(None, cluster.restart, victim)
                    await asyncio.sleep(0.8)
                await asyncio.sleep(0.5)
            finally:
                stop.set()
                await asyncio.gather(*tasks)
            # a last read of every key once everything has settled
            for key in KEYS:
                await run_op("final", "get", key)

    run_async(main)
    ops = history.ops
    ok = [o for o in ops if o.known]
    kinds = Counter(o.kind for o in ok)
    print(f"\n{len(ops)} operations, faults: {', '.join(faults)}; outcomes {dict(sorted(outcomes.items()))}")
    # not vacuous: a real history with reads, writes and both answers of cas, across the faults
    assert len(faults) == FAULT_ROUNDS
    assert len(ok) >= 300 and kinds["get"] >= 50 and kinds["put"] >= 50, kinds
    assert outcomes["ok cas True"] >= 5 and outcomes["ok cas False"] >= 5, outcomes
    assert sum(1 for o in ok if o.kind == "get" and o.result is not None) >= 50

    result = check(history, "kv", timeout_s=30.0)
    print(f"checked {result.checked_ops} operations in {result.elapsed_s:.2f} s: {result.verdict}")
    assert result.ok, result.explanation

    # the same check does catch a stale read in this history: a read, after everything, of a
    # value that a later acknowledged put (invoked after it completed) overwrote
    stale = _stale_read(ops)
    assert stale is not None
    broken = History.from_records(history.to_records() + [stale])
    verdict = check(broken, "kv", timeout_s=30.0)
    assert not verdict.ok and not verdict.timed_out, verdict.explanation


def _stale_read(ops) -> dict | None:
    end = max(o.completed_at or o.invoked_at for o in ops)
    puts = [o for o in ops if o.known and o.kind == "put"]
    for first in puts:
        for later in puts:
            if later.key == first.key and later.invoked_at > first.completed_at:
                return {"client": "fake", "op": "get", "key": first.key, "invoked_at": end + 1,
                        "completed_at": end + 2, "outcome": "ok", "result": first.value}
    return None
