# cython: language_level=3
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
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next
from cpython.long cimport PyLong_AsLongLong, PyLong_AsLongLongAndOverflow
from cpython.object cimport Py_EQ, PyObject, PyObject_RichCompareBool
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.math cimport ceil
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc, qsort

from collections.abc import Mapping

PUBLIC_API = ["Directory", "TopicTable", "validate_pattern", "validate_topic", "topic_matches",
              "HashRing", "hash64", "partition_of"]

cdef Py_ssize_t _MAX_CACHE_SIZE = 1 << 30


cdef int _check_name(str what, object value) except -1:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    return 0


cdef tuple _normalize_caps(object capabilities):
    if isinstance(capabilities, str):
        raise TypeError("capabilities must be a sequence of str, not a str")
    cdef tuple caps = tuple(dict.fromkeys(capabilities))
    for cap in caps:
        _check_name("capability", cap)
    return caps


cdef list _pattern_segments(object pattern):
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be str, not {type(pattern).__name__}")
    cdef list segs = (<str>pattern).split(".")
    cdef Py_ssize_t i, last = len(segs) - 1
    cdef str seg
    for i in range(last + 1):
        seg = <str>segs[i]
        if not seg:
            raise ValueError(f"invalid pattern {pattern!r}: empty segment")
        if seg == "#":
            if i != last:
                raise ValueError(f"invalid pattern {pattern!r}: '#' is only allowed as the last segment")
        elif seg != "*" and ("*" in seg or "#" in seg):
            raise ValueError(f"invalid pattern {pattern!r}: '*' and '#' must be whole segments")
    return segs


cdef list _topic_segments(object topic):
    if not isinstance(topic, str):
        raise TypeError(f"topic must be str, not {type(topic).__name__}")
    if "*" in <str>topic or "#" in <str>topic:
        raise ValueError(f"invalid topic {topic!r}: wildcards are not allowed in a topic")
    cdef list segs = (<str>topic).split(".")
    if "" in segs:
        raise ValueError(f"invalid topic {topic!r}: empty segment")
    return segs


def validate_pattern(pattern):
    """Raise ValueError if ``pattern`` is not a valid subscription pattern (TypeError if not a str)."""
    _pattern_segments(pattern)


def validate_topic(topic):
    """Raise ValueError if ``topic`` is not a valid topic (TypeError if not a str)."""
    _topic_segments(topic)


def topic_matches(pattern, topic):
    """True if ``pattern`` matches ``topic``; both are validated first (ValueError, TypeError)."""
    cdef list psegs = _pattern_segments(pattern)
    cdef list tsegs = _topic_segments(topic)
    cdef Py_ssize_t i, n = len(psegs)
    cdef str seg
    if psegs[n - 1] == "#":
        n -= 1
        if len(tsegs) < n:
            return False
    elif len(tsegs) != n:
        return False
    for i in range(n):
        seg = <str>psegs[i]
        if seg != "*" and seg != tsegs[i]:
            return False
    return True


