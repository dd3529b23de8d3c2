"""A cluster of Raft cores on the simulated network, with disks that lose unsynced writes.

Theory of operation
-------------------
Each simulated node (``n0`` .. ``n{n-1}``, then the spares) is one :class:`~mesh.raft.core.Raft` core plus what
its driver owns: a simulated **disk** (:class:`Disk`: hard state, log, snapshot), a **state
machine** (:class:`KVStore`) with its applied index, and the **driver state** (the Ready being
synced, messages waiting, the one pending timer). The harness is the cores' driver, as the
node runtime is on ZeroMQ and a real disk, and keeps the Ready contract:

1. ``rd = core.ready()``; its persistence (snapshot, ``truncate_from``, entries, hard state)
   goes into an **unsynced** write that becomes durable after an fsync delay drawn from
   ``fsync_ms`` (node stream ``fsync:<id>``; ``(0, 0)`` persists at once);
2. only then are ``rd.messages`` sent,
3. and the snapshot and committed entries applied, and the reads served.

While a Ready is syncing the node takes no other Ready ("one Ready at a time"). What else it
does meanwhile is the ``pipeline`` switch:

- ``pipeline=False`` (default): the driver is **blocked**. Messages that arrive are queued
  (bounded by ``inbox_limit``; beyond that they are dropped and counted in
  ``inbox_dropped``), timers wait. When the sync completes the driver steps every queued
  message, ticks if a deadline passed, and takes one Ready for all of it (group commit).
- ``pipeline=True``: messages and ticks step the core during the sync (the core must not
  count the Ready in flight as durable before the next ``ready()``); the next Ready waits.

Client calls (:meth:`RaftCluster.propose`, reads) reach the core at once in both modes: they
must return an index, and the runtime's ``kv.put`` runs on the loop while an fsync is in a
thread. The core's contract allows inputs between ``ready()`` calls.

Crashes: :meth:`RaftCluster.crash` throws away the core, the inbox and the unsynced write
(``torn=True`` keeps a random prefix of it instead, in the order the driver writes: snapshot,
truncation, entries one by one, hard state -- what an ordered log on a real disk can leave).
:meth:`RaftCluster.restart` builds a fresh core from the disk alone: hard state, log,
snapshot, ``applied`` = the snapshot's index; the state machine is rebuilt from the
snapshot and the core hands the committed entries after it out again.

The **state machine** is a key-value map. An entry's data is a text command
``b"<tag> <verb> <key> [<arg> ...]"``: ``put k v`` -> None, ``get k`` -> value or None,
``cas k old new`` -> bool (``old`` ``_`` = absent), ``del k`` -> bool. ``tag`` makes every
command unique (client op id); anything else (no-ops, config entries, unknown commands)
changes nothing and returns None. Snapshots carry the map and the applied-sequence chain
value that :mod:`mesh.sim.raft_checkers` compares.

The app takes a **snapshot** every ``snapshot_every`` applied entries (0: never): it is durable
at once (an atomic rename), the disk log before it is dropped, and ``core.compact`` is told.
A restarted core gets the disk's snapshot through ``compact`` too (its constructor takes only
the metadata; it needs the data to bring a lagging follower up).

**Messages** travel as objects (no encoding yet); the network counts a rough wire size
(:func:`wire_size`: a fixed header plus entry and snapshot bytes). ``msg_counts`` counts
messages by type.

**Timers**: one wake per node at ``core.next_deadline_ms()``, as :mod:`mesh.sim.swim` does:
a tick that leaves its deadline due is run once more at the same instant; twice in a row,
and the node is woken 1 ms later and ``stuck_ticks`` counts it (a core whose deadline stays
in the past -- a bug worth a look, not a crash of the run).

**Checkers** (:class:`~mesh.sim.raft_checkers.RaftChecker`) are fed every fact as it happens
(after every core call, Ready, sync and apply), so a violation raises at the event that
caused it, naming the seed, the virtual time, recent faults and the replay command.

**Clients.** :meth:`RaftCluster.propose` hands data to the current leader (the node in the
LEADER role with the highest term) and returns ``(node, index)``, or None without a leader;
the proposal is *acknowledged* when that same process applies its own entry at that index
(a different entry there, or the entry cut from its log by a newer leader: lost; the process
crashed first: unknown). :class:`Workload` runs
clients that keep one operation each in flight and records a
:class:`~mesh.sim.linearizability.History` for the linearizability checker.

**Membership.** ``spares`` nodes (``n{n}`` on) start outside the initial configuration,
with an empty one: they never campaign, and learn the configuration from the leader's log
or snapshot once a change adds them. :meth:`RaftCluster.change_membership` asks the leader
for one change through the core's own API (add a learner, promote it, add a voter,
remove a voter -- the leader too -- or a learner); the core refuses while another change
commits or before its term has a commit, and the caller tries later. The harness tracks
each node's configuration as of its applied index (a snapshot records that one) and the
committed configurations (``confs``: index -> configuration, first applied anywhere);
:meth:`RaftCluster.members` (voters and learners of the latest) are the nodes that must
converge in :meth:`RaftCluster.settled` and hold every acknowledged entry: a removed node
and a spare never added are not asked to. A process started again gets the configuration
it was first started with (the initial one, or the empty one) and the core rebuilds the
current one from its snapshot and log.

**Faults**: partitions, one-way cuts and lossy/duplicating/reordering spells are the
network's; crashes and restarts are above; :meth:`RaftCluster.nemesis` mixes them at random
(with ``membership``, configuration changes too);
``drop`` (a predicate on messages) loses chosen messages, for scripted pitfalls.
``trace`` (a list, off by default) records every send, receive, sync, apply and fault.

**Scenarios** (:mod:`mesh.sim.raft_scenarios`) are what ``tests/sim/test_raft.py`` runs and
``python -m mesh.sim --seed N --scenario raft-*`` replays, byte for byte; the clients are in
:mod:`mesh.sim.raft_workload`.

Randomness, all from the one seed: the network (``network``), each core
(``raft:<id>:<life>``), each disk (``fsync:<id>``), the crash prefixes (``torn``), the
nemesis and its membership changes (``nemesis``), the clients (``clients``) and the
scenarios (``scenario``).
"""
from __future__ import annotations

