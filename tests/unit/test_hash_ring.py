"""The consistent-hash ring (router.HashRing, hash64, partition_of) on both twins: the hash is
the one the docstring specifies, placement is stable across processes, load is balanced and a
change of owners moves about 1/n of the keys and partitions."""
from __future__ import annotations

import inspect
import math
import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mesh._core._pure.router as pure
from mesh._core import compiled_twin
compiled = compiled_twin("router")

TWINS = [pytest.param(compiled, id="compiled"), pytest.param(pure, id="pure")]
MASK = (1 << 64) - 1


@pytest.fixture(params=TWINS)
def impl(request):
    return request.param


def fnv1a_64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def reference_hash64(data: bytes) -> int:
    """The specification, written out once more: FNV-1a 64, then MurmurHash3's fmix64."""
    h = fnv1a_64(data)
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK
    return h ^ (h >> 33)


def ring_of(impl, owners, vnodes=128):
    ring = impl.HashRing(vnodes)
    for owner in owners:
        ring.add(owner)
    return ring


def moved(before, after):
    return sum(a != b for a, b in zip(before, after, strict=True)) / len(before)


KEYS = [f"user:{i}" for i in range(20_000)]


# ---------------------------------------------------------------------------------------------
# the hash and placement are specified, hence stable


# A regression table: these values follow from the specification and must never change,
# or every shard map in every running mesh would be reshuffled by an upgrade.
HASHES = {"": 0xEFD01F60BA992926, "a": 0x82A2A958A9BECE5B, "user:42": 0x998817BEE6718248,
          "AAPL": 0x59ABE90C82FC3687, b"\x00\x01\x02": 0x6BEF271DBE673DE6, "ключ": 0x590520D718275ED5}
OWNERS = {"user:1": "alpha", "user:2": "charlie", "user:3": "alpha", "user:4": "alpha",
          "AAPL": "charlie", "MSFT": "alpha", "GOOG": "bravo", "TSLA": "bravo"}


def test_hash64_is_fnv1a_64_with_the_murmur3_finalizer(impl):
    for key, value in HASHES.items():
        data = key.encode() if isinstance(key, str) else key
        assert impl.hash64(key) == value == reference_hash64(data)
    # the reference's FNV-1a part against the published test vectors
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64(b"foobar") == 0x85944171F73967E8
    assert impl.hash64("x" * 1000) == reference_hash64(b"x" * 1000)
    assert impl.hash64("ключ") == impl.hash64("ключ".encode())


def test_placement_regression_table(impl):
    ring = ring_of(impl, ["alpha", "bravo", "charlie"])
    assert {key: ring.owner_of(key) for key in OWNERS} == OWNERS
    assert ring.assign(16) == ("charlie", "bravo", "alpha", "bravo", "charlie", "bravo", "charlie", "bravo",
                               "charlie", "charlie", "bravo", "charlie", "charlie", "charlie", "alpha", "charlie")
    assert impl.partition_of("AAPL", 256) == 0x59ABE90C82FC3687 % 256 == 135


@pytest.mark.parametrize("pure_flag", ["0", "1"])
def test_placement_is_the_same_in_another_process_whatever_its_hash_seed(pure_flag):
    code = ("from mesh._core import router, IMPLEMENTATION as I\n"
            "r = router.HashRing()\n"
            "for o in ('alpha', 'bravo', 'charlie'): r.add(o)\n"
            f"print(I, [r.owner_of(k) for k in {sorted(OWNERS)!r}], router.hash64('AAPL'))")
    env = dict(os.environ, PYTHONHASHSEED="12345", MESH_PURE=pure_flag)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split(" ", 1)[0] == ("pure" if pure_flag == "1" else "cython")
    assert out.split(" ", 1)[1].strip() == f"{[OWNERS[k] for k in sorted(OWNERS)]!r} {0x59ABE90C82FC3687}"


def test_insertion_order_does_not_matter(impl):
    names = [f"agent-{i}" for i in range(7)]
    a, b = ring_of(impl, names), ring_of(impl, reversed(names))
    c = ring_of(impl, names + ["extra"])
    c.remove("extra")
    assert a.assign(256) == b.assign(256) == c.assign(256)
    assert [a.owner_of(k) for k in KEYS[:500]] == [c.owner_of(k) for k in KEYS[:500]]


# ---------------------------------------------------------------------------------------------
# balance


def test_keys_spread_evenly_with_virtual_nodes(impl):
    n = 10
    ring = ring_of(impl, [f"agent-{i}" for i in range(n)])
    counts = Counter(ring.owner_of(k) for k in KEYS)
    shares = [counts[o] / (len(KEYS) / n) for o in ring.owners()]
    assert len(counts) == n
    assert 0.7 < min(shares) and max(shares) < 1.35, shares


def test_one_virtual_node_each_is_much_less_even(impl):
    # why vnodes exist: the same owners and keys, one point each
    n = 10
    names = [f"agent-{i}" for i in range(n)]
    spread = []
    for vnodes in (1, 128):
        ring = ring_of(impl, names, vnodes)
        counts = Counter(ring.owner_of(k) for k in KEYS[:5000])
        spread.append(max(counts.values()) - min(counts.get(o, 0) for o in names))
    assert spread[1] * 2 < spread[0]