cdef class Directory:
    """Who is where: agent name -> node, agent -> capabilities, capability -> providers."""

    cdef str _local_node
    cdef dict _owner            # agent -> node, local agents too
    cdef dict _caps             # agent -> capabilities
    cdef dict _local            # local agents (ordered set)
    cdef dict _remote           # remote node -> set of its agents
    cdef dict _members          # capability -> set of agents
    cdef dict _providers        # capability -> sorted tuple of agents
    cdef dict _local_members
    cdef dict _local_providers

    def __init__(self, local_node):
        _check_name("local_node", local_node)
        self._local_node = local_node
        self._owner = {}
        self._caps = {}
        self._local = {}
        self._remote = {}
        self._members = {}
        self._providers = {}
        self._local_members = {}
        self._local_providers = {}

    @property
    def local_node(self):
        """This node's id (read-only)."""
        return self._local_node

    cdef int _attach(self, str agent, str node, tuple caps, set dirty) except -1:
        cdef bint local = node == self._local_node
        cdef set members
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
        return 0

    cdef int _detach(self, str agent, set dirty) except -1:
        cdef bint local = self._owner.pop(agent) == self._local_node
        cdef set members
        for cap in <tuple>self._caps.pop(agent):
            members = <set>self._members[cap]
            members.discard(agent)
            if not members:
                del self._members[cap]
            if local:
                members = <set>self._local_members[cap]
                members.discard(agent)
                if not members:
                    del self._local_members[cap]
            dirty.add(cap)
        return 0

    cdef int _refresh(self, set dirty) except -1:
        # Rebuild the cached provider tuples of the capabilities a write touched.
        cdef set members
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
        return 0

    def add_local(self, agent, capabilities=()):
        """Register a local agent (duplicate capabilities are dropped, order kept).

        ValueError if the name is already local. A remote claim on the name is replaced:
        a local agent always wins."""
        _check_name("agent", agent)
        cdef tuple caps = _normalize_caps(capabilities)
        if agent in self._local:
            raise ValueError(f"agent {agent!r} is already local")
        cdef set dirty = set()
        prev = self._owner.get(agent)
        if prev is not None:
            self._detach(agent, dirty)
            (<set>self._remote[prev]).discard(agent)
        self._local[agent] = None
        self._attach(agent, self._local_node, caps, dirty)
        self._refresh(dirty)

    def remove_local(self, agent):
        """Unregister a local agent; KeyError if it is not local."""
        if agent not in self._local:
            raise KeyError(agent)
        del self._local[agent]
        cdef set dirty = set()
        self._detach(agent, dirty)
        self._refresh(dirty)

    def set_node(self, node, agents):
        """Replace everything known about remote ``node`` with ``agents`` (name -> capabilities).

        A name owned by another remote node moves here (last writer wins). A name that is a
        local agent is skipped; the skipped names are returned, sorted. ValueError if ``node``
        is the local node. The input is validated before anything changes."""
        _check_name("node", node)
        if node == self._local_node:
            raise ValueError(f"node {node!r} is the local node")
        if not isinstance(agents, Mapping):
            raise TypeError(f"agents must be a mapping, not {type(agents).__name__}")
        cdef dict new = {}
        cdef list conflicts = []
        cdef tuple caps
        for agent, capabilities in agents.items():
            _check_name("agent", agent)
            caps = _normalize_caps(capabilities)
            if agent in self._local:
                conflicts.append(agent)
            else:
                new[agent] = caps
        cdef set dirty = set()
        cdef set old = self._remote.get(node)
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
                    (<set>self._remote[prev]).discard(agent)
            self._attach(agent, node, caps, dirty)
        self._remote[node] = set(new)
        self._refresh(dirty)
        conflicts.sort()
        return conflicts

    def remove_node(self, node):
        """Forget remote ``node`` and its agents; returns the removed names, sorted.

        Unknown node: []. ValueError if ``node`` is the local node."""
        _check_name("node", node)
        if node == self._local_node:
            raise ValueError(f"node {node!r} is the local node")
        cdef set old = self._remote.pop(node, None)
        if old is None:
            return []
        cdef set dirty = set()
        for agent in old:
            self._detach(agent, dirty)
        self._refresh(dirty)
        return sorted(old)

    def node_of(self, agent):
        """The node hosting ``agent`` (the local node id for local agents), None if unknown."""
        return self._owner.get(agent)

    def is_local(self, agent):
        """True if ``agent`` is a local agent."""
        return agent in self._local

    def providers(self, capability):
        """Agents offering ``capability`` anywhere in the mesh, sorted; () if none."""
        return self._providers.get(capability, ())

    def local_providers(self, capability):
        """Local agents offering ``capability``, sorted; () if none."""
        return self._local_providers.get(capability, ())

    def capabilities_of(self, agent):
        """The capabilities of ``agent``; KeyError if unknown."""
        return self._caps[agent]

    def agents_of(self, node):
        """The agents on ``node`` (local or remote), sorted; () if unknown."""
        if node == self._local_node:
            return tuple(sorted(self._local))
        return tuple(sorted(self._remote.get(node, ())))

    def nodes(self):
        """Every remote node given to set_node and not removed since, sorted."""
        return tuple(sorted(self._remote))

    def snapshot(self):
        """agent -> (node, capabilities) for every known agent, in name order."""
        cdef dict owner = self._owner
        cdef dict caps = self._caps
        return {agent: (owner[agent], caps[agent]) for agent in sorted(owner)}

    def __len__(self):
        return len(self._owner)

    def __contains__(self, agent):
        return agent in self._owner


