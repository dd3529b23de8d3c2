"""Deadlines of pending calls, kept in one heap and served by one loop timer.

A loop timer per call (``call_later`` then ``cancel``) costs about 2 µs on uvloop; a heap
push costs about 0.25 µs. Answered calls are not removed from the heap (that would be
O(n)); their entries are skipped when they come due, and the heap is compacted when stale
entries outnumber live ones, so its size stays within a constant factor of the calls in
flight.
"""
from __future__ import annotations

import heapq
from typing import Container


class DeadlineQueue:
    """(when, key) pairs; ``when`` in the event loop's clock (seconds)."""

    __slots__ = ("_heap", "_compact_at")

    def __init__(self, compact_at: int = 4096) -> None:
        self._heap: list[tuple[float, int]] = []
        self._compact_at = compact_at

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, when: float, key: int) -> bool:
        """Add a deadline; True if it is now the earliest (the timer must move)."""
        heap = self._heap
        heapq.heappush(heap, (when, key))
        return heap[0][1] == key and heap[0][0] == when

    def next_at(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float, alive: Container[int]) -> list[int]:
        """Keys whose deadline is ``<= now`` and which are still ``alive``."""
        heap, due = self._heap, []
        while heap and heap[0][0] <= now:
            key = heapq.heappop(heap)[1]
            if key in alive:
                due.append(key)
        return due

    def compact(self, alive: Container[int], live_count: int) -> None:
        """Drop entries of answered calls once they dominate the heap."""
        heap = self._heap
        if len(heap) > self._compact_at and len(heap) > 4 * live_count:
            self._heap = [entry for entry in heap if entry[1] in alive]
            heapq.heapify(self._heap)
