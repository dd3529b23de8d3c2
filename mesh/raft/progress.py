"""What a leader knows of each follower's log, and how it sends to it (etcd's Progress).

* PROBE: we do not know where the follower's log matches ours; send one append at a time
  (at most one per heartbeat) and move ``next`` back on each rejection.
* REPLICATE: it matches up to ``match``; stream appends optimistically (pipelining), up to
  ``max_inflight`` unacknowledged messages.
* SNAPSHOT: the entries it needs were compacted; a snapshot is on its way.
"""
from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Progress:
    __slots__ = ("match", "next", "state", "inflight", "probe_sent", "recent_active", "pending_snapshot",
                 "snapshot_sent_ms")

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.inflight: deque[int] = deque()   # last index of each unacknowledged append
        self.probe_sent = False               # PROBE: one append outstanding until a reply or a heartbeat
        self.recent_active = False            # heard from since the last check-quorum round
        self.pending_snapshot = 0
        self.snapshot_sent_ms = 0

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.inflight.clear()
        self.probe_sent = False
        self.pending_snapshot = 0

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.inflight.clear()
        self.probe_sent = False

    def become_snapshot(self, index: int, now_ms: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_sent_ms = now_ms
        self.inflight.clear()

    def acked(self, index: int) -> bool:
        """A successful append reply up to ``index``; True if it moved ``match``."""
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        if index > self.match:
            self.match = index
            self.next = max(self.next, index + 1)
            return True
        return False

    def paused(self, max_inflight: int) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.SNAPSHOT:
            return True
        return len(self.inflight) >= max_inflight
