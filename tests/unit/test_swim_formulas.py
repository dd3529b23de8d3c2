"""SWIM's small pure parts: the formulas (table tests, values computed by hand), the config's
validation, one Lifeguard suspicion timer and the piggyback queue."""
from __future__ import annotations

import dataclasses

import pytest

from mesh.swim.broadcasts import BroadcastQueue
from mesh.swim.config import SwimConfig
from mesh.swim.formulas import (confirmations_expected, push_pull_scale_ms, remaining_suspicion_ms,
                                retransmit_limit, scale_by_health_ms, suspicion_timeout_ms)
from mesh.swim.messages import State, Update
from mesh.swim.suspicion import Suspicion

# -- formulas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mult, n, interval_ms, expected", [
    (4, 0, 500, 2000),         # n < 1 is treated as 1
    (4, 1, 500, 2000),         # log10(1) = 0 -> max(1, .) = 1
    (4, 5, 500, 2000),         # log10(5) = 0.70 -> 1
    (4, 10, 500, 2000),        # log10(10) = 1
    (4, 50, 500, 3397),        # 4 * 1.69897 * 500 = 3397.94, truncated
    (3, 20, 200, 780),         # 3 * 1.30103 * 200 = 780.6
    (4, 100, 500, 4000),       # log10(100) = 2
    (4, 1000, 500, 6000),
    (5, 100, 1000, 10000),
    (1, 10_000, 1, 4),
])
def test_suspicion_timeout_ms(mult, n, interval_ms, expected):
    assert suspicion_timeout_ms(mult, n, interval_ms) == expected


@pytest.mark.parametrize("mult, n, expected", [
    (4, 1, 0),      # k = 2, but n - 2 = -1 < k: nobody could confirm
    (4, 2, 0),
    (4, 3, 0),      # n - 2 = 1 < 2
    (4, 4, 2),      # n - 2 = 2 = k
    (4, 5, 2),
    (4, 100, 2),
    (3, 2, 0),      # k = 1, n - 2 = 0 < 1
    (3, 3, 1),
    (6, 5, 0),      # k = 4, n - 2 = 3 < 4
    (6, 6, 4),
    (2, 10, 0),     # k = 0
    (1, 10, 0),     # k = -1 is clamped to 0
])
def test_confirmations_expected(mult, n, expected):
    assert confirmations_expected(mult, n) == expected


@pytest.mark.parametrize("c, k, elapsed_ms, min_ms, max_ms, expected", [
    (0, 2, 0, 2000, 12000, 12000),      # no confirmation: the maximum
    (2, 2, 0, 2000, 12000, 2000),       # c = k: the minimum
    (1, 2, 0, 2000, 12000, 5690),       # 12000 - 10000 * ln2/ln3 = 5690.7
    (1, 3, 0, 2000, 12000, 7000),       # ln2/ln4 = 1/2
    (2, 3, 0, 2000, 12000, 4075),       # 12000 - 10000 * ln3/ln4 = 4075.2
    (3, 3, 0, 2000, 12000, 2000),
    (5, 2, 0, 2000, 12000, 2000),       # c > k never goes below the minimum
    (0, 0, 0, 2000, 12000, 2000),       # k = 0: the minimum at once
    (3, 0, 0, 2000, 12000, 2000),
    (0, -1, 0, 2000, 12000, 2000),
    (0, 2, 1000, 2000, 12000, 11000),   # minus the time elapsed
    (1, 2, 690, 2000, 12000, 5000),
    (2, 2, 2500, 2000, 12000, -500),    # overdue: negative
    (1, 2, 0, 3000, 3000, 3000),        # min = max
])
def test_remaining_suspicion_ms(c, k, elapsed_ms, min_ms, max_ms, expected):
    assert remaining_suspicion_ms(c, k, elapsed_ms, min_ms, max_ms) == expected


def test_remaining_suspicion_ms_falls_monotonically_from_max_to_min():
    values = [remaining_suspicion_ms(c, 5, 0, 1000, 9000) for c in range(7)]
    assert values[0] == 9000 and values[5] == values[6] == 1000
    assert all(a > b for a, b in zip(values[:5], values[1:6]))


@pytest.mark.parametrize("mult, n, expected", [
    (3, 0, 0),      # log10(1) = 0
    (4, 1, 4),      # ceil(log10 2) = 1
    (4, 9, 4),      # log10(10) = 1 exactly
    (4, 10, 8),     # ceil(log10 11) = 2
    (4, 99, 8),
    (4, 100, 12),
    (4, 1000, 16),  # ceil(log10 1001) = 4
    (2, 5, 2),
])
def test_retransmit_limit(mult, n, expected):
    assert retransmit_limit(mult, n) == expected


