"""mesh: a peer-to-peer agent mesh on ZeroMQ with a compiled hot path.

    import mesh

    class Risk(mesh.Agent):
        capabilities = ("risk",)

        @mesh.rpc
        async def check(self, order: dict) -> bool: ...

See README.md for the tour.
"""
from __future__ import annotations

__version__ = "0.1.0"

from mesh import errors
from mesh._core import IMPLEMENTATION
from mesh.agent import Agent, on, rpc
from mesh.node import Node

__all__ = ["Agent", "IMPLEMENTATION", "Node", "errors", "on", "rpc", "__version__"]
