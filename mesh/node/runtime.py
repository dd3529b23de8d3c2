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
  dropped and counted: its caller has already given up.
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
from mesh._core.wire import Kind
from mesh.agent import Agent, HandlerSpec
from mesh.eager import SYNC_DONE, run_eager
from mesh.errors import (WIRE_ERRORS, DecodeError, EncodeError, MeshError, ProtocolError, RemoteError,
                         Timeout, Unavailable, UnknownAgent, UnknownMethod, Unreachable)
from mesh.kv.client import KV, RaftAgent
from mesh.node.singleton import Singleton
from mesh.node.consensus import ConsensusDriver
from mesh.node.deadlines import DeadlineQueue
from mesh.node.gossip import SEED_PREFIX, GossipDriver
from mesh.node.membership import NodeMeta, load_changed
from mesh.raft.config import RaftConfig
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


class _Pending:
    __slots__ = ("future", "node", "agent", "method")

    def __init__(self, future: asyncio.Future, node: str, agent: str, method: str) -> None:
        self.future = future
        self.node = node
        self.agent = agent
        self.method = method


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
    """

    def __init__(self, node_id: str, bind: str = "tcp://127.0.0.1:*", seeds: Iterable[str] = (),
                 data_dir: str | os.PathLike | None = None, *, default_timeout: float = 30.0,
                 join_timeout: float = 10.0, drain_timeout: float = 5.0, hangup_timeout: float = 1.0,
                 limits: Any = None, transport: TransportConfig | None = None, seed: int | None = None,
                 gossip: SwimConfig | None = None, load_interval: float = 5.0,
                 raft_voters: Iterable[str] = (), raft: RaftConfig | None = None,
                 raft_member: bool = False) -> None:
        raw = node_id.encode() if isinstance(node_id, str) else b""
        if not raw or len(raw) > 255 or raw[0] == 0 or node_id.startswith(SEED_PREFIX):
            raise ValueError(f"invalid node id {node_id!r}: 1..255 UTF-8 bytes, not starting with NUL or 'seed:'")
        if default_timeout <= 0:
            raise ValueError("default_timeout must be positive")
        self.node_id = node_id
        self.bind = bind
        self.seeds = [s for s in seeds]
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
        self._directory = router.Directory(node_id)
        self._local_topics = router.TopicTable()    # subscriber = (agent name, HandlerSpec)
        self._remote_topics = router.TopicTable()   # subscriber = node id
        self._scores = scoring.Scoreboard(seed=rng_seed)
        self._metas: dict[str, NodeMeta] = {}            # member id -> its published metadata
        self._routed_topics: dict[str, tuple[str, ...]] = {}
        self._links_down: set[str] = set()
        self._hanging_up: set[str] = set()   # left; our link closes when our calls to it end
        self._singletons: dict[str, Singleton] = {}
        self._load: dict[str, float] = {"handlers": 0.0, "calls_per_s": 0.0}
        self._load_mark = (0.0, 0)
        self._load_timer: asyncio.TimerHandle | None = None
        self._pending: dict[int, _Pending] = {}
        self._deadlines = DeadlineQueue()
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._ids = itertools.count(1)
        self._transport = Transport(node_id, bind, self._on_frame, self._on_link, transport)
        self._gossip = GossipDriver(node_id, self._transport, gossip or SwimConfig(), Random(rng_seed),
                                    self.limits, self._on_member)
        self.raft_voters = tuple(dict.fromkeys(raft_voters))
        self._raft: ConsensusDriver | None = None
        if node_id in self.raft_voters or raft_member:
            if self.data_dir is None:
                raise ValueError(f"node {node_id!r} keeps a Raft log and needs a data_dir for it")
            self._raft = ConsensusDriver(node_id, self.raft_voters, self.data_dir, self._transport,
                                         raft or RaftConfig(), Random(rng_seed ^ 0x5EED), self.limits)
        self.kv = KV(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._started = False
        self._stopping = False
        self.counters: dict[str, int] = {
            "calls_out": 0, "calls_in": 0, "sends_out": 0, "sends_in": 0, "publishes_out": 0,
            "publishes_in": 0, "errors_out": 0, "handler_errors": 0, "timeouts": 0, "expired": 0,
            "late_replies": 0, "malformed": 0, "protocol_errors": 0}

    # -- public API --------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return self._transport.address or self.bind

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
        self._agents[agent.name] = agent
        agent.node = self
        self._directory.add_local(agent.name, agent.capabilities)
        for pattern, spec in agent.topic_table:
            self._local_topics.subscribe(pattern, (agent.name, spec))
        if self._started:
            self._spawn(self._start_agent(agent))
            self._announce()
        return agent

    def remove(self, name: str) -> Agent:
        agent = self._agents.pop(name)
        self._directory.remove_local(name)
        for pattern, spec in agent.topic_table:
            self._local_topics.unsubscribe(pattern, (name, spec))
        if self._started:
            self._spawn(agent.on_stop())
            self._announce()
        agent.node = None
        return agent

    async def start(self) -> None:
        """Bind, join through the seeds, then start the agents."""
        if self._started:
            raise RuntimeError(f"node {self.node_id!r} is already started")
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._transport.start()
        log.info("node %s listening on %s (%s hot path)", self.node_id, self.address, IMPLEMENTATION)
        self._started = True
        self._gossip.start(self.address, self._meta().to_bytes())
        self._load_mark = (self._loop.time(), 0)
        self._load_timer = self._loop.call_later(self.load_interval, self._refresh_load)
        try:
            if self._raft is not None:
                self._raft.start()
                self.add(RaftAgent(self._raft))
            await self._join()
        except BaseException:
            self._gossip.close()
            self._load_timer.cancel()
            self._transport.close()
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
        # Singletons first, while the KV still answers: the next holder takes over at once.
        await asyncio.gather(*(r.stop() for r in self._singletons.values()), return_exceptions=True)
        self._stopping = True
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
        self._started = False
        log.info("node %s stopped", self.node_id)

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def call(self, agent: str, method: str, *args: Any, timeout: float | None = None,
                   **kwargs: Any) -> Any:
        """Call ``agent.method(*args, **kwargs)`` wherever the agent lives; return its result.

        Raises Timeout after ``timeout`` seconds (default ``default_timeout``), Unreachable if
        its node is not connected, UnknownAgent/UnknownMethod, RemoteError if the handler raised.
        """
        target = self._agents.get(agent)
        if target is not None:
            return await self._call_local(target, method, args, kwargs, timeout)
        return await self._call_remote(self._node_of(agent), agent, method, args, kwargs, timeout)

    async def call_any(self, capability: str, method: str, *args: Any, timeout: float | None = None,
                       **kwargs: Any) -> Any:
        """Call ``method`` on one agent offering ``capability``, picked by load score
        (power of two choices over in-flight calls, latency and error rate)."""
        providers = self._directory.providers(capability)
        if not providers:
            raise UnknownAgent(f"no agent offers capability {capability!r}")
        scores = self._scores
        agent = scores.pick(providers)
        scores.begin(agent)
        t0 = time.perf_counter_ns()
        ok = False
        try:
            result = await self.call(agent, method, *args, timeout=timeout, **kwargs)
            ok = True
            return result
        finally:
            scores.end(agent, (time.perf_counter_ns() - t0) / 1000.0, ok)

    async def send(self, agent: str, method: str, *args: Any, **kwargs: Any) -> None:
        """One-way: deliver ``agent.method(*args, **kwargs)`` without waiting for a result.
        Sends to the same node are batched; errors at the target are only counted there."""
        self._check_running()
        target = self._agents.get(agent)
        if target is not None:
            spec = self._spec(target, method)
            self._dispatch_local_oneway(target, spec, args, kwargs)
            return
        node = self._node_of(agent)
        data = self._encode(Kind.SEND, next(self._ids), 0, agent, method, (args, kwargs), 0)
        self._transport.send(node, data, flush=False)
        self.counters["sends_out"] += 1

    async def publish(self, topic: str, payload: Any = None) -> None:
        """Publish ``payload`` on ``topic``. It crosses the network once per subscribing node."""
        self._check_running()
        nodes = self._remote_topics.match(topic)
        if nodes:
            data = self._encode(Kind.PUBLISH, next(self._ids), 0, "", topic, payload, 0)
            for node in nodes:
                self._try_send(node, data, flush=False)
            self.counters["publishes_out"] += 1
        for name, spec in self._local_topics.match(topic):
            agent = self._agents.get(name)
            if agent is not None:
                self._dispatch_local_oneway(agent, spec, (topic, payload), {})

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
        if self._raft is not None:
            out.update(self._raft.counters)
        core = self._gossip.core
        if core is not None:
            out["members_live"] = core.live_count
            out["gossip_health"] = core.health
            out["incarnation"] = core.incarnation
        out["pending_calls"] = len(self._pending)
        out["running_handlers"] = len(self._tasks)
        return out

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
                deadline_us: int) -> bytes:
        data = codec.encode(kind, msg_id, corr_id, self.node_id, dst, subject, body, 0, deadline_us, 0)
        if len(data) > self.limits.max_frame_bytes:
            raise EncodeError(f"message of {len(data)} bytes exceeds max_frame_bytes={self.limits.max_frame_bytes}")
        return data

    async def _call_local(self, agent: Agent, method: str, args: tuple, kwargs: dict,
                          timeout: float | None) -> Any:
        self._check_running()
        spec = self._spec(agent, method)
        fn = getattr(agent, spec.attr)
        try:
            if spec.eager or not spec.is_async:
                state, value = run_eager(fn, args, kwargs, spec.is_async)
                if state is SYNC_DONE:
                    return value
            else:
                value = fn(*args, **kwargs)
            t = self.default_timeout if timeout is None else timeout
            return await asyncio.wait_for(value, t)
        except asyncio.TimeoutError:
            self.counters["timeouts"] += 1
            raise Timeout(f"{agent.name}.{method} did not answer within {t:g} s") from None
        except (MeshError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise RemoteError(type(exc).__name__, str(exc), agent.name, method) from exc

    async def _call_remote(self, node: str, agent: str, method: str, args: tuple, kwargs: dict,
                           timeout: float | None) -> Any:
        self._check_running()
        t = self.default_timeout if timeout is None else timeout
        if t <= 0:
            raise ValueError("timeout must be positive")
        msg_id = next(self._ids)
        data = self._encode(Kind.REQUEST, msg_id, 0, agent, method, (args, kwargs), _now_us() + int(t * 1e6))
        self._transport.send(node, data)
        loop = self._loop
        future = loop.create_future()
        pending = self._pending
        pending[msg_id] = _Pending(future, node, agent, method)
        if self._deadlines.push(loop.time() + t, msg_id):
            self._arm_deadline_timer()
        self._deadlines.compact(pending, len(pending))
        self.counters["calls_out"] += 1
        try:
            return await future
        finally:
            pending.pop(msg_id, None)   # only still there if we were cancelled
            if self._hanging_up and node in self._hanging_up and \
                    not any(p.node == node for p in pending.values()):
                self._close_link(node)   # its last answer is in: let it close

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
        try:
            envelopes = codec.decode_frame(data, self.limits)
        except DecodeError as exc:
            self.counters["malformed"] += 1
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
                self._handle_publish(env)
            elif kind == Kind.ERROR:
                self._handle_error(env)
            elif _GOSSIP_KINDS[0] <= kind <= _GOSSIP_KINDS[1]:
                self._gossip.handle(peer, env, from_router)
            elif _RAFT_KINDS[0] <= kind <= _RAFT_KINDS[1] and self._raft is not None:
                self._raft.handle(peer, env, from_router)
            else:
                self.counters["protocol_errors"] += 1
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
            spec = self._spec(agent, env.subject)
            if env.deadline_us and env.deadline_us < _now_us():
                self.counters["expired"] += 1   # the caller has given up: don't do the work
                return
            body = codec.load_body(env.body, self.limits)
            if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], list)
                    and isinstance(body[1], dict)):
                raise ProtocolError("request body must be [args, kwargs]")
        except MeshError as exc:
            if want_reply:
                self._reply_error(peer, env, type(exc).__name__, str(exc), _ORIGIN_MESH)
            return
        fn = getattr(agent, spec.attr)
        args, kwargs = body
        try:
            if spec.eager or not spec.is_async:
                state, value = run_eager(fn, args, kwargs, spec.is_async)
            else:
                state, value = None, fn(*args, **kwargs)
        except Exception as exc:
            self._handler_failed(peer, env, want_reply, exc)
            return
        if state is SYNC_DONE:
            if want_reply:
                self._reply(peer, env, value)
        else:
            self._spawn(self._finish_request(peer, env, want_reply, value))

    async def _finish_request(self, peer: str, env: Any, want_reply: bool, awaitable: Any) -> None:
        try:
            value = await awaitable
        except Exception as exc:
            self._handler_failed(peer, env, want_reply, exc)
            return
        if want_reply:
            # flush=False: the replies of handlers that finish in the same loop iteration
            # (a Raft commit wakes many at once) leave together, one frame per peer
            self._reply(peer, env, value, flush=False)

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

    def _handle_publish(self, env: Any) -> None:
        self.counters["publishes_in"] += 1
        subscribers = self._local_topics.match(env.subject)
        if not subscribers:
            return
        try:
            payload = codec.load_body(env.body, self.limits)
        except DecodeError:
            self.counters["malformed"] += 1
            return
        for name, spec in subscribers:
            agent = self._agents.get(name)
            if agent is not None:
                self._dispatch_local_oneway(agent, spec, (env.subject, payload), {})

    def _dispatch_local_oneway(self, agent: Agent, spec: HandlerSpec, args: tuple, kwargs: dict) -> None:
        fn = getattr(agent, spec.attr)
        try:
            state, value = run_eager(fn, args, kwargs, spec.is_async)
        except Exception as exc:
            self.counters["handler_errors"] += 1
            log.warning("%s.%s raised %r", agent.name, spec.attr, exc)
            return
        if state is not SYNC_DONE:
            self._spawn(self._finish_oneway(agent, spec, value))

    async def _finish_oneway(self, agent: Agent, spec: HandlerSpec, awaitable: Any) -> None:
        try:
            await awaitable
        except Exception as exc:
            self.counters["handler_errors"] += 1
            log.warning("%s.%s raised %r", agent.name, spec.attr, exc)

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
        return NodeMeta(agents={name: a.capabilities for name, a in self._agents.items()},
                        topics=tuple(sorted({p for a in self._agents.values() for p, _ in a.topic_table})),
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
        if self._routed_topics.get(node) != meta.topics:   # unchanged: keep the match cache warm
            self._remote_topics.remove_subscriber(node)
            for pattern in meta.topics:
                try:
                    self._remote_topics.subscribe(pattern, node)
                except ValueError:
                    self.counters["protocol_errors"] += 1
            self._routed_topics[node] = meta.topics

    def _unroute(self, node: str, why: str) -> None:
        removed = self._directory.remove_node(node)
        for name in removed:
            self._scores.remove(name)
        self._remote_topics.remove_subscriber(node)
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
