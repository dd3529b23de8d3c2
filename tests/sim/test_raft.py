"""Raft in the deterministic simulator, over many seeds (``pytest tests/sim/test_raft.py --seeds N``).

Every run has the safety checkers of :mod:`mesh.sim.raft_checkers` on: they check at every
event (election safety, votes, log matching, leader completeness, state machine safety,
durability of what was applied, configuration safety), so any test below also fails on a
safety violation, naming
its seed and the command that replays it. The scenario tests run
:data:`mesh.sim.raft_scenarios.SCENARIOS`, the same code ``python -m mesh.sim --scenario raft-*``
replays. Bounds come from the election timeout (``RaftConfig``: 150..300 ms, heartbeat 50 ms).

The targeted tests at the end each pin one pitfall (or one bug found by this harness) with a
scripted run: a message dropped on purpose (``cluster.drop``), a crash at a chosen moment.
The membership tests (``raft-membership`` over many seeds, then scripted) change the
configuration through the core's own API on the leader (:meth:`RaftCluster.change_membership`).
"""
from __future__ import annotations

import pytest

from mesh.raft.config import RaftConfig
from mesh.raft.core import Raft
from mesh.raft.messages import (Append, AppendResp, ConfState, Entry, EntryKind, InstallSnapshot,
                                Role, SnapshotMeta)
from mesh.raft.wire import encode_conf
from mesh.sim.raft import LogMirror, RaftCluster, command, persistence_ops
from mesh.sim.raft_scenarios import election_bound_ms, run_scenario, step_down_bound_ms
from mesh.sim.raft_checkers import RaftChecker, SafetyViolation, chain_hash
from mesh.sim.raft_workload import Workload

pytestmark = pytest.mark.sim

CONFIG = RaftConfig()
ELECTION_BOUND_MS = election_bound_ms(CONFIG)      # 10 x election_timeout_max = 3 s


def scenario(each_seed, name: str, nodes: int, **options) -> None:
    each_seed(lambda seed: run_scenario(name, seed, nodes=nodes, **options),
              scenario=name, nodes=nodes, **options)


# -- scenarios over many seeds ----------------------------------------------------------------

@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_one_leader_is_elected_within_ten_election_timeouts(each_seed, nodes, loss):
    options = {"loss": loss} if loss else {}
    scenario(each_seed, "raft-election", nodes, **options)


def test_commits_continue_after_the_leader_crashes(each_seed):
    scenario(each_seed, "raft-replication", 5)


def test_acknowledged_writes_survive_minority_and_full_cluster_restarts(each_seed):
    scenario(each_seed, "raft-restart", 5)


@pytest.mark.parametrize("nodes", [3, 5])
def test_a_minority_leader_steps_down_and_a_rejoining_node_does_not_disrupt(each_seed, nodes):
    scenario(each_seed, "raft-partition", nodes)


@pytest.mark.parametrize("options", [
    {"nodes": 5},
    {"nodes": 3, "pipeline": True, "snapshot_every": 10},
    {"nodes": 3, "snapshot_every": 5, "steps": 40, "fsync_max_ms": 10},
    {"nodes": 5, "pipeline": True, "snapshot_every": 15, "loss": 0.05, "steps": 60, "fsync_max_ms": 20},
], ids=["5-nodes", "3-nodes-pipelined-snapshots", "3-nodes-frequent-snapshots-slow-disks",
        "5-nodes-pipelined-lossy-slow-disks"])
def test_nemesis_keeps_every_safety_property(each_seed, options):
    options = dict(options)
    scenario(each_seed, "raft-nemesis", options.pop("nodes"), **options)


@pytest.mark.parametrize("options", [
    {"nodes": 3, "steps": 30},
    {"nodes": 5, "pipeline": True, "snapshot_every": 10, "loss": 0.05, "steps": 30, "fsync_max_ms": 10,
     "spares": 1},
], ids=["3-voters-2-spares", "5-voters-1-spare-pipelined-lossy-snapshots"])
def test_membership_changes_under_the_nemesis_keep_every_safety_property(each_seed, seeds, options):
    """raft-membership: the nemesis adds learners, promotes them, adds and removes voters
    (the leader too) while it crashes, partitions and loses. Zero violations, and changes
    really happen: not a test that passes because the nemesis never got a change in."""
    options = dict(options)
    nodes = options.pop("nodes")
    committed: list[tuple[str, str, str, int, ConfState]] = []
    voters_seen: set[int] = set()

    def run(seed):
        c = run_scenario("raft-membership", seed, nodes=nodes, **options).cluster
        committed.extend(c.conf_changes())
        voters_seen.update(len(conf.voters) for conf in c.confs.values())

    each_seed(run, scenario="raft-membership", nodes=nodes, **options)
    assert len(committed) / len(seeds) > 0, "no membership change committed in any seed"
    if len(seeds) >= 20:                 # (fewer seeds may miss one kind by chance)
        ops = {op for _, op, _, _, _ in committed}
        assert ops == {"add_learner", "promote", "add_voter", "remove"}, ops
        assert any(op == "remove" and node == lead for lead, op, node, _, _ in committed), (
            "no leader removed itself")
        assert len(voters_seen) >= 3, f"the number of voters hardly moved: {voters_seen}"


def test_a_membership_seed_replays_exactly():
    def fingerprint(seed):
        r = run_scenario("raft-membership", seed, nodes=3, steps=20, snapshot_every=10)
        c = r.cluster
        return (c.faults, sorted(c.confs.items()), dict(c.msg_counts), c.totals().bytes_sent, c.readies,
                [(i, c.applied(i), c.kv(i)) for i in c.ids], r.workload.history.to_records())
    first = fingerprint(3)
    assert len(first[1]) > 1, "the replayed run changed no configuration"
    assert first == fingerprint(3)
    assert first != fingerprint(4)


