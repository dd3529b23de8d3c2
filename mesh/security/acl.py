"""The ACL policy: which principal may call, publish, subscribe, read and write what.

Theory of operation
-------------------
A policy is a TOML file of ``[[allow]]`` and ``[[deny]]`` tables::

    version = 1                            # optional
    [[allow]]
    principal = "node:n1"                  # or a list of principals
    call = ["risk-*.check", "pricing.*"]   # <agent>.<method> globs
    publish = ["signals.*"]                # mesh topic patterns
    subscribe = ["signals.#"]
    kv_read = ["limits/"]                  # key prefixes
    kv_write = ["limits/"]
    [[deny]]                               # denies win over allows
    principal = "agent:untrusted-*"
    call = ["*"]

Principals (the caller)
    ``node:<id>`` any caller on that node (an agent, or the node itself with no agent);
    ``agent:<name>`` that agent on any node (never a caller without an agent);
    ``node:<id>/agent:<name>`` both; ``*`` anyone. Ids and names are globs (``fnmatch``:
    ``*``, ``?``, ``[abc]``; case-sensitive). The node id is the one the link authenticated
    (its CURVE key, through the trust store), so ``node:`` names a node key.

Resources
    ``call``: globs over ``"<agent>.<method>"``; ``*`` matches any characters, dots too.
    ``publish``/``subscribe``: mesh topic patterns, the syntax of ``@mesh.on`` (``*`` one
    segment, a final ``#`` zero or more). A publish is allowed if the rule's pattern matches
    the topic. A subscription is allowed if the rule's pattern covers *every* topic the
    subscribed pattern can match: rule ``signals.#`` allows subscribing ``signals.*`` and
    ``signals.#``; rule ``signals.*`` allows ``signals.AAPL`` and ``signals.*`` but not
    ``signals.#`` (it would also receive ``signals`` and ``signals.a.b``).
    ``kv_read``/``kv_write``: key prefixes (``"limits/"``); ``"*"`` alone means every key. A
    range read or watch of a prefix is a read of that prefix: allowed if a rule's prefix is a
    prefix of it.

Decision
    ``check(node, agent, action, resource)`` looks at the ``deny`` tables in order, then the
    ``allow`` tables in order; the first one whose principal and resource match decides
    (``deny[i]`` / ``allow[i]``). Nothing matched: denied (``default``). So once a policy is
    loaded everything not allowed is denied; with no policy at all the runtime allows
    everything, which is its decision, not this module's.

    Each table's patterns are compiled to one regular expression per action at load, and
    decisions are kept in an LRU cache of ``cache_size`` entries keyed by the whole question,
    so the per-message cost is one dict lookup. The cache is bounded because resources come
    from peers (any method name, any topic).

System agents
    The mesh's own agents (names starting with ``_``: ``_raft.n1``, ``_ops.n1``,
    ``_place.n1``) are infrastructure: the runtime does not ask the policy about
    node-to-node traffic to them, so a policy needs no rules for Raft, gossip or placement.
    Calls from a user's agent or a client are checked like any other.
"""
from __future__ import annotations

import enum
import fnmatch
import os
import re
import tomllib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from mesh.security.errors import PolicyError

FORMAT_VERSION = 1
DEFAULT_CACHE_SIZE = 4096
MAX_POLICY_BYTES = 4 << 20


