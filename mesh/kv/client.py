"""``node.kv``: the replicated key-value store as seen from any node, voter or not.

Each voter hosts a system agent ``_raft.<node id>`` (:class:`RaftAgent`). A client sends a
write to a voter; a follower forwards it to the leader it knows; the leader replicates it
and answers once it is applied. Writes carry ``(client, seq)`` so a retry after a lost
answer is applied at most once. Reads go through the leader's ReadIndex: linearizable.
A client sees ``Unavailable`` only when no voter can reach a leader before the timeout.

Watches long-poll any voter for the changes after the revision they have seen (see
:mod:`mesh.kv.history`): in order, none missed, none twice, across voter failures.
"""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any, AsyncIterator

from mesh.agent import Agent, rpc
from mesh.errors import MeshError, NotLeader, Timeout, Unavailable, UnknownAgent, Unreachable
from mesh.kv.election import Lock
from mesh.kv.machine import CAS, DELETE, GRANT, KEEPALIVE, PUT, REVOKE, encode_command, written_key
from mesh.node.caller import caller_agent, current_peer
from mesh.security.links import principal_of
from mesh.security.acl import Action

AGENT_PREFIX = "_raft."
_RETRYABLE = (NotLeader, Unavailable, Unreachable, UnknownAgent, Timeout)
_POLL_S = 5.0       # how long a watch's long-poll waits at a voter for the next change
_BATCH = 1000       # changes per long-poll answer


