"""Directory, topic matching and TopicTable: every behaviour on both twins, and parity between them."""
from __future__ import annotations

import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mesh._core._pure.router as pure
from mesh._core import compiled_twin
compiled = compiled_twin("router")

TWINS = [pytest.param(compiled, id="compiled"), pytest.param(pure, id="pure")]


@pytest.fixture(params=TWINS)
def impl(request):
    return request.param


# ---------------------------------------------------------------------------------------------
# the twins present the same module




@pytest.mark.parametrize("cls", ["Directory", "TopicTable"])
def test_twins_share_method_docstrings(cls):
    c, p = getattr(compiled, cls), getattr(pure, cls)
    assert inspect.getdoc(c) == inspect.getdoc(p)
    public = [n for n in vars(p) if not n.startswith("_")]
    assert public
    for name in public:
        assert inspect.getdoc(getattr(c, name)) == inspect.getdoc(getattr(p, name)), name


def test_twins_share_function_docstrings():
    for name in ("validate_pattern", "validate_topic", "topic_matches"):
        assert getattr(compiled, name).__doc__ == getattr(pure, name).__doc__


# ---------------------------------------------------------------------------------------------
# Directory


def test_local_agents(impl):
    d = impl.Directory("n0")
    assert d.local_node == "n0"
    d.add_local("risk-1", ("risk", "limits", "risk"))
    d.add_local("quote-1")
    assert d.capabilities_of("risk-1") == ("risk", "limits")    # duplicates dropped, order kept
    assert d.capabilities_of("quote-1") == ()
    assert d.node_of("risk-1") == "n0"
    assert d.is_local("risk-1") and not d.is_local("nobody")
    assert d.providers("risk") == ("risk-1",)
    assert d.local_providers("risk") == ("risk-1",)
    assert d.agents_of("n0") == ("quote-1", "risk-1")
    assert len(d) == 2 and "quote-1" in d and "nobody" not in d
    assert d.nodes() == ()
    with pytest.raises(ValueError, match="already local"):
        d.add_local("risk-1")
    d.remove_local("risk-1")
    assert d.node_of("risk-1") is None
    assert d.providers("risk") == () and d.local_providers("risk") == ()
    with pytest.raises(KeyError):
        d.remove_local("risk-1")
    with pytest.raises(KeyError):
        d.capabilities_of("risk-1")


def test_local_node_is_read_only(impl):
    d = impl.Directory("n0")
    with pytest.raises(AttributeError):
        d.local_node = "n1"


def test_remote_nodes_replace_and_move(impl):
    d = impl.Directory("n0")
    assert d.set_node("n1", {"a": ("x",), "b": ("x", "y")}) == []
    assert d.providers("x") == ("a", "b")
    assert d.local_providers("x") == ()
    assert d.nodes() == ("n1",)
    # replacing: b leaves, c arrives, a changes capabilities
    assert d.set_node("n1", {"a": ("y",), "c": ()}) == []
    assert d.agents_of("n1") == ("a", "c")
    assert d.providers("x") == () and d.providers("y") == ("a",)
    assert d.node_of("b") is None
    # a name claimed by another remote node moves there (last writer wins)
    assert d.set_node("n2", {"a": ("z",)}) == []
    assert d.node_of("a") == "n2" and d.agents_of("n1") == ("c",)
    assert d.providers("y") == () and d.providers("z") == ("a",)
    assert d.nodes() == ("n1", "n2")
    assert d.remove_node("n2") == ["a"]
    assert d.node_of("a") is None and d.nodes() == ("n1",)
    assert d.remove_node("n2") == []
    # a node whose agents all left is still a known node until removed
    d.set_node("n1", {})
    assert d.nodes() == ("n1",) and d.agents_of("n1") == ()
    assert len(d) == 0


def test_local_agent_wins_conflicts(impl):
    d = impl.Directory("n0")
    d.add_local("risk-1", ("risk",))
    assert d.set_node("n1", {"risk-1": ("evil",), "b": ("risk",), "a": ()}) == ["risk-1"]
    assert d.node_of("risk-1") == "n0"
    assert d.capabilities_of("risk-1") == ("risk",)
    assert d.providers("risk") == ("b", "risk-1")
    assert d.local_providers("risk") == ("risk-1",)
    assert d.providers("evil") == ()
    assert d.agents_of("n1") == ("a", "b")
    # adding a local agent takes a name over from a remote node
    d.add_local("b", ("quote",))
    assert d.node_of("b") == "n0" and d.agents_of("n1") == ("a",)
    assert d.providers("risk") == ("risk-1",)
    assert d.remove_node("n1") == ["a"]
    d.add_local("c")
    assert d.set_node("n2", {"c": (), "risk-1": (), "d": ()}) == ["c", "risk-1"]   # sorted


