"""Drives the Raft core (:mod:`mesh.raft`) on a voter node: the loop, the disk, the links, and
the replicated key-value state machine (:mod:`mesh.kv`).

Theory of operation
-------------------
* Each input (a message, a timer, a proposal, a read) steps the core, and :meth:`_process`
  runs once at the end of that loop iteration (group commit: the proposals and appends of
  one iteration share one Ready, one fsync, one message per peer). It carries out every
  pending :class:`~mesh.raft.messages.Ready` in order: send its requests (appends, vote
  requests), persist to :class:`~mesh.storage.RaftStorage` and **fsync** (on the loop: about
  0.2 ms on a quiet disk, and it keeps the order of effects obvious), send its responses,
  then apply committed entries to the :class:`~mesh.kv.KVMachine` and answer the proposals
  and reads waiting on them. Nothing is acknowledged before it is durable.
* A proposal waits for its index to be applied. If a different entry lands at that index
  (leadership changed), the proposer gets ``Unavailable`` and the client retries with the
  same (client, seq), which the state machine answers at most once.
* Reads are linearizable: ReadIndex on the leader, then the value once that index is applied.
* A storage failure (full disk, I/O error) stops the node from acknowledging anything: the
  storage refuses every later write, the driver stops stepping the core, and every caller
  gets ``Unavailable``. The node must be restarted (its recovery trusts only the disk).
* Raft messages ride the node's links as envelope kinds 64..70; one that fails validation
  (:mod:`mesh.raft.wire`) or claims another sender is dropped and counted.
* Every ``snapshot_entries`` applied entries the driver snapshots the state machine (written
  atomically by the storage, which then drops the log before it); followers too far behind
  get that snapshot.
* Leases expire by the leader's wall clock: it stamps grants and keepalives, and proposes
  ``expire`` for the leases whose deadline it saw pass. A new leader first gives every lease
  a full TTL from its election (as etcd does), so a failover never expires a lease early.
* Applied changes go to a bounded :class:`~mesh.kv.history.ChangeHistory` for watchers.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from random import Random
from typing import Any

from mesh._core import codec
from mesh.errors import DecodeError, MeshError, ProtocolError, Timeout, Unavailable
import msgpack

from mesh.kv import KVMachine
from mesh.kv.history import ChangeHistory
from mesh.kv.machine import EXPIRE, encode_command
from mesh.node.core_timer import CoreTimer
from mesh.raft import wire
from mesh.raft.config import RaftConfig
from mesh.raft.core import Raft
from mesh.raft.messages import (KIND_OF, AppendResp, ConfState, Entry, EntryKind, HardState, Ready, Role, Snapshot,
                                SnapshotMeta, SnapshotResp, VoteResp)
from mesh.storage import (Entry as StoredEntry, HardState as StoredHardState, RaftStorage,
                          SnapshotMeta as StoredSnapshotMeta, StorageError)

log = logging.getLogger(__name__)

_LEASE_CHECK_MS = 100
_PROMISES = (AppendResp, VoteResp, SnapshotResp)   # sent only once what they vouch for is durable


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _expire(fut: asyncio.Future, why: str) -> None:
    if not fut.done():
        fut.set_exception(Timeout(why))


class ConsensusDriver:
    def __init__(self, node_id: str, voters: tuple[str, ...], data_dir: str, transport: Any,
                 config: RaftConfig, rng: Random, limits: Any, fsync: bool = True,
                 history: int = 10_000) -> None:
        self.node_id = node_id
        self.voters = voters
        self.path = os.path.join(data_dir, "raft")
        self.config = config
        self.machine = KVMachine()
        self.history = ChangeHistory(history)
        self._transport = transport
        self._rng = rng
        self._limits = limits
        self._fsync = fsync
        self._storage: RaftStorage | None = None
        self._core: Raft | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: CoreTimer | None = None
        self._waiting: dict[int, tuple[int, asyncio.Future]] = {}      # index -> (term, future)
        self._reads: dict[bytes, asyncio.Future] = {}                   # ctx -> future(index)
        self._read_ids = itertools.count(1)
        self._applied_waiters: list[tuple[int, asyncio.Future]] = []
        self._failed: BaseException | None = None
        self._leader_since_ms: int | None = None   # wall clock when we last became leader
        self._next_lease_check = 0
        self._kicked = False        # a _process is queued for the end of this loop iteration
        self._closed = False
        self._leader_waiters: list[asyncio.Future] = []
        self._expiring: dict[int, int] = {}          # lease -> deadline we proposed to expire
        self.applied = 0          # last committed entry carried out (any kind; the machine skips no-ops)
        self.counters = {"raft_in": 0, "raft_out": 0, "raft_malformed": 0, "raft_readies": 0, "raft_fsyncs": 0}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._timer = CoreTimer(self._loop, self._tick)
        st = self._storage = RaftStorage.open(self.path, fsync=self._fsync)
        # The bootstrap voters, if we are one; a node added later learns who votes from the log.
        boot = ConfState(self.voters if self.node_id in self.voters else ())
        hs = st.hard_state
        snap = st.load_snapshot()
        meta = None
        if snap is not None:
            smeta, data = snap
            self.machine.restore(data)
            self.history.reset(self.machine.revision)
            meta = SnapshotMeta(smeta.index, smeta.term, wire.decode_conf(smeta.config) if smeta.config
                                else boot)
        entries = [Entry(e.index, e.term, e.kind, e.data) for e in st.entries(st.first_index, st.last_index + 1)] \
            if st.last_index >= st.first_index else []
        for e in entries:                   # the state machine catches up with the durable commit
            if e.index <= hs.commit and e.index > self.machine.applied and e.kind == EntryKind.NORMAL:
                self.history.record(self.machine.apply(e.index, e.data)[1])
        self._core = Raft(self.node_id, config=self.config, rng=self._rng, now_ms=self._now_ms(),
                          conf=boot, hard_state=HardState(hs.term, hs.vote, hs.commit),
                          snapshot=meta, entries=entries, applied=hs.commit)
        self.applied = hs.commit
        if snap is not None:
            self._core.compact(Snapshot(meta, snap[1]))
        log.info("raft %s: term %d, log %d..%d, commit %d", self.node_id, hs.term, st.first_index,
                 st.last_index, hs.commit)
        self._schedule()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for _, fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(Unavailable(f"node {self.node_id} is stopping"))
        for fut in self._reads.values():
            if not fut.done():
                fut.set_exception(Unavailable(f"node {self.node_id} is stopping"))
        if self._storage is not None:
            self._storage.close()

    def link_down(self, peer: str) -> None:
        """Our link to ``peer`` dropped; if it is the leader, elect a new one now."""
        if self._core is not None and self._failed is None and peer == self._core.leader:
            self._core.leader_unreachable(self._now_ms())
            self._schedule()

    async def wait_for_leader(self, timeout: float) -> str | None:
        """The leader's id, waiting up to ``timeout`` for an election to end."""
        if self._core is not None and self._core.leader is None and timeout > 0:
            fut = self._loop.create_future()
            self._leader_waiters.append(fut)
            timer = self._loop.call_later(timeout, lambda: fut.done() or fut.set_result(None))
            try:
                await fut
            finally:
                timer.cancel()
        return self.leader

    @property
    def leader(self) -> str | None:
        return self._core.leader if self._core is not None else None

    @property
    def is_leader(self) -> bool:
        return self._core is not None and self._core.leader == self.node_id

    def members(self) -> frozenset[str]:
        """The voters and learners of the current configuration."""
        c = self._core
        return frozenset(c.conf.voters) | frozenset(c.conf.learners) if c is not None else frozenset()

    def status(self) -> dict[str, Any]:
        c = self._core
        return {"id": self.node_id, "role": c.role.name.lower(), "term": c.term, "leader": c.leader,
                "commit": c.commit, "applied": self.applied, "last_index": c.last_index,
                "snapshot_index": c.log.snapshot_index, "revision": self.machine.revision,
                "voters": list(c.conf.voters), "learners": list(c.conf.learners),
                "failed": repr(self._failed) if self._failed else None}

    # -- client side -------------------------------------------------------------------------

    async def propose(self, command: bytes, timeout: float, stamp: bool = False) -> Any:
        """Replicate ``command`` and return the state machine's result (leader only).
        ``stamp``: the command's last argument is a time, to be set from the leader's clock."""
        self._check()
        if type(command) is not bytes:   # from any node (RaftAgent.propose): storage takes only bytes
            raise ProtocolError(f"a command is bytes, not {type(command).__name__}")
        core = self._core
        if stamp and self.is_leader:
            try:
                *head, _ = msgpack.unpackb(command, raw=False)
            except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
                raise ProtocolError(f"malformed command: {exc}") from None
            command = msgpack.packb([*head, wall_ms()], use_bin_type=True)
        index = core.propose(command, self._now_ms())       # raises NotLeader on a follower
        return await self._applied_result(index, timeout)

    async def reconfigure(self, op: str, node: str, timeout: float) -> dict[str, list[str]]:
        """One membership change, on the leader: ``add_learner`` (it receives the log but does
        not vote), ``promote`` (learner to voter), ``add_voter`` (directly), ``remove``, or
        ``none`` (just read it). Returns the configuration once the change is committed; a
        change already in place is a no-op."""
        self._check()
        core = self._core
        voters, learners = list(core.conf.voters), list(core.conf.learners)
        if op == "add_learner" and node not in voters and node not in learners:
            learners.append(node)
        elif op == "add_voter" and node not in voters:
            voters.append(node)
            learners = [x for x in learners if x != node]
        elif op == "promote" and node not in voters:
            if node not in learners:
                raise ValueError(f"{node} is not a learner; add it as one first")
            learners.remove(node)
            voters.append(node)
        elif op == "remove" and (node in voters or node in learners):
            voters = [x for x in voters if x != node]
            learners = [x for x in learners if x != node]
        elif op not in ("add_learner", "add_voter", "promote", "remove", "none"):
            raise ValueError(f"unknown membership change {op!r}")
        else:
            await self.read_barrier(timeout)      # no change needed: answer from a current view
            return self.membership()
        index = core.propose_conf_change(ConfState(tuple(voters), tuple(learners)), self._now_ms())
        await self._applied_result(index, timeout)
        return self.membership()

    async def transfer_leadership(self, to: str | None, timeout: float) -> str | None:
        """On the leader: hand leadership to voter ``to`` (None: the one furthest along) and
        wait (up to ``timeout``) until it leads. Returns the leader then."""
        core = self._core
        if not self.is_leader:
            return self.leader
        if to is None:
            others = [v for v in core.conf.voters if v != self.node_id]
            if not others:
                return self.node_id
            to = max(others, key=lambda v: core.match_index(v) or 0)
        core.transfer_leadership(to, self._now_ms())
        self._kick()
        deadline = self._loop.time() + timeout
        while self.leader != to and self._loop.time() < deadline:
            await asyncio.sleep(0.005)
        return self.leader

    def membership(self) -> dict[str, list[str]]:
        conf = self._core.conf
        return {"voters": list(conf.voters), "learners": list(conf.learners)}

    def match_index(self, node: str) -> int | None:
        return self._core.match_index(node) if self.is_leader else None

    async def _applied_result(self, index: int, timeout: float) -> Any:
        core = self._core
        fut = self._loop.create_future()
        self._waiting[index] = (core.term, fut)
        self._kick()
        # a timer handle, not asyncio.wait_for: this is once per write, and wait_for costs more
        timer = self._loop.call_later(timeout, _expire, fut, f"entry {index} not applied within {timeout:g} s")
        try:
            result = await fut
        finally:
            timer.cancel()
            self._waiting.pop(index, None)
        if isinstance(result, MeshError):
            raise result
        return result

    async def read_barrier(self, timeout: float) -> None:
        """Return once this leader's state machine reflects every write acknowledged before
        the call (ReadIndex)."""
        self._check()
        ctx = next(self._read_ids).to_bytes(8, "little")
        fut = self._loop.create_future()
        self._reads[ctx] = fut
        try:
            self._core.read_index(ctx, self._now_ms())
            self._kick()
            index = await asyncio.wait_for(fut, timeout)
            if self.applied < index:
                waiter = self._loop.create_future()
                self._applied_waiters.append((index, waiter))
                await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"read not confirmed within {timeout:g} s") from None
        finally:
            self._reads.pop(ctx, None)

    def _check(self) -> None:
        if self._failed is not None:
            raise Unavailable(f"node {self.node_id} stopped acknowledging after a storage failure: {self._failed}")
        if self._core is None:
            raise Unavailable(f"raft on node {self.node_id} is not running")

    # -- network -----------------------------------------------------------------------------

    def handle(self, peer: str, env: Any, from_router: bool) -> bool:
        self.counters["raft_in"] += 1
        try:
            msg = wire.from_body(env.kind, codec.load_body(env.body, self._limits))
            if msg.src != env.src or (from_router and env.src != peer) or msg.dst != self.node_id:
                raise ProtocolError(f"raft message from {peer!r} names {msg.src!r} -> {msg.dst!r}")
        except (DecodeError, ProtocolError) as exc:
            self.counters["raft_malformed"] += 1
            log.debug("malformed raft message from %s dropped: %s", peer, exc)
            return False
        if self._core is None or self._failed is not None:
            return True
        self._core.step(msg, self._now_ms())
        self._kick()
        return True

    # -- the Ready loop ----------------------------------------------------------------------

    def _now_ms(self) -> int:
        return self._timer.now_ms()

    def _tick(self) -> None:
        if self._core is not None and self._failed is None:
            now = self._now_ms()
            self._core.tick(now)
            if self._leader_since_ms is not None and now >= self._next_lease_check:
                self._next_lease_check = now + _LEASE_CHECK_MS
                self._expire_leases()
            self._process()

    def _expire_leases(self) -> None:
        """On the leader: propose the expiry of every lease past its deadline, where a lease
        lives at least a full TTL after our election (its keepalives may have gone to the
        old leader and be lost)."""
        now = wall_ms()
        grace = self._leader_since_ms
        due = []
        for lease in self.machine.leases.values():
            deadline = max(lease.deadline_ms, grace + lease.ttl_ms)
            if deadline <= now and self._expiring.get(lease.id) != lease.deadline_ms:
                due.append([lease.id, lease.deadline_ms])
        self._expiring = {k: v for k, v in self._expiring.items() if k in self.machine.leases}
        if not due:
            return
        try:
            self._core.propose(encode_command("", 0, EXPIRE, due), self._now_ms())
        except MeshError as exc:       # lost leadership, or too much uncommitted: next round
            log.debug("lease expiry not proposed: %s", exc)
            return
        self._expiring.update((lease_id, deadline) for lease_id, deadline in due)

    def _maybe_snapshot(self) -> None:
        core = self._core
        if self.applied - core.log.snapshot_index < self.config.snapshot_entries or self.applied > core.commit:
            return
        meta = SnapshotMeta(self.applied, core.log.term_at(self.applied), core.conf)
        data = self.machine.snapshot()
        self._storage.save_snapshot(StoredSnapshotMeta(meta.index, meta.term, wire.encode_conf(meta.conf)), data)
        core.compact(Snapshot(meta, data))
        log.debug("raft %s: snapshot at %d (%d bytes)", self.node_id, meta.index, len(data))

    def _schedule(self) -> None:
        if self._core is not None and self._failed is None:
            self._timer.arm(self._core.next_deadline_ms())

    def _kick(self) -> None:
        if not self._kicked:
            self._kicked = True
            self._loop.call_soon(self._process)

    def _process(self) -> None:
        self._kicked = False
        core = self._core
        if self._closed:
            return
        while self._failed is None and core.has_ready():
            rd = core.ready()
            self.counters["raft_readies"] += 1
            # Requests (appends, snapshots) promise nothing about our disk: they go first, so
            # the followers' fsyncs overlap ours (Raft thesis 10.2.1; etcd's raft allows the
            # same). Our own entries count toward a commit only once this call returns, after
            # our fsync: no reply can be handled before. Responses promise what we persisted,
            # and a new term or vote must be durable before anyone hears of it: those wait.
            hs, durable = rd.hard_state, self._storage.hard_state
            early = hs is None or (hs.term, hs.vote) == (durable.term, durable.vote)
            promises = []
            for m in rd.messages:
                if early and not isinstance(m, _PROMISES):
                    self._send(m)
                else:
                    promises.append(m)
            try:
                self._persist(rd)
            except StorageError as exc:
                self._fail(exc)
                return
            for m in promises:
                self._send(m)
            self._apply(rd)
            try:
                self._maybe_snapshot()
            except StorageError as exc:
                self._fail(exc)
                return
        self._schedule()

    def _persist(self, rd: Ready) -> None:
        st = self._storage
        dirty = durable = False     # anything to write; anything that needs an fsync
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            st.save_snapshot(StoredSnapshotMeta(meta.index, meta.term, wire.encode_conf(meta.conf)),
                             rd.snapshot.data)
        if rd.truncate_from is not None and rd.truncate_from <= st.last_index:
            st.truncate_suffix(rd.truncate_from)
            dirty = durable = True
        if rd.entries:
            st.append([StoredEntry(e.index, e.term, int(e.kind), e.data) for e in rd.entries])
            dirty = durable = True
        if rd.hard_state is not None:
            hs, old = rd.hard_state, st.hard_state
            st.set_hard_state(StoredHardState(hs.term, hs.vote, hs.commit))
            dirty = True
            durable = durable or (hs.term, hs.vote) != (old.term, old.vote)
        if dirty:
            st.sync()               # fsyncs only what must survive (see RaftStorage.sync)
            if durable:
                self.counters["raft_fsyncs"] += 1

    def _send(self, m: Any) -> None:
        data = codec.encode(KIND_OF[type(m)], 0, 0, self.node_id, "", "", wire.to_body(m), 0, 0, 0)
        self.counters["raft_out"] += 1
        try:
            self._transport.send(m.dst, data)
        except MeshError:
            pass   # the link is down: Raft retries on its own schedule

    def _apply(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.machine.restore(rd.snapshot.data)
            self.history.reset(self.machine.revision)
            self.applied = rd.snapshot.meta.index
        leading = rd.role is Role.LEADER
        if rd.leader is not None and self._leader_waiters:
            waiters, self._leader_waiters = self._leader_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        if leading != (self._leader_since_ms is not None):
            self._leader_since_ms = wall_ms() if leading else None
            self._expiring.clear()
        for e in rd.committed:
            self.applied = e.index
            result: Any = None
            if e.kind == EntryKind.NORMAL and e.index > self.machine.applied:
                result, changes = self.machine.apply(e.index, e.data)
                if changes:
                    self.history.record(changes)
            waiting = self._waiting.pop(e.index, None)
            if waiting is not None:
                term, fut = waiting
                if not fut.done():
                    if term == e.term:
                        fut.set_result(result)
                    else:
                        fut.set_exception(Unavailable(f"entry {e.index} was replaced by a new leader; retry"))
        for rs in rd.reads:
            fut = self._reads.get(rs.ctx)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)
        if self._applied_waiters:
            still = []
            for index, fut in self._applied_waiters:
                if index <= self.applied:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    still.append((index, fut))
            self._applied_waiters = still
        if not leading:
            # proposals of a deposed leader may never commit: let their callers retry now
            for index, (term, fut) in list(self._waiting.items()):
                if term != rd.term and not fut.done():
                    fut.set_exception(Unavailable(f"leadership changed before entry {index} committed; retry"))
                    del self._waiting[index]

    def _fail(self, exc: BaseException) -> None:
        self._failed = exc
        log.error("raft %s: storage failed, no longer acknowledging: %s", self.node_id, exc)
        for _, fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(Unavailable(f"storage failure on {self.node_id}: {exc}"))
        self._waiting.clear()

