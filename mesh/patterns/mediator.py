"""Mediator: a broker agent that routes messages by their content.

Theory of operation
-------------------
* Senders talk to the mediator only; it decides where each message goes, so senders and
  receivers do not know each other and the routing policy lives in one place.
* A :class:`Rule` has a matcher, a target and an optional transform. The matcher is a
  predicate ``f(message) -> bool`` or a dict of field conditions that must all hold
  (``{"type": "order", "qty": {"gt": 1000}, "venue.id": {"in": ["X", "Y"]}}``; dotted paths
  reach into nested dicts; see :func:`compile_match` for the operators). The target is one
  of the node's four ways to reach someone: ``call`` an agent by name, ``call_any`` a
  capability (load-balanced), ``send`` one-way to an agent, or ``publish`` on a topic; the
  target name may use message fields (``"orders.{symbol}"``). The transform rewrites the
  message for that target: a function, or a dict of ``pick`` / ``rename`` / ``drop`` /
  ``set`` operations.
* Rules are tried in order. In ``mode="first"`` the first match routes the message and
  :meth:`Mediator.route` answers with that target's result (None for send and publish); in
  ``mode="all"`` every matching rule routes it, concurrently, and ``route`` answers
  ``{rule name: result}``.
* No rule matches: the ``default`` rule routes it if there is one; otherwise the message is
  kept among the dead letters (a bounded list of the most recent, all counted) and ``route``
  raises :class:`NoRoute`.
* ``route(message)`` is request/response. ``post(message)`` is the one-way variant: it
  accepts the message at once and routes it in the background; a failure there is counted
  and the message becomes a dead letter. At most ``max_in_flight`` posts are routed at once;
  beyond that ``post`` refuses with :class:`~mesh.errors.Overloaded` (counted). Sending
  ``post`` with ``node.send`` makes the whole path one-way.
* Rules are code (:class:`Rule` with functions) or plain data (dicts, from a TOML/JSON file
  or over the wire with the ``configure`` rpc), so a node started from a shell can load them
  from a subclass's class attributes. Counters are kept per rule.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import string
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Literal, Mapping, Sequence

from mesh.agent import Agent, rpc
from mesh.errors import NoRoute, Overloaded

log = logging.getLogger(__name__)

Action = Literal["call", "call_any", "send", "publish"]
ACTIONS: tuple[str, ...] = ("call", "call_any", "send", "publish")
MODES: tuple[str, ...] = ("first", "all")

_MISSING = object()




# -- matchers and transforms from data ------------------------------------------------------

def _field(message: Any, path: str) -> Any:
    value = message
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _compare(op: str, arg: Any) -> Callable[[Any], bool]:
    if op == "eq":
        return lambda v: v is not _MISSING and v == arg
    if op == "ne":
        return lambda v: v is not _MISSING and v != arg
    if op in ("in", "not_in"):
        if not isinstance(arg, (list, tuple, set, frozenset)):
            raise ValueError(f"operator {op!r} needs a list")
        choices = list(arg)
        if op == "in":
            return lambda v: v is not _MISSING and v in choices
        return lambda v: v is not _MISSING and v not in choices
    if op == "exists":
        return lambda v: (v is not _MISSING) is bool(arg)
    if op == "prefix":
        return lambda v: isinstance(v, str) and v.startswith(arg)
    order = {"gt": lambda v: v > arg, "ge": lambda v: v >= arg, "lt": lambda v: v < arg, "le": lambda v: v <= arg}
    if op in order:
        test = order[op]

        def compare(v: Any) -> bool:
            try:
                return v is not _MISSING and bool(test(v))
            except TypeError:        # "a" > 5: not a match rather than an error
                return False
        return compare
    raise ValueError(f"unknown operator {op!r} (known: eq, ne, in, not_in, gt, ge, lt, le, exists, prefix)")


def compile_match(spec: Mapping[str, Any]) -> Callable[[Any], bool]:
    """A predicate from field conditions, all of which must hold.

    ``{"path": value}`` means equality. ``{"path": {"op": arg, ...}}`` applies operators:
    ``eq``, ``ne``, ``in`` / ``not_in`` (a list), ``gt`` / ``ge`` / ``lt`` / ``le``,
    ``exists`` (true/false) and ``prefix`` (strings). A path is dotted (``"order.qty"``);
    a missing field fails every condition but ``exists: false``. Unknown operators raise
    ValueError when the rule is made, not when a message arrives.
    """
    tests: list[tuple[str, Callable[[Any], bool]]] = []
    for path, cond in spec.items():
        if not isinstance(path, str) or not path:
            raise ValueError(f"match keys are field paths, not {path!r}")
        if isinstance(cond, Mapping):
            if not cond:
                raise ValueError(f"field {path!r}: empty condition")
            for op, arg in cond.items():
                try:
                    tests.append((path, _compare(op, arg)))
                except ValueError as exc:
                    raise ValueError(f"field {path!r}: {exc}") from None
        else:
            tests.append((path, _compare("eq", cond)))

    def match(message: Any) -> bool:
        return all(test(_field(message, path)) for path, test in tests)
    return match


_TRANSFORM_OPS = ("pick", "rename", "drop", "set")


def compile_transform(spec: Mapping[str, Any]) -> Callable[[Any], Any]:
    """A transform of dict messages from data, applied in this order: ``pick`` (keep only
    these keys), ``rename`` ({old: new}), ``drop`` (remove these keys), ``set`` ({key: value}).
    The message is copied, never changed in place."""
    unknown = set(spec) - set(_TRANSFORM_OPS)
    if unknown:
        raise ValueError(f"unknown transform {sorted(unknown)} (known: {', '.join(_TRANSFORM_OPS)})")
    pick = list(spec.get("pick", ()))
    rename = dict(spec.get("rename", {}))
    drop = list(spec.get("drop", ()))
    put = dict(spec.get("set", {}))

    def transform(message: Any) -> Any:
        if not isinstance(message, Mapping):
            raise TypeError(f"a data transform needs a dict message, not {type(message).__name__}")
        out = {k: message[k] for k in pick if k in message} if pick else dict(message)
        for old, new in rename.items():
            if old in out:
                out[new] = out.pop(old)
        for k in drop:
            out.pop(k, None)
        out.update(put)
        return out
    return transform


def _target_fields(template: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"bad target {template!r}: {exc}") from None


# -- rules ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Rule:
    """One routing rule. ``match``: a predicate, a dict of field conditions, or None (every
    message). ``action`` and ``to``: call an agent, call_any a capability, send to an agent,
    or publish on a topic; ``to`` may name message fields (``"risk-{region}"``). ``method``:
    the rpc to invoke (not for publish). ``transform``: a function (sync or async) or a dict
    of operations (:func:`compile_transform`). ``timeout``: seconds, for call and call_any."""

    name: str
    to: str
    action: Action = "call"
    method: str = ""
    match: Mapping[str, Any] | Callable[[Any], bool] | None = None
    transform: Mapping[str, Any] | Callable[[Any], Any] | None = None
    timeout: float | None = None
    _match_fn: Callable[[Any], bool] = field(init=False, repr=False, compare=False)
    _transform_fn: Callable[[Any], Any] | None = field(init=False, repr=False, compare=False)
    _templated: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"rule {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ValueError("a rule needs a name")
        if self.action not in ACTIONS:
            raise ValueError(f"{where}: action must be one of {', '.join(ACTIONS)}, not {self.action!r}")
        if not self.to:
            raise ValueError(f"{where}: no target ('to')")
        if self.action != "publish" and not self.method:
            raise ValueError(f"{where}: {self.action} needs a method")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"{where}: timeout must be positive")
        try:
            if self.match is None:
                match_fn: Callable[[Any], bool] = lambda message: True     # noqa: E731
            elif isinstance(self.match, Mapping):
                match_fn = compile_match(self.match)
            elif callable(self.match):
                match_fn = self.match
            else:
                raise ValueError(f"match must be a dict or a function, not {type(self.match).__name__}")
            if self.transform is None or callable(self.transform):
                transform_fn = self.transform
            elif isinstance(self.transform, Mapping):
                transform_fn = compile_transform(self.transform)
            else:
                raise ValueError(f"transform must be a dict or a function, not {type(self.transform).__name__}")
            templated = bool(_target_fields(self.to))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        object.__setattr__(self, "_match_fn", match_fn)
        object.__setattr__(self, "_transform_fn", transform_fn)
        object.__setattr__(self, "_templated", templated)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Rule:
        """A rule from plain data: ``name``, optional ``match`` / ``transform`` / ``timeout``,
        exactly one of ``call`` / ``call_any`` / ``send`` / ``publish`` naming the target,
        and ``method`` unless it publishes::

            {"name": "big", "match": {"qty": {"gt": 10000}}, "call": "risk-desk",
             "method": "review", "transform": {"set": {"priority": "high"}}}
        """
        if not isinstance(spec, Mapping):
            raise ValueError(f"a rule must be a table/dict, not {type(spec).__name__}")
        name = spec.get("name", "")
        actions = [a for a in ACTIONS if a in spec]
        if len(actions) != 1:
            raise ValueError(f"rule {name!r}: give exactly one of {', '.join(ACTIONS)}")
        known = {"name", "match", "transform", "timeout", "method", *ACTIONS}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"rule {name!r}: unknown keys {sorted(unknown)}")
        for key in ("match", "transform"):
            if key in spec and not isinstance(spec[key], Mapping):
                raise ValueError(f"rule {name!r}: {key} must be a table/dict in a data rule")
        action = actions[0]
        return cls(name=name, to=spec[action], action=action, method=spec.get("method", ""),
                   match=spec.get("match"), transform=spec.get("transform"), timeout=spec.get("timeout"))

    def matches(self, message: Any) -> bool:
        return self._match_fn(message)

    async def prepare(self, message: Any) -> tuple[str, Any]:
        """The target name and the message this rule delivers."""
        out = message
        if self._transform_fn is not None:
            out = self._transform_fn(message)
            if inspect.isawaitable(out):
                out = await out
        target = self.to
        if self._templated:
            if not isinstance(out, Mapping):
                raise NoRoute(f"rule {self.name!r}: target {self.to!r} needs a dict message")
            try:
                target = self.to.format_map(out)
            except (KeyError, IndexError, AttributeError, ValueError) as exc:
                raise NoRoute(f"rule {self.name!r}: cannot fill target {self.to!r} from the message ({exc!r})") from None
        return target, out


def _as_rule(rule: Rule | Mapping[str, Any]) -> Rule:
    return rule if isinstance(rule, Rule) else Rule.from_dict(rule)


# -- the agent ------------------------------------------------------------------------------

class Mediator(Agent):
    """A broker agent routing by content. Configure with arguments or, for
    ``python -m mesh.node --agent module:MyMediator``, with class attributes::

        class OrderDesk(Mediator):
            mode = "first"
            rules = ({"name": "big", "match": {"qty": {"gt": 10000}}, "call": "risk-desk", "method": "review"},
                     {"name": "rest", "call_any": "exec", "method": "submit"})

    A subclass can also feed it from pub/sub: ``@mesh.on("orders.#")`` then ``self.post(payload)``.
    """

    capabilities: ClassVar[tuple[str, ...]] = ("mediator",)
    mode: str = "first"                  # class-level defaults; arguments win
    rules: ClassVar[Sequence[Rule | Mapping[str, Any]]] = ()
    default: ClassVar[Rule | Mapping[str, Any] | None] = None
    dead_letters_max: ClassVar[int] = 1000
    max_in_flight: int = 1024

    def __init__(self, name: str | None = None, rules: Iterable[Rule | Mapping[str, Any]] | None = None, *,
                 mode: str | None = None, default: Rule | Mapping[str, Any] | None = None,
                 dead_letters_max: int | None = None, max_in_flight: int | None = None) -> None:
        super().__init__(name)
        cls = type(self)
        self._rules: list[Rule] = []
        self._default: Rule | None = None
        self.mode = cls.mode
        self._set_rules(rules if rules is not None else cls.rules, mode if mode is not None else cls.mode,
                        default if default is not None else cls.default)
        keep = dead_letters_max if dead_letters_max is not None else cls.dead_letters_max
        self.max_in_flight = max_in_flight if max_in_flight is not None else cls.max_in_flight
        if keep < 0 or self.max_in_flight < 1:
            raise ValueError("dead_letters_max must be >= 0 and max_in_flight >= 1")
        self._dead: deque[dict[str, Any]] = deque(maxlen=keep)
        self._posts: set[asyncio.Task] = set()
        self.counters: dict[str, int] = {"routed": 0, "failed": 0, "dead_letters": 0, "posted": 0,
                                         "overloaded": 0}
        self.rule_counters: dict[str, dict[str, int]] = {}

    # -- configuration ------------------------------------------------------------------

    def _set_rules(self, rules: Iterable[Rule | Mapping[str, Any]], mode: str,
                   default: Rule | Mapping[str, Any] | None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        compiled = [_as_rule(r) for r in rules]
        fallback = _as_rule(default) if default is not None else None
        names = [r.name for r in compiled] + ([fallback.name] if fallback else [])
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        # all validated: swap in one step, so a bad configuration leaves the old one in force
        self._rules, self._default, self.mode = compiled, fallback, mode

    def add_rule(self, rule: Rule | Mapping[str, Any], index: int | None = None) -> None:
        """Insert a rule (at the end by default)."""
        rule = _as_rule(rule)
        if any(r.name == rule.name for r in self._rules) or (self._default and self._default.name == rule.name):
            raise ValueError(f"a rule named {rule.name!r} exists")
        self._rules.insert(len(self._rules) if index is None else index, rule)

    @rpc
    def configure(self, config: Mapping[str, Any]) -> int:
        """Replace the rules from data: ``{"mode": "first", "rules": [...], "default": {...}}``.
        Returns how many rules are in force. Invalid data raises and changes nothing."""
        if not isinstance(config, Mapping) or set(config) - {"mode", "rules", "default"}:
            raise ValueError("configure takes {'mode', 'rules', 'default'}")
        self._set_rules(config.get("rules", ()), config.get("mode", self.mode), config.get("default"))
        return len(self._rules)

    @rpc
    def describe(self) -> dict[str, Any]:
        """The rules in force, in order, as data (functions shown by name)."""
        def show(r: Rule) -> dict[str, Any]:
            def data(x: Any) -> Any:
                return dict(x) if isinstance(x, Mapping) else (getattr(x, "__name__", repr(x)) if x else None)
            return {"name": r.name, "action": r.action, "to": r.to, "method": r.method,
                    "match": data(r.match), "transform": data(r.transform)}
        return {"mode": self.mode, "rules": [show(r) for r in self._rules],
                "default": show(self._default) if self._default else None}

    # -- routing ------------------------------------------------------------------------

    def select(self, message: Any) -> list[Rule]:
        """The rules that route ``message``: the first match, every match (mode "all"), or
        the default rule; empty if none."""
        chosen: list[Rule] = []
        for rule in self._rules:
            try:
                hit = rule.matches(message)
            except Exception as exc:      # a predicate's bug must not stop routing by the others
                self._count(rule, "match_errors")
                log.debug("rule %s: matcher raised %r", rule.name, exc)
                continue
            if hit:
                chosen.append(rule)
                if self.mode == "first":
                    break
        if not chosen and self._default is not None:
            chosen.append(self._default)
        return chosen

    @rpc
    async def route(self, message: Any) -> Any:
        """Route ``message`` and answer with the result: the target's (mode "first"), or
        ``{rule: result}`` (mode "all"). Raises NoRoute when nothing routes it, or the
        target's error (every target was still tried in mode "all")."""
        rules = self.select(message)
        if not rules:
            self._dead_letter(message, "no rule matched")
            raise NoRoute(f"mediator {self.name}: no rule matched the message")
        if self.mode == "first":
            return await self._deliver(rules[0], message)
        results = await asyncio.gather(*(self._deliver(r, message) for r in rules), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return {rule.name: result for rule, result in zip(rules, results)}

    @rpc
    def post(self, message: Any) -> None:
        """One-way: accept ``message`` now, route it in the background. A failure is counted
        and the message kept as a dead letter. Raises Overloaded when ``max_in_flight``
        posts are already being routed."""
        if len(self._posts) >= self.max_in_flight:
            self.counters["overloaded"] += 1
            raise Overloaded(f"mediator {self.name}: {self.max_in_flight} posts in flight")
        self.counters["posted"] += 1
        task = asyncio.get_running_loop().create_task(self._route_posted(message))
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)

    async def drain(self) -> None:
        """Wait until every post accepted so far has been routed (or has failed)."""
        while self._posts:
            await asyncio.gather(*self._posts, return_exceptions=True)

    async def _route_posted(self, message: Any) -> None:
        try:
            await self.route(message)
        except NoRoute:
            pass                          # already a dead letter
        except Exception as exc:
            self._dead_letter(message, f"{type(exc).__name__}: {exc}")

    async def _deliver(self, rule: Rule, message: Any) -> Any:
        self._count(rule, "matched")
        try:
            target, out = await rule.prepare(message)
            if rule.action == "call":
                result = await self.call(target, rule.method, out, timeout=rule.timeout)
            elif rule.action == "call_any":
                result = await self.call_any(target, rule.method, out, timeout=rule.timeout)
            elif rule.action == "send":
                result = await self.send(target, rule.method, out)
            else:
                result = await self.publish(target, out)
        except Exception:
            self._count(rule, "failed")
            self.counters["failed"] += 1
            raise
        self._count(rule, "ok")
        self.counters["routed"] += 1
        return result

    # -- bookkeeping ----------------------------------------------------------------------

    def _count(self, rule: Rule, what: str) -> None:
        per = self.rule_counters.get(rule.name)
        if per is None:
            per = self.rule_counters[rule.name] = {"matched": 0, "ok": 0, "failed": 0, "match_errors": 0}
        per[what] += 1

    def _dead_letter(self, message: Any, reason: str) -> None:
        self.counters["dead_letters"] += 1
        self._dead.append({"message": message, "reason": reason})
        log.debug("mediator %s: dead letter (%s)", self.name, reason)

    @rpc
    def stats(self) -> dict[str, Any]:
        """Totals (routed, failed, dead_letters, posted, overloaded, in_flight) and, per rule,
        matched / ok / failed / match_errors."""
        return {**self.counters, "in_flight": len(self._posts),
                "rules": {name: dict(c) for name, c in self.rule_counters.items()}}

    @rpc
    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent dead letters (oldest first): message and reason."""
        items = list(self._dead)
        return items[-limit:] if limit > 0 else []

    async def on_stop(self) -> None:
        # posts still routing have no one to answer; stop them with the agent
        for task in list(self._posts):
            task.cancel()
        if self._posts:
            await asyncio.gather(*self._posts, return_exceptions=True)
