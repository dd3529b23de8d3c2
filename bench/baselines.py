"""Raw pyzmq peers: the baselines every end-to-end figure is compared with, measured in the same run.

They do the same work a mesh call does and nothing more: the client packs the payload with
msgpack, the server unpacks it and packs it again, the client unpacks the answer. What is left
between them and mesh is what mesh adds (envelope, routing, dispatch, futures, timers).

Servers run as separate processes started from this module and print one line
``ready <endpoint>...`` on standard output once bound (port 0 / ``*``, so never a clash):

    python -m bench.baselines echo --bind tcp://127.0.0.1:*     # ROUTER echo, plain blocking pyzmq
    python -m bench.baselines sink --bind tcp://127.0.0.1:*     # PULL counter + REP "how many?"

:class:`ServerProcess` starts either (or a mesh node, which prints the same kind of line), and
always kills it: on ``stop``, at interpreter exit, and — on Linux — when the parent dies.

Clients (all drive one request in flight, or a pipelined burst of one-way messages):

* :class:`BlockingEcho` / :class:`AsyncEcho` — DEALER to the echo ROUTER, blocking or ``zmq.asyncio``.
* :class:`BlockingPush` / :class:`AsyncPush` — PUSH to the sink, then poll its count until all arrived.
* :class:`OsbrainPair` — osBrain agent <-> agent REQ/REP, if osBrain is importable.

This module imports neither mesh nor anything that does: the baselines work on their own.
"""
from __future__ import annotations

import argparse
import asyncio
import atexit
import ctypes
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import msgpack
import zmq

ROOT = Path(__file__).resolve().parents[1]

# The payload of every end-to-end suite: a typical order, 10 fields.
PAYLOAD: dict[str, Any] = {
    "symbol": "AAPL", "side": "buy", "qty": 100, "price": 187.25, "account": "acct-42",
    "order_id": 123456789, "tif": "IOC", "ts_us": 1732460000000000, "venue": "XNAS",
    "tags": ["algo", "v2"],
}

RECV_TIMEOUT_MS = 5_000       # a raw call that gets no answer fails instead of hanging the bench
POLL_INTERVAL_S = 0.0005      # one-way suites: how often the sender asks "how many arrived?"
DRAIN_BUDGET = 1_000          # sink: messages read per wake-up before it looks at its control socket

_packb = msgpack.packb
_unpackb = msgpack.unpackb


# -- server processes ----------------------------------------------------------------------------


class ServerStartError(RuntimeError):
    """A server process exited or stayed silent instead of printing its ``ready`` line."""


def _load_libc():
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform == "linux" else None
    except OSError:
        return None


_LIBC = _load_libc()   # loaded here, not in the forked child, where only async-signal-safe work belongs


def _die_with_parent() -> None:
    """preexec_fn: have the kernel SIGKILL the child if the bench process dies (Linux only)."""
    _LIBC.prctl(1, signal.SIGKILL)             # PR_SET_PDEATHSIG