@pytest.mark.parametrize("interval_ms, n, expected", [
    (15000, 1, 15000),
    (15000, 31, 15000),
    (15000, 32, 15000),     # up to 32 members: unscaled
    (15000, 33, 30000),     # ceil(log2 33 - 5) + 1 = 2
    (15000, 64, 30000),     # log2 64 - 5 = 1 exactly -> 2
    (15000, 65, 45000),     # 3
    (15000, 128, 45000),
    (15000, 129, 60000),
    (1000, 1024, 6000),     # 10 - 5 + 1
])
def test_push_pull_scale_ms(interval_ms, n, expected):
    assert push_pull_scale_ms(interval_ms, n) == expected


@pytest.mark.parametrize("timeout_ms, score, expected", [
    (500, 0, 500), (500, 1, 1000), (200, 7, 1600), (0, 5, 0), (1, 3, 4),
])
def test_scale_by_health_ms(timeout_ms, score, expected):
    assert scale_by_health_ms(timeout_ms, score) == expected


# -- config ------------------------------------------------------------------------------------

POSITIVE_FIELDS = ["probe_interval_ms", "probe_timeout_ms", "gossip_interval_ms", "push_pull_interval_ms",
                   "reconnect_interval_ms", "suspicion_mult", "retransmit_mult", "gossip_fanout",
                   "max_piggyback", "awareness_max"]


def test_config_defaults_are_valid_and_frozen():
    c = SwimConfig()
    assert c.probe_timeout_ms < c.probe_interval_ms
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.probe_interval_ms = 1


@pytest.mark.parametrize("field", POSITIVE_FIELDS)
@pytest.mark.parametrize("value", [0, -1])
def test_config_rejects_non_positive(field, value):
    with pytest.raises(ValueError, match=field):
        SwimConfig(**{field: value})


@pytest.mark.parametrize("kw, field", [
    ({"probe_timeout_ms": 500, "probe_interval_ms": 500}, "probe_timeout_ms"),
    ({"probe_timeout_ms": 600, "probe_interval_ms": 500}, "probe_timeout_ms"),
    ({"suspicion_max_mult": 0}, "suspicion_max_mult"),
    ({"suspicion_max_mult": -3}, "suspicion_max_mult"),
    ({"indirect_checks": -1}, "indirect_checks"),
])
def test_config_rejects_inconsistent_values(kw, field):
    with pytest.raises(ValueError, match=field):
        SwimConfig(**kw)


@pytest.mark.parametrize("kw", [
    {"indirect_checks": 0}, {"suspicion_max_mult": 1}, {"probe_timeout_ms": 1, "probe_interval_ms": 2},
    {"suspicion_mult": 1}, {"awareness_max": 1},
])
def test_config_accepts_edge_values(kw):
    c = SwimConfig(**kw)
    for name, value in kw.items():
        assert getattr(c, name) == value


# -- suspicion timer -----------------------------------------------------------------------------

def test_suspicion_first_accuser_is_not_a_confirmation():
    s = Suspicion("a", k=2, min_ms=2000, max_ms=12000, now_ms=1000)
    assert s.confirmations == 0
    assert s.deadline_ms == 13000
    assert s.confirm("a") is False
    assert s.confirmations == 0 and s.deadline_ms == 13000


def test_suspicion_confirmations_shrink_the_deadline_to_the_minimum():
    s = Suspicion("a", k=2, min_ms=2000, max_ms=12000, now_ms=1000)
    assert s.confirm("b") is True
    assert (s.confirmations, s.deadline_ms) == (1, 1000 + 5690)
    assert s.confirm("b") is False                   # duplicate
    assert (s.confirmations, s.deadline_ms) == (1, 1000 + 5690)
    assert s.confirm("c") is True
    assert (s.confirmations, s.deadline_ms) == (2, 1000 + 2000)
    assert s.confirm("d") is False                   # no more than k
    assert s.confirmations == 2 and "d" not in s.accusers
    assert s.deadline_ms == 3000


def test_suspicion_deadline_shrinks_monotonically():
    s = Suspicion("n0", k=5, min_ms=1000, max_ms=6000, now_ms=0)
    deadlines = [s.deadline_ms]
    for i in range(1, 9):
        s.confirm(f"n{i}")
        s.confirm(f"n{i}")                           # duplicates change nothing
        deadlines.append(s.deadline_ms)
    assert deadlines[0] == 6000
    assert all(a > b for a, b in zip(deadlines[:5], deadlines[1:6]))
    assert deadlines[5:] == [1000] * 4
    assert s.confirmations == 5


