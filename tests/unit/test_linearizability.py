"""The linearizability checker: histories from the literature, the timestamp convention, a
brute-force cross-check, generated histories of a correct store (and of broken ones), scale
and the give-up path. Witnesses are always replayed against an independent reference."""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.sim.linearizability import (CheckResult, History, HistoryError, Op, Outcome, check,
                                      freeze)

# -- helpers -----------------------------------------------------------------------------------


def rec(h: History, client: str, op: str, key: Any = "k", value: Any = None, *, at: float,
        done: float | None = None, result: Any = None, outcome: str = "ok",
        expected: Any = None) -> int:
    """Record one operation: invoked ``at``, ended ``done`` with ``outcome`` (ok/fail/info/open)."""
    i = h.invoke(client, op, key, value, expected=expected, time=at)
    if outcome == "ok":
        h.ok(i, result, time=done)
    elif outcome == "fail":
        h.fail(i, time=done)
    elif outcome == "info":
        h.info(i, time=done)
    else:
        assert outcome == "open"
    return i


def ref_apply(store: dict, op: Op) -> Any:
    """The store's sequential semantics, written apart from the checker's model."""
    k = op.key
    if op.kind in ("put", "write"):
        store[k] = op.value
        return None
    if op.kind in ("get", "read"):
        return store.get(k)
    if op.kind == "delete":
        return store.pop(k, None) is not None
    if op.kind == "cas":
        if store.get(k) == op.expected:
            store[k] = op.value
            return True
        return False
    raise AssertionError(op.kind)


def assert_witness(history: History, res: CheckResult) -> None:
    """The linearization must be a legal sequential run that respects real time and contains
    every acknowledged operation and no failed one."""
    assert res.ok, res.explanation
    lin = res.linearization
    assert lin is not None and len(set(lin)) == len(lin)
    ops = {op.id: op for op in history}
    for op in history:
        if op.known:
            assert op.id in lin, f"acknowledged #{op.id} missing from the linearization"
        if op.outcome is Outcome.FAIL:
            assert op.id not in lin, f"failed #{op.id} in the linearization"
    store: dict = {}
    latest_invoke = float("-inf")
    for i in lin:
        op = ops[i]
        # real time: nothing placed earlier may have been invoked after this one completed
        if op.known:
            assert op.completed_at >= latest_invoke, f"#{i} placed after an op invoked later"
        latest_invoke = max(latest_invoke, op.invoked_at)
        got = ref_apply(store, op)
        if op.known and not (op.kind in ("delete", "cas") and op.result is None):
            assert freeze(got) == freeze(op.result), \
                f"#{i} {op.kind} returned {op.result!r}, the replay gives {got!r}"


# -- literature histories ----------------------------------------------------------------------


def test_sequential_history_is_linearizable_in_its_own_order():
    h = History()
    ids = [rec(h, "c1", "put", "k", 1, at=0, done=1),
           rec(h, "c1", "get", "k", at=2, done=3, result=1),
           rec(h, "c2", "cas", "k", 2, expected=1, at=4, done=5, result=True),
           rec(h, "c2", "cas", "k", 3, expected=1, at=6, done=7, result=False),
           rec(h, "c1", "delete", "k", at=8, done=9, result=True),
           rec(h, "c1", "delete", "k", at=10, done=11, result=False),
           rec(h, "c2", "get", "k", at=12, done=13, result=None),
           rec(h, "c2", "cas", "k", 4, expected=None, at=14, done=15, result=True),
           rec(h, "c1", "get", "k", at=16, done=17, result=4)]
    res = check(h)
    assert res.ok and res.verdict == "linearizable"
    assert res.linearization == ids
    assert res.checked_ops == len(ids) and not res.timed_out and res.states_explored >= len(ids)
    assert_witness(h, res)


def test_stale_read_after_a_completed_write_is_not_linearizable():
    h = History()
    rec(h, "c1", "put", "k", 1, at=0, done=1)
    w2 = rec(h, "c1", "put", "k", 2, at=2, done=3)
    bad = rec(h, "c2", "get", "k", at=4, done=5, result=1)
    res = check(h)
    assert not res.ok and not res.timed_out and res.verdict == "not linearizable"
    assert res.linearization is None
    assert res.bad_key == "k" and res.bad_ops == [bad]
    assert f"#{bad} get k -> 1 at [4, 5]" in res.explanation
    assert f"held only 2 (written by #{w2})" in res.explanation


