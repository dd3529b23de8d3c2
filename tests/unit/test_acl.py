"""The ACL policy: file format, errors, decisions, and a slow reference evaluation."""
from __future__ import annotations

import fnmatch
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh._core.router import topic_matches
from mesh.security.acl import Action, Decision, Policy
from mesh.security.errors import PolicyError

CALL, PUB, SUB, READ, WRITE = Action.CALL, Action.PUBLISH, Action.SUBSCRIBE, Action.KV_READ, Action.KV_WRITE

EXAMPLE = """
# policy.toml
[[allow]]
principal = "node:n1"
call = ["risk-*.check", "pricing.*"]
publish = ["signals.*"]
subscribe = ["signals.#"]
kv_read = ["limits/"]
kv_write = ["limits/"]

[[allow]]
principal = ["agent:trader-*", "node:n2/agent:ops"]
call = ["pricing.quote"]
kv_read = ["*"]

[[deny]]
principal = "agent:untrusted-*"
call = ["*"]
"""


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(EXAMPLE)
    return Policy.load(path)


def test_each_action_is_allowed_only_where_a_rule_says(policy):
    assert policy.check("n1", None, CALL, "risk-1.check") == Decision(True, "allow[0]")
    assert policy.check("n1", "bot", CALL, "pricing.quote") == Decision(True, "allow[0]")
    assert policy.check("n1", None, CALL, "risk-1.reset") == Decision(False, "default")
    assert policy.check("n1", None, PUB, "signals.AAPL").allowed
    assert not policy.check("n1", None, PUB, "signals.AAPL.bid").allowed      # '*' is one segment
    assert not policy.check("n1", None, PUB, "orders.AAPL").allowed
    assert policy.check("n1", None, SUB, "signals.#").allowed
    assert policy.check("n1", None, READ, "limits/AAPL").allowed
    assert policy.check("n1", None, WRITE, "limits/AAPL").allowed
    assert not policy.check("n1", None, WRITE, "secrets/x").allowed
    assert not policy.check("n1", None, WRITE, "limits").allowed              # a prefix, not a glob
    assert policy.check("n2", None, CALL, "pricing.quote") == Decision(False, "default")


def test_deny_wins_over_allow(policy):
    assert policy.check("n1", "untrusted-7", CALL, "risk-1.check") == Decision(False, "deny[0]")
    assert policy.check("n1", "untrusted-7", PUB, "signals.AAPL").allowed     # the deny is for calls


def test_principal_forms(policy):
    # agent:<glob> on any node, but never a caller without an agent
    assert policy.check("n9", "trader-3", CALL, "pricing.quote") == Decision(True, "allow[1]")
    assert not policy.check("n9", None, CALL, "pricing.quote").allowed
    # node:<id>/agent:<name> needs both
    assert policy.check("n2", "ops", READ, "anything") == Decision(True, "allow[1]")
    assert not policy.check("n3", "ops", READ, "anything").allowed
    assert not policy.check("n2", "ops2", READ, "anything").allowed
    star = Policy.from_dict({"allow": [{"principal": "*", "publish": ["#"]}]})
    assert star.check("anyone", None, PUB, "a.b.c").allowed and star.check("x", "y", PUB, "a").allowed
    globs = Policy.from_dict({"allow": [{"principal": "node:n[12]/agent:?-bot", "call": ["x.y"]}]})
    assert globs.allowed("n1", "a-bot", CALL, "x.y") and globs.allowed("n2", "b-bot", CALL, "x.y")
    assert not globs.allowed("n3", "a-bot", CALL, "x.y") and not globs.allowed("n1", "ab-bot", CALL, "x.y")
    assert not globs.allowed("N1", "a-bot", CALL, "x.y")                       # case-sensitive


def test_default_deny_once_a_policy_exists():
    empty = Policy.from_dict({})
    for action in Action:
        assert empty.check("n1", "a", action, "x") == Decision(False, "default")


def test_call_globs_span_dots():
    p = Policy.from_dict({"allow": [{"principal": "*", "call": ["risk-*.check", "_ops.*"]}]})
    assert p.allowed("n", None, CALL, "risk-eu.1.check")       # agent names may hold dots
    assert p.allowed("n", None, CALL, "_ops.n1.status")
    assert not p.allowed("n", None, CALL, "risk-1.checkout")


@pytest.mark.parametrize("rule, pattern, ok", [
    ("signals.#", "signals.*", True), ("signals.#", "signals.#", True), ("signals.#", "signals", True),
    ("signals.#", "signals.a.*.#", True), ("signals.*", "signals.AAPL", True),
    ("signals.*", "signals.*", True), ("signals.*", "signals.#", False), ("signals.*", "#", False),
    ("signals.AAPL", "signals.*", False), ("*.AAPL", "signals.AAPL", True), ("#", "#", True),
    ("*.#", "#", False), ("*.#", "a.#", True), ("a.*.c", "a.*.c", True), ("a.*.c", "a.#", False),
])
def test_a_subscription_must_be_covered_by_the_rule(rule, pattern, ok):
    p = Policy.from_dict({"allow": [{"principal": "*", "subscribe": [rule]}]})
    assert p.allowed("n", "a", SUB, pattern) is ok


