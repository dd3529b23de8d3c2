"""Resilience across real node processes: circuit breakers open on a failing agent and close
after it recovers; work whose deadline passed is dropped, not done; budgets travel with
nested calls; an overloaded agent sheds load with a clear error while its node's memory stays
bounded; idempotent calls retry through a transient overload."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import mesh
from mesh.errors import CircuitOpen, Overloaded, RemoteError, Timeout
from mesh.resilience import BreakerConfig, RetryPolicy
from tests.conftest import run_async
from tests.integration.cluster import NodeProcess

pytestmark = pytest.mark.integration

AGENTS = "tests.integration.agents_resilience"


@pytest.fixture(scope="module")
def cluster():
    a = NodeProcess("ra", [f"{AGENTS}:Flaky=flaky-a", f"{AGENTS}:Switch=switch-a", f"{AGENTS}:Narrow=narrow",
                           f"{AGENTS}:Budget=budget-a"]).start()
    b = NodeProcess("rb", [f"{AGENTS}:Flaky=flaky-b", f"{AGENTS}:Switch=switch-b", f"{AGENTS}:Budget=budget-b"],
                    join=[a.address]).start()
    c = NodeProcess("rc", [f"{AGENTS}:Sink=sink"], join=[a.address]).start()
    nodes = {"a": a, "b": b, "c": c}
    yield nodes
    for n in nodes.values():
        n.terminate()


def client(cluster, **kw) -> mesh.Node:
    return mesh.Node("client", seeds=[cluster["a"].address], join_timeout=10, **kw)


FAST_BREAKER = BreakerConfig(failure_rate=0.5, min_calls=10, window_s=5.0, open_s=0.5, probes=2)


def test_breaker_opens_on_a_failing_agent_fails_fast_and_closes_after_recovery(cluster):
    async def main():
        async with client(cluster, breaker=FAST_BREAKER) as node:
            await node.call("switch-a", "set_failing", True)
            failures = 0
            with pytest.raises(CircuitOpen):
                for _ in range(50):
                    try:
                        await node.call("flaky-a", "work", 1)
                    except RemoteError:
                        failures += 1
            assert failures == 10                        # min_calls, all failed: it opened then
            assert node.breaker_state("flaky-a") == "open"
            reached = await node.call("switch-a", "reached")
            for _ in range(100):                         # open: none of these leaves the client
                with pytest.raises(CircuitOpen):
                    await node.call("flaky-a", "work", 1)
            assert await node.call("switch-a", "reached") == reached
            assert node.stats()["circuit_open"] >= 101

            await node.call("switch-a", "set_failing", False)   # the backend recovers
            await asyncio.sleep(FAST_BREAKER.open_s)
            assert await node.call("flaky-a", "work", 2) == ["ra", 2]   # probe 1
            assert node.breaker_state("flaky-a") == "half_open"
            assert await node.call("flaky-a", "work", 3) == ["ra", 3]   # probe 2 closes it
            assert node.breaker_state("flaky-a") == "closed"
            assert await node.call("switch-a", "reached") == reached + 2
    run_async(main)


def test_call_any_routes_around_an_open_circuit(cluster):
    async def main():
        async with client(cluster, breaker=FAST_BREAKER) as node:
            await node.call("switch-a", "set_failing", True)
            try:
                errors, served = 0, {"ra": 0, "rb": 0}
                for i in range(300):
                    try:
                        where, _ = await node.call_any("flaky", "work", i)
                        served[where] += 1
                    except RemoteError:
                        errors += 1
                assert node.breaker_state("flaky-a") == "open"
                # failures stop once the breaker has seen enough of them; the rest go to rb
                assert errors <= FAST_BREAKER.min_calls
                assert served["rb"] >= 300 - FAST_BREAKER.min_calls - served["ra"]
                assert served["ra"] == 0
            finally:
                await node.call("switch-a", "set_failing", False)
    run_async(main)


def test_work_whose_deadline_passed_in_the_mailbox_is_dropped_not_done(cluster):
    async def main():
        async with client(cluster) as node:
            hold = asyncio.ensure_future(node.call("narrow", "hold", 0.6, timeout=5))
            await asyncio.sleep(0.05)                # it holds the agent's only slot
            late = [asyncio.ensure_future(node.call("narrow", "mark", f"late-{i}", timeout=0.2)) for i in range(5)]
            results = await asyncio.gather(*late, return_exceptions=True)
            assert all(isinstance(r, Timeout) for r in results), results
            await hold
            assert await node.call("narrow", "mark", "after") == "after"
            executed = await node.call("narrow", "executed")
            assert executed[-2:] == ["hold 0.6", "after"]
            assert not [e for e in executed if e.startswith("late-")]
            load = await node.call("narrow", "load")
            assert load["expired"] >= 5
            assert load["inflight"] == 1 and load["queued"] == 0      # the load call itself
    run_async(main)


def test_the_budget_travels_with_nested_calls(cluster):
    async def main():
        async with client(cluster) as node:
            # budget-a gets 0.5 s; its call to budget-b (on another process) asks for 30 s
            # but inherits what is left of the 0.5 s
            left = await node.call("budget-a", "relay", "budget-b", timeout=0.5)
            assert 0.0 < left <= 0.5
            assert await node.call("budget-b", "remaining", timeout=2.0) <= 2.0
    run_async(main)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_an_overloaded_agent_sheds_load_with_a_clear_error_and_bounded_memory(cluster):
    async def main():
        # no breaker on the client: it would (rightly) open on the Overloaded answers and
        # spare the sink the rest of the flood; here the sink itself must hold its ground
        async with client(cluster, breaker=None) as node:
            pid = cluster["c"].proc.pid
            blob = b"x" * 4096
            await node.call("sink", "work", blob)
            rss_before = _rss_kib(pid)
            outcomes = {"ok": 0, "overloaded": 0}
            gate = asyncio.Semaphore(2000)
            rss_peak = rss_before

            async def one():
                nonlocal rss_peak
                async with gate:
                    try:
                        await node.call("sink", "work", blob, timeout=20)
                        outcomes["ok"] += 1
                    except Overloaded as exc:
                        assert "overloaded" in str(exc)
                        outcomes["overloaded"] += 1

            async def watch():
                nonlocal rss_peak
                while True:
                    rss_peak = max(rss_peak, _rss_kib(pid))
                    await asyncio.sleep(0.05)

            watcher = asyncio.ensure_future(watch())
            await asyncio.gather(*(one() for _ in range(20_000)))
            watcher.cancel()
            stats = await node.call("sink", "stats")
            growth_mib = (rss_peak - rss_before) / 1024
            print(f"\nsink: {outcomes}, peak concurrency {stats['peak']}, rejected {stats['rejected']}, "
                  f"RSS {rss_before / 1024:.1f} MiB -> peak {rss_peak / 1024:.1f} MiB (+{growth_mib:.1f})")
            assert outcomes["ok"] + outcomes["overloaded"] == 20_000
            assert outcomes["overloaded"] > 10_000           # most of the flood is shed
            assert outcomes["ok"] >= 68                      # and what fits is served
            assert stats["peak"] <= 4 and stats["rejected"] == outcomes["overloaded"]
            # 20,000 requests of 4 KiB (78 MiB) were offered; the node holds at most 68 of them
            assert growth_mib < 40, growth_mib
    run_async(main)


def test_idempotent_calls_retry_through_a_transient_overload(cluster):
    async def main():
        async with client(cluster) as node:
            hold = asyncio.ensure_future(node.call("narrow", "hold", 0.4, timeout=5))
            await asyncio.sleep(0.05)
            fillers = [asyncio.ensure_future(node.call("narrow", "mark", f"fill-{i}", timeout=5)) for i in range(8)]
            await asyncio.sleep(0.05)                # slot taken, mailbox (8) full
            with pytest.raises(Overloaded):
                await node.call("narrow", "mark", "plain")
            retries = node.stats()["retries"]
            policy = RetryPolicy(attempts=20, base_s=0.05, max_s=0.2)
            assert await node.call("narrow", "mark", "patient", retry=policy, timeout=5) == "patient"
            assert node.stats()["retries"] > retries
            await asyncio.gather(hold, *fillers)
    run_async(main)
