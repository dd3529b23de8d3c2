"""The Raft core (mesh/raft/core.py) driven by hand: scenarios on 1-5 cores, virtual time.

The driver, :class:`Cluster`, is tiny and lives here (``mesh/sim`` has the full simulator).
It honours the core's Ready contract and checks it on every batch:

1. **persist** into a per-node :class:`Disk` (snapshot, then ``truncate_from``, then
   ``entries``, then ``hard_state``), with storage's rules: entries are contiguous, a term
   never goes back, no second vote in a term, the durable commit index never points past the
   durable log;
2. **send**: every message is checked against what is now durable (a granted vote names the
   durable vote of that term; a successful append reply covers durable entries) and only
   then put on the wire, so nothing leaves before the Ready that carried it was taken;
3. **apply** the snapshot, then committed entries strictly in index order, and collect reads.

Across nodes it checks election safety (one leader per term), state machine safety (one entry
per applied index) and leader completeness (a leader of term T holds every entry applied
anywhere by a node whose term was below T).
Messages arrive ``latency_ms`` after they were sent (per link if told), in order; links can
be cut, nodes held (their clock stalls: no ticks), crashed (in-flight messages to them are
lost) and restarted from their Disk. Each core is ticked exactly at its
``next_deadline_ms()``, and after at most a few ticks at one instant that deadline must lie in the future, or a
real driver would spin. Times are virtual milliseconds; nothing sleeps.

Each scenario names the rule it checks: §x.y are sections of the Raft paper (Ongaro and
Ousterhout, 2014), "thesis §x.y" of Ongaro's dissertation (2014).
"""
from __future__ import annotations

import copy
import heapq
import json
from dataclasses import dataclass, field, replace
from random import Random
from typing import Callable, Iterable

import pytest

from mesh.errors import NotLeader, Overloaded
from mesh.raft.config import RaftConfig
from mesh.raft.core import Raft
from mesh.raft.messages import (Append, AppendResp, ConfState, Entry, EntryKind, HardState, InstallSnapshot,
                                Message, ReadState, Ready, Role, Snapshot, SnapshotMeta, SnapshotResp, TimeoutNow,
                                Vote, VoteResp)

CONFIG = RaftConfig()
LO, HI = CONFIG.election_timeout_ms


def ids(n: int) -> list[str]:
    return [f"n{i}" for i in range(1, n + 1)]


def log_entries(*terms: int, start: int = 1) -> list[Entry]:
    """Entries start, start+1, ... with these terms (data names the index and term)."""
    return [Entry(start + k, t, EntryKind.NORMAL, f"{start + k}@{t}".encode()) for k, t in enumerate(terms)]


# -- the driver ---------------------------------------------------------------------------------

@dataclass
class Disk:
    """What a node's storage holds (everything a Ready asked for is "fsynced" at once)."""
    hard_state: HardState = HardState()
    snapshot: SnapshotMeta | None = None
    snapshot_data: bytes = b""
    entries: list[Entry] = field(default_factory=list)
    applied: int = 0
    state: list[list] = field(default_factory=list)     # the state machine: [index, data] of NORMAL entries

    @property
    def last_index(self) -> int:
        if self.entries:
            return self.entries[-1].index
        return self.snapshot.index if self.snapshot else 0

    def term_at(self, index: int) -> int | None:
        if self.snapshot and index == self.snapshot.index:
            return self.snapshot.term
        if index == 0 and not self.snapshot:
            return 0
        for e in self.entries:
            if e.index == index:
                return e.term
        return None


