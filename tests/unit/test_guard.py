"""PeerGuard: throttling, bans for bad frames and for floods, on a clock the test drives."""
from __future__ import annotations

from mesh.security.guard import GuardConfig, PeerGuard


def test_a_peer_within_its_rate_is_never_throttled():
    g = PeerGuard(GuardConfig(frames_per_s=1000, burst=10))
    now = 0.0
    for _ in range(10_000):
        now += 0.0011                       # 909 frames/s, under 1000
        assert g.admit("a", now)
    assert g.counters["frames_throttled"] == 0


def test_a_burst_over_the_bucket_is_throttled_then_admitted_again():
    g = PeerGuard(GuardConfig(frames_per_s=1000, burst=10))
    admitted = sum(g.admit("a", 0.0) for _ in range(50))
    assert admitted == 10 and g.counters["frames_throttled"] == 40
    assert g.admit("a", 0.005)              # 5 tokens back
    assert g.admit("b", 0.005)              # another peer has its own bucket


def test_a_sustained_flood_is_banned_and_the_ban_ends():
    banned = []
    g = PeerGuard(GuardConfig(frames_per_s=100, burst=10, flood_ban_s=2.0, ban_s=30.0), on_ban=banned.append)
    now = 0.0
    while not banned:
        now += 0.001                        # 1000 frames/s against 100/s
        g.admit("a", now)
        assert now < 3.0
    assert banned == ["a"] and 2.0 <= now < 2.1
    assert not g.admit("a", now + 1) and g.banned("a", now + 1)
    assert g.admit("a", now + 31)           # the ban is over; a fresh bucket
    assert g.counters["peers_banned"] == 1 and g.counters["frames_banned"] == 1


def test_bad_frames_leak_and_too_many_ban():
    banned = []
    g = PeerGuard(GuardConfig(bad_limit=5, bad_leak_per_s=1.0), on_ban=banned.append)
    for i in range(100):                    # one bad frame every 2 s leaks away
        g.bad("slow", i * 2.0)
    assert banned == []
    for _ in range(6):
        g.bad("fast", 0.0)
    assert banned == ["fast"] and not g.admit("fast", 1.0)


def test_tracking_is_bounded():
    g = PeerGuard(GuardConfig(max_peers=100))
    for i in range(1000):
        g.admit(f"p{i}", 0.0)
        g.ban(f"q{i}", 0.0, "test")
    assert len(g._peers) <= 100 and len(g._banned) <= 100
