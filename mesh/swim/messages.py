"""SWIM messages and the actions the core asks its driver to carry out.

Every message carries ``updates``: membership news piggybacked on it (see :mod:`broadcasts`).
A message is addressed by the envelope: the driver knows who sent it (``src`` in
:meth:`Swim.step <mesh.swim.core.Swim.step>`), so messages hold only what the protocol needs.

Responses (ACK, NACK, SYNC_REPLY) go back to the sender of the request on the link the
request came in on; requests (PING, PING_REQ, GOSSIP, SYNC) go out on our own link to the
target, opened on demand from the address the core gives.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Union


class SwimKind(IntEnum):
    """Envelope kinds of gossip traffic (the 32..63 block of :class:`mesh._core.wire.Kind`)."""
    PING = 32
    PING_REQ = 33
    ACK = 34
    NACK = 35
    GOSSIP = 36
    SYNC = 37
    SYNC_REPLY = 38


RESPONSE_KINDS = frozenset({SwimKind.ACK, SwimKind.NACK, SwimKind.SYNC_REPLY})


class State(IntEnum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2     # declared dead by the failure detector
    LEFT = 3     # said goodbye: dead, but not to be reconnected to


@dataclass(frozen=True, slots=True)
class Update:
    """What one node claims about ``node``: ALIVE (with its address and metadata),
    SUSPECT / DEAD (``source`` = the accuser) or LEFT (``source`` = the node itself).
    A push-pull sync sends one Update per member it knows. ``sig``: where security is on,
    ``node``'s own signature of its record (incarnation, address, metadata), which relays
    pass on untouched and receivers check before the core sees it."""
    state: State
    node: str
    incarnation: int
    address: str = ""
    meta: bytes = b""
    source: str = ""
    sig: bytes = b""


@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    target: str                       # the id we believe lives at that address
    updates: tuple[Update, ...] = ()
    known: int = 0                    # members the sender knows (0 = not said): a cheap digest


@dataclass(frozen=True, slots=True)
class PingReq:
    """Ask a helper to ping ``target`` for us and relay the ACK (or NACK if none came)."""
    seq: int
    target: str
    address: str
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    updates: tuple[Update, ...] = ()
    known: int = 0


@dataclass(frozen=True, slots=True)
class Nack:
    """A helper of a PING_REQ heard nothing from the target: the requester's own network works."""
    seq: int
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Gossip:
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Sync:
    """Push-pull anti-entropy: the sender's full state. ``join`` marks a node joining."""
    join: bool
    members: tuple[Update, ...]
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class SyncReply:
    members: tuple[Update, ...]
    updates: tuple[Update, ...] = ()


Message = Union[Ping, PingReq, Ack, Nack, Gossip, Sync, SyncReply]

KIND_OF: dict[type, SwimKind] = {
    Ping: SwimKind.PING, PingReq: SwimKind.PING_REQ, Ack: SwimKind.ACK, Nack: SwimKind.NACK,
    Gossip: SwimKind.GOSSIP, Sync: SwimKind.SYNC, SyncReply: SwimKind.SYNC_REPLY,
}


# -- actions ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` to node ``to`` at ``address``. ``to`` is None when only the address
    is known (a seed, before it answers)."""
    to: str | None
    address: str
    message: Message


class EventKind(IntEnum):
    JOINED = 0      # first heard of, alive
    UPDATED = 1     # alive with new address or metadata (or back from SUSPECT)
    SUSPECT = 2
    DEAD = 3
    LEFT = 4
    REAPED = 5      # forgotten after reap_after_ms in DEAD/LEFT


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    address: str
    state: State
    incarnation: int
    meta: bytes
    since_ms: int            # when it entered this state (local clock)


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: EventKind
    member: Member


Action = Union[Send, MemberEvent]
