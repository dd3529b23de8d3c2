"""A cluster of SWIM cores on the simulated network: the driver that tests and benchmarks use.

Theory of operation
-------------------
Each simulated node is one :class:`~mesh.swim.core.Swim` core, attached to the
:class:`~mesh.sim.network.Network` as host ``<id>`` at address ``sim://<id>``. The harness is
the cores' driver, as the node runtime is on ZeroMQ, and carries out their actions:

- **Send**: the message is encoded as the real runtime does (a mesh envelope whose ``kind``
  is the SWIM kind and whose body is ``wire.to_body(msg)`` packed by the codec) and handed to
  the network. On arrival the bytes are decoded and validated by ``wire.from_body`` before
  the receiving core's ``step`` sees them, so the wire format is exercised and byte counts
  are real. A frame that fails to decode is counted (``decode_errors``), never raised.
  Responses (ACK, NACK, SYNC_REPLY) go back on the link the request came in on (routed by
  id), requests to the address the core gives.
- **MemberEvent**: recorded as an :class:`Observation` ``(time, observer, kind, member,
  incarnation)`` and folded into the observer's *event view*, from which convergence and
  detection times are computed without asking a thousand cores for their member lists.

Timers: each node has at most one wake-up that counts (``SimNode.wake_ms``). After every
tick or step the core's ``next_deadline_ms()`` is read; a wake-up is scheduled only when
that is earlier than the one pending, and a wake-up that fires for a time that is no longer
the node's pending one is ignored. A tick that leaves its deadline at or before "now" is
run once more at the same instant (as a late timer would be); when that one also leaves
work due, the node would spin forever at one virtual instant, so the harness wakes it 1 ms
later and counts it in ``stuck_ticks`` (a core bug worth a look, not a crash of the run).

Faults: ``crash`` detaches the host and throws the core away (messages to it are dropped,
its timers are ignored); ``restart`` makes a fresh core (incarnation 0) under the same id
and address that joins through the seeds again; ``leave`` lets the core say goodbye and
keeps it running for ``leave_grace_ms`` before it goes. Partitions are the network's.

A core that raises is a bug: the exception propagates, annotated with the seed, the virtual
time and the node, so the failing run can be replayed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from mesh._core import codec
from mesh.errors import DecodeError, ProtocolError
from mesh.sim.network import Network, NetworkConfig, NodeStats
from mesh.sim.world import World, plan_wake
from mesh.swim import wire
from mesh.swim.config import SwimConfig
from mesh.swim.core import Swim
from mesh.swim.messages import (KIND_OF, RESPONSE_KINDS, Action, EventKind, Member, MemberEvent,
                                Send, State)

ADDRESS_PREFIX = "sim://"

# What an observer believes after an event; None: it no longer knows the member (reaped).
STATE_AFTER: dict[EventKind, State | None] = {
    EventKind.JOINED: State.ALIVE,
    EventKind.UPDATED: State.ALIVE,
    EventKind.SUSPECT: State.SUSPECT,
    EventKind.DEAD: State.DEAD,
    EventKind.LEFT: State.LEFT,
    EventKind.REAPED: None,
}
GONE: frozenset[State | None] = frozenset({State.DEAD, State.LEFT, None})
"""States in which a member counts as detected gone (None: absent, forgotten or never known)."""


@dataclass(slots=True)
class Observation:
    """One MemberEvent as the harness saw it: ``observer`` learned ``kind`` about ``member``."""
    time_ms: int
    observer: str
    kind: EventKind
    member: str
    incarnation: int

    def __str__(self) -> str:
        return (f"{self.time_ms:>8} ms  {self.observer:>6} sees {self.member:<6} "
                f"{self.kind.name:<7} inc {self.incarnation}")


@dataclass(slots=True)
class SimNode:
    """One process of the simulation: a core (None once crashed) and its driver state."""
    id: str
    address: str
    core: Swim | None
    life: int = 0                 # restarts so far; part of the core's RNG stream name
    up: bool = True               # attached and running (a leaving node is up until it goes)
    leaving: bool = False
    wake_ms: int | None = None    # the one pending wake-up that counts
    spins: int = 0                # ticks in a row that left their own deadline due


@dataclass(frozen=True, slots=True)
class TrafficMark:
    time_ms: int
    msgs_sent: int
    bytes_sent: int
    per_node: dict[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Traffic:
    """Traffic between two marks, per live node per protocol period."""
    periods: float
    nodes: int
    msgs_per_node_period: float
    bytes_per_node_period: float
    max_msgs_per_node_period: float   # the busiest node (a seed, usually)


class SwimCluster:
    """N SWIM cores, a world and a network; see the module docstring."""

    def __init__(self, seed: int, n: int = 0, config: SwimConfig | None = None,
                 net: NetworkConfig | None = None, seeds: int = 1,
                 leave_grace_ms: int | None = None) -> None:
        if seeds < 1:
            raise ValueError("a cluster needs at least one seed node")
        self.seed = seed
        self.config = config or SwimConfig()
        self.world = World(seed)
        self.net = Network(self.world, net or NetworkConfig())
        self.seeds = seeds
        self.leave_grace_ms = (2 * self.config.probe_interval_ms if leave_grace_ms is None
                               else leave_grace_ms)
        self.nodes: dict[str, SimNode] = {}
        self.seed_addresses: list[str] = []
        self.events: list[Observation] = []
        self.decode_errors = 0
        self.last_decode_error: str = ""
        self.stuck_ticks = 0
        self.on_event: Callable[[Observation], None] | None = None
        """Called with each observation as it happens (transcripts, live checkers)."""
        self._views: dict[str, dict[str, tuple[State, int]]] = {}
        # member -> [(time_ms, observer, state after)], in time order: the observations about
        # it, plus a None record whenever an observer's core is thrown away (it forgets all).
        self._by_member: dict[str, list[tuple[int, str, State | None]]] = {}
        self._next_index = 0
        for _ in range(n):
            self.add_node()

    # -- time -------------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        return self.world.now_ms

    def run_for(self, ms: int) -> None:
        self.world.run_for(ms)

    def run_until_true(self, pred: Callable[[], bool], limit_ms: int,
                       check_every_ms: int | None = None) -> int | None:
        """Run until ``pred()``; returns the virtual time it held (to ``check_every_ms``,
        default a tenth of a protocol period) or None after ``limit_ms``."""
        every = check_every_ms or max(1, self.config.probe_interval_ms // 10)
        return self.world.run_until_true(pred, limit_ms, every)

    def run_until_converged(self, limit_ms: int, expect_alive: Iterable[str] | None = None,
                            check_every_ms: int | None = None) -> int | None:
        alive = None if expect_alive is None else list(expect_alive)
        return self.run_until_true(lambda: self.converged(alive), limit_ms, check_every_ms)

    # -- membership of the simulation ------------------------------------------------------

    def add_node(self, id: str | None = None, meta: bytes = b"") -> str:
        """Start a new node now; it joins through the first ``seeds`` nodes ever added."""
        if id is None:
            while f"n{self._next_index}" in self.nodes:
                self._next_index += 1
            id = f"n{self._next_index}"
            self._next_index += 1
        if id in self.nodes:
            raise ValueError(f"node {id!r} exists; restart() it instead")
        node = SimNode(id, ADDRESS_PREFIX + id, None)
        self.nodes[id] = node
        if len(self.seed_addresses) < self.seeds:
            self.seed_addresses.append(node.address)
        self._boot(node, meta)
        return id

    def crash(self, id: str) -> None:
        """The process stops: no more ticks, messages to it are lost, its state is gone."""
        node = self.nodes[id]
        if not node.up:
            return
        node.up = False
        node.leaving = False
        node.core = None
        node.wake_ms = None
        self.net.detach(id)
        self._forget_views_of(id)

    def restart(self, id: str, meta: bytes = b"") -> None:
        """A fresh process under the same id and address (incarnation 0); crashes it first
        if it is running."""
        node = self.nodes[id]
        if node.up:
            self.crash(id)
        node.life += 1
        node.up = True
        self._boot(node, meta)

    def leave(self, id: str) -> None:
        """Graceful leave: the core says goodbye, runs ``leave_grace_ms`` more, then stops."""
        node = self.nodes[id]
        if not node.up or node.leaving:
            return
        node.leaving = True
        self._carry_out(node, self._call(node, node.core.leave, self.world.now_ms))
        self._schedule(node)
        self.world.after(self.leave_grace_ms, self._finish_leave, node, node.life)

    def set_meta(self, id: str, meta: bytes) -> None:
        node = self.nodes[id]
        if node.up:
            self._carry_out(node, self._call(node, node.core.set_meta, meta, self.world.now_ms))
            self._schedule(node)

    def live_ids(self) -> list[str]:
        """Nodes running and not leaving, in the order they were added."""
        return [n.id for n in self.nodes.values() if n.up and not n.leaving]

    def down_ids(self) -> list[str]:
        """Nodes crashed, left or leaving."""
        return [n.id for n in self.nodes.values() if not n.up or n.leaving]

    # -- the network ------------------------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> None:
        self.net.partition(*groups)

    def cut(self, a: str, b: str, both_ways: bool = True) -> None:
        self.net.cut(a, b, both_ways)

    def heal_link(self, a: str, b: str, both_ways: bool = True) -> None:
        self.net.heal_link(a, b, both_ways)

    def heal(self) -> None:
        self.net.heal()

    def set_net(self, config: NetworkConfig) -> None:
        self.net.set_config(config)

    # -- what the nodes believe -------------------------------------------------------------

    def view(self, observer: str) -> dict[str, tuple[State, int]]:
        """``{member: (state, incarnation)}`` as ``observer``'s core holds it, self excluded
        (from the core itself; see :meth:`event_view` for what its events said)."""
        core = self.nodes[observer].core
        if core is None:
            return {}
        return {m.id: (m.state, m.incarnation) for m in core.members() if m.id != observer}

    def event_view(self, observer: str) -> dict[str, tuple[State, int]]:
        """``{member: (state, incarnation)}`` folded from ``observer``'s events. States agree
        with :meth:`view` when the core reports every change; incarnations only move with
        events (a refutation that changes nothing visible emits none)."""
        return dict(self._views.get(observer, {}))

    def sees(self, observer: str, member: str) -> State | None:
        """The state ``observer``'s events last gave ``member``; None if it does not know it."""
        entry = self._views.get(observer, {}).get(member)
        return None if entry is None else entry[0]

    def event_view_mismatches(self) -> list[str]:
        """Where a live core's member states differ from what its events said: each such
        line is a missing or extra MemberEvent (a core bug)."""
        out = []
        for obs in self.live_ids():
            core_states = {m: s for m, (s, _) in self.view(obs).items()}
            event_states = {m: s for m, (s, _) in self._views.get(obs, {}).items()}
            if core_states != event_states:
                for m in sorted(set(core_states) | set(event_states)):
                    a, b = core_states.get(m), event_states.get(m)
                    if a != b:
                        out.append(f"{obs}: {m} is {a and a.name} in the core, "
                                   f"{b and b.name} by its events")
        return out

    def converged(self, expect_alive: Iterable[str] | None = None,
                  expect_dead: Iterable[str] | None = None) -> bool:
        """Every live node sees exactly ``expect_alive`` (default: the live nodes) ALIVE,
        nobody SUSPECT, and every other member (``expect_dead``; default every node not live)
        DEAD, LEFT or not at all. A node that has not joined yet sees too little, so it holds
        convergence back."""
        live = self.live_ids()
        alive = set(live if expect_alive is None else expect_alive)
        dead = set() if expect_dead is None else set(expect_dead)
        if alive & dead:
            raise ValueError(f"expected both alive and dead: {sorted(alive & dead)}")
        for obs in live:
            view = self._views.get(obs, {})
            n_alive = 0
            for member, (state, _) in view.items():
                if state is State.ALIVE:
                    if member not in alive:
                        return False
                    n_alive += 1
                elif state is State.SUSPECT:
                    return False
                elif member in alive:
                    return False
            if n_alive != len(alive) - (obs in alive):
                return False
        return True

    def first_time_all_see(self, member: str, states: Iterable[State | None],
                           observers: Iterable[str] | None = None, since_ms: int = 0) -> int | None:
        """The first time at or after ``since_ms`` when every observer (default: the nodes
        live now, ``member`` excluded) held ``member`` in one of ``states`` at once; ``None``
        in ``states`` stands for "does not know it". None if that has not happened yet."""
        want = set(states)
        obs = set(self.live_ids() if observers is None else observers)
        obs.discard(member)
        cur: dict[str, State | None] = dict.fromkeys(obs)
        ok = len(obs) if None in want else 0
        records = self._by_member.get(member, [])
        i = 0
        while i < len(records) and records[i][0] <= since_ms:
            ok += self._fold(cur, want, records[i])
            i += 1
        if ok == len(obs):
            return since_ms
        for rec in records[i:]:
            ok += self._fold(cur, want, rec)
            if ok == len(obs):
                return rec[0]
        return None

    @staticmethod
    def _fold(cur: dict[str, State | None], want: set, rec: tuple[int, str, State | None]) -> int:
        _, observer, state = rec
        if observer not in cur:
            return 0
        old = cur[observer]
        cur[observer] = state
        return (state in want) - (old in want)

    def detection_ms(self, member: str, since_ms: int) -> int | None:
        """How long after ``since_ms`` every live node first held ``member`` DEAD or LEFT (or
        did not know it); None if not yet."""
        t = self.first_time_all_see(member, GONE, since_ms=since_ms)
        return None if t is None else t - since_ms

    def false_suspicions(self, since_ms: int = 0, until_ms: int | None = None,
                         exclude: Iterable[str] | None = None) -> dict[EventKind, int]:
        """SUSPECT and DEAD observations in ``[since_ms, until_ms)`` about members not in
        ``exclude`` (default: the nodes crashed, left or leaving now, whose suspicion is
        deserved). Pass the nodes you took down in the window to count only false alarms."""
        skip = set(self.down_ids() if exclude is None else exclude)
        end = self.world.now_ms + 1 if until_ms is None else until_ms
        out = {EventKind.SUSPECT: 0, EventKind.DEAD: 0}
        for ob in self.events:
            if since_ms <= ob.time_ms < end and ob.kind in out and ob.member not in skip:
                out[ob.kind] += 1
        return out

    # -- traffic ----------------------------------------------------------------------------

    def stats(self, id: str) -> NodeStats:
        return self.net.stats[id]

    def mark(self) -> TrafficMark:
        """Counters now, to measure traffic over a window with :meth:`traffic_since`."""
        per_node = {i: (s.msgs_sent, s.bytes_sent) for i, s in self.net.stats.items()}
        return TrafficMark(self.world.now_ms, sum(m for m, _ in per_node.values()),
                           sum(b for _, b in per_node.values()), per_node)

    def traffic_since(self, mark: TrafficMark) -> Traffic:
        """Messages and bytes sent per live node per protocol period since ``mark``."""
        now = self.mark()
        periods = (now.time_ms - mark.time_ms) / self.config.probe_interval_ms
        nodes = max(1, len(self.live_ids()))
        if periods <= 0:
            return Traffic(0.0, nodes, 0.0, 0.0, 0.0)
        busiest = max((m - mark.per_node.get(i, (0, 0))[0] for i, (m, _) in now.per_node.items()),
                      default=0)
        return Traffic(periods, nodes, (now.msgs_sent - mark.msgs_sent) / nodes / periods,
                       (now.bytes_sent - mark.bytes_sent) / nodes / periods, busiest / periods)

    # -- driving the cores ------------------------------------------------------------------

    def _boot(self, node: SimNode, meta: bytes) -> None:
        now = self.world.now_ms
        # One stream per node and life, so a restart does not replay the old life's draws
        # and adding a node does not shift the others'.
        rng = self.world.rng(f"swim:{node.id}:{node.life}")
        node.core = Swim(node.id, node.address, meta=meta, config=self.config, rng=rng,
                         now_ms=now, incarnation=0)
        node.wake_ms = None
        node.spins = 0
        self._views[node.id] = {}
        self.net.attach(node.id, node.address,
                        lambda src, payload, node=node, life=node.life:
                        self._deliver(node, life, src, payload))
        self._carry_out(node, self._call(node, node.core.join, self.seed_addresses, now))
        self._schedule(node)

    def _finish_leave(self, node: SimNode, life: int) -> None:
        if node.life == life and node.up and node.leaving:
            self.crash(node.id)

    def _call(self, node: SimNode, fn: Callable[..., list[Action]], *args) -> list[Action]:
        try:
            return fn(*args)
        except Exception as exc:   # a core bug: keep it, say how to replay it
            exc.add_note(f"in the SWIM core of {node.id} (life {node.life}) at "
                         f"{self.world.now_ms} ms of the simulation with seed {self.seed}")
            raise

    def _schedule(self, node: SimNode, after_tick: bool = False) -> None:
        due, stuck = plan_wake(node, self.world.now_ms, node.core.next_deadline_ms(), after_tick)
        self.stuck_ticks += stuck
        if due is None:
            return
        self.world.at(due, self._wake, node, node.life, due)

    def _wake(self, node: SimNode, life: int, due: int) -> None:
        if node.wake_ms != due or node.life != life or not node.up:
            return    # superseded by an earlier wake-up, or the process is gone
        node.wake_ms = None
        self._carry_out(node, self._call(node, node.core.tick, due))
        self._schedule(node, after_tick=True)

    def _deliver(self, node: SimNode, life: int, src: str, payload: bytes) -> None:
        if node.life != life or not node.up:
            return
        try:
            envelope, body = codec.decode(payload)
            msg = wire.from_body(envelope.kind, body)
        except (DecodeError, ProtocolError) as exc:
            self.decode_errors += 1
            self.last_decode_error = f"{src} -> {node.id}: {exc}"
            return
        self._carry_out(node, self._call(node, node.core.step, src, msg, self.world.now_ms))
        self._schedule(node)

    def _carry_out(self, node: SimNode, actions: list[Action]) -> None:
        if not actions:
            return
        send = self.net.send
        encode = codec.encode
        to_body = wire.to_body
        src = node.id
        last_msg = last_payload = None
        for action in actions:
            if type(action) is Send:
                msg = action.message
                kind = KIND_OF[type(msg)]
                if msg is not last_msg:   # leave() and join() send one message to many
                    last_msg = msg
                    last_payload = encode(kind, 0, 0, src, "", "", to_body(msg))
                if action.to is not None and kind in RESPONSE_KINDS:
                    send(src, action.to, "", last_payload)
                else:
                    send(src, action.to, action.address, last_payload)
            elif type(action) is MemberEvent:
                self._observe(node.id, action.kind, action.member)

    def _observe(self, observer: str, kind: EventKind, member: Member) -> None:
        now = self.world.now_ms
        ob = Observation(now, observer, kind, member.id, member.incarnation)
        self.events.append(ob)
        state = STATE_AFTER[kind]
        view = self._views[observer]
        if state is None:
            view.pop(member.id, None)
        else:
            view[member.id] = (state, member.incarnation)
        records = self._by_member.get(member.id)
        if records is None:
            records = self._by_member[member.id] = []
        records.append((now, observer, state))
        if self.on_event is not None:
            self.on_event(ob)

    def _forget_views_of(self, observer: str) -> None:
        # The observer's beliefs die with its core: record that it no longer knows anyone.
        now = self.world.now_ms
        for member in self._views.pop(observer, {}):
            self._by_member[member].append((now, observer, None))
