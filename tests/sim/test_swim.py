"""SWIM in the deterministic simulator, over many seeds (``pytest tests/sim --seeds N``).

Bounds are stated in protocol periods (``probe_interval_ms``, 500 ms by default) and derived
from the formulas in :mod:`mesh.swim.formulas`, with room for the randomness of who probes
whom. Each failure names its seed and the command that replays it.
"""
from __future__ import annotations

import random

import pytest

from mesh.sim.network import NetworkConfig
from mesh.sim.swim import SwimCluster
from mesh.swim.config import SwimConfig
from mesh.swim.formulas import suspicion_timeout_ms
from mesh.swim.messages import EventKind, State

pytestmark = pytest.mark.sim

N = 50
PERIOD_MS = SwimConfig().probe_interval_ms
# Joining: every node syncs with the seed, then gossip spreads the rest in O(log n) rounds.
CONVERGE_PERIODS = 20
# Detection of a crash in a 50-node mesh: the first of 49 probers reaches it within a couple
# of periods; with k = 2 confirmations the suspicion timeout is its minimum,
# 4 * log10(50) * 500 ms = 3.4 s = 6.8 periods; then the DEAD update spreads in O(log n)
# gossip rounds. Measured over 1,000 seeds: 7.4 to 12.4 periods. The bound leaves room.
DETECT_PERIODS = 16
HEAL_PERIODS = 40


def converged_cluster(seed: int, n: int = N, **kw) -> SwimCluster:
    c = SwimCluster(seed=seed, n=n, **kw)
    t = c.run_until_converged(CONVERGE_PERIODS * PERIOD_MS)
    assert t is not None, f"{n} nodes did not converge within {CONVERGE_PERIODS} periods"
    return c


def identical_views(c: SwimCluster) -> bool:
    views = [{m.id: (m.state, m.incarnation) for m in c.nodes[o].core.members()} for o in c.live_ids()]
    return all(v == views[0] for v in views)


def assert_identical_views(c: SwimCluster) -> None:
    views = {o: {m.id: (m.state, m.incarnation) for m in c.nodes[o].core.members()} for o in c.live_ids()}
    everyone = next(iter(views.values()))
    for observer, view in views.items():
        # the same members, states and incarnations everywhere (each also sees itself)
        assert view == everyone, f"{observer} disagrees"


def test_fifty_nodes_converge_to_one_identical_view(each_seed):
    def check(seed):
        c = converged_cluster(seed)
        assert c.converged()
        assert_identical_views(c)
        assert [m.state for m in c.nodes["n0"].core.members()] == [State.ALIVE] * N
    each_seed(check, scenario="converge", nodes=N)


def test_a_crashed_node_is_dead_everywhere_within_the_bound(each_seed):
    worst = []

    def check(seed):
        c = converged_cluster(seed)
        victim = random.Random(seed).choice(c.live_ids()[1:])
        t0 = c.now_ms
        c.crash(victim)
        c.run_until_true(lambda: c.detection_ms(victim, t0) is not None, DETECT_PERIODS * PERIOD_MS)
        took = c.detection_ms(victim, t0)
        assert took is not None and took <= DETECT_PERIODS * PERIOD_MS, f"detection took {took} ms"
        assert took >= suspicion_timeout_ms(4, N, PERIOD_MS)   # never before the minimum suspicion
        worst.append(took)
        assert c.false_suspicions(exclude=[victim])[EventKind.DEAD] == 0
        assert c.run_until_converged(5 * PERIOD_MS) is not None
    each_seed(check, scenario="crash", nodes=N)
    print(f"\ncrash detection over {len(worst)} seeds: {min(worst) / PERIOD_MS:.1f} to "
          f"{max(worst) / PERIOD_MS:.1f} periods")