class Cluster:
    def __init__(self, names: Iterable[str], *, seed: int = 0, config: RaftConfig | None = None,
                 latency_ms: int = 1, prepared: dict[str, tuple[HardState, list[Entry]]] | None = None) -> None:
        self.names = list(names)
        self.conf = ConfState(voters=tuple(self.names))
        self.config = config or CONFIG
        self.seed = seed
        self.latency_ms = latency_ms
        self.link_latency_ms: dict[tuple[str, str], int] = {}
        self.now = 0
        self.cores: dict[str, Raft] = {}
        self.disks: dict[str, Disk] = {n: Disk() for n in self.names}
        self.down: set[str] = set()
        self.held: set[str] = set()
        self.cut: set[tuple[str, str]] = set()
        self.drop: Callable[[Message], bool] | None = None
        self.sent: list[tuple[int, Message]] = []
        self.delivered: list[tuple[int, Message]] = []
        self.readies: dict[str, list[tuple[int, Ready]]] = {n: [] for n in self.names}
        self.reads: dict[str, list[tuple[int, ReadState]]] = {n: [] for n in self.names}
        self.leaders: dict[int, str] = {}                  # term -> who led it
        self.chosen: dict[int, Entry] = {}                 # index -> the entry applied there
        self.committed_by: dict[int, int] = {}             # index -> a term it was committed in or before
        self._wire: list[tuple[int, int, Message]] = []
        self._seq = 0
        self._generation: dict[str, int] = {}
        for n, (hs, entries) in (prepared or {}).items():
            self.disks[n] = Disk(hard_state=hs, entries=list(entries), applied=0)
        for n in self.names:
            self._boot(n)

    # -- nodes ------------------------------------------------------------------------------------

    def _boot(self, node: str) -> Raft:
        gen = self._generation.get(node, -1) + 1
        self._generation[node] = gen
        d = self.disks[node]
        core = Raft(node, config=self.config, rng=Random(f"{self.seed}/{node}/{gen}"), now_ms=self.now,
                    conf=self.conf, hard_state=d.hard_state, snapshot=d.snapshot, entries=list(d.entries),
                    applied=d.applied)
        self.cores[node] = core
        self.down.discard(node)
        self._drain(node)
        return core

    def crash(self, node: str) -> None:
        self.down.add(node)
        self._wire = [w for w in self._wire if w[2].dst != node]
        heapq.heapify(self._wire)

    def restart(self, node: str, *, fresh: bool = False) -> Raft:
        """A new core from what the node's disk holds (``fresh``: the disk was lost)."""
        self.crash(node)
        if fresh:
            self.disks[node] = Disk()
        return self._boot(node)

    def isolate(self, node: str) -> None:
        for other in self.names:
            if other != node:
                self.cut |= {(node, other), (other, node)}

    def heal(self) -> None:
        self.cut.clear()

    # -- the Ready contract -------------------------------------------------------------------

    def _drain(self, node: str) -> None:
        core = self.cores[node]
        for _ in range(100):
            if not core.has_ready():
                return
            self._carry_out(node, core.ready())
        raise AssertionError(f"{node}: has_ready() stays true after 100 Ready batches")

    def _carry_out(self, node: str, rd: Ready) -> None:
        d = self.disks[node]
        self.readies[node].append((self.now, rd))
        # 1. persist
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            keep = d.term_at(meta.index) == meta.term        # mesh.storage's save_snapshot rule
            d.entries = [e for e in d.entries if e.index > meta.index] if keep else []
            d.snapshot, d.snapshot_data = meta, rd.snapshot.data
        if rd.truncate_from is not None:
            assert rd.truncate_from > d.hard_state.commit, f"{node}: truncates committed entries"
            d.entries = [e for e in d.entries if e.index < rd.truncate_from]
        if rd.entries:
            assert rd.entries[0].index == d.last_index + 1, \
                f"{node}: Ready appends {rd.entries[0].index} after durable {d.last_index} " \
                f"(truncate_from={rd.truncate_from})"
            for a, b in zip(rd.entries, rd.entries[1:]):
                assert b.index == a.index + 1
            d.entries.extend(rd.entries)
        if rd.hard_state is not None:
            old, hs = d.hard_state, rd.hard_state
            assert hs.term >= old.term, f"{node}: term went back {old.term} -> {hs.term}"
            if hs.term == old.term and old.vote is not None:
                assert hs.vote == old.vote, f"{node}: second vote in term {hs.term}: {old.vote} then {hs.vote}"
            d.hard_state = hs
        assert d.hard_state.commit <= d.last_index, f"{node}: durable commit {d.hard_state.commit} > log {d.last_index}"
        # 2. send, but only what the disk now backs
        for m in rd.messages:
            assert m.src == node
            if isinstance(m, VoteResp) and m.granted and not m.pre:
                assert (d.hard_state.term, d.hard_state.vote) == (m.term, m.dst), \
                    f"{node}: grants {m.dst} in term {m.term} but durable is {d.hard_state}"
            if isinstance(m, AppendResp) and m.success:
                assert d.last_index >= m.index, f"{node}: acks {m.index} with only {d.last_index} durable"
            self._send(m)
        # 3. apply
        if rd.snapshot is not None:
            d.state = json.loads(rd.snapshot.data)
            d.applied = rd.snapshot.meta.index
        for e in rd.committed:
            assert e.index == d.applied + 1, f"{node}: applies {e.index} after {d.applied}"
            assert d.term_at(e.index) == e.term, f"{node}: applies {e.index}@{e.term}, not durable"
            seen = self.chosen.setdefault(e.index, e)
            assert seen == e, f"{node}: applies {e} at {e.index} where another node applied {seen}"
            # it was committed in a term <= the applier's current term
            self.committed_by[e.index] = min(self.committed_by.get(e.index, 1 << 62), self.cores[node].term)
            if e.kind == EntryKind.NORMAL:
                d.state.append([e.index, e.data.decode()])
            d.applied = e.index
        for r in rd.reads:
            self.reads[node].append((self.now, r))
        if rd.role is Role.LEADER:
            first = self.leaders.setdefault(rd.term, node)
            assert first == node, f"two leaders in term {rd.term}: {first} and {node}"
            core = self.cores[node]
            for i, e in self.chosen.items():      # leader completeness (§5.4.3)
                if self.committed_by[i] < rd.term and i > core.log.snapshot_index:
                    assert core.log.term_at(i) == e.term, f"leader {node} of {rd.term} lacks committed {e}"

    # -- the network --------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        self.sent.append((self.now, m))
        if m.dst in self.down:
            return
        lat = self.link_latency_ms.get((m.src, m.dst), self.latency_ms)
        self._seq += 1
        heapq.heappush(self._wire, (self.now + lat, self._seq, m))

    def inject(self, m: Message) -> None:
        """Hand a message straight to its receiver now."""
        self.cores[m.dst].step(m, self.now)
        self._drain(m.dst)

    def in_flight(self) -> list[Message]:
        return [w[2] for w in sorted(self._wire)]

    # -- time ---------------------------------------------------------------------------------

    def _next_event(self) -> int | None:
        times = [self._wire[0][0]] if self._wire else []
        times += [c.next_deadline_ms() for n, c in self.cores.items() if n not in self.down and n not in self.held]
        return min(times) if times else None

    def run(self, ms: int = 10_000, until: Callable[[], bool] | None = None) -> bool:
        """Advance up to ``ms``; stop early (True) as soon as ``until()`` holds."""
        end = self.now + ms
        while True:
            if until is not None and until():
                return True
            t = self._next_event()
            if t is None or t > end:
                self.now = end
                return until is None
            self.now = max(self.now, t)
            while self._wire and self._wire[0][0] <= self.now:
                _, _, m = heapq.heappop(self._wire)
                if m.dst in self.down or m.src in self.down or (m.src, m.dst) in self.cut \
                        or (self.drop is not None and self.drop(m)):
                    continue
                self.delivered.append((self.now, m))
                self.cores[m.dst].step(m, self.now)
                self._drain(m.dst)
            for n, c in self.cores.items():
                if n in self.down or n in self.held or c.next_deadline_ms() > self.now:
                    continue
                for _ in range(3):      # a core may ask for one more tick now (a new leader's first heartbeat)
                    c.tick(self.now)
                    self._drain(n)
                    if c.next_deadline_ms() > self.now:
                        break
                else:
                    raise AssertionError(f"{n} asks to be ticked at {c.next_deadline_ms()} <= now {self.now} "
                                         "after 3 ticks at now: a driver would spin")

    # -- conveniences -------------------------------------------------------------------------

    def leader(self) -> str | None:
        """The live leader of the highest term, if any."""
        best = [(c.term, n) for n, c in self.cores.items() if n not in self.down and c.role is Role.LEADER]
        return max(best)[1] if best else None

    def reachable(self, a: str, b: str) -> bool:
        return b not in self.down and (a, b) not in self.cut and (b, a) not in self.cut

    def elect(self, node: str, max_ms: int = 5000) -> Raft:
        """Let ``node`` win (the others' clocks stall until they follow it); it commits its no-op."""
        others = {n for n in self.names if n != node}
        self.held |= others
        try:
            core = self.cores[node]
            assert self.run(max_ms, until=lambda: core.role is Role.LEADER), f"{node} did not win"
            assert self.run(max_ms, until=lambda: all(
                self.cores[n].leader == node for n in others if self.reachable(node, n))), "followers did not follow"
        finally:
            self.held -= others
        self.run(max_ms, until=lambda: core.role is not Role.LEADER or core.log.term_at(core.commit) == core.term)
        return core

    def propose(self, node: str, data: bytes) -> int:
        index = self.cores[node].propose(data, self.now)
        self._drain(node)
        return index

    def read_index(self, node: str, ctx: bytes) -> None:
        self.cores[node].read_index(ctx, self.now)
        self._drain(node)

    def state(self, node: str) -> list[list]:
        return self.disks[node].state

    def sent_by(self, src: str, kind: type, since: int = -1, dst: str | None = None) -> list[Message]:
        return [m for t, m in self.sent
                if t >= since and m.src == src and isinstance(m, kind) and (dst is None or m.dst == dst)]

    def first_read(self, node: str, ctx: bytes) -> tuple[int, ReadState] | None:
        return next(((t, r) for t, r in self.reads[node] if r.ctx == ctx), None)

    def snapshot_of(self, node: str) -> Snapshot:
        d, core = self.disks[node], self.cores[node]
        return Snapshot(SnapshotMeta(d.applied, core.log.term_at(d.applied), self.conf),
                        json.dumps(d.state).encode())


