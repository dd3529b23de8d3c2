"""The SWIM core driven by hand: scripted scenarios on 1-5 cores with a virtual clock.

Two drivers, both tiny and in this file (``mesh/sim`` is the full simulator):

* :class:`Net` runs several cores. A ``Send`` goes through the wire encoding and arrives
  ``latency_ms`` later: requests at the core bound to ``address`` (so a seed is reached by
  address alone), responses at ``to`` (the link the request came in on). Nodes can be crashed
  (no ticks, nothing in or out), links cut, and a core is ticked exactly at its
  ``next_deadline_ms()``. After every tick the deadline must have moved past ``now``, or the
  driver would spin.
* :func:`lone` builds one core that knows some members; the test plays every other member
  by stepping it with hand-made messages, to check exact timings against the formulas.

Times are virtual milliseconds; nothing sleeps.
"""
from __future__ import annotations

import heapq
from random import Random
from typing import Callable, Iterable

import pytest

from mesh._core import codec
from mesh.swim import wire
from mesh.swim.config import SwimConfig
from mesh.swim.core import Swim
from mesh.swim.formulas import (confirmations_expected, remaining_suspicion_ms, scale_by_health_ms,
                                suspicion_timeout_ms)
from mesh.swim.messages import (KIND_OF, RESPONSE_KINDS, Ack, EventKind, Gossip, MemberEvent, Nack, Ping,
                                PingReq, Send, State, Sync, SyncReply, Update)


def addr(node: str) -> str:
    return f"tcp://{node}:7000"


def over_the_wire(msg):
    kind = KIND_OF[type(msg)]
    return wire.from_body(kind, codec.load_body(codec.pack_body(wire.to_body(msg))))


class Net:
    """A few cores on a perfect (unless told otherwise) network with a virtual clock."""

    def __init__(self, ids: Iterable[str], *, seed: int = 0, config: SwimConfig | None = None,
                 latency_ms: int = 1) -> None:
        self.config = config or SwimConfig()
        self.seed = seed
        self.latency_ms = latency_ms
        self.now = 0
        self.cores: dict[str, Swim] = {}
        self.by_address: dict[str, str] = {}
        self.crashed: set[str] = set()
        self.cut: set[tuple[str, str]] = set()  # (src, dst) links that drop everything
        self.drop: Callable[[str, str, object], bool] | None = None
        self.trace: list[tuple[int, str, object]] = []
        self._wire: list[tuple[int, int, str, str, object]] = []
        self._n = 0
        self._generation: dict[str, int] = {}
        for i in ids:
            self.add(i)

    # -- set-up ------------------------------------------------------------------------------

    def add(self, node: str, incarnation: int = 0) -> Swim:
        gen = self._generation.get(node, -1) + 1
        self._generation[node] = gen
        core = Swim(node, addr(node), config=self.config, rng=Random(f"{self.seed}/{node}/{gen}"),
                    now_ms=self.now, incarnation=incarnation)
        self.cores[node] = core
        self.by_address[addr(node)] = node
        self.crashed.discard(node)
        return core

    def join(self, node: str, seeds: Iterable[str]) -> None:
        self.do(node, self.cores[node].join([addr(s) for s in seeds], self.now))

    def form(self, settle_ms: int = 3000) -> "Net":
        """Everyone joins the first node; run until all know all."""
        ids = list(self.cores)
        self.join(ids[0], [])
        for i in ids[1:]:
            self.join(i, [ids[0]])
        assert self.run_until(lambda: self.all_see(State.ALIVE), self.now + settle_ms), self.states()
        return self

    # -- running -----------------------------------------------------------------------------

    def do(self, node: str, actions: list) -> None:
        for a in actions:
            self.trace.append((self.now, node, a))
            if isinstance(a, Send):
                self._route(node, a)

    def _route(self, src: str, send: Send) -> None:
        if src in self.crashed:
            return
        msg = over_the_wire(send.message)
        assert msg == send.message
        if KIND_OF[type(msg)] in RESPONSE_KINDS and send.to in self.cores:
            dst = send.to
        else:
            dst = self.by_address.get(send.address)
        if dst is None:
            return
        self._n += 1
        heapq.heappush(self._wire, (self.now + self.latency_ms, self._n, src, dst, msg))

    def inject(self, src: str, dst: str, msg) -> None:
        self._n += 1
        heapq.heappush(self._wire, (self.now + self.latency_ms, self._n, src, dst, msg))

    def _tickable(self) -> list[str]:
        return [i for i in self.cores if i not in self.crashed]

    def next_time(self) -> int:
        times = [self.cores[i].next_deadline_ms() for i in self._tickable()]
        if self._wire:
            times.append(self._wire[0][0])
        return min(times) if times else 1 << 62

    def run_until(self, pred: Callable[[], bool] | None, end_ms: int) -> bool:
        """Run until ``pred()`` holds (True) or virtual time ``end_ms`` (False)."""
        for _ in range(1_000_000):
            if pred is not None and pred():
                return True
            t = self.next_time()
            if t > end_ms:
                self.now = end_ms
                return False
            self.now = max(self.now, t)
            while self._wire and self._wire[0][0] <= self.now:
                _, _, src, dst, msg = heapq.heappop(self._wire)
                if dst in self.crashed or (src, dst) in self.cut:
                    continue
                if self.drop is not None and self.drop(src, dst, msg):
                    continue
                self.do(dst, self.cores[dst].step(src, msg, self.now))
            for i in self._tickable():
                core = self.cores[i]
                if core.next_deadline_ms() <= self.now:
                    self.do(i, core.tick(self.now))
                    assert core.next_deadline_ms() > self.now, f"{i}: deadline did not advance"
        raise AssertionError("the driver loop did not finish")

    def run(self, ms: int) -> None:
        self.run_until(None, self.now + ms)

    # -- looking -----------------------------------------------------------------------------

    def state_of(self, observer: str, node: str) -> State | None:
        m = self.cores[observer].member(node)
        return None if m is None else m.state

    def states(self) -> dict[str, dict[str, tuple[State, int]]]:
        return {o: {m.id: (m.state, m.incarnation) for m in self.cores[o].members()}
                for o in self.cores if o not in self.crashed}

    def all_see(self, state: State, about: Iterable[str] | None = None,
                observers: Iterable[str] | None = None) -> bool:
        observers = [o for o in (observers or self.cores) if o not in self.crashed]
        about = list(about) if about is not None else list(self.cores)
        return all(self.state_of(o, n) is state for o in observers for n in about if n != o)

    def events(self, observer: str | None = None, kind: EventKind | None = None,
               about: str | None = None) -> list[tuple[int, str, MemberEvent]]:
        return [(t, node, a) for t, node, a in self.trace if isinstance(a, MemberEvent)
                and (observer is None or node == observer) and (kind is None or a.kind is kind)
                and (about is None or a.member.id == about)]

    def sends(self, src: str | None = None, kind: type | None = None,
              to: str | None = None) -> list[tuple[int, str, Send]]:
        return [(t, node, a) for t, node, a in self.trace if isinstance(a, Send)
                and (src is None or node == src) and (kind is None or isinstance(a.message, kind))
                and (to is None or a.to == to or (a.to is None and a.address == addr(to)))]