def test_the_same_read_overlapping_the_second_write_is_linearizable():
    h = History()
    rec(h, "c1", "put", "k", 1, at=0, done=1)
    rec(h, "c1", "put", "k", 2, at=2, done=10)
    rec(h, "c2", "get", "k", at=4, done=5, result=1)
    assert_witness(h, check(h))


def test_two_readers_seeing_two_concurrent_writes_in_opposite_orders():
    def history(b_second: int) -> History:
        h = History()
        rec(h, "w1", "put", "x", 1, at=0, done=10)
        rec(h, "w2", "put", "x", 2, at=0, done=10)
        rec(h, "a", "get", "x", at=1, done=2, result=1)
        rec(h, "a", "get", "x", at=3, done=4, result=2)
        rec(h, "b", "get", "x", at=1, done=2, result=2)
        rec(h, "b", "get", "x", at=3, done=4, result=b_second)
        return h

    assert_witness(history(2), check(history(2)))      # both saw 1 then 2: fine
    res = check(history(1))                            # b saw 2 then 1, a saw 1 then 2
    assert not res.ok and not res.timed_out
    assert res.bad_ops and all(f"#{i}" in res.explanation for i in res.bad_ops)


def test_a_cas_cannot_succeed_twice_on_the_same_expected_value():
    def history(second: bool) -> tuple[History, int, int]:
        h = History()
        rec(h, "c0", "put", "k", 0, at=0, done=1)
        first = rec(h, "c1", "cas", "k", 1, expected=0, at=2, done=10, result=True)
        again = rec(h, "c2", "cas", "k", 2, expected=0, at=3, done=11, result=second)
        return h, first, again

    h, _, _ = history(False)
    assert_witness(h, check(h))
    h, first, again = history(True)
    res = check(h)
    assert not res.ok and res.bad_ops == [again]
    assert f"#{again} cas k 0->2 -> True" in res.explanation
    assert f"was never 0 when it could take effect: it held only 1 (written by #{first})" \
        in res.explanation


def test_a_read_of_a_value_never_written():
    h = History()
    rec(h, "c1", "put", "k", 1, at=0, done=1)
    bad = rec(h, "c2", "get", "k", at=0, done=5, result=7)
    res = check(h)
    assert not res.ok and res.bad_ops == [bad]
    assert "no put of 7 could have preceded it: nothing in this history writes 7" in res.explanation


def test_overlap_makes_an_otherwise_impossible_order_possible():
    # the read completes before the write does, yet sees it: legal only because they overlap
    for write_at, legal in ((0, True), (2, True), (3, False)):
        h = History()
        rec(h, "c1", "get", "k", at=1, done=2, result=5)
        rec(h, "c2", "put", "k", 5, at=write_at, done=10)
        res = check(h)
        assert res.ok is legal, (write_at, res.explanation)
    # and the reverse: a read invoked after a write completed cannot miss it
    h = History()
    rec(h, "c2", "put", "k", 5, at=0, done=1)
    rec(h, "c1", "get", "k", at=2, done=3, result=None)
    assert not check(h).ok
    h = History()
    rec(h, "c2", "put", "k", 5, at=0, done=3)
    rec(h, "c1", "get", "k", at=2, done=3, result=None)
    assert_witness(h, check(h))


@pytest.mark.parametrize("ending", ["info", "open"])
def test_an_unknown_write_may_or_may_not_have_happened(ending):
    for seen, legal in ((1, True), (2, True), (3, False)):
        h = History()
        rec(h, "c1", "put", "k", 1, at=0, done=1)
        maybe = rec(h, "c2", "put", "k", 2, at=2, done=3, outcome=ending)
        rec(h, "c3", "get", "k", at=5, done=6, result=seen)
        res = check(h)
        assert res.ok is legal, (seen, res.explanation)
        if legal:
            assert_witness(h, res)
            assert (maybe in res.linearization) is (seen == 2)


def test_an_unknown_write_may_take_effect_long_after_its_client_gave_up():
    h = History()
    rec(h, "c1", "put", "k", 1, at=0, done=1)
    late = rec(h, "c2", "put", "k", 2, at=2, done=3, outcome="info")
    rec(h, "c3", "get", "k", at=100, done=101, result=1)
    rec(h, "c3", "get", "k", at=200, done=201, result=2)     # the delayed write landed
    res = check(h)
    assert_witness(h, res)
    assert res.linearization.index(late) == 2      # between the two reads
    rec(h, "c3", "get", "k", at=300, done=301, result=1)     # but it cannot be undone
    assert not check(h).ok