def test_local_node_is_not_a_remote_node(impl):
    d = impl.Directory("n0")
    with pytest.raises(ValueError, match="local node"):
        d.set_node("n0", {"a": ()})
    with pytest.raises(ValueError, match="local node"):
        d.remove_node("n0")


def test_set_node_validates_before_changing_anything(impl):
    d = impl.Directory("n0")
    d.set_node("n1", {"a": ("x",)})
    before = d.snapshot()
    with pytest.raises(TypeError):
        d.set_node("n1", {"b": ("x",), 7: ()})
    with pytest.raises(TypeError):
        d.set_node("n1", {"b": "xy"})                 # a str is not a capability list
    with pytest.raises(ValueError):
        d.set_node("n1", {"b": ("",)})
    with pytest.raises(TypeError):
        d.set_node("n1", [("b", ())])
    assert d.snapshot() == before


@pytest.mark.parametrize("bad", [None, 3, b"n"])
def test_names_must_be_str(impl, bad):
    with pytest.raises(TypeError):
        impl.Directory(bad)
    d = impl.Directory("n0")
    with pytest.raises(TypeError):
        d.add_local(bad)
    with pytest.raises(TypeError):
        d.set_node(bad, {})
    with pytest.raises(ValueError):
        d.add_local("")


def test_providers_returns_the_cached_tuple(impl):
    d = impl.Directory("n0")
    d.set_node("n1", {"a": ("x",), "b": ("x",)})
    assert d.providers("x") is d.providers("x")
    assert d.node_of("a") is d.node_of("b")


def test_snapshot(impl):
    d = impl.Directory("n0")
    d.add_local("z", ("q",))
    d.set_node("n1", {"a": ("x", "y")})
    snap = d.snapshot()
    assert snap == {"a": ("n1", ("x", "y")), "z": ("n0", ("q",))}
    assert list(snap) == ["a", "z"]


# ---------------------------------------------------------------------------------------------
# topic matching


MATCH_TABLE = [
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b", False),
    ("a.b", "a.b.c", False),
    ("a.*.c", "a.b.c", True),
    ("a.*", "a.b", True),
    ("a.*", "a", False),                  # '*' is exactly one segment
    ("a.*", "a.b.c", False),              # ... not two
    ("*", "a", True),
    ("*", "a.b", False),
    ("*.*", "a.b", True),
    ("a.#", "a", True),                   # '#' matches zero segments
    ("a.#", "a.b", True),
    ("a.#", "a.b.c.d", True),
    ("a.#", "b.a", False),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("*.#", "a", True),
    ("*.b.#", "a.b", True),
    ("*.b.#", "a.c.b", False),
    ("signals.*", "signals.AAPL", True),
    ("signals.*", "signals", False),
    ("Signals.AAPL", "signals.AAPL", False),  # literal and case-sensitive
    ("a-b_c.é", "a-b_c.é", True),
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), MATCH_TABLE)
def test_topic_matches_table(impl, pattern, topic, expected):
    assert impl.topic_matches(pattern, topic) is expected


@pytest.mark.parametrize("pattern", ["", ".", "a.", ".a", "a..b", "a.#.b", "#.a", "a*", "a.b#", "*x", "a.##"])
def test_invalid_patterns(impl, pattern):
    with pytest.raises(ValueError, match="pattern"):
        impl.validate_pattern(pattern)
    with pytest.raises(ValueError):
        impl.topic_matches(pattern, "a")
    with pytest.raises(ValueError):
        impl.TopicTable().subscribe(pattern, 1)


@pytest.mark.parametrize("topic", ["", ".", "a.", ".a", "a..b", "a.*", "#", "a.b#", "x*"])
def test_invalid_topics(impl, topic):
    with pytest.raises(ValueError, match="topic"):
        impl.validate_topic(topic)
    with pytest.raises(ValueError):
        impl.topic_matches("#", topic)
    with pytest.raises(ValueError):
        impl.TopicTable().match(topic)


@pytest.mark.parametrize("bad", [None, 1, b"a.b"])
def test_non_str_topics_and_patterns(impl, bad):
    with pytest.raises(TypeError):
        impl.validate_pattern(bad)
    with pytest.raises(TypeError):
        impl.validate_topic(bad)
    with pytest.raises(TypeError):
        impl.TopicTable().match(bad)


def test_valid_patterns_pass(impl):
    for pattern in ("a", "*", "#", "a.*.#", "x.y.z", "*.*"):
        impl.validate_pattern(pattern)
    impl.validate_topic("a.b.c")


# ---------------------------------------------------------------------------------------------
# TopicTable