def lone(node: str = "A", others: Iterable[str] = ("B", "C", "D", "E"), *, seed: int = 1,
         config: SwimConfig | None = None, now_ms: int = 0) -> Swim:
    """One core that has heard of ``others`` (all ALIVE, incarnation 0)."""
    core = Swim(node, addr(node), config=config, rng=Random(seed), now_ms=now_ms)
    ups = tuple(Update(State.ALIVE, o, 0, addr(o)) for o in others)
    core.step(next(iter(others)), Gossip(ups), now_ms)
    return core


class Script:
    """Drive one core; ``answer(send, now)`` plays the rest of the world and returns
    ``(delay_ms, src, msg)`` replies."""

    def __init__(self, core: Swim, answer: Callable[[Send, int], Iterable[tuple[int, str, object]]],
                 now_ms: int = 0) -> None:
        self.core = core
        self.answer = answer
        self.now = now_ms
        self.log: list[tuple[int, object]] = []
        self._q: list[tuple[int, int, str, object]] = []
        self._n = 0

    def feed(self, src: str, msg, delay_ms: int = 0) -> None:
        self._n += 1
        heapq.heappush(self._q, (self.now + delay_ms, self._n, src, msg))

    def _record(self, actions: list) -> None:
        for a in actions:
            self.log.append((self.now, a))
            if isinstance(a, Send):
                for delay, src, msg in self.answer(a, self.now):
                    self.feed(src, msg, delay)

    def run_until(self, pred: Callable[[], bool] | None, end_ms: int) -> bool:
        for _ in range(1_000_000):
            if pred is not None and pred():
                return True
            t = min(self.core.next_deadline_ms(), self._q[0][0] if self._q else 1 << 62)
            if t > end_ms:
                self.now = end_ms
                return False
            self.now = max(self.now, t)
            while self._q and self._q[0][0] <= self.now:
                _, _, src, msg = heapq.heappop(self._q)
                self._record(self.core.step(src, msg, self.now))
            if self.core.next_deadline_ms() <= self.now:
                self._record(self.core.tick(self.now))
                assert self.core.next_deadline_ms() > self.now
        raise AssertionError("the driver loop did not finish")

    def events(self, kind: EventKind | None = None, about: str | None = None) -> list[tuple[int, MemberEvent]]:
        return [(t, a) for t, a in self.log if isinstance(a, MemberEvent)
                and (kind is None or a.kind is kind) and (about is None or a.member.id == about)]

    def sends(self, kind: type | None = None, to: str | None = None) -> list[tuple[int, Send]]:
        return [(t, a) for t, a in self.log if isinstance(a, Send)
                and (kind is None or isinstance(a.message, kind)) and (to is None or a.to == to)]


def world(dead: Iterable[str] = (), nack_from: Iterable[str] | None = None, nack_delay_ms: int = 300):
    """Everybody but ``dead`` answers pings; helpers in ``nack_from`` (default: all) NACK
    a PING_REQ about a dead member; gossip and syncs are swallowed."""
    dead = set(dead)

    def answer(send: Send, now: int):
        m = send.message
        if isinstance(m, Ping) and send.to not in dead:
            return [(1, send.to, Ack(m.seq))]
        if isinstance(m, PingReq):
            if m.target not in dead:
                return [(2, send.to, Ack(m.seq))]
            if nack_from is None or send.to in nack_from:
                return [(nack_delay_ms, send.to, Nack(m.seq))]
        return []
    return answer