def test_a_seed_replays_exactly():
    def fingerprint(seed):
        r = run_scenario("raft-nemesis", seed, nodes=3, steps=10, snapshot_every=10)
        c = r.cluster
        return (c.faults, dict(c.msg_counts), c.totals().bytes_sent, c.readies,
                [(i, c.applied(i), c.kv(i)) for i in c.ids], r.workload.history.to_records())
    assert fingerprint(3) == fingerprint(3)
    assert fingerprint(3) != fingerprint(4)


# -- the harness: disks, crashes, restarts ----------------------------------------------------

def elected(c: RaftCluster) -> str:
    t = c.run_until_true(lambda: c.stable_leader() is not None, ELECTION_BOUND_MS)
    assert t is not None, f"no leader within {ELECTION_BOUND_MS} ms\n  {c.where()}"
    return c.stable_leader()


def settle(c: RaftCluster, limit_ms: int = 3000) -> None:
    assert c.run_until_true(c.settled, limit_ms) is not None, (
        f"not settled within {limit_ms} ms: (commit, applied, last) "
        f"{[(c.nodes[i].core.commit, c.applied(i), c.log_of(i).last_index) for i in c.ids if c.nodes[i].core]}"
        f"\n  {c.where()}")


def put(c: RaftCluster, k: int, key: str = "k") -> tuple[str, int]:
    placed = c.propose(command(f"t{k}", "put", key, str(k)))
    assert placed is not None, "no leader took the proposal"
    return placed


def test_a_crash_loses_the_unsynced_write_and_a_restart_recovers_from_disk():
    c = RaftCluster(11, n=3, fsync_ms=(40, 40))
    lead = elected(c)
    settle(c)
    follower = next(i for i in c.ids if i != lead)
    node = c.nodes[follower]
    _, index = put(c, 1)
    # the follower got the entry and is syncing it: crash it before the fsync completes
    assert c.run_until_true(lambda: node.syncing is not None and any(
        e.index == index for e in node.syncing.entries), 1000, 1) is not None
    before = node.disk.log.last_index
    c.crash(follower)
    assert node.disk.log.last_index == before < index          # the write is gone
    assert node.disk.writes_lost > 0
    c.restart(follower)
    settle(c)
    assert c.applied(follower) >= index and c.kv(follower) == c.kv(lead)


def test_a_torn_crash_keeps_a_prefix_of_the_unsynced_write():
    kept = set()
    for seed in range(12):
        c = RaftCluster(seed, n=3, fsync_ms=(40, 40))
        lead = elected(c)
        settle(c)
        follower = next(i for i in c.ids if i != lead)
        node = c.nodes[follower]
        for k in range(8):
            put(c, k)
        assert c.run_until_true(lambda: node.syncing is not None and len(node.syncing.entries) >= 2,
                                1000, 1) is not None
        synced = node.disk.log.last_index
        new = [e.index for e in node.syncing.entries]
        c.crash(follower, torn=True)
        last = node.disk.log.last_index
        assert last == synced or last in new
        # a prefix: every entry up to the last one kept is on disk, in order
        assert [e.index for e in node.disk.log.entries] == list(range(node.disk.log.snap_index + 1, last + 1))
        kept.add(last - synced)
        c.restart(follower)
        settle(c)
    assert len(kept) > 1, f"torn crashes always kept {kept} entries"


def test_a_restart_rebuilds_the_state_machine_from_snapshot_and_log():
    c = RaftCluster(5, n=3, snapshot_every=5)
    lead = elected(c)
    for k in range(23):
        put(c, k, key=f"k{k % 4}")
        c.run_for(7)
    settle(c)
    victim = next(i for i in c.ids if i != lead)
    assert c.nodes[victim].disk.snapshot is not None
    want = c.kv(lead)
    c.restart(victim)
    disk = c.nodes[victim].disk
    assert disk.log.snap_index == disk.snapshot.meta.index >= 20      # the log starts after it
    settle(c)
    assert c.kv(victim) == want and c.applied(victim) == c.applied(lead)


def test_a_full_cluster_restart_loses_nothing_acknowledged():
    c = RaftCluster(9, n=5)
    elected(c)
    for k in range(30):
        put(c, k)
        c.run_for(3)
    c.run_for(200)
    acked = c.acknowledged()
    assert len(acked) == 30
    want = c.kv("n0")
    c.restart_all(torn=True)
    settle(c)
    c.check_acknowledged()
    assert all(c.kv(i) == want for i in c.ids)


# -- the checkers fire (hand-made violating histories) ----------------------------------------

WHERE = "seed 7 at 1234 ms; replay: python -m mesh.sim --seed 7 --scenario raft-nemesis"


def checker(**kw) -> RaftChecker:
    return RaftChecker(("a", "b", "c"), where=lambda: WHERE, **kw)


def log_of(*terms: int, snap: tuple[int, int] = (0, 0)) -> LogMirror:
    """A log whose entries after the snapshot point have these terms."""
    log = LogMirror()
    log.snap_index, log.snap_term = snap
    for k, term in enumerate(terms, start=snap[0] + 1):
        log.append(Entry(k, term, EntryKind.NORMAL, f"e{k}.{term}".encode()))
    return log


def fires(prop: str, fn) -> str:
    with pytest.raises(SafetyViolation) as info:
        fn()
    text = str(info.value)
    assert text.startswith(f"{prop} violated"), text
    assert "seed 7 at 1234 ms" in text and "replay: python -m mesh.sim" in text
    return text