import json
import os
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, Iterable

from mesh.errors import NotLeader, Overloaded, Unavailable
from mesh.raft.config import RaftConfig
from mesh.raft.core import Raft
from mesh.raft.messages import (Append, AppendResp, ConfState, Entry, EntryKind, HardState,
                                InstallSnapshot, Message, ReadState, Ready, Role, Snapshot,
                                SnapshotMeta, Vote, VoteResp)
from mesh.raft.wire import decode_conf, encode_conf
from mesh.sim.network import Network, NetworkConfig, NodeStats
from mesh.sim.raft_checkers import RaftChecker, chain_hash
from mesh.sim.world import World, plan_wake

ADDRESS_PREFIX = "sim://"
HEADER_BYTES = 48        # rough fixed part of a message on the wire
ENTRY_BYTES = 24         # rough per-entry overhead (index, term, kind, length)


def wire_size(msg: Message) -> int:
    """A rough size of ``msg`` on the wire: what the network's byte counters add up."""
    t = type(msg)
    if t is Append:
        return HEADER_BYTES + sum(ENTRY_BYTES + len(e.data) for e in msg.entries)
    if t is InstallSnapshot:
        return HEADER_BYTES + 64 + len(msg.snapshot.data)
    return HEADER_BYTES


def describe(msg: Message) -> str:
    """One line for a message in a trace: kind, route, term and what matters of it."""
    t = type(msg)
    head = f"{t.__name__} {msg.src}->{msg.dst} t{msg.term}"
    if t is Append:
        ents = msg.entries
        span = f" [{ents[0].index}..{ents[-1].index} t{ents[-1].term}]" if ents else ""
        hb = " hb" if getattr(msg, "heartbeat", False) else ""
        return f"{head} prev {msg.prev_index}/t{msg.prev_term}{span} commit {msg.commit}{hb} ctx {msg.ctx}"
    if t is AppendResp:
        hb = " hb" if getattr(msg, "heartbeat", False) else ""
        return f"{head} {'ok' if msg.success else 'REJECT'} index {msg.index} hint {msg.hint}{hb} ctx {msg.ctx}"
    if t is InstallSnapshot:
        return f"{head} snapshot {msg.snapshot.meta.index}/t{msg.snapshot.meta.term}"
    if t is Vote:
        return f"{head} {'pre' if msg.pre else ''}vote last {msg.last_index}/t{msg.last_term}"
    if t is VoteResp:
        return f"{head} {'pre' if msg.pre else ''}vote {'granted' if msg.granted else 'refused'}"
    return f"{head} {msg}"


class _Packet:
    """A message object in flight; ``len()`` is its rough wire size for the counters."""
    __slots__ = ("msg", "size")

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self.size = wire_size(msg)

    def __len__(self) -> int:
        return self.size


def _conf_text(conf: ConfState) -> str:
    return f"voters {','.join(conf.voters) or '-'} learners {','.join(conf.learners) or '-'}"


def _default_replay(seed: int, n: int) -> str:
    """Without a scenario: the pytest node running now (if any) and the cluster's seed."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    where = f"pytest '{current}'" if current else "the script that built it"
    return f"{where}  (RaftCluster(seed={seed}, n={n}))"


# -- logs and disks ---------------------------------------------------------------------------

class LogMirror:
    """A Raft log as the harness sees it: the snapshot point, the entries after it and each
    entry's log-matching chain value. One mirrors each core's log (as of the last Ready
    taken); another is each disk's log."""

    __slots__ = ("snap_index", "snap_term", "snap_chain", "entries", "chains")

    def __init__(self) -> None:
        self.snap_index = 0
        self.snap_term = 0
        self.snap_chain = 0
        self.entries: list[Entry] = []
        self.chains: list[int] = []

    @property
    def last_index(self) -> int:
        return self.snap_index + len(self.entries)

    @property
    def last_chain(self) -> int:
        return self.chains[-1] if self.chains else self.snap_chain

    def term_at(self, index: int) -> int | None:
        if index == self.snap_index:
            return self.snap_term
        if index < self.snap_index or index > self.last_index:
            return None
        return self.entries[index - self.snap_index - 1].term

    def chain_at(self, index: int) -> int | None:
        if index == self.snap_index:
            return self.snap_chain
        if index < self.snap_index or index > self.last_index:
            return None
        return self.chains[index - self.snap_index - 1]

    def append(self, entry: Entry) -> int:
        """Append at the end; returns the entry's chain value. Raises ValueError on a gap."""
        if entry.index != self.last_index + 1:
            raise ValueError(f"entry {entry.index} does not follow the log's last index "
                             f"{self.last_index}")
        chain = chain_hash(self.last_chain, entry)
        self.entries.append(entry)
        self.chains.append(chain)
        return chain

    def truncate(self, from_index: int) -> None:
        """Drop entries from ``from_index`` on."""
        keep = max(0, from_index - self.snap_index - 1)
        del self.entries[keep:]
        del self.chains[keep:]

    def install_snapshot(self, meta: SnapshotMeta, chain: int) -> None:
        """The log restarts at a snapshot: entries after it stay if the log holds its
        (index, term), else all go (what RaftStorage's recovery does too)."""
        if self.term_at(meta.index) == meta.term and meta.index >= self.snap_index:
            self.compact(meta.index)
        else:
            self.entries.clear()
            self.chains.clear()
            self.snap_index, self.snap_term, self.snap_chain = meta.index, meta.term, chain

    def compact(self, index: int) -> None:
        """Fold entries up to ``index`` (held) into the snapshot point."""
        if index <= self.snap_index:
            return
        k = index - self.snap_index
        self.snap_term = self.entries[k - 1].term
        self.snap_chain = self.chains[k - 1]
        del self.entries[:k]
        del self.chains[:k]
        self.snap_index = index

    def copy(self) -> LogMirror:
        out = LogMirror()
        out.snap_index, out.snap_term, out.snap_chain = self.snap_index, self.snap_term, self.snap_chain
        out.entries = list(self.entries)
        out.chains = list(self.chains)
        return out


