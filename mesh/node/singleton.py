"""Leader-elected singleton agents: ``node.add(agent, singleton=True)``.

Every node that adds the agent campaigns for the key ``_singletons/<name>`` in the Raft KV
(:class:`~mesh.kv.election.Election`). The holder hosts the agent (gossip tells the mesh
where it is); the others wait. When the holder stops it resigns and the next one takes over
at once; when it dies its lease expires (``ttl``) and the next one takes over then. A holder
that loses its lease (cut off from the quorum) stops hosting the agent before another node
can win, so two copies never serve at once — as far as clocks run at the same rate.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from mesh.agent import Agent
from mesh.errors import MeshError
from mesh.kv.election import Election

log = logging.getLogger(__name__)

KEY_PREFIX = "_singletons/"


class Singleton:
    def __init__(self, node: Any, agent: Agent, ttl: float) -> None:
        self.node = node
        self.agent = agent
        self.election = Election(node.kv, KEY_PREFIX + agent.name, node.node_id, ttl)
        self._task: asyncio.Task | None = None

    @property
    def hosting(self) -> bool:
        return self.node.agents.get(self.agent.name) is self.agent

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop hosting (if we do) and hand the key over."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._unhost()
        await self.election.resign()

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self.election.campaign()
            except MeshError as exc:          # no quorum right now: keep trying
                log.info("singleton %s: campaign failed (%s); retrying", self.agent.name, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            log.info("singleton %s now runs on %s", self.agent.name, self.node.node_id)
            self.node.add(self.agent)
            try:
                await self.election.lost.wait()
                log.warning("singleton %s lost its lease on %s; stopping it here",
                            self.agent.name, self.node.node_id)
            finally:
                self._unhost()

    def _unhost(self) -> None:
        if self.hosting:
            self.node.remove(self.agent.name)
