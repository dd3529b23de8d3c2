"""Bridges between the mesh and the agent protocols outside it (``pip install mesh[bridges]``).

- MCP (Model Context Protocol, the official ``mcp`` SDK): :mod:`mesh.bridges.mcp_server`
  serves chosen agents' ``@rpc`` methods as MCP tools (CLI: ``python -m mesh.bridges.mcp``);
  :class:`~mesh.bridges.mcp_agent.McpToolsAgent` makes an external MCP server's tools
  callable from the mesh.
- A2A (Agent2Agent, the official ``a2a-sdk``): :mod:`mesh.bridges.a2a_server` publishes
  agents as A2A agents (CLI: ``python -m mesh.bridges.a2a``);
  :class:`~mesh.bridges.a2a_agent.A2AClientAgent` calls an external A2A agent.

Both describe methods with :mod:`mesh.bridges.schema` (JSON Schema from type hints and
docstrings), which needs neither SDK; importing this package loads neither. See
docs/bridges.md.
"""
from __future__ import annotations

from typing import Any

from mesh.bridges.schema import describe_agent, method_schema, text_entry

__all__ = ["A2AClientAgent", "McpToolsAgent", "describe_agent", "method_schema", "text_entry"]


def __getattr__(name: str) -> Any:
    # the agents pull in their SDKs: only when asked for
    if name == "McpToolsAgent":
        from mesh.bridges.mcp_agent import McpToolsAgent
        return McpToolsAgent
    if name == "A2AClientAgent":
        from mesh.bridges.a2a_agent import A2AClientAgent
        return A2AClientAgent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
