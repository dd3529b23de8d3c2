"""SWIM membership as a sans-I/O state machine, with Lifeguard's refinements.

Theory of operation
-------------------
* **Failure detection.** Every protocol period (``probe_interval_ms``) a member pings the next
  member of a shuffled round-robin list. No ACK within ``probe_timeout_ms``: it asks
  ``indirect_checks`` random members to ping the target for it (PING_REQ); they relay the ACK,
  or a NACK if they heard nothing. No ACK by the end of the period: the target becomes
  SUSPECT. A suspect that does not refute before its suspicion timeout is declared DEAD.
* **Incarnations.** Only a member raises its own incarnation. A claim about a member wins
  over another if its incarnation is higher, or equal and stronger (ALIVE < SUSPECT < DEAD).
  A member that hears itself suspected or declared dead *refutes*: it gossips ALIVE with a
  higher incarnation. A restarted process (same id, incarnation 0) learns its old
  incarnation from the first sync and refutes past it, so it is alive again everywhere.
* **Lifeguard.** (1) Local health: a member whose probes fail although its helpers' NACKs
  show the target is reachable for them, or that has to refute, is probably the slow one;
  it scales its own probe interval and timeout by (score + 1) so it accuses less. (2) The
  suspicion timeout starts at ``suspicion_max_mult`` times the minimum and falls towards the
  minimum as other members confirm the suspicion independently. (3) A ping to a suspect
  carries the suspicion, so the target can refute at once. We add a last chance: a suspicion
  that runs out with no confirmation at all (we alone suspect it: perhaps we missed its
  refutation) is extended by one period in which we probe the suspect first; its ACK, or
  the refutation the buddy system draws out, clears it.
* **Dissemination.** Updates ride on every message (up to ``max_piggyback``), and every
  ``gossip_interval_ms`` on GOSSIP messages to ``gossip_fanout`` random members, each update
  ``retransmit_mult * ceil(log10(n+1))`` times; see :mod:`broadcasts`.
* **Anti-entropy.** Every ``push_pull_interval_ms`` (scaled for n > 32) a member swaps its full
  state with one random member (SYNC / SYNC_REPLY); joining is the same exchange with a seed.
  In a full-state merge a remote DEAD only makes us *suspect* the node (it may be stale).
  Epidemic spread leaves a few members uninformed (about e^-limit each), so a hole is
  looked for: PING and ACK say how many members their sender knows, and a member that hears
  of more members than it knows, or gets a message from a member it has never heard of,
  brings its next push-pull forward (at most once per ``4 * probe_interval_ms``). A member that gossips a
  suspicion or death older than the incarnation we know (it missed a refutation) is sent the
  newer record straight back, so its stale suspicion ends before its timer does.
  Every ``reconnect_interval_ms`` a member also syncs with one random DEAD member, so the two
  sides of a healed partition find each other again.
* **Leaving** gossips LEFT about ourselves to every live member; LEFT members are not
  reconnected to. DEAD and LEFT members are forgotten (REAPED) after ``reap_after_ms``.

Nothing here reads a clock, a socket or a global RNG: time comes in as ``now_ms``,
randomness from the ``random.Random`` given, and the driver carries out the returned
actions (:class:`~mesh.swim.messages.Send`, :class:`~mesh.swim.messages.MemberEvent`) in order.
"""
from __future__ import annotations

from random import Random
from typing import Callable, Iterable

from mesh.swim.broadcasts import BroadcastQueue
from mesh.swim.config import SwimConfig
from mesh.swim.formulas import (confirmations_expected, push_pull_scale_ms, retransmit_limit,
                                scale_by_health_ms, suspicion_timeout_ms)
from mesh.swim.messages import (Ack, Action, EventKind, Gossip, Member, MemberEvent, Message, Nack, Ping,
                                PingReq, Send, State, Sync, SyncReply, Update)
from mesh.swim.suspicion import Suspicion

# (node id, incarnation, address, meta) -> the signature carried with our record. The core
# only signs (a pure function handed in, like the Random); checking others' signatures is the
# driver's job, before a message reaches step().
Signer = Callable[[str, int, str, bytes], bytes]

