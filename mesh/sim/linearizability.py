"""Check that a recorded history of key-value operations is linearizable.

    h = History()                                   # or History(clock=lambda: world.now_ms)
    i = h.invoke("c1", "put", "k", 3, time=10)      # returns the op id
    h.ok(i, time=14)                                # or h.fail(i, ...), h.info(i, ...), nothing
    j = h.invoke("c2", "get", "k", time=12)
    h.ok(j, result=3, time=20)
    res = check(h, "kv", timeout_s=10.0)            # res.ok, res.linearization, res.explanation

Theory of operation
-------------------
**What is checked.** Clients invoke operations on a replicated store and, usually, hear back.
Each operation therefore has a *window*: from its invocation to its completion. The history
is *linearizable* (Herlihy & Wing, 1990) if every operation can be given one instant inside
its window at which it took effect, such that running the operations one at a time in the
order of those instants, against a single copy of the store (the *model*), gives every
result the clients saw. Two consequences: an operation that completed before another was
invoked must come first ("real-time order"), and operations whose windows overlap may come
in either order. It is the strongest single-object guarantee and the one ``node.kv`` claims.

**Outcomes.** An operation is recorded with :meth:`History.invoke` and closed with one of:

- :meth:`History.ok` -- it completed with this result: it took effect, inside its window;
- :meth:`History.fail` -- it certainly did *not* take effect (refused before it was sent,
  e.g. ``NotLeader`` from the local node): it is left out of the check;
- :meth:`History.info`, or nothing at all -- the outcome is unknown (the client timed out,
  the connection broke, the client crashed). The operation may have taken effect at any
  instant after its invocation -- also long after the client gave up, when a delayed message
  arrives -- or never. Its result is unconstrained. This is Jepsen's ``:info``.

**The search (Wing & Gong, 1993; Lowe, 2017; Horn & Kroening, 2015).** The operations of
one history become a list of events sorted by time: a *call* at each invocation and a
*return* at each completion (unknown outcomes have no return). The search walks the list
from the front. A call that appears before the first return still in the list belongs to an
operation that may take effect next: try it on the model; if the model accepts the result,
*linearize* it (unlink its call and return from the list, push it on a stack) and restart
from the front. Reaching a return means its operation is not yet linearized although it has
already completed: this branch is dead, so pop the last choice, relink it and try the next
candidate. The history is linearizable when no returns are left; it is not when the stack
is empty at a dead end. The list is doubly linked and relinking is the exact undo of
unlinking (Knuth's dancing links), so backtracking costs O(1), and the search is a loop
with an explicit stack -- no recursion, however long the history.

**Memoization.** Two branches that have linearized the *same set* of operations and left the
model in the *same state* have identical futures, whatever order got them there. Each
(set, state) pair reached is remembered -- the set as an integer bitset -- and a branch that
reaches a remembered pair is cut (Lowe). This turns the factorial search into one bounded by
the number of distinct (set, state) pairs, which for real histories (a few concurrent
clients per key) is small. Model states must therefore be hashable.

**Unknown outcomes in the search.** An unknown operation has no return, so nothing forces
it; it is applied *just in time*: a move of the search is "a run of zero or more pending
unknown operations, then one known operation", runs tried shortest first, the empty run
before any. (Unknown operations after the last known one can always be dropped, so nothing
is lost.)

**Cuts.** Plain WGL lets every pending unknown write double the states, and every read
concurrent with others multiply the orders tried. Each of these cuts is sound on its own
(each keeps at least one linearization whenever there is one), and together they make
those cases cheap:

- *dominance*: a node (known set K, unknown set U, state s) is cut when a node with the
  same K and s and a *subset* of U was reached -- that one can make every move this one can,
  since the extra unknown operations may simply still be pending (Lowe's memo is U' = U);
- *read-only first*: a known operation that never changes the state (a read, a cas or
  delete that answered False) and fits the state now is linearized at once, with no
  alternative tried: moving it to the front of any order that has it later changes nothing;
- *blind* unknown operations (a put: its effect ignores the state) are tried only first in
  a run -- after other unknown operations they would leave the same state, with more used;
- *effect classes*: of pending unknown operations with the same effect, only the latest
  invoked is tried -- an earlier one can stand in for it in any linearization, not conversely;
- the ``kv`` model merges the values no operation can tell apart (written but never read nor
  compared by a cas) into one, so unknown writes of them lead to one state, not many.

The first needs nothing from the model; the others use optional model methods (``Model``).

**P-compositionality.** Linearizability is *local* (Herlihy & Wing): a history is
linearizable iff its restriction to each object is. The model's ``partition`` splits the
history into independent sub-histories -- one per key for ``"kv"`` -- and each is searched
alone. The per-key searches are short, so a history of thousands of operations over a few
dozen keys checks in seconds where one search over all of it would never finish. The
per-key orders are merged into one global order: each operation gets the earliest instant
its key's order allows (the latest invocation so far along that order, which never passes
its own completion), and all operations are sorted by those instants.

**Timestamps.** Times are numbers on one clock (the simulator's virtual milliseconds, or one
``time.monotonic`` per machine); the unit does not matter. *Equal times are concurrent*:
an operation that completes at ``t`` and one invoked at ``t`` may be linearized in either
order. Only ``a.completed_at < b.invoked_at`` (strictly) puts ``a`` before ``b``. This is
the safe choice for coarse clocks -- a millisecond clock cannot tell which of two events in
the same millisecond came first, and the checker must not report a violation the recording
cannot prove. (Porcupine makes the same choice: calls sort before returns at equal times.)

**Explanations.** When a key's history is not linearizable, the checker looks for the
smallest failing *prefix*: the history cut at time ``T`` (operations that completed by
``T`` keep their results; operations still running at ``T`` become unknown; later ones are
dropped). Every prefix of a linearizable history is linearizable, so a binary search over
the completion times finds the first completion after which no order exists; the operation
completing there is the one the report blames, and the model says why (for ``kv``, the
values the key could hold whenever that operation could have taken effect). The report
also lists the operations around it and the longest legal order the search found.

**Budgets.** A search can still be exponential (many concurrent unknown compare-and-sets
forming chains, or many concurrent clients on one key), so :func:`check` takes a wall-clock
budget (``timeout_s``) and a bound on the states remembered per key (``max_states``); when
either runs out it returns ``timed_out=True`` with no verdict rather than hanging or
exhausting memory. Explaining a violation gets its own budget of ``timeout_s`` once the
verdict is known, so a check takes at most about twice ``timeout_s``.

**Models** are pluggable: anything with ``init()``, ``step(state, op) -> (ok, state)`` and
``partition(ops) -> {label: ops}`` (:class:`Model`). ``"kv"`` is a map of keys to values
(``put``, ``get``, ``delete``, ``cas``) partitioned by key; ``"register"`` is one register
(``write``/``put``, ``read``/``get``, ``cas``) that ignores keys.
"""
from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass, field, replace
from time import monotonic
from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping, Protocol, Sequence

