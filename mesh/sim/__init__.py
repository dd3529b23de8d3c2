"""Deterministic simulation: a virtual clock, a faulty network and protocol clusters on them.

Theory of operation
-------------------
One :class:`World` per run holds the clock and every pending event; one integer seed sets
everything random (network faults, the cores' own randomness), each consumer drawing from its
own named stream, so a run replays exactly from its seed: ``python -m mesh.sim --seed N``.
The :class:`Network` moves bytes between hosts with latency, loss, duplication, reordering
and partitions. Protocol harnesses (:class:`SwimCluster`; Raft's later) drive sans-I/O
cores over it exactly as the runtime drives them over ZeroMQ, with real encoded bytes.
Nothing here sleeps or reads a real clock: a minute of cluster life is a loop over a heap.
"""
from __future__ import annotations

from mesh.sim.network import Network, NetworkConfig, NodeStats
from mesh.sim.swim import Observation, SwimCluster, Traffic
from mesh.sim.world import World

__all__ = ["Network", "NetworkConfig", "NodeStats", "Observation", "SwimCluster", "Traffic", "World"]