def test_kv_star_means_every_key():
    p = Policy.from_dict({"allow": [{"principal": "*", "kv_read": ["*"], "kv_write": "limits/"}]})
    assert p.allowed("n", None, READ, "") and p.allowed("n", None, READ, "a/b")
    assert p.allowed("n", None, WRITE, "limits/x") and not p.allowed("n", None, WRITE, "*")


@pytest.mark.parametrize("text, where, problem", [
    ('[[allow]]\nprincipal = "node:n1"\nsubcribe = ["a"]', "allow[0].subcribe", "unknown key"),
    ('[[allow]]\ncall = ["a.b"]', "allow[0].principal", "missing"),
    ('[[deny]]\nprincipal = "*"\ncall = ["*"]\n[[deny]]\nprincipal = "user:x"\ncall = ["*"]',
     "deny[1].principal", "expected 'node:<id>'"),
    ('[[allow]]\nprincipal = "node:n1/agnt:x"\ncall = ["*"]', "allow[0].principal", "expected 'node:<id>'"),
    ('[[allow]]\nprincipal = "agent:"\ncall = ["*"]', "allow[0].principal", "empty id or name"),
    ('[[allow]]\nprincipal = "*"\npublish = ["a.b", "a.#.c"]', "allow[0].publish[1]", "'#' is allowed only"),
    ('[[allow]]\nprincipal = "*"\nsubscribe = ["a..b"]', "allow[0].subscribe[0]", "empty segment"),
    ('[[allow]]\nprincipal = "*"\npublish = ["a*"]', "allow[0].publish[0]", "whole segments"),
    ('[[allow]]\nprincipal = "*"\ncall = [1]', "allow[0].call[0]", "expected a string"),
    ('[[allow]]\nprincipal = "*"\nkv_read = 3', "allow[0].kv_read", "expected a string or a list"),
    ('[[allow]]\nprincipal = "*"\ncall = [""]', "allow[0].call[0]", "empty"),
    ('[[allow]]\nprincipal = "node:n1"', "allow[0]", "names no action"),
    ('[[alow]]\nprincipal = "*"', "alow", "unknown key"),
    ("allow = 3", "allow", "expected [[allow]] tables"),
    ("version = 2", "version", "not supported"),
])
def test_errors_name_the_file_the_table_and_the_key(tmp_path, text, where, problem):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as err:
        Policy.load(path)
    assert str(err.value).startswith(f"{path}: {where}: "), str(err.value)
    assert problem in str(err.value)
    assert err.value.path == str(path) and err.value.where == where


def test_file_level_errors(tmp_path):
    with pytest.raises(PolicyError, match=r"missing\.toml: cannot read"):
        Policy.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[allow]\n")
    with pytest.raises(PolicyError, match=r"bad\.toml: not valid TOML"):
        Policy.load(bad)


def test_the_cache_stays_bounded_and_right():
    p = Policy.from_dict({"allow": [{"principal": "node:n1", "call": ["a.*"]}]}, cache_size=8)
    for i in range(1000):
        assert p.allowed("n1", None, CALL, f"a.m{i}")
        assert not p.allowed("n1", None, CALL, f"b.m{i}")
        assert p.cache_len() <= 8
    assert p.cache_len() == 8
    # recently used entries stay; answers after eviction are still right
    assert p.check("n1", None, CALL, "a.m999") == Decision(True, "allow[0]")
    assert p.check("n1", None, CALL, "a.m0") == Decision(True, "allow[0]")
    assert Policy.from_dict({}, cache_size=0).check("n", None, CALL, "x") == Decision(False, "default")


# -- the slow reference evaluation ---------------------------------------------------------------

def ref_principal(principal: str, node: str, agent: str | None) -> bool:
    if principal == "*":
        return True
    if principal.startswith("agent:"):
        return agent is not None and fnmatch.fnmatchcase(agent, principal[6:])
    node_glob, sep, rest = principal[5:].partition("/")
    if not fnmatch.fnmatchcase(node, node_glob):
        return False
    return not sep or (agent is not None and fnmatch.fnmatchcase(agent, rest[6:]))


def ref_covers(rule: list[str], pattern: list[str]) -> bool:
    """Every topic ``pattern`` matches is matched by ``rule`` (segment by segment)."""
    if not rule:
        return not pattern
    if rule[0] == "#":
        return True
    if not pattern or pattern[0] == "#":
        return False
    if rule[0] != "*" and rule[0] != pattern[0]:
        return False
    return ref_covers(rule[1:], pattern[1:])


def ref_resource(action: Action, items: list[str], resource: str) -> bool:
    if action is CALL:
        return any(fnmatch.fnmatchcase(resource, g) for g in items)
    if action is PUB:
        return any(topic_matches(p, resource) for p in items)       # the router's own matcher
    if action is SUB:
        return any(ref_covers(p.split("."), resource.split(".")) for p in items)
    return any(p == "*" or resource.startswith(p) for p in items)