_FAR = 1 << 62
_LIVE = (State.ALIVE, State.SUSPECT)


class _Node:
    __slots__ = ("id", "address", "incarnation", "state", "meta", "since_ms", "suspicion", "sig")

    def __init__(self, id: str, address: str, incarnation: int, meta: bytes, now_ms: int,
                 sig: bytes = b"") -> None:
        self.id = id
        self.sig = sig               # the member's signature of (incarnation, address, meta)
        self.address = address
        self.incarnation = incarnation
        self.state = State.ALIVE
        self.meta = meta
        self.since_ms = now_ms
        self.suspicion: Suspicion | None = None

    def snapshot(self) -> Member:
        return Member(self.id, self.address, self.state, self.incarnation, self.meta, self.since_ms)

    def as_update(self, source: str = "") -> Update:
        return Update(self.state, self.id, self.incarnation, self.address, self.meta, source, self.sig)


class _Probe:
    """The probe of the current protocol period."""
    __slots__ = ("target", "seq", "indirect_at", "end_at", "indirect_sent", "helpers", "nacked")

    def __init__(self, target: str, seq: int, indirect_at: int, end_at: int) -> None:
        self.target = target
        self.seq = seq
        self.indirect_at = indirect_at
        self.end_at = end_at
        self.indirect_sent = False
        self.helpers: tuple[str, ...] = ()   # asked to ping the target for us
        self.nacked: set[str] = set()        # helpers that said they heard nothing (once each)


class _Relay:
    """A ping we send on behalf of a PING_REQ: answer the requester with ACK or NACK."""
    __slots__ = ("requester", "requester_address", "requester_seq", "nack_at")

    def __init__(self, requester: str, requester_address: str, requester_seq: int, nack_at: int) -> None:
        self.requester = requester
        self.requester_address = requester_address
        self.requester_seq = requester_seq
        self.nack_at = nack_at