def test_weight_scales_the_share(impl):
    ring = impl.HashRing(64)
    ring.add("small")
    ring.add("big", 3)
    assert ring.weight_of("big") == 3 and ring.weight_of("small") == 1
    counts = Counter(ring.owner_of(k) for k in KEYS[:8000])
    assert 2.0 < counts["big"] / counts["small"] < 4.5


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=12), st.sampled_from([1, 1.1, 1.25, 2]),
       st.sampled_from([1, 7, 64, 256]))
def test_bounded_loads_cap_every_owner(weights, c, partitions):
    ring = pure.HashRing(16)
    for i, w in enumerate(weights):
        ring.add(f"o{i}", w)
    owners = ring.assign(partitions, c)
    counts = Counter(owners)
    total = sum(weights)
    for i, w in enumerate(weights):
        assert counts[f"o{i}"] <= math.ceil(c * partitions * w / total)
    assert len(owners) == partitions


def test_bounded_loads_even_out_partitions(impl):
    names = [f"agent-{i}" for i in range(16)]
    ring = ring_of(impl, names)
    plain, bounded = Counter(ring.assign(256)), Counter(ring.assign(256, 1.25))
    assert max(bounded.values()) <= math.ceil(1.25 * 256 / 16) < max(plain.values())


# ---------------------------------------------------------------------------------------------
# movement: about 1/n on a change of owners (a property of the placement, not a timing)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 12])
def test_adding_an_owner_moves_about_one_over_n_plus_one_of_the_keys_all_to_it(impl, n):
    names = [f"agent-{i}" for i in range(n + 1)]
    before, after = ring_of(impl, names[:n]), ring_of(impl, names)
    b, a = [before.owner_of(k) for k in KEYS], [after.owner_of(k) for k in KEYS]
    changed = [(x, y) for x, y in zip(b, a) if x != y]
    assert all(y == names[n] for _, y in changed)          # nothing moves between the old owners
    ideal = 1 / (n + 1)
    assert 0.6 * ideal < len(changed) / len(KEYS) < 1.5 * ideal


@pytest.mark.parametrize("n", [2, 3, 5, 8, 12])
def test_removing_an_owner_moves_exactly_its_keys(impl, n):
    names = [f"agent-{i}" for i in range(n)]
    before, after = ring_of(impl, names), ring_of(impl, names[1:])
    b, a = [before.owner_of(k) for k in KEYS], [after.owner_of(k) for k in KEYS]
    assert all(x == y for x, y in zip(b, a) if x != names[0])
    fraction = moved(b, a)
    assert fraction == b.count(names[0]) / len(KEYS)
    assert 0.6 / n < fraction < 1.5 / n


@pytest.mark.parametrize("c", [0, 1.25])
@pytest.mark.parametrize("n", [2, 3, 4, 6, 10, 16])
def test_partition_maps_move_about_one_over_n(impl, n, c):
    # 256 partitions: fewer samples than keys, so the bound is looser
    names = [f"agent-{i}" for i in range(n + 1)]
    base = ring_of(impl, names[:n]).assign(256, c)
    grown = ring_of(impl, names).assign(256, c)
    shrunk = ring_of(impl, names[1:n]).assign(256, c) if n > 1 else base
    assert 0.5 / (n + 1) < moved(base, grown) < 1.6 / (n + 1)
    assert 0.5 / n < moved(base, shrunk) < 1.6 / n
    if c == 0:
        assert all(y == names[n] for x, y in zip(base, grown) if x != y)


# ---------------------------------------------------------------------------------------------
# malformed input: clear errors, the same on both twins


def test_malformed_input(impl):
    ring = impl.HashRing(4)
    with pytest.raises(LookupError, match="no owners"):
        ring.owner_of("k")
    with pytest.raises(LookupError, match="no owners"):
        ring.assign(8)
    for bad in (None, 1, 1.5, bytearray(b"k"), memoryview(b"k"), ["k"]):
        with pytest.raises(TypeError, match="key must be str or bytes"):
            ring.owner_of(bad)
        with pytest.raises(TypeError, match="key must be str or bytes"):
            impl.hash64(bad)
    with pytest.raises(ValueError, match="UTF-8"):
        impl.hash64("\ud800")
    with pytest.raises(ValueError, match="UTF-8"):
        ring.add("a\udfff")
    for vnodes in (0, 1025, -1, 1 << 70):
        with pytest.raises(ValueError, match="vnodes"):
            impl.HashRing(vnodes)
    for vnodes in (True, 1.0, "8", None):
        with pytest.raises(TypeError, match="vnodes"):
            impl.HashRing(vnodes)
    ring.add("a")
    with pytest.raises(ValueError, match="already on the ring"):
        ring.add("a")
    with pytest.raises(ValueError, match="must not be empty"):
        ring.add("")
    with pytest.raises(TypeError, match="owner must be str"):
        ring.add(b"b")
    for weight in (0, 65, -3):
        with pytest.raises(ValueError, match="weight"):
            ring.add("b", weight)
    with pytest.raises(TypeError, match="weight"):
        ring.add("b", 2.0)
    with pytest.raises(KeyError):
        ring.remove("b")
    with pytest.raises(KeyError):
        ring.weight_of("b")
    for partitions in (0, -1, (1 << 20) + 1, 1 << 80):
        with pytest.raises(ValueError, match="partitions"):
            ring.assign(partitions)
        with pytest.raises(ValueError, match="partitions"):
            impl.partition_of("k", partitions)
    with pytest.raises(TypeError, match="partitions"):
        impl.partition_of("k", 2.0)
    for c in (0.5, -1, float("nan"), float("inf"), 1e7):
        with pytest.raises(ValueError, match="load_factor"):
            ring.assign(8, c)
    for c in (None, "1", True):
        with pytest.raises(TypeError, match="load_factor"):
            ring.assign(8, c)
    assert ring.owners() == ("a",) and len(ring) == 1 and "a" in ring and "b" not in ring
    assert ring.vnodes == 4
    assert ring.assign(3) == ("a", "a", "a")


