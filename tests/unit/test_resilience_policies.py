"""The circuit breaker, retry backoff, deadline budget and mailbox, with time passed in."""
from __future__ import annotations

from random import Random

import pytest

from mesh.resilience.breaker import BreakerConfig, CircuitBreaker, State
from mesh.resilience.bulkhead import Mailbox
from mesh.resilience.deadline import budget_s
from mesh.resilience.retry import RetryPolicy, backoff_cap_s


def breaker(**kw) -> CircuitBreaker:
    cfg = dict(failure_rate=0.5, min_calls=10, window_s=10.0, buckets=10, open_s=5.0, probes=2)
    cfg.update(kw)
    return CircuitBreaker(BreakerConfig(**cfg))


def feed(b: CircuitBreaker, outcomes: str, now: float, step: float = 0.0) -> float:
    """'.' success, 'x' failure; each one allowed first (as the runtime does)."""
    for ch in outcomes:
        assert b.allow(now)
        b.record(ch == ".", now)
        now += step
    return now


@pytest.mark.parametrize("outcomes, state", [
    ("xxxxxxxxx", State.CLOSED),        # 9 failures: below min_calls, no verdict yet
    ("xxxxxxxxxx", State.OPEN),         # 10 of 10
    (".....xxxxx", State.OPEN),         # 50% of 10: the rate reaches the threshold
    ("......xxxx", State.CLOSED),       # 40%
    ("." * 100 + "x" * 99, State.CLOSED),   # 99 / 199 < 50%
    ("." * 100 + "x" * 100, State.OPEN),
])
def test_opens_on_the_failure_rate_with_a_minimum_of_calls(outcomes, state):
    b = breaker()
    feed(b, outcomes, 0.0)
    assert b.state is state


def test_old_outcomes_slide_out_of_the_window():
    b = breaker()
    feed(b, "xxxxxxxxx", 0.0)           # 9 failures at t=0
    feed(b, ".", 10.5)                   # the window (10 s) has moved past them
    assert b.failure_rate(10.5) == 0.0
    feed(b, "xxxxxxxx", 10.5)            # 8 failures + 1 success: 9 calls, below the minimum
    assert b.state is State.CLOSED
    feed(b, "x", 11.0)
    assert b.state is State.OPEN         # 9 of 10 in the window


def test_open_fails_fast_then_half_open_probes_close_it():
    b = breaker()
    feed(b, "x" * 10, 0.0)
    assert b.state is State.OPEN
    assert not b.allow(4.9)                      # open_s = 5
    assert b.allow(5.0) and b.state is State.HALF_OPEN
    assert b.allow(5.0)                          # second probe
    assert not b.allow(5.0)                      # probes = 2: no third at once
    b.record(True, 5.1)
    assert b.state is State.HALF_OPEN
    b.record(True, 5.2)
    assert b.state is State.CLOSED
    assert b.failure_rate(5.2) == 0.0            # closes with a clean window
    feed(b, "x" * 9, 5.3)
    assert b.state is State.CLOSED               # the old failures do not count


def test_a_failed_probe_reopens_for_another_period():
    b = breaker()
    feed(b, "x" * 10, 0.0)
    assert b.allow(6.0)
    b.record(False, 6.0)
    assert b.state is State.OPEN
    assert not b.allow(10.9)
    assert b.allow(11.0)


def test_a_probe_cancelled_by_its_caller_gives_its_slot_back():
    b = breaker(probes=1)
    feed(b, "x" * 10, 0.0)
    assert b.allow(5.0)
    assert not b.allow(5.0)
    b.forget()
    assert b.allow(5.0)


def test_outcomes_of_calls_started_before_opening_do_not_count_while_open():
    b = breaker()
    feed(b, "x" * 10, 0.0)
    b.record(True, 1.0)
    assert b.state is State.OPEN


@pytest.mark.parametrize("kw", [dict(failure_rate=0.0), dict(failure_rate=1.5), dict(min_calls=0),
                                dict(buckets=0), dict(probes=0), dict(window_s=0), dict(open_s=-1)])
def test_bad_breaker_config_is_refused(kw):
    with pytest.raises(ValueError):
        BreakerConfig(**kw)


@pytest.mark.parametrize("retry, cap", [(0, 0.01), (1, 0.02), (2, 0.04), (6, 0.64), (7, 1.0), (500, 1.0)])
def test_backoff_cap_grows_exponentially_up_to_the_maximum(retry, cap):
    assert backoff_cap_s(0.01, 2.0, 1.0, retry) == pytest.approx(cap)


def test_backoff_is_full_jitter_within_the_cap():
    policy = RetryPolicy(attempts=5, base_s=0.01, max_s=1.0)
    rng = Random(1)
    waits = [policy.backoff_s(3, rng) for _ in range(2000)]
    assert all(0.0 <= w <= 0.08 for w in waits)
    assert min(waits) < 0.01 and max(waits) > 0.07     # spread over the whole range


@pytest.mark.parametrize("kw", [dict(attempts=0), dict(base_s=-1), dict(multiplier=0.5)])
def test_bad_retry_policy_is_refused(kw):
    with pytest.raises(ValueError):
        RetryPolicy(**kw)


@pytest.mark.parametrize("timeout, deadline_us, now_us, expect", [
    (5.0, 0, 1_000_000, 5.0),               # no inherited deadline
    (5.0, 1_300_000, 1_000_000, 0.3),       # 0.3 s left of the caller's budget
    (0.1, 1_300_000, 1_000_000, 0.1),       # its own timeout is tighter
    (5.0, 900_000, 1_000_000, -0.1),        # spent
])
def test_budget_is_the_tighter_of_timeout_and_inherited_deadline(timeout, deadline_us, now_us, expect):
    assert budget_s(timeout, deadline_us, now_us) == pytest.approx(expect)


def test_mailbox_admits_up_to_the_limit_then_queues_then_refuses():
    box = Mailbox(max_concurrency=2, mailbox=1)
    verdicts = []
    for _ in range(4):
        v = box.admit()
        verdicts.append(v)
        if v == 1:
            box.running += 1
        elif v == 0:
            box.queue.append(object())
    assert verdicts == [1, 1, 0, -1]


def test_mailbox_without_a_concurrency_limit_bounds_handlers_in_flight():
    box = Mailbox(max_concurrency=None, mailbox=3)
    box.running = 3
    assert box.admit() == -1
    box.done(1.0, True)
    assert box.admit() == 1
    assert box.load()["calls"] == 1


def test_mailbox_refuses_nonsense_limits():
    with pytest.raises(ValueError):
        Mailbox(max_concurrency=0, mailbox=10)
    with pytest.raises(ValueError):
        Mailbox(max_concurrency=1, mailbox=-1)


def test_refusing_tells_what_allow_would_do_without_changing_anything():
    b = breaker(probes=1)
    assert not b.refusing(0.0)
    feed(b, "x" * 10, 0.0)
    assert b.refusing(4.9)
    assert not b.refusing(5.0) and b.state is State.OPEN     # asking does not move it to half-open
    assert b.allow(5.0) and b.state is State.HALF_OPEN
    assert b.refusing(5.0)                                   # its one probe is out
    assert not b.allow(5.0)
