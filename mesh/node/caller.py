"""Who is calling: the agent on whose behalf a task sends, and the peer a handler serves.

Theory of operation
-------------------
* ``current_agent``: while an agent's handler runs, or while an agent calls through its own
  shortcuts (``self.call``...), the agent's name. Requests, sends and publishes carry it in
  the envelope's ``src`` as ``<node>/<agent>``, so the receiving node can hold the *agent*
  to its ACL as well as the node (whose key authenticated the link). The agent part is the
  sending node's claim: a node vouches for the agents it hosts.
* ``current_peer``: while a handler serves a request from another node, that peer and the
  envelope's ``src`` (read with :func:`caller_agent`), so infrastructure agents (the Raft KV
  door) can check the caller themselves. None for calls made on this node.
* The trace id (:data:`mesh.observe.logs.trace_id`) follows the same path: a handler runs
  in the trace of the envelope it serves; a call made outside any trace starts a new one.
"""
from __future__ import annotations

from contextvars import ContextVar

SRC_SEP = "/"
MAX_SRC_BYTES = 255            # the envelope's src field

current_agent: ContextVar[str] = ContextVar("mesh_current_agent", default="")
current_peer: ContextVar[tuple[str, str] | None] = ContextVar("mesh_current_peer", default=None)


def envelope_src(node_id: str, agent: str) -> str:
    """``src`` of an envelope sent by ``agent`` (may be empty) of ``node_id``."""
    if not agent:
        return node_id
    src = node_id + SRC_SEP + agent
    return src if len(src.encode()) <= MAX_SRC_BYTES else node_id


def caller_agent(src: str, peer: str) -> str | None:
    """The agent named by ``src``, if ``src`` is peer's own (a node can only speak for itself)."""
    node, sep, agent = src.partition(SRC_SEP)
    return agent if sep and agent and node == peer else None
