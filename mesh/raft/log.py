"""The Raft log as the core sees it: entries after the last snapshot, kept in memory.

The durable copy lives in the driver's storage (:mod:`mesh.storage`); the core rebuilds this
one from it at start. Indexes start at 1; index ``snapshot_index`` is the last one folded
into the snapshot (0 = no snapshot), and ``term_at(snapshot_index)`` is still known, which is
all a consistency check at the boundary needs.
"""
from __future__ import annotations

from typing import Sequence

from mesh.raft.messages import Entry


class RaftLog:
    __slots__ = ("snapshot_index", "snapshot_term", "_entries", "commit", "applied")

    def __init__(self, snapshot_index: int = 0, snapshot_term: int = 0,
                 entries: Sequence[Entry] = (), commit: int = 0, applied: int = 0) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self._entries: list[Entry] = list(entries)
        for k, e in enumerate(self._entries):
            if e.index != snapshot_index + 1 + k:
                raise ValueError(f"log entries are not contiguous after {snapshot_index}: {e.index}")
        self.commit = max(commit, snapshot_index)
        self.applied = max(applied, snapshot_index)
        if self.commit > self.last_index:
            raise ValueError(f"commit {commit} is beyond the last log index {self.last_index}")

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """The term of entry ``index``; None if compacted away (below the snapshot) or absent."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index:
            return None
        return self._entries[index - self.snapshot_index - 1].term

    def matches(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a log ending at (last_index, last_term) at least as up to date as ours (§5.4.1)?"""
        return last_term > self.last_term or (last_term == self.last_term and last_index >= self.last_index)

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi), at most ``max_bytes`` of data (but at least one)."""
        if lo <= self.snapshot_index:
            raise IndexError(f"entry {lo} is compacted (snapshot at {self.snapshot_index})")
        hi = min(hi, self.last_index + 1)
        out = self._entries[lo - self.snapshot_index - 1: hi - self.snapshot_index - 1]
        if max_bytes is not None and len(out) > 1:
            size = 0
            for k, e in enumerate(out):
                size += len(e.data) + 24
                if size > max_bytes and k > 0:
                    return out[:k]
        return out

    def entry(self, index: int) -> Entry:
        if not self.snapshot_index < index <= self.last_index:
            raise IndexError(f"no entry {index} (log holds {self.snapshot_index + 1}..{self.last_index})")
        return self._entries[index - self.snapshot_index - 1]

    def append(self, entries: Sequence[Entry]) -> None:
        """Append at the end (the leader's own proposals)."""
        for e in entries:
            if e.index != self.last_index + 1:
                raise ValueError(f"append of {e.index} after {self.last_index}")
            self._entries.append(e)

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """The index of the first of ``entries`` that is new or disagrees with ours (0: none)."""
        for e in entries:
            if self.term_at(e.index) != e.term:
                return e.index
        return 0

    def truncate_and_append(self, entries: Sequence[Entry]) -> tuple[int, bool]:
        """Follower side of AppendEntries after the consistency check passed: drop what
        conflicts, append the rest. Returns (first new index or 0 if nothing is new, whether
        entries from that index on were dropped first)."""
        conflict = self.find_conflict(entries)
        if conflict == 0:
            return 0, False
        if conflict <= self.commit:
            raise AssertionError(f"conflict at {conflict} with committed entries (commit {self.commit})")
        truncated = conflict <= self.last_index
        if truncated:
            del self._entries[conflict - self.snapshot_index - 1:]
        first = entries[0].index
        self._entries.extend(entries[conflict - first:])
        return conflict, truncated

    def compact(self, index: int, term: int) -> None:
        """Fold entries up to ``index`` into a snapshot (already taken by the application)."""
        if index <= self.snapshot_index:
            return
        if index > self.applied:
            raise ValueError(f"cannot compact to {index}: only {self.applied} applied")
        if self.term_at(index) != term:
            raise ValueError(f"snapshot term {term} at {index} does not match the log")
        del self._entries[: index - self.snapshot_index]
        self.snapshot_index, self.snapshot_term = index, term

    def restore(self, index: int, term: int) -> None:
        """Replace everything with a snapshot from the leader."""
        self._entries.clear()
        self.snapshot_index, self.snapshot_term = index, term
        self.commit = self.applied = index
