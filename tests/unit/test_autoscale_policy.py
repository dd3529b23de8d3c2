"""The autoscaling decision core and placement choices: pure functions and a clock-injected
policy fed by hand-made samples (no sleeps, no nodes)."""
from __future__ import annotations

from dataclasses import replace

import math

import pytest

from mesh.patterns.placement import NodeReport, choose_nodes, choose_victims, expected_load, parse_config
from mesh.patterns.scaling_policy import (LoadSample, ScalingConfig, ScalingPolicy, desired_replicas,
                                          ewma_alpha, utilisation)

# A config without smoothing, so that each sample is the demand seen (smoothing is tested apart).
CFG = ScalingConfig(min_replicas=1, max_replicas=6, target_outstanding=4.0, scale_up_at=1.25,
                    scale_down_at=0.5, up_after_s=1.0, down_after_s=3.0, up_cooldown_s=2.0,
                    down_cooldown_s=4.0, max_step_up=2, max_step_down=1, smoothing_s=0.0)


def load(replicas: int, demand: float, calls: int = 0, latency_ms: float = 0.0) -> list[LoadSample]:
    """``replicas`` samples whose outstanding calls add up to ``demand`` (spread evenly)."""
    each, extra = divmod(int(demand), replicas) if replicas else (0, 0)
    return [LoadSample(f"r.{i}", inflight=each + (i < extra), latency_ms=latency_ms, calls=calls)
            for i in range(replicas)]


def run(policy: ScalingPolicy, script: list[tuple[float, float]], start: int, **kw) -> list[int]:
    """Feed (time, demand) pairs, applying each decision; the replica count after each."""
    n, counts = start, []
    for now, demand in script:
        n = policy.decide(now, n, load(n, demand, **kw)).desired
        counts.append(n)
    return counts


# -- formulas ------------------------------------------------------------------------------


@pytest.mark.parametrize("demand, latency, replicas, target_latency, expected", [
    (8, 0, 2, None, 1.0),         # 4 per replica = the target
    (12, 0, 2, None, 1.5),
    (0, 0, 3, None, 0.0),
    (2, 0, 1, None, 0.5),
    (2, 90, 1, 60.0, 1.5),        # latency dominates
    (8, 30, 2, 60.0, 1.0),        # queue dominates
    (0, 0, 0, None, 0.0),         # nothing to serve, nothing serving
    (3, 0, 0, None, math.inf),    # demand and no replica
])
def test_utilisation(demand, latency, replicas, target_latency, expected):
    cfg = ScalingConfig(target_outstanding=4.0, target_latency_ms=target_latency)
    assert utilisation(demand, latency, replicas, cfg) == expected


@pytest.mark.parametrize("replicas, util, expected", [
    (2, 1.5, 3), (2, 1.0, 2), (3, 2 / 3, 2), (4, 0.1, 1), (4, 0.0, 0), (1, 3.2, 4),
    (3, 1 / 3 * 2, 2),            # float noise must not add a replica
    (5, math.inf, 6),
])
def test_desired_replicas(replicas, util, expected):
    assert desired_replicas(replicas, util) == expected


@pytest.mark.parametrize("dt, tau, expected", [
    (1.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 1.0, 1 - math.exp(-1)), (2.0, 1.0, 1 - math.exp(-2)),
    (-1.0, 1.0, 0.0),
])
def test_ewma_alpha(dt, tau, expected):
    assert ewma_alpha(dt, tau) == pytest.approx(expected)


@pytest.mark.parametrize("kwargs", [
    {"min_replicas": 3, "max_replicas": 2}, {"max_replicas": 0, "min_replicas": 0},
    {"min_replicas": 0}, {"target_outstanding": 0}, {"target_latency_ms": 0.0},
    {"scale_up_at": 0.9}, {"scale_down_at": 1.0}, {"scale_down_at": 0.0}, {"up_cooldown_s": -1},
    {"max_step_up": 0}, {"max_step_down": 0},
])
def test_config_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        ScalingConfig(**kwargs)


def test_config_round_trips_through_a_dict_and_refuses_unknown_keys():
    assert ScalingConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError, match="max_replica"):
        ScalingConfig.from_dict({"max_replica": 3})
    kind, cfg = parse_config({"kind": "pkg.mod:Worker", **CFG.to_dict()})
    assert (kind, cfg) == ("pkg.mod:Worker", CFG)
    with pytest.raises(ValueError):
        parse_config({"min_replicas": 1})


