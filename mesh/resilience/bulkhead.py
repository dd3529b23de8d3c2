"""Bulkheads: each agent gets a bounded share of the node.

An agent runs at most ``max_concurrency`` handlers at once (``None``: no limit below the
mailbox). Requests beyond that wait in its mailbox, first in first out, up to ``mailbox``
requests; one more is refused at once with :class:`~mesh.errors.Overloaded`. A flood
therefore costs the node a bounded amount of memory and its sender a fast, clear answer,
and one agent's backlog cannot starve the others on the node.

A queued request whose deadline passes while it waits is dropped when its turn comes and
counted (``expired``): its caller has given up.

The mailbox also keeps the agent's load figures — in flight, queued, an EWMA of handler
time — which the autoscaler and ``node.agent_load`` read.
"""
from __future__ import annotations

from collections import deque
from typing import Any

EWMA_ALPHA = 0.2


class Mailbox:
    __slots__ = ("limit", "capacity", "running", "queue", "calls", "errors", "rejected", "expired",
                 "latency_ms", "idle", "draining")

    def __init__(self, max_concurrency: int | None, mailbox: int) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1 (or None)")
        if mailbox < 0:
            raise ValueError("mailbox must be >= 0")
        # Without a concurrency limit the mailbox bound applies to handlers in flight.
        self.limit = max_concurrency if max_concurrency is not None else max(mailbox, 1)
        self.capacity = mailbox if max_concurrency is not None else 0
        self.running = 0
        self.queue: deque[Any] = deque()
        self.calls = 0
        self.errors = 0
        self.rejected = 0
        self.expired = 0
        self.latency_ms = 0.0
        self.idle: Any = None   # an asyncio.Event while someone waits for the agent to drain
        self.draining = False   # the runtime is starting queued requests (no re-entry)

    def admit(self) -> int:
        """1: run now; 0: queue it; -1: refuse (Overloaded)."""
        if self.running < self.limit:
            return 1
        return 0 if len(self.queue) < self.capacity else -1

    def done(self, elapsed_ms: float, ok: bool) -> None:
        self.running -= 1
        self.calls += 1
        if not ok:
            self.errors += 1
        self.latency_ms += EWMA_ALPHA * (elapsed_ms - self.latency_ms)
        if self.idle is not None and not self.running and not self.queue:
            self.idle.set()

    def load(self) -> dict[str, float]:
        return {"inflight": self.running, "queued": len(self.queue), "latency_ms": round(self.latency_ms, 3),
                "calls": self.calls, "errors": self.errors, "rejected": self.rejected, "expired": self.expired}