def only(items):
    assert len(items) == 1, items
    return items[0]


# -- joining -------------------------------------------------------------------------------------

def test_join_via_a_seed_address():
    net = Net("AB")
    a, b = net.cores["A"], net.cores["B"]
    assert a.join([], 0) == [] and a.joined
    actions = b.join([addr("A"), addr("B")], 0)          # our own address is skipped
    send = only(actions)
    assert send.to is None and send.address == addr("A")
    assert isinstance(send.message, Sync) and send.message.join is True
    assert Update(State.ALIVE, "B", 0, addr("B")) in send.message.members
    assert not b.joined
    net.do("B", actions)
    net.run(10)
    assert b.joined
    for observer, other in (("A", "B"), ("B", "A")):
        assert net.state_of(observer, other) is State.ALIVE
        ev = only([e for _, _, e in net.events(observer, EventKind.JOINED)])
        assert (ev.member.id, ev.member.address, ev.member.state, ev.member.incarnation) == (
            other, addr(other), State.ALIVE, 0)
    assert net.cores["A"].live_count == net.cores["B"].live_count == 2


def test_join_through_a_chain_reaches_everyone():
    net = Net("ABCDE", seed=2)
    net.join("A", [])
    for new, seed in zip("BCDE", "ABCD"):
        net.join(new, [seed])
    assert net.run_until(lambda: net.all_see(State.ALIVE), 10_000), net.states()
    for o in "ABCDE":
        joined = sorted(e.member.id for _, _, e in net.events(o, EventKind.JOINED))
        assert joined == sorted(set("ABCDE") - {o})      # once each
        assert net.cores[o].live_count == 5


def test_join_is_retried_until_a_seed_answers():
    net = Net("AB")
    net.crashed.add("A")
    net.join("B", ["A"])
    net.run(5000)
    joins = [t for t, _, s in net.sends("B", Sync, to="A") if s.message.join]
    assert joins == [0, 2000, 4000]                       # every 4 * probe_interval_ms
    assert not net.cores["B"].joined
    net.crashed.discard("A")
    net.join("A", [])
    assert net.run_until(lambda: net.cores["B"].joined, 10_000)
    assert net.all_see(State.ALIVE)
    done = net.now
    net.run(10_000)
    assert [t for t, _, s in net.sends("B", Sync) if s.message.join and t > done] == []


# -- probing -----------------------------------------------------------------------------------

def test_ping_ack_keeps_everyone_alive():
    net = Net("ABCD", seed=4).form()
    start = net.now
    net.run(30_000)
    assert net.events(kind=EventKind.SUSPECT) == [] and net.events(kind=EventKind.DEAD) == []
    assert net.sends(kind=PingReq) == []
    assert all(c.health == 0 for c in net.cores.values())
    assert net.all_see(State.ALIVE)
    acks = {(node, s.to, s.message.seq) for t, node, s in net.sends(kind=Ack)}
    for node in "ABCD":
        pings = [(t, s) for t, n, s in net.sends(node, Ping) if t >= start]
        assert 58 <= len(pings) <= 61                     # one per 500 ms period
        for t, s in pings:
            if t < net.now - 10:
                assert (s.to, node, s.message.seq) in acks
        # round robin: every other member is probed in every round of 3 periods
        targets = [s.to for _, s in pings]
        for i in range(len(targets) - 5):
            assert len(set(targets[i:i + 5])) == 3       # 5 in a row span a whole round


def test_unresponsive_member_is_probed_indirectly_then_suspected_then_dead():
    net = Net("ABCDE", seed=5).form()
    net.run(2000)
    crash = net.now
    net.crashed.add("E")
    assert net.run_until(lambda: net.all_see(State.DEAD, about="E"), crash + 20_000), net.states()
    # the first accuser: a PING to E, PING_REQs to 3 helpers after probe_timeout_ms, SUSPECT
    # at the end of the period
    ts, accuser, _ = net.events(kind=EventKind.SUSPECT, about="E")[0]
    tp = ts - 500
    probe = only([s for t, _, s in net.sends(accuser, Ping, to="E") if t == tp])
    reqs = [(t, s) for t, _, s in net.sends(accuser, PingReq) if s.message.seq == probe.message.seq]
    assert [t for t, _ in reqs] == [tp + 200] * 3
    assert all(s.message.target == "E" and s.message.address == addr("E") for _, s in reqs)
    assert len({s.to for _, s in reqs}) == 3 and "E" not in {s.to for _, s in reqs}
    min_ms = suspicion_timeout_ms(4, 5, 500)
    for o in "ABCD":
        (t_s, _, _), = net.events(o, EventKind.SUSPECT, "E")
        (t_d, _, ev), = net.events(o, EventKind.DEAD, "E")
        assert min_ms <= t_d - t_s <= 6 * min_ms
        assert ev.member.state is State.DEAD and ev.member.since_ms == t_d
        assert net.cores[o].live_count == 4
    assert net.events(kind=EventKind.UPDATED) == []


