"""Start and stop ``python -m mesh.node`` processes for the pattern examples.

Each example that spans processes starts its node processes with :func:`start_node`, naming
agents from its own module (``pubsub:TickCounter=fast-1``): the child process finds the
example modules, and mesh itself when run from a checkout, through PYTHONPATH.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def bootstrap() -> None:
    """Make ``import mesh`` work from a checkout that is not installed."""
    try:
        import mesh  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT))


class NodeProcess:
    """One ``python -m mesh.node`` child; :meth:`start` returns once it printed ``ready``."""

    def __init__(self, node_id: str, agents: list[str], join: list[str] | None = None,
                 extra: list[str] | None = None) -> None:
        self.node_id = node_id
        self.agents = agents
        self.join = join or []
        self.extra = extra or []
        self.address = ""
        self.proc: subprocess.Popen | None = None
        # the child's log: kept out of the transcript, shown if it fails to start
        self.log = tempfile.TemporaryFile(mode="w+")

    def start(self, timeout: float = 20.0) -> NodeProcess:
        cmd = [sys.executable, "-m", "mesh.node", "--insecure", "--id", self.node_id, "--bind", "tcp://127.0.0.1:*",
               "--log-level", "error", *self.extra]
        for seed in self.join:
            cmd += ["--join", seed]
        for agent in self.agents:
            cmd += ["--agent", agent]
        path = os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=dict(os.environ, PYTHONPATH=path))
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("ready "):
            self.stop()
            self.log.seek(0)
            raise SystemExit(f"node {self.node_id} did not start ({line.strip() or 'no output'})\n"
                             f"{self.log.read()[-2000:]}")
        self.address = line.split()[2]
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (a graceful stop), then SIGKILL if it does not end in time."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
