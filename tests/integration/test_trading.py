"""The trading example (examples/trading): exactly-once order execution across a kill -9 of the
executor's node, on real node processes; and, in one process on a one-voter Raft store, each
state the executor can find an order key in (never seen, claimed and filled, claimed and not
sent, claimed and sent, recorded) with the exchange counting fills; and the exchange's fences.

No timing is asserted: latency and throughput are the example's business (its README has the
figures), the tests check what must hold however slow the machine is."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import time

import pytest

import mesh
from examples.trading.errors import Fenced
from examples.trading.exchange import Exchange
from examples.trading.execution import OrderExecutor, fill_record
from examples.trading.universe import ORDERS
from tests.conftest import run_async
from tests.integration.cluster import ROOT

pytestmark = pytest.mark.integration


def test_killing_the_executors_node_loses_no_order_and_executes_none_twice(tmp_path):
    plot = importlib.util.find_spec("matplotlib") is not None
    cmd = [sys.executable, "-m", "examples.trading", "--duration", "8", "--warmup", "1", "--rate", "3000",
           "--orders-per-s", "25", "--kill-executor-at", "3", "--out", str(tmp_path), "--quiet"]
    done = subprocess.run(cmd + ([] if plot else ["--no-plot"]), cwd=ROOT, capture_output=True, text=True,
                          timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads((tmp_path / "summary.json").read_text())

    # signals flowed end to end: every tick of the window analysed three ways and decided
    assert r["ticks"] > 0
    assert r["signals"] == 3 * r["ticks"] and r["signals_missing"] == 0 and r["batches_dropped"] == 0
    assert r["decision_latency"]["count"] == r["signals"]
    assert 0 < r["decision_latency"]["p50_ms"] <= r["decision_latency"]["p99_ms"] <= r["decision_latency"]["max_ms"]

    # the executor moved, and kept executing
    f = r["failover"]
    assert f["new_node"] != f["victim"] and r["members"][f["victim"]] in ("dead", "suspect")
    assert 0 < f["elected_after_s"] <= f["first_ack_after_s"]
    assert r["executor"]["node"] == f["new_node"] and r["executor"]["acks"] > 0

    # exactly once, as the exchange counted it
    o = r["orders"]
    assert o["sent"] > 0
    assert o["duplicated"] == 0 and o["lost"] == 0 and o["phantom"] == 0, o["examples"]
    assert o["executed"] == o["sent"] == o["acked"] == o["fills_at_exchange"]
    assert o["gave_up"] == 0 and o["still_in_flight"] == 0
    # and every book agrees: the KV (risk), the exchange, the portfolio, the strategies
    assert r["reconciled"], r["books"]
    assert r["ok"] is True
    if plot:
        assert (tmp_path / "latency.png").stat().st_size > 0


def _order(key: str, qty: int = 100) -> dict:
    strategy = key.split(":")[0]
    return {"key": key, "strategy": strategy, "sym": "AAPL", "qty": qty, "px": 100.0, "pos": None}


def test_the_executor_acts_once_on_a_key_in_every_state_it_can_find_it(tmp_path):
    async def main():
        async with mesh.Node("v1", data_dir=tmp_path, raft_voters=["v1"], insecure=True,
                             default_timeout=10.0) as node:
            exchange = node.add(Exchange("exchange"))
            kv = node.kv
            old = await kv.put("trading/executor/epoch", "a dead executor")   # its epoch
            # what a dead executor left behind:
            recorded = exchange.execute("s:1", _order("s:1"), [old, 1])       # filled, recorded
            await kv.put(ORDERS + "s:1", fill_record(recorded, old))
            await kv.put(ORDERS + "s:2", ["pending", old])                    # claimed, then filled
            exchange.execute("s:2", _order("s:2"), [old, 2])                  # ... but not recorded
            await kv.put(ORDERS + "s:3", ["pending", old])                    # claimed, never sent

            executor = node.add(OrderExecutor("executor"))
            deadline = time.monotonic() + 10.0
            while not executor.epoch:
                assert time.monotonic() < deadline, "the executor never took an epoch"
                await asyncio.sleep(0.01)
            assert executor.epoch > old

            fills = {}
            for key in ("s:1", "s:2", "s:3"):
                fills[key] = await node.call("executor", "execute", _order(key))
            assert fills["s:1"] == recorded
            # a key seen for the first time, asked three times at once, then again
            first = await asyncio.gather(*(node.call("executor", "execute", _order("s:4")) for _ in range(3)))
            again = await node.call("executor", "execute", _order("s:4"))
            assert first[0] == first[1] == first[2] == again

            assert {k: e[0] for k, e in exchange.orders.items()} == {f"s:{i}": 1 for i in range(1, 5)}
            c = executor.counters
            assert (c["replayed"], c["recovered"], c["resumed"], c["executed"]) == (2, 1, 1, 1)
            assert c["joined"] == 2
            for key in ("s:2", "s:3", "s:4"):
                assert (await kv.get(ORDERS + key))[0] == "filled"

            # the dead executor's slow requests cannot land any more
            with pytest.raises(Fenced):
                await node.call("exchange", "execute", "s:3", _order("s:3"), [old, 3])
            assert exchange.orders["s:3"][0] == 1

    run_async(main)


def test_the_exchange_refuses_old_epochs_and_superseded_attempts_but_never_deduplicates():
    x = Exchange()
    x.execute("s:1", _order("s:1"), [5, 1])
    with pytest.raises(Fenced):
        x.execute("s:2", _order("s:2"), [4, 9])      # an older executor, even for a new key
    assert x.status("s:1", [5, 7])["qty"] == 100
    assert x.status("s:2", [5, 8]) is None
    with pytest.raises(Fenced):
        x.execute("s:1", _order("s:1"), [5, 6])      # an attempt older than the status read
    x.execute("s:1", _order("s:1"), [5, 9])          # a buggy executor sending it again: filled again
    x.execute("t:1", _order("t:1"), [6, 1])          # never sent by a strategy
    audit = x.audit({"s": [1, 2]})
    assert x.orders["s:1"][0] == 2
    assert (audit["sent"], audit["executed"], audit["duplicated"], audit["lost"], audit["phantom"]) == (2, 1, 1, 1, 1)
    assert (audit["duplicated_keys"], audit["lost_keys"], audit["phantom_keys"]) == (["s:1"], ["s:2"], ["t:1"])
    assert audit["net"] == {"s/AAPL": 200, "t/AAPL": 100}