from mesh.errors import MeshError

log = logging.getLogger(__name__)

__all__ = [
    "CheckResult", "History", "HistoryError", "KVModel", "MODELS", "Model", "Op", "Outcome",
    "RegisterModel", "UNOBSERVED", "check", "freeze",
]

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_STATES = 2_000_000   # remembered (set, state) pairs per key: ~150-400 bytes each
_CLOCK_CHECK_EVERY = 1024        # search steps between two looks at the wall clock
_REPORT_MAX_OPS = 16             # operations listed in an explanation
_REPORT_MAX_STATES = 8           # rejected model states remembered per blamed operation


class HistoryError(MeshError, ValueError):
    """The history itself is malformed: an unknown op id, an op completed twice, a completion
    before its invocation, an operation the model does not know, a result of the wrong type."""


class Outcome(enum.Enum):
    """How an operation ended, as far as its client knows."""

    PENDING = "pending"   # invoked, nothing heard (yet): unknown outcome if it stays so
    OK = "ok"             # completed with a result: took effect inside its window
    FAIL = "fail"         # certainly did not take effect
    INFO = "info"         # gave up waiting: unknown outcome


_UNKNOWN = (Outcome.PENDING, Outcome.INFO)


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a history. ``id`` is its index in the history.

    ``value`` is what ``put``/``write`` store and the *new* value of a ``cas``; ``expected``
    is the value a ``cas`` compares with (None: the key must be absent). ``completed_at`` is
    the time of the ok/fail/info record; for an unknown outcome it is informative only, the
    operation may take effect after it. ``result`` matters only when ``outcome`` is OK.
    """

    id: int
    client: str
    kind: str
    key: Hashable
    value: Any
    expected: Any
    invoked_at: float
    completed_at: float | None = None
    outcome: Outcome = Outcome.PENDING
    result: Any = None

    @property
    def known(self) -> bool:
        """Completed with a result: it took effect inside its window and its result binds."""
        return self.outcome is Outcome.OK

    @property
    def unknown(self) -> bool:
        """May have taken effect at any time after its invocation, or never."""
        return self.outcome in _UNKNOWN


def _check_time(t: Any, what: str) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or math.isnan(t):
        raise HistoryError(f"{what}: time must be a number, got {t!r}")
    return t


class History:
    """A record of operations with their windows and outcomes, in any order of recording.

    ``time`` may be left out when the history has a ``clock`` (say ``time.monotonic`` or the
    simulated world's ``lambda: world.now_ms``). Recording need not follow time order (the
    checker sorts), but each completion must not precede its own invocation.
    """

    __slots__ = ("_ops", "_clock")

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._ops: list[Op] = []
        self._clock = clock

    def _now(self, time: float | None, what: str) -> float:
        if time is None:
            if self._clock is None:
                raise HistoryError(f"{what}: no time given and the history has no clock")
            time = self._clock()
        return _check_time(time, what)

    def invoke(self, client: str, op: str, key: Hashable = None, value: Any = None, *,
               expected: Any = None, time: float | None = None) -> int:
        """Record the invocation of ``op`` (``put``, ``get``, ``delete``, ``cas``...) and
        return its id. For ``cas``, ``expected`` is compared and ``value`` is the new value."""
        if not isinstance(op, str) or not op:
            raise HistoryError(f"invoke: op must be a non-empty str, got {op!r}")
        t = self._now(time, f"invoke {op}")
        op_id = len(self._ops)
        self._ops.append(Op(op_id, str(client), op, key, value, expected, t))
        return op_id

    def _close(self, op_id: int, outcome: Outcome, result: Any, time: float | None) -> None:
        if not isinstance(op_id, int) or not 0 <= op_id < len(self._ops):
            raise HistoryError(f"{outcome.value}: no operation with id {op_id!r}")
        op = self._ops[op_id]
        if op.outcome is not Outcome.PENDING:
            raise HistoryError(f"{outcome.value}: operation #{op_id} already ended "
                               f"({op.outcome.value})")
        t = self._now(time, f"{outcome.value} #{op_id}")
        if t < op.invoked_at:
            raise HistoryError(f"{outcome.value}: operation #{op_id} would end at {t!r}, "
                               f"before its invocation at {op.invoked_at!r}")
        self._ops[op_id] = replace(op, completed_at=t, outcome=outcome, result=result)

    def ok(self, op_id: int, result: Any = None, *, time: float | None = None) -> None:
        """The operation completed with ``result``: it took effect inside its window."""
        self._close(op_id, Outcome.OK, result, time)

    def fail(self, op_id: int, *, time: float | None = None) -> None:
        """The operation certainly did not take effect (refused before it left the client)."""
        self._close(op_id, Outcome.FAIL, None, time)

    def info(self, op_id: int, *, time: float | None = None) -> None:
        """The outcome is unknown (timeout, lost connection): it may take effect any time
        after its invocation, or never. Leaving an operation open means the same."""
        self._close(op_id, Outcome.INFO, None, time)

    @property
    def ops(self) -> tuple[Op, ...]:
        return tuple(self._ops)

    def __len__(self) -> int:
        return len(self._ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(tuple(self._ops))

    def __getitem__(self, op_id: int) -> Op:
        return self._ops[op_id]

    def to_records(self) -> list[dict[str, Any]]:
        """Plain dicts (JSON- and msgpack-friendly when keys and values are), one per op."""
        return [{"id": o.id, "client": o.client, "op": o.kind, "key": o.key, "value": o.value,
                 "expected": o.expected, "invoked_at": o.invoked_at,
                 "completed_at": o.completed_at, "outcome": o.outcome.value,
                 "result": o.result} for o in self._ops]

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> History:
        """The inverse of :meth:`to_records`; ids are reassigned in record order."""
        h = cls()
        for r in records:
            i = h.invoke(r["client"], r["op"], r.get("key"), r.get("value"),
                         expected=r.get("expected"), time=r["invoked_at"])
            try:
                outcome = Outcome(r.get("outcome", "pending"))
            except ValueError:
                raise HistoryError(f"record {r.get('id', i)!r}: unknown outcome "
                                   f"{r.get('outcome')!r}") from None
            if outcome is not Outcome.PENDING:
                h._close(i, outcome, r.get("result") if outcome is Outcome.OK else None,
                         r["completed_at"])
        return h


# -- models ------------------------------------------------------------------------------------


class Model(Protocol):
    """A sequential specification the history is checked against.

    ``step`` must not mutate ``state`` (the search keeps old states to backtrack to) and
    states must be hashable (they are memoized). For an operation with an unknown outcome
    (``op.unknown``) ``step`` must ignore ``op.result`` and only say whether the operation can
    take effect in ``state`` and what it leaves. ``partition`` receives the operations that
    may have taken effect (failed ones are already left out); it may drop operations that
    cannot matter (an unknown read changes nothing), and raises :class:`HistoryError` for
    operations it does not know. ``name`` appears in reports.

    Optional methods, used when present (see :class:`KVModel` for all of them):

    - ``describe(op) -> str``: the op in a report, e.g. ``"get k -> 5"``;
    - ``explain(op, rejected, ops) -> str``: why ``op`` cannot be linearized, given the
      states ``step`` refused it in and the whole partition ``ops``;
    - ``abstract(ops) -> list[Op]``: the ops as the search should see them (same order and
      ids), e.g. with values no operation can tell apart made equal;
    - ``read_only(op) -> bool``: this known-outcome op leaves the state unchanged in every
      state it fits (so when it fits now it is linearized at once, without branching);
    - ``blind(op) -> bool``: this unknown-outcome op leaves the same state whatever the
      state before it;
    - ``effect_class(op) -> Hashable``: unknown-outcome ops of equal classes have the same
      effect in every state.

    The last four only make the search faster; a wrong answer from them makes it wrong.
    """

    name: str

    def init(self) -> Hashable: ...

    def step(self, state: Any, op: Op) -> tuple[bool, Any]: ...

    def partition(self, ops: Sequence[Op]) -> dict[Hashable, list[Op]]: ...


@dataclass(frozen=True, slots=True)
class _FrozenDict:
    items: frozenset

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in self.items) + "}"


_SCALARS = (type(None), bool, int, float, str, bytes)


def freeze(value: Any) -> Hashable:
    """A hashable stand-in for ``value`` that compares equal where the value would: lists and
    tuples become tuples (a msgpack round trip turns one into the other), dicts and sets
    become frozen. Model states hold frozen values so they can be memoized."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return _FrozenDict(frozenset((freeze(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze(v) for v in value)
    if isinstance(value, bytearray):
        return bytes(value)
    hash(value)   # anything else must be hashable as it is
    return value


