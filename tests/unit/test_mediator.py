"""The mediator (mesh.patterns.mediator): matchers and transforms from data as tables, then
routing on one in-process node to agents reached by call, call_any, send and publish."""
from __future__ import annotations

import asyncio

import pytest

import mesh
from mesh.errors import Overloaded, RemoteError
from mesh.patterns.mediator import Mediator, NoRoute, Rule, compile_match, compile_transform
from tests.conftest import run_async

ORDER = {"type": "order", "symbol": "AAPL", "qty": 500, "px": 187.5, "venue": {"id": "X", "dark": False}}


@pytest.mark.parametrize("spec, expected", [
    ({}, True),
    ({"type": "order"}, True),
    ({"type": "quote"}, False),
    ({"qty": {"gt": 100}}, True),
    ({"qty": {"gt": 500}}, False),
    ({"qty": {"ge": 500, "le": 500}}, True),
    ({"qty": {"lt": 10}}, False),
    ({"symbol": {"in": ["AAPL", "MSFT"]}}, True),
    ({"symbol": {"not_in": ["AAPL"]}}, False),
    ({"symbol": {"ne": "MSFT"}}, True),
    ({"symbol": {"prefix": "AA"}}, True),
    ({"venue.id": "X"}, True),                       # dotted path into a nested dict
    ({"venue.dark": True}, False),
    ({"venue.id.deeper": "X"}, False),               # path through a non-dict: missing
    ({"client": {"exists": False}}, True),
    ({"client": {"exists": True}}, False),
    ({"client": {"ne": "x"}}, False),                # a missing field fails every other condition
    ({"symbol": {"gt": 5}}, False),                  # "AAPL" > 5: no match, not an error
    ({"type": "order", "qty": {"gt": 1000}}, False),  # all conditions must hold
])
def test_compile_match_table(spec, expected):
    assert compile_match(spec)(ORDER) is expected


def test_compile_match_on_non_dict_messages_and_bad_specs():
    assert compile_match({"type": "order"})("a string") is False
    assert compile_match({})(42) is True
    for bad in ({"qty": {"between": [1, 2]}}, {"qty": {}}, {"symbol": {"in": "AAPL"}}):
        with pytest.raises(ValueError):
            compile_match(bad)


@pytest.mark.parametrize("spec, expected", [
    ({"pick": ["symbol", "qty"]}, {"symbol": "AAPL", "qty": 5}),
    ({"rename": {"qty": "quantity"}}, {"type": "order", "symbol": "AAPL", "quantity": 5}),
    ({"drop": ["type"], "set": {"priority": "high"}}, {"symbol": "AAPL", "qty": 5, "priority": "high"}),
    ({"pick": ["qty"], "rename": {"qty": "n"}, "set": {"n": 6}}, {"n": 6}),   # order: pick, rename, drop, set
])
def test_compile_transform_table(spec, expected):
    message = {"type": "order", "symbol": "AAPL", "qty": 5}
    assert compile_transform(spec)(message) == expected
    assert message == {"type": "order", "symbol": "AAPL", "qty": 5}          # copied, not changed


def test_rules_from_data_are_validated_when_made():
    ok = Rule.from_dict({"name": "big", "match": {"qty": {"gt": 1}}, "call": "risk", "method": "check",
                         "transform": {"set": {"p": 1}}, "timeout": 2.0})
    assert (ok.action, ok.to, ok.method, ok.timeout) == ("call", "risk", "check", 2.0)
    assert Rule.from_dict({"name": "p", "publish": "orders.{symbol}"}).action == "publish"
    bad = [
        {"name": "two", "call": "a", "send": "b", "method": "m"},          # two actions
        {"name": "none", "method": "m"},                                     # no action
        {"name": "nomethod", "call": "a"},                                   # call needs a method
        {"name": "op", "call": "a", "method": "m", "match": {"q": {"near": 1}}},
        {"name": "tf", "call": "a", "method": "m", "transform": {"upper": ["x"]}},
        {"name": "extra", "call": "a", "method": "m", "colour": "red"},
        {"name": "fmt", "publish": "orders.{symbol"},
        {"name": "", "publish": "x"},
    ]
    for spec in bad:
        with pytest.raises(ValueError):
            Rule.from_dict(spec)
    with pytest.raises(ValueError):
        Mediator("m", [{"name": "a", "publish": "x"}, {"name": "a", "publish": "y"}])   # duplicate names


