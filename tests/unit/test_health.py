"""The health score of design document 5.1: the formula (table), the sliding window, the mesh figure."""
from __future__ import annotations

import math

import pytest

from mesh.observe.health import HealthWindow, calculate_system_health, health_terms, mesh_health


@pytest.mark.parametrize("avg_response_time_s, throughput_per_s, error_rate, expected", [
    (0.0, 0.0, 0.0, 60.0),          # idle: full response and error terms, no throughput
    (0.0, 100.0, 0.0, 100.0),       # fast, busy, clean
    (0.0, 1000.0, 0.0, 100.0),      # throughput is capped at 100/s
    (0.0, 50.0, 0.0, 80.0),         # 0.4*100 + 0.4*50 + 0.2*100
    (0.05, 100.0, 0.0, 99.8),       # the document's trading case, 50 ms: 0.4*99.5 + 40 + 20
    (1.0, 100.0, 0.0, 96.0),        # 0.4*90 + 40 + 20
    (10.0, 100.0, 0.0, 60.0),       # response term reaches 0 at 10 s
    (60.0, 100.0, 0.0, 60.0),       # ... and stays there
    (0.0, 100.0, 0.05, 99.0),       # 5 % errors: 0.2*95
    (0.0, 100.0, 1.0, 80.0),        # everything fails
    (10.0, 0.0, 1.0, 0.0),          # the worst
    (0.5, 25.0, 0.1, 0.4 * 95 + 0.4 * 25 + 0.2 * 90),
    (-1.0, -5.0, -0.5, 60.0),       # out-of-range inputs are clamped
    (0.0, 100.0, 2.0, 80.0),
])
def test_calculate_system_health_table(avg_response_time_s, throughput_per_s, error_rate, expected):
    assert calculate_system_health(avg_response_time_s, throughput_per_s, error_rate) == pytest.approx(expected)


def test_terms_are_unweighted_and_within_0_100():
    assert health_terms(0.5, 25.0, 0.1) == pytest.approx((95.0, 25.0, 90.0))
    for args in ((0, 0, 0), (1e9, 1e9, 1), (-1, -1, -1)):
        assert all(0.0 <= t <= 100.0 for t in health_terms(*args))


def test_window_scores_the_requests_of_the_last_window():
    w = HealthWindow(window_s=60.0)
    w.sample(0.0, 0, 0, 0.0)
    # 6,000 requests in the first minute, 1 % failed, 2 ms each on average
    p = w.parts(60.0, 6000, 60, 12.0)
    assert p["requests"] == 6000
    assert p["throughput_per_s"] == pytest.approx(100.0)
    assert p["error_rate"] == pytest.approx(0.01)
    assert p["avg_response_time_s"] == pytest.approx(0.002)
    assert p["score"] == pytest.approx(calculate_system_health(0.002, 100.0, 0.01))
    for t in range(10, 130, 10):            # sampled every 10 s; traffic stops at 60 s
        w.sample(float(t), min(t, 60) * 100, min(t, 60), min(t, 60) * 0.2)
    p = w.parts(130.0, 6000, 60, 12.0)
    # the window starts at the sample taken at 70 s: nothing happened since
    assert (p["requests"], p["window_s"], p["score"]) == (0, 60.0, 60.0)
    p = w.parts(125.0, 6000, 60, 12.0)      # between samples: baseline at 60 s, 65 s long
    assert p["window_s"] == 65.0 and p["requests"] == 0


def test_window_before_any_sample_and_when_sampled_rarely():
    w = HealthWindow(window_s=60.0)
    assert w.parts(5.0, 10, 1, 0.1)["requests"] == 0       # no baseline yet: nothing to compare
    w.sample(0.0, 0, 0, 0.0)
    w.sample(100.0, 500, 0, 1.0)                            # sampled less often than the window
    p = w.parts(100.0, 500, 0, 1.0)
    assert p["requests"] == 500 and p["throughput_per_s"] == pytest.approx(5.0)
    with pytest.raises(ValueError):
        HealthWindow(window_s=0)


def test_mesh_health_is_the_mean_of_finite_scores_with_the_minimum():
    assert mesh_health([]) == (None, None)
    assert mesh_health([60.0, 100.0, 80.0]) == (80.0, 60.0)
    assert mesh_health([90.0, math.nan, math.inf]) == (90.0, 90.0)    # from the network: left out
    assert mesh_health([150.0, -20.0]) == (50.0, 0.0)                 # clamped to 0..100
