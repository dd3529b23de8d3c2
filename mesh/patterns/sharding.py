"""Sharding: ``node.call_key(capability, key, method, ...)`` calls the one agent of
``capability`` that owns ``key``, and ownership can move while calls run without losing any.

Theory of operation
-------------------
* **The shard map** (:mod:`mesh.patterns.shard_map`). Each sharded capability has a fixed
  number of partitions, each owned by one agent offering it (consistent hashing with bounded
  loads), kept in the Raft KV under ``_shards/map/<capability>``. Its *epoch* rises by exactly
  one with each rewrite, always written with ``kv.cas`` against the map it replaces, so no two
  writers ever both succeed. ``move`` pins one partition to a chosen owner.
* **Who rewrites it.** Every started :class:`ShardRouter` campaigns for ``_shards/rebalancer``
  (a leased key, :class:`~mesh.kv.election.Election`); the holder compares, every ``poll_s``,
  the providers its directory (gossip) shows with those each map was computed from and writes
  a new map once the difference has held for ``settle_s`` (a link that flaps does not
  reshuffle the mesh). The first caller of a capability writes its first map.
* **Callers** cache the maps (one KV watch on ``_shards/``), hash the key, and call the owner's
  ``_shard_invoke`` (see :class:`Sharded`) with their map epoch. An owner that no longer owns
  the key's partition answers :class:`~mesh.errors.WrongShard`; the caller gets a newer map
  (from the watch, or one linearizable read) and calls the new owner, all within the call's
  timeout. When the owner is gone (Unreachable, UnknownAgent, Unavailable, CircuitOpen), the
  caller backs off and retries on the newest map until the rebalancer has replaced it.
* **Owners fence themselves; nobody has to trust a cache.** Every node that serves a sharded
  capability holds a lease (``_shards/live/<node>``) and writes, under it, an *ack*
  ``_shards/ack/<capability>/<node>`` = the map epoch it has applied: "I admit no call for a
  partition I do not own at this epoch, and the calls I admitted for those have finished".
  A node admits a call for partition p (owned by its agent continuously since epoch s, in the
  maps its watch delivered) only when, in that same watch view, every ack of the capability is
  >= s -- its own included, written under its current lease and seen coming back through the
  watch (so its view holds every map written before that ack). Each gain of a partition
  therefore waits for the previous owner to let go, or for its lease to end if it died. The
  proof is short: if A and B both admitted p, say with s_A < s_B, then B saw A's ack >= s_B,
  written after A had applied epoch s_B, in which A does not own p; or A's ack was gone, which
  (leases) means A had stopped admitting.
* **Semantics.** While an owner changes gracefully, every call runs exactly once, on the one
  owner of its key at that moment; calls that reach an old owner are refused before running and
  retried. When an owner's node dies, calls that were in flight to it fail with Unreachable
  and are retried on the next owner: they may have run on the dead node (at least once), so
  handlers of sharded capabilities should be idempotent per key when that matters. A handler
  still running when its node loses its lease (cut off from the quorum for ``lease_ttl_s``)
  may overlap with the next owner, as with singletons.

Moving a partition moves its traffic, not its state: a stateful owner rebuilds from where its
state lives. Every provider of a sharded capability must be a :class:`Sharded` agent.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import replace
from typing import Any
from urllib.parse import quote, unquote

from mesh._core import router
from mesh.agent import Agent, rpc
from mesh.errors import (CircuitOpen, MeshError, ProtocolError, RemoteError, Timeout, Unavailable, UnknownAgent,
                         UnknownMethod, Unreachable, WrongShard)
from mesh.kv.election import Election
from mesh.patterns.shard_map import (MAP_PREFIX, WIRE_VERSION, ShardConfig, ShardMap, compute_map, map_key,
                                     moved_fraction)

log = logging.getLogger(__name__)

# The map's names (from mesh.patterns.shard_map) stay importable from here.
__all__ = ["KEY_PREFIX", "MAP_PREFIX", "ACK_PREFIX", "LIVE_PREFIX", "REBALANCER_KEY", "INVOKE", "WIRE_VERSION",
           "ShardConfig", "ShardMap", "compute_map", "moved_fraction", "map_key", "ack_key", "Sharded",
           "ShardRouter", "shard_router"]

KEY_PREFIX = "_shards/"
ACK_PREFIX = "_shards/ack/"
LIVE_PREFIX = "_shards/live/"
REBALANCER_KEY = "_shards/rebalancer"
INVOKE = "_shard_invoke"            # the rpc every Sharded agent serves sharded calls through

# The owner is gone or going: the map will change, so wait for it and try again.
_OWNER_GONE = (Unreachable, UnknownAgent, Unavailable, CircuitOpen)
_HINT_WAIT_S = 0.05                 # how long a caller waits for the watch before reading the KV


def ack_key(capability: str, holder: str) -> str:
    return ACK_PREFIX + quote(capability, safe="") + "/" + quote(holder, safe="")


# ---------------------------------------------------------------------------------------------
# the agents' side


class Sharded(Agent):
    """Base class of agents that serve a sharded capability: they answer ``call_key`` through
    ``_shard_invoke``, which admits a call only while this agent owns the key's partition
    (see the module docstring) and then runs the named ``@rpc`` method."""

    @rpc(name=INVOKE)
    async def _shard_invoke(self, capability: str, key: str | bytes, epoch: int, method: str, args: list,
                            kwargs: dict, timeout: float) -> Any:
        if self.node is None:
            raise Unavailable(f"agent {self.name!r} is not on a node")
        shards = shard_router(self.node)
        spec = self.rpc_table.get(method)
        if spec is None or method == INVOKE:
            raise UnknownMethod(f"agent {self.name!r} has no rpc method {method!r}")
        ticket = shards.try_admit(capability, key, epoch, self.name)
        if ticket is None:
            ticket = await shards.admit(capability, key, epoch, self.name, timeout)
        try:
            result = getattr(self, spec.attr)(*args, **kwargs)
            if spec.is_async:
                result = await result
            return result
        finally:
            shards.release(capability, ticket)


def shard_router(node: Any) -> ShardRouter:
    """The node's shard router, made on first use (the node keeps it as ``_shards``)."""
    return node.shards


