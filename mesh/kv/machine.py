"""The replicated key-value state machine that Raft entries are applied to.

Theory of operation
-------------------
* Every replica applies the same committed commands in the same order, so every replica
  holds the same map. A command is a msgpack list; :func:`encode_command` builds it and
  :meth:`KVMachine.apply` runs it and returns its result. Nothing here reads a clock: time
  (for leases) arrives inside commands, stamped by the leader that proposed them, so every
  replica expires the same leases at the same log position.
* **Revisions.** Each write gets the log index it was committed at as its revision; a key
  remembers the revision it was created and last modified at (``create_rev``, ``mod_rev``),
  as etcd does. Watches (the node runtime) report changes with their revision, so a watcher
  can resume from where it left off.
* **Exactly once.** A command carries ``(client, seq, ack)``. A client retries a command it
  is unsure about (its leader died mid-call) with the same pair, and may have many commands
  in flight that commit in any order; ``ack`` is the lowest seq it still awaits an answer
  for. The machine keeps each client's results from ``ack`` on and answers a duplicate from
  there without applying it again (Raft thesis 6.3); a seq below ``ack`` can no longer be
  retried and is refused. Sessions are bounded (``max_sessions`` clients, least recently
  used evicted; ``max_results`` answers kept per client).
* **Leases.** ``grant(ttl)`` creates a lease; keys put with it are deleted when it is revoked
  or expires: the leader proposes ``expire`` naming the leases whose deadlines it saw pass
  (and with which deadline, so a keepalive committed in between wins). Locks and leader-elected singletons are keys under a lease.
* **Snapshots** are the whole state as msgpack (:meth:`snapshot` / :meth:`restore`).
* **Hostile commands.** Any node may propose a command (the ``propose`` RPC takes bytes), and
  every replica applies what commits, so :meth:`KVMachine.apply` must answer any bytes with a
  result and never raise: a command that raised would stop every replica at the same entry.
  Commands decode with the codec's pre-scan under :data:`COMMAND_LIMITS`: at most
  :data:`MAX_COMMAND_DEPTH` levels of nesting (deeper values made the comparison of a ``cas``
  overflow the interpreter's stack), at most 262144 arrays and maps (what a reply can carry;
  more cost every replica about 64 bytes of memory per byte of command) and no msgpack ext
  types; lengths are bounded by the command's own size, itself bounded by Raft. Both codec
  twins refuse exactly the same commands, so replicas on different hot paths agree.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import msgpack

from mesh._core import codec
from mesh.errors import DecodeError, ProtocolError

SNAPSHOT_FORMAT = 2   # 2: sessions keep every answer from the client's ack on

# A value nested deeper, or with more containers, than the envelope's default limits could
# not be read back over the network anyway; sizes are left to Raft's bound on an entry.
MAX_COMMAND_DEPTH = 32
_INT_MAX = 2**31 - 1
COMMAND_LIMITS = codec.Limits(max_body_bytes=_INT_MAX, max_depth=MAX_COMMAND_DEPTH, max_str_len=_INT_MAX,
                              max_bin_len=_INT_MAX, max_array_len=_INT_MAX, max_map_len=_INT_MAX)

# command names
PUT, DELETE, CAS, GRANT, REVOKE, KEEPALIVE, EXPIRE = "put", "delete", "cas", "grant", "revoke", "keepalive", "expire"


@dataclass(slots=True)
class Value:
    value: Any
    create_rev: int
    mod_rev: int
    version: int            # writes since creation
    lease: int = 0


@dataclass(slots=True)
class Lease:
    id: int
    ttl_ms: int
    deadline_ms: int
    keys: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Change:
    """What a write did to one key (for watchers)."""
    key: str
    value: Any               # None for a delete
    revision: int
    deleted: bool = False


def encode_command(client: str, seq: int, op: str, *args: Any, ack: int = 0) -> bytes:
    """A command for :meth:`KVMachine.apply`. ``client`` "" has no session (not deduplicated)."""
    return msgpack.packb([client, seq, ack, op, *args], use_bin_type=True)


def written_key(command: bytes) -> str | None:
    """The key a proposed command writes (for the ACL); None for lease operations, and ""
    (every key) for anything else or a command that does not decode: the strictest check."""
    try:
        body = codec.load_body(command, COMMAND_LIMITS)
    except DecodeError:
        return ""
    if type(body) is not list or len(body) < 5:
        return ""
    op, first = body[3], body[4]
    if op in (PUT, DELETE, CAS):
        return first if type(first) is str else ""
    if op in (GRANT, KEEPALIVE, REVOKE):
        return None
    return ""


class _Session:
    __slots__ = ("ack", "results")

    def __init__(self, ack: int = 0) -> None:
        self.ack = ack
        self.results: dict[int, Any] = {}     # seq -> answer, for the seqs from ack on


def _check_deadline(now_ms: Any, ttl_ms: int) -> None:
    # a deadline past 64 bits would not pack: every later snapshot() would raise
    if type(now_ms) is not int or not 0 <= now_ms or now_ms + ttl_ms >= 1 << 63:
        raise ValueError("a lease's time is an int of ms, its deadline below 2**63")


class KVMachine:
    def __init__(self, max_sessions: int = 100_000, max_results: int = 4096) -> None:
        self.data: dict[str, Value] = {}
        self.leases: dict[int, Lease] = {}
        self.revision = 0
        self.applied = 0
        self.max_sessions = max_sessions
        self.max_results = max_results
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._next_lease = 1

    # -- reads (served locally once a ReadIndex says the replica is current) ----------------

    def get(self, key: str) -> Value | None:
        return self.data.get(key)

    def range(self, prefix: str) -> list[tuple[str, Value]]:
        return sorted((k, v) for k, v in self.data.items() if k.startswith(prefix))

    # -- writes --------------------------------------------------------------------------

    def apply(self, index: int, command: bytes) -> tuple[Any, list[Change]]:
        """Apply the command committed at ``index``; returns (result, changes)."""
        if index <= self.applied:
            raise ValueError(f"entry {index} applied twice (applied up to {self.applied})")
        self.applied = index
        try:
            body = codec.load_body(command, COMMAND_LIMITS)
            if type(body) is not list or len(body) < 4:
                raise TypeError("a command is an array [client, seq, ack, op, *args]")
            client, seq, ack, op, *args = body
            if type(client) is not str or type(seq) is not int or type(ack) is not int:
                raise TypeError("client must be a string, seq and ack integers")
        except (DecodeError, TypeError) as exc:
            return ProtocolError(f"malformed command at {index}: {exc}"), []
        session = None
        if client:
            session = self._sessions.get(client)
            if session is None:
                session = self._sessions[client] = _Session()
                while len(self._sessions) > self.max_sessions:
                    self._sessions.popitem(last=False)
            self._sessions.move_to_end(client)
            if seq in session.results:
                return session.results[seq], []
            if seq < session.ack:
                return ProtocolError(f"stale command {client}:{seq} (answered and acknowledged)"), []
        changes: list[Change] = []
        try:
            result = self._run(index, op, args, changes)
        except (TypeError, ValueError, KeyError) as exc:
            # cut: the answer is kept for retries (and in snapshots), and op or a key in the
            # message may be as long as the command
            result = ProtocolError(f"bad {op!r:.64} command: {str(exc):.200}")
        if session is not None:
            results = session.results
            if ack > session.ack:
                session.ack = ack
                for old in [s for s in results if s < ack]:
                    del results[old]
            results[seq] = result
            if len(results) > self.max_results:
                del results[min(results)]
        return result, changes

    def _run(self, index: int, op: str, args: list, changes: list[Change]) -> Any:
        if op == PUT:
            key, value, lease = args
            return self._put(index, key, value, lease, changes)
        if op == DELETE:
            (key,) = args
            return self._delete(index, key, changes)
        if op == CAS:
            key, expected, new, lease = args
            current = self.data.get(key)
            if (current.value if current is not None else None) != expected:
                return False
            if new is None:
                self._delete(index, key, changes)
            else:
                self._put(index, key, new, lease, changes)
            return True
        if op == GRANT:
            ttl_ms, now_ms = args
            if type(ttl_ms) is not int or ttl_ms <= 0:
                raise ValueError("ttl must be a positive number of ms")
            _check_deadline(now_ms, ttl_ms)
            lease = Lease(self._next_lease, ttl_ms, now_ms + ttl_ms)
            self._next_lease += 1
            self.leases[lease.id] = lease
            return lease.id
        if op == KEEPALIVE:
            lease_id, now_ms = args
            lease = self.leases.get(lease_id)
            if lease is None:
                return False
            _check_deadline(now_ms, lease.ttl_ms)
            lease.deadline_ms = now_ms + lease.ttl_ms
            return True
        if op == REVOKE:
            (lease_id,) = args
            return self._revoke(index, lease_id, changes)
        if op == EXPIRE:
            # [[lease id, deadline the leader saw pass], ...]: a lease kept alive since (its
            # deadline moved) survives, so a keepalive racing the expiry wins.
            (due,) = args
            if type(due) is not list or not all(type(d) is list and len(d) == 2 and type(d[0]) is int for d in due):
                raise ValueError("expire takes [[lease id, deadline], ...]")   # checked before any change
            expired = []
            for lease_id, deadline_ms in due:
                lease = self.leases.get(lease_id)
                if lease is not None and lease.deadline_ms == deadline_ms:
                    self._revoke(index, lease_id, changes)
                    expired.append(lease_id)
            return expired
        raise ValueError(f"unknown operation {op!r}")

    def _put(self, index: int, key: str, value: Any, lease: int, changes: list[Change]) -> int:
        if not isinstance(key, str) or not key:
            raise ValueError("a key is a non-empty string")
        if type(lease) is not int:   # [] passed the truthiness test below, then broke restore()
            raise ValueError("a lease is an int id (0: none)")
        if lease and lease not in self.leases:
            raise KeyError(f"lease {lease} does not exist (expired?)")
        old = self.data.get(key)
        if old is not None and old.lease and old.lease != lease and old.lease in self.leases:
            self.leases[old.lease].keys.discard(key)
        if old is None:
            self.data[key] = Value(value, index, index, 1, lease)
        else:
            old.value, old.mod_rev, old.version, old.lease = value, index, old.version + 1, lease
        if lease:
            self.leases[lease].keys.add(key)
        self.revision = index
        changes.append(Change(key, value, index))
        return index

    def _delete(self, index: int, key: str, changes: list[Change]) -> bool:
        old = self.data.pop(key, None)
        if old is None:
            return False
        if old.lease in self.leases:
            self.leases[old.lease].keys.discard(key)
        self.revision = index
        changes.append(Change(key, None, index, deleted=True))
        return True

    def _revoke(self, index: int, lease_id: int, changes: list[Change]) -> bool:
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return False
        for key in sorted(lease.keys):
            self._delete(index, key, changes)
        return True

    def lease(self, lease_id: int) -> Lease | None:
        return self.leases.get(lease_id)

    # -- snapshots -----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return msgpack.packb({
            "format": SNAPSHOT_FORMAT, "applied": self.applied, "revision": self.revision, "next_lease": self._next_lease,
            "data": [[k, v.value, v.create_rev, v.mod_rev, v.version, v.lease] for k, v in self.data.items()],
            "leases": [[l.id, l.ttl_ms, l.deadline_ms] for l in self.leases.values()],
            "sessions": [[c, s.ack, [[seq, {"error": str(r)} if isinstance(r, Exception) else {"ok": r}]
                                     for seq, r in s.results.items()]]
                         for c, s in self._sessions.items()],
        }, use_bin_type=True)

    def restore(self, blob: bytes) -> None:
        state = msgpack.unpackb(blob, raw=False)
        fmt = state.get("format", 1) if isinstance(state, dict) else None
        if fmt not in (1, SNAPSHOT_FORMAT):
            raise ProtocolError(f"KV snapshot format {fmt!r} is not one this version reads "
                                f"(1..{SNAPSHOT_FORMAT}): written by a newer mesh?")
        if fmt == 1:    # sessions were [client, last seq, answer]: one answer per client
            state["sessions"] = [[c, seq, [[seq, r]]] for c, seq, r in state["sessions"]]
        self.applied, self.revision, self._next_lease = state["applied"], state["revision"], state["next_lease"]
        self.leases = {lid: Lease(lid, ttl, deadline) for lid, ttl, deadline in state["leases"]}
        self.data = {}
        for k, value, create_rev, mod_rev, version, lease in state["data"]:
            self.data[k] = Value(value, create_rev, mod_rev, version, lease)
            if lease in self.leases:
                self.leases[lease].keys.add(k)
        self._sessions = OrderedDict()
        for c, ack, results in state["sessions"]:
            session = self._sessions[c] = _Session(ack)
            session.results = {seq: ProtocolError(r["error"]) if "error" in r else r["ok"] for seq, r in results}
