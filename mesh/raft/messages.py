"""Raft messages, log entries and the Ready batch the core hands to its driver.

Every message names its sender (``src``), its receiver (``dst``) and the sender's ``term``;
a receiver first compares terms (see :mod:`mesh.raft.core`), then dispatches on the type.
Kinds are the 64..95 block of the envelope's :class:`mesh._core.wire.Kind`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Union


class RaftKind(IntEnum):
    VOTE = 64               # RequestVote (or PreVote with pre=True)
    VOTE_RESP = 65
    APPEND = 66             # AppendEntries (an empty one is a heartbeat)
    APPEND_RESP = 67
    SNAPSHOT = 68           # InstallSnapshot (whole snapshot in one message)
    SNAPSHOT_RESP = 69
    TIMEOUT_NOW = 70        # leadership transfer: start an election now


class EntryKind(IntEnum):
    NORMAL = 0              # application command (bytes for the state machine)
    NOOP = 1                # appended by a new leader to commit entries of earlier terms
    CONFIG = 2              # a membership change (data = ConfState encoded)


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    kind: int = EntryKind.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it leaves."""
    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class ConfState:
    """Who votes and who only learns. ``voters_outgoing`` is non-empty during a joint
    consensus transition (decisions need a majority of both voter sets)."""
    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()
    voters_outgoing: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    conf: ConfState


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes


# -- messages -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Vote:
    src: str
    dst: str
    term: int               # for a pre-vote: the term the sender *would* campaign in
    last_index: int
    last_term: int
    pre: bool = False
    transfer: bool = False  # campaign forced by a leadership transfer: ignore leader leases


@dataclass(frozen=True, slots=True)
class VoteResp:
    src: str
    dst: str
    term: int
    granted: bool
    pre: bool = False


@dataclass(frozen=True, slots=True)
class Append:
    src: str
    dst: str
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    ctx: int = 0            # ReadIndex round this heartbeat confirms leadership for (0 = none)
    heartbeat: bool = False # no entries and no log check: commit = min(leader commit, follower match);
                            # prev_index then says how far the leader had sent (echoed in the reply)


@dataclass(frozen=True, slots=True)
class AppendResp:
    src: str
    dst: str
    term: int
    success: bool
    index: int              # success: the last index now matching; failure: the rejected prev_index;
                            # heartbeat: the follower's last index
    hint: int = 0           # failure: the follower's last index (lets the leader skip back fast);
                            # heartbeat: the heartbeat's prev_index, echoed (how far the leader had sent)
    ctx: int = 0
    heartbeat: bool = False


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    src: str
    dst: str
    term: int
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class SnapshotResp:
    src: str
    dst: str
    term: int
    index: int              # the snapshot index now installed (0 if rejected)


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    src: str
    dst: str
    term: int


Message = Union[Vote, VoteResp, Append, AppendResp, InstallSnapshot, SnapshotResp, TimeoutNow]

KIND_OF: dict[type, RaftKind] = {
    Vote: RaftKind.VOTE, VoteResp: RaftKind.VOTE_RESP, Append: RaftKind.APPEND,
    AppendResp: RaftKind.APPEND_RESP, InstallSnapshot: RaftKind.SNAPSHOT,
    SnapshotResp: RaftKind.SNAPSHOT_RESP, TimeoutNow: RaftKind.TIMEOUT_NOW,
}


# -- the batch the driver carries out -------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read registered with :meth:`Raft.read_index` may be served once the
    state machine has applied ``index``."""
    ctx: bytes
    index: int


@dataclass(slots=True)
class Ready:
    """Everything the core needs done, in this order:

    1. persist: ``snapshot`` (if any), then drop log entries from ``truncate_from`` on, append
       ``entries``, store ``hard_state`` (if not None) -- and make all of it durable (fsync);
    2. send ``messages`` (they may promise what step 1 persisted: votes, acknowledgements);
    3. apply: load ``snapshot`` into the state machine if set, then apply ``committed`` in
       order; serve the ``reads`` whose index is applied.

    The driver finishes one Ready before it asks for the next (:meth:`Raft.ready`).
    """
    hard_state: HardState | None = None
    truncate_from: int | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    reads: list[ReadState] = field(default_factory=list)
    role: Role = Role.FOLLOWER
    leader: str | None = None
    term: int = 0

    def empty(self) -> bool:
        return not (self.hard_state or self.truncate_from is not None or self.entries or self.snapshot
                    or self.messages or self.committed or self.reads)