def test_election_safety_fires_on_two_leaders_in_one_term():
    chk = checker()
    chk.on_role("a", Role.LEADER, 3)
    chk.on_role("a", Role.LEADER, 3)          # the same leader again: fine
    chk.on_role("b", Role.LEADER, 4)
    text = fires("election safety", lambda: chk.on_role("c", Role.LEADER, 3))
    assert "a and c" in text


def test_vote_safety_fires_on_two_votes_in_one_term():
    chk = checker()
    chk.on_hard_state("a", 2, "b", durable=True)
    chk.on_hard_state("a", 2, "b", durable=True)
    chk.on_hard_state("a", 3, "c", durable=True)
    fires("vote safety", lambda: chk.on_hard_state("a", 2, "c", durable=True))


def test_vote_safety_fires_on_a_grant_that_is_not_durable_or_a_second_grant():
    chk = checker()
    chk.on_grant("a", 2, "b", disk_term=2, disk_vote="b")
    chk.on_grant("a", 2, "b", disk_term=3, disk_vote=None)     # moved on since: still safe
    fires("vote safety", lambda: chk.on_grant("a", 4, "b", disk_term=3, disk_vote=None))
    fires("vote safety", lambda: chk.on_grant("a", 5, "b", disk_term=5, disk_vote=None))
    fires("vote safety", lambda: chk.on_grant("a", 2, "c", disk_term=2, disk_vote="c"))


def test_log_matching_fires_on_different_data_or_prefix_at_one_index_and_term():
    chk = checker()
    e1, e2 = Entry(1, 1, EntryKind.NORMAL, b"x"), Entry(2, 1, EntryKind.NORMAL, b"y")
    c1 = chain_hash(0, e1)
    chk.on_append("a", e1, c1)
    chk.on_append("a", e2, chain_hash(c1, e2))
    chk.on_append("b", e1, c1)
    chk.on_append("b", e2, chain_hash(c1, e2))            # identical logs: fine
    other = Entry(1, 1, EntryKind.NORMAL, b"z")            # same (index, term), other data
    fires("log matching", lambda: chk.on_append("c", other, chain_hash(0, other)))
    # same entry 2, but after a different entry 1: the prefixes differ
    fires("log matching", lambda: chk.on_append("c", e2, chain_hash(chain_hash(0, other), e2)))


def test_leader_completeness_fires_when_a_new_leader_lacks_a_committed_entry():
    chk = checker()
    log = log_of(1, 1)
    for e in log.entries:
        chk.on_apply("a", e, e.index - 1, log, log.chain_at(e.index))
    chk.on_role("b", Role.LEADER, 2)
    chk.on_log("b", log_of(1, 1, 2))                       # has both: fine
    chk.on_role("c", Role.LEADER, 3)
    text = fires("leader completeness", lambda: chk.on_log("c", log_of(1, 2)))
    assert "committed entry 2 (term 1" in text
    # an entry committed after the election is not required of that leader
    chk2 = checker()
    chk2.on_role("c", Role.LEADER, 3)
    e = log.entries[0]
    chk2.on_apply("a", e, 0, log, log.chain_at(1))
    chk2.on_log("c", log_of())
    # a snapshot covering the entry counts as holding it
    chk.on_role("a", Role.LEADER, 4)
    chk.on_log("a", log_of(4, snap=(2, 1)))


def test_truncating_a_committed_entry_fires():
    chk = checker()
    log = log_of(1, 1, 1)
    for e in log.entries[:2]:
        chk.on_apply("a", e, e.index - 1, log, log.chain_at(e.index))
    chk.on_truncate("b", log, 3)                            # entry 3 is not committed: fine
    fires("leader completeness", lambda: chk.on_truncate("b", log, 2))


def test_state_machine_safety_fires_on_different_or_out_of_order_applies():
    chk = checker()
    log = log_of(1, 1)
    e1, e2 = log.entries
    chk.on_apply("a", e1, 0, log, log.chain_at(1))
    chk.on_apply("b", e1, 0, log, log.chain_at(1))
    other = Entry(1, 2, EntryKind.NORMAL, b"other")
    fires("state machine safety", lambda: chk.on_apply("c", other, 0, log_of(2), 99))
    fires("state machine safety", lambda: chk.on_apply("a", e2, 0, log, log.chain_at(2)))   # skips 1
    fires("state machine safety", lambda: chk.on_apply("b", e2, 1, log_of(1, 3), 5))      # its log says term 3
    fires("state machine safety", lambda: chk.on_snapshot(
        "c", SnapshotMeta(1, 5, ConfState(("a",))), None))                               # wrong term
    fires("state machine safety", lambda: chk.on_snapshot(
        "c", SnapshotMeta(1, 1, ConfState(("a",))), 12345))                              # wrong state


def test_durability_fires_when_an_applied_entry_is_not_on_a_majority_of_disks():
    disks = {"a": log_of(1), "b": log_of(), "c": log_of()}
    chk = checker(durable=lambda: disks)
    log = log_of(1, 1)
    e1, e2 = log.entries
    fires("durability", lambda: chk.on_apply("a", e1, 0, log, log.chain_at(1)))
    disks["b"] = log_of(1, 1)
    disks["a"] = log_of(1, 1)
    chk2 = checker(durable=lambda: disks)
    chk2.on_apply("a", e1, 0, log, log.chain_at(1))
    chk2.on_apply("a", e2, 1, log, log.chain_at(2))
    # end to end: an acknowledged proposal must be applied everywhere
    chk2.check_acknowledged([(2, e2.data)], {"a": 2})
    fires("durability", lambda: chk2.check_acknowledged([(2, e2.data)], {"a": 2, "b": 1}))
    fires("durability", lambda: chk2.check_acknowledged([(2, b"something else")], {"a": 2}))


