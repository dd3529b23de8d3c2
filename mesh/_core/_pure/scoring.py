"""Load scores and the power-of-two-choices pick behind ``call_any``.

Theory of operation
-------------------
Each target (an agent that ``call_any`` may choose) has four numbers: calls in flight, an
exponentially weighted moving average (EWMA) of call latency in microseconds, an EWMA of the
error rate in [0, 1], and a capacity (relative weight, > 0). They combine into one score,
lower is better::

    load_score = (inflight + 1) / capacity            calls per unit of capacity, this one included
                 * (ewma_latency_us + LATENCY_FLOOR_US)   microseconds
                 * (1 + ERROR_PENALTY * error_rate)       dimensionless

i.e. roughly the microseconds a new call would wait, per unit of capacity, inflated by recent
failures. The latency floor keeps a target with no measured latency from scoring zero forever;
the penalty makes a target failing every call look eleven times as loaded.

The latency EWMA is of the latency *per call in flight*: a call that ended after
``latency_us`` with ``k`` calls in flight to its target (itself included) is a sample of
``latency_us / k``. ``(inflight + 1) *`` that is then the latency one more call may expect
whether the target works through its calls one at a time (its latency grows with ``k``, the
sample stays) or side by side (its latency stays, the sample shrinks); an average of raw
latencies, measured with ``k`` already in flight, would count the ``k`` twice and make a
target ten times slower but idle look better than a fast one with a few calls in flight.
The first sample sets the EWMA; later ones move it by ``alpha`` of the difference. With one
call in flight at a time the sample is the latency itself, as it always was. The error EWMA
starts at 0.0 and takes 0.0 for a success, 1.0 for a failure. A target never sampled scores
with ``default_latency_us``.

``pick`` uses the power of two choices (Mitzenmacher): draw two distinct candidates at random
and keep the lower score (the first drawn on a tie). Unlike "always the best" it does not herd
every caller onto the same target between score updates, and unlike uniform random it avoids
loaded targets. The loser of each comparison ages if it has no call in flight: its latency
and error averages shrink by ``LOSER_DECAY`` (a fraction), so a target judged on one stale bad
sample is tried again after about ln(score ratio) / LOSER_DECAY lost comparisons instead of
starving forever, while a target that really is slow gets only that trickle of probes (one
per ~46 lost comparisons when it scores 10x worse). Finagle's peak-EWMA decays by time for
the same reason; we decay by events so the core stays clock-free. A target with calls in
flight does not age: their answers will update it, and one that has stopped answering (a
stall) must not look better the longer its callers wait. The random numbers come from
xorshift64* seeded from ``seed``, written identically in both twins so that the same seed and
the same calls give the same picks.

Both twins (compiled and pure) implement this contract bit for bit.
"""
from __future__ import annotations

from collections.abc import Sequence

PUBLIC_API = ["LATENCY_FLOOR_US", "ERROR_PENALTY", "LOSER_DECAY", "load_score", "Scoreboard"]

LATENCY_FLOOR_US = 50.0
ERROR_PENALTY = 10.0
LOSER_DECAY = 0.05

_MASK64 = 0xFFFFFFFFFFFFFFFF
_SEED_MIX = 0x9E3779B97F4A7C15
_XORSHIFT_MUL = 0x2545F4914F6CDD1D
_INF = float("inf")

# Per-target stats are lists: [inflight, ewma_latency_us, error_rate, capacity, sampled].
_INFLIGHT, _LATENCY, _ERRORS, _CAPACITY, _SAMPLED = range(5)


def _as_double(value: object) -> float:
    # What the compiled twin's C `double` arguments accept: real numbers, not strings.
    if isinstance(value, float):
        return float.__float__(value)   # a float subclass's own __float__ is not consulted
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"must be real number, not {type(value).__name__}")
    return float(value)


def load_score(inflight: int, ewma_latency_us: float, error_rate: float, capacity: float) -> float:
    """(inflight + 1) / capacity * (ewma_latency_us + LATENCY_FLOOR_US) * (1 + ERROR_PENALTY * error_rate).

    ``inflight`` in calls, ``ewma_latency_us`` in microseconds, ``error_rate`` in [0, 1],
    ``capacity`` a relative weight > 0 (ValueError otherwise). Lower is better."""
    inflight = _as_double(inflight)
    ewma_latency_us = _as_double(ewma_latency_us)
    error_rate = _as_double(error_rate)
    capacity = _as_double(capacity)
    if not capacity > 0.0:
        raise ValueError(f"capacity must be > 0, got {capacity!r}")
    return ((inflight + 1.0) / capacity * (ewma_latency_us + LATENCY_FLOOR_US)
            * (1.0 + ERROR_PENALTY * error_rate))


def _check_capacity(capacity: object) -> float:
    capacity = _as_double(capacity)
    if not 0.0 < capacity < _INF:
        raise ValueError(f"capacity must be finite and > 0, got {capacity!r}")
    return capacity


def _check_target(target: object) -> None:
    if not isinstance(target, str):
        raise TypeError(f"target must be str, not {type(target).__name__}")