def test_an_unknown_write_observed_before_it_was_invoked():
    h = History()
    w1 = rec(h, "c1", "put", "k", 1, at=0, done=1)
    bad = rec(h, "c3", "get", "k", at=2, done=3, result=2)
    late = rec(h, "c2", "put", "k", 2, at=4, done=5, outcome="info")
    res = check(h)
    assert not res.ok and res.bad_ops == [bad]
    assert f"no put of 2 could have preceded it: the writes of 2 (#{late}) were invoked only " \
           f"after it completed" in res.explanation
    assert f"#{w1} put k 1" in res.explanation


def test_a_failed_write_never_took_effect():
    h = History()
    rec(h, "c1", "put", "k", 1, at=0, done=1)
    rec(h, "c2", "put", "k", 2, at=2, done=3, outcome="fail")
    rec(h, "c3", "get", "k", at=5, done=6, result=1)
    assert_witness(h, check(h))
    rec(h, "c3", "get", "k", at=7, done=8, result=2)
    res = check(h)
    assert not res.ok and "nothing in this history writes 2" in res.explanation


def test_delete_reports_whether_the_key_existed():
    h = History()
    rec(h, "c1", "delete", "k", at=0, done=1, result=False)
    rec(h, "c1", "put", "k", "v", at=2, done=3)
    rec(h, "c1", "delete", "k", at=4, done=5, result=True)
    rec(h, "c1", "get", "k", at=6, done=7, result=None)
    assert_witness(h, check(h))
    h = History()
    rec(h, "c1", "put", "k", "v", at=0, done=1)
    bad = rec(h, "c1", "delete", "k", at=2, done=3, result=False)
    res = check(h)
    assert not res.ok and res.bad_ops == [bad] and "found k absent" in res.explanation


# -- the timestamp convention ------------------------------------------------------------------


@pytest.mark.parametrize("read_at, legal", [(10, True), (11, False)])
def test_equal_times_are_concurrent(read_at, legal):
    """A write completing at t and a read invoked at t may be ordered either way; only a
    strictly later invocation orders them."""
    h = History()
    rec(h, "c1", "put", "k", 1, at=0, done=10)
    rec(h, "c2", "get", "k", at=read_at, done=20, result=None)
    assert check(h).ok is legal
    h = History()
    rec(h, "c1", "put", "k", 1, at=0, done=10)
    rec(h, "c2", "get", "k", at=read_at, done=20, result=1)
    assert_witness(h, check(h))


def test_zero_length_windows():
    h = History()
    rec(h, "c1", "put", "k", 1, at=5, done=5)
    rec(h, "c2", "get", "k", at=5, done=5, result=None)   # same instant: either order
    rec(h, "c3", "get", "k", at=6, done=6, result=1)
    assert_witness(h, check(h))


# -- models, partitions, the API ---------------------------------------------------------------


def test_keys_are_independent_in_kv_but_not_in_the_register():
    h = History()
    rec(h, "c1", "put", "a", 1, at=0, done=1)
    rec(h, "c1", "put", "b", 2, at=2, done=3)
    rec(h, "c2", "get", "a", at=4, done=5, result=1)
    res = check(h, "kv")
    assert res.partitions == 2
    assert_witness(h, res)
    assert not check(h, "register").ok        # one register: the read should see 2


def test_register_model_reads_and_writes():
    h = History()
    rec(h, "c1", "write", None, 1, at=0, done=1)
    rec(h, "c2", "read", None, at=2, done=3, result=1)
    rec(h, "c2", "cas", None, 2, expected=1, at=4, done=5, result=True)
    rec(h, "c1", "read", None, at=6, done=7, result=2)
    res = check(h, "register")
    assert res.ok and res.linearization == [0, 1, 2, 3]
    with pytest.raises(HistoryError, match="no operation 'delete'"):
        check([*h, Op(9, "c", "delete", None, None, None, 8)], "register")