def conf_entry(index: int, voters: str, learners: str = "", term: int = 1) -> Entry:
    """A CONFIG entry; one letter per node id."""
    return Entry(index, term, EntryKind.CONFIG, encode_conf(ConfState(tuple(voters), tuple(learners))))


def log_with(*entries: Entry) -> LogMirror:
    log = LogMirror()
    for e in entries:
        log.append(e)
    return log


def apply_all(chk: RaftChecker, log: LogMirror, upto: int) -> None:
    for e in log.entries[:upto]:
        chk.on_apply("a", e, e.index - 1, log, log.chain_at(e.index))


def test_durability_counts_the_voters_of_the_configuration_in_force_for_each_entry():
    """The initial voters are a, b, c; a and b are a majority of them, but not of the
    voters in force once d and e joined: the old checker (fixed voters) passed this."""
    e = lambda k: Entry(k, 1, EntryKind.NORMAL, f"e{k}".encode())
    log = log_with(conf_entry(1, "abcd"), e(2), conf_entry(3, "abcde"), e(4))
    disks = {n: log_with() for n in "abcde"}
    chk = checker(durable=lambda: disks)
    for n in "abc":
        disks[n] = log_with(*log.entries[:1])
    apply_all(chk, log, 1)                       # entry 1: all of a, b, c (in force: a, b, c)
    for n in "ab":
        disks[n] = log_with(*log.entries[:2])
    # entry 2 on a, b: not a majority of a..d, but of a, b, c, which counted it if it committed
    # together with the change before it (a configuration takes effect when committed)
    apply_all(chk, log, 2)
    for n in "abcd":
        disks[n] = log_with(*log.entries[:3])
    apply_all(chk, log, 3)                       # entry 3: a, b, c, d (in force: a..d)
    for n in "ab":
        disks[n] = log_with(*log.entries[:4])
    chk4 = checker(durable=lambda: disks)
    apply_all(chk4, log, 3)
    text = fires("durability", lambda: chk4.on_apply("a", log.entries[3], 3, log, log.chain_at(4)))
    assert "2 of the 5 voters in force" in text and "a, b, c, d" in text
    disks["c"] = log_with(*log.entries[:4])      # a, b, c: 3 of 5
    chk4.on_apply("a", log.entries[3], 3, log, log.chain_at(4))
    # learners and removed voters never count: c demoted to learner, then b
    log = log_with(conf_entry(1, "ab", "c"), conf_entry(2, "a", "bc"), e(3))
    disks = {n: log_with(*log.entries) for n in "abc"}
    chk = checker(durable=lambda: disks)
    apply_all(chk, log, 2)
    disks["a"] = log_with(*log.entries[:2])      # entry 3 only on b and c (2 of the 3 first voters)
    text = fires("durability", lambda: chk.on_apply("a", log.entries[2], 2, log, log.chain_at(3)))
    assert "0 of the 1 voters in force" in text


def test_configuration_safety_fires_on_a_two_voter_change_or_a_leader_outside_its_configuration():
    chk = checker()
    log = log_with(conf_entry(1, "abcd"), conf_entry(2, "abd", "c"), conf_entry(3, "abde"))
    apply_all(chk, log, 3)                       # one voter at a time (c demoted, then removed)
    assert [len(conf.voters) for conf in chk.confs] == [3, 4, 3, 4]
    bad = log_with(*log.entries, conf_entry(4, "ab"))            # d and e at once
    fires("configuration safety", lambda: chk.on_apply("a", bad.entries[3], 3, bad, bad.chain_at(4)))
    chk2 = checker()
    bad = log_with(conf_entry(1, "abcde"))                       # d and e at once, from a, b, c
    fires("configuration safety", lambda: chk2.on_apply("a", bad.entries[0], 0, bad, bad.chain_at(1)))
    chk3 = checker()
    chk3.on_leader_conf("a", 3, ConfState(("a", "b")))           # a leader that votes: fine
    text = fires("configuration safety", lambda: chk3.on_leader_conf("a", 4, ConfState(("b", "c"), ("a",))))
    assert "a leads term 4" in text


def test_the_checkers_catch_a_removed_leader_that_keeps_leading(monkeypatch):
    """A mutation of the core: the leader whose removal commits does not step down."""
    def apply_conf_and_stay(self, conf):
        self.conf = conf

    monkeypatch.setattr(Raft, "_apply_conf", apply_conf_and_stay)
    c = RaftCluster(1, n=3)
    lead = elected(c)
    assert c.change_membership("remove", lead) is not None
    with pytest.raises(SafetyViolation, match="configuration safety violated"):
        c.run_for(500)


def test_the_checkers_catch_a_driver_that_sends_before_its_fsync(monkeypatch):
    """A mutation of the harness itself: messages leave when the Ready is taken, before the
    write is durable. A follower then acknowledges entries it may lose."""
    import mesh.sim.raft as sim_raft

    taken = sim_raft.RaftCluster._take

    def take_and_send(self, node, rd):
        taken(self, node, rd)
        msgs, rd.messages = rd.messages, []
        for m in msgs:
            self.net.send(node.id, m.dst, "", sim_raft._Packet(m))

    monkeypatch.setattr(sim_raft.RaftCluster, "_take", take_and_send)
    with pytest.raises(SafetyViolation, match="durability violated"):
        run_scenario("raft-nemesis", 0, nodes=5)


# -- known pitfalls and the bugs this harness found, scripted ---------------------------------