def test_three_members_wait_the_minimum_then_a_last_chance():
    # n = 3: k = confirmations_expected(4, 3) = 0, so the timer starts at the minimum; with
    # no confirmation it is extended once by 2 probe periods, in which the suspect is
    # probed first (out of turn)
    assert confirmations_expected(4, 3) == 0
    net = Net("ABC", seed=6).form()
    net.run(1000)
    net.crashed.add("C")
    assert net.run_until(lambda: net.all_see(State.DEAD, about="C"), net.now + 20_000)
    for o in "AB":
        (t_s, _, _), = net.events(o, EventKind.SUSPECT, "C")
        (t_d, _, _), = net.events(o, EventKind.DEAD, "C")
        assert net.cores[o].health == 0
        expiry = t_s + suspicion_timeout_ms(4, 3, 500)
        assert t_d == expiry + 2 * 500
        first_after = min(t for t, _, _ in net.sends(o, Ping) if t >= expiry)
        assert [s.to for t, _, s in net.sends(o, Ping) if t == first_after] == ["C"]


def _suspect_E(config: SwimConfig | None = None, seed: int = 1) -> tuple[Script, int]:
    s = Script(lone(config=config, seed=seed), world(dead={"E"}))
    assert s.run_until(lambda: s.events(EventKind.SUSPECT, "E"), 20_000)
    return s, s.events(EventKind.SUSPECT, "E")[0][0]


@pytest.mark.parametrize("confirmers", [(), ("B",), ("B", "C"), ("B", "C", "D")])
def test_suspicion_timeout_shrinks_with_confirmations(confirmers):
    s, ts = _suspect_E()
    c = SwimConfig()
    k = confirmations_expected(c.suspicion_mult, 5)
    min_ms = suspicion_timeout_ms(c.suspicion_mult, 5, c.probe_interval_ms)
    assert (k, min_ms) == (2, 2000)
    for i, who in enumerate(confirmers):
        s.feed(who, Gossip((Update(State.SUSPECT, "E", 0, source=who),)), delay_ms=100 + i)
    assert s.run_until(lambda: s.events(EventKind.DEAD, "E"), ts + 30_000)
    t_dead = s.events(EventKind.DEAD, "E")[0][0]
    expected = remaining_suspicion_ms(min(len(confirmers), k), k, 0, min_ms, c.suspicion_max_mult * min_ms)
    assert expected == {0: 12000, 1: 5690, 2: 2000, 3: 2000}[len(confirmers)]
    if not confirmers:
        # A alone suspects E (its own later failed probes do not count: it is the first
        # accuser): one last-chance period of 2 probe intervals, E probed first
        assert s.core.health == 0
        first_after = min(t for t, _ in s.sends(Ping) if t >= ts + expected)
        assert [p.to for t, p in s.sends(Ping) if t == first_after] == ["E"]
        expected += 2 * c.probe_interval_ms
    assert t_dead - ts == expected


def test_helpers_are_members_we_hold_alive():
    s = Script(lone(), world(dead={"E"}))
    s.feed("C", Gossip((Update(State.SUSPECT, "B", 0, source="C"),)))
    assert s.run_until(lambda: s.events(EventKind.SUSPECT, "E"), 10_000)
    reqs = [r for _, r in s.sends(PingReq) if r.message.target == "E"]
    assert reqs and {r.to for r in reqs} <= {"C", "D"}
    assert s.core.health == 0              # both helpers NACKed: nothing missing


def test_a_failed_probe_of_a_suspect_confirms_the_suspicion():
    # A hears B suspect E, then fails to reach E itself: an independent confirmation
    s = Script(lone(), world(dead={"E"}))
    s.feed("B", Gossip((Update(State.SUSPECT, "E", 0, source="B"),)))
    assert s.run_until(lambda: s.events(EventKind.SUSPECT, "E"), 100)
    ts = s.events(EventKind.SUSPECT, "E")[0][0]
    assert s.run_until(lambda: s.events(EventKind.DEAD, "E"), ts + 20_000)
    t_dead = s.events(EventKind.DEAD, "E")[0][0]
    assert t_dead - ts == remaining_suspicion_ms(1, 2, 0, 2000, 12000) == 5690
    regossiped = [u for _, a in s.sends() for u in a.message.updates
                  if u.node == "E" and u.state is State.SUSPECT and u.source == "A"]
    assert regossiped


# -- refutation --------------------------------------------------------------------------------

def test_a_wrongly_suspected_member_refutes_and_is_alive_everywhere():
    net = Net("ABCD", seed=8).form()
    net.inject("A", "B", Gossip((Update(State.SUSPECT, "C", 0, source="A"),)))
    net.run(3000)
    assert net.cores["C"].incarnation == 1
    assert net.all_see(State.ALIVE)
    assert all(net.cores[o].member("C").incarnation == 1 for o in "ABD")
    suspected = {o for _, o, _ in net.events(kind=EventKind.SUSPECT, about="C")}
    assert "B" in suspected
    for o in suspected:
        (t_s, _, _), = net.events(o, EventKind.SUSPECT, "C")
        (t_u, _, ev), = net.events(o, EventKind.UPDATED, "C")
        assert t_u > t_s and ev.member.state is State.ALIVE and ev.member.incarnation == 1
    assert net.events(kind=EventKind.DEAD) == []
    assert net.cores["C"].health >= 0


