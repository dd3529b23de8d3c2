"""Retries with jittered exponential backoff, for idempotent calls only.

A retry repeats work the target may already have done: only a caller that marked the call
idempotent (``node.call(..., idempotent=True)``) or passed a policy gets them. Backoff is
"full jitter" (AWS architecture blog, *Exponential Backoff and Jitter*): attempt ``k`` waits
a uniform random time in ``[0, min(max_s, base_s * multiplier**k)]``, which spreads a herd
of retrying clients instead of moving it in lockstep. Every attempt and wait stays inside
the call's one timeout: retries never extend a deadline.

Retried: the errors that say the work was not done or may go elsewhere — the target's node
was unreachable, refused it as overloaded or unavailable, or its circuit was open (a
``call_any`` picks again). A :class:`~mesh.errors.Timeout` ends the call: the budget is spent.
"""
from __future__ import annotations

from dataclasses import dataclass
from random import Random

from mesh.errors import CircuitOpen, Overloaded, Unavailable, Unreachable

RETRYABLE: tuple[type[BaseException], ...] = (Unreachable, Overloaded, Unavailable, CircuitOpen)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts``: total tries including the first. Waits (seconds) before try ``k+1`` are
    uniform in ``[0, min(max_s, base_s * multiplier**k)]`` (full jitter)."""

    attempts: int = 3
    base_s: float = 0.01
    max_s: float = 1.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.base_s < 0 or self.max_s < 0 or self.multiplier < 1:
            raise ValueError("RetryPolicy: base_s and max_s must be >= 0, multiplier >= 1")

    def backoff_s(self, retry: int, rng: Random) -> float:
        """The wait before retry number ``retry`` (0 for the first retry)."""
        return rng.uniform(0.0, backoff_cap_s(self.base_s, self.multiplier, self.max_s, retry))


def backoff_cap_s(base_s: float, multiplier: float, max_s: float, retry: int) -> float:
    """Upper bound of the jittered wait before retry ``retry``: min(max_s, base_s * multiplier**retry)."""
    return min(max_s, base_s * multiplier ** min(retry, 64))
