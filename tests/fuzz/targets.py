"""The decoders that take bytes from peers, each wrapped as one function of bytes to fuzz.

Theory of operation
-------------------
A *target* runs bytes down the whole path they take in a node, with the hot path that is
selected (``MESH_PURE``), and checks what the node relies on:

* it never raises anything but the decoder's own error: :class:`~mesh.errors.DecodeError`
  from the codec, :class:`~mesh.errors.ProtocolError` from the protocol decoders. Those are
  caught here and named in the result; anything else escapes and is a bug (the fuzzers report
  it with the input);
* what a decoder accepts is usable: it re-encodes to what was decoded, survives a round trip
  through the real encoders, and the next layer takes it (the router takes every agent a
  member's metadata names, the KV machine's state still snapshots and restores);
* the compiled and pure codec twins give the same result, or the same error and message.

``run(name, data)`` returns ``"ok"`` or the name of the decoder's error and counts the case in
:data:`CASES`. The hypothesis tests in ``tests/fuzz`` and the atheris driver
``tools/fuzz_decoders.py`` both feed these targets; :func:`seeds` gives each one valid inputs
built by the real encoders, to start mutating from.

Gossip and Raft targets read the envelope kind from the first byte (so a fuzzer also tries a
body under the wrong kind) and the msgpack body from the rest.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import msgpack

from mesh._core import codec, compiled_twin, router, scoring
from mesh._core._pure import codec as pure_codec
from mesh._core.wire import HEADER_SIZE, Kind
from mesh.errors import DecodeError, ProtocolError
from mesh.kv.machine import CAS, DELETE, EXPIRE, GRANT, KEEPALIVE, PUT, REVOKE, KVMachine, encode_command
from mesh.node.membership import MAX_META_BYTES, NodeMeta
from mesh.observe.health import mesh_health
from mesh.raft import wire as raft_wire
from mesh.raft.messages import KIND_OF as RAFT_KIND_OF
from mesh.raft.messages import (Append, AppendResp, ConfState, Entry, EntryKind, InstallSnapshot, RaftKind,
                                Snapshot, SnapshotMeta, SnapshotResp, TimeoutNow, Vote, VoteResp)
from mesh.swim import wire as swim_wire
from mesh.swim.messages import KIND_OF as SWIM_KIND_OF
from mesh.swim.messages import Ack, Gossip, Nack, Ping, PingReq, State, SwimKind, Sync, SyncReply, Update

try:
    compiled_codec = compiled_twin("codec")
except ImportError:   # not built: the pure twin alone (parity is then not checked)
    compiled_codec = None

__all__ = ["CASES", "NAMES", "GOSSIP_KINDS", "RAFT_KINDS", "feed", "run", "seeds"]

CASES: Counter[str] = Counter()   # inputs fed to each target in this process

# first byte of a gossip / raft input -> the envelope kind (the real ones and a few neighbours)
GOSSIP_KINDS = tuple(int(k) for k in SwimKind) + (0, 31, 39, 64)
RAFT_KINDS = tuple(int(k) for k in RaftKind) + (0, 32, 63, 71, 95)
_MSGPACK_PREFIX = "body does not unpack: "   # msgpack's own text differs between its C and Python code


# ------------------------------------------------------------------------------------- codec

def _canon(value: Any) -> Any:
    """A comparable form of a decoded body: NaN-safe (compares packed bytes)."""
    return msgpack.packb(value, use_bin_type=True)


def _codec_outcome(mod: Any, data: bytes) -> tuple:
    """Everything one codec twin says about ``data``: decode_frame (and every body in it),
    decode, load_body, each as ("ok", result) or ("DecodeError", message)."""
    out = []
    for fn in (mod.decode_frame, mod.decode, mod.load_body):
        try:
            result = fn(data)
        except DecodeError as exc:
            message = str(exc)
            out.append(("DecodeError", _MSGPACK_PREFIX if message.startswith(_MSGPACK_PREFIX) else message))
            continue
        if fn is mod.decode_frame:
            assert result and all(len(e.body) <= len(data) - HEADER_SIZE for e in result)
            bodies = []
            for env in result:
                try:
                    bodies.append(("ok", _canon(mod.load_body(env.body))))
                except DecodeError as exc:
                    message = str(exc)
                    bodies.append(("DecodeError", _MSGPACK_PREFIX if message.startswith(_MSGPACK_PREFIX)
                                   else message))
            out.append(("ok", [e.as_tuple() for e in result], bodies))
        elif fn is mod.decode:
            out.append(("ok", result[0].as_tuple(), _canon(result[1])))
        else:
            out.append(("ok", _canon(result)))
    return tuple(out)


def _run_codec(data: bytes) -> str:
    got = _codec_outcome(pure_codec, data)
    if compiled_codec is not None:
        assert _codec_outcome(compiled_codec, data) == got, "the codec twins disagree"
    # a frame the codec takes re-encodes to the same bytes
    if got[0][0] == "ok":
        frame = b"".join(
            pure_codec.encode_raw(kind, msg_id, corr_id, src, dst, subject, body, flags, deadline_us, trace_id)
            for (_, kind, flags, msg_id, corr_id, deadline_us, trace_id, src, dst, subject, body) in got[0][1])
        assert frame == data, "a decoded frame does not re-encode to its bytes"
    return "ok" if got[0][0] == "ok" else "DecodeError"


# --------------------------------------------------------------------------- gossip and raft

def _split(data: bytes, kinds: tuple[int, ...]) -> tuple[int, bytes]:
    return (kinds[data[0] % len(kinds)], data[1:]) if data else (kinds[0], b"")


def _run_protocol(wire: Any, kinds: tuple[int, ...], data: bytes) -> str:
    kind, raw = _split(data, kinds)
    try:
        body = codec.load_body(raw)
        msg = wire.from_body(kind, body)
    except (DecodeError, ProtocolError) as exc:
        return type(exc).__name__
    assert wire.to_body(msg) == body, "an accepted message does not re-encode to its body"
    assert wire.from_body(kind, codec.load_body(codec.pack_body(wire.to_body(msg)))) == msg
    return "ok"


def _run_gossip(data: bytes) -> str:
    return _run_protocol(swim_wire, GOSSIP_KINDS, data)


def _run_raft(data: bytes) -> str:
    return _run_protocol(raft_wire, RAFT_KINDS, data)


def _conf_by_msgpack(data: bytes) -> ConfState | None:
    """What decode_conf accepted when it was msgpack.unpackb + _conf: its oracle."""
    try:
        lists = msgpack.unpackb(data, raw=False)
    except Exception:   # an oracle: whatever msgpack refuses, decode_conf must refuse
        return None
    if type(lists) is not list or len(lists) != 3:
        return None
    try:
        return raft_wire._conf(*lists, "CONFIG entry")
    except ProtocolError:
        return None


def _run_conf(data: bytes) -> str:
    try:
        conf = raft_wire.decode_conf(data)
    except ProtocolError:
        assert _conf_by_msgpack(data) is None, "decode_conf refuses what msgpack and _conf accept"
        return "ProtocolError"
    assert _conf_by_msgpack(data) == conf, "decode_conf accepts what msgpack and _conf refuse"
    assert raft_wire.decode_conf(raft_wire.encode_conf(conf)) == conf
    return "ok"


# ----------------------------------------------------------------------- member metadata

def _run_meta(data: bytes) -> str:
    data = data[:MAX_META_BYTES]   # the gossip wire refuses longer metadata
    try:
        meta = NodeMeta.from_bytes(data)
    except ProtocolError:
        return "ProtocolError"
    # what the runtime does with it on a gossip event: none of it may raise
    directory = router.Directory("local")
    directory.add_local("mine", ("cap",))
    directory.set_node("peer", meta.agents)
    board = scoring.Scoreboard(seed=1)
    for name in meta.agents:
        board.add(name, meta.capacity.get(name, 1.0))
    topics = router.TopicTable()
    for pattern in meta.topics + meta.blocking:
        try:
            topics.subscribe(pattern, "peer")
        except ValueError:   # counted and skipped by the runtime
            pass
    if "health" in meta.load:
        mesh_health([meta.load["health"]])
    try:
        again = meta.to_bytes()
    except ValueError:   # too big to publish (ints became floats): only our own is re-encoded
        return "ok"
    assert NodeMeta.from_bytes(again).to_bytes() == again
    return "ok"


# ------------------------------------------------------------------------------ KV commands

def _kv_state() -> bytes:
    m = KVMachine()
    m.apply(1, encode_command("c1", 1, PUT, "a", {"x": [1, 2.5, "s"]}, 0))
    m.apply(2, encode_command("c1", 2, GRANT, 5000, 1000, ack=2))
    m.apply(3, encode_command("c2", 1, PUT, "b", b"\x00bin", 1))
    m.apply(4, encode_command("", 0, PUT, "c", None, 0))
    return m.snapshot()


_KV_STATE = _kv_state()


def _run_kv(data: bytes) -> str:
    machine = KVMachine()
    machine.restore(_KV_STATE)
    result, changes = machine.apply(machine.applied + 1, data)   # must answer, never raise
    snap = machine.snapshot()
    again = KVMachine()
    again.restore(snap)
    assert again.snapshot() == snap, "the KV state does not survive a snapshot"
    return "ProtocolError" if isinstance(result, ProtocolError) else "ok"


# ------------------------------------------------------------------------ a frame, end to end

_GOSSIP_RANGE = range(32, 64)
_RAFT_RANGE = range(64, 96)


def _run_frame(data: bytes) -> str:
    """A frame as the runtime takes it apart: the envelopes, then each body by its kind."""
    try:
        envelopes = codec.decode_frame(data)
    except DecodeError:
        return "DecodeError"
    outcomes = []
    for env in envelopes:
        try:
            body = codec.load_body(env.body)
            if env.kind in _GOSSIP_RANGE:
                swim_wire.from_body(env.kind, body)
            elif env.kind in _RAFT_RANGE:
                raft_wire.from_body(env.kind, body)
            outcomes.append("ok")
        except (DecodeError, ProtocolError) as exc:
            outcomes.append(type(exc).__name__)
    return "ok" if all(o == "ok" for o in outcomes) else "partly"


_TARGETS: dict[str, Callable[[bytes], str]] = {
    "codec": _run_codec, "frame": _run_frame, "gossip": _run_gossip, "raft": _run_raft, "conf": _run_conf,
    "meta": _run_meta, "kv": _run_kv,
}
NAMES = tuple(_TARGETS)


def run(name: str, data: bytes) -> str:
    """Feed ``data`` to target ``name``: "ok" or the decoder's error; any exception is a bug."""
    CASES[name] += 1
    return _TARGETS[name](data)