def test_twins_share_docstrings():
    c, p = compiled.HashRing, pure.HashRing
    assert inspect.getdoc(c) == inspect.getdoc(p)
    public = [n for n in vars(p) if not n.startswith("_")]
    for name in public:
        assert inspect.getdoc(getattr(c, name)) == inspect.getdoc(getattr(p, name)), name
    for name in ("hash64", "partition_of"):
        assert getattr(compiled, name).__doc__ == getattr(pure, name).__doc__


# ---------------------------------------------------------------------------------------------
# the shard map built on the ring (mesh.patterns.sharding): what the rebalancer writes


from mesh.errors import ProtocolError  # noqa: E402
from mesh.patterns.sharding import (ShardConfig, ShardMap, ack_key, compute_map, map_key,  # noqa: E402
                                    moved_fraction)


@pytest.mark.parametrize("n", [2, 3, 4, 6, 8, 12, 16, 24, 32])
def test_the_default_shard_map_moves_about_one_over_n_and_stays_balanced(n):
    config = ShardConfig()
    names = [f"store-{i}" for i in range(n + 1)]
    base = compute_map("store", names[:n], config)
    grown = compute_map("store", names, config, epoch=2)
    assert 0.6 / (n + 1) < moved_fraction(base, grown) < 1.6 / (n + 1)
    for gone in (0, n // 2, n - 1):
        shrunk = compute_map("store", names[:gone] + names[gone + 1:n], config, epoch=2)
        assert 0.6 / n < moved_fraction(base, shrunk) < 1.6 / n
    counts = Counter(base.owners)
    assert max(counts.values()) <= math.ceil(config.load_factor * config.partitions / n)
    assert base.partitions == config.partitions == 1024


def test_a_shard_map_is_a_function_of_its_providers_and_pins():
    config = ShardConfig(partitions=64)
    a = compute_map("store", ["b", "a", "c", "a"], config)
    assert a == compute_map("store", ["c", "b", "a"], config)
    assert a.providers == ("a", "b", "c") and a.epoch == 1 and a.pins == ()
    pinned = compute_map("store", ["a", "b", "c"], config, pins=[(5, "c"), (6, "gone"), (99, "a")], epoch=2)
    assert pinned.owners[5] == "c" and pinned.pins == ((5, "c"),)       # pins on non-providers or past the end drop
    assert [o for p, o in enumerate(pinned.owners) if p != 5] == [o for p, o in enumerate(a.owners) if p != 5]
    assert a.owner_of("user:1") == a.owners[pure.partition_of("user:1", 64)]
    with pytest.raises(ValueError, match="no providers"):
        compute_map("store", [], config)
    with pytest.raises(ValueError, match="different partition counts"):
        moved_fraction(a, compute_map("store", ["a"], ShardConfig(partitions=32)))


def test_shard_map_wire_form_round_trips_and_rejects_junk():
    m = compute_map("store", ["a", "b"], ShardConfig(partitions=16), pins=[(3, "b")], epoch=7)
    wire = m.to_wire()
    assert ShardMap.from_wire("store", wire) == m
    assert len(wire["owners"]) == 16 and wire["agents"] == ["a", "b"]
    bad = [None, 3, {}, dict(wire, v=2), dict(wire, epoch=0), dict(wire, epoch="7"), dict(wire, owners=[5]), dict(wire, owners=[-1]), dict(wire, owners=[True]),
           dict(wire, owners=[]), dict(wire, agents=None), dict(wire, pins=[[1]]), dict(wire, pins=[["x", "a"]])]
    for value in bad:
        with pytest.raises(ProtocolError):
            ShardMap.from_wire("store", value)


def test_kv_keys_quote_names():
    assert map_key("a/b c") == "_shards/map/a%2Fb%20c"
    assert ack_key("a/b", "n1:7") == "_shards/ack/a%2Fb/n1%3A7"