class _Unobserved:
    __slots__ = ()

    def __repr__(self) -> str:
        return "a value nothing reads"


UNOBSERVED = _Unobserved()
"""What the kv model's search holds in place of a value that no operation can tell apart."""


def _fmt_key(key: Hashable) -> str:
    return key if isinstance(key, str) else repr(key)


class KVModel:
    """A map from keys to values; a missing key reads as None. Partitioned by key, so the
    state of one partition is just the key's current value (None: absent).

    - ``put(key, value) -> None`` (the recorded result is ignored);
    - ``get(key) -> value or None``;
    - ``delete(key) -> bool``: whether the key existed;
    - ``cas(key, expected, new) -> bool``: sets ``new`` iff the current value equals
      ``expected`` (None: the key is absent).

    For ``delete`` and ``cas`` an ok result of None means "completed, result not recorded":
    the operation took effect but its boolean is not checked.
    """

    name = "kv"
    KINDS: dict[str, str] = {"put": "put", "get": "get", "delete": "delete", "cas": "cas"}

    def init(self) -> Hashable:
        return None

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        kind = self.KINDS[op.kind]
        if kind == "get":
            return (op.unknown or freeze(op.result) == state), state
        if kind == "put":
            return True, freeze(op.value)
        if kind == "cas":
            hit = state == freeze(op.expected)
            if op.known and op.result is not None and bool(op.result) != hit:
                return False, state
            return True, (freeze(op.value) if hit else state)
        # delete
        if op.known and op.result is not None and bool(op.result) != (state is not None):
            return False, state
        return True, None

    def abstract(self, ops: Sequence[Op]) -> list[Op]:
        """Optional hook: the ops as the search should see them. A value that no known read
        returns and no cas compares with is told apart from other such values by nothing
        (every check is "equal to this value" or "absent"), so all become :data:`UNOBSERVED`
        and the states they lead to merge."""
        mentioned = set()
        for op in ops:
            kind = self.KINDS[op.kind]
            if kind == "get" and op.known:
                mentioned.add(freeze(op.result))
            elif kind == "cas":
                mentioned.add(freeze(op.expected))
        out = []
        for op in ops:
            if self.KINDS[op.kind] in ("put", "cas"):
                value = freeze(op.value)
                if value is not None and value not in mentioned:
                    op = replace(op, value=UNOBSERVED)
            out.append(op)
        return out

    def effect_class(self, op: Op) -> Hashable:
        """Optional hook: unknown-outcome ops with equal classes have the same effect."""
        return (self.KINDS[op.kind], freeze(op.value), freeze(op.expected))

    def read_only(self, op: Op) -> bool:
        """Optional hook: ``op`` (of known outcome) leaves the state as it found it in every
        state it fits: a read, a cas or delete that answered False."""
        kind = self.KINDS[op.kind]
        return kind == "get" or (kind in ("cas", "delete") and op.result is False)

    def blind(self, op: Op) -> bool:
        """Optional hook: ``op`` (of unknown outcome) leaves the same state whatever the state
        before it (a put; a delete whose answer is unknown). The search uses it to try such
        ops only at the start of a run of unknown ops."""
        kind = self.KINDS[op.kind]
        return kind == "put" or (kind == "delete" and op.unknown)

    def _label(self, op: Op) -> Hashable:
        return op.key

    def partition(self, ops: Sequence[Op]) -> dict[Hashable, list[Op]]:
        parts: dict[Hashable, list[Op]] = {}
        for op in ops:
            kind = self.KINDS.get(op.kind)
            if kind is None:
                raise HistoryError(f"#{op.id}: model {self.name!r} has no operation "
                                   f"{op.kind!r} (it knows {', '.join(sorted(self.KINDS))})")
            if op.outcome is Outcome.FAIL:
                continue
            if op.known and kind in ("cas", "delete") and not isinstance(op.result,
                                                                        (bool, type(None))):
                raise HistoryError(f"#{op.id}: {op.kind} must complete with a bool (or None "
                                   f"if not recorded), got {op.result!r}")
            if kind == "get" and op.unknown:
                continue   # an unknown read constrains nothing and changes nothing
            label = self._label(op)
            try:
                parts.setdefault(label, []).append(op)
            except TypeError:
                raise HistoryError(f"#{op.id}: key {op.key!r} is not hashable") from None
        return parts

    # -- reports -------------------------------------------------------------------------

    def describe(self, op: Op) -> str:
        kind = self.KINDS.get(op.kind, op.kind)
        key = _fmt_key(op.key)
        res = repr(op.result) if op.known else "?"
        if kind == "put":
            return f"{op.kind} {key} {op.value!r}"
        if kind == "get":
            return f"{op.kind} {key} -> {res}"
        if kind == "delete":
            return f"{op.kind} {key} -> {res}"
        return f"{op.kind} {key} {op.expected!r}->{op.value!r} -> {res}"

    def _writes(self, op: Op, value: Hashable) -> bool:
        kind = self.KINDS[op.kind]
        if kind == "put" or kind == "cas":
            return freeze(op.value) == value and not (kind == "cas" and op.known
                                                      and op.result is False)
        return kind == "delete" and value is None

    def _held(self, rejected: Sequence[Any], ops: Sequence[Op]) -> str:
        parts = []
        for state in rejected:
            if state is None or state is UNOBSERVED:
                parts.append("absent" if state is None else repr(state))
                continue
            writers = [f"#{o.id}" for o in ops if self._writes(o, state)]
            by = f" (written by {', '.join(writers[:3])}{', ...' if len(writers) > 3 else ''})"
            parts.append(f"{state!r}{by if writers else ''}")
        return " or ".join(parts)

    def explain(self, op: Op, rejected: Sequence[Any], ops: Sequence[Op]) -> str:
        kind = self.KINDS[op.kind]
        key = _fmt_key(op.key)
        if not rejected:
            return (f"its result fits the values {key} could hold, but no order lets it "
                    f"take effect before it completed and still serve the other operations")
        held = self._held(rejected, ops)
        if kind == "get":
            want = freeze(op.result)
            if want is None:
                return (f"{key} was never absent when it could take effect: "
                        f"it held only {held}")
            others = [o for o in ops if o.id != op.id and self._writes(o, want)]
            if not others:
                return (f"no put of {op.result!r} could have preceded it: nothing in this "
                        f"history writes {op.result!r} to {key}")
            if all(o.invoked_at > op.completed_at for o in others):
                ids = ", ".join(f"#{o.id}" for o in others[:3])
                return (f"no put of {op.result!r} could have preceded it: the writes of "
                        f"{op.result!r} ({ids}) were invoked only after it completed")
            return (f"no put of {op.result!r} could have preceded it: when it could take "
                    f"effect {key} held only {held}")
        if kind == "cas":
            if op.result:
                return (f"it succeeded, but {key} was never {op.expected!r} when it could "
                        f"take effect: it held only {held}")
            return (f"it failed, but {key} held {op.expected!r} every time it could take "
                    f"effect")
        if kind == "delete":
            if op.result:
                return f"it found {key}, but {key} was absent every time it could take effect"
            return f"it found {key} absent, but {key} held {held} whenever it could take effect"
        return f"{key} held only {held} when it could take effect"