# -- routing on a node --------------------------------------------------------------------

class Desk(mesh.Agent):
    """A target: records what it got; ``hold`` makes its handler wait until released. (An
    Event, not one shared future: two eagerly started handlers awaiting the same future trip
    mesh.eager's Resume, which hands the future's "blocking" flag on stale.)"""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.got: list = []
        self.arrived = asyncio.Event()
        self.hold: asyncio.Event | None = None

    @mesh.rpc
    async def handle(self, message):
        self.got.append(message)
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        return {"by": self.name, "qty": message.get("qty") if isinstance(message, dict) else None}

    @mesh.rpc
    async def reject(self, message):
        raise ValueError("rejected")


class Exec(Desk):
    capabilities = ("exec",)


class Tape(mesh.Agent):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.got: list = []
        self.arrived = asyncio.Event()

    @mesh.on("orders.*")
    def on_order(self, topic, payload):
        self.got.append((topic, payload))
        self.arrived.set()


async def with_node(*agents):
    node = mesh.Node("t")
    for a in agents:
        node.add(a)
    await node.start()
    return node


def test_first_match_wins_in_rule_order_with_transform_and_counters():
    async def main():
        risk, ex = Desk("risk"), Exec("exec-1")
        med = Mediator("med", [
            Rule("big", "risk", "call", "handle", match={"qty": {"gt": 1000}},
                 transform={"set": {"priority": "high"}}),
            Rule("orders", "exec", "call_any", "handle", match={"type": "order"}),
        ])
        node = await with_node(med, risk, ex)
        assert await node.call("med", "route", dict(ORDER, qty=5000)) == {"by": "risk", "qty": 5000}
        assert risk.got == [dict(ORDER, qty=5000, priority="high")]
        assert await node.call("med", "route", ORDER) == {"by": "exec-1", "qty": 500}   # big does not match
        stats = await node.call("med", "stats")
        assert stats["rules"]["big"] == {"matched": 1, "ok": 1, "failed": 0, "match_errors": 0}
        assert stats["rules"]["orders"]["ok"] == 1
        assert (stats["routed"], stats["failed"], stats["dead_letters"]) == (2, 0, 0)
        await node.stop()
    run_async(main)


def test_all_matches_mode_routes_to_every_matching_rule():
    async def main():
        risk, ex, tape = Desk("risk"), Desk("exec-1"), Tape("tape")
        med = Mediator("med", mode="all", rules=[
            {"name": "risk", "match": {"type": "order"}, "call": "risk", "method": "handle"},
            {"name": "audit", "send": "exec-1", "method": "handle", "transform": {"pick": ["symbol"]}},
            {"name": "tape", "publish": "orders.{symbol}", "transform": {"drop": ["venue"]}},
            {"name": "quotes", "match": {"type": "quote"}, "call": "risk", "method": "handle"},
        ])
        node = await with_node(med, risk, ex, tape)
        got = await node.call("med", "route", ORDER)
        assert got == {"risk": {"by": "risk", "qty": 500}, "audit": None, "tape": None}
        await ex.arrived.wait()
        await tape.arrived.wait()
        assert ex.got == [{"symbol": "AAPL"}]
        assert tape.got == [("orders.AAPL", {k: v for k, v in ORDER.items() if k != "venue"})]
        assert "quotes" not in (await node.call("med", "stats"))["rules"]
        await node.stop()
    run_async(main)


def test_default_rule_then_dead_letters_and_no_route():
    async def main():
        fallback = Desk("fallback")
        med = Mediator("med", [Rule("orders", "exec", "call_any", "handle", match={"type": "order"})],
                       default=Rule("rest", "fallback", "call", "handle"), dead_letters_max=2)
        node = await with_node(med, fallback)
        assert (await node.call("med", "route", {"type": "quote"}))["by"] == "fallback"
        med.configure({"rules": [{"name": "orders", "match": {"type": "order"}, "call": "fallback",
                                  "method": "handle"}]})          # no default any more
        for i in range(3):
            with pytest.raises(NoRoute):
                await node.call("med", "route", {"type": "quote", "n": i})
        letters = await node.call("med", "dead_letters")
        assert letters == [{"message": {"type": "quote", "n": 1}, "reason": "no rule matched"},
                           {"message": {"type": "quote", "n": 2}, "reason": "no rule matched"}]   # bounded
        assert med.stats()["dead_letters"] == 3                                                     # all counted
        await node.stop()
    run_async(main)


