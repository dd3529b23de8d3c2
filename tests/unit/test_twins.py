"""The compiled modules and their pure twins present one module, and the selector picks."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from mesh._core import MODULES, compiled_twin


@pytest.mark.parametrize("name", MODULES)
def test_twins_share_docstring_and_public_api(name):
    compiled = compiled_twin(name)
    pure = importlib.import_module(f"mesh._core._pure.{name}")
    assert compiled.__doc__ == pure.__doc__
    assert "Theory of operation" in pure.__doc__
    assert compiled.PUBLIC_API == pure.PUBLIC_API
    for attr in pure.PUBLIC_API:
        assert hasattr(compiled, attr) and hasattr(pure, attr), attr


@pytest.mark.parametrize("flag, expected", [("1", "pure"), ("0", "cython")])
def test_mesh_pure_selects_the_implementation(flag, expected):
    env = dict(os.environ, MESH_PURE=flag)
    out = subprocess.run([sys.executable, "-m", "mesh", "--version"], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert f"({expected} hot path" in out
    code = "import mesh._core as c; print(c.IMPLEMENTATION, c.codec.__name__, c.router.__name__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    prefix = "mesh._core._pure." if expected == "pure" else "mesh._core."
    assert out.split() == [expected, prefix + "codec", prefix + "router"]


# ---------------------------------------------------------------------------------------------
# the consistent-hash ring (router.HashRing, hash64, partition_of): identical answers, errors too

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import mesh._core._pure.router as pure_router  # noqa: E402
compiled_router = compiled_twin("router")  # noqa: E402


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # the twins must raise the same type with the same message
        return ("raise", type(exc).__name__, str(exc))


RING_KEYS = st.one_of(st.text(max_size=12), st.binary(max_size=12), st.sampled_from(["\ud800", "a\udfffb"]),
                      st.sampled_from([None, 7, 1.5, bytearray(b"k"), ("k",)]))
RING_OWNERS = st.one_of(st.sampled_from(["a", "b", "c", "a#1", "ключ", "o" * 40]),
                        st.sampled_from(["", "\ud800", b"a", None, 3, ("a",), ["a"]]))
RING_INTS = st.one_of(st.integers(-2, 70), st.sampled_from([True, 2.0, "3", None, 1 << 64, (1 << 20) + 1, 1 << 20]))
LOAD_FACTORS = st.one_of(st.sampled_from([0, 0.0, 1, 1.25, 2.5, 0.5, -1, float("nan"), float("inf"), 1e7, True, "1"]),
                         st.floats(1, 4))
RING_OPS = st.one_of(
    st.tuples(st.just("add"), RING_OWNERS, RING_INTS),
    st.tuples(st.just("add"), RING_OWNERS),
    st.tuples(st.just("remove"), RING_OWNERS),
    st.tuples(st.just("owner_of"), RING_KEYS),
    st.tuples(st.just("assign"), st.one_of(st.integers(1, 300), RING_INTS), LOAD_FACTORS),
    st.tuples(st.just("assign"), st.integers(1, 64)),
    st.tuples(st.just("weight_of"), RING_OWNERS),
    st.tuples(st.just("owners")),
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.integers(-1, 40), st.sampled_from([1025, True, 8.0, None])), st.lists(RING_OPS, max_size=25))
def test_hash_ring_twins_agree(vnodes, ops):
    made = [_outcome(impl.HashRing, vnodes) for impl in (compiled_router, pure_router)]
    assert [m[0] for m in made] == [made[1][0]] * 2 and made[0][2:] == made[1][2:]
    if made[0][0] != "ok":
        return
    rc, rp = made[0][1], made[1][1]
    for op, *args in ops:
        assert _outcome(getattr(rc, op), *args) == _outcome(getattr(rp, op), *args), (op, args)
        assert len(rc) == len(rp) and rc.owners() == rp.owners()
    for key in ("x", "y", b"z"):
        assert _outcome(rc.owner_of, key) == _outcome(rp.owner_of, key)


@settings(max_examples=300, deadline=None)
@given(RING_KEYS, RING_INTS)
def test_hash64_and_partition_of_twins_agree(key, partitions):
    assert _outcome(compiled_router.hash64, key) == _outcome(pure_router.hash64, key)
    assert _outcome(compiled_router.partition_of, key, partitions) == \
        _outcome(pure_router.partition_of, key, partitions)