def feed(name: str, data: bytes) -> str:
    """As :func:`run`, for tests: a bug fails with the input that found it, ready for @example."""
    try:
        return run(name, data)
    except Exception as exc:
        raise AssertionError(f"fuzz target {name!r} failed on the {len(data)} bytes {data[:8192]!r}: "
                             f"{type(exc).__name__}: {exc}") from exc


# ------------------------------------------------------------------------------ seed inputs

def _updates() -> tuple[Update, ...]:
    return (Update(State.ALIVE, "n1", 3, "tcp://127.0.0.1:7001", NodeMeta(agents={"a": ("x",)}).to_bytes()),
            Update(State.SUSPECT, "n2", 2**64 - 1, source="n1"), Update(State.LEFT, "ключ", 0, source="ключ"))


def swim_messages() -> list:
    ups = _updates()
    return [Ping(1, "n2", ups, 5), PingReq(2, "n3", "tcp://127.0.0.1:7003", ups[:1]), Ack(3, ups, 2),
            Nack(4), Gossip(ups), Sync(True, ups, ups[1:]), SyncReply(ups[:2], ())]


def raft_messages() -> list:
    conf = ConfState(("n1", "n2", "n3"), ("l1",))
    entries = (Entry(6, 2, EntryKind.NORMAL, encode_command("c", 1, PUT, "k", 1, 0)), Entry(7, 3, EntryKind.NOOP),
               Entry(8, 3, EntryKind.CONFIG, raft_wire.encode_conf(conf)))
    return [Vote("n1", "n2", 4, 9, 3, False, False), VoteResp("n2", "n1", 4, True, True),
            Append("n1", "n2", 3, 5, 2, entries, 5, 7, False), Append("n1", "n2", 3, 5, 2, (), 5, 0, True),
            AppendResp("n2", "n1", 3, True, 8, 0, 7, False),
            InstallSnapshot("n1", "n2", 5, Snapshot(SnapshotMeta(100, 4, conf), b"state")),
            SnapshotResp("n2", "n1", 5, 100), TimeoutNow("n1", "n2", 6)]