def test_ten_percent_loss_declares_no_healthy_node_dead(each_seed):
    totals = {"dead": 0, "suspect": 0, "periods": 0}

    def check(seed):
        c = SwimCluster(seed=seed, n=N, net=NetworkConfig(loss=0.10))
        assert c.run_until_converged(3 * CONVERGE_PERIODS * PERIOD_MS) is not None
        t0 = c.now_ms
        c.run_for(60 * PERIOD_MS)
        alarms = c.false_suspicions(since_ms=0)
        totals["dead"] += alarms[EventKind.DEAD]
        totals["suspect"] += alarms[EventKind.SUSPECT]
        totals["periods"] += (c.now_ms - t0) // PERIOD_MS
        assert alarms[EventKind.DEAD] == 0, f"{alarms[EventKind.DEAD]} healthy nodes declared dead"
        # Loss stops: every open suspicion ends. A member that missed a refutation keeps its
        # stale suspicion until the refutation, a push-pull or its own last-chance probe reaches
        # it: at worst the maximum suspicion timeout (6 x 3.4 s at n=50) plus the last chance.
        c.set_net(NetworkConfig())
        worst_ms = 6 * suspicion_timeout_ms(4, N, PERIOD_MS) + 4 * PERIOD_MS
        assert c.run_until_converged(worst_ms) is not None
    each_seed(check, scenario="loss", nodes=N, loss=0.1)
    print(f"\n10% loss: {totals['dead']} false DEAD, {totals['suspect']} SUSPECT observations "
          f"(one per observer; all refuted) in {totals['periods']} periods of a {N}-node mesh")


def test_a_partition_heals_and_views_reconverge(each_seed):
    def check(seed):
        c = converged_cluster(seed)
        ids = c.live_ids()
        left, right = ids[: N // 2], ids[N // 2:]
        c.partition(left, right)
        def split():
            return all(c.sees(o, m) in (State.DEAD, None) for a, b in ((left, right), (right, left))
                       for o in a for m in b)
        assert c.run_until_true(split, 60 * PERIOD_MS) is not None, "the sides never declared each other dead"
        c.heal()
        t = c.run_until_true(lambda: c.converged() and identical_views(c), HEAL_PERIODS * PERIOD_MS)
        assert t is not None, f"views did not reconverge within {HEAL_PERIODS} periods of the heal"
        assert_identical_views(c)
    each_seed(check, scenario="partition", nodes=N)


def test_a_restarted_node_is_alive_again_everywhere(each_seed):
    def check(seed):
        c = converged_cluster(seed)
        victim = random.Random(seed).choice(c.live_ids()[1:])
        t0 = c.now_ms
        c.crash(victim)
        assert c.run_until_true(lambda: c.detection_ms(victim, t0) is not None, DETECT_PERIODS * PERIOD_MS)
        dead_at = max(c.view(o)[victim][1] for o in c.live_ids() if victim in c.view(o))
        c.restart(victim)                          # a fresh process: incarnation 0
        assert c.run_until_true(lambda: c.converged() and identical_views(c),
                                CONVERGE_PERIODS * PERIOD_MS) is not None
        incs = {c.view(o)[victim] for o in c.live_ids() if o != victim}
        assert len(incs) == 1 and incs.pop()[1] > dead_at
    each_seed(check, scenario="rejoin", nodes=N)


def test_a_leaving_node_is_left_everywhere_at_once(each_seed):
    def check(seed):
        c = converged_cluster(seed, n=20)
        t0 = c.now_ms
        c.leave("n7")
        t = c.run_until_true(lambda: all(c.sees(o, "n7") is State.LEFT for o in c.live_ids()), 4 * PERIOD_MS)
        assert t is not None and t - t0 <= 2 * PERIOD_MS   # sent to every member directly
        c.run_for(20 * PERIOD_MS)
        assert all(c.sees(o, "n7") is State.LEFT for o in c.live_ids())
        assert c.false_suspicions(exclude=["n7"])[EventKind.DEAD] == 0
    each_seed(check, scenario="converge", nodes=20)


def test_metadata_spreads_in_a_few_gossip_rounds(each_seed):
    def check(seed):
        c = converged_cluster(seed)
        c.set_meta("n3", b"agents-v2")
        t = c.run_until_true(lambda: all(c.nodes[o].core.member("n3").meta == b"agents-v2"
                                         for o in c.live_ids()), 40 * PERIOD_MS, check_every_ms=10)
        assert t is not None, "metadata did not reach everyone within 40 periods"
        # epidemic spread takes O(log n) gossip rounds of 100 ms (median 0.2 periods; see
        # bench/gossip.py); the few members it misses catch up by retransmission or push-pull
    each_seed(check, scenario="converge", nodes=N)
