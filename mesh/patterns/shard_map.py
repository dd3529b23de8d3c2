"""The shard map: which agent owns each partition of a sharded capability, how that is
computed, and the map's form in the Raft KV. No I/O here: :mod:`mesh.patterns.sharding` reads,
writes, watches and serves the maps.

Theory of operation
-------------------
Each sharded capability has a fixed number of partitions (1024 by default, fixed when its map
is first written: enough that 32 providers still get 32 each, which keeps both the balance and
the movement close to ideal; ``python -m bench.sharding``). A key's partition is
``router.partition_of(key, partitions)`` (compiled; a stable 64-bit hash). The map, kept in the
Raft KV under ``_shards/map/<capability>`` (:func:`map_key`), names the owner agent of every
partition and carries an *epoch* that each rewrite raises by exactly one. Owners come from a
consistent-hash ring (``router.HashRing``) over the agents offering the capability, with bounded
loads (no owner gets more than ``load_factor`` times its fair share), so a change of providers
from n to n+1 or n-1 moves about 1/n of the partitions (:func:`moved_fraction`). *Pins*
(``ShardRouter.move``) put one partition on a chosen owner; a pin is kept while its agent is a
provider.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import quote

from mesh._core import router
from mesh.errors import ProtocolError

__all__ = ["MAP_PREFIX", "WIRE_VERSION", "ShardConfig", "ShardMap", "compute_map", "moved_fraction", "map_key"]

MAP_PREFIX = "_shards/map/"
WIRE_VERSION = 1


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """Tuning of a :class:`~mesh.patterns.sharding.ShardRouter`. Times in seconds.

    ``partitions`` and ``vnodes`` apply to maps written from now on (a map keeps its partition
    count for life; give it some 30 or more per provider you expect). ``load_factor``: no owner gets more than ``ceil(load_factor * partitions /
    providers)`` partitions (0: plain consistent hashing). ``lease_ttl_s``: how long a serving
    node that died keeps its partitions fenced. ``settle_s``: how long a change of providers
    must hold before the map follows it; ``poll_s``: how often the rebalancer looks.
    ``drain_s``: how long an owner that lost a partition waits for its calls on it to finish
    before it lets the next owner start anyway. ``kv_timeout_s`` bounds each KV operation of the
    background tasks."""
    partitions: int = 1024
    vnodes: int = 128
    load_factor: float = 1.25
    lease_ttl_s: float = 3.0
    settle_s: float = 0.5
    poll_s: float = 0.1
    drain_s: float = 30.0
    kv_timeout_s: float = 5.0


# ---------------------------------------------------------------------------------------------
# the map


@dataclass(frozen=True, slots=True)
class ShardMap:
    """Who owns each partition of ``capability`` at ``epoch``. ``providers`` are the agents it
    was computed from (sorted); ``pins`` partitions moved by hand, kept while their agent is a
    provider."""
    capability: str
    epoch: int
    owners: tuple[str, ...]
    providers: tuple[str, ...]
    pins: tuple[tuple[int, str], ...] = ()
    raw: Any = field(default=None, compare=False, repr=False)   # the value as stored (for cas)

    @property
    def partitions(self) -> int:
        return len(self.owners)

    def owner_of(self, key: str | bytes) -> str:
        return self.owners[router.partition_of(key, len(self.owners))]

    def to_wire(self) -> dict[str, Any]:
        agents = sorted(set(self.owners))
        index = {a: i for i, a in enumerate(agents)}
        return {"v": WIRE_VERSION, "epoch": self.epoch, "agents": agents,
                "owners": [index[a] for a in self.owners], "providers": list(self.providers),
                "pins": [[p, a] for p, a in self.pins]}

    @classmethod
    def from_wire(cls, capability: str, value: Any) -> ShardMap:
        """Parse a stored map; ProtocolError if it is not one."""
        try:
            if value["v"] != WIRE_VERSION:
                raise ProtocolError(f"shard map of {capability!r} has version {value['v']!r}")
            agents = [str(a) for a in value["agents"]]
            index = value["owners"]
            if not all(type(i) is int and 0 <= i < len(agents) for i in index):
                raise ValueError("owner index out of range")
            owners = tuple(agents[i] for i in index)
            epoch = value["epoch"]
            pins = tuple((int(p), str(a)) for p, a in value["pins"])
            providers = tuple(str(a) for a in value["providers"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed shard map of {capability!r}: {exc!r}") from None
        if type(epoch) is not int or epoch < 1 or not owners or len(owners) > (1 << 20):
            raise ProtocolError(f"malformed shard map of {capability!r}")
        return cls(capability, epoch, owners, providers, pins, value)


def compute_map(capability: str, providers: Iterable[str], config: ShardConfig, *, partitions: int | None = None,
                pins: Iterable[tuple[int, str]] = (), epoch: int = 1) -> ShardMap:
    """The map consistent hashing gives ``providers``, with the ``pins`` whose agent is one of
    them applied on top. ValueError if there are no providers."""
    names = tuple(sorted(set(providers)))
    if not names:
        raise ValueError(f"no providers for capability {capability!r}")
    ring = router.HashRing(config.vnodes)
    for name in names:
        ring.add(name)
    count = config.partitions if partitions is None else partitions
    owners = list(ring.assign(count, config.load_factor))
    kept = tuple(sorted((p, a) for p, a in pins if a in names and 0 <= p < count))
    for p, a in kept:
        owners[p] = a
    return ShardMap(capability, epoch, tuple(owners), names, kept)


def moved_fraction(before: ShardMap | tuple[str, ...], after: ShardMap | tuple[str, ...]) -> float:
    """The fraction of partitions whose owner differs between two maps of the same size."""
    a = before.owners if isinstance(before, ShardMap) else before
    b = after.owners if isinstance(after, ShardMap) else after
    if len(a) != len(b):
        raise ValueError("maps of different partition counts")
    return sum(x != y for x, y in zip(a, b)) / len(a)


def map_key(capability: str) -> str:
    return MAP_PREFIX + quote(capability, safe="")