cdef class _TrieNode:
    cdef dict children          # segment (or '*', '#') -> node
    cdef dict subs              # subscriber -> sequence number

    def __cinit__(self):
        self.children = {}
        self.subs = {}


cdef int _collect(_TrieNode node, list segs, Py_ssize_t i, Py_ssize_t n, list leaves) except -1:
    # Appends the subscriber dicts of every pattern matching segs[i:] below node.
    cdef object child = node.children.get("#")
    if child is not None:
        leaves.append((<_TrieNode>child).subs)
    if i == n:
        if node.subs:
            leaves.append(node.subs)
        return 0
    child = node.children.get(segs[i])
    if child is not None:
        _collect(<_TrieNode>child, segs, i + 1, n, leaves)
    child = node.children.get("*")
    if child is not None:
        _collect(<_TrieNode>child, segs, i + 1, n, leaves)
    return 0


cdef struct _Hit:
    long long seq
    PyObject* sub                       # a reference is held while it sits in the array

cdef enum:
    _SMALL_MERGE = 16                   # hits merged in a C array; more take the list path


cdef tuple _merge(list leaves):
    # One leaf is already in subscription order (a dict keeps insertion order and a pair
    # subscribed again goes to the end). Several: order by sequence number, then dedupe;
    # sequence numbers are unique, so the sort never compares two subscribers.
    if len(leaves) == 1:
        return tuple(<dict>leaves[0])
    cdef Py_ssize_t total = 0, m = 0, kept = 0, pos, i, j
    for leaf in leaves:
        total += len(<dict>leaf)
    if total > _SMALL_MERGE:
        pairs = [(seq, sub) for leaf in leaves for sub, seq in (<dict>leaf).items()]
        pairs.sort()
        return tuple(dict.fromkeys([sub for _, sub in pairs]))
    cdef _Hit hits[_SMALL_MERGE]
    cdef _Hit hit
    cdef PyObject* key
    cdef PyObject* value
    cdef bint seen
    try:
        for leaf in leaves:             # insertion sort by seq: a handful of hits
            pos = 0
            while PyDict_Next(<dict>leaf, &pos, &key, &value):
                hit.seq = PyLong_AsLongLong(<object>value)
                hit.sub = key
                Py_INCREF(<object>key)
                j = m
                while j > 0 and hits[j - 1].seq > hit.seq:
                    hits[j] = hits[j - 1]
                    j -= 1
                hits[j] = hit
                m += 1
        for i in range(m):              # keep the first of equal subscribers
            seen = False
            for j in range(kept):
                if hits[j].sub == hits[i].sub or PyObject_RichCompareBool(
                        <object>hits[j].sub, <object>hits[i].sub, Py_EQ):
                    seen = True
                    break
            if not seen:
                hits[kept], hits[i] = hits[i], hits[kept]
                kept += 1
        result = PyTuple_New(kept)
        for i in range(kept):
            Py_INCREF(<object>hits[i].sub)
            PyTuple_SET_ITEM(result, i, <object>hits[i].sub)
        return result
    finally:
        for i in range(m):
            Py_DECREF(<object>hits[i].sub)


