"""Wire constants shared by both codec twins: the envelope layout, kinds and flags.

Envelope header (little-endian, 44 bytes, then three UTF-8 names, then the msgpack body)::

    off size field
    0   u8   version      (VERSION)
    1   u8   kind         (Kind)
    2   u16  flags        (Flag bits)
    4   u32  body_len     bytes of msgpack body after the names
    8   u64  msg_id       unique per sender
    16  u64  corr_id      msg_id of the request a REPLY/ERROR answers (0 otherwise)
    24  u64  deadline_us  absolute wall-clock deadline in microseconds since the epoch (0 = none)
    32  u64  trace_id     0 = none
    40  u8   src_len      source agent name (or node id), bytes
    41  u8   dst_len      destination agent name, bytes
    42  u16  subject_len  method name or topic, bytes
    44  src | dst | subject | body

An envelope is self-delimiting, so one ZeroMQ frame may carry several back to back
(send batching); a decoder walks them in order.
"""
from __future__ import annotations

from enum import IntEnum, IntFlag

VERSION = 1
HEADER_SIZE = 44


class Kind(IntEnum):
    # application traffic
    REQUEST = 1      # dst = agent, subject = method, body = [args, kwargs]
    REPLY = 2        # corr_id = request msg_id, body = result
    ERROR = 3        # corr_id = request msg_id, body = [type name, message]
    SEND = 4         # one-way request: no reply, errors only counted
    PUBLISH = 5      # subject = topic, body = payload
    # 16..31 reserved for link management
    # 32..63 gossip: mesh.swim.messages.SwimKind (PING 32 .. SYNC_REPLY 38)
    # 64..95 reserved for Raft


class Flag(IntFlag):
    NONE = 0
    IDEMPOTENT = 1   # safe to retry
    ACK = 2          # PUBLISH: the publisher waits for a REPLY once its subscriptions took it