class Action(enum.Enum):
    """What a caller wants to do; the value is the policy file's key."""

    CALL = "call"
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    KV_READ = "kv_read"
    KV_WRITE = "kv_write"

    # members are singletons, so identity is a correct hash; Enum's own hashes the name in
    # Python code, which was a fifth of a cached check()
    __hash__ = object.__hash__


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one question: ``allowed`` and the ``rule`` that decided it
    (``"deny[0]"``, ``"allow[2]"`` or ``"default"``)."""

    allowed: bool
    rule: str


DEFAULT_DENY = Decision(False, "default")

_RULE_KEYS = ("principal",) + tuple(a.value for a in Action)
_PRINCIPAL_HELP = "expected 'node:<id>', 'agent:<name>', 'node:<id>/agent:<name>' or '*'"

_Matcher = Callable[[str], Any]


# -- compiling -----------------------------------------------------------------------------------

def _glob_regex(glob: str) -> str:
    return fnmatch.translate(glob)


def topic_rule_regex(pattern: str) -> str:
    """The regex (for ``fullmatch``) of a topic pattern that matches the topics it matches and
    the subscription patterns it covers. ``*`` becomes one segment that is not ``#`` (a
    subscribed ``*`` is one segment; a subscribed ``#`` may be none or many), a final ``#``
    any rest, with or without segments."""
    segs = pattern.split(".")
    tail = ""
    if segs[-1] == "#":
        segs.pop()
        tail = r"(?:\..*)?" if segs else r".*"
    body = r"\.".join(r"[^.#]+" if s == "*" else re.escape(s) for s in segs)
    return body + tail


def _check_topic_pattern(pattern: str) -> str | None:
    """Why ``pattern`` is not a topic pattern, or None if it is one."""
    segs = pattern.split(".")
    for i, seg in enumerate(segs):
        if not seg:
            return "empty segment"
        if seg == "#" and i != len(segs) - 1:
            return "'#' is allowed only as the last segment"
        if seg not in ("*", "#") and ("*" in seg or "#" in seg):
            return f"segment {seg!r}: '*' and '#' must be whole segments"
    return None


class _Principal:
    __slots__ = ("node", "agent", "needs_agent")

    def __init__(self, text: str, where: str, source: str) -> None:
        node_glob, agent_glob = "*", "*"
        self.needs_agent = False
        if text == "*":
            pass
        elif text.startswith("node:"):
            node_glob, sep, rest = text[5:].partition("/")
            if sep:
                if not rest.startswith("agent:"):
                    raise _err(source, where, f"{text!r}: {_PRINCIPAL_HELP}")
                agent_glob, self.needs_agent = rest[6:], True
        elif text.startswith("agent:"):
            agent_glob, self.needs_agent = text[6:], True
        else:
            raise _err(source, where, f"{text!r}: {_PRINCIPAL_HELP}")
        if not node_glob or not agent_glob:
            raise _err(source, where, f"{text!r}: empty id or name; {_PRINCIPAL_HELP}")
        self.node = None if node_glob == "*" else re.compile(_glob_regex(node_glob)).match
        self.agent = None if agent_glob == "*" else re.compile(_glob_regex(agent_glob)).match

    def matches(self, node: str, agent: str | None) -> bool:
        if self.needs_agent and agent is None:
            return False
        if self.node is not None and self.node(node) is None:
            return False
        return self.agent is None or self.agent(agent) is not None


class _Rule:
    __slots__ = ("name", "principals", "resources", "decision")

    def __init__(self, name: str, principals: tuple[_Principal, ...],
                 resources: dict[Action, _Matcher], decision: Decision) -> None:
        self.name = name
        self.principals = principals
        self.resources = resources
        self.decision = decision


def _err(source: str, where: str, problem: str) -> PolicyError:
    return PolicyError(f"{source}: {where}: {problem}", path=source, where=where)


def _strings(value: object, source: str, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise _err(source, where, f"expected a string or a list of strings, got {type(value).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise _err(source, f"{where}[{i}]", f"expected a string, got {type(item).__name__}")
        if not item:
            raise _err(source, f"{where}[{i}]", "empty")
    return items


def _compile_action(action: Action, items: list[str], source: str, where: str) -> _Matcher:
    if action is Action.CALL:
        return re.compile("|".join(f"(?:{_glob_regex(g)})" for g in items) or r"(?!)").match
    if action in (Action.PUBLISH, Action.SUBSCRIBE):
        for i, pattern in enumerate(items):
            problem = _check_topic_pattern(pattern)
            if problem:
                raise _err(source, f"{where}[{i}]", f"invalid topic pattern {pattern!r}: {problem}")
        return re.compile("|".join(f"(?:{topic_rule_regex(p)})" for p in items) or r"(?!)").fullmatch
    prefixes = tuple("" if p == "*" else p for p in items)
    return lambda key: key.startswith(prefixes) if prefixes else False


def _compile_rule(kind: str, index: int, table: object, source: str) -> _Rule:
    name = f"{kind}[{index}]"
    if not isinstance(table, dict):
        raise _err(source, name, f"expected a table ([[{kind}]]), got {type(table).__name__}")
    for key in table:
        if key not in _RULE_KEYS:
            raise _err(source, f"{name}.{key}", f"unknown key (expected: {', '.join(_RULE_KEYS)})")
    if "principal" not in table:
        raise _err(source, f"{name}.principal", "missing")
    principals = tuple(_Principal(p, f"{name}.principal", source)
                       for p in _strings(table["principal"], source, f"{name}.principal"))
    resources = {}
    for action in Action:
        if action.value in table:
            items = _strings(table[action.value], source, f"{name}.{action.value}")
            resources[action] = _compile_action(action, items, source, f"{name}.{action.value}")
    if not resources:
        raise _err(source, name, f"names no action ({', '.join(a.value for a in Action)})")
    return _Rule(name, principals, resources, Decision(kind == "allow", name))


# -- the policy ----------------------------------------------------------------------------------

class Policy:
    """A loaded policy; see the module docstring. Build it with :meth:`load` or
    :meth:`from_dict`; :meth:`check` answers per message."""

    def __init__(self, deny: list[_Rule], allow: list[_Rule], source: str,
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self.source = source
        self.cache_size = cache_size
        self._rules = tuple(deny) + tuple(allow)      # the order of evaluation
        self._by_action = {a: tuple((r.principals, r.resources[a], r.decision)
                                    for r in self._rules if a in r.resources) for a in Action}
        self._cache: OrderedDict[tuple, Decision] = OrderedDict()
        self.counts = {"allow": len(allow), "deny": len(deny)}

    @classmethod
    def load(cls, path: str | os.PathLike[str], cache_size: int = DEFAULT_CACHE_SIZE) -> Policy:
        """Read a TOML policy file; PolicyError names the file, the table and the key."""
        source = os.fspath(path)
        try:
            with open(source, "rb") as f:
                data = f.read(MAX_POLICY_BYTES + 1)
        except OSError as exc:
            raise PolicyError(f"{source}: cannot read the policy: {exc.strerror}", path=source) from None
        if len(data) > MAX_POLICY_BYTES:
            raise PolicyError(f"{source}: larger than {MAX_POLICY_BYTES} bytes", path=source)
        try:
            doc = tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise PolicyError(f"{source}: not UTF-8 text (byte {exc.start})", path=source) from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{source}: not valid TOML: {exc}", path=source) from None
        return cls.from_dict(doc, source, cache_size)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], source: str = "<policy>",
                  cache_size: int = DEFAULT_CACHE_SIZE) -> Policy:
        """A policy from a parsed document (``{"allow": [...], "deny": [...]}``); ``source``
        names it in errors."""
        if not isinstance(doc, dict):
            raise PolicyError(f"{source}: expected a table, got {type(doc).__name__}", path=source)
        for key, value in doc.items():
            if key == "version":
                if value != FORMAT_VERSION or isinstance(value, bool):
                    raise _err(source, "version", f"format {value!r} is not supported "
                                                  f"(this mesh reads {FORMAT_VERSION})")
            elif key not in ("allow", "deny"):
                raise _err(source, key, "unknown key (expected [[allow]] and [[deny]] tables)")
            elif not isinstance(value, list):
                raise _err(source, key, f"expected [[{key}]] tables, got {type(value).__name__}")
        deny = [_compile_rule("deny", i, t, source) for i, t in enumerate(doc.get("deny", []))]
        allow = [_compile_rule("allow", i, t, source) for i, t in enumerate(doc.get("allow", []))]
        return cls(deny, allow, source, cache_size)

    def check(self, node: str, agent: str | None, action: Action, resource: str) -> Decision:
        """May ``agent`` on ``node`` (``agent`` None: the node itself, or a client without an
        agent) do ``action`` on ``resource``? ``resource`` is ``"<agent>.<method>"`` for a call,
        the topic for a publish, the pattern for a subscription, the key or prefix for KV."""
        key = (node, agent, action, resource)
        cache = self._cache
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        decision = self._decide(node, agent, action, resource)
        if self.cache_size:
            cache[key] = decision
            if len(cache) > self.cache_size:
                cache.popitem(last=False)
        return decision

    def allowed(self, node: str, agent: str | None, action: Action, resource: str) -> bool:
        """``check(...).allowed``."""
        return self.check(node, agent, action, resource).allowed

    def _decide(self, node: str, agent: str | None, action: Action, resource: str) -> Decision:
        for principals, matches, decision in self._by_action[action]:
            if matches(resource) and any(p.matches(node, agent) for p in principals):
                return decision
        return DEFAULT_DENY

    def cache_len(self) -> int:
        """How many decisions are cached now (at most ``cache_size``)."""
        return len(self._cache)

    def clear_cache(self) -> None:
        self._cache.clear()

    def __repr__(self) -> str:
        return f"Policy(source={self.source!r}, deny={self.counts['deny']}, allow={self.counts['allow']})"