def test_the_linearization_respects_real_time_across_keys():
    h = History()
    a = rec(h, "c1", "put", "a", 1, at=0, done=100)     # long, concurrent with everything
    b = rec(h, "c2", "put", "b", 1, at=1, done=2)
    c = rec(h, "c2", "get", "a", at=3, done=4, result=None)   # so a's put goes after this
    d = rec(h, "c2", "get", "b", at=5, done=6, result=1)
    res = check(h)
    assert_witness(h, res)
    assert res.linearization.index(b) < res.linearization.index(c) < res.linearization.index(d)
    assert res.linearization.index(c) < res.linearization.index(a)


@dataclass(slots=True)
class Counter:
    """A fetch-and-increment counter: a model written against the protocol, outside the module."""

    name: str = "counter"

    def init(self) -> int:
        return 0

    def step(self, state: int, op: Op) -> tuple[bool, int]:
        return (op.unknown or op.result == state + 1), state + 1

    def partition(self, ops):
        return {None: list(ops)}


def test_models_are_pluggable():
    h = History()
    rec(h, "c1", "incr", at=0, done=10, result=2)
    rec(h, "c2", "incr", at=1, done=2, result=1)
    rec(h, "c3", "incr", at=3, done=4, outcome="info")
    rec(h, "c1", "incr", at=11, done=12, result=4)
    res = check(h, Counter())
    assert res.ok and res.linearization == [1, 0, 2, 3]
    rec(h, "c2", "incr", at=13, done=14, result=4)
    res = check(h, Counter())
    assert not res.ok and res.bad_ops == [4] and "#4 incr" in res.explanation


def test_values_of_any_shape_are_compared_by_value():
    h = History()
    rec(h, "c1", "put", "k", {"px": [1, 2], "n": {3}}, at=0, done=1)
    rec(h, "c2", "get", "k", at=2, done=3, result={"n": {3}, "px": (1, 2)})  # msgpack-ish
    rec(h, "c2", "cas", "k", [9], expected={"px": [1, 2], "n": {3}}, at=4, done=5, result=True)
    rec(h, "c1", "get", "k", at=6, done=7, result=[9])
    assert check(h).ok


def test_history_validation_and_records_round_trip():
    h = History()
    with pytest.raises(HistoryError):
        h.invoke("c", "put", "k", 1)                      # no time, no clock
    i = h.invoke("c", "put", "k", 1, time=5)
    with pytest.raises(HistoryError, match="before its invocation"):
        h.ok(i, time=4)
    h.ok(i, time=6)
    with pytest.raises(HistoryError, match="already ended"):
        h.info(i, time=7)
    with pytest.raises(HistoryError, match="no operation with id"):
        h.ok(42, time=7)
    with pytest.raises(HistoryError, match="must be a number"):
        h.invoke("c", "get", "k", time=float("nan"))
    j = h.invoke("c", "cas", "k", 2, expected=1, time=8)
    h.ok(j, "yes", time=9)
    with pytest.raises(HistoryError, match="must complete with a bool"):
        check(h)
    with pytest.raises(HistoryError, match="no model named"):
        check(History(), "queue")

    now = iter(range(100, 200))
    h = History(clock=lambda: next(now))
    a = h.invoke("c1", "put", "k", 1)
    h.ok(a)
    b = h.invoke("c2", "put", "k", 2)
    h.info(b)
    c = h.invoke("c3", "get", "k")
    h.fail(c)
    h.invoke("c4", "delete", "k")
    again = History.from_records(h.to_records())
    assert again.ops == h.ops
    assert [o.outcome for o in again] == [Outcome.OK, Outcome.INFO, Outcome.FAIL, Outcome.PENDING]
    assert h[0].invoked_at == 100 and h[0].completed_at == 101


# -- brute force agrees on small histories -----------------------------------------------------


def brute_force(ops: list[Op]) -> bool:
    """Try every subset of unknown writes and every order: the definition, nothing clever."""
    live = [o for o in ops if o.outcome is not Outcome.FAIL]
    must = [o for o in live if o.known]
    maybe = [o for o in live if o.unknown and o.kind != "get"]
    for r in range(len(maybe) + 1):
        for extra in itertools.combinations(maybe, r):
            for order in itertools.permutations(must + list(extra)):
                if any(b.known and b.completed_at < a.invoked_at
                       for x, a in enumerate(order) for b in order[x + 1:]):
                    continue
                store: dict = {}
                if all(ref_apply(store, o) == o.result or not o.known or o.kind == "put"
                       for o in order):
                    return True
    return False