class RegisterModel(KVModel):
    """One register: ``write``/``put``, ``read``/``get``, ``cas``. Keys are ignored: the
    whole history is one partition (use ``"kv"`` for a register per key)."""

    name = "register"
    KINDS = {"write": "put", "put": "put", "read": "get", "get": "get", "cas": "cas"}

    def _label(self, op: Op) -> Hashable:
        return None


MODELS: dict[str, Callable[[], Model]] = {"kv": KVModel, "register": RegisterModel}
"""Models by name, as :func:`check` accepts them; add yours or pass an instance."""


# -- the search --------------------------------------------------------------------------------

_LINEARIZABLE, _VIOLATION, _GAVE_UP = "linearizable", "violation", "gave up"


@dataclass(slots=True)
class _SearchResult:
    status: str
    order: list[int] | None = None     # indices into the searched ops, in linearized order
    states: int = 0
    reason: str = ""                   # why it gave up
    deepest: list[int] = field(default_factory=list)   # longest legal order (when watching)
    rejected: dict[int, list[Any]] = field(default_factory=dict)  # watched op -> states


class _GiveUp(Exception):
    """Internal: a budget ran out in the middle of the search."""


def _search(ops: Sequence[Op], model: Model, deadline: float, max_states: int,
            watch: frozenset[int] = frozenset()) -> _SearchResult:
    """WGL over one partition. ``watch`` (indices into ``ops``) turns on the bookkeeping the
    explanation needs: the states each watched op was refused in (concrete states: the
    model's ``abstract`` hook is not used then), and the deepest order.

    A node of the search is (K, U, s): the known-outcome ops linearized (bitset K), the
    unknown-outcome ops taken to have happened (bitset U) and the model state s. Unknown ops
    are applied only *just in time*: a move is "a run of zero or more pending unknown ops,
    then one known op". That loses nothing -- unknown ops after the last known op can always
    be dropped -- and lets the runs be tried shortest first, the empty run before any.
    """
    events = []
    for i, op in enumerate(ops):
        events.append((op.invoked_at, 0, i))       # calls sort before returns at equal times:
        if op.known:                               # equal times are concurrent
            events.append((op.completed_at, 1, i))
    events.sort()
    n_entries = len(events)
    tail = n_entries + 1
    # entries 1..n_entries in time order; 0 is the head sentinel, tail the tail sentinel.
    # Known ops' calls and returns are unlinked when linearized; unknown ops' calls stay
    # linked (U says which have happened).
    nxt = list(range(1, n_entries + 2)) + [tail]
    prv = [0] + list(range(0, n_entries + 1))
    is_call = [False] * (n_entries + 2)
    op_of = [0] * (n_entries + 2)
    ret_of = [0] * (n_entries + 2)                 # call entry -> its return entry (0: none)
    call_entry = [0] * len(ops)
    for e, (_, kind, i) in enumerate(events, start=1):
        op_of[e] = i
        if kind == 0:
            is_call[e] = True
            call_entry[i] = e
        else:
            ret_of[call_entry[i]] = e
    abstract = getattr(model, "abstract", None)
    if abstract is not None and not watch:
        ops = abstract(ops)
    bit = [1 << i for i in range(len(ops))]
    unknown = [op.unknown for op in ops]
    is_blind = getattr(model, "blind", None)
    blind = [bool(u and is_blind is not None and is_blind(op)) for u, op in zip(unknown, ops)]
    is_read_only = getattr(model, "read_only", None)
    read_only = [bool(op.known and is_read_only is not None and is_read_only(op)) for op in ops]
    effect_class = getattr(model, "effect_class", None)
    same_as = [effect_class(op) if u and effect_class is not None else i
               for i, (u, op) in enumerate(zip(unknown, ops))]
    remaining = sum(1 for op in ops if op.known)

    step = model.step
    # (K, s) -> the U sets it was reached with, kept minimal (an antichain). A node
    # (K, U, s) is *dominated* by a node seen with the same K and s and a U' within U: from
    # there every move of the dominated node is possible too (the ops of U - U' are merely
    # still pending, and may stay so). So a dominated node reaches the end only if its
    # dominator does, in as few moves, and skipping it loses nothing. With U' = U this is
    # Lowe's memo; the rest is what keeps unknown outcomes from multiplying states by 2^|U|.
    seen: dict[tuple[int, Any], list[int]] = {}
    budget = [0, 0]                                # [steps since the last clock look, states]
    watching = bool(watch)
    deepest: list[int] = []
    rejected: dict[int, list[Any]] = {}

    def tick() -> None:
        budget[0] += 1
        if budget[0] >= _CLOCK_CHECK_EVERY:
            budget[0] = 0
            if monotonic() > deadline:
                raise _GiveUp("time budget spent")

    def count_state() -> None:
        budget[1] += 1
        if budget[1] > max_states:
            raise _GiveUp(f"state budget ({max_states}) spent")

    def dominated(key: tuple[int, Any], u_set: int) -> bool:
        minimal = seen.get(key)
        if minimal is None:
            seen[key] = [u_set]
            return False
        for u in minimal:
            if u & u_set == u:
                return True
        minimal[:] = [u for u in minimal if u & u_set != u_set]
        minimal.append(u_set)
        return False

    def open_node(k_set: int, u_set: int, state: Any, via: int) -> list:
        """A frame for node (K, U, s): the ops that may go next are the calls before the
        first return still linked. Its moves are enumerated lazily (``next_move``)."""
        calls: list[int] = []
        pending: list[int] = []
        e = nxt[0]
        while e != tail and is_call[e]:
            i = op_of[e]
            if not unknown[i]:
                calls.append(i)
            elif not u_set & bit[i]:
                pending.append(i)
            e = nxt[e]
        # A read-only op (one that never changes the state: a read, a failed cas) that may
        # go next and fits the state can go first in any order that places it later -- it
        # changes nothing for the others, and nothing that may go next completed before it
        # began -- so it is the only move worth trying here.
        for i in calls:
            if read_only[i]:
                tick()
                if step(state, ops[i])[0]:
                    calls = [i]
                    pending = []
                    break
        #       K      calls  runs                  run, call, pending, via, run to via
        return [k_set, calls, [(u_set, state, ())], 0, 0, pending, via, ()]

    def close_runs(frame: list) -> None:
        """Every state a run of pending unknown ops can reach, fewest ops first, leaving out
        runs dominated by one that reaches the same state with a subset of its ops.

        Two cuts keep this small. A *blind* op (its effect ignores the state) is tried only
        first in a run: after any run it would leave what it leaves alone, with more ops
        used. Unknown ops of one *effect class* (same effect, different invocation times)
        are interchangeable but for when they may start, so of those still pending only the
        latest invoked is tried: swapping it for an earlier one in any linearization gives
        another linearization (the earlier one fits wherever the later one did)."""
        runs, pending = frame[2], frame[5]
        u_set, state, _ = runs[0]
        minimal: dict[Any, list[int]] = {state: [u_set]}
        at = 0
        while at < len(runs):
            u0, s0, run = runs[at]
            classes = set()
            for i in reversed(pending):                  # latest invoked first
                b = bit[i]
                if u0 & b or (at and blind[i]):
                    continue
                cls = same_as[i]
                if cls in classes:
                    continue
                classes.add(cls)
                tick()
                ok, s1 = step(s0, ops[i])
                if not ok:
                    continue
                u1 = u0 | b
                known_u = minimal.get(s1)
                if known_u is None:
                    minimal[s1] = [u1]
                elif any(u & u1 == u for u in known_u):
                    continue
                else:
                    known_u[:] = [u for u in known_u if u & u1 != u1]
                    known_u.append(u1)
                count_state()
                runs.append((u1, s1, run + (i,)))
            at += 1

    def next_move(frame: list) -> tuple[int, int, int, Any, tuple[int, ...]] | None:
        """The next move from this frame not dead and not dominated: runs shortest first,
        and for each run the known calls in time order."""
        k_set, calls, runs = frame[0], frame[1], frame[2]
        ri, xi = frame[3], frame[4]
        try:
            while True:
                if xi == len(calls):
                    xi = 0
                    ri += 1
                    if ri == 1 and frame[5] and calls:
                        close_runs(frame)
                        frame[5] = ()
                    if ri >= len(runs):
                        return None
                if not calls:
                    return None
                i = calls[xi]
                xi += 1
                u_set, state, run = runs[ri]
                tick()
                ok, new_state = step(state, ops[i])
                if not ok:
                    if watching and i in watch:
                        refused_in = rejected.setdefault(i, [])
                        if len(refused_in) < _REPORT_MAX_STATES and state not in refused_in:
                            refused_in.append(state)
                    continue
                nk = k_set | bit[i]
                if not dominated((nk, new_state), u_set):
                    return i, nk, u_set, new_state, run
        finally:
            frame[3], frame[4] = ri, xi

    frames: list[list] = []
    try:
        frames.append(open_node(0, 0, model.init(), -1))
        while remaining:
            move = next_move(frames[-1])
            if move is None:
                # every move from here is dead or dominated: back up one
                if len(frames) == 1:
                    return _SearchResult(_VIOLATION, states=budget[1], deepest=deepest,
                                         rejected=rejected)
                e = call_entry[frames.pop()[6]]
                r = ret_of[e]                             # relink in reverse order
                nxt[prv[r]] = r
                prv[nxt[r]] = r
                nxt[prv[e]] = e
                prv[nxt[e]] = e
                remaining += 1
                continue
            i, nk, u_set, new_state, run = move
            count_state()
            e = call_entry[i]
            p, q = prv[e], nxt[e]                         # unlink the call ...
            nxt[p] = q
            prv[q] = p
            r = ret_of[e]                                 # ... and its return
            p, q = prv[r], nxt[r]
            nxt[p] = q
            prv[q] = p
            remaining -= 1
            node = open_node(nk, u_set, new_state, i)
            node[7] = run
            frames.append(node)
            if watching and len(frames) - 1 > len(deepest):
                deepest = [j for f in frames[1:] for j in (*f[7], f[6])]
    except _GiveUp as stop:
        return _SearchResult(_GAVE_UP, states=budget[1], reason=str(stop), deepest=deepest,
                             rejected=rejected)
    order = [j for f in frames[1:] for j in (*f[7], f[6])]
    return _SearchResult(_LINEARIZABLE, order=order, states=budget[1], deepest=deepest,
                         rejected=rejected)