def test_suspicion_with_k_zero_starts_at_the_minimum_and_takes_no_confirmation():
    s = Suspicion("a", k=0, min_ms=2000, max_ms=12000, now_ms=500)
    assert s.deadline_ms == 2500
    assert s.confirm("b") is False
    assert s.confirmations == 0 and s.deadline_ms == 2500


# -- broadcast queue ---------------------------------------------------------------------------

def up(node: str, incarnation: int = 0, state: State = State.ALIVE) -> Update:
    return Update(state, node, incarnation, f"tcp://{node}")


def test_queue_len_and_empty_take():
    q = BroadcastQueue()
    assert len(q) == 0 and q.take(10, 5) == ()
    q.push(up("a"))
    q.push(up("b"))
    assert len(q) == 2
    assert q.take(0, 5) == ()
    assert len(q) == 2


def test_queue_newer_update_about_a_node_replaces_the_old_one():
    q = BroadcastQueue()
    q.push(up("a", 1))
    q.push(up("b", 0))
    q.push(up("a", 2, State.SUSPECT))
    assert len(q) == 2
    assert q.take(10, 5) == (up("a", 2, State.SUSPECT), up("b", 0))


def test_queue_replacement_resets_the_transmit_count():
    q = BroadcastQueue()
    q.push(up("a", 1))
    q.take(1, 3)
    q.take(1, 3)                       # two of three transmissions done
    q.push(up("a", 2))
    assert [q.take(1, 3) for _ in range(4)] == [(up("a", 2),)] * 3 + [()]
    assert len(q) == 0


def test_queue_fewest_transmits_first():
    q = BroadcastQueue()
    q.push(up("old"))
    assert q.take(1, 5) == (up("old"),)
    q.push(up("new"))
    assert q.take(1, 5) == (up("new"),)
    q.push(up("newest"))
    # newest (0 sent), then old and new (1 sent each)
    assert q.take(1, 5) == (up("newest"),)


def test_queue_newest_first_among_untransmitted():
    q = BroadcastQueue()
    for n in "abcde":
        q.push(up(n))
    assert q.take(3, 5) == (up("e"), up("d"), up("c"))
    assert q.take(2, 5) == (up("b"), up("a"))


def test_queue_limit_respected_and_rounds():
    q = BroadcastQueue()
    for i in range(10):
        q.push(up(f"n{i}"))
    first = q.take(4, 5)
    assert first == tuple(up(f"n{i}") for i in (9, 8, 7, 6))
    second = q.take(4, 5)
    assert second == tuple(up(f"n{i}") for i in (5, 4, 3, 2))
    third = q.take(4, 5)
    assert third[:2] == (up("n1"), up("n0"))          # the last never-sent ones first
    assert len(third) == 4 and set(third[2:]) <= set(first + second)
    assert len(q) == 10


def test_queue_drops_after_max_transmits():
    q = BroadcastQueue()
    q.push(up("a"))
    q.push(up("b"))
    for _ in range(3):
        assert sorted(u.node for u in q.take(5, 3)) == ["a", "b"]
    assert q.take(5, 3) == ()
    assert len(q) == 0 and q.pending() == []


def test_queue_max_transmits_one():
    q = BroadcastQueue()
    q.push(up("a"))
    assert q.take(5, 1) == (up("a"),)
    assert len(q) == 0 and q.take(5, 1) == ()


def test_queue_every_update_sent_exactly_max_transmits_times():
    q = BroadcastQueue()
    for i in range(20):
        q.push(up(f"n{i}"))
    counts: dict[str, int] = {}
    while True:
        batch = q.take(3, 4)
        if not batch:
            break
        assert len({u.node for u in batch}) == len(batch)    # no update twice on one message
        for u in batch:
            counts[u.node] = counts.get(u.node, 0) + 1
    assert counts == {f"n{i}": 4 for i in range(20)}


def test_queue_newest_first_among_equal_transmit_counts():
    """The docstring: "fewer transmissions go first, newest first among equals, so fresh news
    spreads fastest" (memberlist orders by transmits, then by insertion, newest first).

    BUG (mesh/swim/broadcasts.py, take): an update moved to the next bucket is appended, so
    within a bucket the order is "most recently transmitted first", which reverses the pushed
    order every round: after one round of a, b, c (pushed in that order) the next take returns
    the OLDEST update first."""
    q = BroadcastQueue()
    for n in "abc":
        q.push(up(n))
    assert q.take(3, 5) == (up("c"), up("b"), up("a"))
    assert q.take(3, 5) == (up("c"), up("b"), up("a"))