async def _wait(fut: asyncio.Future, timeout: float) -> None:
    """Wait until ``fut`` is done or ``timeout`` s passed. Not asyncio.wait_for: on 3.11 that
    can swallow a cancellation that arrives as the awaited thing completes, and a background
    loop would then never stop."""
    if fut.done():
        return
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_: Any = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(max(timeout, 0.0), wake)
    fut.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        fut.remove_done_callback(wake)


class _Signal:
    """Wakes every waiter once per change (maps, acks, leases, finished calls)."""

    def __init__(self) -> None:
        self._fut: asyncio.Future | None = None

    def notify(self) -> None:
        if self._fut is not None:
            self._fut.set_result(None)
            self._fut = None

    async def wait(self, timeout: float) -> None:
        if self._fut is None:
            self._fut = asyncio.get_running_loop().create_future()
        await _wait(self._fut, timeout)


class _Serving:
    """This node's ownership bookkeeping for one capability."""
    __slots__ = ("since", "tickets", "written", "confirmed", "drain_from")

    def __init__(self) -> None:
        self.since: dict[int, tuple[str, int]] = {}     # partition -> (local owner, owned since epoch)
        self.tickets: dict[tuple[int, str, int], int] = {}   # admitted calls running, per (p, owner, since)
        self.written: tuple[int, int] = (0, 0)          # (epoch, lease) of the last ack we wrote
        self.confirmed = 0            # epoch of our ack seen back through the watch, current lease
        self.drain_from: float | None = None

    def draining(self) -> bool:
        return any(self.since.get(p) != (agent, s) for (p, agent, s) in self.tickets)


