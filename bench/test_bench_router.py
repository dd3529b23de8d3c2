"""Router hot path, compiled vs pure: directory lookups and topic matching.

Run: python -m pytest bench/test_bench_router.py --benchmark-only -q
Ids are "compiled" and "pure" so a report can divide one by the other; no timing is asserted.
"""
from __future__ import annotations

import pytest

import mesh._core._pure.router as pure
from mesh._core import compiled_twin
compiled = compiled_twin("router")

# Warm up first: the first benchmark of a cold process otherwise reads slow.
pytestmark = pytest.mark.benchmark(warmup=True)

TWINS = [pytest.param(compiled, id="compiled"), pytest.param(pure, id="pure")]
NODES = 10
AGENTS_PER_NODE = 100


@pytest.fixture(params=TWINS)
def impl(request):
    return request.param


def make_directory(impl):
    d = impl.Directory("n0")
    for k in range(AGENTS_PER_NODE):
        d.add_local(f"n0-agent-{k}", (f"cap-{k % 20}",))
    for n in range(1, NODES):
        d.set_node(f"n{n}", {f"n{n}-agent-{k}": (f"cap-{k % 20}", "common") for k in range(AGENTS_PER_NODE)})
    return d


def make_topic_table(impl, cache_size):
    t = impl.TopicTable(cache_size)
    symbols = [f"SYM{k}" for k in range(100)]
    for k, sym in enumerate(symbols):
        t.subscribe(f"prices.{sym}.trade", f"node-{k % 10}")
        t.subscribe(f"prices.{sym}.*", ("agent", k))
    t.subscribe("prices.#", "audit")
    t.subscribe("prices.*.quote", "quoter")
    t.subscribe("orders.#", "oms")
    return t


def test_directory_node_of(benchmark, impl):
    d = make_directory(impl)
    assert benchmark(d.node_of, "n7-agent-42") == "n7"


def test_directory_node_of_miss(benchmark, impl):
    d = make_directory(impl)
    assert benchmark(d.node_of, "nobody") is None


def test_directory_providers(benchmark, impl):
    d = make_directory(impl)
    assert len(benchmark(d.providers, "common")) == (NODES - 1) * AGENTS_PER_NODE


def test_topic_match_cached(benchmark, impl):
    t = make_topic_table(impl, 4096)
    t.match("prices.SYM42.trade")
    assert len(benchmark(t.match, "prices.SYM42.trade")) == 3


def test_topic_match_uncached(benchmark, impl):
    t = make_topic_table(impl, 0)
    assert len(benchmark(t.match, "prices.SYM42.trade")) == 3