cdef class TopicTable:
    """Subscriptions (pattern, subscriber) and a cached topic -> subscribers lookup."""

    cdef _TrieNode _root
    cdef dict _pairs            # (pattern, subscriber) -> sequence number
    cdef dict _by_sub           # subscriber -> its patterns (ordered set)
    cdef dict _cache            # topic -> result tuple
    cdef Py_ssize_t _cache_size
    cdef object _seq

    def __init__(self, cache_size=4096):
        if not isinstance(cache_size, int) or isinstance(cache_size, bool):
            raise TypeError(f"cache_size must be int, not {type(cache_size).__name__}")
        if not 0 <= cache_size <= _MAX_CACHE_SIZE:
            raise ValueError(f"cache_size must be in [0, {_MAX_CACHE_SIZE}], got {cache_size}")
        self._root = _TrieNode()
        self._pairs = {}
        self._by_sub = {}
        self._cache = {}
        self._cache_size = cache_size
        self._seq = 0

    def subscribe(self, pattern, subscriber):
        """Add (pattern, subscriber); False if it is already there. ValueError on a bad pattern."""
        cdef list segs = _pattern_segments(pattern)
        key = (pattern, subscriber)
        if key in self._pairs:
            return False
        seq = self._seq
        self._seq = seq + 1
        self._pairs[key] = seq
        cdef _TrieNode node = self._root
        cdef object child
        for seg in segs:
            child = node.children.get(seg)
            if child is None:
                child = node.children[seg] = _TrieNode()
            node = <_TrieNode>child
        node.subs[subscriber] = seq
        cdef dict pats = self._by_sub.get(subscriber)
        if pats is None:
            pats = self._by_sub[subscriber] = {}
        pats[pattern] = None
        self._cache.clear()
        return True

    cdef int _unlink(self, str pattern, object subscriber) except -1:
        cdef list path = []
        cdef _TrieNode node = self._root, child, parent
        for seg in pattern.split("."):
            path.append((node, seg))
            node = <_TrieNode>node.children[seg]
        del node.subs[subscriber]
        for parent, seg in reversed(path):
            child = <_TrieNode>parent.children[seg]
            if child.subs or child.children:
                break
            del parent.children[seg]
        return 0

    def unsubscribe(self, pattern, subscriber):
        """Remove (pattern, subscriber); False if it was not there. ValueError on a bad pattern."""
        _pattern_segments(pattern)
        if self._pairs.pop((pattern, subscriber), None) is None:
            return False
        self._unlink(pattern, subscriber)
        cdef dict pats = self._by_sub[subscriber]
        del pats[pattern]
        if not pats:
            del self._by_sub[subscriber]
        self._cache.clear()
        return True

    def remove_subscriber(self, subscriber):
        """Drop every pattern of ``subscriber``; returns how many there were."""
        cdef dict pats = self._by_sub.pop(subscriber, None)
        if pats is None:
            return 0
        for pattern in pats:
            del self._pairs[(pattern, subscriber)]
            self._unlink(pattern, subscriber)
        self._cache.clear()
        return len(pats)

    def match(self, topic):
        """Subscribers with a pattern matching ``topic``, once each, in first-subscription order.

        ValueError on an invalid topic. The result is cached per topic until the table changes."""
        result = self._cache.get(topic)
        if result is not None:
            return result
        return self._match_uncached(topic)

    cdef tuple _match_uncached(self, object topic):
        cdef list segs = _topic_segments(topic)
        cdef list leaves = []
        _collect(self._root, segs, 0, len(segs), leaves)
        cdef tuple result = _merge(leaves) if leaves else ()
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[topic] = result
        return result

    def patterns(self):
        """Every (pattern, subscriber) pair, in subscription order."""
        return list(self._pairs)

    def __len__(self):
        return len(self._pairs)


# ---------------------------------------------------------------------------------------------
# consistent hashing

cdef uint64_t _FNV_OFFSET = 0xCBF29CE484222325ULL
cdef uint64_t _FNV_PRIME = 0x100000001B3ULL
cdef Py_ssize_t _MAX_VNODES = 1024
cdef Py_ssize_t _MAX_WEIGHT = 64
cdef Py_ssize_t _MAX_PARTITIONS = 1 << 20


cdef inline uint64_t _fnv(uint64_t h, const unsigned char* data, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ data[i]) * _FNV_PRIME
    return h


cdef inline uint64_t _finish(uint64_t h) noexcept nogil:
    # FNV-1a alone mixes its last bytes poorly into the high bits; the finalizer fixes that.
    h ^= h >> 33
    h *= 0xFF51AFD7ED558CCDULL
    h ^= h >> 33
    h *= 0xC4CEB9FE1A85EC53ULL
    h ^= h >> 33
    return h