small_op = st.tuples(
    st.sampled_from(["put", "get", "delete", "cas"]),
    st.sampled_from(["a", "b"]),
    st.sampled_from([1, 2]),                        # value / new value
    st.sampled_from([None, 1, 2]),                  # cas expected
    st.integers(0, 8),                              # invoked at
    st.integers(0, 4),                              # duration (0: an instant; ties abound)
    st.sampled_from(["ok", "ok", "ok", "info", "open", "fail"]),
    st.sampled_from([None, 1, 2, True, False]),     # result (re-typed per kind below)
)


# one key, cas-heavy, mostly unknown outcomes: the cuts for unknown operations at work
unknown_heavy_op = st.tuples(
    st.sampled_from(["put", "get", "delete", "cas", "cas", "cas"]),
    st.just("a"),
    st.sampled_from([1, 2]),
    st.sampled_from([None, 1, 2]),
    st.integers(0, 6),
    st.integers(0, 6),
    st.sampled_from(["ok", "ok", "info", "open"]),
    st.sampled_from([None, 1, 2, True, False]),
)


def prefix_at(ops: list[Op], t: float) -> list[Op]:
    """The history as it stood at ``t``: running ops become unknown, later ones vanish."""
    return [o if not (o.known and o.completed_at > t)
            else Op(o.id, o.client, o.kind, o.key, o.value, o.expected, o.invoked_at)
            for o in ops if o.invoked_at <= t]


def _small_history(specs) -> History:
    h = History()
    for n, (kind, key, value, expected, at, dur, outcome, result) in enumerate(specs):
        if kind in ("delete", "cas"):
            result = bool(result)
        elif kind == "put":
            result = None
        elif result in (True, False):
            result = None
        rec(h, f"c{n}", kind, key, value, expected=expected, at=at, done=at + dur,
            result=result, outcome=outcome)
    return h


def _agrees_with_brute_force(h: History) -> None:
    res = check(h)
    ops = list(h)
    assert res.ok is brute_force(ops), res.explanation
    if res.ok:
        assert_witness(h, res)
        return
    # the blamed prefix is the smallest that fails: all blamed ops complete at its end,
    # the key's history up to the completion before it is linearizable, up to it is not
    ops = [o for o in ops if o.key == res.bad_key]
    end = h[res.bad_ops[0]].completed_at
    assert set(res.bad_ops) == {o.id for o in ops if o.known and o.completed_at == end}
    assert not brute_force(prefix_at(ops, end))
    before = [o.completed_at for o in ops if o.known and o.completed_at < end]
    if before:
        assert brute_force(prefix_at(ops, max(before)))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(small_op, min_size=1, max_size=6))
def test_agrees_with_brute_force_on_small_histories(specs):
    _agrees_with_brute_force(_small_history(specs))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(unknown_heavy_op, min_size=1, max_size=7))
def test_agrees_with_brute_force_on_unknown_heavy_histories(specs):
    _agrees_with_brute_force(_small_history(specs))


# -- generated histories of a correct (and of a broken) store ---------------------------------


@dataclass(slots=True)
class Generated:
    history: History
    truth: dict[int, Any] = field(default_factory=dict)   # op id -> result in the correct run
    bad: int | None = None          # the op the injected fault certainly makes impossible
    divergent: set[int] = field(default_factory=set)      # acknowledged ops whose result changed


@dataclass(slots=True)
class _Planned:
    client: str
    kind: str
    key: str
    value: Any
    expected: Any
    invoked_at: float
    completed_at: float
    fate: str                       # ok | info | open | fail
    effect_at: float | None         # when it takes effect; None: never
    id: int = -1
    result: Any = None


