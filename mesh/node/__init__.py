"""The node: a process (or an asyncio loop inside one) hosting agents on the mesh.

Run one from a shell with ``python -m mesh.node --help``.
"""
from mesh.node.runtime import Node

__all__ = ["Node"]
