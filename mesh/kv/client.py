"""``node.kv``: the replicated key-value store as seen from any node, voter or not.

Each voter hosts a system agent ``_raft.<node id>`` (:class:`RaftAgent`). A client sends a
write to a voter; a follower forwards it to the leader it knows; the leader replicates it
and answers once it is applied. Writes carry ``(client, seq)`` so a retry after a lost
answer is applied at most once. Reads go through the leader's ReadIndex: linearizable.
A client sees ``Unavailable`` only when no voter can reach a leader before the timeout.
"""
from __future__ import annotations

import asyncio
import itertools
from typing import Any

from mesh.agent import Agent, rpc
from mesh.errors import MeshError, NotLeader, Timeout, Unavailable, UnknownAgent, Unreachable
from mesh.kv.machine import CAS, DELETE, PUT, encode_command

AGENT_PREFIX = "_raft."
_RETRYABLE = (NotLeader, Unavailable, Unreachable, UnknownAgent, Timeout)


class RaftAgent(Agent):
    """The door to one voter's Raft group member (hosted by the node itself)."""

    def __init__(self, driver: Any) -> None:
        super().__init__(AGENT_PREFIX + driver.node_id)
        self.driver = driver

    @rpc(eager=False)
    async def propose(self, command: bytes, timeout: float = 5.0) -> Any:
        d = self.driver
        if d.is_leader:
            return await d.propose(command, timeout)
        leader = d.leader
        if leader is None or leader == d.node_id:
            raise Unavailable(f"{d.node_id} knows no leader right now")
        return await self.node.call(AGENT_PREFIX + leader, "propose", command, timeout, timeout=timeout)

    @rpc(eager=False)
    async def get(self, key: str, timeout: float = 5.0) -> Any:
        d = self.driver
        if d.is_leader:
            await d.read_barrier(timeout)
            value = d.machine.get(key)
            return None if value is None else value.value
        leader = d.leader
        if leader is None or leader == d.node_id:
            raise Unavailable(f"{d.node_id} knows no leader right now")
        return await self.node.call(AGENT_PREFIX + leader, "get", key, timeout, timeout=timeout)

    @rpc
    def status(self) -> dict:
        return self.driver.status()


class KV:
    """put / get / delete / cas on the mesh's replicated store (see the module docstring)."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self._client = f"{node.node_id}:{node.boot}"
        self._seq = itertools.count(1)
        self._leader_hint: str | None = None

    async def put(self, key: str, value: Any, *, timeout: float | None = None) -> int:
        """Store ``value`` (anything msgpack can carry); returns the write's revision."""
        return await self._write(timeout, PUT, key, value, 0)

    async def delete(self, key: str, *, timeout: float | None = None) -> bool:
        return await self._write(timeout, DELETE, key)

    async def cas(self, key: str, expected: Any, new: Any, *, timeout: float | None = None) -> bool:
        """Set ``key`` to ``new`` if it holds ``expected`` (None: absent; new None: delete)."""
        return await self._write(timeout, CAS, key, expected, new, 0)

    async def get(self, key: str, *, timeout: float | None = None) -> Any:
        """The value a linearizable read sees (None if absent)."""
        return await self._retry(timeout, "get", key)

    async def _write(self, timeout: float | None, op: str, *args: Any) -> Any:
        return await self._retry(timeout, "propose", encode_command(self._client, next(self._seq), op, *args))

    def _voters(self) -> list[str]:
        names = [n for n in self._node.directory() if n.startswith(AGENT_PREFIX)]
        local = [n for n in self._node.agents if n.startswith(AGENT_PREFIX)]
        hint = [AGENT_PREFIX + self._leader_hint] if self._leader_hint else []
        ordered = hint + local + sorted(names)
        return list(dict.fromkeys(ordered))

    async def _retry(self, timeout: float | None, method: str, arg: Any) -> Any:
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
                try:
                    result = await node.call(agent, method, arg, min(left, 5.0), timeout=min(left, 5.0))
                    self._leader_hint = agent[len(AGENT_PREFIX):]
                    return result
                except _RETRYABLE as exc:
                    last = exc
            left = deadline - loop.time()
            if left <= 0:
                raise Unavailable(f"no Raft leader answered within {total:g} s ({last})")
            await asyncio.sleep(min(backoff, left))
            backoff = min(backoff * 2, 0.2)
