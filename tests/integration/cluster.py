"""Start and stop real node processes (``python -m mesh.node``) for integration tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import select
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class NodeProcess:
    """One ``python -m mesh.node`` child. ``start`` waits for its ``ready`` line."""

    def __init__(self, node_id: str, agents: list[str], bind: str = "tcp://127.0.0.1:*",
                 join: list[str] | None = None) -> None:
        self.node_id = node_id
        self.agents = agents
        self.bind = bind
        self.join = join or []
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def start(self, timeout: float = 20.0) -> NodeProcess:
        cmd = [sys.executable, "-m", "mesh.node", "--id", self.node_id, "--bind", self.bind,
               "--log-level", "warning", "--join-timeout", "10"]
        for seed in self.join:
            cmd += ["--join", seed]
        for agent in self.agents:
            cmd += ["--agent", agent]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("ready "):
            self.kill()
            raise RuntimeError(f"node {self.node_id} did not start: {line!r}")
        self.address = line.split()[2]
        # Later restarts keep the same address, as a restarted server would.
        self.bind = self.address
        return self

    def kill(self) -> None:
        """kill -9: no goodbye, sockets torn down by the kernel."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 10.0) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        return self.proc.returncode if self.proc else 0