# -- results and reports -----------------------------------------------------------------------


@dataclass(slots=True)
class CheckResult:
    """The verdict on a history.

    ``ok`` is True only for a proven linearizable history; when the search gave up
    (``timed_out``), ``ok`` is False and :attr:`verdict` is ``"unknown"``. ``linearization``
    lists the ids of the operations that took effect, in one legal order (unknown-outcome
    operations missing from it are ones that need not have happened; failed operations and
    unknown reads never appear). For a violation ``bad_key`` is the partition (key) that
    cannot be linearized and ``bad_ops`` the operations completing at the end of its smallest
    failing prefix -- the ones the explanation blames. ``checked_ops`` counts the operations
    searched (failed operations and unknown reads are left out before the search).
    """

    ok: bool
    linearization: list[int] | None
    explanation: str
    checked_ops: int
    states_explored: int
    timed_out: bool
    partitions: int = 0
    bad_key: Hashable | None = None
    bad_ops: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def verdict(self) -> str:
        if self.ok:
            return "linearizable"
        return "unknown" if self.timed_out else "not linearizable"

    def __bool__(self) -> bool:
        return self.ok


def _fmt_time(t: float | None) -> str:
    if t is None:
        return "?"
    return str(t) if isinstance(t, int) else format(t, ".10g")


