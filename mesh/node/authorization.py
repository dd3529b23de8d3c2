"""The ACL where traffic enters a node: who may call, publish, subscribe, read and write.

Theory of operation
-------------------
* The node asks at the network boundary, for what another node wants of it: a request to a
  local agent (CALL ``agent.method``), a publish delivered here (PUBLISH ``topic``), a remote
  subscription before any message is routed to it (SUBSCRIBE ``pattern``: a node never
  receives what it may not subscribe to), a KV operation at the voter the client reached
  (KV_READ / KV_WRITE ``key or prefix``, see :class:`mesh.kv.client.RaftAgent`).
* The principal is the peer's node, authenticated by its link (the routing id ZAP tied to
  its key; :mod:`mesh.security.links`), and the agent it names in the envelope's ``src``
  (:mod:`mesh.node.caller`). A node's own agents act as the node: within one process there is
  nothing to enforce, so calls made on this node are not asked about.
* The mesh's own agents (``_raft.*``, ``_ops.*``, ``_place.*``) are infrastructure: requests to
  them are not checked here (the KV door checks its own operations).
* A denial is counted, written to the audit log (:mod:`mesh.security.audit`) with the rule
  that decided and the trace id, and reaches the caller as :class:`~mesh.errors.Unauthorized`.
  No policy: everything is allowed.
"""
from __future__ import annotations

from typing import Any

from mesh.errors import Unauthorized
from mesh.node.caller import caller_agent, current_peer
from mesh.observe.logs import trace_id
from mesh.security.acl import Action
from mesh.security.links import principal_of


class Authorizer:
    """The node's policy and audit log (either may be None: no policy, allow all)."""

    def __init__(self, policy: Any, audit: Any, counters: dict[str, int]) -> None:
        self.policy = policy
        self.audit = audit
        self.active = policy is not None   # read per request: a plain attribute
        self._counters = counters          # the node's; "unauthorized" counts denials
        counters.setdefault("unauthorized", 0)

    def allows(self, peer: str, src: str, action: Action, resource: str, trace: int = 0) -> bool:
        """Whether ``peer`` (and the agent ``src`` names) may do ``action`` on ``resource``;
        a denial is counted and audited."""
        if self.policy is None:
            return True
        node, agent = principal_of(peer), caller_agent(src, peer)
        decision = self.policy.check(node, agent, action, resource)
        if decision.allowed:
            return True
        self._counters["unauthorized"] += 1
        self.audit.deny(node, agent, action, resource, decision.rule, trace_id=trace)
        return False

    def require(self, peer: str, src: str, action: Action, resource: str, trace: int = 0) -> None:
        """:meth:`allows`, or :class:`~mesh.errors.Unauthorized` naming who and what."""
        if not self.allows(peer, src, action, resource, trace):
            raise self.denied(peer, src, action, resource)

    def require_caller(self, action: Action, resource: str) -> None:
        """The same for the peer whose request the running handler serves (nothing to check
        when the handler serves this node)."""
        caller = current_peer.get()
        if caller is None or self.policy is None:
            return
        peer, src = caller
        self.require(peer, src, action, resource, trace_id.get())

    @staticmethod
    def denied(peer: str, src: str, action: Action, resource: str) -> Unauthorized:
        agent = caller_agent(src, peer)
        who = f"node {principal_of(peer)!r}" + (f" (agent {agent!r})" if agent else "")
        return Unauthorized(f"{who} may not {action.value} {resource}")
