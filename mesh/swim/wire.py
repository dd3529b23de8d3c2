"""SWIM messages <-> plain msgpack-ready lists, with validation of everything that arrives.

Layout (each a msgpack array; ``U`` is an update ``[state, node, incarnation, address, meta, source, sig]``,
``sig`` the member's signature of its record or empty, see :mod:`mesh.security.records`)::

    PING        [seq, target, [U...], known]
    PING_REQ    [seq, target, address, [U...]]
    ACK         [seq, [U...], known]
    NACK        [seq, [U...]]
    GOSSIP      [[U...]]
    SYNC        [join, [U...members], [U...]]
    SYNC_REPLY  [[U...members], [U...]]

:func:`from_body` raises :class:`~mesh.errors.ProtocolError` for anything else, so a driver
drops and counts it. The generic byte-level limits (sizes, depth) are the codec's job; here we
bound what is specific to SWIM: ids (target, node, source) of at most :data:`MAX_ID_BYTES`
UTF-8 bytes, addresses of :data:`MAX_ADDRESS_BYTES`, metadata of :data:`MAX_META_BYTES`,
signatures of :data:`MAX_SIG_BYTES`, :data:`MAX_UPDATES` updates per list, and integers that
fit in 64 unsigned bits. An address is any such string: whether it is an endpoint the
transport can connect to is the driver's to check.
"""
from __future__ import annotations

from typing import Any

from mesh.errors import ProtocolError
from mesh.swim.messages import (KIND_OF, Ack, Gossip, Message, Nack, Ping, PingReq, State, SwimKind, Sync,
                                SyncReply, Update)

MAX_ID_BYTES = 255
MAX_ADDRESS_BYTES = 1024
MAX_META_BYTES = 64 * 1024
MAX_SIG_BYTES = 64          # an Ed25519 signature
MAX_UPDATES = 4096          # per message (a SYNC carries one per member)
MAX_U64 = (1 << 64) - 1
_STATES = tuple(State)   # index by the wire value: cheaper than State(value) per update


def update_to_list(u: Update) -> list:
    return [int(u.state), u.node, u.incarnation, u.address, u.meta, u.source, u.sig]


def to_body(msg: Message) -> list:
    if type(msg) not in KIND_OF:
        raise TypeError(f"not a SWIM message: {msg!r}")
    ups = [update_to_list(u) for u in msg.updates]
    if isinstance(msg, Ping):
        return [msg.seq, msg.target, ups, msg.known]
    if isinstance(msg, PingReq):
        return [msg.seq, msg.target, msg.address, ups]
    if isinstance(msg, Ack):
        return [msg.seq, ups, msg.known]
    if isinstance(msg, Nack):
        return [msg.seq, ups]
    if isinstance(msg, Gossip):
        return [ups]
    if isinstance(msg, Sync):
        return [msg.join, [update_to_list(u) for u in msg.members], ups]
    if isinstance(msg, SyncReply):
        return [[update_to_list(u) for u in msg.members], ups]
    raise TypeError(f"not a SWIM message: {msg!r}")


def from_body(kind: int, body: Any) -> Message:
    """Build the message of ``kind`` from a decoded body; ProtocolError if it is not one."""
    try:
        k = SwimKind(kind)
    except ValueError:
        raise ProtocolError(f"unknown gossip kind {kind}") from None
    if not isinstance(body, list):
        raise ProtocolError(f"{k.name} body must be an array")
    try:
        if k is SwimKind.PING:
            seq, target, ups, known = body
            return Ping(_u64(seq), _name(target, MAX_ID_BYTES), _updates(ups), _u64(known))
        if k is SwimKind.PING_REQ:
            seq, target, address, ups = body
            return PingReq(_u64(seq), _name(target, MAX_ID_BYTES), _name(address, MAX_ADDRESS_BYTES),
                           _updates(ups))
        if k is SwimKind.ACK:
            seq, ups, known = body
            return Ack(_u64(seq), _updates(ups), _u64(known))
        if k is SwimKind.NACK:
            seq, ups = body
            return Nack(_u64(seq), _updates(ups))
        if k is SwimKind.GOSSIP:
            (ups,) = body
            return Gossip(_updates(ups))
        if k is SwimKind.SYNC:
            join, members, ups = body
            if not isinstance(join, bool):
                raise ProtocolError("SYNC join flag must be a boolean")
            return Sync(join, _updates(members), _updates(ups))
        members, ups = body   # SYNC_REPLY
        return SyncReply(_updates(members), _updates(ups))
    except ValueError as exc:   # wrong number of fields
        raise ProtocolError(f"malformed {k.name}: {exc}") from None


def _updates(items: Any) -> tuple[Update, ...]:
    if not isinstance(items, list):
        raise ProtocolError("updates must be an array")
    if len(items) > MAX_UPDATES:
        raise ProtocolError(f"{len(items)} updates in one message (limit {MAX_UPDATES})")
    out = []
    for item in items:
        if not isinstance(item, list) or len(item) != 7:
            raise ProtocolError("an update must be [state, node, incarnation, address, meta, source, sig]")
        state, node, inc, address, meta, source, sig = item
        if type(state) is not int or not 0 <= state <= 3:
            raise ProtocolError(f"bad member state {state!r}")
        if not isinstance(meta, bytes) or len(meta) > MAX_META_BYTES:
            raise ProtocolError("member metadata must be bytes of at most 64 KiB")
        if not isinstance(sig, bytes) or len(sig) > MAX_SIG_BYTES:
            raise ProtocolError(f"a record signature must be bytes of at most {MAX_SIG_BYTES}")
        node = _name(node, MAX_ID_BYTES)
        if not node:
            raise ProtocolError("empty node id in an update")
        out.append(Update(_STATES[state], node, _u64(inc), _name(address, MAX_ADDRESS_BYTES), meta,
                          _name(source, MAX_ID_BYTES), sig))
    return tuple(out)


def _u64(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_U64:
        raise ProtocolError(f"expected an unsigned 64-bit integer, got {value!r}")
    return value


def _name(value: Any, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"expected a string, got {type(value).__name__}")
    # a code point is at most 4 UTF-8 bytes: only long strings need the exact count
    if len(value) * 4 > max_bytes and (len(value) > max_bytes or len(value.encode()) > max_bytes):
        raise ProtocolError(f"string of more than {max_bytes} bytes")
    return value
