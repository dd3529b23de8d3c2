"""Replay one simulated SWIM run from its seed: ``python -m mesh.sim --seed N --scenario X``.

Theory of operation
-------------------
A scenario builds a :class:`~mesh.sim.swim.SwimCluster` from the seed and the options, drives
it through fixed phases (join, fault, recovery), waits for each phase's condition for at most
``--periods`` protocol periods, and prints one screen: how long each phase took (in protocol
periods and virtual ms), traffic per node per period, false alarms, and whether the views
converged. ``-v`` adds the transcript of every membership event.

The text depends only on the options: no wall-clock time, no ids of objects, no unordered
iteration; the same command prints the same bytes on every run, which is what makes a seed
printed by a failing test worth replaying. Exit status 0 when the scenario ended as it
should (views converged, the fault detected), 1 otherwise.

Scenarios (the fault hits a random non-seed node, chosen from the ``"scenario"`` stream):

- ``converge``  every node joins at time 0; then a quiet stretch of ``--periods`` periods.
- ``crash``     converge, crash one node, time until every live node holds it DEAD.
- ``loss``      as ``crash``, on a network losing ``--loss`` (default 10 %) of messages,
                after a quiet stretch that counts false suspicions.
- ``partition`` converge, split the cluster in two halves until each side holds the other
                DEAD, heal, time until the views converge again.
- ``rejoin``    converge, crash one node, wait for its detection, restart it (incarnation 0),
                time until every node holds it ALIVE again.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from mesh.sim.network import NetworkConfig
from mesh.sim.swim import GONE, SwimCluster, Traffic
from mesh.swim.config import SwimConfig
from mesh.swim.messages import EventKind, State

SCENARIOS = ("converge", "crash", "loss", "partition", "rejoin")
DEFAULT_LOSS = {"loss": 0.1}


def replay_command(seed: int, scenario: str, nodes: int, **options: object) -> str:
    """The one command that replays a run: what a failing test prints beside its seed.
    ``options`` are further flags, e.g. ``loss=0.2`` -> ``--loss 0.2``."""
    extra = "".join(f" --{name.replace('_', '-')} {value}" for name, value in options.items())
    return f"python -m mesh.sim --seed {seed} --scenario {scenario} --nodes {nodes}{extra}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mesh.sim",
        description="Replay a deterministic simulated SWIM run from its seed and summarize it.")
    p.add_argument("--seed", type=int, default=0, help="the seed that sets every random choice")
    p.add_argument("--nodes", type=int, default=50, help="cluster size (default 50)")
    p.add_argument("--scenario", choices=SCENARIOS, default="converge",
                   help="what happens to the cluster (default converge)")
    p.add_argument("--periods", type=int, default=120,
                   help="limit of each waiting phase, and length of quiet stretches, in "
                        "protocol periods (default 120)")
    p.add_argument("--seed-nodes", type=int, default=1, metavar="K",
                   help="how many of the first nodes the others join through (default 1)")
    p.add_argument("--loss", type=float, default=None,
                   help="probability a message is lost (default 0; 0.1 for --scenario loss)")
    p.add_argument("--duplicate", type=float, default=0.0, help="probability of a duplicate")
    p.add_argument("--reorder", type=float, default=0.0,
                   help="probability a message is held back up to 50 ms more")
    p.add_argument("--latency-ms", type=float, default=1.0, help="fixed one-way delay")
    p.add_argument("--jitter-ms", type=float, default=1.0, help="mean random extra delay")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print every membership event as well")
    return p


class _Report:
    """Collects the summary lines; phase timings are printed in periods and ms."""

    def __init__(self, cluster: SwimCluster) -> None:
        self.cluster = cluster
        self.lines: list[str] = []
        self.ok = True
        self.traffic: Traffic | None = None
        self.transcript: list[str] = []

    def line(self, label: str, text: str) -> None:
        self.lines.append(f"{label:<11}{text}")

    def fault(self, label: str, text: str) -> None:
        """A summary line that is also a mark in the transcript, where the fault happened."""
        self.line(label, text)
        self.transcript.append(f"{self.cluster.now_ms:>8} ms  --- {label} {text}")

    def span(self, label: str, what: str, ms: int | None, limit_ms: int) -> None:
        period = self.cluster.config.probe_interval_ms
        if ms is None:
            self.ok = False
            self.line(label, f"{what}: NOT within {limit_ms / period:.0f} periods ({limit_ms} ms)")
        else:
            self.line(label, f"{what} after {ms / period:6.1f} periods ({ms:>6} ms)")


def _wait(cluster: SwimCluster, pred: Callable[[], bool], limit_ms: int) -> int | None:
    """Run until ``pred``; how long it took, or None."""
    start = cluster.now_ms
    t = cluster.run_until_true(pred, limit_ms)
    return None if t is None else t - start


def _join(cluster: SwimCluster, r: _Report, limit_ms: int) -> None:
    r.span("join", f"{len(cluster.live_ids())} nodes converged",
           _wait(cluster, cluster.converged, limit_ms), limit_ms)


def _victim(cluster: SwimCluster) -> str:
    candidates = cluster.live_ids()[cluster.seeds:] or cluster.live_ids()
    return candidates[cluster.world.rng("scenario").randrange(len(candidates))]


def _crash_and_detect(cluster: SwimCluster, r: _Report, limit_ms: int) -> tuple[str, int]:
    victim = _victim(cluster)
    crashed_at = cluster.now_ms
    cluster.crash(victim)
    r.fault("crash", f"{victim} at {crashed_at} ms")
    detected = _wait(cluster, lambda: cluster.detection_ms(victim, crashed_at) is not None, limit_ms)
    suspected = next((ob.time_ms - crashed_at for ob in cluster.events
                      if ob.member == victim and ob.time_ms >= crashed_at
                      and ob.kind in (EventKind.SUSPECT, EventKind.DEAD)), None)
    r.span("suspect", f"first suspicion of {victim}", suspected, limit_ms)
    r.span("detect", f"every live node holds {victim} DEAD", detected, limit_ms)
    return victim, crashed_at


def scenario_converge(cluster: SwimCluster, r: _Report, limit_ms: int) -> None:
    _join(cluster, r, limit_ms)
    quiet_from = cluster.now_ms
    mark = cluster.mark()
    cluster.run_for(limit_ms)
    r.traffic = cluster.traffic_since(mark)
    _false_alarms(cluster, r, quiet_from, exclude=())


def scenario_crash(cluster: SwimCluster, r: _Report, limit_ms: int) -> None:
    _join(cluster, r, limit_ms)
    mark = cluster.mark()
    victim, crashed_at = _crash_and_detect(cluster, r, limit_ms)
    r.span("reconverge", "views converged", _wait(cluster, cluster.converged, limit_ms), limit_ms)
    r.traffic = cluster.traffic_since(mark)
    _false_alarms(cluster, r, crashed_at, exclude=(victim,))


def scenario_loss(cluster: SwimCluster, r: _Report, limit_ms: int) -> None:
    _join(cluster, r, limit_ms)
    quiet_from = cluster.now_ms
    mark = cluster.mark()
    cluster.run_for(limit_ms)
    r.line("quiet", f"{limit_ms // cluster.config.probe_interval_ms} periods at loss "
                    f"{cluster.net.config.loss}")
    _false_alarms(cluster, r, quiet_from, exclude=())
    victim, crashed_at = _crash_and_detect(cluster, r, limit_ms)
    r.span("reconverge", "views converged", _wait(cluster, cluster.converged, limit_ms), limit_ms)
    r.traffic = cluster.traffic_since(mark)


def scenario_partition(cluster: SwimCluster, r: _Report, limit_ms: int) -> None:
    _join(cluster, r, limit_ms)
    live = cluster.live_ids()
    side_a = sorted(cluster.world.rng("scenario").sample(live, len(live) // 2),
                    key=live.index)
    in_a = set(side_a)
    side_b = [i for i in live if i not in in_a]
    mark = cluster.mark()
    cluster.partition(side_a)
    r.fault("partition", f"{len(side_a)} | {len(side_b)} nodes at {cluster.now_ms} ms")

    # converged() judges every live node by one expectation; here each side has its own.
    def side_sees(side: list[str], other: list[str]) -> bool:
        for obs in side:
            for member in side:
                if member != obs and cluster.sees(obs, member) is not State.ALIVE:
                    return False
            for member in other:
                if cluster.sees(obs, member) not in GONE:
                    return False
        return True

    r.span("split", "each side holds the other DEAD",
           _wait(cluster, lambda: side_sees(side_a, side_b) and side_sees(side_b, side_a), limit_ms),
           limit_ms)
    cluster.heal()
    r.fault("heal", f"at {cluster.now_ms} ms")
    r.span("reconverge", "views converged", _wait(cluster, cluster.converged, limit_ms), limit_ms)
    r.traffic = cluster.traffic_since(mark)


def scenario_rejoin(cluster: SwimCluster, r: _Report, limit_ms: int) -> None:
    _join(cluster, r, limit_ms)
    mark = cluster.mark()
    victim, crashed_at = _crash_and_detect(cluster, r, limit_ms)
    cluster.restart(victim)
    r.fault("restart", f"{victim} at {cluster.now_ms} ms, incarnation 0")
    r.span("rejoin", f"every node holds {victim} ALIVE",
           _wait(cluster, cluster.converged, limit_ms), limit_ms)
    seen = sorted({cluster.view(i).get(victim, (None, -1))[1] for i in cluster.live_ids()
                   if i != victim})
    r.line("", f"{victim} is at incarnation {cluster.nodes[victim].core.incarnation}; "
               f"others hold {seen}")
    r.traffic = cluster.traffic_since(mark)


def _false_alarms(cluster: SwimCluster, r: _Report, since_ms: int, exclude: tuple[str, ...]) -> None:
    fa = cluster.false_suspicions(since_ms, exclude=exclude)
    # One suspicion is seen by every member: count the distinct ones as well.
    distinct = len({(ob.member, ob.incarnation) for ob in cluster.events
                    if ob.time_ms >= since_ms and ob.kind is EventKind.SUSPECT
                    and ob.member not in exclude})
    r.line("alarms", f"{distinct} live nodes wrongly suspected ({fa[EventKind.SUSPECT]} SUSPECT "
                     f"observations), {fa[EventKind.DEAD]} DEAD observations of live nodes")


RUNNERS = {
    "converge": scenario_converge, "crash": scenario_crash, "loss": scenario_loss,
    "partition": scenario_partition, "rejoin": scenario_rejoin,
}


def report(argv: list[str] | None = None) -> tuple[str, bool]:
    """Run the scenario the arguments describe; return its summary text and whether it
    ended as it should."""
    args = build_parser().parse_args(argv)
    loss = args.loss if args.loss is not None else (DEFAULT_LOSS["loss"] if args.scenario == "loss" else 0.0)
    net = NetworkConfig(latency_ms=args.latency_ms, jitter_ms=args.jitter_ms, loss=loss,
                        duplicate=args.duplicate, reorder=args.reorder)
    config = SwimConfig()
    cluster = SwimCluster(args.seed, n=args.nodes, config=config, net=net, seeds=args.seed_nodes)
    limit_ms = args.periods * config.probe_interval_ms
    r = _Report(cluster)
    if args.verbose:
        cluster.on_event = lambda ob: r.transcript.append(str(ob))
    RUNNERS[args.scenario](cluster, r, limit_ms)

    head = [
        f"mesh.sim swim  seed {args.seed}  nodes {args.nodes}  scenario {args.scenario}",
        f"network    latency {net.latency_ms:g} ms + {net.jitter_dist} jitter mean {net.jitter_ms:g} ms, "
        f"loss {net.loss:g}, duplicate {net.duplicate:g}, reorder {net.reorder:g}",
        f"swim       period {config.probe_interval_ms} ms, probe timeout {config.probe_timeout_ms} ms, "
        f"k {config.indirect_checks}, suspicion x{config.suspicion_mult} (max x"
        f"{config.suspicion_max_mult}), gossip {config.gossip_interval_ms} ms x{config.gossip_fanout}",
    ]
    t = r.traffic
    if t is not None:
        r.line("traffic", f"{t.msgs_per_node_period:.2f} msgs, {t.bytes_per_node_period:.0f} bytes "
                          f"per node per period over {t.periods:.0f} periods "
                          f"(busiest node {t.max_msgs_per_node_period:.2f} msgs)")
    totals = cluster.net.totals()
    drops = ", ".join(f"{k} {v}" for k, v in sorted(totals.dropped.items())) or "none"
    r.line("network", f"{totals.msgs_sent} sent, {totals.msgs_delivered} delivered, "
                      f"{totals.duplicated} duplicated, dropped: {drops}")
    if cluster.decode_errors or cluster.stuck_ticks:
        r.line("driver", f"{cluster.decode_errors} undecodable frames, {cluster.stuck_ticks} ticks "
                         f"that left their deadline in the past (core bug?)")
    mismatches = cluster.event_view_mismatches()
    if mismatches:
        r.ok = False
        r.line("events", f"{len(mismatches)} member states differ from the events reported, "
                         f"e.g. {mismatches[0]}")
    converged = cluster.converged()
    r.ok = r.ok and converged
    r.line("views", "converged" if converged else "NOT converged")
    r.line("result", f"{'OK' if r.ok else 'FAILED'} at {cluster.now_ms} ms")
    r.line("replay", replay_command(args.seed, args.scenario, args.nodes, **_non_defaults(args)))
    lines = head + r.lines
    if args.verbose:
        lines += ["", f"transcript ({len(r.transcript)} lines)"] + r.transcript
    return "\n".join(lines) + "\n", r.ok


def _non_defaults(args: argparse.Namespace) -> dict[str, object]:
    """The options given beyond seed, scenario and nodes, as replay_command takes them."""
    defaults = vars(build_parser().parse_args([]))
    return {k: v for k, v in vars(args).items()
            if k not in ("seed", "scenario", "nodes", "verbose") and v != defaults[k]}


def raft_scenario(argv: list[str] | None) -> int | None:
    """``--scenario raft-*`` replays a Raft run (:func:`mesh.sim.raft_scenarios.main`, its own flags);
    None for the SWIM scenarios above."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not any(a.startswith("raft-") or a.startswith("--scenario=raft-") for a in args):
        return None
    from mesh.sim.raft_scenarios import main as raft_main

    return raft_main(args)


def main(argv: list[str] | None = None) -> int:
    if (rc := raft_scenario(argv)) is not None:
        return rc
    text, ok = report(argv)
    sys.stdout.write(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
