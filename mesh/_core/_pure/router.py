"""Routing tables: the agent directory, the capability index, the topic table and the hash ring.

Theory of operation
-------------------
Every message the node sends does one lookup here, so reads are single dict hits and every
answer a reader gets is precomputed; writes (agents joining, gossip about a peer, a new
subscription) are rare and pay for the bookkeeping.

Directory
    ``agent -> node`` for local and remote agents, ``agent -> capabilities`` and, per
    capability, the sorted tuple of agents offering it (globally and locally), rebuilt for the
    touched capabilities after each write. A remote node's gossip replaces everything known
    about that node (``set_node``). Names are unique in the mesh: a name claimed by two remote
    nodes belongs to the last writer; a local agent always wins over a remote claim, and the
    remote claims it shadows are reported as conflicts.

Topics
    Topics and patterns are dot-separated, non-empty segments. In a pattern ``*`` matches
    exactly one segment and ``#``, allowed only as the last segment, matches zero or more;
    any other segment matches literally and may not contain ``*`` or ``#``.

TopicTable
    Patterns live in a segment trie (``*`` and ``#`` are children keyed by themselves, which no
    topic segment can equal), so an uncached match walks only the branches the topic can reach.
    Each (pattern, subscriber) pair carries a sequence number; ``match`` returns the matching
    subscribers once each, ordered by their earliest matching pair. Results are cached per
    topic; the cache holds at most ``cache_size`` topics (it is cleared when full) and is
    cleared on every change to the table.

HashRing
    Consistent hashing over named owners. Keys and ring points are placed by ``hash64``:
    FNV-1a 64 over the key's bytes (UTF-8 for a str), then the MurmurHash3 64-bit finalizer,
    so every process, twin and platform agrees (Python's ``hash()`` is salted per process).
    An owner of weight w has ``vnodes * w`` points, the i-th at ``hash64(owner + "#" + str(i))``
    (UTF-8); a key belongs to the first point at or after its hash, wrapping around, and equal
    points go to the owner whose name sorts first. Adding an owner takes keys only from the
    others (about w / total of them); removing one gives back only its own.

    ``assign(partitions)`` places partition p at ``hash64(p as 8 big-endian bytes)``. With a
    ``load_factor`` c >= 1, an owner takes at most ``ceil(c * partitions * w / total weight)``
    partitions (consistent hashing with bounded loads, Mirrokni et al. 2018): partitions are
    placed in order 0, 1, ... and one whose owner is full walks on to the next point's owner.
    ``partition_of(key, partitions)`` is ``hash64(key) % partitions``.

Both twins (compiled and pure) implement this contract bit for bit.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Hashable, Iterable, Mapping

PUBLIC_API = ["Directory", "TopicTable", "validate_pattern", "validate_topic", "topic_matches",
              "HashRing", "hash64", "partition_of"]

_MAX_CACHE_SIZE = 1 << 30


def _check_name(what: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")


def _normalize_caps(capabilities: Iterable[str]) -> tuple[str, ...]:
    if isinstance(capabilities, str):
        raise TypeError("capabilities must be a sequence of str, not a str")
    caps = tuple(dict.fromkeys(capabilities))
    for cap in caps:
        _check_name("capability", cap)
    return caps


def _pattern_segments(pattern: object) -> list[str]:
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be str, not {type(pattern).__name__}")
    segs = pattern.split(".")
    last = len(segs) - 1
    for i, seg in enumerate(segs):
        if not seg:
            raise ValueError(f"invalid pattern {pattern!r}: empty segment")
        if seg == "#":
            if i != last:
                raise ValueError(f"invalid pattern {pattern!r}: '#' is only allowed as the last segment")
        elif seg != "*" and ("*" in seg or "#" in seg):
            raise ValueError(f"invalid pattern {pattern!r}: '*' and '#' must be whole segments")
    return segs


def _topic_segments(topic: object) -> list[str]:
    if not isinstance(topic, str):
        raise TypeError(f"topic must be str, not {type(topic).__name__}")
    if "*" in topic or "#" in topic:
        raise ValueError(f"invalid topic {topic!r}: wildcards are not allowed in a topic")
    segs = topic.split(".")
    if "" in segs:
        raise ValueError(f"invalid topic {topic!r}: empty segment")
    return segs


def validate_pattern(pattern: str) -> None:
    """Raise ValueError if ``pattern`` is not a valid subscription pattern (TypeError if not a str)."""
    _pattern_segments(pattern)


def validate_topic(topic: str) -> None:
    """Raise ValueError if ``topic`` is not a valid topic (TypeError if not a str)."""
    _topic_segments(topic)


def topic_matches(pattern: str, topic: str) -> bool:
    """True if ``pattern`` matches ``topic``; both are validated first (ValueError, TypeError)."""
    psegs = _pattern_segments(pattern)
    tsegs = _topic_segments(topic)
    n = len(psegs)
    if psegs[n - 1] == "#":
        n -= 1
        if len(tsegs) < n:
            return False
    elif len(tsegs) != n:
        return False
    for i in range(n):
        seg = psegs[i]
        if seg != "*" and seg != tsegs[i]:
            return False
    return True


class Directory:
    """Who is where: agent name -> node, agent -> capabilities, capability -> providers."""

    __slots__ = ("_local_node", "_owner", "_caps", "_local", "_remote",
                 "_members", "_providers", "_local_members", "_local_providers")

    def __init__(self, local_node: str) -> None:
        _check_name("local_node", local_node)
        self._local_node = local_node
        self._owner: dict[str, str] = {}                     # agent -> node, local agents too
        self._caps: dict[str, tuple[str, ...]] = {}          # agent -> capabilities
        self._local: dict[str, None] = {}                    # local agents (ordered set)
        self._remote: dict[str, set[str]] = {}               # remote node -> its agents
        self._members: dict[str, set[str]] = {}              # capability -> agents
        self._providers: dict[str, tuple[str, ...]] = {}     # capability -> sorted agents
        self._local_members: dict[str, set[str]] = {}
        self._local_providers: dict[str, tuple[str, ...]] = {}

    @property
    def local_node(self) -> str:
        """This node's id (read-only)."""
        return self._local_node

    def _attach(self, agent: str, node: str, caps: tuple[str, ...], dirty: set[str]) -> None:
        local = node == self._local_node
        self._owner[agent] = node
        self._caps[agent] = caps
        for cap in caps:
            members = self._members.get(cap)
            if members is None:
                members = self._members[cap] = set()
            members.add(agent)
            if local:
                members = self._local_members.get(cap)
                if members is None:
                    members = self._local_members[cap] = set()
                members.add(agent)
            dirty.add(cap)

    def _detach(self, agent: str, dirty: set[str]) -> None:
        local = self._owner.pop(agent) == self._local_node
        for cap in self._caps.pop(agent):
            members = self._members[cap]
            members.discard(agent)
            if not members:
                del self._members[cap]
            if local:
                members = self._local_members[cap]
                members.discard(agent)
                if not members:
                    del self._local_members[cap]
            dirty.add(cap)

    def _refresh(self, dirty: set[str]) -> None:
        # Rebuild the cached provider tuples of the capabilities a write touched.
        for cap in dirty:
            members = self._members.get(cap)
            if members:
                self._providers[cap] = tuple(sorted(members))
            else:
                self._providers.pop(cap, None)
            members = self._local_members.get(cap)
            if members:
                self._local_providers[cap] = tuple(sorted(members))
            else:
                self._local_providers.pop(cap, None)

    def add_local(self, agent: str, capabilities: tuple[str, ...] = ()) -> None:
        """Register a local agent (duplicate capabilities are dropped, order kept).

        ValueError if the name is already local. A remote claim on the name is replaced:
        a local agent always wins."""
        _check_name("agent", agent)
        caps = _normalize_caps(capabilities)
        if agent in self._local:
            raise ValueError(f"agent {agent!r} is already local")
        dirty: set[str] = set()
        prev = self._owner.get(agent)
        if prev is not None:
            self._detach(agent, dirty)
            self._remote[prev].discard(agent)
        self._local[agent] = None
        self._attach(agent, self._local_node, caps, dirty)
        self._refresh(dirty)

    def remove_local(self, agent: str) -> None:
        """Unregister a local agent; KeyError if it is not local."""
        if agent not in self._local:
            raise KeyError(agent)
        del self._local[agent]
        dirty: set[str] = set()
        self._detach(agent, dirty)
        self._refresh(dirty)

    def set_node(self, node: str, agents: Mapping[str, tuple[str, ...]]) -> list[str]:
        """Replace everything known about remote ``node`` with ``agents`` (name -> capabilities).

        A name owned by another remote node moves here (last writer wins). A name that is a
        local agent is skipped; the skipped names are returned, sorted. ValueError if ``node``
        is the local node. The input is validated before anything changes."""
        _check_name("node", node)
        if node == self._local_node:
            raise ValueError(f"node {node!r} is the local node")
        if not isinstance(agents, Mapping):
            raise TypeError(f"agents must be a mapping, not {type(agents).__name__}")
        new: dict[str, tuple[str, ...]] = {}
        conflicts: list[str] = []
        for agent, capabilities in agents.items():
            _check_name("agent", agent)
            caps = _normalize_caps(capabilities)
            if agent in self._local:
                conflicts.append(agent)
            else:
                new[agent] = caps
        dirty: set[str] = set()
        old = self._remote.get(node)
        if old:
            for agent in old:
                if agent not in new:
                    self._detach(agent, dirty)
        for agent, caps in new.items():
            prev = self._owner.get(agent)
            if prev is not None:
                if prev == node and self._caps[agent] == caps:
                    continue
                self._detach(agent, dirty)
                if prev != node:
                    self._remote[prev].discard(agent)
            self._attach(agent, node, caps, dirty)
        self._remote[node] = set(new)
        self._refresh(dirty)
        conflicts.sort()
        return conflicts

    def remove_node(self, node: str) -> list[str]:
        """Forget remote ``node`` and its agents; returns the removed names, sorted.

        Unknown node: []. ValueError if ``node`` is the local node."""
        _check_name("node", node)
        if node == self._local_node:
            raise ValueError(f"node {node!r} is the local node")
        old = self._remote.pop(node, None)
        if old is None:
            return []
        dirty: set[str] = set()
        for agent in old:
            self._detach(agent, dirty)
        self._refresh(dirty)
        return sorted(old)

    def node_of(self, agent: str) -> str | None:
        """The node hosting ``agent`` (the local node id for local agents), None if unknown."""
        return self._owner.get(agent)

    def is_local(self, agent: str) -> bool:
        """True if ``agent`` is a local agent."""
        return agent in self._local

    def providers(self, capability: str) -> tuple[str, ...]:
        """Agents offering ``capability`` anywhere in the mesh, sorted; () if none."""
        return self._providers.get(capability, ())

    def local_providers(self, capability: str) -> tuple[str, ...]:
        """Local agents offering ``capability``, sorted; () if none."""
        return self._local_providers.get(capability, ())

    def capabilities_of(self, agent: str) -> tuple[str, ...]:
        """The capabilities of ``agent``; KeyError if unknown."""
        return self._caps[agent]

    def agents_of(self, node: str) -> tuple[str, ...]:
        """The agents on ``node`` (local or remote), sorted; () if unknown."""
        if node == self._local_node:
            return tuple(sorted(self._local))
        return tuple(sorted(self._remote.get(node, ())))

    def nodes(self) -> tuple[str, ...]:
        """Every remote node given to set_node and not removed since, sorted."""
        return tuple(sorted(self._remote))

    def snapshot(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """agent -> (node, capabilities) for every known agent, in name order."""
        owner = self._owner
        caps = self._caps
        return {agent: (owner[agent], caps[agent]) for agent in sorted(owner)}

    def __len__(self) -> int:
        return len(self._owner)

    def __contains__(self, agent: object) -> bool:
        return agent in self._owner


class _TrieNode:
    __slots__ = ("children", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _TrieNode] = {}   # segment (or '*', '#') -> node
        self.subs: dict[Hashable, int] = {}        # subscriber -> sequence number


def _collect(node: _TrieNode, segs: list[str], i: int, n: int, leaves: list) -> None:
    # Appends the subscriber dicts of every pattern matching segs[i:] below node.
    hash_node = node.children.get("#")
    if hash_node is not None:
        leaves.append(hash_node.subs)
    if i == n:
        if node.subs:
            leaves.append(node.subs)
        return
    child = node.children.get(segs[i])
    if child is not None:
        _collect(child, segs, i + 1, n, leaves)
    child = node.children.get("*")
    if child is not None:
        _collect(child, segs, i + 1, n, leaves)


def _merge(leaves: list) -> tuple:
    # One leaf is already in subscription order (a dict keeps insertion order and a pair
    # subscribed again goes to the end). Several: order by sequence number, then dedupe;
    # sequence numbers are unique, so the sort never compares two subscribers.
    if len(leaves) == 1:
        return tuple(leaves[0])
    pairs = [(seq, sub) for leaf in leaves for sub, seq in leaf.items()]
    pairs.sort()
    return tuple(dict.fromkeys([sub for _, sub in pairs]))


class TopicTable:
    """Subscriptions (pattern, subscriber) and a cached topic -> subscribers lookup."""

    __slots__ = ("_root", "_pairs", "_by_sub", "_cache", "_cache_size", "_seq")

    def __init__(self, cache_size: int = 4096) -> None:
        if not isinstance(cache_size, int) or isinstance(cache_size, bool):
            raise TypeError(f"cache_size must be int, not {type(cache_size).__name__}")
        if not 0 <= cache_size <= _MAX_CACHE_SIZE:
            raise ValueError(f"cache_size must be in [0, {_MAX_CACHE_SIZE}], got {cache_size}")
        self._root = _TrieNode()
        self._pairs: dict[tuple[str, Hashable], int] = {}          # (pattern, subscriber) -> seq
        self._by_sub: dict[Hashable, dict[str, None]] = {}        # subscriber -> its patterns
        self._cache: dict[str, tuple] = {}
        self._cache_size = cache_size
        self._seq = 0

    def subscribe(self, pattern: str, subscriber: Hashable) -> bool:
        """Add (pattern, subscriber); False if it is already there. ValueError on a bad pattern."""
        segs = _pattern_segments(pattern)
        key = (pattern, subscriber)
        if key in self._pairs:
            return False
        seq = self._seq
        self._seq = seq + 1
        self._pairs[key] = seq
        node = self._root
        for seg in segs:
            child = node.children.get(seg)
            if child is None:
                child = node.children[seg] = _TrieNode()
            node = child
        node.subs[subscriber] = seq
        pats = self._by_sub.get(subscriber)
        if pats is None:
            pats = self._by_sub[subscriber] = {}
        pats[pattern] = None
        self._cache.clear()
        return True

    def _unlink(self, pattern: str, subscriber: Hashable) -> None:
        path = []
        node = self._root
        for seg in pattern.split("."):
            path.append((node, seg))
            node = node.children[seg]
        del node.subs[subscriber]
        for parent, seg in reversed(path):
            child = parent.children[seg]
            if child.subs or child.children:
                break
            del parent.children[seg]

    def unsubscribe(self, pattern: str, subscriber: Hashable) -> bool:
        """Remove (pattern, subscriber); False if it was not there. ValueError on a bad pattern."""
        _pattern_segments(pattern)
        if self._pairs.pop((pattern, subscriber), None) is None:
            return False
        self._unlink(pattern, subscriber)
        pats = self._by_sub[subscriber]
        del pats[pattern]
        if not pats:
            del self._by_sub[subscriber]
        self._cache.clear()
        return True

    def remove_subscriber(self, subscriber: Hashable) -> int:
        """Drop every pattern of ``subscriber``; returns how many there were."""
        pats = self._by_sub.pop(subscriber, None)
        if pats is None:
            return 0
        for pattern in pats:
            del self._pairs[(pattern, subscriber)]
            self._unlink(pattern, subscriber)
        self._cache.clear()
        return len(pats)

    def match(self, topic: str) -> tuple:
        """Subscribers with a pattern matching ``topic``, once each, in first-subscription order.

        ValueError on an invalid topic. The result is cached per topic until the table changes."""
        result = self._cache.get(topic)
        if result is not None:
            return result
        segs = _topic_segments(topic)
        leaves: list = []
        _collect(self._root, segs, 0, len(segs), leaves)
        result = _merge(leaves) if leaves else ()
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[topic] = result
        return result

    def patterns(self) -> list[tuple[str, Hashable]]:
        """Every (pattern, subscriber) pair, in subscription order."""
        return list(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)


# ---------------------------------------------------------------------------------------------
# consistent hashing

_MASK64 = (1 << 64) - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MAX_VNODES = 1024
_MAX_WEIGHT = 64
_MAX_PARTITIONS = 1 << 20


def _key_bytes(key: object) -> bytes:
    if isinstance(key, str):
        try:
            return key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("key is not encodable as UTF-8 (lone surrogate)") from None
    if isinstance(key, bytes):
        return key
    raise TypeError(f"key must be str or bytes, not {type(key).__name__}")


def _hash_bytes(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    # FNV-1a alone mixes its last bytes poorly into the high bits; the finalizer fixes that.
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK64
    h ^= h >> 33
    return h


def _check_int(what: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be in [{low}, {high}], got {value}")
    return value


def hash64(key: str | bytes) -> int:
    """The ring's stable 64-bit hash of ``key`` (str as UTF-8, or bytes): FNV-1a 64, then the
    MurmurHash3 finalizer. TypeError for other types, ValueError for unencodable text."""
    return _hash_bytes(_key_bytes(key))


def partition_of(key: str | bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions`` (1 .. 2**20): ``hash64(key) % partitions``."""
    _check_int("partitions", partitions, 1, _MAX_PARTITIONS)
    return _hash_bytes(_key_bytes(key)) % partitions


def _owner_points(owner: str, count: int) -> list[int]:
    prefix = owner.encode("utf-8") + b"#"
    return [_hash_bytes(prefix + str(i).encode()) for i in range(count)]


class HashRing:
    """Consistent hashing: owners with virtual nodes on a 64-bit ring; keys go to the next point."""

    __slots__ = ("_vnodes", "_weights", "_cached", "_names", "_points", "_ranks")

    def __init__(self, vnodes: int = 128) -> None:
        self._vnodes = _check_int("vnodes", vnodes, 1, _MAX_VNODES)
        self._weights: dict[str, int] = {}           # owner -> weight
        self._cached: dict[str, list[int]] = {}      # owner -> its points (hashing is the cost)
        self._names: tuple[str, ...] = ()            # owners, sorted: a point's rank indexes this
        self._points: list[int] = []                 # every point, ascending
        self._ranks: list[int] = []                  # the owner rank of each point

    @property
    def vnodes(self) -> int:
        """Points per unit of weight (read-only)."""
        return self._vnodes

    def _rebuild(self) -> None:
        names = tuple(sorted(self._weights))
        pairs = [(point, rank) for rank, name in enumerate(names) for point in self._cached[name]]
        pairs.sort()
        self._names = names
        self._points = [point for point, _ in pairs]
        self._ranks = [rank for _, rank in pairs]

    def add(self, owner: str, weight: int = 1) -> None:
        """Put ``owner`` on the ring with ``vnodes * weight`` points (weight 1 .. 64).

        ValueError if it is already there."""
        _check_name("owner", owner)
        _check_int("weight", weight, 1, _MAX_WEIGHT)
        if owner in self._weights:
            raise ValueError(f"owner {owner!r} is already on the ring")
        try:
            points = _owner_points(owner, self._vnodes * weight)
        except UnicodeEncodeError:
            raise ValueError("owner is not encodable as UTF-8 (lone surrogate)") from None
        self._weights[owner] = weight
        self._cached[owner] = points
        self._rebuild()

    def remove(self, owner: str) -> None:
        """Take ``owner`` off the ring; KeyError if it is not there."""
        if owner not in self._weights:
            raise KeyError(owner)
        del self._weights[owner]
        del self._cached[owner]
        self._rebuild()

    def owner_of(self, key: str | bytes) -> str:
        """The owner of ``key`` (str or bytes). LookupError if the ring is empty."""
        h = _hash_bytes(_key_bytes(key))
        if not self._points:
            raise LookupError("the ring has no owners")
        i = bisect_left(self._points, h)
        if i == len(self._points):
            i = 0
        return self._names[self._ranks[i]]

    def assign(self, partitions: int, load_factor: float = 0.0) -> tuple[str, ...]:
        """The owner of each partition 0 .. partitions-1 (1 .. 2**20 of them).

        ``load_factor`` 0: plain consistent hashing; c >= 1: no owner takes more than
        ``ceil(c * partitions * weight / total weight)``. LookupError if the ring is empty."""
        _check_int("partitions", partitions, 1, _MAX_PARTITIONS)
        if not isinstance(load_factor, (int, float)) or isinstance(load_factor, bool):
            raise TypeError(f"load_factor must be a number, not {type(load_factor).__name__}")
        if not (load_factor == 0 or 1 <= load_factor <= 1e6):
            raise ValueError(f"load_factor must be 0 or in [1, 1e6], got {load_factor}")
        points, ranks, names = self._points, self._ranks, self._names
        n = len(points)
        if not n:
            raise LookupError("the ring has no owners")
        total = sum(self._weights.values())
        if load_factor:
            room = [math.ceil(float(load_factor) * partitions * self._weights[name] / total) for name in names]
        out = []
        for p in range(partitions):
            i = bisect_left(points, _hash_bytes(p.to_bytes(8, "big")))
            if i == n:
                i = 0
            if load_factor:
                while not room[ranks[i]]:       # full: walk on (the rooms add up to >= partitions)
                    i = i + 1 if i + 1 < n else 0
                room[ranks[i]] -= 1
            out.append(names[ranks[i]])
        return tuple(out)

    def owners(self) -> tuple[str, ...]:
        """The owners on the ring, sorted."""
        return self._names

    def weight_of(self, owner: str) -> int:
        """The weight of ``owner``; KeyError if it is not on the ring."""
        return self._weights[owner]

    def __len__(self) -> int:
        return len(self._weights)

    def __contains__(self, owner: object) -> bool:
        return owner in self._weights