def test_figure_8_an_old_term_entry_is_not_committed_by_counting_replicas():
    """Raft paper, figure 8: a leader that commits an entry of an earlier term because a
    majority holds it can see it overwritten by a later leader. Here the old entry E reaches
    a majority while the new leader's no-op does not: E must stay uncommitted, and the
    leader elected next overwrites it (the checkers fire if E was ever applied)."""
    for seed in range(5):
        c = RaftCluster(seed, n=5, config=RaftConfig(max_batch_bytes=1))   # one entry per append
        a = elected(c)
        settle(c)
        b, x, y, z = [i for i in c.ids if i != a]
        # (a) a leads and gets E to b only
        c.partition([a, b], [x, y, z])
        _, e_index = c.propose(command("E", "put", "k", "old"), to=a)
        assert c.run_until_true(lambda: c.log_of(b).last_index >= e_index, 500, 1) is not None
        # (b) a crashes; one of x, y, z leads a newer term and writes its no-op at E's index
        # to its own disk only (appends with entries are dropped), then crashes
        c.crash(a)
        c.drop = lambda m: isinstance(m, Append) and bool(m.entries)
        c.partition([b], [x, y, z])
        assert c.run_until_true(lambda: any(c.nodes[i].core.role is Role.LEADER
                                            and c.nodes[i].disk.log.last_index >= e_index
                                            for i in (x, y, z)), ELECTION_BOUND_MS, 1) is not None
        other = next(i for i in (x, y, z) if c.nodes[i].core.role is Role.LEADER)
        c.crash(other)
        r0, r1 = [i for i in (x, y, z) if i != other]
        # (c) a restarts; a or b leads with r0 and sends it E, but not its own no-op (except
        # in the first probe, which r0 rejects as it lacks E: that makes the leader send E)
        c.restart(a)
        e_term = c.log_of(a).term_at(e_index)
        probes = []

        def hold_back_noop(m):
            if isinstance(m, Append) and m.dst == r0 and any(e.kind == EntryKind.NOOP for e in m.entries):
                probes.append(m)
                return len(probes) > 1
            return False

        c.drop = hold_back_noop
        c.partition([a, b, r0], [r1])
        assert c.run_until_true(lambda: c.leader() in (a, b), ELECTION_BOUND_MS, 1) is not None
        assert c.run_until_true(lambda: c.log_of(r0).term_at(e_index) == e_term, 1000, 1) is not None
        c.run_for(200)
        assert all(c.applied(i) < e_index for i in c.up_ids()), (
            f"seed {seed}: E (term {e_term}) was committed by counting replicas")
        # (d) a and b crash; `other` comes back and only it can win (newest last term)
        c.crash(a)
        c.crash(b)
        c.drop = None
        c.heal()
        c.restart(other)
        assert c.run_until_true(lambda: c.stable_leader([other, r0, r1]) == other,
                                ELECTION_BOUND_MS) is not None
        assert c.run_until_true(lambda: c.log_of(r0).term_at(e_index) != e_term, 1000) is not None
        c.restart(a)
        c.restart(b)
        settle(c, 5000)
        assert c.kv(a).get("k") != "old"


def test_a_quiet_follower_catches_up_after_its_appends_were_lost():
    """Regression (found here in core 2fd2851, fixed in 97a6327): in REPLICATE, heartbeats go at ``pr.match``, which
    always matches, so appends lost in flight are never sent again until a new proposal."""
    c = RaftCluster(1, n=3)
    lead = elected(c)
    put(c, 0)
    settle(c)
    follower = next(i for i in c.ids if i != lead)
    c.drop = lambda m: isinstance(m, Append) and m.dst == follower     # a short one-way cut
    for k in range(1, 4):
        put(c, k)
    c.run_for(30)
    c.drop = None
    settle(c, 20 * CONFIG.heartbeat_ms)


def test_a_lost_snapshot_is_sent_again():
    """Regression (found here in core 2fd2851, fixed in 97a6327): a follower whose InstallSnapshot was lost stays in
    SNAPSHOT progress forever (heartbeats succeed at ``pr.match``; nothing resends)."""
    c = RaftCluster(2, n=3, snapshot_every=10)
    lead = elected(c)
    follower = next(i for i in c.ids if i != lead)
    c.crash(follower)
    for k in range(30):
        put(c, k)
        c.run_for(5)
    c.run_for(100)
    dropped = []

    def drop_first_snapshot(m):
        if isinstance(m, InstallSnapshot) and not dropped:
            dropped.append(m)
            return True
        return False

    c.drop = drop_first_snapshot
    c.restart(follower)
    assert c.run_until_true(lambda: bool(dropped), 2000) is not None
    settle(c, 40 * CONFIG.heartbeat_ms)


def test_a_restarted_leader_can_send_its_snapshot():
    """Regression (found here in core 2fd2851, fixed in 97a6327): a core built from disk knows only the snapshot's
    metadata, and ignores ``compact()`` at that index, so after a restart it has no
    snapshot data to send a follower that needs it, until the app snapshots again."""
    c = RaftCluster(7, n=3, snapshot_every=10)
    lead = elected(c)
    lagging, other = [i for i in c.ids if i != lead]
    c.crash(lagging)
    for k in range(50):
        put(c, k)
        c.run_for(10)
    c.run_for(200)
    c.restart(lead)
    c.restart(other)
    c.restart(lagging)
    settle(c, 5000)


def test_a_transfer_that_times_out_leaves_no_busy_timer():
    """Regression (found here in core 2fd2851, fixed in 97a6327): when a leadership transfer gives up, the transfer
    deadline stays in the past, so ``next_deadline_ms()`` is always due: a busy loop."""
    c = RaftCluster(1, n=3)
    lead = elected(c)
    to = next(i for i in c.ids if i != lead)
    c.isolate(to)
    c.transfer_leadership(to)
    c.run_for(1000)
    assert c.leader() == lead
    assert c.stuck_ticks == 0, f"{c.stuck_ticks} ticks left the leader's deadline in the past"
    assert c.nodes[lead].core.next_deadline_ms() > c.now_ms