# -- the policy ------------------------------------------------------------------------------


def test_grows_under_sustained_load_in_steps_with_cooldowns_up_to_max():
    # demand 40 = ten replicas' worth; max 6; step 2; sustain 1 s; cooldown 2 s
    script = [(t / 2, 40) for t in range(0, 21)]     # every 0.5 s for 10 s
    counts = run(ScalingPolicy(CFG), script, start=1)
    assert counts[:2] == [1, 1]                         # not sustained yet (0 s, 0.5 s)
    assert counts[2] == 3                               # t=1.0: +2 (the step)
    assert counts[3:6] == [3, 3, 3]                     # cooldown (and a fresh sustained run)
    assert counts[6] == 5                               # t=3.0
    assert counts[10] == 6 and max(counts) == 6         # t=5.0: capped at max_replicas
    assert counts[-1] == 6


def test_a_burst_shorter_than_up_after_does_nothing():
    script = [(0.0, 2), (0.5, 30), (1.0, 2), (1.5, 30), (2.0, 2), (2.5, 2)]
    assert run(ScalingPolicy(CFG), script, start=1) == [1] * 6


def test_does_not_flap_inside_the_hysteresis_band():
    # 2 replicas, utilisation between 0.5 and 1.25 (demand 4..10): hold, however long
    script = [(t * 0.5, d) for t, d in enumerate([5, 9, 4, 10, 6, 8, 4, 10] * 5)]
    assert run(ScalingPolicy(CFG), script, start=2) == [2] * len(script)


def test_after_growing_the_signal_is_inside_the_band_so_nothing_oscillates():
    policy = ScalingPolicy(CFG)
    n = 2
    history = []
    for i in range(60):                                 # demand 11 for 30 s
        n = policy.decide(i * 0.5, n, load(n, 11)).desired
        history.append(n)
    assert history[-1] == 3                             # ceil(2 * 11/8) = 3, then 11/12 = 0.92 in band
    assert sorted(set(history)) == [2, 3] and history.index(3) == history.index(3, 0)
    assert all(c == 3 for c in history[history.index(3):])


def test_shrinks_when_idle_one_step_at_a_time_down_to_min():
    script = [(t * 0.5, 0) for t in range(0, 60)]
    counts = run(ScalingPolicy(CFG), script, start=5)
    assert counts[:6] == [5] * 6                        # sustained idleness needs 3 s
    assert counts[6] == 4                               # t=3.0
    # next: a fresh 3 s run and a 4 s cooldown -> t=7.0, then 11.0, 15.0
    assert counts[13] == 4 and counts[14] == 3 and counts[22] == 2 and counts[30] == 1
    assert counts[-1] == 1                              # never below min


def test_shrinks_only_to_what_keeps_the_rest_inside_the_band():
    cfg = ScalingConfig(min_replicas=1, max_replicas=10, target_outstanding=4.0, down_after_s=0.0,
                        down_cooldown_s=0.0, max_step_down=5, smoothing_s=0.0)
    policy = ScalingPolicy(cfg)
    d = policy.decide(0.0, 8, load(8, 9))                # utilisation 9/32 = 0.28
    assert d.desired == 3                               # ceil(8 * 0.28) = 3: 9/12 = 0.75
    assert utilisation(9, 0, d.desired, cfg) < cfg.scale_up_at


def test_min_and_max_are_restored_at_once_whatever_the_cooldown():
    policy = ScalingPolicy(CFG)
    assert policy.decide(0.0, 1, load(1, 40)).desired == 1          # starts a sustained run
    assert policy.decide(1.0, 1, load(1, 40)).desired == 3
    d = policy.decide(1.1, 0, [])                                    # both replicas were lost
    assert (d.desired, d.reason) == (1, "below min_replicas")
    d = policy.decide(1.2, 9, load(9, 40))                           # someone added too many
    assert (d.desired, d.reason) == (6, "above max_replicas")


def test_a_cooldown_follows_any_change_before_shrinking():
    policy = ScalingPolicy(CFG)
    policy.decide(0.0, 2, load(2, 40))
    assert policy.decide(1.0, 2, load(2, 40)).desired == 4          # grew at t=1
    counts = [policy.decide(1.0 + t * 0.5, 4, load(4, 0)).desired for t in range(1, 12)]
    # idle from t=1.5: sustained from 1.5, so 3 s -> t=4.5; cooldown since t=1 is 4 s -> ok at 5.0
    assert counts[:7] == [4] * 7 and counts[7] == 3