class RaftAgent(Agent):
    """The door to one voter's Raft group member (hosted by the node itself). Every method
    takes the caller's time budget (``timeout``, seconds) last, and answers [leader, result]:
    naming the leader (None when any voter serves it) so the client goes there next time."""

    def __init__(self, driver: Any) -> None:
        super().__init__(AGENT_PREFIX + driver.node_id)
        self.driver = driver

    @rpc(eager=False)
    async def propose(self, command: bytes, stamp: bool = False, timeout: float = 5.0) -> Any:
        self._guard(Action.KV_WRITE, written_key(command))
        return await self._at_leader("propose", command, stamp, timeout=timeout)

    @rpc(eager=False)
    async def get(self, key: str, timeout: float = 5.0) -> Any:
        self._guard(Action.KV_READ, key)
        return await self._at_leader("get", key, timeout=timeout)

    @rpc(eager=False)
    async def range(self, prefix: str, timeout: float = 5.0) -> list:
        """[revision, [[key, value, mod_revision], ...]] under ``prefix``, linearizable."""
        self._guard(Action.KV_READ, prefix)
        return await self._at_leader("range", prefix, timeout=timeout)

    @rpc(eager=False)
    async def changes(self, prefix: str, after: int | None, wait: float = 0.0, timeout: float = 5.0) -> list:
        """[revision, changes]: the changes under ``prefix`` after revision ``after``, each
        [key, value, revision, deleted], waiting up to ``wait`` s for one; changes is None
        when they are no longer held (the watcher must start over). ``after`` None: from
        now. Served by this voter, leader or not: every voter applies the same order."""
        self._guard(Action.KV_READ, prefix)
        h, m = self.driver.history, self.driver.machine
        if after is None:
            return [None, [m.revision, []]]
        found = h.since(prefix, after, _BATCH)
        if found == [] and wait > 0:
            await h.wait(min(wait, timeout))
            found = h.since(prefix, after, _BATCH)
        if found is None:
            return [None, [m.revision, None]]
        top = found[-1].revision if found else 0
        return [None, [max(m.revision, top), [[c.key, c.value, c.revision, c.deleted] for c in found]]]

    @rpc(eager=False)
    async def reconfigure(self, op: str, node: str, timeout: float = 5.0) -> dict:
        """A membership change (see ConsensusDriver.reconfigure), done by the leader."""
        return await self._at_leader("reconfigure", op, node, timeout=timeout)

    @rpc(eager=False)
    async def progress(self, node: str, timeout: float = 5.0) -> list:
        """[index ``node`` holds (None if unknown), commit index], from the leader."""
        return await self._at_leader("progress", node, timeout=timeout)

    @rpc(eager=False)
    async def transfer(self, to: str | None, timeout: float = 5.0) -> list:
        """Hand leadership to ``to`` (None: the most caught-up voter); the new leader's id."""
        return await self._at_leader("transfer", to, timeout=timeout)

    def _guard(self, action: Action, key: str | None) -> None:
        """The ACL on the KV (see :meth:`mesh.node.runtime.Node.authorize`), checked at the
        voter a client reaches first: a request another voter forwards was checked there.
        ``key`` None: not a key operation (leases), allowed to every authenticated node."""
        caller = current_peer.get()
        if caller is None or key is None:
            return
        peer, src = caller
        agent = caller_agent(src, peer)
        if agent is not None and agent.startswith(AGENT_PREFIX) and principal_of(peer) in self.driver.members():
            return
        self.node.authorize(action, key)

    async def _at_leader(self, method: str, *args: Any, timeout: float) -> list:
        """Run ``method`` here if we lead, else forward it to the leader: [leader, result]."""
        d = self.driver
        if not d.is_leader:
            return await self.node.call(await self._leader(timeout), method, *args, timeout, timeout=timeout)
        if method == "propose":
            command, stamp = args
            result = await d.propose(command, timeout, stamp)
        elif method == "reconfigure":
            result = await d.reconfigure(*args, timeout)
        elif method == "progress":
            result = [d.match_index(args[0]), d.status()["commit"]]
        elif method == "transfer":
            result = await d.transfer_leadership(args[0], timeout)
        else:                                       # get, range: linearizable reads
            await d.read_barrier(timeout)
            m = d.machine
            if method == "get":
                value = m.get(args[0])
                result = None if value is None else value.value
            else:
                result = [m.revision, [[k, v.value, v.mod_rev] for k, v in m.range(args[0])]]
        return [d.node_id, result]

    @rpc
    def status(self) -> dict:
        return self.driver.status()

    async def _leader(self, timeout: float) -> str:
        """The leader's agent; during an election, wait for it (part of ``timeout``) rather
        than send the client into backoff."""
        d = self.driver
        leader = await d.wait_for_leader(min(timeout / 2, 1.0))
        if leader is None or leader == d.node_id:
            raise Unavailable(f"{d.node_id} knows no leader right now")
        return AGENT_PREFIX + leader


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by :meth:`KV.watch`. ``kind`` is "put" or "delete", or "reset": the
    watcher fell behind what the voters keep, and the "put" events that follow (same
    revision) are the whole current state under the prefix."""
    kind: str
    key: str
    value: Any
    revision: int


class KV:
    """The mesh's replicated store (see the module docstring). Every method takes
    ``timeout`` (seconds; default: the node's ``default_timeout``)."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self._client = f"{node.node_id}:{node.boot}"
        self._seq = itertools.count(1)
        self._outstanding: set[int] = set()     # seqs of writes still awaiting an answer
        self._leader_hint: str | None = None

    async def put(self, key: str, value: Any, *, lease: int = 0, timeout: float | None = None) -> int:
        """Store ``value`` (anything msgpack can carry); returns the write's revision. With
        ``lease`` (from :meth:`grant`) the key is deleted when the lease ends."""
        return await self._write(timeout, PUT, key, value, lease)

    async def delete(self, key: str, *, timeout: float | None = None) -> bool:
        return await self._write(timeout, DELETE, key)

    async def cas(self, key: str, expected: Any, new: Any, *, lease: int = 0,
                  timeout: float | None = None) -> bool:
        """Set ``key`` to ``new`` if it holds ``expected`` (None: absent; new None: delete)."""
        return await self._write(timeout, CAS, key, expected, new, lease)

    async def get(self, key: str, *, timeout: float | None = None) -> Any:
        """The value a linearizable read sees (None if absent)."""
        return await self._retry(timeout, "get", key)

    async def range(self, prefix: str, *, revision: bool = False, timeout: float | None = None) -> Any:
        """Every key under ``prefix`` with its value, in one linearizable read: a dict, or
        with ``revision=True`` (the store's revision at that read, the dict), to
        :meth:`watch` from."""
        rev, items = await self._retry(timeout, "range", prefix)
        found = {k: v for k, v, _ in items}
        return (rev, found) if revision else found

    async def members(self, *, timeout: float | None = None) -> dict[str, list[str]]:
        """The Raft configuration: {"voters": [...], "learners": [...]}."""
        return await self._retry(timeout, "reconfigure", "none", "")

    async def add_voter(self, node_id: str, *, catch_up_lag: int = 100, timeout: float | None = None) -> dict:
        """Make ``node_id`` (a node started with ``raft_member=True``) a voter: first a
        learner that receives the log, then, once it is within ``catch_up_lag`` entries of
        the commit index, a voter — so adding it never stalls commits while it catches up
        (Raft thesis 4.2.1). Returns the new configuration."""
        total = self._node.default_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total
        conf = await self._retry(total, "reconfigure", "add_learner", node_id)
        if node_id in conf["voters"]:
            return conf
        while True:
            match, commit = await self._retry(max(0.01, deadline - loop.time()), "progress", node_id)
            if match is not None and match >= commit - catch_up_lag:
                break
            if loop.time() >= deadline:
                raise Timeout(f"{node_id} did not catch up with the log within {total:g} s")
            await asyncio.sleep(0.05)
        return await self._retry(max(0.01, deadline - loop.time()), "reconfigure", "promote", node_id)

    async def add_learner(self, node_id: str, *, timeout: float | None = None) -> dict:
        """Let ``node_id`` receive the log without voting (a warm standby, or a read replica)."""
        return await self._retry(timeout, "reconfigure", "add_learner", node_id)

    async def remove_member(self, node_id: str, *, timeout: float | None = None) -> dict:
        """Take ``node_id`` out of the configuration (voter or learner; the leader too, which
        then steps down). Returns the new configuration."""
        return await self._retry(timeout, "reconfigure", "remove", node_id)

    async def transfer_leader(self, to: str | None = None, *, timeout: float | None = None) -> str | None:
        """Move Raft leadership to voter ``to`` (None: the most caught-up other voter), e.g.
        before taking the leader's machine down; returns the leader afterwards."""
        return await self._retry(timeout, "transfer", to)

    def lock(self, name: str, *, ttl: float = 10.0) -> Lock:
        """A mesh-wide lock: ``async with node.kv.lock("rebalance"): ...`` (see :class:`Lock`)."""
        return Lock(self, name, f"{self._client}:{next(self._seq)}", ttl)

    async def grant(self, ttl: float, *, timeout: float | None = None) -> int:
        """A new lease of ``ttl`` seconds (by the leader's clock); returns its id. Keys put
        with it vanish when it expires, unless :meth:`keepalive` renews it in time."""
        ttl_ms = int(ttl * 1000)
        if ttl_ms <= 0:
            raise ValueError("ttl must be positive")
        return await self._write(timeout, GRANT, ttl_ms, 0, stamp=True)

    async def keepalive(self, lease: int, *, timeout: float | None = None) -> bool:
        """Renew ``lease`` for another TTL; False if it has already ended."""
        return await self._write(timeout, KEEPALIVE, lease, 0, stamp=True)

    async def revoke(self, lease: int, *, timeout: float | None = None) -> bool:
        """End ``lease`` now, deleting its keys."""
        return await self._write(timeout, REVOKE, lease)

    async def watch(self, prefix: str, *, after: int | None = None,
                    timeout: float | None = None) -> AsyncIterator[WatchEvent]:
        """Yield every change under ``prefix`` after revision ``after`` (default: from now),
        in revision order, for as long as the caller iterates. Raises ``Unavailable`` only if
        no voter answers for ``timeout``."""
        if after is None:
            after, _ = await self._retry(timeout, "changes", prefix, None, 0.0)
        while True:
            revision, found = await self._retry(timeout, "changes", prefix, after, _POLL_S, wait=_POLL_S)
            if found is None:                         # fell behind the voters' window
                revision, items = await self._retry(timeout, "range", prefix)
                yield WatchEvent("reset", prefix, None, revision)
                for k, v, _ in items:
                    yield WatchEvent("put", k, v, revision)
            else:
                for k, v, rev, deleted in found:
                    yield WatchEvent("delete" if deleted else "put", k, v, rev)
            after = max(after, revision)

    async def _write(self, timeout: float | None, op: str, *args: Any, stamp: bool = False) -> Any:
        seq = next(self._seq)
        outstanding = self._outstanding
        outstanding.add(seq)
        try:
            command = encode_command(self._client, seq, op, *args, ack=min(outstanding))
            return await self._retry(timeout, "propose", command, stamp)
        finally:
            outstanding.discard(seq)

    def _voters(self) -> list[str]:
        names = [n for n in self._node.directory() if n.startswith(AGENT_PREFIX)]
        local = [n for n in self._node.agents if n.startswith(AGENT_PREFIX)]
        hint = [AGENT_PREFIX + self._leader_hint] if self._leader_hint else []
        ordered = hint + local + sorted(names)
        return list(dict.fromkeys(ordered))

    async def _retry(self, timeout: float | None, method: str, *args: Any, wait: float = 0.0) -> Any:
        """Call ``method`` on a voter (the leader first, if known), trying the others and again
        with backoff until ``timeout``. ``wait``: how long the call may legitimately block."""
        node = self._node
        total = node.default_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total
        last: MeshError | None = None
        backoff = 0.01
        while True:
            for agent in self._voters():
                left = deadline - loop.time()
                if left <= 0:
                    break
                budget = min(left, 5.0)
                try:
                    leader, result = await node.call(agent, method, *args, budget, timeout=budget + wait)
                    if leader is not None:
                        self._leader_hint = leader
                    return result
                except _RETRYABLE as exc:
                    last = exc
            left = deadline - loop.time()
            if left <= 0:
                raise Unavailable(f"no Raft leader answered within {total:g} s ({last})")
            await asyncio.sleep(min(backoff, left))
            backoff = min(backoff * 2, 0.2)
