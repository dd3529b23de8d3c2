"""The deadline heap behind call timeouts (no loop, no clock: times are plain numbers)."""
from __future__ import annotations

from mesh.node.deadlines import DeadlineQueue


def test_due_keys_come_out_in_deadline_order_and_answered_ones_are_skipped():
    q = DeadlineQueue()
    assert q.push(5.0, 1) is True          # first: the timer must be armed
    assert q.push(9.0, 2) is False         # later than the earliest: timer stays
    assert q.push(1.0, 3) is True          # new earliest: timer moves
    alive = {1, 2}                          # call 3 was answered
    assert q.pop_due(4.0, alive) == []      # 3 came due but is gone; 1 not due yet
    assert q.next_at() == 5.0
    assert q.pop_due(10.0, alive) == [1, 2]
    assert q.next_at() is None and len(q) == 0


def test_compaction_bounds_the_heap_by_the_calls_in_flight():
    q = DeadlineQueue(compact_at=100)
    alive = set()
    for key in range(10_000):                # a long run of calls answered at once
        q.push(30.0 + key, key)
        alive.add(key)
        if key % 10:                         # 9 in 10 answered immediately
            alive.discard(key)
        q.compact(alive, len(alive))
        assert len(q) <= max(100, 4 * len(alive)) + 1
    assert q.pop_due(1e9, alive) == sorted(alive)