def _describe(model: Model, op: Op) -> str:
    describe = getattr(model, "describe", None)
    what = describe(op) if describe else f"{op.kind} {op.key!r} {op.value!r} -> {op.result!r}"
    if op.known:
        return (f"#{op.id} {what} at [{_fmt_time(op.invoked_at)}, "
                f"{_fmt_time(op.completed_at)}] by {op.client}")
    return f"#{op.id} {what} at [{_fmt_time(op.invoked_at)}, ?) by {op.client} (unknown outcome)"


def _where(model: Model, label: Hashable) -> str:
    if isinstance(model, RegisterModel):
        return "the register"
    if isinstance(model, KVModel):
        return f"key {_fmt_key(label)}"
    return f"partition {label!r}"


def _prefix(ops: Sequence[Op], t: float) -> list[Op]:
    """The history as it stood at time ``t``: what completed by then keeps its result, what
    was still running becomes unknown, what had not started is dropped."""
    out = []
    for op in ops:
        if op.invoked_at > t:
            continue
        if op.known and op.completed_at > t:
            op = replace(op, outcome=Outcome.INFO, result=None)
        out.append(op)
    return out


def _explain(label: Hashable, ops: list[Op], model: Model, timeout_s: float,
             max_states: int, n_partitions: int) -> tuple[str, list[int], int]:
    """Text, blamed op ids and states explored for a partition known to be non-linearizable."""
    deadline = monotonic() + timeout_s
    states = 0
    times = sorted({op.completed_at for op in ops if op.known})

    def search_at(t: float, watch: frozenset[int] = frozenset()) -> tuple[list[Op], _SearchResult]:
        nonlocal states
        sub = model.partition(_prefix(ops, t)).get(label, [])
        res = _search(sub, model, deadline, max_states, watch)
        states += res.states
        return sub, res

    lo, hi = 0, len(times) - 1          # invariant: the prefix at times[hi] fails
    exact = True
    while lo < hi:
        mid = (lo + hi) // 2
        _, res = search_at(times[mid])
        if res.status == _VIOLATION:
            hi = mid
        elif res.status == _LINEARIZABLE:
            lo = mid + 1
        else:
            exact = False
            break
    t_bad = times[hi]
    sub = model.partition(_prefix(ops, t_bad)).get(label, [])
    blamed = [i for i, op in enumerate(sub) if op.known and op.completed_at == t_bad]
    _, res = search_at(t_bad, frozenset(blamed))

    lines = [f"not linearizable: {_where(model, label)} cannot be linearized"
             + (f" (the other {n_partitions - 1} partitions are not needed to show it)"
                if n_partitions > 1 else "")]
    if exact:
        lines.append(f"smallest failing prefix: the {len(sub)} operations (of {len(ops)}) "
                     f"invoked by t={_fmt_time(t_bad)}; the history is linearizable up to just "
                     f"before t={_fmt_time(t_bad)}, but not once this completes:")
    else:
        lines.append(f"(the search for the smallest failing prefix ran out of time; "
                     f"showing the prefix up to t={_fmt_time(t_bad)}, which fails)")
    explain = getattr(model, "explain", None)
    for i in blamed:
        op = sub[i]
        lines.append(f"  {_describe(model, op)}")
        if explain is not None and res.status == _VIOLATION:
            lines.append(f"  why: {explain(op, res.rejected.get(i, []), ops)}")
    bad = {sub[i].id for i in blamed}
    bad_ops = [sub[i] for i in blamed]
    first_invoke = min(op.invoked_at for op in bad_ops)
    concurrent = [op for op in sub if op.id not in bad
                  and (op.unknown or op.completed_at >= first_invoke)]
    before = sorted((op for op in sub if op.known and op.completed_at < first_invoke),
                    key=lambda o: (o.completed_at, o.id))[-3:]
    involved = sorted(before + concurrent, key=lambda o: (o.invoked_at, o.id))
    if involved:
        lines.append("ops involved (the last to complete before it, and those concurrent "
                     "with it):")
        for op in involved[:_REPORT_MAX_OPS]:
            lines.append(f"  {_describe(model, op)}")
        if len(involved) > _REPORT_MAX_OPS:
            lines.append(f"  ... and {len(involved) - _REPORT_MAX_OPS} more")
    if res.deepest:
        order = ", ".join(f"#{sub[i].id}" for i in res.deepest[:40])
        more = ", ..." if len(res.deepest) > 40 else ""
        lines.append(f"longest legal order found ({len(res.deepest)} ops): {order}{more}")
    if res.status == _GAVE_UP:
        lines.append(f"(the explaining search gave up: {res.reason})")
    return "\n".join(lines), sorted(bad), states


