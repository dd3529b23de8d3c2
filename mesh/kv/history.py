"""The recent changes a voter has applied, kept for watchers.

A watcher long-polls a voter: "changes under this prefix after revision R". The voter answers
from this window at once, or waits for the next write. Every voter applies the same changes
in the same order, so a watcher that fails over to another voter resumes with the same R and
misses nothing, duplicates nothing. The window is bounded; a watcher that fell behind it (or
asks a voter that just loaded a snapshot) is told so and starts over from a full read.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Iterable

from mesh.kv.machine import Change


class ChangeHistory:
    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self.floor = 0              # every change with a revision above this one is held
        self._changes: deque[Change] = deque()
        self._waiters: list[asyncio.Future] = []

    def reset(self, revision: int) -> None:
        """The state jumped to ``revision`` (a snapshot): nothing before it can be replayed."""
        self._changes.clear()
        self.floor = revision
        self._wake()

    def record(self, changes: Iterable[Change]) -> None:
        q = self._changes
        q.extend(changes)
        while len(q) > self.capacity:
            self.floor = q.popleft().revision
        self._wake()

    def since(self, prefix: str, after: int, limit: int) -> list[Change] | None:
        """Changes under ``prefix`` with a revision above ``after`` (at most ``limit``, whole
        revisions only when possible), or None if some of them are no longer held."""
        if after < self.floor:
            return None
        found: list[Change] = []
        for c in reversed(self._changes):          # newest first; stop at what the caller has
            if c.revision <= after:
                break
            if c.key.startswith(prefix):
                found.append(c)
        found.reverse()
        if len(found) > limit:
            cut = found[limit - 1].revision        # don't split one revision's changes
            found = [c for c in found if c.revision <= cut]
        return found

    async def wait(self, timeout: float) -> None:
        """Until the next change (or reset), at most ``timeout`` seconds."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