def lone(node: str = "n3", voters: int = 3, **kw) -> tuple[Raft, list[Ready]]:
    """One core the test plays the rest of the group against; returns it and a Ready list."""
    core = Raft(node, config=kw.pop("config", CONFIG), rng=Random(0), now_ms=0,
                conf=ConfState(tuple(ids(voters))), **kw)
    return core, []


def take(core: Raft, out: list[Ready]) -> list[Message]:
    """Take every pending Ready; return their messages."""
    msgs = []
    while core.has_ready():
        rd = core.ready()
        out.append(rd)
        msgs += rd.messages
    return msgs


# -- elections (§5.2) ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_three_nodes_elect_exactly_one_leader_that_all_follow(seed):
    """§5.2: randomized timeouts elect one leader; election safety: one leader per term."""
    c = Cluster(ids(3), seed=seed)
    assert c.run(3000, until=lambda: c.leader() is not None and all(
        x.leader == c.leader() for x in c.cores.values()))
    leader = c.leader()
    term = c.cores[leader].term
    assert [n for n, x in c.cores.items() if x.role is Role.LEADER] == [leader]
    assert term >= 1 and all(x.term == term for x in c.cores.values())
    assert max(c.leaders) == term and c.leaders[term] == leader
    c.run(2000)        # a healthy group keeps its leader
    assert c.leader() == leader and all(x.term == term for x in c.cores.values())
    assert c.cores[leader].commit == c.cores[leader].last_index >= 1   # its no-op (§5.4.2)


def test_votes_are_durable_in_the_ready_that_carries_the_grant():
    """Figure 2 ("persistent state ... updated on stable storage before responding"):
    the first grant in a term leaves in the same Ready as the hard state naming that vote."""
    c = Cluster(ids(3), seed=1)
    c.elect("n1")
    grants = 0
    for node in ("n2", "n3"):
        voted_terms: set[int] = set()
        for _, rd in c.readies[node]:
            for m in rd.messages:
                if isinstance(m, VoteResp) and m.granted and not m.pre and m.term not in voted_terms:
                    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (m.term, m.dst)
                    voted_terms.add(m.term)
                    grants += 1
    assert grants >= 1


def test_a_candidate_with_a_stale_log_cannot_win():
    """§5.4.1: a vote goes only to a candidate whose log is at least as up to date."""
    hs = HardState(2, None, 1)
    prepared = {"n1": (hs, log_entries(1)), "n2": (hs, log_entries(1, 2)), "n3": (hs, log_entries(1, 2))}
    for pre_vote in (True, False):
        c = Cluster(ids(3), config=replace(CONFIG, pre_vote=pre_vote), prepared=prepared)
        c.held |= {"n2", "n3"}                    # only n1's clock runs: it campaigns again and again
        c.run(3000)
        n1 = c.cores["n1"]
        assert n1.role is not Role.LEADER and not c.leaders
        denied = [m for _, m in c.sent if isinstance(m, VoteResp) and m.dst == "n1"]
        assert denied and not any(m.granted for m in denied)
        if pre_vote:
            assert n1.term == 2, "pre-votes lost: the term stays"
        else:
            assert n1.term > 2
        c.held.clear()
        assert c.run(3000, until=lambda: c.leader() in ("n2", "n3"))
        c.run(500)
        assert c.disks["n1"].entries[:2] == log_entries(1, 2), "the winner's entry 2@2 reaches n1"


def test_a_node_votes_at_most_once_per_term():
    """§5.2: each server votes for at most one candidate in a given term."""
    core, out = lone("n3")
    core.step(Vote("n1", "n3", 5, 0, 0), 1)
    assert [(m.dst, m.granted) for m in take(core, out)] == [("n1", True)]
    assert out[-1].hard_state == HardState(5, "n1", 0)
    core.step(Vote("n2", "n3", 5, 9, 9), 2)          # even with a better log
    assert [(m.dst, m.granted) for m in take(core, out)] == [("n2", False)]
    core.step(Vote("n1", "n3", 5, 0, 0), 3)          # a retransmitted request: same answer
    assert [(m.dst, m.granted) for m in take(core, out)] == [("n1", True)]
    core.step(Vote("n2", "n3", 6, 0, 0), 4)          # a new term: a new vote
    assert [(m.dst, m.granted) for m in take(core, out)] == [("n2", True)]
    assert (core.term, core.vote) == (6, "n2")


def test_restart_keeps_term_and_vote_and_cannot_vote_twice():
    """Figure 2: currentTerm and votedFor are persistent; a restarted node keeps its promise."""
    c = Cluster(ids(3), seed=2)
    c.elect("n1")
    for i in range(5):
        c.propose("n1", f"a{i}".encode())
    c.run(300)
    term = c.cores["n1"].term
    assert c.disks["n3"].hard_state.term == term and c.disks["n3"].hard_state.vote == "n1"
    c.crash("n1")
    n3 = c.restart("n3")
    assert (n3.term, n3.vote, n3.commit) == (term, "n1", c.disks["n3"].hard_state.commit)
    c.inject(Vote("n2", "n3", term, 99, term))        # same term, another candidate: refused
    refusals = [m for _, rd in c.readies["n3"][-1:] for m in rd.messages]
    assert [(type(m), m.granted) for m in refusals] == [(VoteResp, False)]
    assert c.disks["n3"].hard_state.vote == "n1"
    # the group survives a restart of everyone: nothing applied twice, nothing lost
    for n in ids(3):
        c.restart(n)
    assert c.run(5000, until=lambda: c.leader() is not None)
    leader = c.leader()
    c.propose(leader, b"after")
    c.run(500)
    states = [c.state(n) for n in ids(3)]
    assert states[0] == states[1] == states[2]
    assert [x[1] for x in states[0]] == [f"a{i}" for i in range(5)] + ["after"]


# -- pre-vote (thesis §9.6) and check-quorum (thesis §6.2, §4.2.3) --------------------------------

