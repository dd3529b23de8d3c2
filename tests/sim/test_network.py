"""The simulator itself: the virtual clock, the faulty network, and replay from a seed.

Statistical checks use bounds of six standard deviations around the expected count: with
the fixed seeds they are deterministic anyway, and a change of the RNG draw order that moves
a count that far means the fault model broke, not that the dice were unkind.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.sim import Network, NetworkConfig, World
from mesh.sim.__main__ import replay_command, report
from mesh.sim import network as netmod

ROOT = Path(__file__).resolve().parents[2]


# -- world ------------------------------------------------------------------------------------

def test_callbacks_run_in_time_then_scheduling_order() -> None:
    w = World(1)
    ran: list[tuple[int, str]] = []
    w.at(5, lambda: ran.append((w.now_ms, "b")))
    w.at(3, lambda: ran.append((w.now_ms, "a")))
    w.at(5, lambda: ran.append((w.now_ms, "c")))
    w.after(5, lambda: w.after(0, lambda: ran.append((w.now_ms, "d"))))   # at 5, after b and c
    w.run_until(10)
    assert ran == [(3, "a"), (5, "b"), (5, "c"), (5, "d")]
    assert w.now_ms == 10


def test_run_for_splits_like_one_run_and_leaves_later_events_pending() -> None:
    w = World(1)
    ran: list[int] = []
    for t in (1, 4, 9, 15):
        w.at(t, ran.append, t)
    w.run_for(4)
    assert ran == [1, 4] and w.now_ms == 4
    w.run_for(6)
    assert ran == [1, 4, 9] and w.now_ms == 10 and w.pending == 1
    assert w.next_event_ms() == 15


def test_cannot_schedule_or_run_into_the_past() -> None:
    w = World(1)
    w.run_until(10)
    with pytest.raises(ValueError):
        w.at(9, print)
    with pytest.raises(ValueError):
        w.after(-1, print)
    with pytest.raises(ValueError):
        w.run_until(5)


def test_run_until_true_returns_the_first_sampled_time_or_none() -> None:
    w = World(1)
    flag = []
    w.at(23, flag.append, 1)
    assert w.run_until_true(lambda: bool(flag), limit_ms=100, check_every_ms=10) == 30
    assert w.run_until_true(lambda: bool(flag), limit_ms=100) == 30   # already true: now
    assert w.run_until_true(lambda: False, limit_ms=45, check_every_ms=10) is None
    assert w.now_ms == 75


def test_rng_streams_are_independent_and_stable_across_processes() -> None:
    w = World(7)
    assert w.rng("a").random() == World(7).rng("a").random()
    assert w.rng("a").random() != w.rng("b").random()
    assert w.rng("a").random() != World(8).rng("a").random()
    # str hashing is randomized per process; the streams must not depend on it.
    code = "from mesh.sim import World; print(World(7).rng('network').random())"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout
            for h in (1, 2)}
    assert outs == {f"{World(7).rng('network').random()}\n"}


# -- network: helpers -------------------------------------------------------------------------

def make_net(seed: int, config: NetworkConfig | None = None, hosts: str = "abc"):
    """A world, a network, and per-host inboxes of (time_ms, src, payload)."""
    w = World(seed)
    net = Network(w, config or NetworkConfig())
    inbox: dict[str, list[tuple[int, str, bytes]]] = {}
    for h in hosts:
        attach(w, net, inbox, h)
    return w, net, inbox


def attach(w: World, net: Network, inbox: dict, h: str) -> None:
    box = inbox.setdefault(h, [])
    net.attach(h, f"sim://{h}", lambda src, payload, box=box: box.append((w.now_ms, src, payload)))


def traffic(w: World, net: Network, count: int, pairs=(("a", "b"), ("b", "a"), ("a", "c"))) -> None:
    """``count`` numbered messages round-robin over ``pairs``, one per ms."""
    for i in range(count):
        src, dst = pairs[i % len(pairs)]
        w.at(i, net.send, src, dst, f"sim://{dst}", i.to_bytes(4, "big"))
    w.run_until(count + 10_000)


def numbers(box: list[tuple[int, str, bytes]]) -> list[int]:
    return [int.from_bytes(p, "big") for _, _, p in box]


FAULTY = NetworkConfig(latency_ms=2, jitter_ms=5, loss=0.1, duplicate=0.05, reorder=0.1)


# -- network: replay --------------------------------------------------------------------------

def test_same_seed_same_delivery_trace_different_seed_different(seeds: range) -> None:
    def trace(seed: int) -> list:
        w, net, inbox = make_net(seed, FAULTY)
        net.trace = []
        traffic(w, net, 500)
        return [net.trace, inbox]

    for seed in seeds:
        assert trace(seed) == trace(seed), f"seed {seed} did not replay"
    assert trace(1) != trace(2)


def test_changing_other_streams_does_not_shift_the_network() -> None:
    w1, net1, in1 = make_net(5, FAULTY)
    w2, net2, in2 = make_net(5, FAULTY)
    w2.rng("swim:n1:0").random()   # another consumer's draws
    traffic(w1, net1, 300)
    traffic(w2, net2, 300)
    assert in1 == in2


# -- network: faults --------------------------------------------------------------------------

def six_sigma(n: int, p: float) -> tuple[float, float]:
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    return mean - 6 * sd, mean + 6 * sd


def test_loss_rate_is_close_to_the_configured_probability(seeds: range) -> None:
    n, p = 5000, 0.2
    for seed in seeds:
        w, net, inbox = make_net(seed, NetworkConfig(loss=p))
        traffic(w, net, n)
        lost = net.totals().dropped.get(netmod.LOSS, 0)
        lo, hi = six_sigma(n, p)
        assert lo <= lost <= hi, f"seed {seed}: {lost} of {n} lost at p={p}"
        assert sum(len(b) for b in inbox.values()) == n - lost


def test_duplicates_arrive_at_the_configured_rate_each_copy_on_its_own(seeds: range) -> None:
    n, p = 5000, 0.1
    for seed in seeds:
        w, net, inbox = make_net(seed, NetworkConfig(duplicate=p, jitter_ms=3))
        traffic(w, net, n)
        dups = net.totals().duplicated
        lo, hi = six_sigma(n, p)
        assert lo <= dups <= hi, f"seed {seed}: {dups} of {n} duplicated at p={p}"
        got = [x for box in inbox.values() for x in numbers(box)]
        assert len(got) == n + dups and set(got) == set(range(n))
    # the copy draws its own latency: somewhere the two copies arrive at different times
    times: dict[int, list[int]] = {}
    for t, _, payload in inbox["b"]:
        times.setdefault(int.from_bytes(payload, "big"), []).append(t)
    assert any(len(ts) == 2 and ts[0] != ts[1] for ts in times.values())


def test_jitter_reorders_one_link_and_no_jitter_keeps_it_in_order() -> None:
    w, net, inbox = make_net(3, NetworkConfig(latency_ms=1, jitter_ms=5))
    traffic(w, net, 200, pairs=(("a", "b"),))
    got = numbers(inbox["b"])
    assert sorted(got) == list(range(200)) and got != list(range(200))

    w, net, inbox = make_net(3, NetworkConfig(latency_ms=3, jitter_ms=0))
    traffic(w, net, 200, pairs=(("a", "b"),))
    assert numbers(inbox["b"]) == list(range(200))
    assert all(t == i + 3 for (t, _, _), i in zip(inbox["b"], range(200)))


def test_reorder_holds_some_messages_back() -> None:
    w, net, inbox = make_net(4, NetworkConfig(latency_ms=1, jitter_ms=0, reorder=0.1, reorder_ms=40))
    traffic(w, net, 1000, pairs=(("a", "b"),))
    late = [t - i for (t, _, _), i in ((e, int.from_bytes(e[2], "big")) for e in inbox["b"])
            if t - i > 1]
    lo, hi = six_sigma(1000, 0.1 * 39 / 40)   # uniform(0, 40) rounds to 0 one time in 80
    assert lo <= len(late) <= hi and max(late) > 20


def test_mean_latency_matches_the_config() -> None:
    for dist in ("exponential", "lognormal"):
        w, net, inbox = make_net(6, NetworkConfig(latency_ms=2, jitter_ms=4, jitter_dist=dist))
        traffic(w, net, 4000, pairs=(("a", "b"),))
        delays = [t - int.from_bytes(p, "big") for t, _, p in inbox["b"]]
        assert 5.5 <= sum(delays) / len(delays) <= 6.5, dist


def test_partition_blocks_exactly_the_cross_group_traffic_and_heal_restores_it() -> None:
    w, net, inbox = make_net(1, hosts="abcde")
    net.partition({"a", "b"}, {"c"})          # d and e: the unnamed rest, together
    sent = [(s, d) for s in "abcde" for d in "abcde" if s != d]
    for s, d in sent:
        net.send(s, d, f"sim://{d}", s.encode())
    w.run_for(100)
    side = {"a": 1, "b": 1, "c": 2, "d": 0, "e": 0}
    for d in "abcde":
        assert sorted(p.decode() for _, _, p in inbox[d]) == sorted(
            s for s in "abcde" if s != d and side[s] == side[d])
    blocked = sum(1 for s, d in sent if side[s] != side[d])
    assert net.totals().dropped == {netmod.PARTITION: blocked}
    assert not net.can_reach("a", "c") and net.can_reach("d", "e")

    net.heal()
    for box in inbox.values():
        box.clear()
    for s, d in sent:
        net.send(s, d, f"sim://{d}", s.encode())
    w.run_for(100)
    assert sum(len(b) for b in inbox.values()) == len(sent)


def test_a_host_attached_later_joins_the_unnamed_group() -> None:
    w, net, inbox = make_net(1, hosts="ab")
    net.partition({"a"})
    attach(w, net, inbox, "z")
    net.send("z", "b", "sim://b", b"1")
    net.send("z", "a", "sim://a", b"2")
    w.run_for(100)
    assert [p for _, _, p in inbox["b"]] == [b"1"] and inbox["a"] == []


def test_a_node_named_in_two_groups_is_refused() -> None:
    _, net, _ = make_net(1)
    with pytest.raises(ValueError):
        net.partition({"a", "b"}, {"b"})


def test_cut_is_both_ways_or_one_way_and_heal_link_undoes_it() -> None:
    w, net, inbox = make_net(1)
    net.cut("a", "b", both_ways=False)
    net.send("a", "b", "sim://b", b"ab")
    net.send("b", "a", "sim://a", b"ba")
    net.send("a", "c", "sim://c", b"ac")
    w.run_for(100)
    assert inbox["b"] == [] and [p for *_, p in inbox["a"]] == [b"ba"] and len(inbox["c"]) == 1
    net.heal_link("a", "b", both_ways=False)
    net.cut("a", "c")
    for s, d in (("a", "b"), ("a", "c"), ("c", "a")):
        net.send(s, d, f"sim://{d}", b"x")
    w.run_for(100)
    assert len(inbox["b"]) == 1 and len(inbox["c"]) == 1 and len(inbox["a"]) == 1


def test_a_partition_drops_messages_already_in_flight() -> None:
    w, net, inbox = make_net(1, NetworkConfig(latency_ms=10, jitter_ms=0))
    net.send("a", "b", "sim://b", b"x")
    w.run_for(5)
    net.partition({"a"})
    w.run_for(100)
    assert inbox["b"] == [] and net.stats["a"].dropped == {netmod.PARTITION: 1}


def test_crashed_hosts_receive_nothing_and_their_sends_are_counted_drops() -> None:
    w, net, inbox = make_net(1, NetworkConfig(latency_ms=10, jitter_ms=0))
    net.send("a", "b", "sim://b", b"in flight")
    w.run_for(5)
    net.detach("b")
    net.send("a", "b", "sim://b", b"after")           # by id
    net.send("a", None, "sim://b", b"by address")     # by address
    net.send("b", "a", "sim://a", b"from the dead")
    w.run_for(100)
    assert inbox["b"] == [] and inbox["a"] == []
    assert net.stats["a"].dropped == {netmod.DOWN: 3}
    assert net.stats["b"].dropped == {netmod.SENDER_DOWN: 1}
    assert net.stats["b"].msgs_delivered == 0


def test_a_restarted_host_gets_what_was_in_flight_to_its_old_life() -> None:
    w, net, inbox = make_net(1, NetworkConfig(latency_ms=10, jitter_ms=0))
    net.send("a", "b", "sim://b", b"x")
    w.run_for(5)
    net.detach("b")
    second: list[bytes] = []
    net.attach("b", "sim://b", lambda src, p: second.append(p))
    w.run_for(100)
    assert second == [b"x"] and inbox["b"] == []


def test_routing_by_address_by_id_and_on_the_incoming_link() -> None:
    w, net, inbox = make_net(1)
    net.send("a", None, "sim://b", b"seed")        # only the address is known
    net.send("a", "c", "", b"reply")               # a response on the link the request came on
    net.send("a", "c", "sim://b", b"wrong")        # c does not live at b's address
    net.send("a", None, "sim://nobody", b"void")
    w.run_for(100)
    assert [(s, p) for _, s, p in inbox["b"]] == [("a", b"seed")]
    assert [(s, p) for _, s, p in inbox["c"]] == [("a", b"reply")]
    assert net.stats["a"].dropped == {netmod.WRONG_HOST: 1, netmod.DOWN: 1}


def test_counters_per_node() -> None:
    w, net, inbox = make_net(1)
    net.send("a", "b", "sim://b", b"12345")
    net.send("a", "c", "sim://c", b"123")
    net.send("b", "a", "sim://a", b"1")
    w.run_for(100)
    a, b, c = net.stats["a"], net.stats["b"], net.stats["c"]
    assert (a.msgs_sent, a.bytes_sent, a.msgs_delivered, a.bytes_delivered) == (2, 8, 1, 1)
    assert (b.msgs_sent, b.bytes_sent, b.msgs_delivered, b.bytes_delivered) == (1, 1, 1, 5)
    assert (c.msgs_sent, c.msgs_delivered, c.dropped_total) == (0, 1, 0)
    t = net.totals()
    assert (t.msgs_sent, t.bytes_sent, t.msgs_delivered, t.bytes_delivered) == (3, 9, 3, 9)


def test_attach_refuses_a_taken_id_or_address() -> None:
    w, net, inbox = make_net(1)
    with pytest.raises(ValueError):
        net.attach("a", "sim://other", lambda s, p: None)
    with pytest.raises(ValueError):
        net.attach("z", "sim://a", lambda s, p: None)


def test_config_changes_apply_from_now_on() -> None:
    w, net, inbox = make_net(1, NetworkConfig(latency_ms=1, jitter_ms=0))
    net.send("a", "b", "sim://b", b"1")
    net.set_config(NetworkConfig(loss=1.0))
    net.send("a", "b", "sim://b", b"2")
    w.run_for(100)
    assert [p for *_, p in inbox["b"]] == [b"1"] and net.stats["a"].dropped == {netmod.LOSS: 1}


@pytest.mark.parametrize("bad", [
    {"loss": -0.1}, {"loss": 1.5}, {"duplicate": 2}, {"reorder": -1}, {"latency_ms": -1},
    {"jitter_ms": float("nan")}, {"reorder_ms": float("inf")}, {"jitter_dist": "uniform"},
    {"jitter_sigma": 0}, {"loss": "0.1"},
])
def test_config_is_validated(bad: dict) -> None:
    with pytest.raises(ValueError):
        NetworkConfig(**bad)


# -- replay from the command line -------------------------------------------------------------

def test_the_cli_prints_the_same_bytes_for_the_same_seed() -> None:
    args = ["--seed", "3", "--nodes", "12", "--scenario", "rejoin", "--loss", "0.05", "-v"]
    text, ok = report(args)
    assert ok, text
    assert report(args)[0] == text
    assert report(["--seed", "4"] + args[2:])[0] != text
    # another process, another str hash seed: still the same bytes
    out = subprocess.run([sys.executable, "-m", "mesh.sim", *args], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "99"}, check=True).stdout
    assert out == text
    assert "replay     " + replay_command(3, "rejoin", 12, loss=0.05) in text


@pytest.mark.parametrize("scenario", ["converge", "crash", "loss", "partition", "rejoin"])
def test_every_scenario_runs_and_ends_well_on_a_small_cluster(scenario: str) -> None:
    text, ok = report(["--seed", "1", "--nodes", "8", "--scenario", scenario, "--periods", "60"])
    assert ok, text


# -- the SWIM driver's own duties (the protocol's behaviour is tested in test_swim.py) --------

def test_undecodable_frames_are_counted_not_raised() -> None:
    from mesh.sim import SwimCluster

    c = SwimCluster(seed=1, n=3)
    c.run_for(1000)
    c.net.send("n1", "n2", "", b"\x01garbage")
    c.run_for(1000)
    assert c.decode_errors == 1 and "n1 -> n2" in c.last_decode_error
    assert c.converged()


def test_a_core_that_raises_names_the_seed_and_the_node() -> None:
    from mesh.sim import SwimCluster

    c = SwimCluster(seed=42, n=3)
    c.run_for(1000)

    def boom(*args: object) -> list:
        raise RuntimeError("core bug")

    c.nodes["n2"].core.tick = boom   # type: ignore[method-assign]
    with pytest.raises(RuntimeError) as info:
        c.run_for(2000)
    assert any("seed 42" in note and "n2" in note for note in info.value.__notes__)


def test_views_die_with_a_crashed_observer_and_detection_counts_from_the_crash() -> None:
    from mesh.sim import SwimCluster
    from mesh.sim.swim import GONE

    c = SwimCluster(seed=3, n=6)
    assert c.run_until_converged(10_000) is not None
    c.crash("n4")
    assert c.event_view("n4") == {} and c.view("n4") == {}
    crashed_at = c.now_ms
    t = c.run_until_true(lambda: c.detection_ms("n4", crashed_at) is not None, 60_000)
    # exact, from the events; run_until_true only samples every tenth of a period
    detected = c.detection_ms("n4", crashed_at)
    assert t is not None and detected is not None and t - 50 < crashed_at + detected <= t
    assert all(c.sees(o, "n4") in GONE for o in c.live_ids())
    assert c.converged() and c.converged(expect_alive=["n0", "n1", "n2", "n3", "n5"],
                                         expect_dead=["n4"])
    assert not c.converged(expect_alive=["n0", "n1", "n2", "n3", "n4", "n5"])
    assert c.event_view_mismatches() == []