def ref_check(doc: dict, node: str, agent: str | None, action: Action, resource: str) -> Decision:
    for kind in ("deny", "allow"):
        for i, rule in enumerate(doc.get(kind, [])):
            principals = [rule["principal"]] if isinstance(rule["principal"], str) else rule["principal"]
            if (action.value in rule and ref_resource(action, rule[action.value], resource)
                    and any(ref_principal(p, node, agent) for p in principals)):
                return Decision(kind == "allow", f"{kind}[{i}]")
    return Decision(False, "default")


NODES = ["n1", "n2", "m1"]
AGENTS = [None, "a1", "a2", "b1", "_x"]
PRINCIPALS = ["*", "node:n*", "node:n1", "node:?1", "agent:a*", "agent:b1", "node:n?/agent:a[12]",
              "node:*/agent:*"]
CALLS = ["*", "a1.*", "*.m1", "a?.m2", "b1.m1", "a1.m[12]"]
SEGS = ["x", "y", "*", "#"]
PREFIXES = ["*", "k/", "k/a", "l"]


def _topic_pattern(segs: list[str]) -> str:
    segs = [s for s in segs if s != "#"] + (["#"] if "#" in segs else [])   # '#' only last
    return ".".join(segs or ["#"])


# built once: hypothesis spends most of a run validating strategies built inside a draw
TOPIC_PATTERNS = st.lists(st.sampled_from(SEGS), min_size=1, max_size=3).map(_topic_pattern)
TOPICS = st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=3).map(".".join)
ITEMS = {CALL: st.lists(st.sampled_from(CALLS), max_size=2),
         PUB: st.lists(TOPIC_PATTERNS, max_size=2), SUB: st.lists(TOPIC_PATTERNS, max_size=2),
         READ: st.lists(st.sampled_from(PREFIXES), max_size=2),
         WRITE: st.lists(st.sampled_from(PREFIXES), max_size=2)}
RESOURCES = {CALL: st.tuples(st.sampled_from(["a1", "a2", "b1", "c"]),
                             st.sampled_from(["m1", "m2", "m3"])).map(".".join),
             PUB: TOPICS, SUB: TOPIC_PATTERNS,
             READ: st.sampled_from(["k/a1", "k/b", "l/x", "kk", "", "*"]),
             WRITE: st.sampled_from(["k/a1", "k/b", "l/x", "kk", "", "*"])}
PRINCIPAL_VALUES = st.one_of(st.sampled_from(PRINCIPALS),
                             st.lists(st.sampled_from(PRINCIPALS), min_size=1, max_size=2))
ACTION_SETS = st.lists(st.sampled_from(list(Action)), min_size=1, max_size=3, unique=True)


@st.composite
def rules(draw):
    rule: dict = {"principal": draw(PRINCIPAL_VALUES)}
    for action in draw(ACTION_SETS):
        rule[action.value] = draw(ITEMS[action])
    return rule


@st.composite
def questions(draw):
    action = draw(st.sampled_from(list(Action)))
    return draw(st.sampled_from(NODES)), draw(st.sampled_from(AGENTS)), action, draw(RESOURCES[action])


RULES = rules()
QUESTIONS = questions()


@settings(max_examples=200, deadline=None)
@given(allow=st.lists(RULES, max_size=4), deny=st.lists(RULES, max_size=3),
       asked=st.lists(QUESTIONS, min_size=1, max_size=25))
def test_decisions_equal_a_slow_reference_evaluation(allow, deny, asked):
    doc = {"allow": allow, "deny": deny}
    policy = Policy.from_dict(doc, cache_size=5)       # small: evictions happen too
    for q in asked + asked:                            # the second pass may come from the cache
        assert policy.check(*q) == ref_check(doc, *q), q


@settings(max_examples=200, deadline=None)
@given(rule=TOPIC_PATTERNS, topic=TOPICS)
def test_topic_rules_match_topics_as_the_router_does(rule, topic):
    p = Policy.from_dict({"allow": [{"principal": "*", "publish": [rule], "subscribe": [rule]}]})
    assert p.allowed("n", None, PUB, topic) is topic_matches(rule, topic)
    assert p.allowed("n", None, SUB, topic) is topic_matches(rule, topic)   # a topic is a pattern too


def test_the_issue_example_parses_as_documented():
    p = Policy.from_dict(__import__("tomllib").loads(textwrap.dedent("""
        [[allow]]
        principal = "node:n1"
        call = ["risk-*.check", "pricing.*"]
        publish = ["signals.*"]
        subscribe = ["signals.#"]
        kv_read = ["limits/"]
        kv_write = ["limits/"]
        [[deny]]
        principal = "agent:untrusted-*"
        call = ["*"]
        """)), "issue")
    assert repr(p) == "Policy(source='issue', deny=1, allow=1)"
    assert p.check("n1", "untrusted-1", CALL, "pricing.x") == Decision(False, "deny[0]")