def test_an_isolated_follower_pre_votes_without_raising_its_term():
    """Thesis §9.6: a node that cannot win a pre-vote does not increment its term."""
    c = Cluster(ids(3), seed=3)
    c.elect("n1")
    term = c.cores["n1"].term
    t0 = c.now
    c.isolate("n3")
    c.run(3000)
    n3 = c.cores["n3"]
    asks = c.sent_by("n3", Vote, since=t0)
    assert len(asks) >= 4 and all(m.pre and m.term == term + 1 for m in asks)
    assert n3.term == term and c.disks["n3"].hard_state.term == term
    assert n3.role in (Role.FOLLOWER, Role.PRE_CANDIDATE)
    c.propose("n1", b"x")            # the group goes on meanwhile
    c.heal()
    c.run(1000)
    assert c.leader() == "n1" and all(x.term == term for x in c.cores.values())
    assert c.cores["n3"].leader == "n1"


def test_a_rejoining_follower_does_not_disrupt_the_leader():
    """Thesis §9.6 (and §4.2.3): a node back from a partition, with a log as good as anyone's,
    must not depose a leader that still hears from a majority. Its pre-vote must fail: the
    leader itself knows there is a leader. BUG: the leader grants the pre-vote, the real
    vote at term+1 then deposes it (leaders are not "in lease")."""
    c = Cluster(ids(3), seed=4)
    c.elect("n1")
    term = c.cores["n1"].term
    c.isolate("n3")                  # no proposals meanwhile: n3's log stays as up to date
    c.run(2000)
    assert c.cores["n3"].term == term
    # heal just before n3's next pre-vote, so it reaches the group before a heartbeat reaches n3
    c.run(c.cores["n3"].next_deadline_ms() - 1 - c.now)
    t_heal = c.now
    c.heal()
    c.run(1000)
    assert c.sent_by("n3", Vote, since=t_heal), "precondition: n3 asked for pre-votes after the heal"
    assert c.leader() == "n1", f"leader changed to {c.leader()}"
    assert all(x.term == term for x in c.cores.values()), {n: x.term for n, x in c.cores.items()}


def test_the_leader_refuses_a_pre_vote_while_it_has_a_quorum():
    """Thesis §9.6: a server grants a pre-vote only if it has not heard from a leader within
    the election timeout; the leader is one. (The unit form of the previous scenario.)"""
    c = Cluster(ids(3), seed=5)
    n1 = c.elect("n1")
    c.run(100)
    term = n1.term
    c.inject(Vote("n3", "n1", term + 1, n1.last_index, n1.log.last_term, pre=True))
    answers = [m for m in c.readies["n1"][-1][1].messages if isinstance(m, VoteResp)] \
        if c.readies["n1"] else []
    assert not any(m.granted for m in answers), f"leader n1 granted a pre-vote: {answers}"
    assert n1.role is Role.LEADER and n1.term == term


def test_a_leader_cut_off_from_the_majority_steps_down_within_an_election_timeout():
    """Thesis §6.2 (check quorum): a leader that does not hear from a majority for an election
    timeout steps down, so its clients learn NotLeader rather than wait."""
    c = Cluster(ids(3), seed=6)
    n1 = c.elect("n1")
    c.run(400)
    t0 = c.now
    c.isolate("n1")
    assert c.run(2000, until=lambda: n1.role is not Role.LEADER)
    assert c.now - t0 <= 2 * LO, f"stepped down after {c.now - t0} ms"
    with pytest.raises(NotLeader):
        n1.propose(b"x", c.now)
    assert c.run(3000, until=lambda: c.leader() in ("n2", "n3"))
    c.heal()
    c.run(1000)
    new = c.leader()
    assert new in ("n2", "n3") and n1.term == c.cores[new].term and n1.leader == new


def test_without_check_quorum_a_cut_off_leader_keeps_its_role():
    """RaftConfig.check_quorum=False switches check-quorum off ("A leader that has not heard
    from a quorum ... steps down" is what the option enables). BUG: the core runs the quorum
    check regardless of the option."""
    c = Cluster(ids(3), seed=6, config=replace(CONFIG, check_quorum=False))
    n1 = c.elect("n1")
    c.isolate("n1")
    c.run(2000)
    assert n1.role is Role.LEADER


def test_a_follower_in_lease_ignores_a_vote_from_a_higher_term_unless_it_is_a_transfer():
    """Thesis §4.2.3: a server that heard from a leader within the minimum election timeout
    neither updates its term nor grants its vote; a transfer's campaign (TimeoutNow) overrides."""
    c = Cluster(ids(3), seed=7)
    c.elect("n1")
    c.run(120)
    n2 = c.cores["n2"]
    term = n2.term
    before = len(c.sent)
    for pre in (False, True):
        c.inject(Vote("n3", "n2", term + 1, n2.last_index, n2.log.last_term, pre=pre))
        assert n2.term == term and n2.leader == "n1" and n2.vote == c.disks["n2"].hard_state.vote
        assert not [m for _, m in c.sent[before:] if m.src == "n2" and isinstance(m, VoteResp)]
    c.inject(Vote("n3", "n2", term + 1, n2.last_index, n2.log.last_term, transfer=True))
    assert n2.term == term + 1 and n2.vote == "n3"
    grant = [m for _, m in c.sent[before:] if m.src == "n2" and isinstance(m, VoteResp)]
    assert [(m.term, m.granted) for m in grant] == [(term + 1, True)]


# -- replication (§5.3) ---------------------------------------------------------------------------

def test_proposals_commit_and_apply_in_the_same_order_everywhere():
    """§5.3 and §5.4.3 (state machine safety)."""
    c = Cluster(ids(3), seed=8)
    c.elect("n1")
    want = []
    for i in range(20):
        want.append(f"cmd{i}")
        idx = c.propose("n1", want[-1].encode())
        if i % 3 == 0:
            c.run(7)
    assert idx == c.cores["n1"].last_index
    c.run(500)
    n1 = c.cores["n1"]
    assert n1.commit == n1.last_index == idx
    for n in ids(3):
        assert [x[1] for x in c.state(n)] == want
        assert c.disks[n].entries == c.disks["n1"].entries
        assert c.cores[n].commit == idx


def test_pipelining_sends_many_appends_before_any_ack():
    """etcd-style flow control: a follower in REPLICATE gets appends back to back, each
    continuing where the last left off, without waiting for acknowledgements."""
    c = Cluster(ids(3), seed=9)
    c.elect("n1")
    c.run(200)
    for i in range(10):
        c.propose("n1", f"p{i}".encode())             # no time passes: nothing is acked meanwhile
    to_n2 = [m for m in c.in_flight() if isinstance(m, Append) and m.dst == "n2" and m.entries]
    assert len(to_n2) >= 10
    for a, b in zip(to_n2, to_n2[1:]):
        assert b.prev_index == a.entries[-1].index
    c.run(300)
    assert all([x[1] for x in c.state(n)] == [f"p{i}" for i in range(10)] for n in ids(3))


