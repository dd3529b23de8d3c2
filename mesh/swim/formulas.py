"""The formulas of SWIM and Lifeguard, as small pure functions (table-tested).

Units: times in milliseconds, ``n`` = members believed alive or suspect, self included.
"""
from __future__ import annotations

import math


def suspicion_timeout_ms(mult: int, n: int, interval_ms: int) -> int:
    """Minimum suspicion timeout: ``mult * max(1, log10(n)) * interval`` (memberlist)."""
    return int(mult * max(1.0, math.log10(max(1, n))) * interval_ms)


def confirmations_expected(mult: int, n: int) -> int:
    """Lifeguard's k: independent suspicions that shrink the timeout to its minimum.
    ``mult - 2``, or 0 when there are too few other members to confirm."""
    k = mult - 2
    return 0 if n - 2 < k else max(0, k)


def remaining_suspicion_ms(confirmations: int, k: int, elapsed_ms: int, min_ms: int, max_ms: int) -> int:
    """Lifeguard dynamic suspicion: the timeout falls from ``max`` towards ``min`` as
    ``max - (max - min) * log(c + 1) / log(k + 1)`` with ``c`` confirmations; minus time elapsed."""
    if k <= 0:
        timeout = min_ms
    else:
        frac = math.log(confirmations + 1) / math.log(k + 1)
        timeout = max(min_ms, int(max_ms - (max_ms - min_ms) * frac))
    return timeout - elapsed_ms


def retransmit_limit(mult: int, n: int) -> int:
    """How many times an update is piggybacked: ``mult * ceil(log10(n + 1))``."""
    return mult * math.ceil(math.log10(n + 1))


def push_pull_scale_ms(interval_ms: int, n: int) -> int:
    """memberlist's pushPullScale: above 32 members the push-pull interval grows with
    ``ceil(log2(n) - log2(32)) + 1`` so full-state syncs stay O(1) per node per second."""
    if n <= 32:
        return interval_ms
    return int(interval_ms * (math.ceil(math.log2(n) - math.log2(32)) + 1))


def scale_by_health_ms(timeout_ms: int, score: int) -> int:
    """Lifeguard local health: an unhealthy node waits longer before blaming others."""
    return timeout_ms * (score + 1)