@pytest.mark.parametrize("claim", [
    Update(State.SUSPECT, "A", 7, source="B"),
    Update(State.DEAD, "A", 7, source="B"),
    Update(State.ALIVE, "A", 7, addr("A")),                  # an older process of ours
    Update(State.ALIVE, "A", 0, "tcp://impostor:1"),         # same incarnation, other address
])
def test_refutation_goes_past_the_claimed_incarnation(claim):
    a = lone()
    out = a.step("B", Gossip((claim,)), 10)
    assert [x for x in out if isinstance(x, MemberEvent)] == []
    assert a.incarnation == claim.incarnation + 1
    assert a.health == 1                         # being accused hints that we are the slow one
    assert a.member("A").state is State.ALIVE
    ack = only(a.step("B", Ping(1, "A"), 20))
    assert ack.message.updates[0] == Update(State.ALIVE, "A", claim.incarnation + 1, addr("A"))


def test_stale_claims_about_us_are_not_refuted_but_our_record_is_sent_again():
    a = lone()
    a.step("B", Gossip((Update(State.SUSPECT, "A", 3, source="B"),)), 10)
    assert a.incarnation == 4
    for _ in range(10):                       # let the refutation run out of retransmissions
        a.step("B", Ping(1, "A"), 15)
    assert not [u for u in only(a.step("B", Ping(1, "A"), 16)).message.updates if u.node == "A"]
    a.step("B", Gossip((Update(State.SUSPECT, "A", 3, source="C"), Update(State.DEAD, "A", 2, source="C"),
                        Update(State.ALIVE, "A", 4, addr("A")))), 20)
    assert a.incarnation == 4 and a.health == 1
    ack = only(a.step("B", Ping(2, "A"), 30))
    assert Update(State.ALIVE, "A", 4, addr("A")) in ack.message.updates


def test_a_stale_accusation_is_answered_with_the_newer_record():
    a = lone()
    a.step("B", Gossip((Update(State.ALIVE, "C", 2, addr("C")),)), 10)
    out = a.step("D", Gossip((Update(State.SUSPECT, "C", 1, source="D"),
                              Update(State.DEAD, "C", 0, source="D"))), 20)
    assert a.member("C").state is State.ALIVE and a.member("C").incarnation == 2
    reply = only([x for x in out if isinstance(x, Send)])
    assert reply.to == "D" and reply.address == addr("D")
    assert Update(State.ALIVE, "C", 2, addr("C")) in reply.message.updates
    assert [x for x in out if isinstance(x, MemberEvent)] == []


def test_a_suspicion_of_a_newer_incarnation_restarts_the_timer():
    s = Script(lone(), world(dead={"E"}))
    for i, who in enumerate("BCD"):
        s.feed(who, Gossip((Update(State.SUSPECT, "E", 0, source=who),)), delay_ms=i)
    assert s.run_until(lambda: s.events(EventKind.SUSPECT, "E"), 100)
    ts = s.events(EventKind.SUSPECT, "E")[0][0]
    # two confirmations: dead at ts + 2000, unless E refuted and is suspected again at inc 1
    s.run_until(None, ts + 1000)
    assert not s.events(EventKind.DEAD)
    s.feed("C", Gossip((Update(State.SUSPECT, "E", 1, source="C"),)))
    assert s.run_until(lambda: s.events(EventKind.DEAD, "E"), ts + 30_000)
    t_dead = s.events(EventKind.DEAD, "E")[0][0]
    # a fresh timer from ts + 1000: only A's own next failed probe confirms it
    assert t_dead == ts + 1000 + remaining_suspicion_ms(1, 2, 0, 2000, 12000)
    assert len(s.events(EventKind.SUSPECT, "E")) == 1
    assert s.core.member("E").incarnation == 1


def test_a_suspect_reachable_only_through_helpers_refutes_and_lives():
    """A's direct link to E is cut, so A's pings (with the buddy suspicion) never reach E.
    The suspicion still reaches E (on the helpers' pings, which carry it too, and by gossip),
    E refutes, and the refutation reaches A before its timer runs out. No DEAD."""
    net = Net("ABCE", seed=21).form()
    net.cut.add(("A", "E"))                          # A's own pings to E are lost
    net.do("A", net.cores["A"].step("B", Gossip((Update(State.SUSPECT, "E", 0, source="B"),)), net.now))
    assert net.cores["A"].member("E").state is State.SUSPECT
    net.run(20_000)
    assert net.cores["A"].member("E").state is State.ALIVE
    assert net.cores["A"].member("E").incarnation >= 1
    assert not net.events(kind=EventKind.DEAD, about="E")


def test_dead_said_by_the_member_itself_means_left():
    a = lone()
    out = a.step("B", Gossip((Update(State.DEAD, "B", 0, source="B"),)), 10)
    ev = only([x for x in out if isinstance(x, MemberEvent)])
    assert (ev.kind, ev.member.id, ev.member.state) == (EventKind.LEFT, "B", State.LEFT)


def test_a_member_cut_off_for_a_moment_refutes_its_suspicion():
    net = Net("ABCD", seed=9).form()
    net.crashed.add("C")
    assert net.run_until(lambda: net.events(kind=EventKind.SUSPECT, about="C"), net.now + 5000)
    net.crashed.discard("C")
    net.run(5000)
    assert net.all_see(State.ALIVE)
    inc = net.cores["C"].incarnation
    assert inc >= 1 and all(net.cores[o].member("C").incarnation == inc for o in "ABD")
    assert net.events(kind=EventKind.DEAD) == []
    for _, o, _ in net.events(kind=EventKind.SUSPECT, about="C"):
        assert net.events(o, EventKind.UPDATED, "C")


