"""Delivery of published messages to one subscribing handler on this node.

Theory of operation
-------------------
Each ``@on`` handler of a hosted agent is one :class:`Subscription`. It gets its messages one
at a time, in arrival order: the first runs eagerly on the dispatcher's stack (most handlers
never suspend), and while a handler is suspended the next messages wait in a queue of at
most ``spec.queue``. What a full queue does is the subscriber's choice (``@on(overflow=)``):

* ``drop`` — the new message is dropped and counted;
* ``drop_oldest`` — the oldest waiting one makes room, counted (freshest data wins, as for
  market ticks);
* ``block`` — the publisher waits for room (:meth:`wait_room`). A publisher on another node
  sends such messages with the ACK flag and its ``publish`` returns when every blocking
  subscriber took it; a slow subscriber thus slows its publishers instead of growing memory.

So one slow subscriber never stalls the dispatcher, other subscribers, or (unless it asked
to) its publishers, and its backlog is bounded.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable

from mesh.agent import Agent, HandlerSpec
from mesh.eager import SYNC_DONE, run_eager

log = logging.getLogger(__name__)


class Subscription:
    __slots__ = ("agent", "spec", "queue", "busy", "delivered", "dropped", "errors", "blocked", "_room",
                 "_spawn")

    def __init__(self, agent: Agent, spec: HandlerSpec, spawn: Callable[[Any], None]) -> None:
        self.agent = agent
        self.spec = spec
        self.queue: deque[tuple[str, Any]] = deque()
        self.busy = False
        self.delivered = 0
        self.dropped = 0
        self.errors = 0
        self.blocked = 0          # publishers waiting for room right now
        self._room: asyncio.Event | None = None
        self._spawn = spawn

    @property
    def full(self) -> bool:
        return self.busy and len(self.queue) >= self.spec.queue

    @property
    def blocking(self) -> bool:
        return self.spec.overflow == "block"

    def offer(self, topic: str, payload: Any) -> None:
        """Deliver now, queue, or apply the overflow policy (a blocking subscription that is
        full drops too: callers that can wait call :meth:`wait_room` first)."""
        if not self.busy:
            self._run(topic, payload)
        elif len(self.queue) < self.spec.queue:
            self.queue.append((topic, payload))
        elif self.spec.overflow == "drop_oldest":
            self.queue.popleft()
            self.queue.append((topic, payload))
            self.dropped += 1
        else:
            self.dropped += 1

    async def wait_room(self) -> None:
        self.blocked += 1
        try:
            while self.full:
                if self._room is None:
                    self._room = asyncio.Event()
                await self._room.wait()
        finally:
            self.blocked -= 1

    def stats(self) -> dict[str, Any]:
        return {"agent": self.agent.name, "handler": self.spec.attr, "queued": len(self.queue),
                "capacity": self.spec.queue, "overflow": self.spec.overflow, "delivered": self.delivered,
                "dropped": self.dropped, "errors": self.errors, "blocked_publishers": self.blocked}

    def _run(self, topic: str, payload: Any) -> None:
        started = self._start(topic, payload)
        if started is not None:
            self.busy = True
            self._spawn(self._pump(started))

    def _start(self, topic: str, payload: Any) -> Any:
        """Run the handler to its first suspension; the awaitable of the rest, or None."""
        try:
            state, value = run_eager(getattr(self.agent, self.spec.attr), (topic, payload), {},
                                     self.spec.is_async)
        except Exception as exc:
            self._failed(exc)
            return None
        if state is SYNC_DONE:
            self.delivered += 1
            return None
        return value

    async def _pump(self, awaitable: Any) -> None:
        try:
            while awaitable is not None:
                try:
                    await awaitable
                    self.delivered += 1
                except Exception as exc:
                    self._failed(exc)
                awaitable = None
                while self.queue and awaitable is None:
                    topic, payload = self.queue.popleft()
                    if self._room is not None:
                        self._room.set()
                        self._room = None
                    awaitable = self._start(topic, payload)
        finally:
            self.busy = False
            if self._room is not None:
                self._room.set()
                self._room = None

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        log.warning("%s.%s raised %r", self.agent.name, self.spec.attr, exc)
