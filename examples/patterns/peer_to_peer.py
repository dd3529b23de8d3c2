"""Peer-to-peer: agents call each other directly, by name or by capability; no broker and no
hub node in between.

    python examples/patterns/peer_to_peer.py

Three nodes, each with its own ZeroMQ socket on loopback (they share this process only to
keep the example short; every message between them crosses TCP):

    n1   trader
    n2   pricer-a (capability "price"), risk (capability "risk")
    n3   pricer-b (capability "price")

The trader asks *a* pricer (``call_any``, load-balanced over both nodes) and *the* risk
agent (``call`` by name); each request goes straight to the node hosting the target. A
pricer also asks its peer pricer directly to cross-check a quote.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from launch import bootstrap

bootstrap()

import mesh                                                              # noqa: E402

PRICES = {"AAPL": 187.25, "MSFT": 411.10, "NVDA": 903.50}


class Pricer(mesh.Agent):
    capabilities = ("price",)

    @mesh.rpc
    def quote(self, symbol: str) -> dict[str, Any]:
        return {"px": PRICES[symbol], "by": f"{self.name}@{self.node.node_id}"}

    @mesh.rpc
    async def cross_check(self, symbol: str, peer: str) -> str:
        mine = self.quote(symbol)["px"]
        theirs = await self.call(peer, "quote", symbol)       # pricer to pricer, node to node
        return f"{self.name} {mine} vs {theirs['by']} {theirs['px']}: {'agree' if mine == theirs['px'] else 'differ'}"


class Risk(mesh.Agent):
    capabilities = ("risk",)
    limit = 1_000_000.0

    @mesh.rpc
    def check(self, order: dict) -> dict[str, Any]:
        notional = order["qty"] * order["px"]
        return {"ok": notional <= self.limit, "notional": notional, "by": f"{self.name}@{self.node.node_id}"}


class Trader(mesh.Agent):
    @mesh.rpc
    async def trade(self, symbol: str, qty: int) -> str:
        quote = await self.call_any("price", "quote", symbol)             # any pricer
        verdict = await self.call("risk", "check", {"symbol": symbol, "qty": qty, "px": quote["px"]})
        outcome = "filled" if verdict["ok"] else "rejected by risk"
        return (f"trade {qty} {symbol}: quote {quote['px']} from {quote['by']}, notional "
                f"{verdict['notional']:,.0f} checked by {verdict['by']} -> {outcome}")


async def main() -> None:
    n1 = mesh.Node("n1")
    n1.add(Trader("trader"))
    await n1.start()
    n2 = mesh.Node("n2", seeds=[n1.address])
    n2.add(Pricer("pricer-a"))
    n2.add(Risk("risk"))
    n3 = mesh.Node("n3", seeds=[n1.address])
    n3.add(Pricer("pricer-b"))
    await n2.start()
    await n3.start()
    nodes = (n1, n2, n3)
    try:
        expected = {"trader", "pricer-a", "pricer-b", "risk"}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while not all(expected <= set(n.directory()) for n in nodes):   # gossip spreads the directory
            if loop.time() > deadline:
                raise SystemExit("the nodes did not learn each other's agents in time")
            await asyncio.sleep(0.02)
        where = {name: node_id for name, (node_id, _) in n1.directory().items() if not name.startswith("_")}
        print("3 nodes, every agent reachable from every node:", ", ".join(f"{a}@{n}" for a, n in sorted(where.items())))
        before = {n.node_id: n.stats() for n in nodes}

        # a client on n3 asks the trader on n1, which asks a pricer and the risk agent itself
        for symbol, qty in (("AAPL", 100), ("MSFT", 500), ("NVDA", 5000)):
            print(await n3.call("trader", "trade", symbol, qty))
        quotes = await asyncio.gather(*(n1.call_any("price", "quote", "AAPL") for _ in range(50)))
        by = Counter(q["by"] for q in quotes)
        print("call_any('price'), 50 quotes at once, picked by load score: "
              + ", ".join(f"{who} x{n}" for who, n in sorted(by.items())))
        print(await n1.call("pricer-b", "cross_check", "NVDA", "pricer-a"))

        after = {n.node_id: n.stats() for n in nodes}
        sent = {k: after[k]["calls_out"] - before[k]["calls_out"] for k in after}
        served = {k: after[k]["calls_in"] - before[k]["calls_in"] for k in after}
        print("remote calls made / served per node: "
              + ", ".join(f"{k} {sent[k]}/{served[k]}" for k in sorted(sent))
              + " (each node talks to its peers directly; none relays)")
    finally:
        for n in reversed(nodes):
            await n.stop()
    print("done")


if __name__ == "__main__":
    asyncio.run(main())
