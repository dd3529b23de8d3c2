"""Real node processes on loopback: calls, load-balanced calls, one-way sends, publishes,
timeouts, remote errors, a node killed with SIGKILL, and its return."""
from __future__ import annotations

import asyncio
import time

import pytest

import mesh
from mesh.errors import RemoteError, Timeout, UnknownAgent, UnknownMethod, Unreachable
from tests.conftest import run_async
from tests.integration.cluster import NodeProcess

pytestmark = pytest.mark.integration

AGENTS = "tests.integration.agents"


@pytest.fixture(scope="module")
def cluster():
    n1 = NodeProcess("n1", [f"{AGENTS}:Calc=calc-1", f"{AGENTS}:Listener=listen-1"]).start()
    n2 = NodeProcess("n2", [f"{AGENTS}:Calc=calc-2", f"{AGENTS}:Listener=listen-2"], join=[n1.address]).start()
    n3 = NodeProcess("n3", [f"{AGENTS}:Calc=calc-3"], join=[n1.address]).start()
    nodes = {"n1": n1, "n2": n2, "n3": n3}
    yield nodes
    for n in nodes.values():
        n.terminate()


def client(cluster, **kw) -> mesh.Node:
    return mesh.Node("client", seeds=[cluster["n1"].address], join_timeout=10, **kw)


async def eventually(check, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await check()
            if result:
                return result
        except (Unreachable, UnknownAgent):
            pass
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def test_join_sees_every_node_and_agent(cluster):
    async def main():
        async with client(cluster) as node:
            states = {m["id"]: (m["state"], m["link"]) for m in node.members()}
            assert states == {"client": ("alive", "self"), "n1": ("alive", "up"), "n2": ("alive", "up"),
                              "n3": ("alive", "up")}
            where = {name: nid for name, (nid, _) in node.directory().items() if name[:1] != "_"}
            assert where == {"calc-1": "n1", "calc-2": "n2", "calc-3": "n3",
                             "listen-1": "n1", "listen-2": "n2"}
    run_async(main)


def test_call_across_nodes_and_agent_to_agent(cluster):
    async def main():
        async with client(cluster) as node:
            assert await node.call("calc-2", "add", 2, 3) == 5
            assert await node.call("calc-1", "add", a="x", b="y") == "xy"
            assert await node.call("calc-3", "whoami") == "n3"
            # n1's agent calls n3's agent: the request crosses n1 -> n3 and back.
            assert await node.call("calc-1", "relay", "calc-3", 20, 22) == 42
            payload = {"symbol": "AAPL", "qty": 100, "px": 187.25, "tags": ["a", "b"], "raw": b"\x00\x01"}
            assert await node.call("calc-2", "add", payload["tags"], ["c"]) == ["a", "b", "c"]
    run_async(main)


def test_call_any_spreads_over_providers(cluster):
    async def main():
        async with client(cluster) as node:
            seen = [await node.call_any("calc", "whoami") for _ in range(300)]
            counts = {n: seen.count(n) for n in ("n1", "n2", "n3")}
            assert all(c > 0 for c in counts.values()), counts
            with pytest.raises(UnknownAgent):
                await node.call_any("nothing-offers-this", "x")
    run_async(main)


def test_one_way_send_arrives_in_order(cluster):
    async def main():
        async with client(cluster) as node:
            for i in range(500):
                await node.send("calc-2", "record", ["order", i])
            got = await eventually(lambda: _recorded(node, 500))
            assert [x[1] for x in got if x[0] == "order"][-500:] == list(range(500))
    run_async(main)


async def _recorded(node, n):
    got = await node.call("calc-2", "recorded")
    return got if sum(1 for x in got if x[0] == "order") >= n else None


def test_publish_reaches_pattern_subscribers_on_other_nodes(cluster):
    async def main():
        async with client(cluster) as node:
            await node.publish("signals.AAPL", {"px": 1.5})
            await node.publish("audit.orders.new", [1, 2])
            await node.publish("audit", "root")           # '#' matches zero segments too
            await node.publish("signals.AAPL.trades", "no")  # '*' is one segment only
            await node.publish("other.AAPL", "no")
            for listener in ("listen-1", "listen-2"):
                got = await eventually(lambda: _received(node, listener, 3))
                assert got == [["signals.AAPL", {"px": 1.5}], ["audit.orders.new", [1, 2]], ["audit", "root"]]
    run_async(main)


async def _received(node, listener, n):
    got = await node.call(listener, "received")
    return got if len(got) >= n else None


def test_timeout_remote_error_and_unknown_names(cluster):
    async def main():
        async with client(cluster) as node:
            t0 = time.monotonic()
            with pytest.raises(Timeout):
                await node.call("calc-1", "slow", 3.0, timeout=0.2)
            assert time.monotonic() - t0 < 2.0
            with pytest.raises(RemoteError) as err:
                await node.call("calc-2", "fail", "bad order")
            assert err.value.type == "ValueError" and err.value.message == "bad order"
            with pytest.raises(UnknownMethod):
                await node.call("calc-2", "no_such_method")
            with pytest.raises(UnknownAgent):
                await node.call("calc-99", "add", 1, 2)
            # The node survived all of it.
            assert await node.call("calc-2", "add", 1, 1) == 2
    run_async(main)


def test_kill_9_gives_unreachable_then_restart_reconnects(cluster):
    n3 = cluster["n3"]

    async def main():
        async with client(cluster, default_timeout=30.0) as node:
            assert await node.call("calc-3", "add", 1, 2) == 3
            slow = asyncio.ensure_future(node.call("calc-3", "slow", 20.0))
            await asyncio.sleep(0.3)
            n3.kill()
            t0 = time.monotonic()
            with pytest.raises(Unreachable):
                await slow                        # in flight when the node died
            assert time.monotonic() - t0 < 5.0    # not the 30 s timeout
            with pytest.raises(Unreachable):
                await node.call("calc-3", "add", 1, 2)
            # call_any stops picking the dead node's agent.
            seen = {await node.call_any("calc", "whoami") for _ in range(100)}
            assert seen == {"n1", "n2"}
            n3.start()
            assert await eventually(lambda: node.call("calc-3", "add", 2, 2)) == 4
            seen = {await node.call_any("calc", "whoami") for _ in range(200)}
            assert seen == {"n1", "n2", "n3"}
    run_async(main)


def test_sigterm_lets_in_flight_calls_finish_then_peers_see_it_leave(cluster):
    extra = NodeProcess("n4", [f"{AGENTS}:Calc=calc-4"], join=[cluster["n1"].address]).start()

    async def main():
        async with client(cluster) as node:
            await eventually(lambda: node.call("calc-4", "add", 1, 1))
            slow = asyncio.ensure_future(node.call("calc-4", "slow", 1.0))
            await asyncio.sleep(0.3)
            extra.proc.send_signal(15)            # SIGTERM while the call is in flight
            assert await slow == 1.0              # drained, not dropped
            assert await asyncio.get_running_loop().run_in_executor(None, extra.proc.wait, 10) == 0
            with pytest.raises((Unreachable, UnknownAgent)):
                await node.call("calc-4", "add", 1, 1)
            assert {m["id"]: m["state"] for m in node.members()}["n4"] == "left"
    run_async(main)


def test_demo_runs(tmp_path):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "mesh.demo", "--duration", "2"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    done = out.stdout.strip().splitlines()[-1]
    assert done.startswith("done: ") and ", 0 errors" in done
    published, received = (int(x.replace(",", "")) for x in
                           (done.split(" fills published")[0].split()[-1], done.split(" received")[0].split()[-1]))
    assert published == received > 0