def _plan(rng: random.Random, clients: int, ops_per_client: int, keys: int,
          unknown_p: float, fail_p: float) -> list[_Planned]:
    fresh = itertools.count(1)      # every write writes a value never written before
    written: dict[str, list[int]] = {}
    plan = []
    for c in range(clients):
        t = rng.uniform(0, 5)
        for _ in range(ops_per_client):
            kind = rng.choices(("put", "get", "delete", "cas"), (4, 5, 1, 2))[0]
            key = f"k{rng.randrange(keys)}"
            value = expected = None
            if kind in ("put", "cas"):
                value = next(fresh)
            if kind == "cas":
                expected = rng.choice(written.get(key, [])[-3:] + [None])
            if value is not None:
                written.setdefault(key, []).append(value)
            duration = rng.expovariate(1 / 4)
            roll = rng.random()
            fate = ("fail" if roll < fail_p else
                    rng.choice(("info", "open")) if roll < fail_p + unknown_p else "ok")
            if fate == "ok":
                effect = rng.uniform(t, t + duration)
            elif fate == "fail" or rng.random() < 0.5:
                effect = None       # never sent / the request was lost
            else:                   # the reply was lost: it happened, maybe long after
                effect = t + rng.uniform(0, duration + 40)
            plan.append(_Planned(f"c{c}", kind, key, value, expected, t, t + duration, fate,
                                 effect))
            t += duration + rng.expovariate(1 / 2)
    return plan


def _run(plan: list[_Planned], lost: int | None = None) -> dict[int, Any]:
    """Apply the effects in effect order to one dict; ``lost``: an acknowledged put the
    broken store forgets. Returns each planned op's result by index."""
    store: dict = {}
    results = {}
    for n, p in sorted(enumerate(plan), key=lambda x: (x[1].effect_at is None,
                                                       x[1].effect_at or 0.0)):
        if p.effect_at is None:
            continue
        k = p.key
        if p.kind == "put":
            if n != lost:
                store[k] = p.value
            results[n] = None
        elif p.kind == "get":
            results[n] = store.get(k)
        elif p.kind == "delete":
            results[n] = store.pop(k, None) is not None
        elif store.get(k) == p.expected:
            store[k] = p.value
            results[n] = True
        else:
            results[n] = False
    return results


def _record(plan: list[_Planned], results: dict[int, Any]) -> History:
    h = History()
    events = []
    for n, p in enumerate(plan):
        events.append((p.invoked_at, 0, n))
        if p.fate != "open":
            events.append((p.completed_at, 1, n))
    for t, kind, n in sorted(events):
        p = plan[n]
        if kind == 0:
            p.id = h.invoke(p.client, p.kind, p.key, p.value, expected=p.expected, time=t)
        elif p.fate == "ok":
            h.ok(p.id, results[n], time=t)
        elif p.fate == "fail":
            h.fail(p.id, time=t)
        else:
            h.info(p.id, time=t)
    return h


def generate(seed: int, *, clients: int = 4, ops_per_client: int = 25, keys: int = 3,
             unknown_p: float = 0.1, fail_p: float = 0.05, fault: str | None = None) -> Generated:
    rng = random.Random(seed)
    plan = _plan(rng, clients, ops_per_client, keys, unknown_p, fail_p)
    truth = _run(plan)
    results = dict(truth)
    bad = None
    oks = [n for n, p in enumerate(plan) if p.fate == "ok"]
    if fault == "stale_read":
        # a read returns P's value although a later write Q certainly overwrote it first
        puts = [n for n in oks if plan[n].kind == "put"]
        # for each put P: the earliest completion of a put on its key invoked after P completed
        overwritten_by = {p: min((plan[q].completed_at for q in puts
                                  if plan[q].key == plan[p].key
                                  and plan[q].invoked_at > plan[p].completed_at),
                                 default=float("inf")) for p in puts}
        cands = [(g, p) for g in oks if plan[g].kind == "get"
                 for p in puts if plan[p].key == plan[g].key and results[g] != plan[p].value
                 and overwritten_by[p] < plan[g].invoked_at]
        if cands:
            bad, p = rng.choice(cands)
            results[bad] = plan[p].value
    elif fault == "lost_write":
        # the store acknowledges P and forgets it; a later read certainly exposes that:
        # it sees a value whose only writer completed before P was invoked
        puts = [n for n in oks if plan[n].kind == "put"]
        rng.shuffle(puts)
        writer = {plan[n].value: n for n in oks if plan[n].kind in ("put", "cas")}
        for lost in puts:
            broken = _run(plan, lost)
            P = plan[lost]
            for g in sorted(oks, key=lambda n: plan[n].completed_at):
                G = plan[g]
                if G.kind != "get" or G.key != P.key or G.invoked_at <= P.completed_at:
                    continue
                w = writer.get(broken[g])
                if (w is not None and plan[w].completed_at < P.invoked_at
                        and not (plan[w].kind == "cas" and not broken[w])):
                    results, bad = broken, g
                    break
            if bad is not None:
                break
    h = _record(plan, results)
    ids = {n: p.id for n, p in enumerate(plan)}
    divergent = {ids[n] for n in oks if results[n] != truth[n]}
    return Generated(h, {ids[n]: r for n, r in truth.items()},
                     None if bad is None else ids[bad], divergent)


