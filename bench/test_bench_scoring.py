"""Scoring hot path, compiled vs pure: the power-of-two-choices pick and the begin/end pair.

Run: python -m pytest bench/test_bench_scoring.py --benchmark-only -q
Ids are "compiled"/"pure" (with the target count for pick, e.g. "compiled-100") so a report
can divide one by the other; no timing is asserted.
"""
from __future__ import annotations

import pytest

import mesh._core._pure.scoring as pure
from mesh._core import compiled_twin
compiled = compiled_twin("scoring")

# Warm up first: the first benchmark of a cold process otherwise reads slow.
pytestmark = pytest.mark.benchmark(warmup=True)

TWINS = {"compiled": compiled, "pure": pure}


def loaded_board(impl, n):
    s = impl.Scoreboard(seed=1)
    names = tuple(f"agent-{k}" for k in range(n))
    for k, name in enumerate(names):
        s.add(name, 1.0 + k % 3)
        for _ in range(k % 4):
            s.begin(name)
        s.end(name, 100.0 + 10 * (k % 7), k % 11 != 0)
    return s, names


@pytest.mark.parametrize(("impl_name", "n"), [(i, n) for i in TWINS for n in (10, 100, 1000)],
                         ids=[f"{i}-{n}" for i in TWINS for n in (10, 100, 1000)])
def test_pick(benchmark, impl_name, n):
    s, names = loaded_board(TWINS[impl_name], n)
    assert benchmark(s.pick, names) in names


@pytest.mark.parametrize("impl_name", list(TWINS))
def test_begin_end(benchmark, impl_name):
    s, names = loaded_board(TWINS[impl_name], 100)
    target = names[42]
    begin, end = s.begin, s.end
    inflight = s.stats(target)[0]

    def call():
        begin(target)
        end(target, 250.0, True)

    benchmark(call)
    assert s.stats(target)[0] == inflight


@pytest.mark.parametrize("impl_name", list(TWINS))
def test_score(benchmark, impl_name):
    s, names = loaded_board(TWINS[impl_name], 100)
    assert benchmark(s.score, names[42]) > 0