def envelopes() -> list[bytes]:
    out = [codec.encode(Kind.REQUEST, 1, 0, "c", "calc", "add", [[1, 2], {"k": "v"}], deadline_us=5),
           codec.encode(Kind.REPLY, 2, 1, "n1", "", "", {"ok": [1.5, None, True, b"\x01"]}),
           codec.encode(Kind.ERROR, 3, 1, "n1", "c", "", ["Timeout", "late", 1]),
           codec.encode(Kind.PUBLISH, 4, 0, "n1", "", "signals.AAPL", {"px": 187.25}, flags=2)]
    for msg in swim_messages()[:3]:
        out.append(codec.encode(swim_kind(msg), 0, 0, "n1", "", "", swim_wire.to_body(msg)))
    for msg in raft_messages()[:3]:
        out.append(codec.encode(raft_kind(msg), 0, 0, "n1", "", "", raft_wire.to_body(msg)))
    return out


def swim_kind(msg: Any) -> int:
    return int(SWIM_KIND_OF[type(msg)])


def raft_kind(msg: Any) -> int:
    return int(RAFT_KIND_OF[type(msg)])


def kv_commands() -> list[bytes]:
    return [encode_command("c1", 3, PUT, "k", [1, {"a": b"b"}], 0), encode_command("c1", 4, DELETE, "a", ack=3),
            encode_command("c2", 2, CAS, "a", {"x": [1, 2.5, "s"]}, None, 0), encode_command("c3", 1, GRANT, 100, 5),
            encode_command("c3", 2, KEEPALIVE, 1, 9), encode_command("c3", 3, REVOKE, 1),
            encode_command("", 0, EXPIRE, [[1, 6000]]), encode_command("c1", 1, PUT, "a", 2, 0)]


def metas() -> list[bytes]:
    return [NodeMeta().to_bytes(),
            NodeMeta(agents={"risk-1": ("risk",), "p": ("px", "q")}, topics=("signals.*", "a.#"), blocking=("a.#",),
                     capacity={"p": 2.0}, load={"handlers": 3.0, "calls_per_s": 10.5, "health": 97.0}).to_bytes()]


def seeds(name: str) -> list[bytes]:
    """Valid inputs for target ``name``, made by the real encoders."""
    if name in ("codec", "frame"):
        frames = envelopes()
        return frames + [b"".join(frames)]
    if name == "gossip":
        return [bytes([GOSSIP_KINDS.index(swim_kind(m))]) + codec.pack_body(swim_wire.to_body(m))
                for m in swim_messages()]
    if name == "raft":
        return [bytes([RAFT_KINDS.index(raft_kind(m))]) + codec.pack_body(raft_wire.to_body(m))
                for m in raft_messages()]
    if name == "conf":
        return [raft_wire.encode_conf(ConfState(("n1",))),
                raft_wire.encode_conf(ConfState(("n1", "n2"), ("l1",), ("n1", "n3")))]
    if name == "meta":
        return metas()
    if name == "kv":
        return kv_commands()
    raise KeyError(name)