def test_a_read_completes_when_its_confirmation_round_loses_a_message():
    """Regression (found here in core 2fd2851, fixed in 97a6327): only the heartbeat sent by ``read_index`` carries the
    read's round; later heartbeats carry none, so a lost reply stalls the read forever
    (unless another read comes). Periodic heartbeats should confirm pending reads."""
    c = RaftCluster(3, n=3)
    lead = elected(c)
    put(c, 1)
    settle(c)
    lost = []

    def lose_first_round(m):     # every reply to the heartbeats read_index sends
        if isinstance(m, AppendResp) and m.ctx == 1 and c.now_ms <= sent_ms + 5:
            lost.append(m)
            return True
        return False

    c.drop = lose_first_round
    got = []
    sent_ms = c.now_ms
    assert c.read("k", got.append, b"read-1") == lead
    c.run_until_true(lambda: bool(got), 10 * CONFIG.heartbeat_ms)
    assert len(lost) == 2, f"the test meant to lose both followers' replies, lost {len(lost)}"
    assert got == [("1",)], f"the read was not served within 10 heartbeats: {got}"


def test_a_rejoining_follower_does_not_depose_a_quiet_leader():
    """Regression (found here in core 2fd2851, fixed in 97a6327): the leader itself grants a pre-vote and then a vote
    to a node coming back with an up-to-date log (leases cover followers only), so in a
    quiet 3-node cluster the node that was cut off takes over at term + 1."""
    for seed in range(10):
        c = RaftCluster(seed, n=3)
        lead = elected(c)
        settle(c)
        term = c.nodes[lead].core.term
        loner = next(i for i in c.ids if i != lead)
        c.isolate(loner)
        c.run_for(ELECTION_BOUND_MS)
        c.heal()
        c.run_for(ELECTION_BOUND_MS)
        assert c.stable_leader() == lead and c.max_term() == term, (
            f"seed {seed}: {loner} deposed {lead}: term {term} -> {c.max_term()}")


def test_a_snapshot_presumed_delivered_does_not_commit_a_divergent_log():
    """Regression (found here in core 97a6327, a safety violation; fixed in 85bdde6): when a snapshot's reply does not
    come within an election timeout, the leader takes a heartbeat reply's *last index* as
    proof the follower has the snapshot (``pr.acked(pending_snapshot)``); heartbeats then
    carry that commit index and the follower commits its own, divergent entries up to it.
    Found by ``python -m mesh.sim --seed 32 --scenario raft-nemesis --nodes 3
    --snapshot-every 5 --steps 40 --fsync-max-ms 10``."""
    c = RaftCluster(6, n=3, snapshot_every=5)
    old = elected(c)
    settle(c)
    rest = [i for i in c.ids if i != old]
    c.partition([old], rest)
    for k in range(30):        # uncommitted, on the old leader only: a long divergent tail
        c.propose(command(f"d{k}", "put", "k", f"d{k}"), to=old)
    new = elected_among(c, rest)
    for k in range(12):        # committed and folded into a snapshot by the new leader
        put(c, k)
        c.run_for(5)
    c.run_for(100)
    assert c.log_of(new).snap_index > c.log_of(old).snap_index
    healed = c.now_ms
    c.drop = lambda m: isinstance(m, InstallSnapshot) and m.dst == old and c.now_ms < healed + 600
    c.heal()
    settle(c, 5000)            # the checkers fire if the old leader applies its own tail


def test_a_follower_whose_ack_was_lost_still_learns_the_commit():
    """Regression (found here in core 97a6327, fixed in 85bdde6): a lost append reply leaves ``pr.match`` one behind;
    heartbeats carry ``min(commit, pr.match)`` and their replies only look for missing
    entries, so in a quiet cluster that follower's commit index (and state machine) stays
    behind forever, and a leadership transfer to it never completes."""
    c = RaftCluster(2, n=3)
    lead = elected(c)
    put(c, 0)
    settle(c)
    follower = next(i for i in c.ids if i != lead)
    lost = []

    def lose_one_ack(m):
        if isinstance(m, AppendResp) and m.src == follower and not lost and m.success \
                and not getattr(m, "heartbeat", False):
            lost.append(m)
            return True
        return False

    c.drop = lose_one_ack
    put(c, 1)
    settle(c, 20 * CONFIG.heartbeat_ms)
    assert lost


def elected_among(c: RaftCluster, ids: list[str]) -> str:
    t = c.run_until_true(lambda: c.stable_leader(ids) is not None, ELECTION_BOUND_MS)
    assert t is not None, f"{ids} elected no leader within {ELECTION_BOUND_MS} ms\n  {c.where()}"
    return c.stable_leader(ids)


def test_a_leader_cut_off_steps_down_within_the_bound():
    c = RaftCluster(4, n=5)
    lead = elected(c)
    cut = c.now_ms
    c.isolate(lead)
    t = c.run_until_true(lambda: c.nodes[lead].core.role is not Role.LEADER, step_down_bound_ms(CONFIG), 1)
    assert t is not None and t - cut <= step_down_bound_ms(CONFIG)


# -- membership changes, scripted ---------------------------------------------------------------

def change(c: RaftCluster, op: str, node: str) -> int:
    """Ask the leader for a membership change until one takes it (one change at a time:
    the one before may still be committing); wait until it commits. Returns its index."""
    deadline = c.now_ms + ELECTION_BOUND_MS
    while (placed := c.change_membership(op, node)) is None:
        assert c.now_ms < deadline, f"no leader took {op} {node}: {dict(c.conf_refused)}\n  {c.where()}"
        c.run_for(20)
    _, index = placed
    conf = c.conf_proposed[-1][4]
    assert c.run_until_true(lambda: index in c.confs, ELECTION_BOUND_MS) is not None, (
        f"{op} {node} at {index} did not commit\n  {c.where()}")
    assert c.confs[index] == conf, f"another configuration committed at {index}: {c.confs[index]}"
    return index