class Swim:
    """The membership protocol of one member. See the module docstring."""

    def __init__(self, node_id: str, address: str, *, meta: bytes = b"",
                 config: SwimConfig | None = None, rng: Random, now_ms: int,
                 incarnation: int = 0, signer: Signer | None = None) -> None:
        self.id = node_id
        self.config = config or SwimConfig()
        self._rng = rng
        self._signer = signer
        self._me = _Node(node_id, address, incarnation, meta, now_ms)
        self._sign_me()
        self._nodes: dict[str, _Node] = {node_id: self._me}
        self._others: list[str] = []          # ids of every other known member, for random picks
        self._other_pos: dict[str, int] = {}
        self._live = 1                        # members ALIVE or SUSPECT, self included
        self._suspects: dict[str, _Node] = {}
        self._down: dict[str, _Node] = {}     # DEAD or LEFT, until reaped
        self._broadcasts = BroadcastQueue()
        self._health = 0
        self._seq = rng.randrange(1 << 32)
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._probe_idx = 0
        self._relays: dict[int, _Relay] = {}
        self._seeds: list[str] = []
        self.joined = False
        self.leaving = False
        c = self.config
        self._next_probe = now_ms + rng.randrange(c.probe_interval_ms)
        self._next_gossip = now_ms + rng.randrange(c.gossip_interval_ms)
        self._next_push_pull = now_ms + c.push_pull_interval_ms // 2 + rng.randrange(c.push_pull_interval_ms)
        self._last_push_pull = now_ms
        self._next_reconnect = now_ms + c.reconnect_interval_ms
        self._next_join = _FAR
        self._out: list[Action] = []
        self._corrections: list[Update] = []
        self._last_chance: list[str] = []    # suspects to probe next, out of turn

    # -- public API --------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._me.incarnation

    @property
    def health(self) -> int:
        """Lifeguard local health score: 0 is healthy, ``awareness_max - 1`` the worst."""
        return self._health

    @property
    def live_count(self) -> int:
        return self._live

    def members(self) -> list[Member]:
        """Every member known, self included (DEAD and LEFT ones until reaped)."""
        return [n.snapshot() for n in self._nodes.values()]

    def member(self, node_id: str) -> Member | None:
        n = self._nodes.get(node_id)
        return n.snapshot() if n is not None else None

    def join(self, seeds: Iterable[str], now_ms: int) -> list[Action]:
        """Sync with each seed address; retried every ``4 * probe_interval_ms`` until one answers."""
        self._seeds = [s for s in seeds if s != self._me.address]
        if not self._seeds:
            self.joined = True
            return []
        self._send_join(now_ms)
        return self._flush()

    def tick(self, now_ms: int) -> list[Action]:
        """Run the timers that are due (call at or after :meth:`next_deadline_ms`)."""
        c = self.config
        if self._relays:
            self._expire_relays(now_ms)
        probe = self._probe
        if probe is not None:
            if now_ms >= probe.end_at:
                self._finish_probe(probe, now_ms)   # may confirm a suspicion: before expiry
            elif not probe.indirect_sent and now_ms >= probe.indirect_at:
                self._send_indirect(probe)
        if self._suspects:
            self._expire_suspicions(now_ms)
        if self.leaving:
            return self._flush()
        if now_ms >= self._next_probe:
            self._next_probe = now_ms + scale_by_health_ms(c.probe_interval_ms, self._health)
            self._start_probe(now_ms)
        if now_ms >= self._next_gossip:
            self._next_gossip = now_ms + c.gossip_interval_ms
            self._gossip(now_ms)
        if now_ms >= self._next_push_pull:
            self._next_push_pull = now_ms + push_pull_scale_ms(c.push_pull_interval_ms, self._live)
            self._last_push_pull = now_ms
            self._push_pull(State.ALIVE)
        if now_ms >= self._next_reconnect:
            self._next_reconnect = now_ms + c.reconnect_interval_ms
            self._push_pull(State.DEAD)
        if now_ms >= self._next_join:
            self._send_join(now_ms)
        if self._down:
            self._reap(now_ms)
        return self._flush()

    def next_deadline_ms(self) -> int:
        """The earliest time at which :meth:`tick` has work to do."""
        if self.leaving:   # only answering relays and running out suspicions
            t = _FAR
        else:
            t = min(self._next_probe, self._next_push_pull, self._next_join)
            if self._broadcasts:
                t = min(t, self._next_gossip)
        if self._down and not self.leaving:
            t = min(t, self._next_reconnect,
                    min(n.since_ms for n in self._down.values()) + self.config.reap_after_ms)
        probe = self._probe
        if probe is not None:
            t = min(t, probe.end_at if probe.indirect_sent else probe.indirect_at)
        for relay in self._relays.values():
            t = min(t, relay.nack_at)
        for n in self._suspects.values():
            t = min(t, n.suspicion.deadline_ms)
        return t

    def step(self, src: str, msg: Message, now_ms: int) -> list[Action]:
        """Handle ``msg`` from member ``src`` (the sender's id, from the envelope)."""
        for update in msg.updates:
            self._apply(update, now_ms)
        if isinstance(msg, Ping):
            self.handle_ping(src, msg)
        elif isinstance(msg, Ack):
            self.handle_ack(msg)
        elif isinstance(msg, PingReq):
            self.handle_ping_req(src, msg, now_ms)
        elif isinstance(msg, Nack):
            self.handle_nack(src, msg)
        elif isinstance(msg, Sync):
            self.handle_sync(src, msg, now_ms)
        elif isinstance(msg, SyncReply):
            self.handle_sync_reply(src, msg, now_ms)
        if self.joined and (src not in self._nodes or getattr(msg, "known", 0) > len(self._nodes)):
            # a stranger talks to us, or the sender knows more members: our view has a
            # hole; pull a full state soon
            soon = max(now_ms, self._last_push_pull + 4 * self.config.probe_interval_ms)
            self._next_push_pull = min(self._next_push_pull, soon)
        if self._corrections:
            sender = self._nodes.get(src)
            if sender is not None and sender.state in _LIVE and sender is not self._me:
                self._out.append(Send(src, sender.address, Gossip(tuple(self._corrections))))
            self._corrections.clear()
        return self._flush()

    def set_meta(self, meta: bytes, now_ms: int) -> list[Action]:
        """Publish new metadata for ourselves (a new incarnation carries it)."""
        me = self._me
        if meta != me.meta and not self.leaving:
            me.meta = meta
            me.incarnation += 1
            self._sign_me()
            self._broadcasts.push(me.as_update())
        return self._flush()

    def leave(self, now_ms: int) -> list[Action]:
        """Say goodbye: tell every live member at once that we LEFT; stop probing."""
        if self.leaving:
            return []
        self.leaving = True
        self._probe = None
        self._me.state = State.LEFT
        self._me.since_ms = now_ms
        bye = Gossip((self._me.as_update(self.id),))
        for n in self._nodes.values():
            if n is not self._me and n.state in _LIVE:
                self._out.append(Send(n.id, n.address, bye))
        return self._flush()

    # -- probing -----------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFFFFFFFFFF
        return self._seq

    def _pick_probe_target(self) -> _Node | None:
        while self._last_chance:
            n = self._nodes.get(self._last_chance.pop())
            if n is not None and n.state is State.SUSPECT:
                return n
        for _ in range(2):
            order = self._probe_order
            while self._probe_idx < len(order):
                n = self._nodes.get(order[self._probe_idx])
                self._probe_idx += 1
                if n is not None and n.state in _LIVE and n is not self._me:
                    return n
            # a round is over: a fresh shuffle of the live members
            self._probe_order = [i for i in self._others if self._nodes[i].state in _LIVE]
            self._rng.shuffle(self._probe_order)
            self._probe_idx = 0
            if not self._probe_order:
                return None
        return None

    def _start_probe(self, now_ms: int) -> None:
        if self._probe is not None:      # still running (interval shrank): let it finish
            return
        target = self._pick_probe_target()
        if target is None:
            return
        c = self.config
        seq = self._next_seq()
        self._probe = _Probe(target.id, seq,
                             now_ms + scale_by_health_ms(c.probe_timeout_ms, self._health),
                             now_ms + scale_by_health_ms(c.probe_interval_ms, self._health))
        self._out.append(Send(target.id, target.address,
                              Ping(seq, target.id, self._buddy(target) + self._piggyback(), len(self._nodes))))

    def _buddy(self, target: _Node | None) -> tuple[Update, ...]:
        """Lifeguard's buddy system: a ping to a suspect (direct, or relayed by a helper, who
        learns the suspicion from our PING_REQ) carries the suspicion, so the suspect refutes
        at once and its ACK brings the refutation back."""
        if target is None or target.state is not State.SUSPECT:
            return ()
        return (Update(State.SUSPECT, target.id, target.incarnation, source=self.id),)

    def _send_indirect(self, probe: _Probe) -> None:
        probe.indirect_sent = True
        target = self._nodes.get(probe.target)
        if target is None or target.state not in _LIVE:
            return
        # helpers are members we hold ALIVE: a suspect would likely not answer, and its
        # missing NACK would count against our own health
        helpers = self._random_members(self.config.indirect_checks, exclude=target.id, alive_only=True)
        probe.helpers = tuple(h.id for h in helpers)
        buddy = self._buddy(target)
        for h in helpers:
            self._out.append(Send(h.id, h.address, PingReq(probe.seq, target.id, target.address,
                                                           buddy + self._piggyback())))

    def _finish_probe(self, probe: _Probe, now_ms: int) -> None:
        """The period ended without an ACK: suspect the target, and judge our own health."""
        self._probe = None
        if probe.helpers:
            self._adjust_health(len(probe.helpers) - len(probe.nacked))
        else:
            self._adjust_health(1)
        target = self._nodes.get(probe.target)
        if target is not None and target.state in _LIVE:
            # already suspect: our own failed probe is an independent confirmation
            self._apply(Update(State.SUSPECT, target.id, target.incarnation, source=self.id), now_ms)

    def handle_ping(self, src: str, msg: Ping) -> None:
        if msg.target != self.id:
            return   # meant for whoever had this address before us
        self._out.append(Send(src, self._address_of(src), Ack(msg.seq, self._piggyback(), len(self._nodes))))

    def handle_ack(self, msg: Ack) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq:
            self._probe = None
            self._adjust_health(-1)
            return
        relay = self._relays.pop(msg.seq, None)
        if relay is not None:
            self._out.append(Send(relay.requester, relay.requester_address,
                                  Ack(relay.requester_seq, self._piggyback(), msg.known)))

    def handle_nack(self, src: str, msg: Nack) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq and src in probe.helpers:
            probe.nacked.add(src)   # a duplicated NACK must not hide a missing one

    def handle_ping_req(self, src: str, msg: PingReq, now_ms: int) -> None:
        seq = self._next_seq()
        self._relays[seq] = _Relay(src, self._address_of(src), msg.seq, now_ms + self.config.probe_timeout_ms)
        buddy = self._buddy(self._nodes.get(msg.target))
        self._out.append(Send(msg.target, msg.address, Ping(seq, msg.target, buddy + self._piggyback())))

    def _expire_relays(self, now_ms: int) -> None:
        for seq in [s for s, r in self._relays.items() if r.nack_at <= now_ms]:
            relay = self._relays.pop(seq)
            self._out.append(Send(relay.requester, relay.requester_address,
                                  Nack(relay.requester_seq, self._piggyback())))

    def _adjust_health(self, delta: int) -> None:
        self._health = max(0, min(self.config.awareness_max - 1, self._health + delta))

    # -- the state of members --------------------------------------------------------------

    def _apply(self, u: Update, now_ms: int, from_sync: bool = False) -> None:
        """Merge one claim about a member (the heart of SWIM; see the module docstring)."""
        state = u.state
        if state is State.ALIVE:
            self._on_alive(u, now_ms)
        elif state is State.SUSPECT:
            self._on_suspect(u, now_ms)
        elif state is State.DEAD and from_sync:
            self._on_suspect(u, now_ms)   # a remote DEAD in a full-state sync may be stale
        else:
            self._on_dead(u, now_ms)

    def _on_alive(self, u: Update, now_ms: int) -> None:
        if u.node == self.id:
            me = self._me
            if not self.leaving and (u.incarnation > me.incarnation or (
                    u.incarnation == me.incarnation and (u.address, u.meta) != (me.address, me.meta))):
                self._refute(u.incarnation)   # an older process of ours, or a forgery
            return
        n = self._nodes.get(u.node)
        if n is None:
            n = _Node(u.node, u.address, u.incarnation, u.meta, now_ms, u.sig)
            self._nodes[u.node] = n
            self._other_pos[u.node] = len(self._others)
            self._others.append(u.node)
            self._live += 1
            # join the probe round at a random place, so a burst of joins spreads out
            self._probe_order.insert(self._rng.randint(self._probe_idx, len(self._probe_order)), u.node)
            self._broadcasts.push(u)
            self._event(EventKind.JOINED, n)
            return
        if u.incarnation <= n.incarnation:
            return
        was = n.state
        changed = (u.address, u.meta) != (n.address, n.meta)
        n.address, n.meta, n.incarnation, n.sig = u.address, u.meta, u.incarnation, u.sig
        self._set_state(n, State.ALIVE, now_ms)
        self._broadcasts.push(u)
        if was in (State.DEAD, State.LEFT):
            self._event(EventKind.JOINED, n)
        elif was is State.SUSPECT or changed:
            self._event(EventKind.UPDATED, n)

    def _accusation_target(self, u: Update) -> _Node | None:
        """The member a SUSPECT/DEAD claim is about, if the claim needs handling here: claims
        about us are refuted, about the gone or unknown ignored, stale ones corrected."""
        n = self._nodes.get(u.node)
        if n is self._me:
            self._accused(u)
            return None
        if n is None or n.state in (State.DEAD, State.LEFT):
            return None
        if u.incarnation < n.incarnation:
            self._stale_claim(n)
            return None
        return n

    def _on_suspect(self, u: Update, now_ms: int) -> None:
        n = self._accusation_target(u)
        if n is None:
            return
        if n.state is State.SUSPECT and u.incarnation == n.incarnation:
            if n.suspicion.confirm(u.source):
                self._broadcasts.push(Update(State.SUSPECT, n.id, n.incarnation, source=u.source))
            return
        # a new suspicion, or one of a newer incarnation (it refuted the old one, which we
        # missed): the timer starts over; confirmations of the old one do not count
        c = self.config
        min_ms = suspicion_timeout_ms(c.suspicion_mult, self._live, c.probe_interval_ms)
        n.incarnation = u.incarnation
        n.suspicion = Suspicion(u.source, confirmations_expected(c.suspicion_mult, self._live),
                                min_ms, min_ms * c.suspicion_max_mult, now_ms)
        was = n.state
        self._set_state(n, State.SUSPECT, now_ms)
        self._broadcasts.push(Update(State.SUSPECT, n.id, n.incarnation, source=u.source))
        if was is not State.SUSPECT:
            self._event(EventKind.SUSPECT, n)

    def _on_dead(self, u: Update, now_ms: int) -> None:
        n = self._accusation_target(u)
        if n is None:
            return
        left = u.state is State.LEFT or u.source == u.node
        n.incarnation = u.incarnation
        self._set_state(n, State.LEFT if left else State.DEAD, now_ms)
        self._broadcasts.push(Update(n.state, n.id, n.incarnation, source=u.source))
        self._event(EventKind.LEFT if left else EventKind.DEAD, n)

    def _stale_claim(self, n: _Node) -> None:
        """A suspicion or death of ``n`` older than what we know: correct the sender."""
        if n.state is State.ALIVE and len(self._corrections) < self.config.max_piggyback:
            self._corrections.append(n.as_update())

    def _accused(self, u: Update) -> None:
        """Someone holds us SUSPECT or DEAD. At our incarnation or above: refute. Below it,
        the accuser missed our last refutation; gossip it again (it rides the next ACK)."""
        if self.leaving:
            return
        if u.incarnation >= self._me.incarnation:
            self._refute(u.incarnation)
        else:
            self._broadcasts.push(self._me.as_update())

    def _refute(self, accused_incarnation: int) -> None:
        me = self._me
        me.incarnation = max(me.incarnation, accused_incarnation) + 1
        self._sign_me()
        self._adjust_health(1)   # being suspected hints that we are the slow one
        self._broadcasts.push(me.as_update())

    def _sign_me(self) -> None:
        """Sign our record anew after its incarnation or metadata changed."""
        me = self._me
        if self._signer is not None:
            me.sig = self._signer(me.id, me.incarnation, me.address, me.meta)

    def _set_state(self, n: _Node, state: State, now_ms: int) -> None:
        old = n.state
        if old is state:
            return
        n.state = state
        n.since_ms = now_ms
        if old in _LIVE and state not in _LIVE:
            self._live -= 1
            self._down[n.id] = n
        elif old not in _LIVE and state in _LIVE:
            self._live += 1
            del self._down[n.id]
        if state is State.SUSPECT:
            self._suspects[n.id] = n
        elif old is State.SUSPECT:
            del self._suspects[n.id]
            n.suspicion = None

    def _expire_suspicions(self, now_ms: int) -> None:
        for n in [n for n in self._suspects.values() if n.suspicion.deadline_ms <= now_ms]:
            sus = n.suspicion
            if sus.confirmations == 0 and not sus.last_chance:
                sus.last_chance = True
                sus.deadline_ms = now_ms + 2 * scale_by_health_ms(self.config.probe_interval_ms, self._health)
                self._last_chance.append(n.id)
                continue
            self._on_dead(Update(State.DEAD, n.id, n.incarnation, source=self.id), now_ms)

    def _reap(self, now_ms: int) -> None:
        limit = now_ms - self.config.reap_after_ms
        for n in [n for n in self._down.values() if n.since_ms <= limit]:
            del self._down[n.id]
            del self._nodes[n.id]
            pos = self._other_pos.pop(n.id)
            last = self._others.pop()
            if last != n.id:              # swap-remove keeps random picks O(1)
                self._others[pos] = last
                self._other_pos[last] = pos
            self._event(EventKind.REAPED, n)

    def _event(self, kind: EventKind, n: _Node) -> None:
        self._out.append(MemberEvent(kind, n.snapshot()))

    # -- dissemination and anti-entropy -----------------------------------------------------

    def _piggyback(self) -> tuple[Update, ...]:
        return self._broadcasts.take(self.config.max_piggyback,
                                     retransmit_limit(self.config.retransmit_mult, self._live))

    def _random_members(self, k: int, exclude: str = "", alive_only: bool = False,
                        now_ms: int = 0) -> list[_Node]:
        """Up to ``k`` distinct random members other than us and ``exclude``: live ones, and
        or with ``alive_only`` only those ALIVE; otherwise also those dead for less than
        ``gossip_to_dead_ms``."""
        others = self._others
        if not others or k <= 0:
            return []
        dead_since = now_ms - self.config.gossip_to_dead_ms
        picked: dict[str, _Node] = {}
        rng = self._rng
        for _ in range(3 * k + 3):
            n = self._nodes[others[rng.randrange(len(others))]]
            if n.id == exclude or n.id in picked:
                continue
            if alive_only:
                ok = n.state is State.ALIVE
            else:
                ok = n.state in _LIVE or (n.state is State.DEAD and n.since_ms > dead_since)
            if ok:
                picked[n.id] = n
                if len(picked) == k:
                    break
        return list(picked.values())

    def _gossip(self, now_ms: int) -> None:
        if not self._broadcasts:
            return
        for n in self._random_members(self.config.gossip_fanout, now_ms=now_ms):
            updates = self._piggyback()
            if not updates:
                break
            self._out.append(Send(n.id, n.address, Gossip(updates)))

    def _full_state(self) -> tuple[Update, ...]:
        return tuple(n.as_update() for n in self._nodes.values())

    def _push_pull(self, state: State) -> None:
        pool = [self._nodes[i] for i in self._others if self._nodes[i].state is state]
        if pool:
            n = pool[self._rng.randrange(len(pool))]
            self._out.append(Send(n.id, n.address, Sync(False, self._full_state(), self._piggyback())))

    def _send_join(self, now_ms: int) -> None:
        self._next_join = now_ms + 4 * self.config.probe_interval_ms
        msg = Sync(True, self._full_state())
        for address in self._seeds:
            self._out.append(Send(None, address, msg))

    def handle_sync(self, src: str, msg: Sync, now_ms: int) -> None:
        for u in msg.members:
            self._merge_one(src, u, now_ms)
        self._out.append(Send(src, self._address_of(src), SyncReply(self._full_state(), self._piggyback())))

    def handle_sync_reply(self, src: str, msg: SyncReply, now_ms: int) -> None:
        for u in msg.members:
            self._merge_one(src, u, now_ms)
        if not self.joined:
            self.joined = True
            self._next_join = _FAR

    def _merge_one(self, src: str, u: Update, now_ms: int) -> None:
        """Merge one record of a full-state sync from ``src`` (the accuser of its suspicions)."""
        if u.state is State.SUSPECT and u.node not in self._nodes and u.address:
            # learn the member, then the suspicion (memberlist would skip it until it refutes)
            self._on_alive(Update(State.ALIVE, u.node, u.incarnation, u.address, u.meta, sig=u.sig), now_ms)
        if u.state in (State.SUSPECT, State.DEAD):
            u = Update(u.state, u.node, u.incarnation, u.address, u.meta, src, u.sig)
        self._apply(u, now_ms, from_sync=True)

    def _address_of(self, node_id: str) -> str:
        n = self._nodes.get(node_id)
        return n.address if n is not None else ""

    def _flush(self) -> list[Action]:
        out, self._out = self._out, []
        return out