class ServerProcess:
    """One server child process. :meth:`start` returns the words after ``ready`` on its first line."""

    _live: set[ServerProcess] = set()

    def __init__(self, argv: Sequence[str], name: str, cwd: Path = ROOT) -> None:
        self.argv = list(argv)
        self.name = name
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self._stderr = None

    def start(self, timeout_s: float = 30.0) -> list[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.cwd), env.get("PYTHONPATH", "")) if p)
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, env=env, stdout=subprocess.PIPE, stderr=self._stderr,
            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent if _LIBC is not None else None)
        ServerProcess._live.add(self)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline().decode(errors="replace") if ready else ""
        words = line.split()
        if not words or words[0] != "ready":
            self.stop()
            raise ServerStartError(
                f"{self.name} did not start ({' '.join(self.argv)}): first line {line!r}, "
                f"exit code {self.proc.returncode}, stderr:\n{self.stderr_text()}")
        return words[1:]

    def stderr_text(self, limit: int = 4_000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(grace_s)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        ServerProcess._live.discard(self)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @classmethod
    def stop_all(cls) -> None:
        for server in list(cls._live):
            server.stop(grace_s=1.0)


atexit.register(ServerProcess.stop_all)


def raw_server(kind: str) -> ServerProcess:
    """A raw server process of ``kind`` ("echo" or "sink"), not yet started."""
    return ServerProcess([sys.executable, "-m", "bench.baselines", kind, "--bind", "tcp://127.0.0.1:*"],
                         name=f"raw {kind} server")


def serve_echo(bind: str) -> None:
    """ROUTER echo: unpack each request and pack it again, plain blocking pyzmq, one thread."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.bind(bind)
    print(f"ready {sock.LAST_ENDPOINT.decode()}", flush=True)
    recv, send = sock.recv_multipart, sock.send_multipart
    while True:
        ident, body = recv()
        send([ident, _packb(_unpackb(body))])


def serve_sink(bind: str) -> None:
    """PULL that unpacks and counts every message; a REP beside it answers ``count`` requests."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    pull.bind(bind)
    control = ctx.socket(zmq.REP)
    control.linger = 0
    control.bind(bind)
    print(f"ready {pull.LAST_ENDPOINT.decode()} {control.LAST_ENDPOINT.decode()}", flush=True)
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    poller.register(control, zmq.POLLIN)
    count = 0
    recv = pull.recv
    while True:
        for sock, _ in poller.poll():
            if sock is pull:
                for _ in range(DRAIN_BUDGET):
                    try:
                        data = recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    _unpackb(data)
                    count += 1
            else:
                control.recv()
                control.send(_packb(count))


# -- request/response clients ----------------------------------------------------------------------


class BlockingEcho:
    """Blocking DEALER to the echo server: one request in flight."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.rcvtimeo = RECV_TIMEOUT_MS
        self.sock.connect(endpoint)

    def call(self, obj: Any) -> Any:
        self.sock.send(_packb(obj))
        return _unpackb(self.sock.recv())

    def run(self, n: int, samples: list[int] | None) -> None:
        """``n`` calls with PAYLOAD; each call's latency (ns) is appended to ``samples``."""
        send, recv, clock, payload = self.sock.send, self.sock.recv, time.perf_counter_ns, PAYLOAD
        for _ in range(n):
            t0 = clock()
            send(_packb(payload))
            _unpackb(recv())
            t1 = clock()
            if samples is not None:
                samples.append(t1 - t0)

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


class AsyncEcho:
    """``zmq.asyncio`` DEALER to the echo server, on whatever loop runs it (uvloop in the bench)."""

    def __init__(self, endpoint: str, loop: asyncio.AbstractEventLoop) -> None:
        import zmq.asyncio

        self.loop = loop
        self.ctx = zmq.asyncio.Context()
        self.endpoint = endpoint
        self.sock = None
        loop.run_until_complete(self._open())

    async def _open(self) -> None:
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(self.endpoint)

    async def call(self, obj: Any) -> Any:
        await self.sock.send(_packb(obj))
        return _unpackb(await asyncio.wait_for(self.sock.recv(), RECV_TIMEOUT_MS / 1000))

    async def _run(self, n: int, samples: list[int] | None) -> None:
        send, recv, clock, payload = self.sock.send, self.sock.recv, time.perf_counter_ns, PAYLOAD
        for _ in range(n):
            t0 = clock()
            await send(_packb(payload))
            _unpackb(await recv())
            t1 = clock()
            if samples is not None:
                samples.append(t1 - t0)

    def run(self, n: int, samples: list[int] | None) -> None:
        """``n`` calls inside one ``run_until_complete``; latencies in ns into ``samples``."""
        # The timed loop has no timeout wrapper (it would cost a timer per call); a lost reply
        # is caught by the watchdog instead.
        self.loop.run_until_complete(asyncio.wait_for(self._run(n, samples), 60 + n * 0.01))

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


# -- one-way (pipelined) clients ---------------------------------------------------------------------


class BlockingPush:
    """Blocking PUSH to the sink; a REQ asks the sink how many messages it has counted."""

    def __init__(self, data_endpoint: str, control_endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.linger = 0
        self.push.connect(data_endpoint)
        self.control = self.ctx.socket(zmq.REQ)
        self.control.linger = 0
        self.control.rcvtimeo = RECV_TIMEOUT_MS
        self.control.connect(control_endpoint)

    def count(self) -> int:
        self.control.send(b"count")
        return _unpackb(self.control.recv())

    def run(self, n: int, timeout_s: float = 60.0) -> None:
        """Send ``n`` messages back to back, then poll until the sink has counted all of them."""
        target = self.count() + n
        send, payload = self.push.send, PAYLOAD
        for _ in range(n):
            send(_packb(payload))
        deadline = time.monotonic() + timeout_s
        while (seen := self.count()) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw sink counted {seen - target + n} of {n} messages in {timeout_s} s")
            time.sleep(POLL_INTERVAL_S)

    def close(self) -> None:
        self.push.close()
        self.control.close()
        self.ctx.term()


class AsyncPush:
    """``zmq.asyncio`` PUSH to the sink, and a REQ for its count, on the given loop."""

    def __init__(self, data_endpoint: str, control_endpoint: str, loop: asyncio.AbstractEventLoop) -> None:
        import zmq.asyncio

        self.loop = loop
        self.ctx = zmq.asyncio.Context()
        self.endpoints = (data_endpoint, control_endpoint)
        loop.run_until_complete(self._open())

    async def _open(self) -> None:
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.linger = 0
        self.push.connect(self.endpoints[0])
        self.control = self.ctx.socket(zmq.REQ)
        self.control.linger = 0
        self.control.connect(self.endpoints[1])

    async def count(self) -> int:
        await self.control.send(b"count")
        return _unpackb(await asyncio.wait_for(self.control.recv(), RECV_TIMEOUT_MS / 1000))

    async def _run(self, n: int, timeout_s: float) -> None:
        target = await self.count() + n
        send, payload = self.push.send, PAYLOAD
        for _ in range(n):
            await send(_packb(payload))
        deadline = time.monotonic() + timeout_s
        while (seen := await self.count()) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw sink counted {seen - target + n} of {n} messages in {timeout_s} s")
            await asyncio.sleep(POLL_INTERVAL_S)

    def run(self, n: int, timeout_s: float = 60.0) -> None:
        self.loop.run_until_complete(self._run(n, timeout_s))

    def close(self) -> None:
        self.push.close()
        self.control.close()
        self.ctx.term()


# -- osBrain (optional peer) ---------------------------------------------------------------------------


def osbrain_echo(agent: Any, message: bytes) -> bytes:
    """REP handler on the osBrain server agent: the same unpack + pack as the raw echo server."""
    return _packb(_unpackb(message))


def osbrain_rtt_batch(agent: Any, n: int) -> list[int]:
    """Runs inside the osBrain client agent's process: ``n`` REQ/REP round trips, latencies in ns."""
    samples = []
    clock, payload = time.perf_counter_ns, PAYLOAD
    for _ in range(n):
        t0 = clock()
        agent.send("echo", _packb(payload))
        _unpackb(agent.recv("echo"))
        samples.append(clock() - t0)
    return samples


class OsbrainPair:
    """Two osBrain agents (each its own process, as osBrain runs them) and their name server.

    The timing loop runs inside the client agent (``execute_as_method``), so only one Pyro
    proxy call per batch crosses from the bench process; the agents use the ``raw`` serializer
    and msgpack, like the other baselines (osBrain's default would be pickle).
    """

    def __init__(self) -> None:
        import osbrain

        self.ns = osbrain.run_nameserver()
        try:
            server = osbrain.run_agent("bench_osbrain_srv")
            self.client = osbrain.run_agent("bench_osbrain_cli")
            address = server.bind("REP", alias="echo", handler=osbrain_echo, serializer="raw")
            self.client.connect(address, alias="echo")
        except BaseException:
            self.ns.shutdown()
            raise

    def run(self, n: int, samples: list[int] | None) -> None:
        got = self.client.execute_as_method(osbrain_rtt_batch, n)
        if samples is not None:
            samples.extend(got)

    def close(self) -> None:
        self.ns.shutdown()


# -- command line (server processes) ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.baselines",
                                description="Raw pyzmq servers for the mesh benchmarks.")
    p.add_argument("kind", choices=("echo", "sink"), help="echo: ROUTER echo server; sink: PULL counter")
    p.add_argument("--bind", default="tcp://127.0.0.1:*", help="endpoint to bind (default tcp://127.0.0.1:*)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        (serve_echo if args.kind == "echo" else serve_sink)(args.bind)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