SEEDS = range(300)


def textbook_wgl(ops: list[Op]) -> bool:
    """Plain WGL with Lowe's (set, state) memo, per key, none of the checker's other cuts:
    slow, but small enough to trust, and it handles histories too long for brute force."""
    by_key: dict = {}
    for o in ops:
        if o.outcome is not Outcome.FAIL and not (o.unknown and o.kind == "get"):
            by_key.setdefault(o.key, []).append(o)
    for kops in by_key.values():
        events = sorted([(o.invoked_at, 0, i) for i, o in enumerate(kops)]
                        + [(o.completed_at, 1, i) for i, o in enumerate(kops) if o.known])
        seen: set = set()

        def search(done: int, store: dict, returns_left: int) -> bool:
            if not returns_left:
                return True
            for _, is_return, i in events:
                if done >> i & 1:
                    continue
                if is_return:
                    return False            # an op completed and is still not linearized
                after = dict(store)
                got = ref_apply(after, kops[i])
                if kops[i].known and kops[i].kind != "put" and got != kops[i].result:
                    continue
                memo = (done | 1 << i, after.get(kops[i].key))
                if memo not in seen:
                    seen.add(memo)
                    if search(done | 1 << i, after, returns_left - kops[i].known):
                        return True
            return False

        if not search(0, {}, sum(o.known for o in kops)):
            return False
    return True


def test_agrees_with_textbook_wgl_on_medium_histories():
    """Generated histories of 18-50 ops, most with one result changed at random."""
    disagreements, verdicts = [], set()
    for seed in range(200):
        rng = random.Random(seed)
        g = generate(seed, clients=rng.choice([3, 4, 5]), ops_per_client=rng.choice([6, 8, 10]),
                     keys=rng.choice([1, 2]), unknown_p=rng.choice([0.1, 0.3]))
        ops = list(g.history)
        known = [o for o in ops if o.known and o.kind != "put"]
        if known and rng.random() < 0.6:
            o = rng.choice(known)
            result = (not o.result if o.kind != "get"
                      else rng.choice([None] + [p.value for p in ops if p.value is not None]))
            ops[o.id] = Op(o.id, o.client, o.kind, o.key, o.value, o.expected, o.invoked_at,
                           o.completed_at, o.outcome, result)
        expected = textbook_wgl(ops)
        verdicts.add(expected)
        if check(ops, timeout_s=10.0).ok is not expected:
            disagreements.append(seed)
    assert not disagreements
    assert verdicts == {True, False}


def test_every_generated_history_of_a_correct_store_checks_ok():
    unknown = 0
    for seed in SEEDS:
        g = generate(seed)
        res = check(g.history, timeout_s=5.0)
        assert res.ok, f"seed {seed}: {res.explanation}"
        assert_witness(g.history, res)
        unknown += sum(1 for op in g.history if op.unknown)
    assert unknown > len(SEEDS) * 5          # the unknown-outcome paths were exercised


@pytest.mark.parametrize("fault", ["stale_read", "lost_write"])
def test_an_injected_fault_is_found_and_blamed(fault):
    injected = 0
    for seed in SEEDS[:150]:
        g = generate(seed, fault=fault)
        if g.bad is None:
            continue                          # this run offered no certain place for it
        injected += 1
        res = check(g.history, timeout_s=5.0)
        assert not res.ok and not res.timed_out, f"seed {seed}: {fault} not detected"
        assert res.bad_key == g.history[g.bad].key
        # the blamed op is one whose result the fault changed (for a stale read, exactly it)
        assert len(res.bad_ops) == 1 and res.bad_ops[0] in g.divergent, (seed, res.explanation)
        if fault == "stale_read":
            assert res.bad_ops == [g.bad]
        assert f"#{res.bad_ops[0]} get" in res.explanation or \
               f"#{res.bad_ops[0]} cas" in res.explanation or \
               f"#{res.bad_ops[0]} delete" in res.explanation, res.explanation
        assert "why: " in res.explanation
    assert injected >= 100, f"only {injected} of 150 runs took a {fault}"


