"""A virtual clock and one event heap: the whole simulated world runs on one thread, in order.

Theory of operation
-------------------
Time is an integer number of milliseconds that only moves when the world runs an event.
Everything that will happen later (a message arriving, a node's timer) is a callback on one
heap ordered by ``(time_ms, seq)``. ``seq`` grows by one for every scheduled callback, so two
callbacks due at the same millisecond run in the order they were scheduled: ties never depend
on object identity, dict order or hashing, and one seed replays the same run exactly.

A callback may schedule more callbacks, at the current time or later, never in the past
(that would make the clock run backwards, and replays would still agree but nothing real
behaves that way). Running "until t" runs every callback due at or before ``t`` and then
leaves the clock at ``t``, so ``run_for(a); run_for(b)`` is the same as ``run_for(a + b)``.

Randomness: every consumer asks :meth:`World.rng` for its own stream by name. Streams are
seeded from the text ``"<seed>:<name>"`` (``random.Random`` hashes a str seed with SHA-512,
independent of ``PYTHONHASHSEED``), so adding draws to one stream (say, the SWIM cores')
does not shift another (the network's), and a change in one layer keeps the others' replays.
"""
from __future__ import annotations

import heapq
import random
from typing import Any, Callable


class World:
    """The virtual clock, the event heap and the seed every random stream derives from."""

    __slots__ = ("seed", "now_ms", "_heap", "_seq", "events_run")

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.now_ms = 0
        # (time_ms, seq, fn, args): seq is unique, so tuples never compare fn or args.
        self._heap: list[tuple[int, int, Callable[..., Any], tuple]] = []
        self._seq = 0
        self.events_run = 0

    # -- scheduling -------------------------------------------------------------------------

    def at(self, time_ms: int, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` at virtual time ``time_ms`` (now or later)."""
        if time_ms < self.now_ms:
            raise ValueError(f"cannot schedule at {time_ms} ms, before now ({self.now_ms} ms)")
        self._seq += 1
        heapq.heappush(self._heap, (time_ms, self._seq, fn, args))

    def after(self, delay_ms: int, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` ``delay_ms`` (>= 0) from now."""
        if delay_ms < 0:
            raise ValueError(f"delay must not be negative, got {delay_ms} ms")
        self._seq += 1
        heapq.heappush(self._heap, (self.now_ms + delay_ms, self._seq, fn, args))

    @property
    def pending(self) -> int:
        """Callbacks scheduled and not yet run (stale ones a caller will ignore included)."""
        return len(self._heap)

    def next_event_ms(self) -> int | None:
        """When the next callback is due, or None when nothing is scheduled."""
        return self._heap[0][0] if self._heap else None

    # -- running ----------------------------------------------------------------------------

    def step(self) -> bool:
        """Run the next callback (moving the clock to its time); False when there is none."""
        if not self._heap:
            return False
        time_ms, _, fn, args = heapq.heappop(self._heap)
        self.now_ms = time_ms
        self.events_run += 1
        fn(*args)
        return True

    def run_until(self, t_ms: int) -> None:
        """Run every callback due at or before ``t_ms``, then leave the clock at ``t_ms``."""
        if t_ms < self.now_ms:
            raise ValueError(f"cannot run until {t_ms} ms, before now ({self.now_ms} ms)")
        heap = self._heap
        pop = heapq.heappop
        ran = 0
        # Local names: this loop runs once per simulated message, millions of times.
        while heap and heap[0][0] <= t_ms:
            time_ms, _, fn, args = pop(heap)
            self.now_ms = time_ms
            ran += 1
            fn(*args)
        self.events_run += ran
        self.now_ms = t_ms

    def run_for(self, ms: int) -> None:
        """Run ``ms`` of virtual time from now."""
        self.run_until(self.now_ms + ms)

    def run_until_true(self, pred: Callable[[], bool], limit_ms: int,
                       check_every_ms: int = 1) -> int | None:
        """Run until ``pred()`` holds, checking now and every ``check_every_ms``; give up
        ``limit_ms`` from now. Returns the (virtual) time it first held, or None.

        The answer is exact to ``check_every_ms``: the predicate is sampled, not watched,
        because checking after every callback would cost more than the simulation itself.
        """
        if check_every_ms <= 0:
            raise ValueError("check_every_ms must be positive")
        deadline_ms = self.now_ms + limit_ms
        while True:
            if pred():
                return self.now_ms
            if self.now_ms >= deadline_ms:
                return None
            self.run_until(min(deadline_ms, self.now_ms + check_every_ms))

    # -- randomness -------------------------------------------------------------------------

    def rng(self, name: str) -> random.Random:
        """An independent random stream for ``name``, the same on every run with this seed."""
        # A str seed goes through SHA-512 inside random.Random, not through hash(), so it
        # does not depend on PYTHONHASHSEED.
        return random.Random(f"{self.seed}:{name}")


def plan_wake(node, now: int, due: int, after_tick: bool) -> tuple[int | None, bool]:
    """When to wake a simulated process whose core next has work at ``due``.

    ``node`` has ``spins`` and ``wake_ms`` attributes. Returns (the time to schedule a
    wake-up at, or None when an earlier one is already pending; whether the core looks
    stuck). Work that became due during a tick gets one more tick at the same instant, as a
    runtime whose timer is already late would give it; after two ticks in a row that left
    work due, the next wake-up is a millisecond later, so a buggy core cannot spin forever.
    """
    stuck = False
    if due <= now:
        if not after_tick:
            due = now
        elif node.spins == 0:
            node.spins = 1
            due = now
        else:
            stuck = True
            due = now + 1
    elif after_tick:
        node.spins = 0
    pending = node.wake_ms
    if pending is not None and now <= pending <= due:
        return None, stuck    # an earlier wake-up is on the heap; it will look again
    node.wake_ms = due
    return due, stuck
