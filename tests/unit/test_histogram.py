"""The log-bucketed histogram behind the handler latency metrics: bucket layout, quantiles
within the stated 1/64 relative error, cumulative counts at Prometheus boundaries."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, strategies as st

from mesh.observe.histogram import MAX_VALUE, LogHistogram, bucket_bounds, bucket_index


@given(st.integers(min_value=0, max_value=MAX_VALUE))
def test_every_value_lies_in_its_bucket_and_buckets_are_narrow(value):
    low, high = bucket_bounds(bucket_index(value))
    assert low <= value <= high
    assert high - low + 1 <= max(1, low // 64)          # relative width <= 1/64
    assert bucket_index(low) == bucket_index(high) == bucket_index(value)


def test_buckets_tile_the_integers():
    expected_low = 0
    for index in range(5000):
        low, high = bucket_bounds(index)
        assert low == expected_low and high >= low
        expected_low = high + 1


@pytest.mark.parametrize("values, q, expected", [
    ([], 0.5, 0),
    ([7], 0.0, 7),
    ([7], 1.0, 7),
    (list(range(1, 101)), 0.5, 50),             # small values are exact
    (list(range(1, 101)), 0.99, 99),
    (list(range(1, 101)), 1.0, 100),
    ([5] * 999 + [100], 0.999, 5),
    ([5] * 998 + [100, 100], 0.999, 100),
])
def test_quantile_table(values, q, expected):
    h = LogHistogram()
    for v in values:
        h.record(v)
    assert h.value_at_quantile(q) == expected


def test_quantiles_of_a_wide_distribution_within_one_sixty_fourth():
    rng = random.Random(7)
    values = [int(rng.lognormvariate(11, 1.5)) for _ in range(20_000)]    # ~60 µs median, in ns
    h = LogHistogram()
    for v in values:
        h.record(v)
    values.sort()
    for q in (0.5, 0.9, 0.99, 0.999, 1.0):
        exact = values[max(0, -(-int(q * len(values)) // 1) - 1)]
        got = h.value_at_quantile(q)
        assert exact <= got <= exact * (1 + 1 / 64) + 1, q
    assert h.count == len(values) and h.total == sum(values) and h.max == values[-1]
    with pytest.raises(ValueError):
        h.value_at_quantile(1.5)


def test_cumulative_counts_at_boundaries():
    h = LogHistogram()
    for v in (0, 5, 100, 127, 128, 1000, 10_000, 10_000_000):
        h.record(v)
    # 1000 and 10_000 fall inside buckets ([1000, 1007], [9984, 10111]): those count above them
    assert h.cumulative([0, 99, 127, 1000, 1007, 10_000, 10**9]) == [1, 2, 4, 5, 6, 6, 8]
    bounds = [10_000, 25_000, 100_000, 1_000_000]
    rng = random.Random(3)
    values = [rng.randrange(2_000_000) for _ in range(5000)]
    h = LogHistogram()
    for v in values:
        h.record(v)
    for bound, got in zip(bounds, h.cumulative(bounds)):
        exact = sum(v <= bound for v in values)
        # a bound inside a bucket leaves that bucket out: at most 1/64 of the bound below it
        assert sum(v <= bound * (1 - 1 / 64) for v in values) <= got <= exact


def test_out_of_range_values_are_clamped_and_merge_adds():
    a, b = LogHistogram(), LogHistogram()
    a.record(-5)
    a.record(MAX_VALUE * 4)
    b.record(3)
    assert a.value_at_quantile(0.0) == 0 and a.max == MAX_VALUE
    a.merge(b)
    assert a.count == 3 and a.total == MAX_VALUE + 3 and a.cumulative([3]) == [2]