def test_target_errors_reach_the_caller_and_are_counted_per_rule():
    async def main():
        desk = Desk("desk")
        med = Mediator("med", [
            Rule("reject", "desk", "call", "reject", match={"qty": {"gt": 1000}}),
            Rule("by-venue", "desk-{region}", "call", "handle"),
        ])
        node = await with_node(med, desk)
        with pytest.raises(RemoteError) as err:
            await node.call("med", "route", {"qty": 5000})
        assert "rejected" in str(err.value)
        with pytest.raises(NoRoute):                       # the target names a field the message lacks
            await node.call("med", "route", {"qty": 1})
        rules = med.stats()["rules"]
        assert rules["reject"]["failed"] == 1 and rules["by-venue"]["failed"] == 1
        await node.stop()
    run_async(main)


def test_predicates_and_function_transforms_from_code():
    async def main():
        desk = Desk("desk")

        def broken(message):
            raise KeyError("oops")

        async def enrich(message):
            return dict(message, notional=message["qty"] * message["px"])

        med = Mediator("med", [
            Rule("broken", "desk", "call", "handle", match=broken),
            Rule("priced", "desk", "call", "handle", match=lambda m: m.get("px", 0) > 100, transform=enrich),
        ])
        node = await with_node(med, desk)
        await node.call("med", "route", ORDER)
        assert desk.got[0]["notional"] == 500 * 187.5
        assert med.stats()["rules"]["broken"]["match_errors"] == 1      # a buggy matcher is skipped
        described = med.describe()
        assert [r["name"] for r in described["rules"]] == ["broken", "priced"]
        assert described["rules"][1]["transform"] == "enrich"
        await node.stop()
    run_async(main)


def test_post_is_one_way_bounded_and_failures_become_dead_letters():
    async def main():
        desk = Desk("desk")
        desk.hold = asyncio.Event()
        med = Mediator("med", [Rule("reject", "desk", "call", "reject", match={"bad": True}),
                               Rule("all", "desk", "call", "handle")], max_in_flight=2)
        node = await with_node(med, desk)
        assert await node.call("med", "post", {"n": 1}) is None         # accepted, not yet routed
        await node.call("med", "post", {"n": 2})
        await desk.arrived.wait()
        with pytest.raises(Overloaded):                                 # two already in flight
            await node.call("med", "post", {"n": 3})
        desk.hold.set()
        await med.drain()
        assert desk.got == [{"n": 1}, {"n": 2}]
        await node.send("med", "post", {"bad": True})                    # fully one-way
        await med.drain()
        assert med.dead_letters() == [{"message": {"bad": True}, "reason": "RemoteError: ValueError in desk.reject: rejected"}]
        stats = med.stats()
        assert (stats["posted"], stats["overloaded"], stats["routed"], stats["failed"]) == (3, 1, 2, 1)
        await node.stop()
    run_async(main)


def test_configure_replaces_rules_atomically_and_class_attributes_configure_a_subclass():
    class OrderDesk(Mediator):
        rules = ({"name": "big", "match": {"qty": {"gt": 1000}}, "call": "desk", "method": "handle"},)
        default = {"name": "rest", "call_any": "exec", "method": "handle"}

    async def main():
        desk = Exec("desk")
        med = OrderDesk("med")                     # what `--agent module:OrderDesk=med` does
        node = await with_node(med, desk)
        assert [r["name"] for r in med.describe()["rules"]] == ["big"]
        assert (await node.call("med", "route", {"qty": 1}))["by"] == "desk"     # the default, by capability
        with pytest.raises(RemoteError):                                         # over the rpc: invalid data
            await node.call("med", "configure", {"rules": [{"name": "x", "call": "desk"}]})
        assert [r["name"] for r in med.describe()["rules"]] == ["big"]           # unchanged
        n = await node.call("med", "configure", {"mode": "all", "rules": [
            {"name": "a", "call": "desk", "method": "handle"}, {"name": "b", "call": "desk", "method": "handle"}]})
        assert n == 2 and med.describe()["mode"] == "all"
        assert set(await node.call("med", "route", {"qty": 1})) == {"a", "b"}
        await node.stop()
    run_async(main)