def test_voters_grow_from_3_to_5_and_back_to_3_while_clients_write():
    c = RaftCluster(21, n=3, spares=2)
    elected(c)
    w = Workload(c)
    w.start()
    c.run_for(300)
    walk = [("add_learner", "n3"), ("promote", "n3"), ("add_learner", "n4"), ("promote", "n4"),
            ("remove", None), ("remove", "n0" if c.leader() != "n0" else "n1")]
    removed = []
    for op, node in walk:
        if node is None:
            node = c.leader()        # the leader removes itself
        acked = len(c.acknowledged())
        change(c, op, node)
        if op == "remove":
            removed.append(node)
            assert c.nodes[node].core.role is not Role.LEADER
        c.run_for(300)
        assert len(c.acknowledged()) > acked, f"no write acknowledged after {op} {node}\n  {c.where()}"
    assert [len(conf.voters) for _, conf in sorted(c.confs.items())] == [3, 3, 4, 4, 5, 4, 3]
    assert c.leader() not in removed
    for node in removed:             # the operator stops the removed nodes
        c.crash(node)
    c.run_for(300)
    w.stop()
    settle(c, 5000)
    assert sorted(c.members()) == sorted(set(c.ids) - set(removed))
    c.check_acknowledged()            # every acknowledged write, on every member
    kvs = [c.kv(i) for i in c.members()]
    assert all(kv == kvs[0] for kv in kvs)
    c.run_for(w.timeout_ms)
    res = w.check()
    assert res.ok, res.explanation


def test_a_leader_that_removes_itself_steps_down_and_the_others_carry_on():
    c = RaftCluster(8, n=3)
    lead = elected(c)
    put(c, 0)
    settle(c)
    rest = [i for i in c.ids if i != lead]
    _, index = c.change_membership("remove", lead)
    # it takes nothing after its own removal (see the next test)
    assert c.propose(command("late", "put", "k", "late"), to=lead) is None
    assert c.run_until_true(lambda: index in c.confs, 1000, 1) is not None
    assert c.nodes[lead].core.role is not Role.LEADER and not c.nodes[lead].core.is_voter(lead)
    new = elected_among(c, rest)
    c.crash(lead)                     # the operator stops it
    for k in range(1, 6):
        put(c, k)
        c.run_for(10)
    settle(c)
    assert c.leader() == new and c.committed_conf().voters == tuple(rest)
    c.check_acknowledged()


def test_a_leader_removing_itself_takes_no_entry_after_the_change():
    """Regression (found here in core 5dce037's parent, fixed in 5dce037): a leader that
    proposed its own removal kept taking proposals. Once the change commits it steps down
    with a longer log than the remaining voter; if that voter has not learnt the change
    committed, it still needs the old leader's vote, which refuses it (its log is longer):
    no leader, for good. Found by ``python -m mesh.sim --seed 2 --scenario raft-membership
    --nodes 5 --loss 0.05 --pipeline True --snapshot-every 15 --steps 60 --fsync-max-ms 20
    --spares 1``."""
    c = RaftCluster(4, n=2)
    a = elected(c)
    b = next(i for i in c.ids if i != a)
    put(c, 0)
    settle(c)
    _, j = c.change_membership("remove", a)
    # b hears nothing from a past the change: neither later entries nor that it committed
    c.drop = lambda m: (isinstance(m, Append) and m.src == a and m.dst == b
                        and (m.commit >= j or any(e.index > j for e in m.entries)))
    for k in range(3):
        c.propose(command(f"late{k}", "put", "k", "late"), to=a)
    assert c.run_until_true(lambda: c.nodes[a].core.role is not Role.LEADER, 1000, 1) is not None
    assert c.log_of(a).last_index == j
    assert c.run_until_true(lambda: c.stable_leader([b]) == b, ELECTION_BOUND_MS) is not None, (
        f"{b} was never elected\n  {c.where()}")
    c.drop = None
    # b commits its first entry with a's acknowledgement (it still counts a): only then may
    # a go (with two voters, a removed leader must outlive that, unless b heard the commit)
    assert c.run_until_true(lambda: c.nodes[b].core.conf.voters == (b,), 1000, 1) is not None
    c.crash(a)
    put(c, 1)
    settle(c)
    assert c.committed_conf().voters == (b,)


def test_a_voter_that_has_not_learnt_its_promotion_still_votes():
    """Regression (found here in core 5dce037's parent, fixed in 5dce037): a node that is
    no voter in its own configuration (a learner, or one whose configuration lags) reset its
    election timer without forgetting its leader, so it stayed "in lease" for ever and
    ignored every vote request -- also from the voters of a configuration, committed, that
    made it a voter. Found by ``python -m mesh.sim --seed 5 --scenario raft-membership
    --nodes 3 --steps 40``."""
    c = RaftCluster(6, n=1, spares=1)
    a, s = c.ids
    elected(c)
    change(c, "add_learner", s)
    settle(c)
    _, index = c.change_membership("promote", s)
    assert c.nodes[a].core.commit >= index     # a was the only voter: committed at once
    # s must not learn that its promotion committed: nothing reaches it from now on
    c.drop = lambda m: isinstance(m, Append) and m.dst == s
    # a needs s's vote now; s hears nothing: a steps down (check quorum) and campaigns
    assert c.run_until_true(lambda: c.nodes[a].core.role is not Role.LEADER,
                            step_down_bound_ms(CONFIG) + CONFIG.election_timeout_ms[1], 1) is not None
    c.drop = None
    assert c.nodes[s].core.conf.voters == (a,), "s learnt its promotion: the test missed its point"
    assert c.run_until_true(lambda: c.stable_leader() == a, ELECTION_BOUND_MS) is not None, (
        f"{a} was never elected again: {s} ignores its vote requests\n  {c.where()}")
    settle(c)
    assert c.nodes[s].core.conf.voters == (a, s)


