"""What a node knows of its peers before gossip: the records exchanged in HELLO messages.

A node record is the msgpack map a node sends in HELLO / HELLO_ACK / DIRECTORY::

    {"id": str, "address": str, "version": int, "boot": int,
     "agents": {name: [capability, ...]}, "topics": [pattern, ...], "peers": {id: address}}

``boot`` changes on every process start, so a restarted peer is told apart from a
reconnected one. (The gossip issue replaces this exchange with SWIM; the record becomes
the member's metadata.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from mesh.errors import ProtocolError

PROTOCOL_VERSION = 1


class PeerState(str, Enum):
    CONNECTING = "connecting"   # our DEALER exists, no HELLO_ACK yet
    UP = "up"                   # link up and its record applied to the directory
    DOWN = "down"               # link lost or the peer said BYE; ZeroMQ keeps reconnecting


@dataclass(slots=True)
class Peer:
    id: str
    address: str
    state: PeerState = PeerState.CONNECTING
    boot: int = 0
    agents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    topics: tuple[str, ...] = ()
    applied_topics: tuple[str, ...] = ()   # what the remote topic table holds for this peer


@dataclass(frozen=True, slots=True)
class NodeRecord:
    id: str
    address: str
    version: int
    boot: int
    agents: dict[str, tuple[str, ...]]
    topics: tuple[str, ...]
    peers: dict[str, str]

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "address": self.address, "version": self.version, "boot": self.boot,
                "agents": {a: list(c) for a, c in self.agents.items()},
                "topics": list(self.topics), "peers": dict(self.peers)}

    @classmethod
    def from_wire(cls, body: Any) -> NodeRecord:
        """Validate a record from a peer; anything off raises ProtocolError."""
        try:
            if not isinstance(body, dict):
                raise TypeError("record is not a map")
            version = body["version"]
            if version != PROTOCOL_VERSION:
                raise ProtocolError(f"peer speaks protocol version {version}, we speak {PROTOCOL_VERSION}")
            agents = {_str(a): tuple(_str(c) for c in caps) for a, caps in body["agents"].items()}
            return cls(id=_str(body["id"]), address=_str(body["address"]), version=version,
                       boot=int(body["boot"]), agents=agents,
                       topics=tuple(_str(t) for t in body["topics"]),
                       peers={_str(k): _str(v) for k, v in body["peers"].items()})
        except ProtocolError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(f"malformed node record: {exc!r}") from None


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value