def test_subscribe_unsubscribe(impl):
    t = impl.TopicTable()
    assert t.subscribe("a.*", "n1") is True
    assert t.subscribe("a.*", "n1") is False
    assert t.subscribe("a.#", "n1") is True
    assert t.subscribe("a.*", ("agent", "handler")) is True
    assert len(t) == 3
    assert t.patterns() == [("a.*", "n1"), ("a.#", "n1"), ("a.*", ("agent", "handler"))]
    assert t.match("a.b") == ("n1", ("agent", "handler"))
    assert t.unsubscribe("a.*", "n1") is True
    assert t.unsubscribe("a.*", "n1") is False
    assert t.unsubscribe("zz", "n1") is False
    assert t.match("a.b") == ("n1", ("agent", "handler"))
    assert t.match("a") == ("n1",)
    assert t.remove_subscriber("n1") == 1
    assert t.remove_subscriber("n1") == 0
    assert t.match("a") == ()
    assert t.match("a.b") == (("agent", "handler"),)
    assert t.unsubscribe("a.*", ("agent", "handler")) is True
    assert len(t) == 0 and t.patterns() == [] and t.match("a.b") == ()


def test_match_order_is_first_subscription(impl):
    t = impl.TopicTable()
    t.subscribe("x.y", "late")         # matches x.y only
    t.subscribe("#", "all")
    t.subscribe("x.*", "star")
    t.subscribe("x.#", "all")          # duplicate subscriber via another pattern: listed once
    t.subscribe("x.y", "star")
    assert t.match("x.y") == ("late", "all", "star")
    assert t.match("x.z") == ("all", "star")
    assert t.match("q") == ("all",)
    # re-subscribing after unsubscribing puts the pair at the end
    t.unsubscribe("x.y", "late")
    t.subscribe("x.y", "late")
    assert t.match("x.y") == ("all", "star", "late")


def test_match_with_many_matching_patterns(impl):
    t = impl.TopicTable()
    for k in range(40):                                # more hits than the compiled small merge holds
        for pattern in ("*.b.*", "a.#", "#", "a.*.c", "a.b.c"):
            t.subscribe(pattern, (k * 7) % 25)
    assert len(t) == 125
    assert t.match("a.b.c") == tuple(dict.fromkeys((k * 7) % 25 for k in range(25)))


def test_match_dedupes_equal_subscribers(impl):
    t = impl.TopicTable()
    t.subscribe("a.*", ("agent", "h" + "1"))
    t.subscribe("a.b", ("agent", "".join(["h", "1"])))   # equal, not identical
    t.subscribe("#", ("other", 1))
    assert t.match("a.b") == (("agent", "h1"), ("other", 1))
    assert len(t) == 3


def test_match_cache_hit_and_invalidation(impl):
    t = impl.TopicTable()
    t.subscribe("a.*", 1)
    first = t.match("a.b")
    assert t.match("a.b") is first                     # cached tuple
    t.subscribe("a.b", 2)
    assert t.match("a.b") == (1, 2)                    # invalidated on change
    t.unsubscribe("a.b", 2)
    assert t.match("a.b") == (1,)
    t.remove_subscriber(1)
    assert t.match("a.b") == ()


def test_match_cache_is_bounded(impl):
    t = impl.TopicTable(cache_size=2)
    t.subscribe("#", 1)
    ra = t.match("a")
    assert t.match("a") is ra
    t.match("b")
    t.match("c")                                       # full: cleared, then c cached
    assert t.match("a") is not ra and t.match("a") == ra
    t0 = impl.TopicTable(cache_size=0)                 # no cache at all
    t0.subscribe("#", 1)
    assert t0.match("a") is not t0.match("a")


def test_cache_size_validation(impl):
    with pytest.raises(ValueError):
        impl.TopicTable(cache_size=-1)
    with pytest.raises(TypeError):
        impl.TopicTable(cache_size=1.5)
    with pytest.raises(TypeError):
        impl.TopicTable(cache_size=True)


def test_unhashable_subscriber(impl):
    t = impl.TopicTable()
    with pytest.raises(TypeError):
        t.subscribe("a", ["not", "hashable"])
    assert len(t) == 0


def test_trie_is_pruned_after_unsubscribe(impl):
    t = impl.TopicTable()
    patterns = ["a.b.c", "a.b.#", "a.*", "*.b", "#"]
    for p in patterns:
        t.subscribe(p, p)
    for p in patterns:
        assert t.unsubscribe(p, p)
    assert len(t) == 0 and t.match("a.b.c") == ()
    if impl is pure:                                   # the compiled trie is not visible from Python
        assert t._root.children == {} and t._root.subs == {}


# ---------------------------------------------------------------------------------------------
# parity: random operation sequences give identical results on both twins


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # the twins must raise the same type with the same message
        return ("raise", type(exc).__name__, str(exc))