def _resolve(model: str | Model) -> Model:
    if isinstance(model, str):
        try:
            return MODELS[model]()
        except KeyError:
            raise HistoryError(f"no model named {model!r} (known: "
                               f"{', '.join(sorted(MODELS))})") from None
    return model


def _merge(orders: list[list[Op]]) -> list[int]:
    """One global order from per-partition orders (see "P-compositionality" above)."""
    keyed = []
    for part, order in enumerate(orders):
        point = -math.inf
        for pos, op in enumerate(order):
            point = max(point, op.invoked_at)
            keyed.append((point, part, pos, op.id))
    keyed.sort()
    return [k[3] for k in keyed]


def check(history: History | Iterable[Op], model: str | Model = "kv", *,
          timeout_s: float = DEFAULT_TIMEOUT_S, max_states: int = DEFAULT_MAX_STATES,
          explain: bool = True) -> CheckResult:
    """Is ``history`` linearizable with respect to ``model`` (a name in :data:`MODELS` or an
    instance)? Partitions are searched smallest first and the first violation ends the check.
    Gives up with ``timed_out=True`` after ``timeout_s`` of wall time or when one partition
    remembers more than ``max_states`` states; explaining a violation may take another
    ``timeout_s`` (``explain=False`` skips it)."""
    started = monotonic()
    deadline = started + timeout_s
    m = _resolve(model)
    ops = list(history)
    parts = m.partition([op for op in ops if op.outcome is not Outcome.FAIL])
    checked = sum(len(p) for p in parts.values())
    items = sorted(parts.items(), key=lambda kv: len(kv[1]))   # stable: ties keep first-seen
    states = 0
    orders: list[list[Op]] = []
    gave_up: list[tuple[Hashable, _SearchResult]] = []
    for label, pops in items:
        if gave_up and monotonic() > deadline:
            break
        res = _search(pops, m, deadline, max_states)
        states += res.states
        log.debug("partition %r: %d ops, %s, %d states", label, len(pops), res.status,
                  res.states)
        if res.status == _LINEARIZABLE:
            orders.append([pops[i] for i in res.order])
        elif res.status == _GAVE_UP:
            gave_up.append((label, res))
        else:
            text = f"not linearizable: {_where(m, label)} cannot be linearized"
            bad: list[int] = []
            if explain:
                text, bad, more = _explain(label, pops, m, timeout_s, max_states, len(parts))
                states += more
            return CheckResult(False, None, text, checked, states, False, len(parts), label,
                               bad, monotonic() - started)
    elapsed = monotonic() - started
    if gave_up:
        label, res = gave_up[0]
        unchecked = len(parts) - len(orders) - len(gave_up)
        text = (f"unknown: gave up on {_where(m, label)} ({len(parts[label])} ops, "
                f"{res.states} states remembered): {res.reason} after {elapsed:.2f} s"
                + (f"; {len(gave_up) - 1} more partitions gave up" if len(gave_up) > 1 else "")
                + (f"; {unchecked} partitions not checked" if unchecked else "")
                + ". Raise timeout_s/max_states or check a shorter history: many concurrent "
                "clients, or chains of unknown-outcome cas, on one key make the search "
                "exponential.")
        return CheckResult(False, None, text, checked, states, True, len(parts), label, [],
                           elapsed)
    return CheckResult(True, _merge(orders),
                       f"linearizable: {checked} operations in {len(parts)} partitions",
                       checked, states, False, len(parts), None, [], elapsed)
