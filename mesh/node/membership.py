"""What a node tells the mesh about itself: the metadata of its SWIM member record.

SWIM carries metadata as opaque bytes (:mod:`mesh.swim` knows nothing of agents); a node's
metadata is the msgpack map::

    {"v": PROTOCOL_VERSION, "agents": {name: [capability, ...]}, "topics": [pattern, ...],
     "blocking": [pattern, ...], "capacity": {name: float},
     "load": {"handlers": int, "calls_per_s": float, "health": float}}

``blocking`` lists the patterns whose subscribers chose ``overflow="block"``: publishers
send those messages with the ACK flag and wait for room (absent in older metadata).
``capacity`` holds the ``call_any`` weights of agents whose weight is not 1.0.
``load["health"]`` is the node's health score 0..100 over the last minute
(:mod:`mesh.observe.health`), from which every node computes the mesh's; absent in older
metadata.

A change (an agent added or removed, a subscription, a notable change of load) is published
with a new incarnation and spreads by gossip; every node applies it to its router, so calls
follow membership without restarts. :meth:`NodeMeta.from_bytes` validates everything, because
the bytes come from the network.

Limits and checks of :meth:`NodeMeta.from_bytes`: the bytes are at most
:data:`MAX_META_BYTES` (the gossip wire refuses longer ones) and decode under the codec's
default limits; agent names, capabilities, topics and blocking patterns are non-empty
strings, capabilities come as an array, capacities are finite numbers > 0 and load figures
numbers. Whatever it accepts, the router takes: a name the router would refuse must not
make it as far as the runtime, which routes a member's agents on a gossip event.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mesh._core import codec
from mesh.errors import DecodeError, ProtocolError

PROTOCOL_VERSION = 1
MAX_META_BYTES = 64 * 1024

# A load summary is re-published when it moved by this factor or more (at most once per
# ``load_interval``): load rides on incarnations, and each one costs a gossip broadcast.
LOAD_CHANGE_FACTOR = 1.5


@dataclass(frozen=True, slots=True)
class NodeMeta:
    agents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    topics: tuple[str, ...] = ()
    blocking: tuple[str, ...] = ()
    capacity: dict[str, float] = field(default_factory=dict)
    load: dict[str, float] = field(default_factory=dict)
    version: int = PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        data = codec.pack_body({"v": self.version, "agents": {a: list(c) for a, c in self.agents.items()},
                                "topics": list(self.topics), "blocking": list(self.blocking),
                                "capacity": dict(self.capacity),
                                "load": dict(self.load)})
        if len(data) > MAX_META_BYTES:
            raise ValueError(f"node metadata of {len(data)} bytes exceeds {MAX_META_BYTES} "
                             "(too many agents or subscriptions on one node)")
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> NodeMeta:
        """Decode a member's metadata; anything off raises ProtocolError."""
        if not data:
            return cls()
        try:
            body = codec.load_body(data)
        except DecodeError as exc:
            raise ProtocolError(f"undecodable member metadata: {exc}") from None
        try:
            if not isinstance(body, dict):
                raise TypeError("metadata is not a map")
            version = body["v"]
            if version != PROTOCOL_VERSION:
                raise ProtocolError(f"member speaks protocol version {version}, we speak {PROTOCOL_VERSION}")
            agents = {_str(a): tuple(_str(c) for c in _list(caps)) for a, caps in _map(body["agents"]).items()}
            topics = tuple(_str(t) for t in _list(body["topics"]))
            blocking = tuple(_str(t) for t in _list(body.get("blocking", [])))
            capacity = {_str(a): _number(c) for a, c in _map(body.get("capacity", {})).items()}
            if not all(0.0 < c < float("inf") for c in capacity.values()):
                raise ValueError("capacity must be finite and > 0")
            load = {_str(k): _number(v) for k, v in _map(body.get("load", {})).items()}
        except ProtocolError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(f"malformed member metadata: {exc!r}") from None
        return cls(agents, topics, blocking, capacity, load, version)


def load_changed(old: dict[str, float], new: dict[str, float]) -> bool:
    """Whether a load summary moved enough to be worth a new incarnation."""
    for key, value in new.items():
        before = old.get(key, 0.0)
        low, high = sorted((before, value))
        if high >= 1.0 and high >= low * LOAD_CHANGE_FACTOR:
            return True
    return False


def _str(value: Any) -> str:
    # non-empty: the router refuses an empty agent name or capability with ValueError, and
    # the runtime routes on a gossip event, where nothing would catch it
    if type(value) is not str:
        raise TypeError(f"expected a string, got {type(value).__name__}")
    if not value:
        raise ValueError("an empty name")
    return value


def _list(value: Any) -> list:
    # a str is iterable too: "risk" must not become the capabilities r, i, s, k
    if type(value) is not list:
        raise TypeError(f"expected an array, got {type(value).__name__}")
    return value


def _map(value: Any) -> dict:
    if type(value) is not dict:
        raise TypeError(f"expected a map, got {type(value).__name__}")
    return value


def _number(value: Any) -> float:
    # float() would take "1e3" (a str) and True as numbers
    if type(value) is not int and type(value) is not float:
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)