class Disk:
    """What survives a crash: the hard state, the log and the latest snapshot (with data)."""

    __slots__ = ("hard_state", "log", "snapshot", "syncs", "writes_lost")

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.log = LogMirror()
        self.snapshot: Snapshot | None = None
        self.syncs = 0
        self.writes_lost = 0


def persistence_ops(rd: Ready) -> list[tuple]:
    """A Ready's persistence as the ordered writes a driver makes."""
    ops: list[tuple] = []
    if rd.snapshot is not None:
        ops.append(("snapshot", rd.snapshot))
    if rd.truncate_from is not None:
        ops.append(("truncate", rd.truncate_from))
    for e in rd.entries:
        ops.append(("entry", e))
    if rd.hard_state is not None:
        ops.append(("hard_state", rd.hard_state))
    return ops


# -- the state machine ------------------------------------------------------------------------

ABSENT = "_"


class KVStore:
    """The replicated key-value map (see the module docstring for the commands)."""

    __slots__ = ("data", "applied", "applied_term", "chain")

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.applied = 0
        self.applied_term = 0
        self.chain = 0          # chain value of the applied sequence (== the log's there)

    def apply(self, entry: Entry) -> object:
        self.applied = entry.index
        self.applied_term = entry.term
        self.chain = chain_hash(self.chain, entry)
        parts = entry.data.split(b" ") if entry.data else ()
        if len(parts) < 3:
            return None
        verb, key = parts[1], parts[2].decode()
        data = self.data
        if verb == b"put" and len(parts) == 4:
            data[key] = parts[3].decode()
            return None
        if verb == b"get":
            return data.get(key)
        if verb == b"cas" and len(parts) == 5:
            old, new = parts[3].decode(), parts[4].decode()
            if data.get(key) == (None if old == ABSENT else old):
                data[key] = new
                return True
            return False
        if verb == b"del":
            return data.pop(key, None) is not None
        return None

    def snapshot_data(self) -> bytes:
        return json.dumps({"kv": self.data, "chain": self.chain}, sort_keys=True).encode()

    @classmethod
    def restore(cls, snapshot: Snapshot) -> KVStore:
        st = cls()
        obj = json.loads(snapshot.data)
        st.data = dict(obj["kv"])
        st.chain = int(obj["chain"])
        st.applied = snapshot.meta.index
        st.applied_term = snapshot.meta.term
        return st

    @staticmethod
    def chain_of(snapshot: Snapshot) -> int:
        return int(json.loads(snapshot.data)["chain"])


def command(tag: str, verb: str, key: str, *args: str) -> bytes:
    """The entry data of one KV command (no spaces inside the parts)."""
    return " ".join((tag, verb, key) + args).encode()


# -- nodes ------------------------------------------------------------------------------------

@dataclass(slots=True)
class Proposal:
    """One proposal a client handed to a leader, and what became of it."""
    node: str
    life: int
    index: int
    term: int
    data: bytes
    proposed_ms: int
    status: str = "pending"      # pending | acked | lost | unknown
    done_ms: int | None = None
    result: object = None
    on_done: Callable[[Proposal], None] | None = None


class RaftSimNode:
    """One process: a core (None once crashed), its disk, state machine and driver state."""

    __slots__ = ("id", "core", "life", "up", "disk", "log", "sm", "syncing", "inbox",
                 "wake_ms", "spins", "lead_term", "lead_conf", "proposals", "reads_waiting",
                 "read_ops", "boot_conf", "conf")

    def __init__(self, id: str, boot_conf: ConfState) -> None:
        self.id = id
        self.boot_conf = boot_conf
        """The configuration the process is started with (the core rebuilds the current one
        from its snapshot and committed log): the initial one, or an empty one for a spare."""
        self.conf = boot_conf
        """The configuration as of the applied index (what a snapshot taken now records)."""
        self.core: Raft | None = None
        self.life = 0
        self.up = False
        self.disk = Disk()
        self.log = LogMirror()
        self.sm = KVStore()
        self.syncing: Ready | None = None
        self.inbox: deque[Message] = deque()
        self.wake_ms: int | None = None
        self.spins = 0
        self.lead_term = -1
        self.lead_conf: ConfState | None = None       # the leader's configuration last checked
        self.proposals: dict[int, Proposal] = {}      # index -> proposal (this life)
        self.reads_waiting: list[ReadState] = []      # read states whose index is not applied yet
        self.read_ops: dict[bytes, tuple[str, Callable]] = {}   # ctx -> (key, done)

    @property
    def applied(self) -> int:
        return self.sm.applied


# -- the cluster ------------------------------------------------------------------------------

