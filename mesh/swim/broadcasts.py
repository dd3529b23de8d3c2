"""The queue of membership updates waiting to be piggybacked (SWIM's dissemination component).

Theory of operation
-------------------
Each update is sent a bounded number of times (``retransmit_limit``, ∝ log n) and then
forgotten; by then it has reached every member with high probability (epidemic spread takes
O(log n) rounds). Updates with fewer transmissions go first, newest first among equals, so
fresh news spreads fastest. A newer update about a node replaces the queued one: only the
latest claim about a member is worth the bytes.

Updates live in buckets by transmit count (dicts keep insertion order), so taking ``k`` of
them costs O(k + empty buckets) rather than a sort of the whole queue.
"""
from __future__ import annotations

from mesh.swim.messages import Update


class BroadcastQueue:
    __slots__ = ("_buckets", "_sent")

    def __init__(self) -> None:
        self._buckets: list[dict[str, Update]] = [{}]
        self._sent: dict[str, int] = {}     # node -> transmissions so far (= its bucket)

    def __len__(self) -> int:
        return len(self._sent)

    def push(self, update: Update) -> None:
        """Queue ``update``, replacing any queued update about the same node."""
        old = self._sent.pop(update.node, None)
        if old is not None:
            del self._buckets[old][update.node]
        self._buckets[0][update.node] = update
        self._sent[update.node] = 0

    def take(self, limit: int, max_transmits: int) -> tuple[Update, ...]:
        """Up to ``limit`` updates to piggyback on one message; each counts as transmitted
        once and is dropped after ``max_transmits`` transmissions."""
        if not self._sent or limit <= 0:
            return ()
        picked: list[tuple[int, str]] = []
        for sent, bucket in enumerate(self._buckets):
            for node in reversed(bucket):
                picked.append((sent, node))
                if len(picked) == limit:
                    break
            if len(picked) == limit:
                break
        out = [self._buckets[sent][node] for sent, node in picked]
        buckets = self._buckets
        # move them up oldest first, so the newest stays first in its next bucket too
        for sent, node in reversed(picked):
            update = buckets[sent].pop(node)
            if sent + 1 < max_transmits:
                if sent + 1 == len(buckets):
                    buckets.append({})
                buckets[sent + 1][node] = update
                self._sent[node] = sent + 1
            else:
                del self._sent[node]
        while len(buckets) > 1 and not buckets[-1]:
            buckets.pop()
        return tuple(out)

    def pending(self) -> list[Update]:
        return [u for bucket in self._buckets for u in bucket.values()]