# -- Lifeguard ---------------------------------------------------------------------------------

def _first_failed_probe(nacks: int, config: SwimConfig | None = None, duplicate_first: bool = False):
    """A probes; the first target never answers and ``nacks`` of the 3 helpers NACK (the
    first of them twice with ``duplicate_first``, as a network may duplicate it)."""
    core = lone(config=config)
    state = {"target": None, "nacked": 0}

    def answer(send: Send, now: int):
        m = send.message
        if isinstance(m, Ping):
            if state["target"] is None:
                state["target"] = send.to
                return []
            return [(1, send.to, Ack(m.seq))]
        if isinstance(m, PingReq) and m.target == state["target"]:
            if state["nacked"] < nacks:
                state["nacked"] += 1
                copies = 2 if duplicate_first and state["nacked"] == 1 else 1
                return [(250, send.to, Nack(m.seq))] * copies
        return []
    s = Script(core, answer)
    assert s.run_until(lambda: state["target"] is not None and s.events(EventKind.SUSPECT), 5000)
    return s, state["target"]


@pytest.mark.parametrize("nacks, health", [(0, 3), (1, 2), (2, 1), (3, 0)])
def test_missing_nacks_raise_local_health_score(nacks, health):
    s, target = _first_failed_probe(nacks)
    pings = s.sends(Ping)
    reqs = s.sends(PingReq)
    assert len(reqs) == 3 and all(r.message.target == target for _, r in reqs)
    assert {t for t, _ in reqs} == {pings[0][0] + 200}
    assert s.core.health == health


def test_health_is_capped_by_awareness_max():
    s, _ = _first_failed_probe(0, SwimConfig(awareness_max=3))
    assert s.core.health == 2


def test_an_unhealthy_member_probes_less_often():
    s, _ = _first_failed_probe(0)
    assert s.core.health == 3
    assert s.run_until(lambda: len(s.sends(Ping)) >= 6, 8000)
    times = [t for t, _ in s.sends(Ping)][:6]
    # failed at h=0 (500), then scaled by (h+1) while each ACK lowers h by one: 3, 2, 1, 0
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps == [500, 4 * 500, 3 * 500, 2 * 500, 500]
    assert s.core.health == 0


def test_unhealthy_member_waits_longer_before_asking_helpers():
    s, _ = _first_failed_probe(0)
    # h = 3; the probe started in the same tick is ACKed (h = 2); the next one goes
    # unanswered and its PING_REQs wait probe_timeout_ms * (h + 1)
    assert s.core.health == 3
    assert s.run_until(lambda: s.core.health == 2, s.now + 10)
    s.answer = world(dead={"B", "C", "D", "E"})
    assert s.run_until(lambda: len(s.sends(PingReq)) > 3, s.now + 10_000)
    _, req = s.sends(PingReq)[3]
    t_req = s.sends(PingReq)[3][0]
    t_ping = only([t for t, p in s.sends(Ping) if p.message.seq == req.message.seq])
    assert t_req - t_ping == scale_by_health_ms(200, 2) == 600


def test_duplicated_nack_does_not_mask_a_missing_one():
    """NACKs count once per helper: 2 helpers NACK (one of them twice, as a network may
    duplicate it), 1 is silent, so local health rises by 1."""
    s, _ = _first_failed_probe(2, duplicate_first=True)
    assert s.core.health == 1


def test_ping_to_a_suspect_carries_the_suspicion_and_the_suspect_refutes():
    s = Script(lone(), world())
    s.feed("C", Gossip((Update(State.SUSPECT, "B", 0, source="C"),)))
    assert s.run_until(lambda: s.sends(Ping, to="B"), 5000)
    _, send = s.sends(Ping, to="B")[0]
    assert send.message.target == "B"
    assert send.message.updates[0] == Update(State.SUSPECT, "B", 0, source="A")
    # B hears it and refutes on the ACK
    b = Swim("B", addr("B"), rng=Random(2), now_ms=s.now)
    out = b.step("A", send.message, s.now)
    ack = only([a for a in out if isinstance(a, Send)])
    assert isinstance(ack.message, Ack) and ack.message.seq == send.message.seq and ack.to == "A"
    assert b.incarnation == 1
    assert Update(State.ALIVE, "B", 1, addr("B")) in ack.message.updates
    events = [a for a in s.core.step("B", ack.message, s.now + 1) if isinstance(a, MemberEvent)]
    ev = only([e for e in events if e.member.id == "B"])
    assert ev.kind is EventKind.UPDATED and ev.member.state is State.ALIVE
    assert s.core.member("B").incarnation == 1


def test_ping_meant_for_someone_else_is_not_acked():
    b = lone("B", ("A", "C"))
    assert b.step("A", Ping(5, "X"), 0) == []
    assert b.step("A", Ping(5, "C"), 0) == []
    send = only(b.step("A", Ping(6, "B"), 0))
    assert send == Send("A", addr("A"), Ack(6, send.message.updates, known=3))   # A, B, C