cdef uint64_t _hash_key(object key) except? 0:
    cdef const char* data
    cdef Py_ssize_t n
    if isinstance(key, str):
        try:
            data = PyUnicode_AsUTF8AndSize(key, &n)     # cached in the str: no copy
        except UnicodeEncodeError:
            raise ValueError("key is not encodable as UTF-8 (lone surrogate)") from None
    elif isinstance(key, bytes):
        data = PyBytes_AS_STRING(key)
        n = PyBytes_GET_SIZE(key)
    else:
        raise TypeError(f"key must be str or bytes, not {type(key).__name__}")
    return _finish(_fnv(_FNV_OFFSET, <const unsigned char*>data, n))


cdef Py_ssize_t _check_int(str what, object value, Py_ssize_t low, Py_ssize_t high) except -1:
    # low >= 0, so -1 is free to signal an error
    cdef int overflow = 0
    cdef long long v
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be int, not {type(value).__name__}")
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or v < low or v > high:
        raise ValueError(f"{what} must be in [{low}, {high}], got {value}")
    return <Py_ssize_t>v


def hash64(key):
    """The ring's stable 64-bit hash of ``key`` (str as UTF-8, or bytes): FNV-1a 64, then the
    MurmurHash3 finalizer. TypeError for other types, ValueError for unencodable text."""
    return _hash_key(key)


def partition_of(key, partitions):
    """The partition of ``key`` among ``partitions`` (1 .. 2**20): ``hash64(key) % partitions``."""
    cdef uint64_t n = <uint64_t>_check_int("partitions", partitions, 1, _MAX_PARTITIONS)
    return _hash_key(key) % n


cdef list _owner_points(str owner, Py_ssize_t count):
    # hash64(owner + "#" + str(i)): FNV runs over the bytes in order, so the prefix is hashed once.
    cdef bytes prefix = owner.encode("utf-8") + b"#"
    cdef uint64_t base = _fnv(_FNV_OFFSET, <const unsigned char*>PyBytes_AS_STRING(prefix), len(prefix))
    cdef unsigned char digits[24]
    cdef Py_ssize_t i, j, k, v
    cdef list points = []
    for i in range(count):
        k = 24
        v = i
        while True:                      # str(i), written backwards from the end of the buffer
            k -= 1
            digits[k] = 48 + v % 10
            v //= 10
            if v == 0:
                break
        points.append(_finish(_fnv(base, &digits[k], 24 - k)))
    return points


cdef struct _Point:
    uint64_t point
    Py_ssize_t rank                      # index of the owner in the sorted owner names


cdef int _point_order(const void* a, const void* b) noexcept nogil:
    cdef const _Point* x = <const _Point*>a
    cdef const _Point* y = <const _Point*>b
    if x.point != y.point:
        return -1 if x.point < y.point else 1
    return -1 if x.rank < y.rank else (1 if x.rank > y.rank else 0)


cdef inline Py_ssize_t _first_at_or_after(const _Point* ring, Py_ssize_t n, uint64_t h) noexcept nogil:
    # lower bound, wrapping past the last point to the first
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if ring[mid].point < h:
            lo = mid + 1
        else:
            hi = mid
    return 0 if lo == n else lo