def test_max_inflight_bounds_unacknowledged_appends():
    """RaftConfig.max_inflight: "Append messages in flight per follower", also while the
    commit index moves (the commit broadcast must not push a paused follower's entries)."""
    c = Cluster(ids(3), seed=10, config=replace(CONFIG, max_inflight=2))
    c.elect("n1")
    c.run(200)
    c.cut.add(("n2", "n1"))          # n2's acks are lost; n3 keeps the commit index moving
    t0 = c.now
    for i in range(8):
        c.propose("n1", f"q{i}".encode())
        c.run(5)
    assert c.cores["n1"].commit == c.cores["n1"].last_index, "precondition: n3 acked, commits advance"
    with_entries = [m for m in c.sent_by("n1", Append, since=t0, dst="n2") if m.entries]
    assert len(with_entries) <= 2, f"{len(with_entries)} unacknowledged appends to n2 with max_inflight=2"


def test_a_probing_follower_gets_at_most_one_append_per_heartbeat():
    """Progress PROBE (mesh/raft/progress.py): "send one append at a time (at most one per
    heartbeat)". BUG: every commit advance now runs _broadcast_heartbeat(), which re-arms
    the probe and resends the whole unacknowledged suffix to each probing follower; a group
    committing k entries per heartbeat interval sends a down follower k ever-larger appends
    (up to max_batch_bytes each) instead of one."""
    c = Cluster(ids(3), seed=28)
    c.crash("n2")                             # never answers: its progress stays in PROBE
    c.elect("n1")
    c.run(c.cores["n1"].next_deadline_ms() - c.now)   # just after a heartbeat
    t0 = c.now
    for i in range(9):
        c.propose("n1", f"k{i}".encode())
        c.run(5)                              # n3 acks; the commit index moves each time
    assert c.cores["n1"].commit == c.cores["n1"].last_index
    assert c.now - t0 < CONFIG.heartbeat_ms
    probes = [m for m in c.sent_by("n1", Append, since=t0, dst="n2") if m.entries]
    assert len(probes) <= 2, f"{len(probes)} appends (sizes {[len(m.entries) for m in probes]}) " \
                             f"to a probing follower within one heartbeat interval"


def test_uncommitted_bytes_are_bounded():
    """RaftConfig.max_uncommitted_bytes: proposals beyond it are refused with Overloaded
    until entries commit."""
    c = Cluster(ids(3), seed=29, config=replace(CONFIG, max_uncommitted_bytes=100))
    c.elect("n1")
    c.cut |= {("n1", "n2"), ("n1", "n3")}
    c.propose("n1", b"x" * 60)
    with pytest.raises(Overloaded):
        c.propose("n1", b"y" * 60)
    c.heal()
    c.run(50)
    c.propose("n1", b"y" * 60)


def test_uncommitted_bytes_do_not_go_negative_after_older_entries_commit():
    """RaftConfig.max_uncommitted_bytes. BUG: a new leader starts counting at 0 but subtracts
    every entry that commits, including its predecessors' entries it never counted, so the
    budget grows by their size (here 80 bytes: two 60-byte proposals pass a 100-byte bound)."""
    hs = HardState(1, None, 1)
    prepared = {"n1": (hs, [Entry(1, 1), Entry(2, 1, EntryKind.NORMAL, b"o" * 80)]),
                "n2": (hs, [Entry(1, 1)]), "n3": (hs, [Entry(1, 1)])}
    c = Cluster(ids(3), seed=29, config=replace(CONFIG, max_uncommitted_bytes=100), prepared=prepared)
    n1 = c.elect("n1")
    assert n1.commit == 3, "the no-op committed the old entry 2 with it"
    c.cut |= {("n1", "n2"), ("n1", "n3")}
    c.propose("n1", b"x" * 60)
    with pytest.raises(Overloaded):
        c.propose("n1", b"y" * 60)


@pytest.mark.parametrize("compacted", [False, True], ids=["plain", "after-compaction"])
def test_a_follower_that_missed_appends_catches_up_without_new_proposals(compacted):
    """§5.3: "the leader retries AppendEntries indefinitely" until every follower stores
    every entry. BUG: a follower in REPLICATE whose appends were lost is never repaired while
    no new entry is proposed: heartbeats carry prev_index = match, which it accepts, and the
    ack does not make the leader resend from match + 1. After compaction the heartbeat's
    prev_term is 0, the follower rejects it, and the leader drops the rejection as stale
    (index <= match), so no snapshot is ever sent either."""
    c = Cluster(ids(3), seed=11)
    c.elect("n1")
    c.run(200)
    c.isolate("n3")
    for i in range(5):
        c.propose("n1", f"m{i}".encode())
    c.run(100)
    n1 = c.cores["n1"]
    assert n1.commit == n1.last_index
    if compacted:
        n1.compact(c.snapshot_of("n1"))
        c.run(1)
    c.heal()
    c.run(3000)
    assert c.cores["n3"].last_index == n1.last_index, \
        f"n3 has {c.cores['n3'].last_index}, leader {n1.last_index} after 3 s of heartbeats"
    assert c.state("n3") == c.state("n1")


def test_a_follower_commits_no_further_than_the_last_entry_the_append_vouched_for():
    """Figure 2, AppendEntries receiver rule 5: commitIndex = min(leaderCommit, index of last
    new entry). A late append that matches only a prefix must not commit the stale entries
    after it (3@4 and 4@4 here are not the leader's)."""
    core, out = lone("n3", hard_state=HardState(5, None, 1), entries=log_entries(1, 2, 4, 4), applied=1)
    core.step(Append("n1", "n3", 5, 1, 1, tuple(log_entries(2, start=2)), commit=4), 1)
    msgs = take(core, out)
    assert core.commit == 2
    assert [e.index for rd in out for e in rd.committed] == [2]
    assert [(type(m), m.success, m.index) for m in msgs] == [(AppendResp, True, 2)]


