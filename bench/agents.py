"""Agents the end-to-end benchmarks host in a server node process:

    python -m mesh.node --id srv --bind tcp://127.0.0.1:* --agent bench.agents:Echo=echo --log-level warning
"""
from __future__ import annotations

from typing import Any

import mesh


class Echo(mesh.Agent):
    """Answers with what it got (round trips) and counts one-way messages (throughput)."""

    capabilities = ("echo",)

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.count = 0

    @mesh.rpc
    async def echo(self, payload: Any) -> Any:
        return payload

    @mesh.rpc
    async def sink(self, payload: Any) -> None:
        self.count += 1

    @mesh.rpc
    async def received(self) -> int:
        """How many ``sink`` messages have arrived since the node started."""
        return self.count