class Scoreboard:
    """Per-target load statistics and a seeded power-of-two-choices pick."""

    __slots__ = ("_stats", "_state", "_alpha", "_default_latency_us")

    def __init__(self, seed: int = 0, alpha: float = 0.2, default_latency_us: float = 1000.0) -> None:
        if not isinstance(seed, int):
            raise TypeError(f"seed must be int, not {type(seed).__name__}")
        alpha = _as_double(alpha)
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        default_latency_us = _as_double(default_latency_us)
        if not 0.0 <= default_latency_us < _INF:
            raise ValueError(f"default_latency_us must be finite and >= 0, got {default_latency_us!r}")
        state = (seed & _MASK64) ^ _SEED_MIX
        self._state = state if state else _SEED_MIX   # xorshift must never hold 0
        self._alpha = alpha
        self._default_latency_us = default_latency_us
        self._stats: dict[str, list] = {}

    def _next(self) -> int:
        # xorshift64* (Vigna 2016): 64-bit state, shifts 12/25/27, odd multiplier.
        x = self._state
        x ^= x >> 12
        x ^= (x << 25) & _MASK64
        x ^= x >> 27
        self._state = x
        return (x * _XORSHIFT_MUL) & _MASK64

    def add(self, target: str, capacity: float = 1.0) -> None:
        """Track ``target`` (idempotent; updates the capacity if present). ValueError if capacity <= 0."""
        _check_target(target)
        capacity = _check_capacity(capacity)
        stats = self._stats.get(target)
        if stats is None:
            self._stats[target] = [0, self._default_latency_us, 0.0, capacity, False]
        else:
            stats[_CAPACITY] = capacity

    def remove(self, target: str) -> None:
        """Forget ``target``; no error if absent."""
        self._stats.pop(target, None)

    def set_capacity(self, target: str, capacity: float) -> None:
        """Change the capacity of ``target``; ValueError if capacity <= 0, KeyError if unknown."""
        capacity = _check_capacity(capacity)
        self._stats[target][_CAPACITY] = capacity

    def begin(self, target: str) -> None:
        """A call to ``target`` started: in-flight += 1 (the target is added if unknown)."""
        stats = self._stats.get(target)
        if stats is None:
            self.add(target)
            stats = self._stats[target]
        stats[_INFLIGHT] += 1

    def end(self, target: str, latency_us: float, ok: bool) -> None:
        """A call to ``target`` ended after ``latency_us`` microseconds: the latency EWMA takes
        latency_us / max(in-flight, 1), the error EWMA ``ok``, then in-flight -= 1
        (not below 0). ValueError if latency_us is negative or not finite; an unknown target is ignored."""
        if type(latency_us) is not float:
            latency_us = _as_double(latency_us)
        if not 0.0 <= latency_us < _INF:
            raise ValueError(f"latency_us must be finite and >= 0, got {latency_us!r}")
        failed = 0.0 if ok else 1.0
        stats = self._stats.get(target)
        if stats is None:
            return
        per_call = latency_us / float(stats[_INFLIGHT] if stats[_INFLIGHT] > 1 else 1)
        if stats[_INFLIGHT] > 0:
            stats[_INFLIGHT] -= 1
        alpha = self._alpha
        if stats[_SAMPLED]:
            stats[_LATENCY] += alpha * (per_call - stats[_LATENCY])
        else:
            stats[_LATENCY] = per_call
            stats[_SAMPLED] = True
        stats[_ERRORS] += alpha * (failed - stats[_ERRORS])

    def _score(self, target: object) -> float:
        stats = self._stats.get(target)
        if stats is None:
            return ((0.0 + 1.0) / 1.0 * (self._default_latency_us + LATENCY_FLOOR_US)
                    * (1.0 + ERROR_PENALTY * 0.0))
        return ((stats[_INFLIGHT] + 1.0) / stats[_CAPACITY] * (stats[_LATENCY] + LATENCY_FLOOR_US)
                * (1.0 + ERROR_PENALTY * stats[_ERRORS]))

    def score(self, target: str) -> float:
        """load_score of ``target``'s stats; an unknown target scores as a fresh one
        (0 in flight, default latency, no errors, capacity 1)."""
        return self._score(target)

    def stats(self, target: str) -> tuple[int, float, float, float]:
        """(inflight, ewma_latency_us, error_rate, capacity) of ``target``; KeyError if unknown."""
        stats = self._stats[target]
        return (stats[_INFLIGHT], stats[_LATENCY], stats[_ERRORS], stats[_CAPACITY])

    def pick(self, candidates: Sequence[str]) -> str:
        """One of ``candidates`` by the power of two choices; ValueError if empty.

        One candidate is returned as is. Otherwise two distinct indices are drawn,
        i = (rand >> 11) % n and j = (rand >> 11) % (n - 1), plus 1 if j >= i, and the
        candidate with the lower score wins (the first drawn on a tie); the loser ages unless it
        has calls in flight."""
        n = len(candidates)
        if n == 0:
            raise ValueError("pick() needs at least one candidate")
        if n == 1:
            return candidates[0]
        i = (self._next() >> 11) % n
        j = (self._next() >> 11) % (n - 1)
        if j >= i:
            j += 1
        first = candidates[i]
        second = candidates[j]
        if self._score(second) < self._score(first):
            self._age(first)
            return second
        self._age(second)
        return first

    def _age(self, loser: object) -> None:
        stats = self._stats.get(loser)
        if stats is None:             # a fresh loser must age like the rest, so track it
            self.add(loser)
            stats = self._stats[loser]
        if stats[_INFLIGHT] > 0:      # answers are on their way: they, not comparisons, update it
            return
        stats[_LATENCY] *= 1.0 - LOSER_DECAY
        stats[_ERRORS] *= 1.0 - LOSER_DECAY

    def __len__(self) -> int:
        return len(self._stats)

    def __contains__(self, target: object) -> bool:
        return target in self._stats