def test_a_follower_with_an_empty_log_is_caught_up_by_probing():
    """§5.3: on a rejection the leader moves nextIndex back (here at once to the follower's
    last index + 1, the hint) until the logs match, then fills the follower in."""
    c = Cluster(ids(3), seed=12, config=replace(CONFIG, max_batch_bytes=64))
    c.crash("n3")
    c.elect("n1")
    for i in range(30):
        c.propose("n1", f"h{i:03}".encode())
    c.run(300)
    assert c.cores["n2"].commit == c.cores["n1"].last_index == 31
    c.crash("n1")
    t0 = c.now
    c.restart("n3", fresh=True)             # a new disk: nothing of the history
    c.elect("n2")                           # n3 votes for n2 (n2's log is ahead of its empty one)
    assert c.run(3000, until=lambda: c.cores["n3"].last_index == c.cores["n2"].last_index)
    rejections = [m for m in c.sent_by("n3", AppendResp, since=t0) if not m.success]
    assert rejections and rejections[0].hint == 0
    assert {m.index for m in rejections} == {31}, "the hint sends the leader straight back to index 1"
    c.run(300)
    assert c.state("n3") == c.state("n2") and len(c.state("n3")) == 30
    batches = [m for m in c.sent_by("n2", Append, since=t0, dst="n3") if m.entries]
    assert len(batches) > 1, "max_batch_bytes splits the catch-up"
    c.restart("n1")
    c.run(500)
    assert c.disks["n1"].entries == c.disks["n2"].entries == c.disks["n3"].entries


def test_a_divergent_uncommitted_suffix_is_truncated_and_replaced():
    """§5.3 / Figure 7: a follower's entries that conflict with the leader's are deleted
    (Ready.truncate_from) and replaced by the leader's."""
    prepared = {"n1": (HardState(2, None, 1), log_entries(1)),
                "n2": (HardState(2, None, 1), log_entries(1)),
                "n3": (HardState(2, "n3", 1), log_entries(1, 2, 2))}   # n3 led term 2 alone
    c = Cluster(ids(3), seed=13, prepared=prepared)
    n1 = c.elect("n1")
    assert n1.term == 3
    c.propose("n1", b"new")
    c.run(300)
    cuts = [rd for _, rd in c.readies["n3"] if rd.truncate_from is not None]
    assert len(cuts) == 1
    assert cuts[0].truncate_from == 2 and cuts[0].entries[0] == Entry(2, 3, EntryKind.NOOP)
    assert [e.term for e in c.disks["n3"].entries] == [1, 3, 3]
    assert c.disks["n3"].entries == c.disks["n1"].entries
    assert b"2@2" not in {e.data for e in c.chosen.values()}
    assert [x[1] for x in c.state("n3")] == ["1@1", "new"]


def test_figure_8_an_old_term_entry_is_not_committed_by_counting_replicas():
    """§5.4.2 / Figure 8: a leader commits only entries of its own term by counting replicas;
    an older entry on a majority could still be overwritten (shown on a copy of the group),
    and becomes committed only with an entry of the current term."""
    hs = HardState(3, None, 1)
    prepared = {"n1": (hs, log_entries(1, 2)),                 # S1: wrote 2@2 as leader of term 2
                "n2": (hs, log_entries(1)), "n3": (hs, log_entries(1)), "n4": (hs, log_entries(1)),
                "n5": (hs, log_entries(1, 3))}                 # S5: wrote 2@3 as leader of term 3
    c = Cluster(ids(5), seed=14, config=replace(CONFIG, max_batch_bytes=1), prepared=prepared)
    c.cut |= {("n1", "n5"), ("n5", "n1")}

    def would_take_the_no_op(m: Message) -> bool:   # lose exactly the appends that carry 3@4 and fit
        return (isinstance(m, Append) and any(e.term == 4 for e in m.entries)
                and c.cores[m.dst].log.matches(m.prev_index, m.prev_term))
    c.drop = would_take_the_no_op
    n1 = c.cores["n1"]
    c.held |= {"n2", "n3", "n4", "n5"}
    assert c.run(3000, until=lambda: n1.role is Role.LEADER)
    assert n1.term == 4 and n1.log.term_at(3) == 4             # its no-op
    c.run(40)
    c.held.clear()
    c.run(1000)
    for n in ("n2", "n3", "n4"):
        assert c.cores[n].log.term_at(2) == 2 and c.cores[n].last_index == 2   # 2@2 on four of five
    assert n1.role is Role.LEADER and n1.commit == 1, "2@2 must not commit by counting replicas"
    assert 2 not in c.chosen

    fork = copy.deepcopy(c)                                    # what could still happen: S5 wins
    fork.drop = None
    fork.crash("n1")
    fork.heal()
    fork.elect("n5")                 # n2..n4 vote for it: 2@3 is more up to date than their 2@2
    fork.run(500)
    assert all(fork.cores[n].log.term_at(2) == 3 for n in ("n2", "n3", "n4", "n5"))

    c.drop = None                                              # now the no-op gets through
    c.heal()
    c.propose("n1", b"x")
    c.run(500)
    assert n1.commit == 4 and c.chosen[2].term == 2 and c.chosen[3].term == 4
    committed_on_n1 = [e.index for _, rd in c.readies["n1"] for e in rd.committed]
    assert committed_on_n1 == [1, 2, 3, 4]


def test_propose_on_a_follower_raises_not_leader_naming_the_leader():
    """§5.1: clients are redirected to the leader."""
    c = Cluster(ids(3), seed=15)
    c.elect("n1")
    with pytest.raises(NotLeader) as exc:
        c.propose("n2", b"x")
    assert exc.value.leader == "n1"
    with pytest.raises(NotLeader) as exc:
        c.read_index("n3", b"r")
    assert exc.value.leader == "n1"
    core, _ = lone("n3")                      # knows no leader
    with pytest.raises(NotLeader) as exc:
        core.propose(b"x", 0)
    assert exc.value.leader is None


# -- ReadIndex (thesis §6.4) ----------------------------------------------------------------------

def test_a_read_is_answered_after_a_heartbeat_round_acknowledged_by_a_majority():
    """Thesis §6.4: record the commit index, confirm leadership with a round of heartbeats
    acknowledged by a majority, then answer at that index."""
    c = Cluster(ids(3), seed=16)
    c.elect("n1")
    c.propose("n1", b"w")
    c.run(200)
    n1 = c.cores["n1"]
    commit = n1.commit
    c.link_latency_ms[("n2", "n1")] = 30            # n2 confirms slowly
    c.drop = lambda m: isinstance(m, Append) and m.dst == "n3" and m.ctx != 0   # n3 never confirms
    t0 = c.now
    c.read_index("n1", b"r1")
    assert c.first_read("n1", b"r1") is None
    c.propose("n1", b"later")                 # commits through n3 first; the read's index stays
    c.run(5)
    assert n1.commit > commit and c.first_read("n1", b"r1") is None
    assert c.run(500, until=lambda: c.first_read("n1", b"r1") is not None)
    t_read, rs = c.first_read("n1", b"r1")
    assert rs == ReadState(b"r1", commit)
    acks = [t for t, m in c.delivered if t >= t0 and isinstance(m, AppendResp) and m.dst == "n1" and m.ctx]
    assert acks and t_read >= acks[0] >= t0 + 30


