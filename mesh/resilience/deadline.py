"""Deadlines that travel: a call made while serving another call inherits what is left of
the first one's budget.

The envelope carries an absolute deadline (wall clock, microseconds). While a handler runs
for a request, the deadline sits in a context variable; asyncio copies the context into any
task the handler starts, so calls it makes — directly or from its tasks — are bounded by
``min(their own timeout, what is left)``. A call whose budget is already spent fails at once
with :class:`~mesh.errors.Timeout` instead of sending work nobody waits for.

A task a handler starts inherits the budget too: right for work done on behalf of the call,
wrong for background work that outlives it, which :func:`detached` starts without it.

Wall clocks differ between hosts; the budget shrinks or grows by the skew. NTP keeps that
to milliseconds, the same assumption gRPC's deadline propagation makes.
"""
from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar, copy_context
from typing import Any, Coroutine

# absolute deadline of the request being served, time.time_ns() // 1000; 0: none
current_deadline_us: ContextVar[int] = ContextVar("mesh_deadline_us", default=0)


def now_us() -> int:
    return time.time_ns() // 1000


def remaining() -> float | None:
    """Seconds left of the budget of the call being served (``None`` outside any deadline).
    Handlers can use it to skip optional work when little time is left."""
    deadline = current_deadline_us.get()
    if not deadline:
        return None
    return (deadline - now_us()) / 1e6


def detached(coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
    """Start ``coro`` as a task free of the deadline of the call being served (other context
    variables are kept): background work a handler starts but does not wait for."""
    context = copy_context()
    context.run(current_deadline_us.set, 0)
    return asyncio.get_running_loop().create_task(coro, context=context)


def budget_s(timeout: float, deadline_us: int, now: int) -> float:
    """The timeout a call really gets: its own, cut to what is left of an inherited deadline
    (``deadline_us`` 0: none). May be zero or negative: the budget is spent."""
    if not deadline_us:
        return timeout
    return min(timeout, (deadline_us - now) / 1e6)
