"""Raft tuning, in milliseconds (the defaults are the Raft paper's LAN figures)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RaftConfig:
    election_timeout_ms: tuple[int, int] = (150, 300)
    """A follower that hears no leader for a random time in [lo, hi) starts an election."""
    heartbeat_ms: int = 50
    """A leader sends every follower something at least this often."""
    pre_vote: bool = True
    """Ask first whether an election could be won (no term bump): a node that was cut off
    cannot disrupt a healthy leader when it comes back (Raft thesis 9.6)."""
    check_quorum: bool = True
    """A leader that has not heard from a quorum within ``election_timeout_ms[0]`` steps down,
    and a follower that heard from a leader that recently ignores vote requests (leases)."""
    max_inflight: int = 256
    """Append messages in flight per follower (pipelining)."""
    max_batch_bytes: int = 1 << 20
    """Entry bytes per append message."""
    max_uncommitted_bytes: int = 64 << 20
    """Proposals beyond this many uncommitted bytes are refused (Overloaded)."""
    snapshot_entries: int = 10_000
    """The node's driver snapshots the state machine and drops the log before it every this
    many applied entries (the core only compacts when told)."""

    def __post_init__(self) -> None:
        lo, hi = self.election_timeout_ms
        if not 0 < lo < hi:
            raise ValueError(f"RaftConfig.election_timeout_ms must be (lo, hi) with 0 < lo < hi, got {self.election_timeout_ms}")
        if not 0 < self.heartbeat_ms < lo:
            raise ValueError("RaftConfig.heartbeat_ms must be positive and below election_timeout_ms[0]")
        for name in ("max_inflight", "max_batch_bytes", "max_uncommitted_bytes", "snapshot_entries"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RaftConfig.{name} must be positive")