def test_a_read_survives_a_lost_heartbeat_round():
    """Thesis §6.4: the leader answers once a majority acknowledges a heartbeat sent after the
    read arrived -- any such heartbeat (etcd repeats the pending read's context on every
    heartbeat). BUG: the context rides only on the one round sent at read_index(); if that
    round is lost, the read waits forever although later heartbeats are acknowledged."""
    c = Cluster(ids(3), seed=17)
    c.elect("n1")
    c.run(200)
    lost_until = c.now + 20                   # the first confirmation round is lost
    c.drop = lambda m: isinstance(m, Append) and m.ctx != 0 and c.now < lost_until
    c.read_index("n1", b"r1")
    c.run(1000)                               # later heartbeats carry the read's context again
    assert c.cores["n1"].role is Role.LEADER
    assert c.first_read("n1", b"r1") is not None, "read still pending after 1 s of acknowledged heartbeats"


def test_a_read_is_confirmed_by_a_follower_that_is_being_probed():
    """Thesis §6.4: any follower's acknowledgement of the leader's term counts. BUG: the
    heartbeat to a follower in PROBE goes out through _send_append() without the read's
    context, so with the other follower down the read is never confirmed."""
    c = Cluster(ids(3), seed=18)
    c.elect("n1")
    c.run(200)
    c.isolate("n3")
    lost = []

    def lose_first_append_to_n2(m: Message) -> bool:
        if isinstance(m, Append) and m.dst == "n2" and m.entries and not lost:
            lost.append(m)
            return True
        return False
    c.drop = lose_first_append_to_n2
    c.propose("n1", b"a")                     # lost on the way to n2
    c.propose("n1", b"b")                     # n2 rejects it: n1 falls back to probing n2
    c.run(2)
    assert [m for m in c.sent_by("n2", AppendResp) if not m.success], "precondition: n2 rejected"
    c.drop = None
    c.read_index("n1", b"r1")
    c.run(1000)
    assert c.cores["n1"].role is Role.LEADER and c.cores["n2"].last_index == c.cores["n1"].last_index
    assert c.first_read("n1", b"r1") is not None, "n2 acknowledged n1 all along; the read is never answered"


def test_a_leader_cut_off_from_the_majority_never_answers_a_read():
    """Thesis §6.4: a deposed or partitioned leader must not serve stale reads."""
    c = Cluster(ids(3), seed=19)
    n1 = c.elect("n1")
    c.run(200)
    c.isolate("n1")
    c.read_index("n1", b"r1")
    c.run(1000)
    assert c.first_read("n1", b"r1") is None
    assert n1.role is not Role.LEADER
    with pytest.raises(NotLeader):
        c.read_index("n1", b"r2")
    c.heal()
    c.run(1000)
    assert c.first_read("n1", b"r1") is None


def test_a_new_leader_defers_reads_until_its_no_op_commits():
    """Thesis §6.4 step 1: a new leader does not know the commit index until an entry of its
    term commits; reads wait for its no-op."""
    c = Cluster(ids(3), seed=20)
    n1 = c.cores["n1"]
    c.held |= {"n2", "n3"}
    assert c.run(3000, until=lambda: n1.role is Role.LEADER)
    noop = n1.last_index
    assert n1.log.term_at(noop) == n1.term and n1.commit < noop
    c.read_index("n1", b"r1")
    assert c.first_read("n1", b"r1") is None
    assert c.run(1000, until=lambda: c.first_read("n1", b"r1") is not None)
    c.held.clear()
    t, rs = c.first_read("n1", b"r1")
    assert rs.index >= noop and n1.commit >= noop
    commit_time = next(t for t, rd in c.readies["n1"] if any(e.index == noop for e in rd.committed))
    assert t > commit_time, "and then it still confirms leadership with a heartbeat round"


def test_a_single_node_group_answers_reads_at_once():
    c = Cluster(["n1"], seed=21)
    assert c.run(1000, until=lambda: c.cores["n1"].role is Role.LEADER)
    c.propose("n1", b"x")
    c.read_index("n1", b"r1")
    assert c.reads["n1"][-1] == (c.now, ReadState(b"r1", c.cores["n1"].commit))
    assert c.cores["n1"].commit == 2


# -- leadership transfer (thesis §3.10) ----------------------------------------------------------

def test_transfer_to_an_up_to_date_follower_is_quick_and_refuses_proposals_meanwhile():
    """Thesis §3.10: the leader stops accepting requests, the target is sent TimeoutNow and
    wins the next term without waiting for an election timeout (leases do not stop it)."""
    c = Cluster(ids(3), seed=22)
    n1 = c.elect("n1")
    c.run(200)
    term = n1.term
    t0 = c.now
    n1.transfer_leadership("n2", c.now)
    c._drain("n1")
    with pytest.raises(NotLeader):
        c.propose("n1", b"x")
    assert c.sent_by("n1", TimeoutNow, since=t0, dst="n2")
    assert c.run(LO, until=lambda: c.leader() == "n2")
    assert c.now - t0 < LO
    assert c.cores["n2"].term == term + 1
    c.run(100)
    assert n1.role is Role.FOLLOWER and n1.leader == "n2" and c.cores["n3"].leader == "n2"
    c.propose("n2", b"y")
    c.run(100)
    assert all(c.state(n)[-1][1] == "y" for n in ids(3))


def test_transfer_to_a_lagging_follower_first_catches_it_up():
    """Thesis §3.10 step 2: the target is brought up to date before TimeoutNow, so it can win."""
    c = Cluster(ids(3), seed=23)
    n1 = c.elect("n1")
    c.run(200)
    c.link_latency_ms.update({("n1", "n3"): 20, ("n3", "n1"): 20})
    for i in range(6):
        c.propose("n1", f"t{i}".encode())
    t0 = c.now
    n1.transfer_leadership("n3", c.now)
    c._drain("n1")
    assert not c.sent_by("n1", TimeoutNow, since=t0), "n3 has not acknowledged the last entries yet"
    assert c.run(LO, until=lambda: c.leader() == "n3")
    nudge = c.sent_by("n1", TimeoutNow, since=t0)
    assert nudge
    t_nudge = next(t for t, m in c.sent if m is nudge[0])
    last_ack = min(t for t, m in c.delivered if isinstance(m, AppendResp) and m.src == "n3" and m.dst == "n1"
                   and m.success and not m.heartbeat and m.index == n1.last_index)
    assert t_nudge >= last_ack
    c.run(200)
    assert [x[1] for x in c.state("n3")] == [f"t{i}" for i in range(6)]