def test_latency_grows_a_short_queue_and_an_idle_replica_with_a_stale_latency_does_not_block_shrinking():
    cfg = ScalingConfig(min_replicas=1, max_replicas=4, target_outstanding=10.0, target_latency_ms=50.0,
                        up_after_s=0.0, up_cooldown_s=0.0, down_after_s=0.0, down_cooldown_s=0.0,
                        smoothing_s=0.0)
    policy = ScalingPolicy(cfg)
    policy.decide(0.0, 1, [LoadSample("a", inflight=1, latency_ms=100.0, calls=10)])
    d = policy.decide(0.5, 1, [LoadSample("a", inflight=1, latency_ms=100.0, calls=20)])
    assert (d.desired, round(d.utilisation, 2)) == (2, 2.0)          # latency 100 ms / 50 ms
    # now nothing arrives: latency EWMAs stay at 100 ms but no calls finished -> no signal
    d = policy.decide(1.0, 2, [LoadSample("a", latency_ms=100.0, calls=20),
                               LoadSample("b", latency_ms=100.0, calls=0)])
    assert d.desired == 1 and d.utilisation == 0.0


def test_demand_is_smoothed_so_a_single_spike_does_not_reach_the_threshold():
    cfg = ScalingConfig(min_replicas=1, max_replicas=4, target_outstanding=4.0, scale_up_at=1.25,
                        up_after_s=0.0, up_cooldown_s=0.0, smoothing_s=2.0)
    policy = ScalingPolicy(cfg)
    assert policy.decide(0.0, 2, load(2, 4)).desired == 2
    d = policy.decide(0.5, 2, load(2, 20))              # one sample at 2.5x the target
    assert policy.demand == pytest.approx(4 + (1 - math.exp(-0.25)) * 16)      # 7.5: 0.94
    assert d.desired == 2
    for t in range(2, 12):                              # sustained: the EWMA catches up
        d = policy.decide(t * 0.5, 2, load(2, 20))
        if d.delta:
            break
    assert t == 2 and d.desired == 3      # t=1.0: EWMA 10.3, 1.29 > 1.25: ceil(2 * 1.29) = 3


def test_demand_not_replica_count_is_smoothed_so_growing_takes_effect_at_once():
    cfg = ScalingConfig(min_replicas=1, max_replicas=8, target_outstanding=2.0, up_after_s=0.0,
                        up_cooldown_s=0.0, max_step_up=8, smoothing_s=5.0)
    policy = ScalingPolicy(cfg)
    policy.decide(0.0, 1, load(1, 8))
    d = policy.decide(0.5, 1, load(1, 8))
    assert d.desired == 4
    d = policy.decide(1.0, 4, load(4, 8))               # same callers, more servers: in band now
    assert (d.desired, d.utilisation) == (4, pytest.approx(1.0))


def test_a_ramp_up_and_down_grows_then_shrinks_back_to_min():
    script = ([(t * 0.5, 2) for t in range(0, 10)] + [(5 + t * 0.5, 20) for t in range(0, 30)]
              + [(20 + t * 0.5, 0) for t in range(0, 80)])
    counts = run(ScalingPolicy(CFG), script, start=1)
    assert counts[9] == 1
    assert max(counts) == 5 and counts[39] == 5            # 20 / 4 = 5 replicas
    assert counts[-1] == 1
    peak = counts.index(5)
    assert counts[:peak + 1] == sorted(counts[:peak + 1])     # only grew, then only shrank
    assert counts[peak:] == sorted(counts[peak:], reverse=True)


# -- placement --------------------------------------------------------------------------------


def report(node: str, busy: float, replicas: int = 0, kinds=(), imports=True, each: int = 0) -> NodeReport:
    """A node whose ``replicas`` of "w" have ``each`` calls outstanding; ``busy`` is all of them."""
    return NodeReport(node, f"_place.{node}", busy,
                      {f"w.{node}{i}": {"capability": "w", "inflight": each, "queued": 0} for i in range(replicas)},
                      tuple(kinds), imports)


