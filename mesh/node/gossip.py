"""Drives the SWIM core (:mod:`mesh.swim`) on the node's event loop and ZeroMQ links.

Theory of operation
-------------------
* Time: the core's clock is the loop's monotonic clock in milliseconds. One loop timer is
  kept at the core's :meth:`~mesh.swim.core.Swim.next_deadline_ms`, re-armed after every
  tick and every message (a message can bring a deadline forward).
* Links: gossip shares each peer's links with application traffic. Requests (PING, PING_REQ,
  GOSSIP, SYNC) leave on our DEALER to the target, opened on demand from the address the
  core gives (a seed, whose id is not known yet, gets a ``seed:<address>`` link until it
  answers). Responses (ACK, NACK, SYNC_REPLY) go back on our ROUTER to the requester's DEALER.
* Gossip is datagram-like: a message to a link still connecting waits in a short bounded
  queue (per address) and is sent when the link comes up; anything older is dropped, as
  UDP would. SWIM tolerates loss by design.
* Everything from the network is validated: the codec's limits, then :mod:`mesh.swim.wire`.
  A bad message is dropped and counted (``gossip_malformed``); it never reaches the core.
  A member's metadata is validated by the node before it touches the router.
* With security on, our record is signed by the core (``signer``) and every record that
  arrives is checked here (``verifier``, :mod:`mesh.security.records`): an ALIVE record whose
  signature fails is dropped (``gossip_forged``), and an address riding on an accusation is
  kept only if it is signed.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import replace
from random import Random
from typing import Any, Callable

from mesh._core import codec
from mesh.errors import DecodeError, MeshError, ProtocolError
from mesh.swim import wire
from mesh.swim.config import SwimConfig
from mesh.swim.core import Signer, Swim
from mesh.swim.messages import KIND_OF, RESPONSE_KINDS, Member, MemberEvent, Send, State, Update
from mesh.node.core_timer import CoreTimer
from mesh.transport import SEED_PREFIX, Transport

log = logging.getLogger(__name__)

_WAITING_PER_ADDRESS = 16   # gossip frames held for a link that is still connecting


class GossipDriver:
    """One node's SWIM core, wired to its transport and loop."""

    def __init__(self, node_id: str, transport: Transport, config: SwimConfig, rng: Random,
                 limits: Any, on_event: Callable[[MemberEvent], None], signer: Signer | None = None,
                 verifier: Callable[[str, int, str, bytes, bytes], bool] | None = None) -> None:
        self.node_id = node_id
        self._signer = signer
        self._verify = verifier
        self._quiet_until = 0.0
        self.config = config
        self._transport = transport
        self._rng = rng
        self._limits = limits
        self._on_event = on_event
        self._core: Swim | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: CoreTimer | None = None
        self._waiting: dict[str, deque[bytes]] = {}
        self._ids = 0
        self.counters = {"gossip_in": 0, "gossip_out": 0, "gossip_malformed": 0, "gossip_dropped": 0,
                         "gossip_forged": 0}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, address: str, meta: bytes) -> None:
        self._loop = asyncio.get_running_loop()
        self._timer = CoreTimer(self._loop, self._tick)
        self._core = Swim(self.node_id, address, meta=meta, config=self.config, rng=self._rng,
                          now_ms=self._now_ms(), signer=self._signer)
        self._timer.arm(self._core.next_deadline_ms())

    def join(self, seeds: list[str]) -> None:
        self._run(self._core.join(seeds, self._now_ms()))

    @property
    def joined(self) -> bool:
        return self._core is not None and self._core.joined

    def set_meta(self, meta: bytes) -> None:
        if self._core is not None:
            self._run(self._core.set_meta(meta, self._now_ms()))

    def leave(self) -> None:
        """Tell every live member we are leaving (sent before the sockets close)."""
        if self._core is not None:
            self._run(self._core.leave(self._now_ms()))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._waiting.clear()

    def members(self) -> list[Member]:
        return self._core.members() if self._core is not None else []

    def member(self, node_id: str) -> Member | None:
        return self._core.member(node_id) if self._core is not None else None

    @property
    def core(self) -> Swim | None:
        return self._core

    # -- receiving ---------------------------------------------------------------------------

    def handle(self, peer: str, env: Any, from_router: bool) -> bool:
        """A gossip envelope from ``peer`` (a ROUTER identity, or the key of our DEALER link).
        False: it was malformed (dropped and counted)."""
        self.counters["gossip_in"] += 1
        try:
            if from_router and env.src != peer:
                raise ProtocolError(f"gossip from {peer!r} claims to come from {env.src!r}")
            msg = wire.from_body(env.kind, codec.load_body(env.body, self._limits))
        except (DecodeError, ProtocolError) as exc:
            self.counters["gossip_malformed"] += 1
            log.debug("malformed gossip from %s dropped: %s", peer, exc)
            return False
        if self._core is None or env.src == self.node_id:
            return True
        if self._verify is not None:
            msg = self._checked(msg)
        self._run(self._core.step(env.src, msg, self._now_ms()))
        return True

    def _checked(self, msg: Any) -> Any:
        """``msg`` without the records whose signatures fail (see the module docstring)."""
        changes = {}
        for name in ("updates", "members"):
            ups = getattr(msg, name, None)
            if ups:
                kept = tuple(u for u in map(self._checked_update, ups) if u is not None)
                if len(kept) != len(ups) or any(a is not b for a, b in zip(kept, ups)):
                    changes[name] = kept
        return replace(msg, **changes) if changes else msg

    def _checked_update(self, u: Update) -> Update | None:
        if u.state is State.ALIVE or u.address or u.meta:
            if self._verify(u.node, u.incarnation, u.address, u.meta, u.sig):
                return u
            if u.state is State.ALIVE:
                self.counters["gossip_forged"] += 1
                now = self._loop.time()
                if now >= self._quiet_until:      # one warning per 10 s, however many arrive
                    self._quiet_until = now + 10.0
                    log.warning("gossip record of %s (incarnation %d) with a bad signature dropped",
                                u.node, u.incarnation)
                return None
            # an accusation whose member re-signed since (a newer incarnation): the claim
            # stands, the address does not
            return replace(u, address="", meta=b"", sig=b"")
        return u

    def link_up(self, key: str, address: str) -> None:
        waiting = self._waiting.pop(address, None)
        while waiting:
            self._send_now(key, waiting.popleft())

    # -- the core's actions ------------------------------------------------------------------

    def _now_ms(self) -> int:
        return self._timer.now_ms()

    def _tick(self) -> None:
        if self._core is not None:
            self._run(self._core.tick(self._now_ms()))

    def _run(self, actions: list) -> None:
        for action in actions:
            if type(action) is Send:
                self._send(action)
            else:
                self._on_event(action)
        if self._core is not None and self._timer is not None:
            self._timer.arm(self._core.next_deadline_ms())

    def _send(self, action: Send) -> None:
        msg = action.message
        kind = KIND_OF[type(msg)]
        self._ids += 1
        data = codec.encode(kind, self._ids, 0, self.node_id, "", "", wire.to_body(msg), 0, 0, 0)
        self.counters["gossip_out"] += 1
        if kind in RESPONSE_KINDS and action.to is not None:
            try:
                self._transport.reply(action.to, data)
            except MeshError as exc:
                self.counters["gossip_dropped"] += 1
                log.debug("gossip reply to %s dropped: %s", action.to, exc)
            return
        key = action.to if action.to is not None else SEED_PREFIX + action.address
        if not action.address:
            self.counters["gossip_dropped"] += 1
            return
        self._transport.connect(key, action.address)   # no-op when linked; adopts a seed link
        if self._transport.is_up(key):
            self._send_now(key, data)
        else:
            waiting = self._waiting.get(action.address)
            if waiting is None:
                waiting = self._waiting[action.address] = deque(maxlen=_WAITING_PER_ADDRESS)
            if len(waiting) == _WAITING_PER_ADDRESS:
                self.counters["gossip_dropped"] += 1
            waiting.append(data)

    def _send_now(self, key: str, data: bytes) -> None:
        try:
            self._transport.send(key, data)
        except MeshError as exc:
            self.counters["gossip_dropped"] += 1
            log.debug("gossip to %s dropped: %s", key, exc)