# ---------------------------------------------------------------------------------------------
# the router


class ShardRouter:
    """A node's sharding: routes ``call_key``, fences the node's :class:`Sharded` agents and
    takes its turn at rebalancing. Made lazily; :meth:`start` runs on first use and
    :meth:`stop` (idempotent) should run before the node stops, so the node's partitions are
    released at once instead of when its lease ends."""

    def __init__(self, node: Any, config: ShardConfig | None = None) -> None:
        self.node = node
        self.config = config or ShardConfig()
        self.holder = f"{node.node_id}:{node.boot}"     # one incarnation of this node
        self._maps: dict[str, ShardMap] = {}        # as the watch delivered them: serving decisions
        self._hints: dict[str, ShardMap] = {}       # newer maps a caller read directly
        self._acks: dict[str, dict[str, int]] = {}  # capability -> holder -> acked epoch (watch view)
        self._serving: dict[str, _Serving] = {}
        self._live: Election | None = None          # our lease, while held
        self._signal = _Signal()
        self._tasks: list[asyncio.Task] = []
        self._starting: asyncio.Future | None = None
        self._serving_started = False
        self._refreshing: dict[str, asyncio.Task] = {}
        self._stopping = False
        self.counters: dict[str, int] = {"calls": 0, "wrong_shard": 0, "owner_gone": 0, "admit_waits": 0,
                                         "refused": 0, "maps_written": 0, "acks_written": 0, "bad_maps": 0}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, timeout: float | None = None) -> None:
        """Load the maps and start watching them and campaigning to rebalance (idempotent;
        concurrent callers share one start)."""
        if self._stopping:
            raise Unavailable(f"shard router of node {self.node.node_id} is stopped")
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_future()
            self._spawn(self._watch_loop())
            self._spawn(self._rebalance_loop())
        if not self._starting.done():
            t = self.config.kv_timeout_s if timeout is None else timeout
            await _wait(self._starting, t)
            if not self._starting.done():
                raise Timeout("the shard maps could not be loaded in time")
        self._starting.result()             # Unavailable if stopped meanwhile

    async def stop(self) -> None:
        """Refuse new sharded calls here, let admitted ones finish (up to ``drain_s``), give up
        the lease (our acks vanish, so new owners start at once) and stop the background tasks."""
        if self._stopping:
            return
        self._stopping = True
        if self._starting is not None and not self._starting.done():
            self._starting.set_exception(Unavailable(f"shard router of node {self.node.node_id} stopped"))
            self._starting.exception()      # retrieved here: callers waiting in start() re-raise it
        self._signal.notify()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_s
        while any(st.tickets for st in self._serving.values()) and loop.time() < deadline:
            await self._signal.wait(min(0.1, deadline - loop.time()))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._live is not None:
            await self._live.resign(timeout=min(2.0, self.config.kv_timeout_s))
            self._live = None

    def _spawn(self, coro: Any, keep: bool = True) -> asyncio.Task:
        # A fresh context: a task started while serving a call must not inherit that call's
        # deadline (mesh.resilience.deadline), or every KV operation it makes later would fail.
        task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        if keep:
            self._tasks.append(task)
        return task

    # -- callers -----------------------------------------------------------------------------

    def shard_map(self, capability: str) -> ShardMap | None:
        """The newest map of ``capability`` this node knows (no I/O), None if none."""
        m, hint = self._maps.get(capability), self._hints.get(capability)
        if hint is not None and (m is None or hint.epoch > m.epoch):
            return hint
        return m

    async def call_key(self, capability: str, key: str | bytes, method: str, *args: Any,
                       timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``method(*args, **kwargs)`` on the agent of ``capability`` that owns ``key``;
        retried on the new owner while ownership moves, within ``timeout`` seconds (default:
        the node's). Raises what :meth:`mesh.Node.call` raises, Timeout when the budget ran out
        while the owner was changing, UnknownAgent if no agent offers the capability."""
        node = self.node
        loop = asyncio.get_running_loop()
        total = node.default_timeout if timeout is None else timeout
        if total <= 0:
            raise ValueError("timeout must be positive")
        deadline = loop.time() + total
        if self._starting is None or not self._starting.done():
            await self.start(total)
        m = self.shard_map(capability) or await self._first_map(capability, deadline)
        router.partition_of(key, m.partitions)          # a bad key fails here, not at the owner
        self.counters["calls"] += 1
        backoff = 0.005
        last: MeshError | None = None
        while True:
            agent = m.owner_of(key)
            left = deadline - loop.time()
            if left <= 0:
                raise Timeout(f"{capability}[{key!r}].{method}: no owner answered within {total:g} s ({last})")
            try:
                return await node.call(agent, INVOKE, capability, key, m.epoch, method, args, kwargs, left,
                                       timeout=left)
            except WrongShard as exc:
                self.counters["wrong_shard"] += 1
                last = exc
                m = await self._newer_map(capability, m, deadline)
            except _OWNER_GONE as exc:
                self.counters["owner_gone"] += 1
                last = exc
                await self._signal.wait(min(backoff, deadline - loop.time()))
                backoff = min(backoff * 2, 0.2)
                m = self.shard_map(capability) or m
            except UnknownMethod as exc:
                if INVOKE in str(exc):
                    raise UnknownMethod(f"agent {agent!r} offers {capability!r} but is not a "
                                        f"mesh.patterns.sharding.Sharded agent") from None
                raise
            except RemoteError as exc:          # name the method called, not the envelope
                raise RemoteError(exc.type, exc.message, agent, method) from None

    async def load_map(self, capability: str, *, timeout: float | None = None) -> ShardMap | None:
        """The map as stored now (a linearizable read), None if there is none."""
        value = await self.node.kv.get(map_key(capability), timeout=timeout)
        if value is None:
            return None
        m = ShardMap.from_wire(capability, value)
        self._hint(m)
        return m

    async def move(self, capability: str, partition: int, agent: str | None, *,
                   timeout: float | None = None) -> ShardMap:
        """Give ``partition`` to ``agent`` (a provider in the current map) and pin it there;
        ``agent`` None unpins it, back to where hashing puts it. Returns the new map; the owners
        hand the partition over while calls run."""
        loop = asyncio.get_running_loop()
        total = self.node.default_timeout if timeout is None else timeout
        deadline = loop.time() + total
        while True:
            m = await self.load_map(capability, timeout=max(deadline - loop.time(), 0.01))
            if m is None:
                raise UnknownAgent(f"capability {capability!r} has no shard map")
            if not 0 <= partition < m.partitions:
                raise ValueError(f"partition must be in [0, {m.partitions}), got {partition}")
            if agent is not None and agent not in m.providers:
                raise ValueError(f"agent {agent!r} is not a provider of {capability!r}")
            pins = [(p, a) for p, a in m.pins if p != partition] + ([(partition, agent)] if agent else [])
            new = compute_map(capability, m.providers, self.config, partitions=m.partitions, pins=pins,
                              epoch=m.epoch + 1)
            if await self._write(m, new, deadline - loop.time()):
                return new
            if loop.time() >= deadline:
                raise Timeout(f"the shard map of {capability!r} kept changing for {total:g} s")

    async def _first_map(self, capability: str, deadline: float) -> ShardMap:
        loop = asyncio.get_running_loop()
        while True:
            m = await self.load_map(capability, timeout=max(deadline - loop.time(), 0.01))
            if m is not None:
                return m
            providers = self._providers(capability)
            if not providers:
                raise UnknownAgent(f"no agent offers capability {capability!r}")
            new = compute_map(capability, providers, self.config)
            if await self.node.kv.cas(map_key(capability), None, new.to_wire(),
                                      timeout=max(deadline - loop.time(), 0.01)):
                self.counters["maps_written"] += 1
                log.info("shard map of %s: epoch 1 over %d providers", capability, len(providers))

    async def _newer_map(self, capability: str, than: ShardMap, deadline: float) -> ShardMap:
        """A map newer than ``than``: from the watch if it comes soon, else read from the KV
        (one read per capability at a time, however many callers wait)."""
        loop = asyncio.get_running_loop()
        wait_until = min(deadline, loop.time() + _HINT_WAIT_S)
        while loop.time() < wait_until:
            m = self.shard_map(capability)
            if m is not None and m.epoch > than.epoch:
                return m
            await self._signal.wait(wait_until - loop.time())
        task = self._refreshing.get(capability)
        if task is None or task.done():
            task = self._refreshing[capability] = self._spawn(
                self.load_map(capability, timeout=max(deadline - loop.time(), 0.01)), keep=False)
        await _wait(task, deadline - loop.time())
        if task.done() and not task.cancelled():
            task.exception()                # retrieved: a failed read only means "no newer map"
        return self.shard_map(capability) or than

    def _hint(self, m: ShardMap) -> None:
        current = self.shard_map(m.capability)
        if current is None or m.epoch > current.epoch:
            self._hints[m.capability] = m
            self._signal.notify()

    def _providers(self, capability: str) -> tuple[str, ...]:
        return tuple(sorted(a for a, (_, caps) in self.node.directory().items() if capability in caps))

    # -- owners: admission -------------------------------------------------------------------

    def try_admit(self, capability: str, key: str | bytes, epoch: int, agent: str) -> tuple[int, str, int] | None:
        """Admit a call for ``key`` on local ``agent`` now: a ticket for :meth:`release`, None
        if it must wait (:meth:`admit`). WrongShard if ``agent`` does not own the key."""
        if self._stopping:
            raise Unavailable(f"node {self.node.node_id} is stopping")
        st = self._serving.get(capability)
        m = self._maps.get(capability)
        if st is None or m is None or m.epoch < epoch:
            return None
        p = router.partition_of(key, m.partitions)
        owner = m.owners[p]
        if owner != agent:
            self.counters["refused"] += 1
            raise WrongShard(f"{agent!r} does not own partition {p} of {capability!r} at epoch {m.epoch} "
                             f"({owner!r} does)")
        since = st.since.get(p)
        if since is None or since[0] != agent:
            since = st.since[p] = (agent, m.epoch)     # newly local: a gain at this epoch
        s = since[1]
        live = self._live
        if live is None or not live.holding or st.confirmed < s:
            return None
        acks = self._acks.get(capability)
        if not acks or min(acks.values()) < s:
            return None
        ticket = (p, agent, s)
        st.tickets[ticket] = st.tickets.get(ticket, 0) + 1
        return ticket

    async def admit(self, capability: str, key: str | bytes, epoch: int, agent: str,
                    timeout: float) -> tuple[int, str, int]:
        """Wait (up to ``timeout`` s) until the call can be admitted; see :meth:`try_admit`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(float(timeout), 0.0)
        self.counters["admit_waits"] += 1
        if capability not in self._serving:
            await self.start(max(deadline - loop.time(), 0.0))
            self._begin_serving(capability)
        while True:
            ticket = self.try_admit(capability, key, epoch, agent)
            if ticket is not None:
                return ticket
            left = deadline - loop.time()
            if left <= 0:
                raise Timeout(f"partition of {key!r} in {capability!r} was not handed to {agent!r} in time")
            await self._signal.wait(left)

    def release(self, capability: str, ticket: tuple[int, str, int]) -> None:
        st = self._serving[capability]
        n = st.tickets[ticket] - 1
        if n:
            st.tickets[ticket] = n
        else:
            del st.tickets[ticket]
            if st.since.get(ticket[0]) != ticket[1:]:
                self._signal.notify()       # the last call on a partition we lost: ack now

    def _begin_serving(self, capability: str) -> None:
        st = self._serving[capability] = _Serving()
        m = self._maps.get(capability)
        if m is not None:
            st.since = self._owned(m)
        if not self._serving_started:
            self._serving_started = True
            self._spawn(self._lease_loop())
            self._spawn(self._ack_loop())
        self._signal.notify()

    def _owned(self, m: ShardMap) -> dict[int, tuple[str, int]]:
        local = self.node.agents
        return {p: (a, m.epoch) for p, a in enumerate(m.owners) if a in local}

    def _advance(self, st: _Serving, old: ShardMap | None, new: ShardMap) -> None:
        """Carry ownership over from ``old`` to ``new``: a partition kept by the same local
        agent keeps its 'since'; a skipped epoch (a reload) counts everything as gained anew."""
        if old is None or new.epoch != old.epoch + 1 or new.partitions != old.partitions:
            st.since = self._owned(new)
            return
        local = self.node.agents
        since = st.since
        for p, a in enumerate(new.owners):
            held = since.get(p)
            if a in local:
                if held is None or held[0] != a:
                    since[p] = (a, new.epoch)
            elif held is not None:
                del since[p]

    # -- owners: lease and acks --------------------------------------------------------------

    async def _lease_loop(self) -> None:
        backoff = 0.05
        while True:
            live = Election(self.node.kv, LIVE_PREFIX + quote(self.holder, safe=""), self.holder,
                            self.config.lease_ttl_s)
            try:
                await live.campaign()
            except MeshError as exc:
                log.info("shard lease of %s: %s; retrying", self.holder, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            self._live = live
            self._signal.notify()
            await live.lost.wait()
            log.warning("node %s lost its shard lease; it admits no sharded call until it has a new one",
                        self.node.node_id)
            self._live = None
            for st in self._serving.values():
                st.confirmed = 0
            self._signal.notify()

    async def _ack_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            failed = False
            live = self._live
            if live is not None and live.holding:
                for capability, st in list(self._serving.items()):
                    m = self._maps.get(capability)
                    if m is None or st.written == (m.epoch, live.lease):
                        continue
                    if st.draining():
                        if st.drain_from is None:
                            st.drain_from = loop.time()
                        if loop.time() - st.drain_from < self.config.drain_s:
                            continue
                        log.warning("%s: calls on partitions this node lost still run after %.0f s; "
                                    "letting the new owners start", capability, self.config.drain_s)
                    st.drain_from = None
                    try:
                        await self.node.kv.put(ack_key(capability, self.holder), [m.epoch, live.lease],
                                               lease=live.lease, timeout=self.config.kv_timeout_s)
                    except MeshError as exc:
                        log.info("acking epoch %d of %s failed: %s", m.epoch, capability, exc)
                        failed = True
                        break
                    st.written = (m.epoch, live.lease)
                    self.counters["acks_written"] += 1
            await self._signal.wait(0.2 if failed else 1.0)

    # -- the watch ---------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        kv = self.node.kv
        backoff = 0.05
        while True:
            try:
                revision, items = await kv.range(KEY_PREFIX, revision=True, timeout=self.config.kv_timeout_s)
                self._load(items)
                if self._starting is not None and not self._starting.done():
                    self._starting.set_result(None)
                backoff = 0.05
                async for event in kv.watch(KEY_PREFIX, after=revision):
                    if event.kind == "reset":
                        break                   # fell behind: reload everything consistently
                    self._apply(event.key, None if event.kind == "delete" else event.value)
            except MeshError as exc:
                log.info("watching the shard maps: %s; reloading", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    def _load(self, items: dict[str, Any]) -> None:
        """Replace the whole view with one consistent read; ownership starts over from it."""
        self._maps.clear()
        self._acks.clear()
        for st in self._serving.values():
            st.confirmed = 0
            st.written = (0, 0)           # write our ack again: cheap, and never stuck unconfirmed
        for key, value in items.items():
            self._apply(key, value, reload=True)
        for capability, st in self._serving.items():
            m = self._maps.get(capability)
            st.since = self._owned(m) if m is not None else {}
        self._signal.notify()

    def _apply(self, key: str, value: Any, reload: bool = False) -> None:
        if key.startswith(MAP_PREFIX):
            capability = unquote(key[len(MAP_PREFIX):])
            old = self._maps.get(capability)
            if value is None:
                self._maps.pop(capability, None)
                new = None
            else:
                try:
                    new = ShardMap.from_wire(capability, value)
                except ProtocolError as exc:
                    self.counters["bad_maps"] += 1
                    log.warning("ignoring %s: %s", key, exc)
                    return
                self._maps[capability] = new
            hint = self._hints.get(capability)
            if hint is not None and (new is None or new.epoch >= hint.epoch):
                del self._hints[capability]
            st = self._serving.get(capability)
            if st is not None and not reload:
                if new is None:
                    st.since = {}
                else:
                    self._advance(st, old, new)
        elif key.startswith(ACK_PREFIX):
            capability, _, holder = key[len(ACK_PREFIX):].partition("/")
            capability, holder = unquote(capability), unquote(holder)
            acks = self._acks.setdefault(capability, {})
            st = self._serving.get(capability) if holder == self.holder else None
            if value is None:
                acks.pop(holder, None)
                if st is not None:
                    st.confirmed = 0
            else:
                try:
                    epoch, lease = int(value[0]), int(value[1])
                except (TypeError, ValueError, IndexError, KeyError):
                    log.warning("ignoring malformed ack %s", key)
                    return
                acks[holder] = epoch
                live = self._live
                if st is not None and live is not None and lease == live.lease:
                    st.confirmed = epoch        # our own ack came back: our view includes its past
        else:
            return
        if not reload:
            self._signal.notify()

    # -- rebalancing -------------------------------------------------------------------------

    async def _rebalance_loop(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.05
        while True:
            election = Election(self.node.kv, REBALANCER_KEY, self.holder, self.config.lease_ttl_s)
            try:
                await election.campaign()
            except MeshError as exc:
                log.info("campaign for the shard rebalancer: %s; retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            log.info("node %s rebalances the shard maps", self.node.node_id)
            changed: dict[str, tuple[tuple[str, ...], float]] = {}   # capability -> (providers, seen at)
            try:
                while election.holding:
                    await self._rebalance_once(changed, loop.time())
                    await asyncio.sleep(self.config.poll_s)
            finally:
                await election.resign()

    async def _rebalance_once(self, changed: dict[str, tuple[tuple[str, ...], float]], now: float) -> None:
        for capability in list(self._maps):
            m = self.shard_map(capability)
            want = self._providers(capability)
            if m is None or not want or want == m.providers:
                changed.pop(capability, None)
                continue
            first = changed.get(capability)
            if first is None or first[0] != want:
                changed[capability] = (want, now)
                continue
            if now - first[1] < self.config.settle_s:
                continue
            new = compute_map(capability, want, self.config, partitions=m.partitions, pins=m.pins,
                              epoch=m.epoch + 1)
            if await self._write(m, new, self.config.kv_timeout_s):
                changed.pop(capability, None)
                log.info("shard map of %s: epoch %d over %d providers, %.1f%% of partitions moved",
                         capability, new.epoch, len(want), 100 * moved_fraction(m, new))

    async def _write(self, old: ShardMap, new: ShardMap, timeout: float) -> bool:
        try:
            ok = await self.node.kv.cas(map_key(new.capability), old.raw, new.to_wire(), timeout=max(timeout, 0.01))
        except MeshError as exc:
            log.info("writing the shard map of %s failed: %s", new.capability, exc)
            return False
        if ok:
            self.counters["maps_written"] += 1
            self._hint(replace(new, raw=new.to_wire()))
        return ok
