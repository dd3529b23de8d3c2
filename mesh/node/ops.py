"""``_ops.<node id>``: the system agent through which operators (``meshctl``) read a node's
own figures, those gossip does not carry: its counters, each agent's load, its Raft status.

Every node hosts one (added in :meth:`mesh.node.runtime.Node.start`). Its handlers only read
the node's state: no handler changes anything, so calling them is always safe. Like every
``_``-prefixed agent it has no circuit breaker, and listings hide it by default.
"""
from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Any

from mesh.agent import Agent, rpc
from mesh.errors import UnknownAgent
from mesh.observe.histogram import LogHistogram

AGENT_PREFIX = "_ops."


def ops_agent_name(node_id: str) -> str:
    return AGENT_PREFIX + node_id


class OpsAgent(Agent):
    """Read-only views of one node (see the module docstring). Times are seconds on the
    node's monotonic clock (``now_s``), so a caller can turn two samples into rates."""

    def __init__(self, node: Any) -> None:
        super().__init__(ops_agent_name(node.node_id))

    @rpc
    def stats(self) -> dict[str, int]:
        """The node's counters (:meth:`Node.stats`)."""
        return self.node.stats()

    @rpc
    def agents(self) -> dict[str, Any]:
        """{"now_s": clock, "agents": {name: load}}: the load of every agent hosted here
        (:meth:`Node.agent_load`: inflight, queued, latency_ms, calls, errors, rejected,
        expired) with its capabilities."""
        return {"now_s": time.monotonic(), "agents": self._loads()}

    @rpc
    def raft(self) -> dict[str, Any] | None:
        """This node's Raft status (role, term, leader, commit, applied, last_index,
        snapshot_index, revision, voters, learners, failed), or None if it keeps no log."""
        driver = self.node._raft
        if driver is None or driver._core is None:
            return None
        return driver.status()

    @rpc
    def subscriptions(self) -> list[dict[str, Any]]:
        """Each subscribing handler's queue (:meth:`Node.subscription_stats`)."""
        return self.node.subscription_stats()

    @rpc
    def describe(self, agent: str) -> dict[str, Any]:
        """Agent ``agent`` (hosted here) as tools outside the mesh see it: description,
        capabilities and, per rpc method, JSON Schemas of its parameters and result from its
        type hints and docstring (:func:`mesh.bridges.schema.describe_agent`)."""
        target = self.node.agents.get(agent)
        if target is None:
            raise UnknownAgent(f"no agent named {agent!r} on node {self.node.node_id!r}")
        from mesh.bridges.schema import describe_agent    # stdlib only; loaded when first asked
        return describe_agent(target)

    @rpc(eager=False)
    async def health(self) -> Any:
        """The node's own health report, where the node has one (``node.health()``); else
        a minimal one: the node answers, so it is up."""
        return await self._health()

    @rpc(eager=False)
    async def snapshot(self) -> dict[str, Any]:
        """Everything above in one answer (one round trip per node for ``meshctl top``)."""
        node = self.node
        return {"node": node.node_id, "address": node.address, "implementation": node.implementation,
                "uptime_s": round(time.time() - node.boot / 1e9, 3), "now_s": time.monotonic(),
                "stats": node.stats(), "agents": self._loads(), "raft": self.raft(),
                "health": await self._health(), "handled": self._handled(),
                "links": {m["id"]: m["link"] for m in node.members() if not m["self"]}}

    def _handled(self) -> dict[str, Any]:
        """Handler runs since start, all agents but the ``_ops`` ones merged (so a watcher
        polling this does not see itself): count, errors and the non-empty buckets of the
        handler-time histogram as [index, count] pairs (:mod:`mesh.observe.histogram`), so a
        caller can subtract two samples and read the percentiles of the interval."""
        merged = LogHistogram()
        errors = 0
        for (agent, _), stats in list(self.node._handled.by_method.items()):
            if not agent.startswith(AGENT_PREFIX):
                merged.merge(stats.histogram)
                errors += stats.errors
        return {"count": merged.count, "errors": errors,
                "buckets": [[i, n] for i, n in enumerate(merged.counts) if n]}

    def _loads(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, agent in self.node.agents.items():
            try:
                load = dict(self.node.agent_load(name))
            except UnknownAgent:          # removed between the two lookups
                continue
            load["capabilities"] = list(agent.capabilities)
            out[name] = load
        return out

    async def _health(self) -> Any:
        check = getattr(self.node, "health", None)
        if check is None:
            return {"status": "up"}
        report = check()
        if inspect.isawaitable(report):
            report = await report
        if dataclasses.is_dataclass(report) and not isinstance(report, type):
            report = dataclasses.asdict(report)
        return report