def test_ping_req_relays_the_ack_or_answers_nack():
    b = lone("B", ("A", "C"))
    b.step("A", Ping(1, "B"), 0)                       # drain the piggyback queue a little
    out = b.step("A", PingReq(77, "C", addr("C")), 10)
    ping = only(out)
    assert ping.to == "C" and ping.address == addr("C")
    assert isinstance(ping.message, Ping) and ping.message.target == "C"
    relayed = only(b.step("C", Ack(ping.message.seq), 15))
    assert relayed.to == "A" and relayed.message == Ack(77, relayed.message.updates)
    # no answer: NACK after probe_timeout_ms
    ping2 = only(b.step("A", PingReq(78, "C", addr("C")), 100))
    nacks = []
    while not nacks:
        t = b.next_deadline_ms()
        nacks = [(t, a) for a in b.tick(t) if isinstance(a, Send) and isinstance(a.message, Nack)]
    t, nack = only(nacks)
    assert t == 100 + SwimConfig().probe_timeout_ms
    assert nack.to == "A" and nack.message.seq == 78
    # an ACK after the NACK is not relayed
    assert [a for a in b.step("C", Ack(ping2.message.seq), 301) if isinstance(a, Send)] == []


# -- metadata, leaving, dead members -----------------------------------------------------------

def test_set_meta_bumps_incarnation_and_spreads():
    net = Net("ABCD", seed=10).form()
    a = net.cores["A"]
    net.do("A", a.set_meta(b"v2", net.now))
    assert a.incarnation == 1 and a.member("A").meta == b"v2"
    assert a.set_meta(b"v2", net.now) == [] and a.incarnation == 1     # unchanged: no bump
    net.run(2000)
    for o in "BCD":
        m = net.cores[o].member("A")
        assert (m.state, m.incarnation, m.meta) == (State.ALIVE, 1, b"v2")
        ev = only([e for _, _, e in net.events(o, EventKind.UPDATED, "A")])
        assert ev.member.meta == b"v2"


def test_leave_is_left_everywhere_without_refutation_and_never_reconnected():
    net = Net("ABCD", seed=11).form()
    d = net.cores["D"]
    actions = d.leave(net.now)
    sends = [a for a in actions if isinstance(a, Send)]
    assert sorted(s.to for s in sends) == ["A", "B", "C"]
    bye = Update(State.LEFT, "D", 0, addr("D"), b"", "D")
    assert all(s.message == Gossip((bye,)) for s in sends)
    assert d.leave(net.now) == []
    net.do("D", actions)            # D stays up (the harness still ticks it) but left
    t_left = net.now
    net.run(2000)
    assert net.all_see(State.LEFT, about="D", observers="ABC")
    for o in "ABC":
        only(net.events(o, EventKind.LEFT, "D"))
    # D still hears accusations about itself but does not refute
    net.inject("A", "D", Gossip((Update(State.SUSPECT, "D", 0, source="A"),
                                 Update(State.DEAD, "D", 0, source="A"),
                                 Update(State.ALIVE, "D", 5, "tcp://elsewhere:1"))))
    net.run(30_000)
    assert d.incarnation == 0
    assert not [u for _, _, s in net.sends("D") for u in s.message.updates
                if u.node == "D" and u.state is State.ALIVE]
    assert net.all_see(State.LEFT, about="D", observers="ABC")
    assert net.events(kind=EventKind.DEAD) == []
    assert [s for t, _, s in net.sends(to="D") if t > t_left + 2] == []    # no reconnect SYNC


def test_a_leaving_member_only_finishes_its_relays():
    # once leaving, no probe, gossip, sync or reap timer is due; a relay in flight still
    # gets its NACK, and after that nothing is due (a driver ticking at next_deadline_ms()
    # must not spin)
    a = lone()
    a.step("B", PingReq(9, "C", addr("C")), 0)
    a.leave(10)
    t = a.next_deadline_ms()
    assert t == SwimConfig().probe_timeout_ms
    nack = only([x for x in a.tick(t) if isinstance(x, Send)])
    assert nack.to == "B" and isinstance(nack.message, Nack) and nack.message.seq == 9
    assert a.next_deadline_ms() > 10**12
    assert a.tick(10**6) == []


def test_dead_member_gets_a_reconnect_sync_every_reconnect_interval():
    net = Net("ABC", seed=12).form()
    net.crashed.add("C")
    assert net.run_until(lambda: net.all_see(State.DEAD, about="C"), net.now + 20_000)
    net.run(21_000)
    for o in "AB":
        (t_dead, _, _), = net.events(o, EventKind.DEAD, "C")
        times = [t for t, _, s in net.sends(o, Sync, to="C") if t >= t_dead]
        assert all(not s.message.join for _, _, s in net.sends(o, Sync, to="C"))
        assert times[0] - t_dead <= 5000
        assert [b - a for a, b in zip(times, times[1:])] == [5000] * (len(times) - 1)
        assert len(times) >= 4


def test_reap_after_reap_after_ms():
    net = Net("ABCD", seed=13, config=SwimConfig(reap_after_ms=20_000)).form()
    net.crashed.add("C")
    net.do("D", net.cores["D"].leave(net.now))
    assert net.run_until(lambda: net.all_see(State.DEAD, about="C", observers="AB"), net.now + 20_000)
    net.run(25_000)
    for o in "AB":
        for who, kind in (("C", EventKind.DEAD), ("D", EventKind.LEFT)):
            (t_down, _, _), = net.events(o, kind, who)
            (t_reap, _, ev), = net.events(o, EventKind.REAPED, who)
            assert t_reap - t_down == 20_000
            assert ev.member.id == who
            assert net.cores[o].member(who) is None
        assert sorted(m.id for m in net.cores[o].members()) == ["A", "B"]
        last_reap = max(t for t, _, _ in net.events(o, EventKind.REAPED))
        assert [t for t, _, _ in net.sends(o, to="C") if t > last_reap] == []


