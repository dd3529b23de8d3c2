"""Peers that misbehave: throttled, then cut off for a while.

Theory of operation
-------------------
* Every frame a peer sends passes :meth:`PeerGuard.admit` before it is decoded. Each peer has
  a token bucket of ``frames_per_s`` (burst ``burst``): frames beyond it are dropped unread
  and counted (``throttled``). A well-behaved peer never meets it (the sender batches
  envelopes into frames, so the default is far above a busy link's frame rate); a flood
  costs us one dict lookup and a little arithmetic per frame, not a decode.
* Bad frames (what the codec, gossip or Raft decoders reject) add to a per-peer score that
  leaks ``bad_leak_per_s`` per second. Above ``bad_limit`` the peer is **banned** for
  ``ban_s``: all its frames are dropped, the node closes its own link to it and, with
  security on, the ZAP handler refuses its key (a fresh connection gets nowhere). So is a
  peer that keeps its bucket near empty for ``flood_ban_s`` (a flood that only a trickle of
  frames gets through still counts as one, until the bucket fills up to half). A ban ends by itself; the peer is then
  admitted as new (after it has reconnected and gossip has found it again).
* Everything is bounded: at most ``max_peers`` peers are tracked (the least recently seen is
  forgotten), and a ban list of the same size.
* Time is the caller's monotonic clock in seconds (``now``): no clock inside, so a test
  drives it directly.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)


@dataclass(slots=True)
class GuardConfig:
    """Limits per peer. Rates in frames per second, times in seconds."""

    frames_per_s: float = 200_000.0
    burst: float = 50_000.0
    bad_limit: float = 50.0           # bad frames (leaking) before a ban
    bad_leak_per_s: float = 1.0
    flood_ban_s: float = 5.0          # throttled this long without a break: banned
    ban_s: float = 60.0
    max_peers: int = 65_536


class _Peer:
    __slots__ = ("tokens", "at", "bad", "bad_at", "flood_since")

    def __init__(self, now: float, burst: float) -> None:
        self.tokens = burst
        self.at = now
        self.bad = 0.0
        self.bad_at = now
        self.flood_since = 0.0        # when the current run of throttling began; 0: none


class PeerGuard:
    """See the module docstring. ``on_ban(peer)`` is called once when a ban starts."""

    def __init__(self, config: GuardConfig | None = None,
                 on_ban: Callable[[str], None] | None = None) -> None:
        self.config = config or GuardConfig()
        self._on_ban = on_ban
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        self._banned: OrderedDict[str, float] = OrderedDict()   # peer -> ban ends at
        self.counters = {"frames_throttled": 0, "frames_banned": 0, "bad_frames": 0, "peers_banned": 0}

    def admit(self, peer: str, now: float) -> bool:
        """Whether to read this frame from ``peer``."""
        if self._banned:
            until = self._banned.get(peer)
            if until is not None:
                if now < until:
                    self.counters["frames_banned"] += 1
                    return False
                del self._banned[peer]
                log.info("ban of peer %s ended", peer)
        p = self._peers.get(peer)
        if p is None:
            p = self._track(peer, now)
        c = self.config
        tokens = p.tokens + (now - p.at) * c.frames_per_s
        p.at = now
        if tokens >= 1.0:
            p.tokens = (tokens if tokens < c.burst else c.burst) - 1.0
            if p.flood_since and tokens >= c.burst / 2:
                p.flood_since = 0.0       # the peer slowed down: its bucket filled up again
            return True
        p.tokens = tokens
        self.counters["frames_throttled"] += 1
        if not p.flood_since:
            p.flood_since = now
            log.warning("peer %s floods (over %.0f frames/s): throttled", peer, c.frames_per_s)
        elif now - p.flood_since >= c.flood_ban_s:
            self.ban(peer, now, "flooding")
        return False

    def bad(self, peer: str, now: float) -> None:
        """``peer`` sent a frame a decoder rejected."""
        self.counters["bad_frames"] += 1
        p = self._peers.get(peer)
        if p is None:
            p = self._track(peer, now)
        c = self.config
        p.bad = max(0.0, p.bad - (now - p.bad_at) * c.bad_leak_per_s) + 1.0
        p.bad_at = now
        if p.bad > c.bad_limit:
            self.ban(peer, now, "malformed frames")

    def ban(self, peer: str, now: float, why: str) -> None:
        if peer in self._banned:
            return
        self._banned[peer] = now + self.config.ban_s
        while len(self._banned) > self.config.max_peers:
            self._banned.popitem(last=False)
        self._peers.pop(peer, None)
        self.counters["peers_banned"] += 1
        log.warning("peer %s banned for %.0f s: %s", peer, self.config.ban_s, why)
        if self._on_ban is not None:
            self._on_ban(peer)

    def banned(self, peer: str, now: float) -> bool:
        until = self._banned.get(peer)
        return until is not None and now < until

    def _track(self, peer: str, now: float) -> _Peer:
        p = self._peers[peer] = _Peer(now, self.config.burst)
        if len(self._peers) > self.config.max_peers:
            self._peers.popitem(last=False)
        return p