AGENTS = st.sampled_from(["a", "b", "c", "d"])       # few names: collisions and conflicts are common
NODES = st.sampled_from(["local", "n1", "n2", "n3"])
CAPS = st.lists(st.sampled_from(["x", "y", "z", "w"]), max_size=4).map(tuple)

DIRECTORY_OPS = st.one_of(
    st.tuples(st.just("add_local"), AGENTS, CAPS),
    st.tuples(st.just("remove_local"), AGENTS),
    st.tuples(st.just("set_node"), NODES, st.dictionaries(AGENTS, CAPS, max_size=5)),
    st.tuples(st.just("remove_node"), NODES),
    st.tuples(st.just("node_of"), AGENTS),
    st.tuples(st.just("is_local"), AGENTS),
    st.tuples(st.just("capabilities_of"), AGENTS),
    st.tuples(st.just("providers"), st.sampled_from(["x", "y", "z", "w"])),
    st.tuples(st.just("local_providers"), st.sampled_from(["x", "y", "z", "w"])),
    st.tuples(st.just("agents_of"), NODES),
)


def directory_view(d):
    caps = ("x", "y", "z", "w")
    return (d.snapshot(), d.nodes(), len(d), [d.providers(c) for c in caps],
            [d.local_providers(c) for c in caps],
            [d.agents_of(n) for n in ("local", "n1", "n2", "n3")])


def check_directory_invariants(d):
    snap = d.snapshot()
    for cap in ("x", "y", "z", "w"):
        assert d.providers(cap) == tuple(sorted(a for a, (_, cs) in snap.items() if cap in cs))
        assert d.local_providers(cap) == tuple(
            sorted(a for a, (n, cs) in snap.items() if cap in cs and n == "local"))
    for node in d.nodes():
        assert d.agents_of(node) == tuple(sorted(a for a, (n, _) in snap.items() if n == node))
    assert len(d) == len(snap)


@settings(max_examples=200, deadline=None)
@given(st.lists(DIRECTORY_OPS, max_size=40))
def test_directory_parity(ops):
    dc, dp = compiled.Directory("local"), pure.Directory("local")
    for op, *args in ops:
        assert outcome(getattr(dc, op), *args) == outcome(getattr(dp, op), *args), (op, args)
        check_directory_invariants(dp)
    assert directory_view(dc) == directory_view(dp)
    check_directory_invariants(dc)


SEGMENT = st.sampled_from(["a", "b", "c"])
PATTERNS = st.builds(
    lambda segs, tail: ".".join(segs + (["#"] if tail else [])) or "#",
    st.lists(st.one_of(SEGMENT, st.just("*")), max_size=3), st.booleans())
TOPICS = st.lists(SEGMENT, min_size=1, max_size=4).map(".".join)
BAD = st.sampled_from(["", "a..b", "a.#.b", "a*", ".a", "a.*"])
SUBSCRIBERS = st.one_of(st.integers(0, 3), st.sampled_from([("ag", "h1"), ("ag", "h2"), "n1"]))

TOPIC_OPS = st.one_of(
    st.tuples(st.just("subscribe"), st.one_of(PATTERNS, BAD), SUBSCRIBERS),
    st.tuples(st.just("unsubscribe"), st.one_of(PATTERNS, BAD), SUBSCRIBERS),
    st.tuples(st.just("remove_subscriber"), SUBSCRIBERS),
    st.tuples(st.just("match"), st.one_of(TOPICS, TOPICS, BAD)),
)


def brute_force_match(table, topic):
    found = {}
    for pattern, subscriber in table.patterns():
        if pure.topic_matches(pattern, topic):
            found.setdefault(subscriber, None)
    return tuple(found)


@settings(max_examples=200, deadline=None)
@given(st.lists(TOPIC_OPS, max_size=40), st.sampled_from([0, 2, 4096]))
def test_topic_table_parity(ops, cache_size):
    tc, tp = compiled.TopicTable(cache_size), pure.TopicTable(cache_size)
    for op, *args in ops:
        got = outcome(getattr(tc, op), *args)
        assert got == outcome(getattr(tp, op), *args), (op, args)
        if op == "match" and got[0] == "ok":
            assert got[1] == brute_force_match(tp, args[0])
    assert tc.patterns() == tp.patterns() and len(tc) == len(tp)


@settings(max_examples=300, deadline=None)
@given(st.one_of(PATTERNS, BAD, st.text(alphabet="ab.*#", max_size=6)),
       st.one_of(TOPICS, BAD, st.text(alphabet="ab.*#", max_size=6)))
def test_topic_matches_parity(pattern, topic):
    assert outcome(compiled.topic_matches, pattern, topic) == outcome(pure.topic_matches, pattern, topic)
    assert outcome(compiled.validate_pattern, pattern) == outcome(pure.validate_pattern, pattern)
    assert outcome(compiled.validate_topic, topic) == outcome(pure.validate_topic, topic)