def test_the_reply_that_commits_a_removal_may_come_from_the_node_removed():
    """Regression (found here in core 5dce037's parent, fixed in 5dce037): the append reply
    that commits a configuration without its sender deleted the sender's progress, and the
    leader went on sending to it: KeyError in the core. Found by ``python -m mesh.sim --seed
    1 --scenario raft-membership --nodes 3 --steps 40``."""
    c = RaftCluster(3, n=3)
    lead = elected(c)
    settle(c)
    f, g = [i for i in c.ids if i != lead]
    c.partition([g], [lead, f])       # the removal of f commits with f's own reply
    _, index = c.change_membership("remove", f)
    assert c.run_until_true(lambda: index in c.confs, 1000, 1) is not None
    c.heal()
    put(c, 1)
    settle(c)
    assert c.members() == sorted([lead, g])


def test_a_member_added_to_a_quiet_cluster_gets_the_log():
    """Regression (found here in core 5dce037's parent, fixed in 5dce037): the progress of a
    member added by a committed configuration started past the leader's last entry, so
    nothing was sent to it until the next proposal. Found by ``python -m mesh.sim --seed 92
    --scenario raft-membership --nodes 3 --steps 40``."""
    c = RaftCluster(5, n=3, spares=1)
    lead = elected(c)
    for k in range(10):
        put(c, k)
    settle(c)
    change(c, "add_learner", "n3")
    settle(c, 20 * CONFIG.heartbeat_ms)     # no proposal after the change
    assert c.kv("n3") == c.kv(lead)


def test_entries_a_removed_voter_never_acknowledged_commit_once_it_is_gone():
    """Regression (found here in core d47954b's parent, fixed in d47954b): entries appended
    while a voter's removal was committing waited, once it committed, for the next proposal
    to be counted by the new (smaller) majority. Found by ``python -m mesh.sim --seed 298
    --scenario raft-membership --nodes 3 --snapshot-every 5 --steps 40 --fsync-max-ms 10``."""
    c = RaftCluster(2, n=2)
    a = elected(c)
    b = next(i for i in c.ids if i != a)
    put(c, 0)
    settle(c)
    j = []
    c.drop = lambda m: (isinstance(m, Append) and m.dst == b and bool(j)
                        and any(e.index > j[0] for e in m.entries))
    _, index = c.change_membership("remove", b)
    j.append(index)
    _, x = put(c, 1)                  # b never gets it
    assert c.run_until_true(lambda: index in c.confs, 1000, 1) is not None
    assert c.run_until_true(lambda: c.applied(a) >= x, 4 * CONFIG.heartbeat_ms, 1) is not None, (
        f"entry {x} needs only {a} now, but is not committed")


def test_a_restart_that_lost_its_commit_index_keeps_the_configuration_its_log_proves():
    """Regression (found here in core 5dce037, a safety violation; fixed in d47954b): a
    follower got two configuration entries (+d, then +e) and the commit index in one Ready
    and crashed with the entries written but not the hard state. Restarted, it took the
    configuration of its stale commit index, a, b, c: two changes behind a, b, c, d, e. With
    b it was a majority of that and won an election without the entries c, d, e had
    committed (leader completeness violated). A configuration entry proves the one before it
    committed, so the restarted core keeps a, b, c, d, whose majority needs c or d."""
    c = RaftCluster(1, n=3, spares=2, fsync_ms=(20, 20))
    lead = elected(c)
    a, b = [i for i in c.ids[:3] if i != lead]
    d, e = c.spares
    c.partition([a], [b, lead, d, e])
    put(c, 0)
    change(c, "add_voter", d)
    change(c, "add_voter", e)
    c.run_for(200)
    c.partition([b], [a, lead, d, e])  # a hears the leader again (and gets both changes), b does not
    node = c.nodes[a]
    assert c.run_until_true(lambda: node.syncing is not None and node.syncing.hard_state is not None
                            and node.syncing.entries, 2000, 1) is not None
    ops = persistence_ops(node.syncing)
    assert ops[-1][0] == "hard_state"
    c.crash(a, keep=len(ops) - 1)      # torn: every entry written, not the hard state
    assert node.disk.log.last_index >= max(c.confs) > node.disk.hard_state.commit
    for k in range(1, 6):              # committed by lead, d, e
        put(c, k)
        c.run_for(20)
    c.run_for(300)
    c.partition([a, b], [lead, d, e])
    c.restart(a)
    assert len(c.nodes[a].core.conf.voters) >= 4
    c.run_for(ELECTION_BOUND_MS)       # the checkers fire if a (or b) leads without them
    assert c.leader() == lead
    c.heal()
    settle(c, 5000)
    c.check_acknowledged()


def test_a_configuration_no_node_could_decode_is_refused():
    """Regression (found reading the core for this harness; fixed in 0622509): the core took a
    configuration whose id is both voter and learner (or appears twice); every node's
    decode_conf raises when that entry commits, on every restart too: the group is dead."""
    c = RaftCluster(2, n=3)
    lead = elected(c)
    settle(c)
    core = c.nodes[lead].core
    for bad in (ConfState(core.conf.voters, (core.conf.voters[0],)), ConfState(core.conf.voters + (lead,))):
        with pytest.raises(ValueError, match="not a valid configuration"):
            core.propose_conf_change(bad, c.now_ms)
    put(c, 1)
    settle(c)
