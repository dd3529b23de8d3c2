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
                 join: list[str] | None = None, *, data_dir: str | os.PathLike | None = None,
                 raft_voters: list[str] | None = None, extra_args: list[str] | None = None,
                 log_file: str | os.PathLike | None = None) -> None:
        self.node_id = node_id
        self.agents = agents
        self.bind = bind
        self.join = join or []
        self.data_dir = data_dir
        self.raft_voters = raft_voters or []
        self.extra_args = extra_args or []
        # where the child's stderr (its log) goes, appended across restarts; None: inherited
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def start(self, timeout: float = 20.0) -> NodeProcess:
        cmd = [sys.executable, "-m", "mesh.node", "--insecure", "--id", self.node_id, "--bind", self.bind,
               "--log-level", "warning", "--join-timeout", "10"]
        for seed in self.join:
            cmd += ["--join", seed]
        for agent in self.agents:
            cmd += ["--agent", agent]
        if self.data_dir is not None:
            cmd += ["--data-dir", os.fspath(self.data_dir)]
        if self.raft_voters:
            cmd += ["--raft-voters", ",".join(self.raft_voters)]
        cmd += self.extra_args
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if self.log_file is not None:
            with open(self.log_file, "ab") as err:
                self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                             stderr=err, text=True)
        else:
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
