"""The node runtime: one event loop per process that wires agents, the directory and the
transport together, and carries out calls, one-way sends and publishes.

Theory of operation
-------------------
* ``call`` to a local agent runs the handler directly: no codec, no socket (arguments are
  passed by reference, as in any Python call). To a remote agent it encodes one REQUEST,
  queues it on the peer's link and waits on a future that the REPLY or ERROR resolves,
  its deadline passes (:class:`~mesh.errors.Timeout`; see :mod:`deadlines`) or the link going down fails
  (:class:`~mesh.errors.Unreachable`). Every pending call has a deadline; none can hang.
* The deadline travels in the envelope. A request that arrives after its deadline is
  dropped and counted: its caller has already given up. While its handler runs, the deadline
  is in a context variable, so the handler's own calls get what is left of the budget
  (:mod:`mesh.resilience.deadline`).
* Every agent has a bulkhead (:mod:`mesh.resilience.bulkhead`): at most ``max_concurrency``
  handlers at once, ``mailbox`` requests waiting; beyond that the caller gets ``Overloaded``
  at once. A queued request whose deadline passes is dropped when its turn comes.
* Callers keep a circuit breaker per target agent (:mod:`mesh.resilience.breaker`) and
  fail fast with ``CircuitOpen`` while it is open; ``call_any`` skips open targets; calls
  marked idempotent retry transient failures within their one budget (:mod:`mesh.resilience.retry`).
* Published messages reach each subscribing handler in order through a bounded queue with
  the overflow policy it chose (:mod:`subscriptions`).
* Incoming handlers start eagerly (:mod:`mesh.eager`); most finish at once and their reply
  leaves in the same batch as the other replies of that read.
* A handler's exception goes back as ERROR (type, message) and reaches the caller as
  :class:`~mesh.errors.RemoteError`; failures of the mesh itself at the target (unknown agent
  or method, undecodable body, shutting down) come back as their own error classes.
* Membership is SWIM gossip (:mod:`mesh.swim`, driven by :mod:`gossip`). A member's metadata
  (:mod:`membership`) lists its agents, subscriptions and load; when a member joins or
  changes, its agents enter the router; when it is declared dead, leaves, or our link to it
  drops, they leave it, and calls in flight to it fail with Unreachable at once.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from random import Random
from typing import Any, Iterable

from mesh._core import IMPLEMENTATION, codec, router, scoring
from mesh._core.wire import Flag, Kind
from mesh.agent import Agent, HandlerSpec
from mesh.eager import SYNC_DONE, run_eager
from mesh.errors import (WIRE_ERRORS, CircuitOpen, DecodeError, EncodeError, MeshError, Overloaded,
                         ProtocolError, RemoteError, Timeout, Unavailable, UnknownAgent, UnknownMethod,
                         Unreachable)
from mesh.kv.client import KV, RaftAgent
from mesh.node.singleton import Singleton
from mesh.node.subscriptions import Subscription
from mesh.node.consensus import ConsensusDriver
from mesh.node.deadlines import DeadlineQueue
from mesh.node.gossip import SEED_PREFIX, GossipDriver
from mesh.node.membership import NodeMeta, load_changed
from mesh.observe.handlers import HandlerStats
from mesh.observe.health import HealthWindow, calculate_system_health, mesh_health
from mesh.node.ops import OpsAgent
from mesh.raft.config import RaftConfig
from mesh.resilience.breaker import BreakerConfig, CircuitBreaker, State as BreakerState
from mesh.resilience.bulkhead import Mailbox
from mesh.resilience.deadline import budget_s, current_deadline_us
from mesh.resilience.retry import RETRYABLE, RetryPolicy
from mesh.security.acl import Action
from mesh.security.links import principal_of, split_seed
from mesh.node.authorization import Authorizer
from mesh.node.caller import current_agent, current_peer, envelope_src
from mesh.observe.logs import trace_id
from mesh.security.guard import GuardConfig, PeerGuard
from mesh.security.records import RecordSigner, RecordVerifier
from mesh.security.settings import resolve as resolve_security
from mesh.swim.config import SwimConfig
from mesh.swim.messages import EventKind, MemberEvent, State
from mesh.transport import Transport, TransportConfig

log = logging.getLogger(__name__)

_ORIGIN_HANDLER = 0   # ERROR body origin: the user's handler raised
_ORIGIN_MESH = 1      # the mesh at the target refused (unknown agent, bad body, ...)

_LIVE_STATES = (State.ALIVE, State.SUSPECT)
_GOSSIP_KINDS = (32, 63)   # the envelope kinds reserved for SWIM (see mesh._core.wire)
_RAFT_KINDS = (64, 95)


def _now_us() -> int:
    return time.time_ns() // 1000


_MAX_BREAKERS = 10_000     # targets with a breaker; the oldest closed ones go first beyond it
_STALE_PICKS = 2           # call_any picks again this often when the agent it chose is gone


class _Pending:
    __slots__ = ("future", "node", "agent", "method")

    def __init__(self, future: asyncio.Future, node: str, agent: str, method: str) -> None:
        self.future = future
        self.node = node
        self.agent = agent
        self.method = method


class _LocalSend:
    """What a one-way send to an agent on this node carries through the bulkhead in place of
    an envelope: the target, the method, no deadline."""

    __slots__ = ("dst", "subject", "deadline_us", "msg_id", "src", "trace_id")

    def __init__(self, dst: str, subject: str) -> None:
        self.dst = dst
        self.subject = subject
        self.deadline_us = 0
        self.msg_id = 0
        self.trace_id = trace_id.get()
        self.src = ""


class Node:
    """A mesh node: hosts agents, talks to peers.

    ``bind`` may use a wildcard port (``tcp://127.0.0.1:*``); :attr:`address` is the bound
    endpoint once started. ``seeds`` are addresses of nodes to join through. ``default_timeout``
    (seconds) applies to calls made without ``timeout=``; ``join_timeout`` bounds how long
    :meth:`start` waits for the seeds and the peers they name; on :meth:`stop`, handlers get
    ``drain_timeout`` to finish and peers ``hangup_timeout`` to read the last replies.
    ``gossip`` tunes SWIM (:class:`~mesh.swim.config.SwimConfig`); ``load_interval`` (seconds)
    is how often the node's load summary is looked at for re-publication.

    Raft: ``raft_voters`` are the bootstrap voters (the same list on every node); a node among
    them, or with ``raft_member=True`` (to be added later with ``node.kv.add_voter``), keeps a
    Raft log in ``data_dir``. ``raft`` tunes it (:class:`~mesh.raft.config.RaftConfig`).

    Resilience (:mod:`mesh.resilience`): ``breaker`` configures the circuit breaker kept per
    target agent (``None``: no breakers); ``retry`` is the policy of calls made with
    ``idempotent=True``.

    Security (:mod:`mesh.security.settings`): ``keys`` (a ``.key`` file or
    :class:`~mesh.security.keys.NodeKeys`) and ``trust`` (a folder or file of public keys, or a
    :class:`~mesh.security.trust.TrustStore`) put every link under CURVE, admit only trusted
    keys and sign this node's membership record; a seed may then be given as ``ID@ADDRESS``.
    Without keys the node runs in plaintext, on loopback addresses only (``insecure=True`` says
    it is meant). ``acl`` (a TOML policy file or :class:`~mesh.security.acl.Policy`) authorizes
    calls, topics and KV prefixes per peer; denials go to ``audit_log``.

    Observability (:mod:`mesh.observe`): ``metrics_port`` serves Prometheus metrics on
    ``http://metrics_host:port/metrics`` while the node runs (0: any free port, see
    :attr:`metrics_url`; None: no server); :meth:`health` gives the health score.
    ``http_port`` serves the live web page of the mesh (:mod:`mesh.observe.web`) on
    ``http://http_host:port/`` (0: any free port, see :attr:`http_url`; None: no page).
    """

    def __init__(self, node_id: str, bind: str = "tcp://127.0.0.1:*", seeds: Iterable[str] = (),
                 data_dir: str | os.PathLike | None = None, *, default_timeout: float = 30.0,
                 join_timeout: float = 10.0, drain_timeout: float = 5.0, hangup_timeout: float = 1.0,
                 limits: Any = None, transport: TransportConfig | None = None, seed: int | None = None,
                 gossip: SwimConfig | None = None, load_interval: float = 5.0,
                 raft_voters: Iterable[str] = (), raft: RaftConfig | None = None,
                 raft_member: bool = False, breaker: BreakerConfig | None = BreakerConfig(),
                 retry: RetryPolicy = RetryPolicy(), metrics_port: int | None = None,
                 metrics_host: str = "127.0.0.1", http_port: int | None = None, http_host: str = "127.0.0.1",
                 keys: Any = None, trust: Any = None, acl: Any = None,
                 audit_log: str | os.PathLike | None = None, insecure: bool = False,
                 guard: GuardConfig | None = None) -> None:
        raw = node_id.encode() if isinstance(node_id, str) else b""
        if not raw or len(raw) > 255 or raw[0] == 0 or node_id.startswith(SEED_PREFIX):
            raise ValueError(f"invalid node id {node_id!r}: 1..255 UTF-8 bytes, not starting with NUL or 'seed:'")
        if default_timeout <= 0:
            raise ValueError("default_timeout must be positive")
        self.node_id = node_id
        self.bind = bind
        seeds = list(seeds)
        self.security = resolve_security(node_id, bind, seeds, keys, trust, acl, audit_log, insecure)
        self.seeds = [split_seed(s)[1] for s in seeds]   # ID@ADDRESS: the id only picks the key
        self.data_dir = os.fspath(data_dir) if data_dir is not None else None
        self.default_timeout = default_timeout
        self.join_timeout = join_timeout
        self.drain_timeout = drain_timeout
        self.hangup_timeout = hangup_timeout
        self.limits = limits if limits is not None else codec.DEFAULT_LIMITS
        self.implementation = IMPLEMENTATION
        self.boot = time.time_ns()
        self.load_interval = load_interval
        rng_seed = seed if seed is not None else self.boot & 0xFFFFFFFF

        self._agents: dict[str, Agent] = {}
        self._boxes: dict[str, Mailbox] = {}          # agent name -> its bulkhead
        self._subs: dict[str, dict[str, Subscription]] = {}   # agent name -> handler -> subscription
        self._retiring: set[str] = set()               # draining before removal: not announced
        self.breaker_config = breaker
        self._breakers: dict[str, CircuitBreaker] = {}
        self.retry_policy = retry
        self._rng = Random(rng_seed ^ 0xB0FF)
        self._directory = router.Directory(node_id)
        self._local_topics = router.TopicTable()    # subscriber = (agent name, HandlerSpec)
        self._remote_topics = router.TopicTable()   # subscriber = node id
        self._remote_blocking = router.TopicTable() # the same, for subscriptions that block publishers
        self._scores = scoring.Scoreboard(seed=rng_seed)
        self._metas: dict[str, NodeMeta] = {}            # member id -> its published metadata
        self._routed_topics: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._links_down: set[str] = set()
        self._hanging_up: set[str] = set()   # left; our link closes when our calls to it end
        self._singletons: dict[str, Singleton] = {}
        # an idle node's health from the start, so its first load refresh need not re-announce
        self._load: dict[str, float] = {"handlers": 0.0, "calls_per_s": 0.0,
                                        "health": calculate_system_health(0.0, 0.0, 0.0)}
        self._load_mark = (0.0, 0)
        self._load_timer: asyncio.TimerHandle | None = None
        self._pending: dict[int, _Pending] = {}
        self._deadlines = DeadlineQueue()
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._ids = itertools.count(1)
        self._transport = Transport(node_id, bind, self._on_frame, self._on_link, transport,
                                    self.security.links)
        self._guard = PeerGuard(guard, self._ban)
        signer = verifier = None
        if self.security.links is not None:
            signer = RecordSigner(self.security.links.keys)
            verifier = RecordVerifier(self.security.links.trust)
            self.security.links.on_trust_change.append(verifier.forget)
        self._gossip = GossipDriver(node_id, self._transport, gossip or SwimConfig(), Random(rng_seed),
                                    self.limits, self._on_member, signer, verifier)
        self.raft_voters = tuple(dict.fromkeys(raft_voters))
        self._raft: ConsensusDriver | None = None
        if node_id in self.raft_voters or raft_member:
            if self.data_dir is None:
                raise ValueError(f"node {node_id!r} keeps a Raft log and needs a data_dir for it")
            self._raft = ConsensusDriver(node_id, self.raft_voters, self.data_dir, self._transport,
                                         raft or RaftConfig(), Random(rng_seed ^ 0x5EED), self.limits)
        self.kv = KV(self)
        self._shards: Any = None      # the shard router, made on the first call_key
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._started = False
        self._stopping = False
        self.counters: dict[str, int] = {
            "calls_out": 0, "calls_in": 0, "sends_out": 0, "sends_in": 0, "publishes_out": 0,
            "publishes_in": 0, "errors_out": 0, "handler_errors": 0, "timeouts": 0, "expired": 0,
            "late_replies": 0, "malformed": 0, "protocol_errors": 0, "rejected": 0, "circuit_open": 0,
            "retries": 0}
        self._acl = Authorizer(self.security.policy, self.security.audit, self.counters)
        self._handled = HandlerStats()        # per agent and method: runs, errors, handler time
        self._health = HealthWindow()
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self._metrics: Any = None             # the MetricsServer while running
        self.http_port = http_port
        self.http_host = http_host
        self._web: Any = None                 # the WebServer while running

    # -- public API --------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return self._transport.address or self.bind

    @property
    def stopping(self) -> bool:
        """True from the start of :meth:`stop`: new work is refused, agents are on their way out."""
        return self._stopping

    @property
    def agents(self) -> dict[str, Agent]:
        return dict(self._agents)

    def add(self, agent: Agent, *, singleton: bool = False, singleton_ttl: float = 5.0) -> Agent:
        """Host ``agent`` on this node. On a running node it starts at once and peers learn of it.

        ``singleton=True``: the agent runs on exactly one of the nodes that add it (under the
        same name), elected through the Raft KV, and moves to another when its node stops or
        dies (within ``singleton_ttl`` seconds). See :mod:`mesh.node.singleton`."""
        if not isinstance(agent, Agent):
            raise TypeError(f"{agent!r} is not a mesh.Agent")
        if singleton:
            if agent.name in self._singletons or agent.name in self._agents:
                raise ValueError(f"an agent named {agent.name!r} is already on node {self.node_id!r}")
            runner = self._singletons[agent.name] = Singleton(self, agent, singleton_ttl)
            if self._started:
                runner.start()
            return agent
        if agent.name in self._agents:
            raise ValueError(f"an agent named {agent.name!r} is already on node {self.node_id!r}")
        for pattern, _ in agent.topic_table:
            router.validate_pattern(pattern)
        box = Mailbox(agent.max_concurrency, agent.mailbox)
        self._agents[agent.name] = agent
        self._boxes[agent.name] = box
        agent.node = self
        self._directory.add_local(agent.name, agent.capabilities)
        if agent.capacity != 1.0:
            self._scores.add(agent.name, agent.capacity)
        subs = self._subs[agent.name] = {}
        for pattern, spec in agent.topic_table:
            sub = subs.get(spec.attr) or subs.setdefault(spec.attr, Subscription(agent, spec, self._spawn))
            self._local_topics.subscribe(pattern, sub)
        if self._started:
            self._spawn(self._start_agent(agent))
            self._announce()
        return agent

    def remove(self, name: str) -> Agent:
        """Take agent ``name`` off this node at once; requests queued for it are refused
        (``Unavailable``). :meth:`retire` lets its work finish first."""
        agent = self._agents.pop(name)
        self._refuse_queued(self._boxes.pop(name), f"agent {name!r} was removed from node {self.node_id!r}")
        if name in self._retiring:
            self._retiring.discard(name)    # already out of the directory
        else:
            self._directory.remove_local(name)
        subs = self._subs.pop(name)
        for pattern, spec in agent.topic_table:
            self._local_topics.unsubscribe(pattern, subs[spec.attr])
        self._handled.forget(name)
        if self._started:
            self._spawn(agent.on_stop())
            self._announce()
        agent.node = None
        return agent

    async def retire(self, name: str, timeout: float = 10.0, quiet_s: float = 0.2) -> Agent:
        """Take agent ``name`` off this node without failing its callers: stop routing new
        calls to it here and in the mesh (peers learn by gossip), let the calls it has — and
        those still arriving from peers that have not heard yet — finish, until none came for
        ``quiet_s`` seconds (at most ``timeout``), then remove it (``on_stop`` runs)."""
        agent = self._agents[name]
        box = self._boxes[name]
        if name not in self._retiring:
            self._retiring.add(name)
            self._directory.remove_local(name)
            if self._started:
                self._announce()
        if self._started:
            loop = self._loop
            deadline = loop.time() + timeout
            seen = -1
            while loop.time() < deadline:
                busy = box.running or box.queue
                arrivals = box.calls + box.running + len(box.queue) + box.rejected + box.expired
                if not busy and arrivals == seen:
                    break
                seen = arrivals if not busy else -1
                box.idle = asyncio.Event()
                try:
                    await asyncio.wait_for(box.idle.wait(), min(quiet_s, max(deadline - loop.time(), 0.0)))
                except asyncio.TimeoutError:
                    pass
                box.idle = None
            if box.running or box.queue:
                log.warning("retiring agent %s: %d calls still running after %.1fs", name,
                            box.running + len(box.queue), timeout)
        if self._agents.get(name) is agent:
            self.remove(name)
        return agent

    def agent_load(self, name: str) -> dict[str, float]:
        """Load figures of local agent ``name``: in flight, queued, latency_ms (EWMA of
        handler time), calls, errors, rejected (Overloaded), expired (deadline passed)."""
        box = self._boxes.get(name)
        if box is None:
            raise UnknownAgent(f"no agent named {name!r} on node {self.node_id!r}")
        return box.load()

    @property
    def metrics_url(self) -> str | None:
        """``http://host:port/metrics`` while the metrics server runs (the bound port), else None."""
        return self._metrics.url if self._metrics is not None else None

    @property
    def http_url(self) -> str | None:
        """``http://host:port/``, the live web page, while it is served (the bound port), else None."""
        return self._web.url if self._web is not None else None

    def health(self) -> dict[str, Any]:
        """Health score 0..100 (design document 5.1; :mod:`mesh.observe.health`): ``node`` for
        this node over the last minute, ``mesh`` the mean over live members that published one in
        their gossip load summary (this one included), and ``parts``: the three terms, their
        inputs (``avg_response_time_s``, ``throughput_per_s``, ``error_rate``), ``mesh_min``
        and ``members`` (how many scores the mesh figure covers)."""
        now = self._loop.time() if self._loop is not None else 0.0
        parts = self._health.parts(now, *self._health_totals())
        score = parts.pop("score")
        scores = [score]
        for m in self._gossip.members():
            meta = self._metas.get(m.id)
            if m.id != self.node_id and m.state in _LIVE_STATES and meta is not None and "health" in meta.load:
                scores.append(meta.load["health"])
        mean, parts["mesh_min"] = mesh_health(scores)
        parts["members"] = len(scores)
        return {"node": score, "mesh": mean, "parts": parts}

    def _health_totals(self) -> tuple[int, int, float]:
        calls, errors, busy_s = self._handled.totals()
        refused = self.counters["rejected"] + self.counters["expired"]
        return calls + refused, errors + refused, busy_s

    def breaker_state(self, agent: str) -> str:
        """``closed``, ``open`` or ``half_open``: this node's circuit breaker for ``agent``."""
        b = self._breakers.get(agent)
        return "closed" if b is None else b.state.name.lower()

    async def start(self) -> None:
        """Bind, join through the seeds, then start the agents."""
        if self._started:
            raise RuntimeError(f"node {self.node_id!r} is already started")
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        if self.metrics_port is not None:
            from mesh.observe.metrics import MetricsServer   # prometheus-client only when asked
            self._metrics = await MetricsServer(self, self.metrics_host, self.metrics_port).start()
        if self.http_port is not None:
            from mesh.observe.web import WebServer
            try:
                self._web = await WebServer(self, self.http_host, self.http_port).start()
            except BaseException:
                self._close_metrics()
                raise
        self._transport.start()
        log.info("node %s listening on %s (%s hot path)", self.node_id, self.address, IMPLEMENTATION)
        self._started = True
        self._gossip.start(self.address, self._meta().to_bytes())
        self._load_mark = (self._loop.time(), 0)
        self._health.sample(self._loop.time(), *self._health_totals())
        self._load_timer = self._loop.call_later(self.load_interval, self._refresh_load)
        try:
            if self._raft is not None:
                self._raft.start()
                self.add(RaftAgent(self._raft))
            self.add(OpsAgent(self))
            await self._join()
        except BaseException:
            self._gossip.close()
            self._load_timer.cancel()
            self._transport.close()
            self._close_metrics()
            self._started = False
            raise
        for agent in list(self._agents.values()):
            await self._start_agent(agent)
        for runner in self._singletons.values():
            runner.start()

    async def stop(self) -> None:
        """Stop gracefully: refuse new work, let in-flight handlers finish (up to
        ``drain_timeout``), fail what is left, tell the mesh we leave, stop agents, close sockets."""
        if not self._started or self._stopping:
            return
        # Singletons and shards first, while the KV still answers: the next holder or owner
        # takes over at once instead of waiting for our leases to run out.
        stops = [r.stop() for r in self._singletons.values()]
        if self._shards is not None:
            stops.append(self._shards.stop())
        await asyncio.gather(*stops, return_exceptions=True)
        self._stopping = True
        for name, box in self._boxes.items():
            self._refuse_queued(box, f"node {self.node_id} is stopping")
        if self._tasks:
            done, left = await asyncio.wait(set(self._tasks), timeout=self.drain_timeout)
            for task in left:
                task.cancel()
        for msg_id in list(self._pending):
            self._fail_pending(msg_id, Unavailable(f"node {self.node_id} is stopping"))
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        if self._load_timer is not None:
            self._load_timer.cancel()
        if self._raft is not None:
            if self._raft.is_leader:      # hand over now rather than leave the others to time out
                try:
                    await self._raft.transfer_leadership(None, min(1.0, self.drain_timeout))
                except MeshError as exc:
                    log.info("leadership transfer on stop failed: %s", exc)
            self._raft.close()
        self._gossip.leave()
        self._gossip.close()
        # Our calls are over: hang up on every peer, then keep our ROUTER open until they have
        # hung up on us too, which they do once they have read our last replies.
        self._transport.disconnect_all()
        left = await self._transport.wait_hangups(self.hangup_timeout)
        if left:
            log.info("closing with %d peers still connected after %.1fs", left, self.hangup_timeout)
        for agent in list(self._agents.values()):
            try:
                await agent.on_stop()
            except Exception:
                log.exception("on_stop of agent %s failed", agent.name)
        self._transport.close()
        self._close_metrics()
        self._started = False
        log.info("node %s stopped", self.node_id)

    def _close_metrics(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._web is not None:
            self._web.close()
            self._web = None

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def call(self, agent: str, method: str, *args: Any, timeout: float | None = None,
                   idempotent: bool = False, retry: RetryPolicy | None = None, **kwargs: Any) -> Any:
        """Call ``agent.method(*args, **kwargs)`` wherever the agent lives; return its result.

        ``timeout`` (seconds, default ``default_timeout``) is the whole budget, cut to what is
        left when called from a handler serving a call with a deadline. ``idempotent=True``
        retries transient failures with backoff inside that budget (``retry`` overrides the
        node's policy and implies it). Raises Timeout, Unreachable, UnknownAgent/UnknownMethod,
        Overloaded, CircuitOpen (the target's breaker is open), or RemoteError if the handler raised.
        """
        self._check_running()
        t = self._budget(timeout, agent, method)
        policy = self._policy(idempotent, retry)
        if policy is None:
            return await self._call_once(agent, method, args, kwargs, t)
        return await self._retrying(policy, t, lambda left: self._call_once(agent, method, args, kwargs, left))

    async def call_any(self, capability: str, method: str, *args: Any, timeout: float | None = None,
                       idempotent: bool = False, retry: RetryPolicy | None = None, **kwargs: Any) -> Any:
        """Call ``method`` on one agent offering ``capability``, picked by load score
        (power of two choices over in-flight calls, latency and error rate), skipping targets
        whose circuit is open. Budget and retries as in :meth:`call`; a retry may pick another agent."""
        self._check_running()
        t = self._budget(timeout, capability, method)
        policy = self._policy(idempotent, retry)
        if policy is None:
            return await self._call_any_once(capability, method, args, kwargs, t)
        return await self._retrying(policy, t,
                                    lambda left: self._call_any_once(capability, method, args, kwargs, left))

    async def call_key(self, capability: str, key: str | bytes, method: str, *args: Any,
                       timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``method`` on the agent of ``capability`` that owns ``key``'s shard
        (consistent hashing over the shard map in the Raft KV; see :mod:`mesh.patterns.sharding`)."""
        return await self.shards.call_key(capability, key, method, *args, timeout=timeout, **kwargs)

    @property
    def shards(self) -> Any:
        """The node's :class:`~mesh.patterns.sharding.ShardRouter` (made on first use): shard
        maps, ``move(capability, partition, agent)``, and fencing for ``Sharded`` agents."""
        if self._shards is None:
            from mesh.patterns.sharding import ShardRouter
            self._shards = ShardRouter(self)
        return self._shards

    def _budget(self, timeout: float | None, target: str, method: str) -> float:
        t = self.default_timeout if timeout is None else timeout
        if t <= 0:
            raise ValueError("timeout must be positive")
        inherited = current_deadline_us.get()
        if inherited:
            t = budget_s(t, inherited, _now_us())
            if t <= 0:
                # the call being served has run out of time: don't start work for it
                self.counters["expired"] += 1
                raise Timeout(f"no time left for {target}.{method}: the deadline of the call being served has passed")
        return t

    def _policy(self, idempotent: bool, retry: RetryPolicy | None) -> RetryPolicy | None:
        """The retry policy of a call, or None when it is tried once."""
        policy = retry if retry is not None else (self.retry_policy if idempotent else None)
        return None if policy is None or policy.attempts == 1 else policy

    async def _retrying(self, policy: RetryPolicy, t: float, attempt: Any) -> Any:
        loop = self._loop
        deadline = loop.time() + t
        for k in range(policy.attempts):
            try:
                return await attempt(deadline - loop.time())
            except RETRYABLE:
                if k + 1 >= policy.attempts:
                    raise
                wait = policy.backoff_s(k, self._rng)
                if loop.time() + wait >= deadline:
                    raise
                self.counters["retries"] += 1
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _call_once(self, agent: str, method: str, args: tuple, kwargs: dict, t: float) -> Any:
        # The mesh's own agents (``_raft.*``, ...) route around failures themselves: a breaker
        # would only hold a client off a Raft group that has already recovered.
        breaker = None
        if self.breaker_config is not None and agent[:1] != "_":
            breaker = self._breakers.get(agent) or self._new_breaker(agent)
        if breaker is not None and not breaker.allow(self._loop.time()):
            self.counters["circuit_open"] += 1
            raise CircuitOpen(f"circuit to {agent!r} is open after repeated failures; failing fast")
        try:
            target = self._agents.get(agent)
            if target is not None:
                result = await self._call_local(target, method, args, kwargs, t)
            else:
                result = await self._call_remote(self._node_of(agent), agent, method, args, kwargs, t)
        except BaseException as exc:
            if breaker is not None:
                if isinstance(exc, self.breaker_config.failures):
                    breaker.record(False, self._loop.time())
                else:
                    breaker.forget()
            raise
        if breaker is not None:
            breaker.record(True, self._loop.time())
        return result

    def _new_breaker(self, agent: str) -> CircuitBreaker:
        breakers = self._breakers
        if len(breakers) >= _MAX_BREAKERS:
            for name in [n for n, b in breakers.items() if b.state is BreakerState.CLOSED][:len(breakers) // 4]:
                del breakers[name]
        breaker = breakers[agent] = CircuitBreaker(self.breaker_config)
        return breaker

    async def _call_any_once(self, capability: str, method: str, args: tuple, kwargs: dict, t: float) -> Any:
        providers = self._directory.providers(capability)
        if not providers:
            raise UnknownAgent(f"no agent offers capability {capability!r}")
        breakers = self._breakers
        if breakers:
            now = self._loop.time()
            providers = [p for p in providers if p not in breakers or not breakers[p].refusing(now)]
            if not providers:
                self.counters["circuit_open"] += 1
                raise CircuitOpen(f"every agent offering {capability!r} has an open circuit")
        scores = self._scores
        stale = 0
        while True:
            agent = scores.pick(providers)
            scores.begin(agent)
            t0 = time.perf_counter_ns()
            ok = False
            try:
                result = await self._call_once(agent, method, args, kwargs, t)
                ok = True
                return result
            except UnknownAgent:
                # it left (retired, moved) after our directory named it: the work was not done
                stale += 1
                if stale > _STALE_PICKS or len(providers) < 2:
                    raise
                providers = [p for p in providers if p != agent]
            finally:
                scores.end(agent, (time.perf_counter_ns() - t0) / 1000.0, ok)

    async def send(self, agent: str, method: str, *args: Any, **kwargs: Any) -> None:
        """One-way: deliver ``agent.method(*args, **kwargs)`` without waiting for a result.
        Sends to the same node are batched; errors at the target are only counted there (a
        remote target whose mailbox is full drops the message and counts it ``rejected``; a
        local one raises Overloaded at once)."""
        self._check_running()
        target = self._agents.get(agent)
        if target is not None:       # through the agent's bulkhead, as a send from a peer would
            spec = self._spec(target, method)
            box = self._boxes[agent]
            admit = box.admit()
            if admit < 0:
                raise self._overloaded(box, agent)
            env = _LocalSend(agent, method)
            if admit:
                self._run_request(box, target, spec, "", env, False, args, kwargs)
            else:
                box.queue.append(("", env, False, spec, args, kwargs))
            return
        node = self._node_of(agent)
        data = self._encode(Kind.SEND, next(self._ids), 0, agent, method, (args, kwargs), 0)
        self._transport.send(node, data, flush=False)
        self.counters["sends_out"] += 1

    async def publish(self, topic: str, payload: Any = None, *, timeout: float | None = None) -> None:
        """Publish ``payload`` on ``topic``. It crosses the network once per subscribing node.

        Returns at once, unless a subscriber chose ``overflow="block"`` and its queue is full:
        then it returns when the message found room (at most ``timeout`` seconds, default
        ``default_timeout``; then Timeout)."""
        self._check_running()
        nodes = self._remote_topics.match(topic)
        acks: list[asyncio.Future] = []
        if nodes:
            blocking = self._remote_blocking.match(topic) if len(self._remote_blocking) else ()
            data = self._encode(Kind.PUBLISH, next(self._ids), 0, "", topic, payload, 0)
            for node in nodes:
                if node in blocking:
                    acks.append(self._publish_acked(node, topic, payload))
                else:
                    self._try_send(node, data, flush=False)
            self.counters["publishes_out"] += 1
        for sub in self._local_topics.match(topic):
            if sub.full and sub.blocking:
                await asyncio.wait_for(sub.wait_room(), self.default_timeout if timeout is None else timeout)
            sub.offer(topic, payload)
        if acks:
            await asyncio.gather(*acks)

    def _publish_acked(self, node: str, topic: str, payload: Any) -> asyncio.Future:
        """Send one PUBLISH that the subscriber node answers once its blocking subscriptions
        took it; the answer resolves the returned future (errors and deadline as for calls)."""
        msg_id = next(self._ids)
        t = self.default_timeout
        data = self._encode(Kind.PUBLISH, msg_id, 0, "", topic, payload, _now_us() + int(t * 1e6), Flag.ACK)
        try:
            self._transport.send(node, data, flush=False)
        except MeshError as exc:
            future = self._loop.create_future()
            future.set_exception(exc)
            return future
        return self._expect_answer(msg_id, node, "", topic, t)

    def members(self) -> list[dict[str, Any]]:
        """Every member this node knows (itself included), by id: address, SWIM state
        (alive/suspect/dead/left), incarnation, whether our link to it is up, and its metadata
        (agents with their capabilities, topic patterns, load summary)."""
        out = []
        for m in sorted(self._gossip.members(), key=lambda m: m.id):
            me = m.id == self.node_id
            meta = self._meta() if me else self._metas.get(m.id, NodeMeta())
            out.append({"id": m.id, "address": m.address, "state": m.state.name.lower(),
                        "incarnation": m.incarnation, "self": me,
                        "link": "self" if me else ("up" if self._transport.is_up(m.id) else "down"),
                        "agents": {a: list(c) for a, c in meta.agents.items()},
                        "topics": list(meta.topics), "load": dict(meta.load)})
        return out

    async def leave(self) -> None:
        """Leave the mesh gracefully; the same as :meth:`stop`."""
        await self.stop()

    def directory(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Every reachable agent: name -> (node id, capabilities)."""
        return self._directory.snapshot()

    def stats(self) -> dict[str, int]:
        out = dict(self.counters)
        out.update(self._transport.counters)
        out.update(self._gossip.counters)
        out.update(self._guard.counters)
        if self.security.links is not None:
            out.update(self.security.links.counters)
        if self._raft is not None:
            out.update(self._raft.counters)
        core = self._gossip.core
        if core is not None:
            out["members_live"] = core.live_count
            out["gossip_health"] = core.health
            out["incarnation"] = core.incarnation
        out["pending_calls"] = len(self._pending)
        out["running_handlers"] = len(self._tasks)
        out["subscription_drops"] = sum(sub.dropped for subs in self._subs.values() for sub in subs.values())
        out["breakers_open"] = sum(b.state is not BreakerState.CLOSED for b in self._breakers.values())
        return out

    def subscription_stats(self) -> list[dict[str, Any]]:
        """One entry per subscribing handler on this node: queued, capacity, overflow policy,
        delivered, dropped, handler errors, publishers blocked waiting for room."""
        return [sub.stats() for subs in self._subs.values() for sub in subs.values()]

    # -- calls -------------------------------------------------------------------------------

    def _check_running(self) -> None:
        if not self._started or self._stopping:
            raise Unavailable(f"node {self.node_id} is not running")

    def _node_of(self, agent: str) -> str:
        node = self._directory.node_of(agent)
        if node is not None:
            return node
        for node, meta in self._metas.items():
            if agent in meta.agents:
                member = self._gossip.member(node)
                state = member.state.name.lower() if member is not None else "gone"
                if state in ("alive", "suspect") and node in self._links_down:
                    state = "not linked"
                raise Unreachable(f"agent {agent!r} is on node {node!r}, which is {state}")
        raise UnknownAgent(f"no agent named {agent!r} in the directory of node {self.node_id!r}")

    @staticmethod
    def _spec(agent: Agent, method: str) -> HandlerSpec:
        spec = agent.rpc_table.get(method)
        if spec is None:
            raise UnknownMethod(f"agent {agent.name!r} has no rpc method {method!r}")
        return spec

    def _encode(self, kind: int, msg_id: int, corr_id: int, dst: str, subject: str, body: Any,
                deadline_us: int, flags: int = 0) -> bytes:
        # the sending agent and the trace travel with the message (mesh.node.caller)
        trace = trace_id.get() or self._rng.getrandbits(63) + 1
        data = codec.encode(kind, msg_id, corr_id, envelope_src(self.node_id, current_agent.get()), dst, subject,
                            body, flags, deadline_us, trace)
        if len(data) > self.limits.max_frame_bytes:
            raise EncodeError(f"message of {len(data)} bytes exceeds max_frame_bytes={self.limits.max_frame_bytes}")
        return data

    async def _call_local(self, agent: Agent, method: str, args: tuple, kwargs: dict, t: float) -> Any:
        """Run the handler on the caller's stack, in the agent's bulkhead, under the budget."""
        self._check_running()
        spec = self._spec(agent, method)
        box = self._boxes[agent.name]
        admit = box.admit()
        if admit < 0:
            raise self._overloaded(box, agent.name)
        deadline = self._loop.time() + t
        if not admit:
            await self._wait_for_slot(box, agent.name, method, t)
        else:
            box.running += 1
        fn = getattr(agent, spec.attr)
        # Restored by value, not with reset(token): a caller started eagerly may suspend in
        # here and resume in its task's copy of the context, where the tokens are not valid.
        outer_deadline, outer_agent = current_deadline_us.get(), current_agent.get()
        current_deadline_us.set(_now_us() + int(t * 1e6))
        current_agent.set(agent.name)     # its own calls speak for it
        t0 = time.perf_counter()
        ok = False
        try:
            if spec.eager or not spec.is_async:
                state, value = run_eager(fn, args, kwargs, spec.is_async)
                if state is SYNC_DONE:
                    ok = True
                    return value
            else:
                value = fn(*args, **kwargs)
            value = await asyncio.wait_for(value, deadline - self._loop.time())
            ok = True
            return value
        except asyncio.TimeoutError:
            self.counters["timeouts"] += 1
            raise Timeout(f"{agent.name}.{method} did not answer within {t:g} s") from None
        except (MeshError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise RemoteError(type(exc).__name__, str(exc), agent.name, method) from exc
        finally:
            current_deadline_us.set(outer_deadline)
            current_agent.set(outer_agent)
            self._request_done(box, agent.name, t0, ok, method)

    async def _wait_for_slot(self, box: Mailbox, name: str, method: str, t: float) -> None:
        """Queue a local call in the agent's mailbox; the slot is ours when the future is set."""
        waiter = self._loop.create_future()
        box.queue.append((None, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), t)
        except asyncio.TimeoutError:
            self.counters["timeouts"] += 1
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._request_done(box, name, time.perf_counter(), False)   # granted too late
            waiter.cancel()
            raise Timeout(f"{name}.{method} waited {t:g} s for a free slot") from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._request_done(box, name, time.perf_counter(), False)
            waiter.cancel()
            raise

    async def _call_remote(self, node: str, agent: str, method: str, args: tuple, kwargs: dict,
                           t: float) -> Any:
        self._check_running()
        msg_id = next(self._ids)
        data = self._encode(Kind.REQUEST, msg_id, 0, agent, method, (args, kwargs), _now_us() + int(t * 1e6))
        self._transport.send(node, data)
        future = self._expect_answer(msg_id, node, agent, method, t)
        self.counters["calls_out"] += 1
        pending = self._pending
        try:
            return await future
        finally:
            pending.pop(msg_id, None)   # only still there if we were cancelled
            if self._hanging_up and node in self._hanging_up and \
                    not any(p.node == node for p in pending.values()):
                self._close_link(node)   # its last answer is in: let it close

    def _expect_answer(self, msg_id: int, node: str, agent: str, method: str, t: float) -> asyncio.Future:
        """The future of request ``msg_id`` sent to ``node``: its REPLY or ERROR resolves it,
        or its deadline (``t`` s) or the loss of the link fails it."""
        future = self._loop.create_future()
        pending = self._pending
        pending[msg_id] = _Pending(future, node, agent, method)
        if self._deadlines.push(self._loop.time() + t, msg_id):
            self._arm_deadline_timer()
        self._deadlines.compact(pending, len(pending))
        return future

    def _arm_deadline_timer(self) -> None:
        when = self._deadlines.next_at()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_timer = None if when is None else self._loop.call_at(when, self._expire_due)

    def _expire_due(self) -> None:
        self._deadline_timer = None
        for msg_id in self._deadlines.pop_due(self._loop.time(), self._pending):
            p = self._pending[msg_id]
            self.counters["timeouts"] += 1
            self._fail_pending(msg_id, Timeout(f"{p.agent}.{p.method} on node {p.node} did not answer in time"))
        self._arm_deadline_timer()

    def _fail_pending(self, msg_id: int, exc: BaseException) -> None:
        p = self._pending.pop(msg_id, None)
        if p is not None and not p.future.done():
            p.future.set_exception(exc)

    # -- receiving ---------------------------------------------------------------------------

    def _on_frame(self, peer: str, data: bytes, from_router: bool) -> None:
        guard = self._guard
        if not guard.admit(peer, self._loop.time()):
            return          # throttled or banned (mesh.security.guard)
        try:
            envelopes = codec.decode_frame(data, self.limits)
        except DecodeError as exc:
            self.counters["malformed"] += 1
            guard.bad(peer, self._loop.time())
            log.debug("malformed frame from %s dropped: %s", peer, exc)
            return
        for env in envelopes:
            kind = env.kind
            if kind == Kind.REPLY:
                self._handle_reply(env)
            elif kind == Kind.REQUEST:
                self._handle_request(peer, env, True)
            elif kind == Kind.SEND:
                self._handle_request(peer, env, False)
            elif kind == Kind.PUBLISH:
                self._handle_publish(peer, env)
            elif kind == Kind.ERROR:
                self._handle_error(env)
            elif _GOSSIP_KINDS[0] <= kind <= _GOSSIP_KINDS[1]:
                if not self._gossip.handle(peer, env, from_router):
                    guard.bad(peer, self._loop.time())
            elif _RAFT_KINDS[0] <= kind <= _RAFT_KINDS[1] and self._raft is not None:
                if not self._raft.handle(peer, env, from_router):
                    guard.bad(peer, self._loop.time())
            else:
                self.counters["protocol_errors"] += 1
                guard.bad(peer, self._loop.time())
                log.debug("unknown envelope kind %d from %s dropped", kind, peer)

    def _answered(self, env: Any) -> _Pending | None:
        """The pending call a REPLY/ERROR answers, if its caller still waits."""
        p = self._pending.pop(env.corr_id, None)
        if p is None:
            self.counters["late_replies"] += 1   # timed out, cancelled, or never ours
            return None
        return None if p.future.done() else p

    def _handle_reply(self, env: Any) -> None:
        p = self._answered(env)
        if p is None:
            return
        try:
            p.future.set_result(codec.load_body(env.body, self.limits))
        except DecodeError as exc:
            p.future.set_exception(exc)

    def _handle_error(self, env: Any) -> None:
        p = self._answered(env)
        if p is None:
            return
        try:
            type_name, message, origin = codec.load_body(env.body, self.limits)
            type_name, message = str(type_name), str(message)
        except (DecodeError, TypeError, ValueError):
            p.future.set_exception(ProtocolError(f"malformed ERROR from node {p.node}"))
            return
        cls = WIRE_ERRORS.get(type_name) if origin == _ORIGIN_MESH else None
        p.future.set_exception(cls(message) if cls else RemoteError(type_name, message, p.agent, p.method))

    def _handle_request(self, peer: str, env: Any, want_reply: bool) -> None:
        self.counters["calls_in" if want_reply else "sends_in"] += 1
        try:
            if self._stopping:
                raise Unavailable(f"node {self.node_id} is stopping")
            agent = self._agents.get(env.dst)
            if agent is None:
                raise UnknownAgent(f"no agent named {env.dst!r} on node {self.node_id!r}")
            if self._acl.active and env.dst[:1] != "_":
                self._acl.require(peer, env.src, Action.CALL, f"{env.dst}.{env.subject}", env.trace_id)
            spec = self._spec(agent, env.subject)
            box = self._boxes[env.dst]
            if env.deadline_us and env.deadline_us < _now_us():
                self.counters["expired"] += 1   # the caller has given up: don't do the work
                box.expired += 1
                return
            body = codec.load_body(env.body, self.limits)
            if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], list)
                    and isinstance(body[1], dict)):
                raise ProtocolError("request body must be [args, kwargs]")
            admit = box.admit()
            if admit < 0:
                raise self._overloaded(box, env.dst)
        except MeshError as exc:
            if want_reply:
                self._reply_error(peer, env, type(exc).__name__, str(exc), _ORIGIN_MESH)
            return
        if admit:
            self._run_request(box, agent, spec, peer, env, want_reply, body[0], body[1])
        else:
            box.queue.append((peer, env, want_reply, spec, body[0], body[1]))

    def _run_request(self, box: Mailbox, agent: Agent, spec: HandlerSpec, peer: str, env: Any,
                     want_reply: bool, args: list, kwargs: dict) -> None:
        box.running += 1
        fn = getattr(agent, spec.attr)
        # the handler's own calls inherit what is left of this request's deadline, its
        # trace, and speak for its agent (mesh.node.caller)
        token = current_deadline_us.set(env.deadline_us)
        contexts = (current_agent.set(env.dst), trace_id.set(env.trace_id),
                    current_peer.set((peer, env.src)))
        t0 = time.perf_counter()
        try:
            try:
                if spec.eager or not spec.is_async:
                    state, value = run_eager(fn, args, kwargs, spec.is_async)
                else:
                    state, value = None, fn(*args, **kwargs)
            except Exception as exc:
                self._handler_failed(peer, env, want_reply, exc)
                self._request_done(box, env.dst, t0, False, env.subject)
                return
            if state is SYNC_DONE:
                if want_reply:
                    self._reply(peer, env, value)
                self._request_done(box, env.dst, t0, True, env.subject)
            else:
                self._spawn(self._finish_request(box, t0, peer, env, want_reply, value))
        finally:
            current_deadline_us.reset(token)
            current_agent.reset(contexts[0])
            trace_id.reset(contexts[1])
            current_peer.reset(contexts[2])

    async def _finish_request(self, box: Mailbox, t0: float, peer: str, env: Any, want_reply: bool,
                              awaitable: Any) -> None:
        try:
            value = await awaitable
        except Exception as exc:
            self._handler_failed(peer, env, want_reply, exc)
            self._request_done(box, env.dst, t0, False, env.subject)
            return
        except BaseException:
            self._request_done(box, env.dst, t0, False, env.subject)   # cancelled (the node is stopping)
            raise
        if want_reply:
            # flush=False: the replies of handlers that finish in the same loop iteration
            # (a Raft commit wakes many at once) leave together, one frame per peer
            self._reply(peer, env, value, flush=False)
        self._request_done(box, env.dst, t0, True, env.subject)

    def _request_done(self, box: Mailbox, name: str, t0: float, ok: bool, method: str | None = None) -> None:
        elapsed = time.perf_counter() - t0
        box.done(elapsed * 1000.0, ok)
        if method is not None:      # a handler ran (not a slot granted too late)
            self._handled.record(name, method, elapsed, ok)
        if box.queue and box.running < box.limit:
            self._drain_mailbox(box, name)

    def _drain_mailbox(self, box: Mailbox, name: str) -> None:
        """Start queued requests while the agent has free slots. A handler that finishes at
        once lands back here through _request_done; the loop below carries on for it."""
        if box.draining:
            return
        box.draining = True
        try:
            while box.queue and box.running < box.limit:
                item = box.queue.popleft()
                if item[0] is None:                 # a local caller waiting for a slot
                    waiter = item[1]
                    if not waiter.done():
                        box.running += 1
                        waiter.set_result(None)
                    continue
                peer, env, want_reply, spec, args, kwargs = item
                if env.deadline_us and env.deadline_us < _now_us():
                    self.counters["expired"] += 1   # it waited past its deadline: drop it
                    box.expired += 1
                    continue
                agent = self._agents.get(name)
                if agent is None:
                    break
                self._run_request(box, agent, spec, peer, env, want_reply, args, kwargs)
        finally:
            box.draining = False

    def _overloaded(self, box: Mailbox, name: str) -> Overloaded:
        box.rejected += 1
        self.counters["rejected"] += 1
        return Overloaded(f"agent {name!r} on node {self.node_id!r} is overloaded "
                          f"({box.running} running, {len(box.queue)} queued)")

    def _refuse_queued(self, box: Mailbox, why: str) -> None:
        """Answer every request still waiting in ``box`` with Unavailable: none was started,
        so the caller may safely try elsewhere."""
        while box.queue:
            item = box.queue.popleft()
            if item[0] is None:
                if not item[1].done():
                    item[1].set_exception(Unavailable(why))
            elif item[2]:
                self._reply_error(item[0], item[1], "Unavailable", why, _ORIGIN_MESH)

    def _handler_failed(self, peer: str, env: Any, want_reply: bool, exc: Exception) -> None:
        self.counters["handler_errors"] += 1
        if want_reply:
            # a mesh error (Unavailable, NotLeader, Timeout of a nested call...) keeps its class
            origin = _ORIGIN_MESH if type(exc).__name__ in WIRE_ERRORS and isinstance(exc, MeshError) \
                else _ORIGIN_HANDLER
            self._reply_error(peer, env, type(exc).__name__, str(exc), origin)
        else:
            log.warning("one-way %s.%s from %s raised %r", env.dst, env.subject, peer, exc)

    def _reply(self, peer: str, env: Any, value: Any, flush: bool = True) -> None:
        try:
            data = self._encode(Kind.REPLY, next(self._ids), env.msg_id, env.src, "", value, 0)
        except EncodeError as exc:
            self._reply_error(peer, env, "EncodeError", f"result of {env.dst}.{env.subject}: {exc}",
                              _ORIGIN_HANDLER)
            return
        self._transport.reply(peer, data, flush)

    def _reply_error(self, peer: str, env: Any, type_name: str, message: str, origin: int) -> None:
        self.counters["errors_out"] += 1
        data = codec.encode(Kind.ERROR, next(self._ids), env.msg_id, self.node_id, env.src, "",
                            (type_name, message[:4096], origin), 0, 0, 0)
        self._transport.reply(peer, data)

    def authorize(self, action: Action, resource: str) -> None:
        """Raise :class:`~mesh.errors.Unauthorized` (and audit it) unless the node and agent
        whose request the running handler serves may do ``action`` on ``resource`` under the
        ACL: for handlers that guard resources of their own. The node itself checks calls,
        topics and the KV (:mod:`mesh.node.authorization`); calls made on this node are never
        refused."""
        self._acl.require_caller(action, resource)

    def _handle_publish(self, peer: str, env: Any) -> None:
        self.counters["publishes_in"] += 1
        acked = env.flags & Flag.ACK
        subscribers = self._local_topics.match(env.subject)
        if subscribers and self._acl.active and \
                not self._acl.allows(peer, env.src, Action.PUBLISH, env.subject, env.trace_id):
            if acked:
                why = self._acl.denied(peer, env.src, Action.PUBLISH, env.subject)
                self._reply_error(peer, env, "Unauthorized", str(why), _ORIGIN_MESH)
            return
        if not subscribers:
            if acked:
                self._reply(peer, env, None, flush=False)
            return
        try:
            payload = codec.load_body(env.body, self.limits)
        except DecodeError:
            self.counters["malformed"] += 1
            return
        waiting = None
        for sub in subscribers:
            # A full blocking subscription holds the publisher's ack back, for as many
            # publishers as it has queue slots; a publisher that does not wait (no ACK flag)
            # or one too many has its message dropped and counted.
            if acked and sub.blocking and sub.full and sub.blocked < sub.spec.queue:
                waiting = waiting or []
                waiting.append(sub)
            else:
                sub.offer(env.subject, payload)
        if waiting:
            self._spawn(self._offer_when_room(peer, env, payload, waiting))
        elif acked:
            self._reply(peer, env, None, flush=False)

    async def _offer_when_room(self, peer: str, env: Any, payload: Any, subs: list[Subscription]) -> None:
        for sub in subs:
            left = (env.deadline_us - _now_us()) / 1e6 if env.deadline_us else self.default_timeout
            try:
                await asyncio.wait_for(sub.wait_room(), max(left, 0.0))
            except asyncio.TimeoutError:
                sub.dropped += 1     # the publisher has given up waiting
                continue
            sub.offer(env.subject, payload)
        self._reply(peer, env, None, flush=False)

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_agent(self, agent: Agent) -> None:
        try:
            await agent.on_start()
        except Exception:
            log.exception("on_start of agent %s failed", agent.name)

    # -- membership (SWIM gossip; see gossip.py) ------------------------------------------

    def _meta(self) -> NodeMeta:
        return NodeMeta(agents={name: a.capabilities for name, a in self._agents.items()
                                if name not in self._retiring},
                        topics=tuple(sorted({p for a in self._agents.values() for p, _ in a.topic_table})),
                        blocking=tuple(sorted({p for a in self._agents.values() for p, spec in a.topic_table
                                               if spec.overflow == "block"})),
                        capacity={name: float(a.capacity) for name, a in self._agents.items()
                                  if a.capacity != 1.0 and name not in self._retiring},
                        load=self._load)

    def _announce(self) -> None:
        self._gossip.set_meta(self._meta().to_bytes())

    def _refresh_load(self) -> None:
        """Publish the load summary when it moved notably (each publication is a broadcast)."""
        now = self._loop.time()
        calls = self.counters["calls_in"] + self.counters["sends_in"]
        elapsed = max(now - self._load_mark[0], 1e-3)
        load = {"handlers": float(len(self._tasks)), "calls_per_s": round((calls - self._load_mark[1]) / elapsed, 1)}
        self._load_mark = (now, calls)
        totals = self._health_totals()
        self._health.sample(now, *totals)
        load["health"] = round(self._health.parts(now, *totals)["score"], 1)
        if load_changed(self._load, load) or load_changed(load, self._load):
            self._load = load
            self._announce()
        self._load_timer = self._loop.call_later(self.load_interval, self._refresh_load)

    def _try_send(self, node: str, data: bytes, flush: bool = True) -> None:
        try:
            self._transport.send(node, data, flush)
        except MeshError as exc:
            log.debug("send to %s failed: %s", node, exc)

    def _on_link(self, key: str, up: bool) -> None:
        if up:
            self._gossip.link_up(key, self._transport.links()[key][0])
            if key in self._links_down:
                self._links_down.discard(key)
                self._route(key)
            self._changed.set()
            return
        # Replies travel on this link, so only its loss proves that calls in flight will get
        # no answer. Routing stops until the link is back or gossip says where the node went.
        self._links_down.add(key)
        self._unroute(key, "link lost")
        self._fail_calls_to(key, f"node {key} went away before answering")
        if self._raft is not None:
            self._raft.link_down(key)
        member = self._gossip.member(key)
        if member is not None and member.state not in _LIVE_STATES:
            self._close_link(key)   # it left or died: stop ZeroMQ reconnecting to it

    def _ban(self, peer: str) -> None:
        """The guard banned ``peer``: hang up on it, and have ZAP refuse its key meanwhile."""
        if self.security.links is not None:
            self.security.links.ban(principal_of(peer), self._loop.time() + self._guard.config.ban_s)
        self._transport.disconnect(peer)

    def _close_link(self, node: str) -> None:
        self._transport.disconnect(node)
        self._links_down.discard(node)
        self._hanging_up.discard(node)

    def _fail_calls_to(self, node: str, why: str) -> None:
        for msg_id in [m for m, p in self._pending.items() if p.node == node]:
            self._fail_pending(msg_id, Unreachable(why))

    def _on_member(self, event: MemberEvent) -> None:
        m = event.member
        kind = event.kind
        if kind in (EventKind.JOINED, EventKind.UPDATED):
            try:
                meta = NodeMeta.from_bytes(m.meta)
            except ProtocolError as exc:
                self.counters["protocol_errors"] += 1
                log.warning("member %s sent bad metadata: %s", m.id, exc)
                meta = NodeMeta()
            old = self._metas.get(m.id)
            self._metas[m.id] = meta
            link = self._transport.links().get(m.id)
            if link is not None and link[0] != m.address:   # restarted elsewhere: follow it
                self._transport.disconnect(m.id)
                self._links_down.discard(m.id)
            if kind is EventKind.JOINED or old is None:
                log.info("member %s joined at %s with %d agents", m.id, m.address, len(meta.agents))
            self._hanging_up.discard(m.id)
            if not self._stopping:
                self._transport.connect(m.id, m.address)
            self._route(m.id)
        elif kind is EventKind.SUSPECT:
            log.info("member %s is suspected", m.id)
        elif kind is EventKind.DEAD:
            log.info("member %s is dead", m.id)
            self._unroute(m.id, "dead")
            self._close_link(m.id)
            self._fail_calls_to(m.id, f"node {m.id} is dead")
        elif kind is EventKind.LEFT:
            # A node that leaves has drained its handlers first, but its last replies travel
            # on our link to it while its goodbye came on another connection, possibly
            # overtaking them. It keeps its end open until we hang up, which we do once our
            # calls to it have their answers (see _call_remote), or when the link drops.
            log.info("member %s left", m.id)
            self._unroute(m.id, "left")
            if any(p.node == m.id for p in self._pending.values()):
                self._hanging_up.add(m.id)
            else:
                self._close_link(m.id)
        elif kind is EventKind.REAPED:
            self._metas.pop(m.id, None)
            self._close_link(m.id)
        self._changed.set()

    def _route(self, node: str) -> None:
        """Put ``node``'s agents and subscriptions into the router, if it is live and linked."""
        meta = self._metas.get(node)
        member = self._gossip.member(node)
        if meta is None or member is None or member.state not in _LIVE_STATES or node in self._links_down:
            return
        for name in self._directory.set_node(node, meta.agents):
            log.warning("agent name %r on node %s clashes with a local agent; calls stay local", name, node)
        scores = self._scores
        for name in meta.agents:
            capacity = meta.capacity.get(name, 1.0)
            if (capacity != 1.0 or name in scores) and not self._directory.is_local(name):
                scores.add(name, capacity)   # weight in call_any, as its node published it
        routed = (meta.topics, meta.blocking)
        if self._routed_topics.get(node) != routed:   # unchanged: keep the match cache warm
            for table, patterns in ((self._remote_topics, meta.topics), (self._remote_blocking, meta.blocking)):
                table.remove_subscriber(node)
                for pattern in patterns:
                    if table is self._remote_topics and not self._acl.allows(node, "", Action.SUBSCRIBE, pattern):
                        continue    # never sent to it: the policy does not let it subscribe there
                    try:
                        table.subscribe(pattern, node)
                    except ValueError:
                        self.counters["protocol_errors"] += 1
            self._routed_topics[node] = routed

    def _unroute(self, node: str, why: str) -> None:
        removed = self._directory.remove_node(node)
        for name in removed:
            self._scores.remove(name)
        self._remote_topics.remove_subscriber(node)
        self._remote_blocking.remove_subscriber(node)
        if self._routed_topics.pop(node, None) is not None or removed:
            log.info("stopped routing to %s (%s)", node, why)

    async def _join(self) -> None:
        """Sync with the seeds, then wait (up to ``join_timeout``) until one answered and our
        links to every live member are up, so the first calls find their targets."""
        seeds = [s for s in self.seeds if s != self.address]
        self._gossip.join(seeds)
        if not seeds:
            return
        deadline = self._loop.time() + self.join_timeout
        while True:
            waiting = [m.id for m in self._gossip.members()
                       if m.id != self.node_id and m.state in _LIVE_STATES and not self._transport.is_up(m.id)]
            if self._gossip.joined and not waiting:
                return
            left = deadline - self._loop.time()
            if left <= 0:
                break
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.1))
            except asyncio.TimeoutError:
                pass
        if not self._gossip.joined:
            raise Unreachable(f"no seed answered within {self.join_timeout:g} s: {', '.join(seeds)}")
        log.warning("node %s joined, but links to %s are not up yet", self.node_id, ", ".join(sorted(waiting)))