def test_a_transfer_that_times_out_gives_back_proposals_and_a_future_deadline():
    """Thesis §3.10: "if the transfer does not complete within an election timeout, the prior
    leader aborts the transfer and resumes accepting client requests". BUG: the abort leaves
    _transfer_deadline in the past, so next_deadline_ms() stays <= now and a driver that
    ticks at the deadline spins."""
    c = Cluster(ids(3), seed=24)
    n1 = c.elect("n1")
    c.run(200)
    c.isolate("n3")
    n1.transfer_leadership("n3", c.now)
    c._drain("n1")
    with pytest.raises(NotLeader):
        c.propose("n1", b"x")
    deadline = c.now + LO
    c.run(LO - 1)
    n1.tick(deadline)
    c.now = deadline
    c._drain("n1")
    assert n1.role is Role.LEADER
    assert n1.next_deadline_ms() > deadline, f"next deadline {n1.next_deadline_ms()} is not after now {deadline}"
    c.propose("n1", b"x")


# -- snapshots (§7) -----------------------------------------------------------------------------------

def test_a_follower_behind_the_leaders_snapshot_gets_install_snapshot():
    """§7: a follower that needs compacted entries receives the snapshot, its log restarts at
    the snapshot index, and replication continues from there."""
    c = Cluster(ids(3), seed=25)
    c.crash("n3")
    n1 = c.elect("n1")
    for i in range(20):
        c.propose("n1", f"s{i}".encode())
    c.run(300)
    snap = c.snapshot_of("n1")
    assert snap.meta.index == n1.commit == 21
    c.restart("n3", fresh=True)
    n1.compact(snap)                          # the entries n3 needs are gone from n1's log
    assert n1.log.snapshot_index == 21
    c.run(300)
    n3 = c.cores["n3"]
    got = [rd for _, rd in c.readies["n3"] if rd.snapshot is not None]
    assert len(got) == 1 and got[0].snapshot.meta == snap.meta and got[0].snapshot.data == snap.data
    assert len(c.sent_by("n1", InstallSnapshot, dst="n3")) == 1
    assert n3.log.snapshot_index == 21 and n3.commit >= 21
    assert c.disks["n3"].snapshot == snap.meta and c.disks["n3"].applied == 21
    assert c.sent_by("n3", SnapshotResp)[0].index == 21
    for i in range(5):
        c.propose("n1", f"u{i}".encode())
    c.run(300)
    assert [e.index for e in c.disks["n3"].entries] == list(range(22, 27))
    assert c.state("n3") == c.state("n1") == c.state("n2")
    assert len(c.state("n3")) == 25


def test_a_lost_install_snapshot_is_sent_again():
    """§7 ("the leader must occasionally send snapshots to followers that lag behind"): a
    snapshot lost on the way must be retried. BUG: after an InstallSnapshot the follower's
    progress stays in SNAPSHOT until a SnapshotResp arrives; successful heartbeat replies
    from a follower with an empty log do not move it back to PROBE, so it is never resent."""
    c = Cluster(ids(3), seed=26)
    c.crash("n3")
    n1 = c.elect("n1")
    for i in range(5):
        c.propose("n1", f"s{i}".encode())
    c.run(300)
    n1.compact(c.snapshot_of("n1"))
    lost = []
    c.drop = lambda m: isinstance(m, InstallSnapshot) and not lost and not lost.append(m)
    c.restart("n3", fresh=True)
    c.run(3000)
    assert lost, "the first snapshot was sent (and dropped)"
    assert c.cores["n3"].commit == n1.commit, "n3 never got the snapshot again"


def test_a_core_restarted_from_a_snapshot_can_send_it():
    """§7: a leader whose log starts after a snapshot sends that snapshot to followers that
    need it. BUG: a core rebuilt from storage knows only the SnapshotMeta (the constructor
    takes no data), and compact() with the same snapshot is a no-op, so there is no way to
    hand it the snapshot: _send_snapshot() finds none and the follower is never caught up."""
    conf = ConfState(tuple(ids(3)))
    meta = SnapshotMeta(10, 2, conf)
    data = json.dumps([[i, f"v{i}"] for i in range(1, 11)]).encode()
    c = Cluster(ids(3), seed=27)
    for n in ("n1", "n2"):
        c.disks[n] = Disk(hard_state=HardState(2, None, 10), snapshot=meta, snapshot_data=data,
                          entries=[], applied=10, state=json.loads(data))
        c.restart(n)
        c.cores[n].compact(Snapshot(meta, data))      # the only way in: ignored (index <= snapshot_index)
    c.restart("n3", fresh=True)
    c.elect("n1")
    c.run(1000)
    assert c.sent_by("n1", InstallSnapshot, dst="n3"), "n1 never sends its snapshot"
    assert c.cores["n3"].commit == c.cores["n1"].commit


# -- determinism -----------------------------------------------------------------------------------

def _scenario(seed: int) -> list[tuple[int, str]]:
    c = Cluster(ids(3), seed=seed)
    c.run(1000, until=lambda: c.leader() is not None)
    leader = c.leader()
    for i in range(5):
        c.propose(leader, f"d{i}".encode())
        c.run(13)
    c.isolate(leader)
    c.run(1500)
    c.heal()
    c.run(1000)
    return [(t, repr(m)) for t, m in c.sent]


def test_the_same_seed_gives_the_same_message_sequence():
    """The core takes time and randomness only as inputs: one seed, one run."""
    a, b = _scenario(30), _scenario(30)
    assert len(a) > 50 and a == b
    assert _scenario(31) != a, "a different seed changes the election timeouts"


def test_a_dropped_link_to_the_leader_starts_an_election_within_a_heartbeat():
    c = Cluster(ids(3), seed=4)
    c.elect("n1")
    c.run(200)
    t0 = c.now
    c.crash("n1")
    for n in ("n2", "n3"):                      # both lose their link to it (the kernel closed it)
        c.cores[n].leader_unreachable(c.now)
    assert c.run(LO, until=lambda: c.leader() in ("n2", "n3"))
    assert c.now - t0 < CONFIG.heartbeat_ms + 20     # not a whole election timeout (>= LO)


def test_a_false_alarm_about_a_live_leader_does_not_depose_it():
    c = Cluster(ids(3), seed=5)
    leader = c.elect("n1")
    c.run(200)
    term = leader.term
    c.cores["n2"].leader_unreachable(c.now)      # only n2 thinks n1 is gone; n3 still hears it
    c.run(2000)
    assert c.leader() == "n1" and leader.term == term
    assert c.cores["n2"].leader == "n1"             # it follows again at the next heartbeat