def test_expected_load_counts_other_work_and_the_capabilitys_replicas_at_the_set_point():
    assert expected_load(report("a", busy=10, replicas=2, each=3), "w", 4.0) == 10 - 6 + 8
    assert expected_load(report("a", busy=10, replicas=2, each=3), "w", 4.0, added=1) == 10 - 6 + 12
    assert expected_load(report("a", busy=5), "w", 4.0) == 5
    assert expected_load(report("a", busy=5, replicas=1, each=5), "other", 4.0) == 5


def test_new_replicas_go_to_the_least_loaded_node_and_spread_within_one_round():
    # a: 2 replicas and other work (6 outstanding, none at its replicas); b: 1; c: none
    nodes = [report("a", busy=6, replicas=2), report("b", busy=1, replicas=1), report("c", busy=0)]
    assert choose_nodes(nodes, 1, "w", 4.0) == ["c"]
    assert choose_nodes(nodes, 3, "w", 4.0) == ["c", "c", "b"]   # c: 0, 4 -> 8; b: 5
    assert choose_nodes([], 2, "w", 4.0) == []


def test_a_momentary_burst_at_one_replica_does_not_steer_placement():
    # The capability's own calls spread over all its replicas, wherever they are: one node
    # that happens to show 10 outstanding at its replica this instant is as good as another.
    nodes = [report("a", busy=10, replicas=1, each=10), report("b", busy=0, replicas=1), report("c", busy=7)]
    assert choose_nodes(nodes, 2, "w", 4.0) == ["a", "b"]        # 4, 4 (tie: by id), c: 7


def test_placement_ties_go_to_the_node_with_fewer_replicas_then_by_id():
    nodes = [report("b", busy=4, replicas=1), report("a", busy=4, replicas=1), report("c", busy=8)]
    # all at 8: c has no replica of w yet, so it goes first; then a and b, by id
    assert choose_nodes(nodes, 3, "w", 4.0) == ["c", "a", "b"]


def test_placement_uses_the_health_score():
    """Equal load: the healthier node first. A node below min_health gets nothing while a
    healthier one exists, however idle it is; if none is healthy enough, load decides."""
    sick = replace(report("a", busy=0), health=25.0)
    fine = replace(report("b", busy=4), health=70.0)
    better = replace(report("c", busy=4), health=90.0)
    assert choose_nodes([fine, better], 1, "w", 4.0) == ["c"]
    assert choose_nodes([sick, fine], 2, "w", 4.0) == ["a", "b"]     # no floor: load, then health on the tie
    assert choose_nodes([sick, fine], 2, "w", 4.0, min_health=40.0) == ["b", "b"]
    assert choose_nodes([sick], 1, "w", 4.0, min_health=40.0) == ["a"]            # better than nothing
    with pytest.raises(ValueError, match="min_health"):
        ScalingConfig(min_health=120)


def test_a_node_can_build_kinds_it_has_a_factory_for_or_imports():
    assert report("a", 0, kinds=["worker"], imports=False).can_build("worker")
    assert not report("a", 0, kinds=["worker"], imports=False).can_build("pkg:Worker")
    assert report("a", 0).can_build("pkg:Worker") and not report("a", 0).can_build("worker")


def test_victims_come_off_the_most_loaded_node_the_least_busy_and_newest_first():
    nodes = {"a": report("a", busy=1, replicas=1), "b": report("b", busy=2, replicas=3), "c": report("c", busy=0)}
    live = {"w.1": ("a", 1), "w.2": ("b", 0), "w.3": ("b", 2), "w.4": ("b", 0)}
    # b: 2 other + 3 replicas at the set point = 14 > a: 1 + 4; on b, w.2 and w.4 have
    # nothing to drain and w.4 is newer
    assert choose_victims(nodes, live, 1, "w", 4.0) == ["w.4"]
    # then b at 2 + 8 = 10, then 2 + 4 = 6, still above a's 5
    assert choose_victims(nodes, live, 3, "w", 4.0) == ["w.4", "w.2", "w.3"]
    assert choose_victims(nodes, live, 9, "w", 4.0) == ["w.4", "w.2", "w.3", "w.1"]   # no more than there are


def test_victims_leave_the_node_with_other_work_first():
    nodes = {"a": report("a", busy=9, replicas=1), "b": report("b", busy=0, replicas=1)}
    live = {"w.1": ("a", 0), "w.2": ("b", 0)}
    assert choose_victims(nodes, live, 1, "w", 4.0) == ["w.1"]
