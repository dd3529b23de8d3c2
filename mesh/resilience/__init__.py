"""Resilience: what keeps one slow or failing part from taking the mesh down with it.

* :mod:`deadline` — a call's time budget travels with it: nested calls get what is left.
* :mod:`retry` — jittered exponential backoff, for calls marked idempotent.
* :mod:`breaker` — a circuit breaker per target on the failure rate over a sliding window.
* :mod:`bulkhead` — per-agent concurrency limits and bounded mailboxes (``Overloaded``).

Each is a small piece with time passed in, so it is tested without sleeping; the node
runtime (:mod:`mesh.node.runtime`) applies them on every call.
"""
from __future__ import annotations

from mesh.resilience.breaker import BreakerConfig, CircuitBreaker
from mesh.resilience.deadline import detached, remaining
from mesh.resilience.retry import RetryPolicy

__all__ = ["BreakerConfig", "CircuitBreaker", "RetryPolicy", "detached", "remaining"]
