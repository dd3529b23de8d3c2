"""End-to-end benchmarks: mesh against raw pyzmq peers measured in the same run, across two processes.

Suites (``benchmark.group``):

* ``e2e rtt`` — request/response, one call in flight, the 10-field order PAYLOAD both ways.
  ``raw-blocking``: blocking DEALER -> ROUTER echo process (plain pyzmq); ``raw-asyncio``:
  ``zmq.asyncio`` DEALER on uvloop -> the same echo process; ``mesh``: an embedded client
  node on uvloop -> ``python -m mesh.node`` hosting :class:`bench.agents.Echo`; ``osbrain``:
  osBrain agent <-> agent REQ/REP, skipped when osBrain is not installed.
* ``e2e one-way throughput`` — a pipelined burst of one-way messages, then polling the
  receiver's count until all arrived. ``raw-blocking`` / ``raw-asyncio``: PUSH -> a PULL
  process that unpacks and counts; ``mesh``: ``node.send("echo", "sink", PAYLOAD)`` then
  ``node.call("echo", "received")``.

How the timing is taken
-----------------------
Each latency sample is ``time.perf_counter_ns()`` around one call, inside the loop (or the
process) that makes it, after an untimed warm-up: nothing of the harness sits inside a sample.
Async calls run a whole batch inside one ``loop.run_until_complete``, because entering the
loop per call would add more than the thing measured.

pytest-benchmark sees the same work: ``benchmark.pedantic(iterations=B)`` divides a round's
time by B, so its target runs the whole batch of B calls on the first of its B invocations in
a round and returns at once on the other B-1 (:class:`OneBatchPerRound`). Its mean is then the
mean time per call plus about 1 µs of overhead (the empty invocations and the loop's own
bookkeeping between two samples; about 1 % of a round trip). The figures the report uses
come from our own clocks and carry no such overhead: the samples' percentiles
(``extra_info`` ``p50_us`` ... ``p999_us``, ``mean_us``) and, for throughput, the per-burst
times (``median_us`` per message, ``msgs_per_s``). Raw samples are saved as JSON in
``bench/out/rtt/<impl>.json`` for ``python -m bench --plot``. Nothing here asserts a timing.

A one-way burst ends when the sender, polling the receiver's count every 0.5 ms, sees every
message counted: at most 0.5 ms on a burst of 20,000 (~70 ms raw), under 1 %, for all alike.
Each side sends the way it is built to: raw PUSH one frame per message, mesh coalescing
one-way sends to the same peer into frames of up to 64 KiB (``TransportConfig.batch_bytes``).
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import msgpack
import pytest

from bench.baselines import (PAYLOAD, POLL_INTERVAL_S, AsyncEcho, AsyncPush, BlockingEcho, BlockingPush,
                             OsbrainPair, ServerProcess, raw_server)
from bench.report import percentile

RTT_IMPLS = ("raw-blocking", "raw-asyncio", "mesh", "osbrain")
ONEWAY_IMPLS = ("raw-blocking", "raw-asyncio", "mesh")
CALL_TIMEOUT_S = 5.0
MESH_SERVER_ID = "srv"


# -- measuring -----------------------------------------------------------------------------------------


class OneBatchPerRound:
    """Target for ``benchmark.pedantic(iterations=size)``: the first invocation of each round runs
    ``run_batch()`` (``size`` operations); the other ``size - 1`` return at once. After
    ``rounds`` batches it does nothing (pedantic calls its target once more for a result)."""

    __slots__ = ("run_batch", "size", "left", "batches")

    def __init__(self, run_batch: Callable[[], None], size: int, rounds: int) -> None:
        self.run_batch = run_batch
        self.size = size
        self.left = 0
        self.batches = rounds

    def __call__(self) -> None:
        if self.left:
            self.left -= 1
        elif self.batches:
            self.batches -= 1
            self.left = self.size - 1
            self.run_batch()


def latency_summary(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    us = 1e-3
    return {
        "calls": len(ordered),
        "p50_us": round(percentile(ordered, 50) * us, 3),
        "p90_us": round(percentile(ordered, 90) * us, 3),
        "p99_us": round(percentile(ordered, 99) * us, 3),
        "p999_us": round(percentile(ordered, 99.9) * us, 3),
        "mean_us": round(sum(ordered) / len(ordered) * us, 3),
        "min_us": round(ordered[0] * us, 3),
        "max_us": round(ordered[-1] * us, 3),
    }


def save_samples(out_dir: Path, impl: str, samples_ns: list[int], meta: dict[str, Any]) -> Path:
    folder = out_dir / "rtt"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{impl}.json"
    path.write_text(json.dumps({"impl": impl, "unit": "ns", **meta, "samples": samples_ns},
                               separators=(",", ":")))
    return path


def measure_rtt(benchmark, plan, out_dir: Path, impl: str, run: Callable[[int, list | None], None],
                meta: dict[str, Any]) -> None:
    """Warm up, then ``plan.rtt_rounds`` batches of ``plan.rtt_batch`` timed calls."""
    run(plan.rtt_warmup, None)
    samples: list[int] = []
    target = OneBatchPerRound(lambda: run(plan.rtt_batch, samples), plan.rtt_batch, plan.rtt_rounds)
    benchmark.group = "e2e rtt"
    benchmark.pedantic(target, rounds=plan.rtt_rounds, iterations=plan.rtt_batch)
    path = save_samples(out_dir, impl, samples, meta)
    benchmark.extra_info.update(latency_summary(samples))
    benchmark.extra_info.update(meta)
    benchmark.extra_info["samples_file"] = str(path.relative_to(out_dir.parent.parent))


def measure_oneway(benchmark, plan, impl: str, burst: Callable[[int], None], meta: dict[str, Any]) -> None:
    """One untimed burst, then ``plan.oneway_rounds`` timed bursts of ``plan.oneway_batch`` messages."""
    burst(plan.oneway_batch)
    times_ns: list[int] = []

    def timed_burst() -> None:
        t0 = time.perf_counter_ns()
        burst(plan.oneway_batch)
        times_ns.append(time.perf_counter_ns() - t0)

    target = OneBatchPerRound(timed_burst, plan.oneway_batch, plan.oneway_rounds)
    benchmark.group = "e2e one-way throughput"
    benchmark.pedantic(target, rounds=plan.oneway_rounds, iterations=plan.oneway_batch)
    ordered = sorted(times_ns)
    n = plan.oneway_batch
    benchmark.extra_info.update({
        "messages": n * len(times_ns),
        "messages_per_round": n,
        "msgs_per_s": round(n * len(times_ns) / (sum(times_ns) * 1e-9)),
        "median_us": round(percentile(ordered, 50) / n * 1e-3, 4),
        "best_msgs_per_s": round(n / (ordered[0] * 1e-9)),
        "poll_interval_us": POLL_INTERVAL_S * 1e6,
    })
    benchmark.extra_info.update(meta)


# -- the implementations ---------------------------------------------------------------------------------


def _mesh_or_skip():
    """The mesh package, or a skip when its runtime (``mesh.Node``) is not importable yet."""
    try:
        import mesh

        mesh.Node
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"mesh.Node is not available yet ({type(exc).__name__}: {exc})")
    return mesh


@pytest.fixture(scope="module")
def raw_echo_endpoint():
    with raw_server("echo") as server:
        endpoint, = server.start()
        yield endpoint


@pytest.fixture(scope="module")
def raw_sink_endpoints():
    with raw_server("sink") as server:
        data, control = server.start()
        yield data, control


@pytest.fixture(scope="module")
def mesh_client(bench_loop):
    """A ``python -m mesh.node`` server hosting Echo as "echo", and an embedded client node."""
    mesh = _mesh_or_skip()
    argv = [sys.executable, "-m", "mesh.node", "--insecure", "--id", MESH_SERVER_ID, "--bind", "tcp://127.0.0.1:*",
            "--agent", "bench.agents:Echo=echo", "--log-level", "warning"]
    with ServerProcess(argv, name="mesh server node") as server:
        words = server.start()                  # "ready srv tcp://127.0.0.1:PORT"
        address = words[-1]
        node = mesh.Node(node_id="cli", bind="tcp://127.0.0.1:*", seeds=[address])
        bench_loop.run_until_complete(asyncio.wait_for(node.start(), 30))
        try:
            yield node
        finally:
            bench_loop.run_until_complete(asyncio.wait_for(node.stop(), 30))
            if not server.alive():
                pytest.fail(f"mesh server node died during the bench, stderr:\n{server.stderr_text()}")


def _mesh_meta(node) -> dict[str, Any]:
    import mesh

    return {"hot_path": getattr(node, "implementation", mesh.IMPLEMENTATION)}


def _base_meta(request) -> dict[str, Any]:
    return {"payload_bytes": len(msgpack.packb(PAYLOAD)), "quick": request.getfixturevalue("plan").quick,
            "cpu_idle": request.getfixturevalue("cpu_idle_policy")}


def rtt_runner(impl: str, request) -> tuple[Callable[[int, list | None], None], dict[str, Any]]:
    """``run(n, samples)`` for ``impl`` after a correctness check, and what to record about it."""
    meta = _base_meta(request)
    if impl == "raw-blocking":
        client = BlockingEcho(request.getfixturevalue("raw_echo_endpoint"))
        request.addfinalizer(client.close)
        assert client.call(PAYLOAD) == PAYLOAD
        return client.run, meta
    if impl == "raw-asyncio":
        loop = request.getfixturevalue("bench_loop")
        client = AsyncEcho(request.getfixturevalue("raw_echo_endpoint"), loop)
        request.addfinalizer(client.close)
        assert loop.run_until_complete(client.call(PAYLOAD)) == PAYLOAD
        return client.run, meta
    if impl == "mesh":
        loop = request.getfixturevalue("bench_loop")
        node = request.getfixturevalue("mesh_client")
        assert loop.run_until_complete(node.call("echo", "echo", PAYLOAD, timeout=CALL_TIMEOUT_S)) == PAYLOAD

        async def calls(n: int, samples: list | None) -> None:
            call, clock, payload = node.call, time.perf_counter_ns, PAYLOAD
            for _ in range(n):
                t0 = clock()
                await call("echo", "echo", payload, timeout=CALL_TIMEOUT_S)
                t1 = clock()
                if samples is not None:
                    samples.append(t1 - t0)

        return (lambda n, samples: loop.run_until_complete(calls(n, samples))), meta | _mesh_meta(node)
    if impl == "osbrain":
        try:
            import osbrain  # noqa: F401
        except ImportError:
            pytest.skip("osBrain is not installed (optional peer: pip install osbrain)")
        pair = OsbrainPair()
        request.addfinalizer(pair.close)
        return pair.run, meta | {"serializer": "raw+msgpack"}
    raise ValueError(impl)


def oneway_runner(impl: str, request) -> tuple[Callable[[int], None], dict[str, Any]]:
    meta = _base_meta(request)
    if impl == "raw-blocking":
        client = BlockingPush(*request.getfixturevalue("raw_sink_endpoints"))
        request.addfinalizer(client.close)
        return client.run, meta
    if impl == "raw-asyncio":
        client = AsyncPush(*request.getfixturevalue("raw_sink_endpoints"), request.getfixturevalue("bench_loop"))
        request.addfinalizer(client.close)
        return client.run, meta
    if impl == "mesh":
        loop = request.getfixturevalue("bench_loop")
        node = request.getfixturevalue("mesh_client")

        async def burst(n: int, timeout_s: float = 60.0) -> None:
            target = await node.call("echo", "received", timeout=CALL_TIMEOUT_S) + n
            send, payload = node.send, PAYLOAD
            for _ in range(n):
                await send("echo", "sink", payload)
            deadline = time.monotonic() + timeout_s
            while (seen := await node.call("echo", "received", timeout=CALL_TIMEOUT_S)) < target:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mesh Echo counted {seen - target + n} of {n} one-way messages "
                                       f"in {timeout_s} s")
                await asyncio.sleep(POLL_INTERVAL_S)

        return (lambda n: loop.run_until_complete(burst(n))), meta | _mesh_meta(node)
    raise ValueError(impl)


# -- the suites ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", RTT_IMPLS)
def test_rtt(benchmark, plan, out_dir, request, impl):
    """Round-trip time, one request in flight, client and server in two processes."""
    run, meta = rtt_runner(impl, request)
    measure_rtt(benchmark, plan, out_dir, impl, run, meta)


@pytest.mark.parametrize("impl", ONEWAY_IMPLS)
def test_oneway_throughput(benchmark, plan, request, impl):
    """Pipelined one-way messages: time per message over a burst, until the receiver has them all."""
    burst, meta = oneway_runner(impl, request)
    measure_oneway(benchmark, plan, impl, burst, meta)
