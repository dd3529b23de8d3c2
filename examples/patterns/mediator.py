"""Mediator: a broker agent routes messages by their content, transforms them on the way,
and keeps what it cannot route as dead letters.

    python examples/patterns/mediator.py

A node process ("broker") runs ``python -m mesh.node --agent mediator:OrderRouter=router``:
the rules are plain data in the class below, as they could be in a config file. This script
is a second node ("desk") hosting the targets, and it sends everything to the router only:

    cancel            -> send     blotter.record             (one-way)
    order, qty > 10k  -> call     risk-desk.review           (+ priority: high)
    order, dark venue -> call     dark-pool.submit           (venue dropped)
    any other order   -> call_any "exec".submit              (load-balanced over exec-1, exec-2)
    news              -> publish  news.{symbol}              (only symbol and headline)
"""
from __future__ import annotations

import asyncio

from launch import NodeProcess, bootstrap

bootstrap()

import mesh                                                              # noqa: E402
from mesh.errors import MeshError, NoRoute                               # noqa: E402
from mesh.patterns.mediator import Mediator                              # noqa: E402


class OrderRouter(Mediator):
    mode = "first"
    rules = (
        {"name": "cancel", "match": {"type": "cancel"}, "send": "blotter", "method": "record"},
        {"name": "big", "match": {"type": "order", "qty": {"gt": 10_000}}, "call": "risk-desk",
         "method": "review", "transform": {"set": {"priority": "high"}}},
        {"name": "dark", "match": {"type": "order", "venue": "dark"}, "call": "dark-pool", "method": "submit",
         "transform": {"drop": ["venue"]}},
        {"name": "order", "match": {"type": "order"}, "call_any": "exec", "method": "submit"},
        {"name": "news", "match": {"type": "news"}, "publish": "news.{symbol}",
         "transform": {"pick": ["symbol", "headline"]}},
    )


class Venue(mesh.Agent):
    """A target by name (risk-desk, dark-pool)."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.fills = 0

    @mesh.rpc
    def submit(self, order: dict) -> str:
        self.fills += 1
        return f"{self.name} filled {order['qty']} {order['symbol']}"

    @mesh.rpc
    def review(self, order: dict) -> str:
        return f"{self.name} will review {order['qty']} {order['symbol']} (priority {order.get('priority')})"


class Exec(Venue):
    """A target by capability: call_any("exec") picks one of them."""

    capabilities = ("exec",)


class Blotter(mesh.Agent):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.entries: list[dict] = []
        self.changed = asyncio.Event()

    @mesh.rpc
    def record(self, entry: dict) -> None:
        self.entries.append(entry)
        self.changed.set()

    @mesh.on("news.*")
    def on_news(self, topic: str, news: dict) -> None:
        self.entries.append({"topic": topic, **news})
        self.changed.set()


async def wait_until(check, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise SystemExit("gave up waiting")
        await asyncio.sleep(0.02)


async def desk(broker: str) -> None:
    node = mesh.Node("desk", seeds=[broker], default_timeout=2.0)
    blotter = Blotter("blotter")
    venues = [Exec("exec-1"), Exec("exec-2")]
    for agent in (blotter, *venues, Venue("risk-desk"), Venue("dark-pool")):
        node.add(agent)
    await node.start()
    order = {"type": "order", "symbol": "AAPL", "qty": 100, "venue": "lit"}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while True:        # until the broker's directory has our agents (gossip)
            try:
                first = await node.call("router", "route", order)
                break
            except MeshError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)
        rules = (await node.call("router", "describe"))["rules"]
        print("router rules (loaded from class data by the CLI):",
              " | ".join(f"{r['name']} -> {r['action']} {r['to']}" for r in rules))
        print(f"route order AAPL 100 lit        -> {first}")
        print(f"route order AAPL 50000          -> {await node.call('router', 'route', dict(order, qty=50_000))}")
        print(f"route order MSFT 300 dark       -> "
              f"{await node.call('router', 'route', dict(order, symbol='MSFT', qty=300, venue='dark'))}")
        await node.call("router", "route", {"type": "cancel", "id": 7})
        await node.call("router", "route", {"type": "news", "symbol": "NVDA", "headline": "beats", "body": "..."})
        await wait_until(lambda: len(blotter.entries) >= 2)
        cancel = next(e for e in blotter.entries if e.get("type") == "cancel")
        news = next(e for e in blotter.entries if "topic" in e)
        print(f"route cancel 7 (one-way send)   -> blotter got {cancel}")
        print(f"route news NVDA (publish)       -> blotter heard {news}")
        try:
            await node.call("router", "route", {"type": "quote", "symbol": "AAPL", "bid": 187.2})
        except NoRoute as exc:        # a mesh error: it crosses the network as itself
            print(f"route quote AAPL                -> {type(exc).__name__}: no rule matched; kept as a dead letter")

        for i in range(20):           # one-way all the way: send to the router's post
            await node.send("router", "post", dict(order, qty=10 + i))
        await wait_until(lambda: sum(v.fills for v in venues) >= 21)
        print("post 20 orders (one-way)        -> call_any spread them: "
              + ", ".join(f"{v.name} {v.fills}" for v in venues) + " (incl. the first order)")

        n = await node.call("router", "configure", {"rules": [{
            "name": "quotes", "match": {"type": "quote"}, "send": "blotter", "method": "record"}],
            "default": {"name": "rest", "call_any": "exec", "method": "submit"}})
        await node.call("router", "route", {"type": "quote", "symbol": "AAPL", "bid": 187.2})
        await wait_until(lambda: len(blotter.entries) >= 3)
        print(f"configure (rpc, at run time)    -> {n} rule + a default; the quote now goes to the blotter")

        stats = await node.call("router", "stats")
        per_rule = ", ".join(f"{name} {c['ok']}" for name, c in stats["rules"].items())
        print(f"router stats: routed {stats['routed']}, dead letters {stats['dead_letters']}, "
              f"posted {stats['posted']}; per rule: {per_rule}")
        letters = await node.call("router", "dead_letters")
        print(f"dead letters: {[(d['message']['type'], d['reason']) for d in letters]}")
    finally:
        await node.stop()


def main() -> None:
    broker = NodeProcess("broker", ["mediator:OrderRouter=router"]).start()
    print("node broker started: python -m mesh.node --agent mediator:OrderRouter=router")
    try:
        asyncio.run(desk(broker.address))
    finally:
        broker.stop()
    print("done")


if __name__ == "__main__":
    main()
