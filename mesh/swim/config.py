"""SWIM tuning, in milliseconds. Defaults suit a LAN or loopback mesh.

With the defaults a crashed member of a 5-node mesh is suspected within about one probe
period (0.5 s) and declared dead after the suspicion timeout: between
``suspicion_mult * max(1, log10 n) * probe_interval_ms`` = 2 s (once ``suspicion_mult - 2``
other members have independently confirmed the suspicion) and ``suspicion_max_mult`` times
that, 12 s (no confirmation). See :mod:`mesh.swim.formulas` for each formula.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SwimConfig:
    probe_interval_ms: int = 500
    """One protocol period: each member probes one other member per period (scaled up by
    local health, see ``awareness_max``)."""
    probe_timeout_ms: int = 200
    """Wait this long for a direct ACK before asking ``indirect_checks`` helpers."""
    indirect_checks: int = 3
    """Helpers (k) asked to ping a member that did not answer us directly."""
    suspicion_mult: int = 4
    """Suspicion timeout = suspicion_mult * max(1, log10(n)) * probe_interval_ms (minimum)."""
    suspicion_max_mult: int = 6
    """Without confirmations the suspicion timeout starts at this multiple of the minimum."""
    retransmit_mult: int = 4
    """Each update is piggybacked retransmit_mult * ceil(log10(n + 1)) times."""
    gossip_interval_ms: int = 100
    """Every gossip interval, pending updates go to ``gossip_fanout`` random members."""
    gossip_fanout: int = 3
    gossip_to_dead_ms: int = 10_000
    """Members dead for less than this still get gossip (so they can learn and refute)."""
    max_piggyback: int = 32
    """At most this many updates ride on one message."""
    push_pull_interval_ms: int = 15_000
    """Full-state sync with one random member (anti-entropy); scaled up for n > 32."""
    reconnect_interval_ms: int = 5_000
    """Sync with one random DEAD (not LEFT) member, so a healed partition reconverges."""
    reap_after_ms: int = 600_000
    """DEAD and LEFT members are forgotten after this long."""
    awareness_max: int = 8
    """Lifeguard local health: probe interval and timeout are scaled by (score + 1),
    score in [0, awareness_max)."""

    def __post_init__(self) -> None:
        for name in ("probe_interval_ms", "probe_timeout_ms", "gossip_interval_ms",
                     "push_pull_interval_ms", "reconnect_interval_ms", "suspicion_mult",
                     "retransmit_mult", "gossip_fanout", "max_piggyback", "awareness_max"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SwimConfig.{name} must be positive, got {getattr(self, name)}")
        if self.probe_timeout_ms >= self.probe_interval_ms:
            raise ValueError("SwimConfig.probe_timeout_ms must be shorter than probe_interval_ms")
        if self.suspicion_max_mult < 1:
            raise ValueError("SwimConfig.suspicion_max_mult must be >= 1")
        for name in ("reap_after_ms", "gossip_to_dead_ms", "indirect_checks"):
            if getattr(self, name) < 0:
                raise ValueError(f"SwimConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.indirect_checks < 0:
            raise ValueError("SwimConfig.indirect_checks must be >= 0")
