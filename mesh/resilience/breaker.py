"""A circuit breaker per call target: fail fast while a target keeps failing.

Theory of operation
-------------------
CLOSED: calls pass; each outcome lands in a sliding window of ``window_s`` seconds, kept as
``buckets`` time slices (old slices fall out as time moves, so one bad minute an hour ago
does not count). When the window holds at least ``min_calls`` outcomes and the failure
*rate* reaches ``failure_rate``, the breaker OPENs. A rate and a minimum, not a count: ten
failures among ten thousand calls are noise, three among three may be too few to judge.

OPEN: every call fails at once with :class:`~mesh.errors.CircuitOpen` (no network, no
waiting out a timeout) for ``open_s`` seconds, giving the target room to recover.

HALF_OPEN: then up to ``probes`` calls go through as probes. If all succeed the breaker
CLOSEs with an empty window; the first failure OPENs it again for another ``open_s``.

Time comes in as an argument (loop seconds); nothing here sleeps or reads a clock.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from mesh.errors import Overloaded, RemoteError, Timeout, Unavailable, Unreachable


class State(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


# Outcomes that count against a target. Errors that name a mistake of the caller (unknown
# agent or method, a body that will not encode) or the breaker itself do not.
FAILURES: tuple[type[BaseException], ...] = (Timeout, Unreachable, Overloaded, Unavailable, RemoteError)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Open when, over the last ``window_s`` seconds (in ``buckets`` slices), at least
    ``min_calls`` calls were seen and the share that failed is ``failure_rate`` or more;
    stay open ``open_s`` seconds, then let ``probes`` calls test the target.
    ``failures``: the exception classes that count as a failure of the target."""

    failure_rate: float = 0.5
    min_calls: int = 20
    window_s: float = 10.0
    buckets: int = 10
    open_s: float = 5.0
    probes: int = 3
    failures: tuple[type[BaseException], ...] = FAILURES

    def __post_init__(self) -> None:
        if not 0.0 < self.failure_rate <= 1.0:
            raise ValueError("BreakerConfig.failure_rate must be in (0, 1]")
        if self.min_calls < 1 or self.buckets < 1 or self.probes < 1:
            raise ValueError("BreakerConfig: min_calls, buckets and probes must be at least 1")
        if self.window_s <= 0 or self.open_s <= 0:
            raise ValueError("BreakerConfig: window_s and open_s must be positive")


class CircuitBreaker:
    """The breaker of one target. ``allow(now)`` before a call; ``record(ok, now)`` after it
    (only for calls ``allow`` let through)."""

    __slots__ = ("config", "state", "opened_at", "probes_out", "probes_passed", "_slice_s", "_calls", "_fails",
                 "_slice", "_total", "_failed", "transitions")

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.state = State.CLOSED
        self.opened_at = 0.0
        self.probes_out = 0
        self.probes_passed = 0
        self._slice_s = config.window_s / config.buckets
        self._calls = [0] * config.buckets
        self._fails = [0] * config.buckets
        self._slice = 0          # absolute index of the newest slice
        self._total = 0
        self._failed = 0
        self.transitions = 0

    def allow(self, now: float) -> bool:
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.OPEN:
            if now - self.opened_at < self.config.open_s:
                return False
            self.state = State.HALF_OPEN
            self.transitions += 1
            self.probes_out = self.probes_passed = 0
        if self.probes_out >= self.config.probes:
            return False
        self.probes_out += 1
        return True

    def refusing(self, now: float) -> bool:
        """Whether :meth:`allow` would refuse a call now; changes nothing (``call_any`` asks
        this of every candidate before picking one)."""
        state = self.state
        if state is State.CLOSED:
            return False
        if state is State.OPEN and now - self.opened_at < self.config.open_s:
            return True
        return state is State.HALF_OPEN and self.probes_out >= self.config.probes

    def record(self, ok: bool, now: float) -> None:
        state = self.state
        if state is State.HALF_OPEN:
            if not ok:
                self._open(now)
                return
            self.probes_out -= 1
            self.probes_passed += 1
            if self.probes_passed >= self.config.probes:
                self._close(now)
            return
        if state is State.OPEN:
            return               # a call let through before the breaker opened
        self._advance(now)
        i = self._slice % self.config.buckets
        self._calls[i] += 1
        self._total += 1
        if not ok:
            self._fails[i] += 1
            self._failed += 1
            if self._total >= self.config.min_calls and self._failed >= self.config.failure_rate * self._total:
                self._open(now)

    def forget(self) -> None:
        """A call ``allow`` let through ended without a verdict on the target (cancelled by
        its caller, or failed on the caller's side): give its probe slot back."""
        if self.state is State.HALF_OPEN and self.probes_out > 0:
            self.probes_out -= 1

    def failure_rate(self, now: float) -> float:
        self._advance(now)
        return self._failed / self._total if self._total else 0.0

    def _advance(self, now: float) -> None:
        """Drop the slices that slid out of the window."""
        current = int(now / self._slice_s)
        gap = current - self._slice
        if gap <= 0:
            return
        n = self.config.buckets
        for k in range(1, min(gap, n) + 1):
            i = (self._slice + k) % n
            self._total -= self._calls[i]
            self._failed -= self._fails[i]
            self._calls[i] = self._fails[i] = 0
        self._slice = current

    def _open(self, now: float) -> None:
        self.state = State.OPEN
        self.opened_at = now
        self.probes_out = 0
        self.transitions += 1

    def _close(self, now: float) -> None:
        self.state = State.CLOSED
        self.transitions += 1
        self._calls = [0] * self.config.buckets
        self._fails = [0] * self.config.buckets
        self._total = self._failed = 0
        self._slice = int(now / self._slice_s)
