"""The trading system's node processes: which agents run where, and starting, killing and
stopping them (``python -m mesh.node`` children, as in ``examples/patterns/launch.py``).

Layout (every node a separate process on loopback, ``--insecure``)::

    n1 n2 n3   Raft voters (--raft-voters n1,n2,n3, --data-dir): the execution layer.
               Each hosts a risk agent (risk-n1 ...) and offers the two singletons,
               executor and portfolio (--singleton): each runs on one of them at a time.
    md         market data: md-0, md-1, md-2 (one synthetic exchange feed each)
    an         analysis: technical, fundamental, sentiment
    st         strategies: strategy-0 (momentum), strategy-1 (value), strategy-2 (news)
    venue      the simulated exchange, which counts fills per order key

The signal path (md -> an -> st) and the order path (st -> risk -> executor -> venue) cross
process boundaries at every arrow. Killing the node that runs the executor takes a risk
agent (and maybe the portfolio and the Raft leader) with it, never the submitting strategies
or the exchange, which are the witnesses of exactly-once execution.

Children run in their own process group, with their log (stderr) in a temporary file shown
if they fail to start, and die with this process (``PR_SET_PDEATHSIG`` on Linux).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = "examples.trading"
VOTERS = ("n1", "n2", "n3")


@dataclass(frozen=True)
class NodeSpec:
    id: str
    agents: tuple[str, ...] = ()
    singletons: tuple[str, ...] = ()
    voter: bool = False


def layout() -> list[NodeSpec]:
    singletons = (f"{PKG}.execution:OrderExecutor=executor", f"{PKG}.portfolio:Portfolio=portfolio")
    execution = [NodeSpec(v, agents=(f"{PKG}.risk:Risk=risk-{v}",), singletons=singletons, voter=True)
                 for v in VOTERS]
    return execution + [
        NodeSpec("md", agents=tuple(f"{PKG}.market_data:MarketData=md-{i}" for i in range(3))),
        NodeSpec("an", agents=(f"{PKG}.analysis:TechnicalAnalysis=technical",
                               f"{PKG}.analysis:FundamentalAnalysis=fundamental",
                               f"{PKG}.analysis:SentimentAnalysis=sentiment")),
        NodeSpec("st", agents=(f"{PKG}.strategy:MomentumStrategy=strategy-0",
                               f"{PKG}.strategy:ValueStrategy=strategy-1",
                               f"{PKG}.strategy:NewsStrategy=strategy-2")),
        NodeSpec("venue", agents=(f"{PKG}.exchange:Exchange=exchange",)),
    ]


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()    # loaded here: only async-signal-safe work belongs in the forked child


def _die_with_parent() -> None:
    _LIBC.prctl(1, signal.SIGKILL)          # PR_SET_PDEATHSIG


class NodeProcess:
    """One ``python -m mesh.node`` child."""

    def __init__(self, spec: NodeSpec, data_root: Path, log_level: str = "warning") -> None:
        self.spec = spec
        self.data_root = data_root
        self.log_level = log_level
        self.proc: subprocess.Popen | None = None
        self.address = ""
        self._log = tempfile.TemporaryFile()

    @property
    def id(self) -> str:
        return self.spec.id

    def spawn(self, join: str | None) -> NodeProcess:
        spec = self.spec
        cmd = [sys.executable, "-m", "mesh.node", "--insecure", "--id", spec.id, "--bind", "tcp://127.0.0.1:*",
               "--log-level", self.log_level, "--join-timeout", "30"]
        if join:
            cmd += ["--join", join]
        if spec.voter:
            cmd += ["--raft-voters", ",".join(VOTERS), "--data-dir", str(self.data_root / spec.id)]
        for agent in spec.agents:
            cmd += ["--agent", agent]
        for agent in spec.singletons:
            cmd += ["--singleton", agent]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._log, start_new_session=True,
                                     preexec_fn=_die_with_parent if _LIBC is not None else None)
        return self

    def wait_ready(self, timeout_s: float) -> NodeProcess:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline().decode(errors="replace") if ready else ""
        if not line.startswith("ready "):
            self.kill()
            raise RuntimeError(f"node {self.id} did not start ({line.strip() or 'no ready line'}):\n{self.log_tail()}")
        self.address = line.split()[2]
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system) the process has used so far; None if unknown (not Linux, gone)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, AttributeError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """kill -9: no goodbye; the kernel closes its sockets."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def log_tail(self, limit: int = 3000) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-limit:]

    def close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def _signal(self, sig: int) -> None:
        if self.alive:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass


class Cluster:
    """Every node of :func:`layout`; the first voter is started first and the rest join it."""

    def __init__(self, data_root: Path, log_level: str = "warning") -> None:
        self.nodes = {spec.id: NodeProcess(spec, data_root, log_level) for spec in layout()}

    @property
    def seed(self) -> str:
        return self.nodes[VOTERS[0]].address

    def start(self, timeout_s: float = 60.0) -> None:
        first, *rest = self.nodes.values()
        first.spawn(None).wait_ready(timeout_s)
        for node in rest:       # side by side: on two cores, starting Python is most of the wait
            node.spawn(first.address)
        for node in rest:
            node.wait_ready(timeout_s)

    def cpu_s(self) -> dict[str, float | None]:
        return {node_id: node.cpu_s() for node_id, node in self.nodes.items()}

    def kill(self, node_id: str) -> int:
        """kill -9 ``node_id``; returns the moment (``time.monotonic_ns()``) just before."""
        at = time.monotonic_ns()
        self.nodes[node_id].kill()
        return at

    def stop(self, grace_s: float = 8.0) -> None:
        """SIGTERM to all (a graceful stop each), SIGKILL to any still running after ``grace_s``."""
        for node in self.nodes.values():
            node.terminate()
        deadline = time.monotonic() + grace_s
        for node in self.nodes.values():
            if node.proc is None:
                continue
            try:
                node.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.kill()
            node.close()
