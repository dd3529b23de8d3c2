"""Hierarchical: supervisors restart crashing workers, give up when they crash too often, and
escalate to their parent -- Erlang/OTP supervision trees on the mesh.

    python examples/patterns/hierarchical.py

A node process ("plant", ``python -m mesh.node --agent hierarchical:Master=master``) hosts
the tree; this script is a second node ("operator") that calls the workers across the
network, makes them crash, and watches what the supervisors do::

    master   one_for_one, at most 1 restart in 30 s
    ├── pricing   one_for_one, at most 1 restart in 30 s
    │   ├── pricer-1
    │   └── pricer-2
    └── feed      rest_for_one, at most 3 restarts in 30 s
        ├── reader
        └── normalizer

Every worker instance has a number (#1, #2...) so that a restart -- a fresh instance from
the factory under the same name -- is visible from the outside.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from launch import NodeProcess, bootstrap

bootstrap()

import mesh                                                              # noqa: E402
from mesh.errors import MeshError                                        # noqa: E402
from mesh.patterns.supervisor import ChildSpec, Supervisor, fail         # noqa: E402

INSTANCES: dict[str, int] = {}      # in the plant process: instances made per name


class Worker(mesh.Agent):
    """Lives as long as its run(); ``crash`` makes run() raise."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.number = INSTANCES[self.name] = INSTANCES.get(self.name, 0) + 1
        self._crash = asyncio.Event()

    async def run(self) -> None:
        await self._crash.wait()
        raise RuntimeError("model diverged")

    @mesh.rpc
    def whoami(self) -> str:
        return f"{self.name}#{self.number}"

    @mesh.rpc
    def crash(self) -> None:
        self._crash.set()


class Pricer(Worker):
    capabilities = ("price",)

    @mesh.rpc
    def quote(self, symbol: str) -> dict[str, Any]:
        return {"symbol": symbol, "px": 187.25, "by": self.whoami()}


class Reader(Worker):
    """Has no crash of its own to wait for: it reports a fatal error with ``fail``."""

    @mesh.rpc
    def lose_connection(self) -> None:
        fail(self, "feed disconnected")


class Pricing(Supervisor):
    strategy, max_restarts, period_s = "one_for_one", 1, 30.0
    child_specs = (ChildSpec("pricer-1", Pricer), ChildSpec("pricer-2", Pricer))


class Feed(Supervisor):
    strategy, max_restarts, period_s = "rest_for_one", 3, 30.0
    child_specs = (ChildSpec("reader", Reader), ChildSpec("normalizer", Worker))


class Master(Supervisor):
    strategy, max_restarts, period_s = "one_for_one", 1, 30.0
    child_specs = (ChildSpec("pricing", Pricing), ChildSpec("feed", Feed))


# -- the operator's side ------------------------------------------------------------------

def render(children: list[dict[str, Any]], indent: str = "    ") -> list[str]:
    lines = []
    for c in children:
        lines.append(f"{indent}{c['name']:<11} {c['kind']:<10} {c['state']:<8} restarts {c['restarts']}")
        lines += render(c.get("children", []), indent + "    ")
    return lines


async def until(probe: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    """Ask ``probe`` until ``ok`` holds: a restart takes a moment to reach the other node."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            value = await probe()
            if ok(value):
                return value
        except MeshError:
            value = None     # the worker is between instances, or not yet in our directory
        if loop.time() > deadline:
            raise SystemExit(f"gave up waiting; last answer {value!r}")
        await asyncio.sleep(0.02)


async def operate(plant: str) -> None:
    node = mesh.Node("operator", seeds=[plant], default_timeout=2.0)
    await node.start()
    who = lambda name: lambda: node.call(name, "whoami")          # noqa: E731
    try:
        await until(lambda: node.call("master", "status"), lambda s: s["state"] == "running")
        status = await node.call("master", "status")
        print(f"operator joined; master on node plant is {status['state']}:")
        print("\n".join(render(status["children"])))

        quote = await until(lambda: node.call_any("price", "quote", "AAPL"), bool)
        print(f"call_any('price').quote(AAPL) -> {quote['px']} from {quote['by']}")

        await node.call("pricer-1", "crash")
        await until(who("pricer-1"), lambda w: w == "pricer-1#2")
        print(f"pricer-1 crashed -> pricing (one_for_one) restarted it: pricer-1 is now "
              f"{await node.call('pricer-1', 'whoami')}, pricer-2 untouched ({await node.call('pricer-2', 'whoami')})")

        await node.call("reader", "lose_connection")
        await until(who("normalizer"), lambda w: w == "normalizer#2")
        print(f"reader reported a fatal error -> feed (rest_for_one) restarted reader and the workers after it: "
              f"{await node.call('reader', 'whoami')}, {await node.call('normalizer', 'whoami')}")

        await node.call("pricer-2", "crash")
        await until(who("pricer-1"), lambda w: w == "pricer-1#3")
        await until(who("pricer-2"), lambda w: w == "pricer-2#2")        # started after pricer-1
        kids = {c["name"]: c for c in (await node.call("master", "status"))["children"]}
        print(f"pricer-2 crashed: the 2nd restart in 30 s is too many -> pricing gave up "
              f"({kids['pricing']['last_exit']})")
        print(f"  -> master restarted pricing with fresh workers: {await node.call('pricer-1', 'whoami')}, "
              f"{await node.call('pricer-2', 'whoami')}; feed untouched ({await node.call('reader', 'whoami')})")

        await node.call("pricer-1", "crash")
        await until(who("pricer-1"), lambda w: w == "pricer-1#4")
        await node.call("pricer-1", "crash")
        status = await until(lambda: node.call("master", "status"), lambda s: s["state"] == "failed")
        print("pricer-1 crashed twice more -> pricing gave up again -> the 2nd restart of pricing in 30 s "
              "is too many for master too:")
        print(f"master gave up: {status['failure']}")
        print("\n".join(render(status["children"])))
        gone = await until(lambda: asyncio.sleep(0, node.directory()),
                           lambda d: not {"pricer-1", "pricer-2", "reader", "normalizer"} & set(d))
        print(f"agents left in the operator's directory: {sorted(n for n in gone if not n.startswith('_'))}")
    finally:
        await node.stop()


def main() -> None:
    plant = NodeProcess("plant", ["hierarchical:Master=master"]).start()
    print(f"node plant started: python -m mesh.node --agent hierarchical:Master=master ({plant.address})")
    try:
        asyncio.run(operate(plant.address))
    finally:
        plant.stop()
    print("done")


if __name__ == "__main__":
    main()