def test_scale_five_clients_two_thousand_ops_twenty_keys():
    g = generate(2024, clients=5, ops_per_client=400, keys=20)
    assert len(g.history) == 2000
    started = perf_counter()
    res = check(g.history, timeout_s=60.0)
    elapsed = perf_counter() - started
    assert res.ok, res.explanation
    assert res.partitions == 20
    assert_witness(g.history, res)
    print(f"\n[linearizability] 2000 ops, 5 clients, 20 keys: {elapsed * 1000:.0f} ms, "
          f"{res.states_explored} states")
    g = generate(2024, clients=5, ops_per_client=400, keys=20, fault="stale_read")
    started = perf_counter()
    res = check(g.history, timeout_s=60.0)
    elapsed = perf_counter() - started
    assert not res.ok and res.bad_ops == [g.bad]
    print(f"[linearizability] same with one stale read, found and explained: "
          f"{elapsed * 1000:.0f} ms, {res.states_explored} states")


def test_scale_one_hot_key():
    """All 2000 ops on one key, 10 % of them with unknown outcomes: the hard case for WGL."""
    g = generate(7, clients=5, ops_per_client=400, keys=1)
    started = perf_counter()
    res = check(g.history, timeout_s=60.0)
    elapsed = perf_counter() - started
    assert res.ok, res.explanation
    assert_witness(g.history, res)
    print(f"\n[linearizability] 2000 ops, 5 clients, 1 key, "
          f"{sum(o.unknown for o in g.history)} unknown outcomes: {elapsed * 1000:.0f} ms, "
          f"{res.states_explored} states")


# -- giving up -------------------------------------------------------------------------------


def _pathological(n: int = 120, values: int = 24) -> History:
    """n concurrent compare-and-sets of unknown outcome between random pairs of values, then
    a read of a value none of them writes: to prove it impossible the search must follow
    every chain of swaps the cas ops could have formed, and there are exponentially many.
    (n concurrent unknown *puts* are easy: the checker tries only one write per value.)"""
    rng = random.Random(1)
    h = History()
    rec(h, "c0", "put", "k", 0, at=0, done=1)
    for c in range(n):
        a, b = rng.sample(range(values), 2)
        rec(h, f"c{c + 1}", "cas", "k", b, expected=a, at=2 + c * 0.001, outcome="open")
    rec(h, "r", "get", "k", at=10, done=11, result=-1)
    return h


def test_many_concurrent_unknown_writes_are_cheap_when_they_are_blind():
    h = History()
    for c in range(60):
        rec(h, f"c{c}", "put", "k", c, at=c * 0.01, done=1, outcome="info")
    rec(h, "r", "get", "k", at=2, done=3, result=59)
    rec(h, "r", "get", "k", at=4, done=5, result=7)
    rec(h, "r", "get", "k", at=6, done=7, result=8)
    res = check(h, timeout_s=5.0)
    assert_witness(h, res)
    rec(h, "r", "get", "k", at=8, done=9, result=7)       # 7 again: its put is used up
    res = check(h, timeout_s=5.0)
    assert not res.ok and not res.timed_out and res.bad_ops == [63]


def test_a_pathological_history_times_out_instead_of_hanging():
    started = perf_counter()
    res = check(_pathological(), timeout_s=0.3)
    elapsed = perf_counter() - started
    assert res.timed_out and not res.ok and res.verdict == "unknown"
    assert res.linearization is None and res.bad_ops == []
    assert res.states_explored > 1000
    assert "time budget spent" in res.explanation
    print(f"\n[linearizability] pathological history: gave up after {elapsed:.2f} s "
          f"(budget 0.3 s), {res.states_explored} states")


def test_the_state_budget_bounds_memory():
    res = check(_pathological(), timeout_s=30.0, max_states=2_000)
    assert res.timed_out and "state budget (2000) spent" in res.explanation


def test_a_violation_on_another_key_is_still_found_after_giving_up_on_one():
    h = _pathological()                    # 122 ops: searched first, as the smaller key
    for n in range(65):
        rec(h, "x", "put", "other", n, at=4 * n, done=4 * n + 1)
        rec(h, "x", "get", "other", at=4 * n + 2, done=4 * n + 3, result=n)
    rec(h, "x", "get", "other", at=1000, done=1001, result=-1)
    res = check(h, max_states=2_000)
    assert not res.ok and not res.timed_out and res.bad_key == "other"