class RaftCluster:
    """N Raft cores, a world, a network and disks; see the module docstring."""

    def __init__(self, seed: int, n: int = 3, config: RaftConfig | None = None,
                 net: NetworkConfig | None = None, fsync_ms: tuple[int, int] = (1, 3), *,
                 pipeline: bool = False, snapshot_every: int = 0, check: bool = True,
                 inbox_limit: int = 10_000, replay: str | None = None, spares: int = 0) -> None:
        lo, hi = fsync_ms
        if not 0 <= lo <= hi:
            raise ValueError(f"fsync_ms must be (lo, hi) with 0 <= lo <= hi, got {fsync_ms}")
        self.seed = seed
        self.config = config or RaftConfig()
        self.world = World(seed)
        self.net = Network(self.world, net or NetworkConfig())
        self.calm_net = self.net.config
        self.fsync_ms = fsync_ms
        self.pipeline = pipeline
        self.snapshot_every = snapshot_every
        self.inbox_limit = inbox_limit
        self.replay = replay or _default_replay(seed, n)
        self.ids = [f"n{i}" for i in range(n + spares)]
        self.conf = ConfState(voters=tuple(self.ids[:n]))
        """The initial configuration: the first ``n`` nodes vote; the ``spares`` after them
        start with an empty one (they never campaign) until a membership change adds them."""
        self.spares = self.ids[n:]
        empty = ConfState(voters=())
        self.nodes: dict[str, RaftSimNode] = {
            i: RaftSimNode(i, self.conf if i in self.conf.voters else empty) for i in self.ids}
        self.confs: dict[int, ConfState] = {0: self.conf}
        """index -> the configuration a CONFIG entry there holds, once applied anywhere (0:
        the initial one); the latest is the committed configuration (:meth:`committed_conf`)."""
        self.conf_refused: Counter[str] = Counter()
        """Membership changes the leader refused, by the error's class name."""
        self.conf_proposed: list[tuple[str, str, str, int, ConfState]] = []
        """Membership changes a leader took: (leader, op, node, index, configuration)."""
        self.faults: list[str] = []
        """``"<time> ms <what>"`` for every fault injected, in order (shown with violations)."""
        self.proposals: list[Proposal] = []
        self.msg_counts: Counter[str] = Counter()
        self.readies = 0
        self.stuck_ticks = 0
        self.inbox_dropped = 0
        self.snapshots_taken = 0
        self.drop: Callable[[Message], bool] | None = None
        """A selective fault for scripted tests: messages it returns True for are not sent
        (counted in ``dropped_by_filter``)."""
        self.dropped_by_filter = 0
        self.trace: list[str] | None = None
        """Set to a list to record one line per message sent and delivered, Ready synced,
        entry applied and fault (``python -m mesh.sim ... --trace``). Off by default."""
        self._fsync_rng = {i: self.world.rng(f"fsync:{i}") for i in self.ids}
        self._torn_rng = self.world.rng("torn")
        self.checker: RaftChecker | None = None
        if check:
            disks = {i: node.disk.log for i, node in self.nodes.items()}
            self.checker = RaftChecker(self.conf.voters, where=self.where, durable=lambda: disks)
        for node in self.nodes.values():
            self._boot(node)

    # -- time -------------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        return self.world.now_ms

    def run_for(self, ms: int) -> None:
        self.world.run_for(ms)

    def run_until_true(self, pred: Callable[[], bool], limit_ms: int,
                       check_every_ms: int = 5) -> int | None:
        """Run until ``pred()``; the virtual time it held (to ``check_every_ms``) or None."""
        return self.world.run_until_true(pred, limit_ms, check_every_ms)

    def where(self) -> str:
        """The run, for failure messages: seed, virtual time, recent faults, replay."""
        recent = "; ".join(self.faults[-8:]) or "none"
        return (f"seed {self.seed} at {self.now_ms} ms (pipeline={self.pipeline}); "
                f"recent faults: {recent}\n  replay: {self.replay}")

    def _fault(self, text: str) -> None:
        self.faults.append(f"{self.now_ms} ms {text}")
        if self.trace is not None:
            self.trace.append(f"{self.now_ms:>7} --- {text}")

    def _t(self, node: str, text: str) -> None:
        self.trace.append(f"{self.now_ms:>7} {node:>4} {text}")

    # -- what the nodes believe -------------------------------------------------------------

    def up_ids(self) -> list[str]:
        return [i for i in self.ids if self.nodes[i].up]

    def down_ids(self) -> list[str]:
        return [i for i in self.ids if not self.nodes[i].up]

    def core(self, id: str) -> Raft | None:
        return self.nodes[id].core

    def leader(self) -> str | None:
        """The running node in the LEADER role with the highest term (None: none)."""
        best, best_term = None, -1
        for node in self.nodes.values():
            core = node.core
            if core is not None and core.role is Role.LEADER and core.term > best_term:
                best, best_term = node.id, core.term
        return best

    def leaders(self) -> list[str]:
        """Every running node that believes it leads (stale ones of older terms included)."""
        return [i for i in self.ids if self.nodes[i].core is not None
                and self.nodes[i].core.role is Role.LEADER]

    def stable_leader(self, among: Iterable[str] | None = None) -> str | None:
        """The leader when exactly one node of ``among`` (default: the running members, see
        :meth:`members`) leads and every one of them follows it in its term; None otherwise."""
        ids = [i for i in self.members() if self.nodes[i].up] if among is None else list(among)
        leads = [i for i in ids if self.nodes[i].core is not None
                 and self.nodes[i].core.role is Role.LEADER]
        if len(leads) != 1:
            return None
        lead = leads[0]
        term = self.nodes[lead].core.term
        for i in ids:
            core = self.nodes[i].core
            if core is None or core.term != term or core.leader != lead:
                return None
        return lead

    def max_term(self) -> int:
        return max((n.core.term for n in self.nodes.values() if n.core is not None), default=0)

    def applied(self, id: str) -> int:
        return self.nodes[id].sm.applied

    def kv(self, id: str) -> dict[str, str]:
        return dict(self.nodes[id].sm.data)

    def log_of(self, id: str) -> LogMirror:
        """The harness's mirror of ``id``'s log as of its last Ready."""
        return self.nodes[id].log

    def committed_conf(self) -> ConfState:
        """The configuration of the latest CONFIG entry applied anywhere (the initial one
        before any)."""
        return self.confs[max(self.confs)]

    def conf_changes(self) -> list[tuple[str, str, str, int, ConfState]]:
        """The changes of :attr:`conf_proposed` that committed (their configuration is the
        one applied at their index)."""
        return [c for c in self.conf_proposed if self.confs.get(c[3]) == c[4]]

    def members(self) -> list[str]:
        """The voters and learners of :meth:`committed_conf`, in id order: the nodes that
        must converge. (A removed node or a spare that never joined is not asked to.)"""
        conf = self.committed_conf()
        return [i for i in self.ids if i in conf.voters or i in conf.learners]

    def logs_converged(self, among: Iterable[str] | None = None) -> bool:
        """Every node (default: every member, which must be running) idle, with the same log
        end (index and chain value) and everything committed applied."""
        ids = self.members() if among is None else list(among)
        ends = set()
        for i in ids:
            node = self.nodes[i]
            core = node.core
            if core is None or node.syncing is not None or core.has_ready():
                return False
            if node.sm.applied != core.commit or core.commit != node.log.last_index:
                return False
            ends.add((node.log.last_index, node.log.last_chain))
        return len(ends) == 1

    def settled(self) -> bool:
        """One stable leader of the members, every member running and converged on its log
        (every node, without membership changes)."""
        members = self.members()
        return (all(self.nodes[i].up for i in members) and self.stable_leader(members) is not None
                and self.logs_converged(members))

    # -- faults -----------------------------------------------------------------------------

    def crash(self, id: str, torn: bool = False, keep: int | None = None) -> None:
        """The process dies: the core, the inbox and the unsynced write are gone (``torn``:
        a random prefix of the unsynced write reached the disk; ``keep``: the first ``keep``
        writes of it did, for scripted tests -- see :func:`persistence_ops` for the order)."""
        node = self.nodes[id]
        if not node.up:
            return
        kept = 0
        if keep is not None:
            torn = True
        if node.syncing is not None:
            ops = persistence_ops(node.syncing)
            if torn and ops:
                kept = self._torn_rng.randrange(len(ops) + 1) if keep is None else min(keep, len(ops))
                self._write(node, ops[:kept])
            node.disk.writes_lost += len(ops) - kept
        self._fault(f"crash {id}" + (f" (torn: {kept} writes kept)" if torn else ""))
        node.up = False
        node.core = None
        node.syncing = None
        node.inbox.clear()
        node.wake_ms = None
        node.lead_term = -1
        node.reads_waiting.clear()
        self.net.detach(id)
        if self.checker is not None:
            self.checker.on_crash(id)
        # Its clients lose their connection: the outcomes are unknown.
        for p in node.proposals.values():
            self._close_proposal(p, "unknown")
        node.proposals.clear()
        for _, done in node.read_ops.values():
            done(None)
        node.read_ops.clear()

    def restart(self, id: str) -> None:
        """A fresh process from what the disk holds (crashing the running one first)."""
        node = self.nodes[id]
        if node.up:
            self.crash(id)
        node.life += 1
        self._fault(f"restart {id}")
        self._boot(node)

    def restart_all(self, torn: bool = False) -> None:
        """Crash every running node, then start all of them again (full-cluster restart)."""
        for i in self.up_ids():
            self.crash(i, torn=torn)
        for i in self.ids:
            self.restart(i)

    def partition(self, *groups: Iterable[str]) -> None:
        groups = tuple(list(g) for g in groups)
        self._fault("partition " + " | ".join(",".join(g) for g in groups))
        self.net.partition(*groups)

    def isolate(self, id: str) -> None:
        self.partition([id])

    def cut(self, a: str, b: str, both_ways: bool = True) -> None:
        self._fault(f"cut {a} {'<' if both_ways else ''}-> {b}")
        self.net.cut(a, b, both_ways)

    def heal(self) -> None:
        self._fault("heal")
        self.net.heal()

    def set_net(self, config: NetworkConfig) -> None:
        self._fault(f"net loss {config.loss:g} dup {config.duplicate:g} reorder {config.reorder:g}")
        self.net.set_config(config)

    def transfer_leadership(self, to: str) -> None:
        lead = self.leader()
        if lead is None:
            return
        self._fault(f"transfer {lead} -> {to}")
        node = self.nodes[lead]
        node.core.transfer_leadership(to, self.now_ms)
        self._after_input(node)

    # -- membership -------------------------------------------------------------------------

    MEMBERSHIP_OPS = ("add_learner", "promote", "add_voter", "remove")

    def change_membership(self, op: str, id: str, to: str | None = None) -> tuple[str, int] | None:
        """Ask the current leader (or node ``to``) to change its configuration by one node,
        through :meth:`Raft.propose_conf_change`: ``add_learner``, ``promote`` (a learner
        to voter), ``add_voter`` (directly) or ``remove`` (a voter, the leader itself
        included, or a learner). Returns ``(node, index)`` of the CONFIG entry, tracked as a
        :class:`Proposal`; None when there is no leader or it refuses (another change is
        still uncommitted, its term has no commit yet, not leader, not a one-voter change):
        the refusal's class is counted in ``conf_refused`` and the caller tries later."""
        if op not in self.MEMBERSHIP_OPS:
            raise ValueError(f"unknown membership change {op!r}; one of {self.MEMBERSHIP_OPS}")
        lead = self.leader() if to is None else to
        if lead is None or self.nodes[lead].core is None:
            self.conf_refused["no leader"] += 1
            return None
        node = self.nodes[lead]
        conf = node.core.conf
        voters = [v for v in conf.voters if v != id]
        learners = [v for v in conf.learners if v != id]
        if op == "add_learner":
            learners.append(id)
        elif op in ("promote", "add_voter"):
            voters.append(id)
        new = ConfState(tuple(voters), tuple(learners))
        text = f"{op} {id}: {_conf_text(new)}"
        try:
            index = node.core.propose_conf_change(new, self.now_ms)
        except (NotLeader, Unavailable, Overloaded, ValueError) as exc:
            self.conf_refused[type(exc).__name__] += 1
            self._fault(f"membership at {lead} refused ({type(exc).__name__}): {text}")
            self._after_input(node)
            return None
        self._fault(f"membership at {lead} index {index}: {text}")
        self.conf_proposed.append((lead, op, id, index, new))
        p = Proposal(lead, node.life, index, node.core.term, encode_conf(new), self.now_ms)
        self._track(node, p)
        return lead, index

    def _membership_step(self, rng, voters_range: tuple[int, int]) -> None:
        """One random membership change on the leader's configuration. The number of voters
        ``v`` stays within ``voters_range`` and drifts towards 3..5: below 3 it mostly grows,
        at 5 it only shrinks (3 -> 4 -> 5 -> 4 -> 3 ...). A change is one of: promote a
        learner, add a learner, add a voter directly, remove a voter (any voter, the leader
        as likely as the others), remove a learner."""
        lead = self.leader()
        if lead is None:
            self.conf_refused["no leader"] += 1
            return
        conf = self.nodes[lead].core.conf
        voters, learners = list(conf.voters), list(conf.learners)
        outside = [i for i in self.ids if i not in voters and i not in learners]
        lo, hi = voters_range
        v = len(voters)
        grow = 0 if v >= hi else (4 if v < 3 else (3 if v == 3 else 2))
        shrink = 0 if v <= lo else (1 if v <= 3 else (2 if v < 5 else 4))
        kinds = [("promote", learners, grow * 2), ("add_learner", outside, grow),
                 ("add_voter", outside, grow), ("remove", voters, shrink * 2),
                 ("remove", learners, 1 if learners else 0)]
        kinds = [(op, among, w) for op, among, w in kinds if among and w]
        if not kinds:
            return
        op, among, _ = rng.choices(kinds, [w for _, _, w in kinds])[0]
        self.change_membership(op, rng.choice(among))

    def nemesis(self, steps: int, step_ms: tuple[int, int] = (20, 400), *, crash: bool = True,
                torn: bool = True, partition: bool = True, net: bool = True,
                transfer: bool = False, membership: bool = False,
                voters_range: tuple[int, int] = (1, 5)) -> None:
        """``steps`` random faults from the ``nemesis`` stream, each followed by a random
        stretch of running: crashes (torn or clean) and restarts, full-cluster restarts,
        partitions, isolations, one-way cuts, heals, lossy/duplicating/reordering network
        spells, with ``transfer`` leadership transfers and with ``membership`` changes of
        the configuration at the leader (see :meth:`_membership_step`; the voters stay
        within ``voters_range``)."""
        rng = self.world.rng("nemesis")
        actions: list[tuple[str, int]] = [("heal", 3)]
        if crash:
            actions += [("crash", 3), ("restart", 4), ("restart_all", 1)]
        if partition:
            actions += [("partition", 3), ("isolate", 2), ("cut", 1)]
        if net:
            actions += [("net", 2), ("calm", 2)]
        if transfer:
            actions += [("transfer", 1)]
        if membership:
            actions += [("membership", 6)]
        names = [a for a, _ in actions]
        weights = [w for _, w in actions]
        for _ in range(steps):
            act = rng.choices(names, weights)[0]
            up, down = self.up_ids(), self.down_ids()
            if act == "crash" and up:
                self.crash(rng.choice(up), torn=torn and rng.random() < 0.5)
            elif act == "restart" and down:
                self.restart(rng.choice(down))
            elif act == "restart_all":
                self.restart_all(torn=torn and rng.random() < 0.5)
            elif act == "partition":
                ids = list(self.ids)
                rng.shuffle(ids)
                k = rng.randint(1, len(ids) - 1)
                self.partition(ids[:k], ids[k:])
            elif act == "isolate":
                self.isolate(rng.choice(self.ids))
            elif act == "cut":
                a, b = rng.sample(self.ids, 2)
                self.cut(a, b, both_ways=rng.random() < 0.5)
            elif act == "heal":
                self.heal()
            elif act == "net":
                self.set_net(NetworkConfig(
                    latency_ms=self.calm_net.latency_ms, jitter_ms=self.calm_net.jitter_ms,
                    loss=rng.choice((0.0, 0.05, 0.2)), duplicate=rng.choice((0.0, 0.05, 0.2)),
                    reorder=rng.choice((0.0, 0.1, 0.3))))
            elif act == "calm":
                self.set_net(self.calm_net)
            elif act == "transfer" and up:
                self.transfer_leadership(rng.choice(up))
            elif act == "membership":
                self._membership_step(rng, voters_range)
            self.run_for(rng.randint(*step_ms))

    def recover(self) -> None:
        """End every fault: heal the network, calm it, restart the crashed nodes."""
        self.heal()
        if self.net.config != self.calm_net:
            self.set_net(self.calm_net)
        for i in self.down_ids():
            self.restart(i)

    # -- clients ----------------------------------------------------------------------------

    def propose(self, data: bytes, on_done: Callable[[Proposal], None] | None = None,
                to: str | None = None) -> tuple[str, int] | None:
        """Hand ``data`` to the current leader (or to node ``to``): ``(node, index)``, or
        None when there is no leader (or it refuses: not leader, overloaded, down).
        ``on_done(proposal)`` is called once its outcome is known (acked, lost, unknown)."""
        lead = self.leader() if to is None else to
        if lead is None or self.nodes[lead].core is None:
            return None
        node = self.nodes[lead]
        try:
            index = node.core.propose(data, self.now_ms)
        except (NotLeader, Overloaded):
            self._after_input(node)
            return None
        p = Proposal(lead, node.life, index, node.core.term, data, self.now_ms, on_done=on_done)
        self._track(node, p)
        return lead, index

    def _track(self, node: RaftSimNode, p: Proposal) -> None:
        """Follow proposal ``p`` until what commits at its index settles it."""
        stale = node.proposals.get(p.index)
        if stale is not None:       # an earlier proposal at this index was overwritten here, but
            self._close_proposal(stale, "unknown")   # another node may hold it and still commit it
        node.proposals[p.index] = p
        self.proposals.append(p)
        self._after_input(node)

    def read(self, key: str, done: Callable[[object | None], None], ctx: bytes) -> str | None:
        """A linearizable read of ``key`` by ReadIndex at the current leader, tagged ``ctx``:
        ``done((value,))`` when served (value None: absent), ``done(None)`` if the node
        crashes first. Returns the node, or None without a leader."""
        lead = self.leader()
        if lead is None:
            return None
        node = self.nodes[lead]
        try:
            node.core.read_index(ctx, self.now_ms)
        except NotLeader:
            self._after_input(node)
            return None
        node.read_ops[ctx] = (key, done)
        self._after_input(node)
        return lead

    def acknowledged(self) -> list[Proposal]:
        return [p for p in self.proposals if p.status == "acked"]

    def check_acknowledged(self) -> None:
        """Every acknowledged proposal is the entry applied at its index, on every member
        that runs (call after :meth:`settled`; a removed node stops hearing of new entries)."""
        if self.checker is None:
            return
        self.checker.check_acknowledged(((p.index, p.data) for p in self.acknowledged()),
                                        {i: self.nodes[i].sm.applied for i in self.members()
                                         if self.nodes[i].up})

    def _close_proposal(self, p: Proposal, status: str, result: object = None) -> None:
        if p.status != "pending":
            return
        p.status = status
        p.done_ms = self.now_ms
        p.result = result
        if p.on_done is not None:
            p.on_done(p)

    # -- traffic ----------------------------------------------------------------------------

    def stats(self, id: str) -> NodeStats:
        return self.net.stats[id]

    def totals(self) -> NodeStats:
        return self.net.totals()

    # -- driving the cores ------------------------------------------------------------------

    def _boot(self, node: RaftSimNode) -> None:
        disk = node.disk
        snap = disk.snapshot
        node.core = self._call(node, lambda: Raft(
            node.id, config=self.config, rng=self.world.rng(f"raft:{node.id}:{node.life}"),
            now_ms=self.now_ms, conf=node.boot_conf, hard_state=disk.hard_state,
            snapshot=snap.meta if snap is not None else None,
            entries=tuple(disk.log.entries), applied=snap.meta.index if snap is not None else 0))
        if snap is not None:
            # The snapshot's data, for followers that need it: the constructor takes only
            # its metadata. (A core that ignores a compact() at its own snapshot index cannot
            # send one until the app snapshots again.)
            self._call(node, lambda: node.core.compact(snap))
        node.up = True
        node.log = disk.log.copy()
        node.sm = KVStore.restore(snap) if snap is not None else KVStore()
        node.conf = snap.meta.conf if snap is not None else node.boot_conf
        node.syncing = None
        node.inbox.clear()
        node.wake_ms = None
        node.spins = 0
        node.lead_term = -1
        node.lead_conf = None
        node.proposals = {}
        node.reads_waiting = []
        node.read_ops = {}
        if self.checker is not None:
            hs = disk.hard_state
            self.checker.on_hard_state(node.id, hs.term, hs.vote, durable=True)
        self.net.attach(node.id, ADDRESS_PREFIX + node.id,
                        lambda src, packet, node=node, life=node.life:
                        self._deliver(node, life, packet))
        self._after_input(node)

    def _call(self, node: RaftSimNode, fn: Callable[[], object]) -> object:
        try:
            return fn()
        except Exception as exc:   # a core bug: keep it, say how to replay it
            exc.add_note(f"in the Raft core of {node.id} (life {node.life}); {self.where()}")
            raise

    def _after_input(self, node: RaftSimNode) -> None:
        """After any call into a running core: note its role, take Readies, rearm its timer."""
        if node.core is None:
            return
        self._note_role(node)
        self._pump(node)
        if node.core is not None:
            self._schedule(node)

    def _note_role(self, node: RaftSimNode) -> None:
        """After every core call: a new leadership goes to the checker at once, and so does
        a leader's configuration whenever it changes (it must vote in it)."""
        core = node.core
        if core.role is Role.LEADER:
            if node.lead_term != core.term:
                node.lead_term = core.term
                if self.trace is not None:
                    self._t(node.id, f"LEADER of term {core.term} (last index {core.last_index})")
                if self.checker is not None:
                    self.checker.on_role(node.id, Role.LEADER, core.term)
            if node.lead_conf is not core.conf:
                node.lead_conf = core.conf
                if self.checker is not None:
                    self.checker.on_leader_conf(node.id, core.term, core.conf)

    def _pump(self, node: RaftSimNode) -> None:
        while node.up and node.syncing is None and node.core.has_ready():
            rd = self._call(node, node.core.ready)
            self.readies += 1
            self._take(node, rd)
            if persistence_ops(rd):
                lo, hi = self.fsync_ms
                delay = self._fsync_rng[node.id].randint(lo, hi) if hi else 0
                if delay:
                    node.syncing = rd
                    self.world.after(delay, self._synced, node, node.life, rd)
                    return
                self._persist(node, rd)
            self._finish(node, rd)

    def _take(self, node: RaftSimNode, rd: Ready) -> None:
        """Fold a Ready's log changes into the mirror of the core's log, checking them."""
        log = node.log
        chk = self.checker
        if rd.snapshot is not None:
            chain = KVStore.chain_of(rd.snapshot)
            meta = rd.snapshot.meta
            if chk is not None:
                chk.on_snapshot(node.id, meta, chain)
            if log.term_at(meta.index) != meta.term:
                # the log is replaced: what lay beyond the snapshot must not be committed
                self._dropping(node, meta.index + 1)
            log.install_snapshot(meta, chain)
        if rd.truncate_from is not None:
            self._dropping(node, rd.truncate_from)
            log.truncate(rd.truncate_from)
        for e in rd.entries:
            if e.index <= log.last_index:
                # The core may restate entries without truncate_from only if they are the same.
                if log.term_at(e.index) == e.term:
                    continue
                if chk is not None:
                    chk.fail("Ready contract", f"{node.id}'s Ready appends entry {e.index} (term "
                             f"{e.term}) over its log's term {log.term_at(e.index)} without "
                             f"truncate_from", (node.id,))
                self._dropping(node, e.index)
                log.truncate(e.index)
            try:
                chain = log.append(e)
            except ValueError as exc:
                if chk is not None:
                    chk.fail("Ready contract", f"{node.id}'s Ready: {exc}", (node.id,))
                raise
            if chk is not None:
                chk.on_append(node.id, e, chain)
        if chk is not None:
            chk.on_log(node.id, log)

    def _dropping(self, node: RaftSimNode, from_index: int) -> None:
        """The mirror of ``node``'s log loses its entries from ``from_index`` on: none may be
        committed. Proposals that were those entries stay open: the leader that overwrote
        them may never commit its own, and a later leader that holds them may commit them
        after all (seed 7387 of the 5-node nemesis: an entry cut from its proposer at 4333 ms
        was committed everywhere at 4682 ms). What commits at their index settles them."""
        log = node.log
        if self.checker is not None:
            self.checker.on_truncate(node.id, log, from_index)

    def _synced(self, node: RaftSimNode, life: int, rd: Ready) -> None:
        if node.life != life or node.syncing is not rd:
            return      # crashed meanwhile: the write is gone
        self._persist(node, rd)
        node.syncing = None
        self._finish(node, rd)
        if node.core is None:
            return
        inbox = node.inbox
        while inbox:   # group commit: everything that queued up goes into one Ready
            msg = inbox.popleft()
            if self.trace is not None:
                self._t(node.id, f"recv {describe(msg)} (queued)")
            self._call(node, lambda: node.core.step(msg, self.now_ms))
            self._note_role(node)
        if not self.pipeline:
            due = node.core.next_deadline_ms()
            if due <= self.now_ms:
                node.wake_ms = None
                self._call(node, lambda: node.core.tick(self.now_ms))
        self._after_input(node)

    def _persist(self, node: RaftSimNode, rd: Ready) -> None:
        if self.trace is not None:
            hs = rd.hard_state
            snap = rd.snapshot.meta if rd.snapshot else None
            self._t(node.id, "synced" + (f" snapshot {snap.index}/t{snap.term}" if snap else "")
                    + (f" truncate from {rd.truncate_from}" if rd.truncate_from is not None else "")
                    + (f" entries {rd.entries[0].index}..{rd.entries[-1].index}" if rd.entries else "")
                    + (f" hs t{hs.term} vote {hs.vote} commit {hs.commit}" if hs else ""))
        self._write(node, persistence_ops(rd))
        node.disk.syncs += 1

    def _write(self, node: RaftSimNode, ops: list[tuple]) -> None:
        disk = node.disk
        for op, arg in ops:
            if op == "entry":
                log = disk.log
                if arg.index <= log.last_index:
                    log.truncate(arg.index)
                log.append(arg)
            elif op == "truncate":
                disk.log.truncate(arg)
            elif op == "hard_state":
                disk.hard_state = arg
                if self.checker is not None:
                    self.checker.on_hard_state(node.id, arg.term, arg.vote, durable=True)
            else:
                disk.snapshot = arg
                disk.log.install_snapshot(arg.meta, KVStore.chain_of(arg))

    def _finish(self, node: RaftSimNode, rd: Ready) -> None:
        """Steps 2 and 3 of a durable Ready: send, apply, serve reads."""
        send = self.net.send
        counts = self.msg_counts
        src = node.id
        chk = self.checker
        drop = self.drop
        hs = node.disk.hard_state
        for m in rd.messages:
            counts[type(m).__name__] += 1
            if type(m) is VoteResp and m.granted and not m.pre and chk is not None:
                chk.on_grant(src, m.term, m.dst, hs.term, hs.vote)
            if drop is not None and drop(m):
                self.dropped_by_filter += 1
                if self.trace is not None:
                    self._t(src, f"DROP {describe(m)}")
                continue
            if self.trace is not None:
                self._t(src, f"send {describe(m)}")
            send(src, m.dst, "", _Packet(m))
        sm = node.sm
        if rd.snapshot is not None:
            node.sm = sm = KVStore.restore(rd.snapshot)
            node.conf = rd.snapshot.meta.conf
            for index in [i for i in node.proposals if i <= sm.applied]:
                # folded into a snapshot from the leader: this process never learns its fate
                self._close_proposal(node.proposals.pop(index), "unknown")
        if self.trace is not None and (rd.committed or rd.snapshot is not None):
            self._t(src, f"apply {rd.committed[0].index if rd.committed else ''}..."
                         f"{rd.committed[-1].index if rd.committed else ''}"
                         + (f" after snapshot {rd.snapshot.meta.index}" if rd.snapshot else ""))
        for e in rd.committed:
            prev = sm.applied
            result = sm.apply(e)
            if chk is not None:
                chk.on_apply(node.id, e, prev, node.log, sm.chain)
            if e.kind == EntryKind.CONFIG:
                node.conf = decode_conf(e.data)
                if e.index not in self.confs:
                    self.confs[e.index] = node.conf
                    if self.trace is not None:
                        self._t(src, f"configuration at {e.index} committed: {_conf_text(node.conf)}")
            p = node.proposals.pop(e.index, None) if node.proposals else None
            if p is not None:
                if p.data == e.data:
                    self._close_proposal(p, "acked", result)
                else:
                    self._close_proposal(p, "lost")
        if rd.reads:
            node.reads_waiting.extend(rd.reads)
        if node.reads_waiting:
            self._serve_reads(node)
        if self.snapshot_every and sm.applied - node.log.snap_index >= self.snapshot_every:
            self._take_snapshot(node)

    def _serve_reads(self, node: RaftSimNode) -> None:
        still = []
        for rs in node.reads_waiting:
            if rs.index <= node.sm.applied:
                op = node.read_ops.pop(rs.ctx, None)
                if op is not None:
                    key, done = op
                    done((node.sm.data.get(key),))
            else:
                still.append(rs)
        node.reads_waiting = still

    def _take_snapshot(self, node: RaftSimNode) -> None:
        sm = node.sm
        index = sm.applied
        if node.log.term_at(index) != sm.applied_term or node.disk.log.term_at(index) != sm.applied_term:
            return      # (the core's log moved past it meanwhile; next time)
        # the configuration as of the snapshot's index (the core's may be newer: its commit
        # index can be ahead of what was applied)
        snap = Snapshot(SnapshotMeta(index, sm.applied_term, node.conf), sm.snapshot_data())
        node.disk.snapshot = snap            # durable at once: written aside, then renamed
        node.disk.log.compact(index)
        node.log.compact(index)
        self.snapshots_taken += 1
        self._call(node, lambda: node.core.compact(snap))

    def _schedule(self, node: RaftSimNode, after_tick: bool = False) -> None:
        due, stuck = plan_wake(node, self.world.now_ms, node.core.next_deadline_ms(), after_tick)
        self.stuck_ticks += stuck
        if due is None:
            return
        self.world.at(due, self._wake, node, node.life, due)

    def _wake(self, node: RaftSimNode, life: int, due: int) -> None:
        if node.wake_ms != due or node.life != life or not node.up:
            return
        node.wake_ms = None
        if node.syncing is not None and not self.pipeline:
            return      # blocked on the fsync: _synced ticks if the deadline passed
        self._call(node, lambda: node.core.tick(due))
        self._note_role(node)
        self._pump(node)
        if node.core is not None:
            self._schedule(node, after_tick=True)

    def _deliver(self, node: RaftSimNode, life: int, packet: _Packet) -> None:
        if node.life != life or not node.up:
            return
        if node.syncing is not None and not self.pipeline:
            if len(node.inbox) >= self.inbox_limit:
                self.inbox_dropped += 1
                return
            node.inbox.append(packet.msg)
            if self.trace is not None:
                self._t(node.id, f"queue {describe(packet.msg)}")
            return
        msg = packet.msg
        if self.trace is not None:
            self._t(node.id, f"recv {describe(msg)}")
        self._call(node, lambda: node.core.step(msg, self.now_ms))
        self._after_input(node)
