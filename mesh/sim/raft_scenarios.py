"""The Raft scenarios that ``tests/sim/test_raft.py`` runs and ``python -m mesh.sim --scenario
raft-*`` replays, byte for byte.

``raft-election``, ``raft-replication``, ``raft-restart`` and ``raft-partition`` script one
fault each; ``raft-nemesis`` mixes every fault at random for ``--steps`` steps;
``raft-membership`` is ``raft-nemesis`` plus membership changes at the leader, with
``--spares`` nodes outside the initial configuration of ``--nodes`` voters."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from mesh.raft.config import RaftConfig
from mesh.raft.messages import Role
from mesh.sim.network import NetworkConfig
from mesh.sim.raft import RaftCluster, command
from mesh.sim.raft_workload import Workload


# -- scenarios: what tests/sim/test_raft.py runs and ``python -m mesh.sim`` replays ------------

def election_bound_ms(config: RaftConfig) -> int:
    """How long a cluster may take to elect a leader: 10 maximal election timeouts (a
    split vote costs one more timeout; pre-vote adds a round trip, not a timeout)."""
    return 10 * config.election_timeout_ms[1]


def step_down_bound_ms(config: RaftConfig) -> int:
    """How long a leader cut off from its quorum may keep leading with check_quorum: the
    quorum check runs every ``election_timeout_ms[0]``; the first one after the cut may still
    count replies from before it, the second cannot (plus a heartbeat of slack)."""
    return 2 * config.election_timeout_ms[0] + config.heartbeat_ms


@dataclass(frozen=True, slots=True)
class ScenarioOptions:
    """What a scenario varies; the CLI flags of ``python -m mesh.sim --scenario raft-*``."""
    nodes: int = 5
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    pipeline: bool = False
    snapshot_every: int = 0
    steps: int = 25
    fsync_max_ms: int = 3
    spares: int = 2
    """Nodes outside the initial configuration (``raft-membership`` only)."""


SCENARIO_DEFAULTS = ScenarioOptions()


def replay_command(seed: int, scenario: str, nodes: int, **options: object) -> str:
    """The command that replays a scenario (the format of ``mesh.sim.__main__``'s)."""
    extra = "".join(f" --{name.replace('_', '-')} {value}" for name, value in options.items())
    return f"python -m mesh.sim --seed {seed} --scenario {scenario} --nodes {nodes}{extra}"


class ScenarioReport:
    """The summary lines of a scenario run, with the cluster and the workload it used."""

    def __init__(self, cluster: RaftCluster) -> None:
        self.cluster = cluster
        self.workload: Workload | None = None
        self.lines: list[str] = []

    def line(self, label: str, text: str) -> None:
        self.lines.append(f"{label:<11}{text}")


def _elect(c: RaftCluster, r: ScenarioReport, among: Iterable[str] | None = None) -> str:
    bound = election_bound_ms(c.config)
    start = c.now_ms
    t = c.run_until_true(lambda: c.stable_leader(among) is not None, bound)
    assert t is not None, (f"no single leader that every node follows within {bound} ms "
                           f"(10 x election_timeout_max); leaders: {c.leaders()}\n  {c.where()}")
    lead = c.stable_leader(among)
    r.line("election", f"{lead} leads term {c.nodes[lead].core.term} after {t - start} ms")
    return lead


def _settle(c: RaftCluster, r: ScenarioReport, limit_ms: int = 20_000) -> None:
    """End the faults; with the clients still running, wait until every node has applied
    what was acknowledged; stop them, wait until the logs converge; check durability and
    (with a workload) linearizability."""
    w = r.workload
    c.recover()
    start = c.now_ms
    target = max((p.index for p in c.acknowledged()), default=0)
    t = c.run_until_true(lambda: c.stable_leader(c.members()) is not None
                         and min(c.applied(i) for i in c.members()) >= target, limit_ms)
    assert t is not None, (f"after the faults ended, the members {c.members()} did not all apply "
                           f"the {len(c.acknowledged())} acknowledged entries (up to {target}) "
                           f"within {limit_ms} ms: applied {[c.applied(i) for i in c.ids]}, "
                           f"leaders {c.leaders()}\n  {c.where()}")
    if w is not None:
        w.stop()
    t2 = c.run_until_true(c.settled, limit_ms)
    assert t2 is not None, (f"the logs did not converge within {limit_ms} ms of a quiet cluster: "
                            f"(commit, applied, last) "
                            f"{[(c.nodes[i].core.commit, c.applied(i), c.nodes[i].log.last_index) for i in c.members()]}"
                            f", leaders {c.leaders()}\n  {c.where()}")
    members = c.members()
    r.line("settle", f"caught up {t - start} ms after the faults ended; converged at index "
                     f"{c.nodes[members[0]].log.last_index} after {t2 - start} ms")
    c.check_acknowledged()
    kvs = {i: c.kv(i) for i in members}
    assert all(kv == kvs[members[0]] for kv in kvs.values()), f"state machines differ: {kvs}"
    r.line("durable", f"{len(c.acknowledged())} acknowledged proposals applied on every "
                      f"{'member' if c.spares or len(c.confs) > 1 else 'node'}")
    if w is not None:
        c.run_for(w.timeout_ms)     # every operation still in flight ends
        res = w.check()
        assert res.ok, f"{res.explanation}\n  {c.where()}"
        r.line("linearize", f"{res.explanation} ({dict(w.counts)})")


def scenario_election(c: RaftCluster, r: ScenarioReport) -> None:
    """Elect one leader within the bound; with no loss it keeps leading for 2 s."""
    lead = _elect(c, r)
    term = c.nodes[lead].core.term
    c.run_for(2000)
    if c.net.config.loss == 0:
        assert c.stable_leader() == lead and c.max_term() == term, (
            f"the leader changed without faults: {lead} (term {term}) -> {c.leaders()} "
            f"(term {c.max_term()})\n  {c.where()}")
    r.line("terms", f"{len(c.checker.leaders) if c.checker else '?'} terms had a leader")


def scenario_replication(c: RaftCluster, r: ScenarioReport) -> None:
    """Clients write; the leader crashes; a new one is elected and commits continue; the old
    one restarts and catches up; every node applies the same sequence."""
    _elect(c, r)
    w = r.workload = Workload(c)
    w.start()
    c.run_for(2000)
    before = len(c.acknowledged())
    assert before > 0, f"nothing committed in 2 s\n  {c.where()}"
    old = c.leader()
    c.crash(old)
    new = _elect(c, r, among=c.up_ids())
    assert new != old
    c.run_for(2000)
    after = len(c.acknowledged())
    assert after > before, f"no commits after the new leader {new} took over\n  {c.where()}"
    r.line("commits", f"{before} acknowledged before {old} crashed, {after - before} after")
    c.restart(old)
    _settle(c, r)


def scenario_restart(c: RaftCluster, r: ScenarioReport) -> None:
    """Clients write while minorities crash (some writes torn) and restart, then the whole
    cluster crashes and restarts: nothing acknowledged is lost."""
    _elect(c, r)
    w = r.workload = Workload(c)
    w.start()
    rng = c.world.rng("scenario")
    minority = (len(c.ids) - 1) // 2
    for _ in range(3):
        c.run_for(rng.randint(300, 800))
        for victim in rng.sample(c.ids, minority):
            c.crash(victim, torn=rng.random() < 0.5)
        c.run_for(rng.randint(300, 800))
        for victim in c.down_ids():
            c.restart(victim)
    c.run_for(500)
    acked = len(c.acknowledged())
    c.restart_all(torn=True)
    r.line("restarts", f"3 minority crash rounds, then all {len(c.ids)} nodes; {acked} "
                       f"acknowledged before the full restart")
    _settle(c, r)


def scenario_partition(c: RaftCluster, r: ScenarioReport) -> None:
    """A leader cut off with a minority cannot commit and steps down (check_quorum); after
    the heal its uncommitted entries are replaced and the logs converge. Then pre-vote: a
    follower cut off alone for a long time and back does not disrupt the leader."""
    cfg = c.config
    lead = _elect(c, r)
    term = c.nodes[lead].core.term
    others = [i for i in c.ids if i != lead]
    minority = [lead] + others[: (len(c.ids) - 1) // 2 - 1]
    majority = [i for i in c.ids if i not in minority]
    cut_at = c.now_ms
    c.partition(minority, majority)
    placed = [c.propose(command(f"m{k}", "put", "minority", str(k)), to=lead) for k in range(5)]
    assert all(p is not None for p in placed), "the old leader refused proposals at once"
    bound = step_down_bound_ms(cfg)
    t = c.run_until_true(lambda: c.nodes[lead].core.role is not Role.LEADER, bound, 1)
    assert t is not None, f"{lead} still leads {bound} ms after losing its quorum\n  {c.where()}"
    new = _elect(c, r, among=majority)
    c.run_for(1000)
    mine = [p for p in c.proposals if p.node == lead]
    assert not any(p.status == "acked" for p in mine), (
        f"a minority leader acknowledged {[p.index for p in mine if p.status == 'acked']}\n  {c.where()}")
    r.line("minority", f"{lead} (+{len(minority) - 1}) stepped down {t - cut_at} ms after the cut "
                       f"(bound {bound}); {new} leads the majority; 5 proposals unacknowledged")
    c.heal()
    _settle(c, r)
    # none of them took effect anywhere (the proposer cannot tell "lost" from "unknown" on
    # its own: an entry cut from its log may survive elsewhere, see RaftCluster._dropping)
    ended = [p.status for p in mine]
    assert "acked" not in ended, f"minority proposals ended {ended}"
    assert all("minority" not in c.kv(i) for i in c.ids), f"a minority write took effect: {c.where()}"
    # pre-vote
    lead = c.stable_leader()
    term = c.nodes[lead].core.term
    loner = next(i for i in c.ids if i != lead)
    c.isolate(loner)
    c.run_for(election_bound_ms(cfg))
    loner_term = c.nodes[loner].core.term
    c.heal()
    c.run_for(election_bound_ms(cfg))
    assert loner_term == term, f"{loner} cut off alone raised its term {term} -> {loner_term}"
    assert c.stable_leader() == lead and c.max_term() == term, (
        f"{loner} rejoining disrupted the leader: {lead} term {term} -> {c.leaders()} term "
        f"{c.max_term()}\n  {c.where()}")
    r.line("pre-vote", f"{loner} cut off {election_bound_ms(cfg)} ms stayed at term {term}; "
                       f"{lead} still leads after it rejoined")


def scenario_nemesis(c: RaftCluster, r: ScenarioReport, steps: int = 25) -> None:
    """Clients write and read while the nemesis mixes every fault (crashes clean and torn,
    full restarts, partitions, one-way cuts, lossy spells, leadership transfers); every
    checker runs at every event; then the faults end and everything must converge."""
    w = r.workload = Workload(c)
    w.start()
    c.nemesis(steps, transfer=True)
    r.line("nemesis", f"{len(c.faults)} faults over {c.now_ms} ms; "
                      f"{len(c.checker.leaders) if c.checker else '?'} terms had a leader; "
                      f"{c.snapshots_taken} snapshots taken")
    _settle(c, r)
    assert c.stuck_ticks == 0, (f"{c.stuck_ticks} ticks left their core's deadline in the past "
                                f"(a timer that never moves on)\n  {c.where()}")


def scenario_membership(c: RaftCluster, r: ScenarioReport, steps: int = 25) -> None:
    """The nemesis of ``raft-nemesis`` plus membership changes through the core's API at
    the leader, one at a time: spares join as learners and are promoted or join as voters,
    voters (the leader too) are removed; the voters walk between 1 and 5, mostly 3..5. Every
    checker runs at every event, then everything must converge on the members of the last
    configuration committed."""
    w = r.workload = Workload(c)
    w.start()
    c.nemesis(steps, transfer=True, membership=True)
    changes = len(c.confs) - 1
    refused = ", ".join(f"{k} {v}" for k, v in sorted(c.conf_refused.items())) or "none"
    r.line("nemesis", f"{len(c.faults)} faults over {c.now_ms} ms; "
                      f"{len(c.checker.leaders) if c.checker else '?'} terms had a leader; "
                      f"{c.snapshots_taken} snapshots taken")
    r.line("membership", f"{changes} changes committed (voters "
                         f"{' -> '.join(str(len(x.voters)) for _, x in sorted(c.confs.items()))}); "
                         f"refused: {refused}")
    _settle(c, r)
    conf = c.committed_conf()
    r.line("members", f"voters {', '.join(conf.voters)}; learners {', '.join(conf.learners) or 'none'}")
    assert c.stuck_ticks == 0, (f"{c.stuck_ticks} ticks left their core's deadline in the past "
                                f"(a timer that never moves on)\n  {c.where()}")


SCENARIOS: dict[str, Callable[..., None]] = {
    "raft-election": scenario_election, "raft-replication": scenario_replication,
    "raft-restart": scenario_restart, "raft-partition": scenario_partition,
    "raft-nemesis": scenario_nemesis, "raft-membership": scenario_membership,
}
STEPPED = ("raft-nemesis", "raft-membership")
"""The scenarios that take ``steps`` (nemesis faults)."""


def build_cluster(seed: int, scenario: str, opts: ScenarioOptions) -> RaftCluster:
    """The cluster a scenario runs on, its replay command set."""
    options = {k: getattr(opts, k) for k in ScenarioOptions.__slots__
               if k != "nodes" and getattr(opts, k) != getattr(SCENARIO_DEFAULTS, k)}
    if scenario != "raft-membership":
        options.pop("spares", None)
    net = NetworkConfig(loss=opts.loss, duplicate=opts.duplicate, reorder=opts.reorder)
    return RaftCluster(seed, n=opts.nodes, net=net, fsync_ms=(min(1, opts.fsync_max_ms), opts.fsync_max_ms),
                       pipeline=opts.pipeline,
                       snapshot_every=opts.snapshot_every,
                       spares=opts.spares if scenario == "raft-membership" else 0,
                       replay=replay_command(seed, scenario, opts.nodes, **options))


def run_scenario(scenario: str, seed: int, **options: object) -> ScenarioReport:
    """Run one scenario; raises AssertionError (naming the seed and the replay command) if it
    does not end as it should."""
    opts = ScenarioOptions(**options)
    c = build_cluster(seed, scenario, opts)
    r = ScenarioReport(c)
    fn = SCENARIOS[scenario]
    if scenario in STEPPED:
        fn(c, r, steps=opts.steps)
    else:
        fn(c, r)
    return r


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def main(argv: list[str]) -> int:
    """``python -m mesh.sim --scenario raft-* ...``: run one Raft scenario, print a summary."""
    import argparse
    import sys

    d = SCENARIO_DEFAULTS
    p = argparse.ArgumentParser(prog="python -m mesh.sim",
                                description="Replay a deterministic simulated Raft run from its seed.")
    p.add_argument("--seed", type=int, default=0, help="the seed that sets every random choice")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), required=True, help="what happens")
    p.add_argument("--nodes", type=int, default=d.nodes, help=f"cluster size (default {d.nodes})")
    p.add_argument("--loss", type=float, default=d.loss, help="probability a message is lost")
    p.add_argument("--duplicate", type=float, default=d.duplicate, help="probability of a duplicate")
    p.add_argument("--reorder", type=float, default=d.reorder,
                   help="probability a message is held back up to 50 ms more")
    p.add_argument("--pipeline", type=_flag, default=d.pipeline,
                   help="step the core while a Ready is being synced (default False: block)")
    p.add_argument("--snapshot-every", type=int, default=d.snapshot_every,
                   help="applied entries between two snapshots (0: never)")
    p.add_argument("--steps", type=int, default=d.steps,
                   help="nemesis faults (raft-nemesis, raft-membership)")
    p.add_argument("--spares", type=int, default=d.spares,
                   help=f"nodes outside the initial configuration, for raft-membership to add "
                        f"(default {d.spares})")
    p.add_argument("--fsync-max-ms", type=int, default=d.fsync_max_ms,
                   help=f"each fsync takes 1 to this many ms (default {d.fsync_max_ms}; 0: none)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every fault as well")
    p.add_argument("--trace", action="store_true",
                   help="print every message, sync, apply and fault (long)")
    args = p.parse_args(argv)
    opts = ScenarioOptions(args.nodes, args.loss, args.duplicate, args.reorder, args.pipeline,
                           args.snapshot_every, args.steps, args.fsync_max_ms, args.spares)
    c = build_cluster(args.seed, args.scenario, opts)
    if args.trace:
        c.trace = []
    r = ScenarioReport(c)
    ok, error = True, ""
    try:
        fn = SCENARIOS[args.scenario]
        fn(c, r, steps=opts.steps) if args.scenario in STEPPED else fn(c, r)
    except AssertionError as exc:
        ok, error = False, str(exc)
    t = c.totals()
    drops = ", ".join(f"{k} {v}" for k, v in sorted(t.dropped.items())) or "none"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(c.msg_counts.items()))
    out = [f"mesh.sim raft  seed {args.seed}  nodes {args.nodes}  scenario {args.scenario}",
           f"network    loss {opts.loss:g}, duplicate {opts.duplicate:g}, reorder {opts.reorder:g}; "
           f"fsync {c.fsync_ms[0]}..{c.fsync_ms[1]} ms, pipeline {opts.pipeline}, "
           f"snapshot every {opts.snapshot_every or 'never'}"] + r.lines
    out.append(f"{'traffic':<11}{t.msgs_sent} messages ({kinds}), {t.bytes_sent} bytes; dropped: {drops}")
    out.append(f"{'driver':<11}{c.readies} Readies, {sum(n.disk.syncs for n in c.nodes.values())} fsyncs, "
               f"{c.stuck_ticks} stuck ticks, {c.inbox_dropped} inbox drops, "
               f"{c.checker.checks if c.checker else 0} checks")
    if error:
        out.append(f"{'error':<11}{error}")
    out.append(f"{'result':<11}{'OK' if ok else 'FAILED'} at {c.now_ms} ms")
    out.append(f"{'replay':<11}{c.replay}")
    if args.verbose:
        out += ["", f"faults ({len(c.faults)})"] + [f"  {f}" for f in c.faults]
    if c.trace is not None:
        out += ["", f"trace ({len(c.trace)} lines)"] + c.trace
    sys.stdout.write("\n".join(out) + "\n")
    return 0 if ok else 1