def test_a_restarted_member_is_alive_again_above_its_dead_incarnation():
    net = Net("ABC", seed=14).form()
    net.do("C", net.cores["C"].set_meta(b"v1", net.now))
    net.do("C", net.cores["C"].set_meta(b"v2", net.now))
    net.run(2000)
    assert all(net.cores[o].member("C").incarnation == 2 for o in "AB")
    net.crashed.add("C")
    assert net.run_until(lambda: net.all_see(State.DEAD, about="C"), net.now + 20_000)
    dead_inc = max(net.cores[o].member("C").incarnation for o in "AB")
    t_dead = max(t for t, _, _ in net.events(kind=EventKind.DEAD, about="C"))
    c = net.add("C")                                    # a fresh process, incarnation 0
    assert c.incarnation == 0
    net.join("C", ["A"])
    assert net.run_until(lambda: net.all_see(State.ALIVE), net.now + 10_000), net.states()
    assert c.incarnation > dead_inc
    for o in "AB":
        assert net.cores[o].member("C").incarnation == c.incarnation
        assert [t for t, _, _ in net.events(o, EventKind.JOINED, "C") if t > t_dead]


def test_full_state_sync_saying_dead_only_makes_us_suspect():
    a = lone()
    out = a.step("B", Sync(False, (Update(State.ALIVE, "B", 0, addr("B")),
                                   Update(State.DEAD, "C", 0, source="B"))), 10)
    events = [e for e in out if isinstance(e, MemberEvent)]
    assert [(e.kind, e.member.id) for e in events] == [(EventKind.SUSPECT, "C")]
    assert a.member("C").state is State.SUSPECT
    reply = only([s for s in out if isinstance(s, Send)])
    assert reply.to == "B" and isinstance(reply.message, SyncReply)
    # the same through a SYNC_REPLY
    out = a.step("B", SyncReply((Update(State.DEAD, "D", 0, source="B"),)), 20)
    assert [(e.kind, e.member.id) for e in out if isinstance(e, MemberEvent)] == [(EventKind.SUSPECT, "D")]
    # gossip (not a full state) is believed
    out = a.step("B", Gossip((Update(State.DEAD, "E", 0, source="B"),)), 30)
    assert [(e.kind, e.member.id) for e in out if isinstance(e, MemberEvent)] == [(EventKind.DEAD, "E")]


def test_full_state_sync_teaches_an_unknown_suspect():
    a = lone()
    out = a.step("B", Sync(False, (Update(State.SUSPECT, "X", 3, addr("X"), b"m", "B"),
                                   Update(State.DEAD, "Y", 0, addr("Y"), b"", "B"))), 10)
    kinds = [(e.kind, e.member.id) for e in out if isinstance(e, MemberEvent)]
    assert kinds == [(EventKind.JOINED, "X"), (EventKind.SUSPECT, "X")]
    m = a.member("X")
    assert (m.state, m.incarnation, m.address, m.meta) == (State.SUSPECT, 3, addr("X"), b"m")
    assert a.member("Y") is None


def test_a_healed_partition_reconverges():
    net = Net("ABCD", seed=15).form()
    left, right = "AB", "CD"
    net.cut = {(x, y) for x in left for y in right} | {(y, x) for x in left for y in right}
    assert net.run_until(lambda: net.all_see(State.DEAD, about=right, observers=left)
                         and net.all_see(State.DEAD, about=left, observers=right), net.now + 30_000)
    net.cut = set()
    assert net.run_until(lambda: net.all_see(State.ALIVE), net.now + 30_000), net.states()


# -- determinism -------------------------------------------------------------------------------

def _scenario(seed: int) -> list[str]:
    net = Net("ABCDE", seed=seed).form()
    net.run(3000)
    net.crashed.add("E")
    net.run(15_000)
    net.add("E")
    net.join("E", ["A"])
    net.run(5000)
    return [repr(x) for x in net.trace]


def test_same_seed_same_actions():
    a, b = _scenario(21), _scenario(21)
    assert len(a) > 500
    assert a == b
    assert _scenario(22) != a


def _first_sync_after(core: Swim, t0: int, limit: int) -> int | None:
    t = t0
    while t < limit:
        t = max(t, core.next_deadline_ms())
        if any(isinstance(a, Send) and isinstance(a.message, Sync) for a in core.tick(t)):
            return t
        t += 1
    return None


@pytest.mark.parametrize("known, pulls_soon", [(5, False), (6, True)])
def test_a_peer_that_knows_more_members_brings_the_push_pull_forward(known, pulls_soon):
    """PING and ACK carry how many members the sender knows: hearing of more than we know
    means our view has a hole, and the next full-state sync comes within 4 periods instead
    of the push-pull interval (15 s)."""
    a = lone()                                   # knows A..E: 5
    a.joined = True
    a.step("B", Ping(1, "A", (), known), 100)
    t = _first_sync_after(a, 100, 100 + 4 * a.config.probe_interval_ms + 1)
    assert (t is not None) is pulls_soon