cdef class HashRing:
    """Consistent hashing: owners with virtual nodes on a 64-bit ring; keys go to the next point."""

    cdef Py_ssize_t _vnodes
    cdef dict _weights          # owner -> weight
    cdef dict _cached           # owner -> its points (hashing is the cost)
    cdef tuple _names           # owners, sorted: a point's rank indexes this
    cdef _Point* _ring          # every point, ascending
    cdef Py_ssize_t _n

    def __cinit__(self):
        self._ring = NULL
        self._n = 0
        self._names = ()

    def __dealloc__(self):
        free(self._ring)

    def __init__(self, vnodes=128):
        self._vnodes = _check_int("vnodes", vnodes, 1, _MAX_VNODES)
        self._weights = {}
        self._cached = {}

    @property
    def vnodes(self):
        """Points per unit of weight (read-only)."""
        return self._vnodes

    cdef int _rebuild(self) except -1:
        cdef tuple names = tuple(sorted(self._weights))
        cdef Py_ssize_t total = 0, k = 0, rank
        for name in names:
            total += len(<list>self._cached[name])
        cdef _Point* ring = NULL
        if total:
            ring = <_Point*>malloc(total * sizeof(_Point))
            if ring == NULL:
                raise MemoryError()
            for rank in range(len(names)):
                for point in <list>self._cached[names[rank]]:
                    ring[k].point = point
                    ring[k].rank = rank
                    k += 1
            qsort(ring, total, sizeof(_Point), _point_order)
        free(self._ring)
        self._ring = ring
        self._n = total
        self._names = names
        return 0

    def add(self, owner, weight=1):
        """Put ``owner`` on the ring with ``vnodes * weight`` points (weight 1 .. 64).

        ValueError if it is already there."""
        _check_name("owner", owner)
        cdef Py_ssize_t w = _check_int("weight", weight, 1, _MAX_WEIGHT)
        if owner in self._weights:
            raise ValueError(f"owner {owner!r} is already on the ring")
        try:
            points = _owner_points(owner, self._vnodes * w)
        except UnicodeEncodeError:
            raise ValueError("owner is not encodable as UTF-8 (lone surrogate)") from None
        self._weights[owner] = w
        self._cached[owner] = points
        self._rebuild()

    def remove(self, owner):
        """Take ``owner`` off the ring; KeyError if it is not there."""
        if owner not in self._weights:
            raise KeyError(owner)
        del self._weights[owner]
        del self._cached[owner]
        self._rebuild()

    def owner_of(self, key):
        """The owner of ``key`` (str or bytes). LookupError if the ring is empty."""
        cdef uint64_t h = _hash_key(key)
        if self._n == 0:
            raise LookupError("the ring has no owners")
        return self._names[self._ring[_first_at_or_after(self._ring, self._n, h)].rank]

    def assign(self, partitions, load_factor=0.0):
        """The owner of each partition 0 .. partitions-1 (1 .. 2**20 of them).

        ``load_factor`` 0: plain consistent hashing; c >= 1: no owner takes more than
        ``ceil(c * partitions * weight / total weight)``. LookupError if the ring is empty."""
        cdef Py_ssize_t count = _check_int("partitions", partitions, 1, _MAX_PARTITIONS)
        if not isinstance(load_factor, (int, float)) or isinstance(load_factor, bool):
            raise TypeError(f"load_factor must be a number, not {type(load_factor).__name__}")
        if not (load_factor == 0 or 1 <= load_factor <= 1e6):
            raise ValueError(f"load_factor must be 0 or in [1, 1e6], got {load_factor}")
        if self._n == 0:
            raise LookupError("the ring has no owners")
        cdef double c = float(load_factor)
        cdef tuple names = self._names
        cdef Py_ssize_t owners = len(names), total = 0, p, i, rank
        cdef Py_ssize_t* room = NULL
        cdef unsigned char buf[8]
        cdef uint64_t up
        for name in names:
            total += <Py_ssize_t>self._weights[name]
        cdef list out = []
        try:
            if c != 0:
                room = <Py_ssize_t*>malloc(owners * sizeof(Py_ssize_t))
                if room == NULL:
                    raise MemoryError()
                for rank in range(owners):
                    room[rank] = <Py_ssize_t>ceil(
                        c * <double>count * <double><Py_ssize_t>self._weights[names[rank]] / <double>total)
            for p in range(count):
                up = <uint64_t>p
                for i in range(8):                       # p as 8 big-endian bytes
                    buf[i] = (up >> (56 - 8 * i)) & 0xFF
                i = _first_at_or_after(self._ring, self._n, _finish(_fnv(_FNV_OFFSET, buf, 8)))
                if room != NULL:
                    while room[self._ring[i].rank] == 0:   # full: walk on (the rooms add up to >= partitions)
                        i = i + 1 if i + 1 < self._n else 0
                    room[self._ring[i].rank] -= 1
                out.append(names[self._ring[i].rank])
        finally:
            free(room)
        return tuple(out)

    def owners(self):
        """The owners on the ring, sorted."""
        return self._names

    def weight_of(self, owner):
        """The weight of ``owner``; KeyError if it is not on the ring."""
        w = self._weights.get(owner)
        if w is None:                    # not d[owner]: Cython's KeyError would lose a None key
            raise KeyError(owner)
        return w

    def __len__(self):
        return len(self._weights)

    def __contains__(self, owner):
        return owner in self._weights
