"""Supervisors (mesh.patterns.supervisor): the restart-intensity bookkeeping as a table, then
the strategies on one in-process node. Nothing sleeps: tests wait on the supervisor's own
state changes (``wait_until``) and inject its clock."""
from __future__ import annotations

import asyncio

import pytest

import mesh
from mesh.errors import RemoteError
from mesh.patterns.supervisor import (ChildSpec, GaveUp, RestartIntensity, Supervisor, fail, restart_set,
                                      should_restart)
from tests.conftest import run_async


# -- pure parts ---------------------------------------------------------------------------

@pytest.mark.parametrize("max_restarts, period_s, times, expected", [
    (1, 5.0, [0.0, 1.0], [True, False]),                      # OTP default: the 2nd within 5 s is too many
    (1, 5.0, [0.0, 5.0], [True, False]),                      # exactly period_s ago still counts (OTP: =<)
    (1, 5.0, [0.0, 5.001], [True, True]),                     # older than the period: forgotten
    (3, 10.0, [0, 1, 2, 3], [True, True, True, False]),
    (3, 10.0, [0, 1, 2, 10.5, 11], [True, True, True, True, False]),   # 0 expired at 10.5; 1 and 2 still count
    (3, 10.0, [0, 1, 2, 12.5, 13], [True, True, True, True, True]),    # 0, 1, 2 expired
    (0, 5.0, [0.0], [False]),                                 # no restarts allowed at all
    (2, 1.0, [0, 0, 0], [True, True, False]),                 # same instant
])
def test_restart_intensity_table(max_restarts, period_s, times, expected):
    intensity = RestartIntensity(max_restarts, period_s)
    got = []
    for t in times:
        got.append(intensity.allow(t))
        if not got[-1]:
            break
    assert got == expected


def test_restart_intensity_count_and_validation():
    i = RestartIntensity(5, 2.0)
    for t in (0.0, 1.0, 1.5):
        assert i.allow(t)
    assert i.count(1.5) == 3
    assert i.count(2.5) == 2          # 0.0 has left the window
    assert i.count(10.0) == 0
    for bad in ((-1, 1.0), (1, 0.0), (1.5, 1.0), (True, 1.0)):
        with pytest.raises(ValueError):
            RestartIntensity(*bad)


@pytest.mark.parametrize("restart, crashed, expected", [
    ("permanent", True, True), ("permanent", False, True),
    ("transient", True, True), ("transient", False, False),
    ("temporary", True, False), ("temporary", False, False),
])
def test_should_restart_table(restart, crashed, expected):
    assert should_restart(restart, crashed) is expected


@pytest.mark.parametrize("strategy, exited, expected", [
    ("one_for_one", "b", ["b"]),
    ("one_for_all", "b", ["a", "b", "c"]),
    ("rest_for_one", "a", ["a", "b", "c"]),
    ("rest_for_one", "b", ["b", "c"]),
    ("rest_for_one", "c", ["c"]),
])
def test_restart_set_table(strategy, exited, expected):
    assert restart_set(strategy, ["a", "b", "c"], exited) == expected


def test_specs_and_options_are_validated():
    with pytest.raises(ValueError):
        ChildSpec("w", Worker, restart="sometimes")
    with pytest.raises(ValueError):
        Supervisor("s", [ChildSpec("w", Worker), ChildSpec("w", Worker)])
    with pytest.raises(ValueError):
        Supervisor("s", strategy="all_for_none")
    with pytest.raises(RuntimeError):
        fail(Worker("loose"), "not supervised")


# -- agents under supervision -------------------------------------------------------------

class Worker(mesh.Agent):
    """A child whose run() ends when told: normally, or by raising."""

    journal: list[tuple[str, str]] | None = None   # set per test: ("start"/"stop", name)

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self._exit: asyncio.Future | None = None

    async def on_start(self) -> None:
        self._exit = asyncio.get_running_loop().create_future()
        if Worker.journal is not None:
            Worker.journal.append(("start", self.name))

    async def on_stop(self) -> None:
        if Worker.journal is not None:
            Worker.journal.append(("stop", self.name))

    async def run(self) -> None:
        error = await self._exit
        if error is not None:
            raise error

    def crash(self, message: str = "boom") -> None:
        self._exit.set_result(RuntimeError(message))

    def finish(self) -> None:
        self._exit.set_result(None)

    @mesh.rpc
    def ping(self) -> str:
        return self.name


class Reporter(mesh.Agent):
    """A child without run(): it reports its own fatal error."""

    @mesh.rpc
    def corrupt(self) -> None:
        fail(self, "state corrupt")

    @mesh.rpc
    def ping(self) -> str:
        return self.name


class BadStart(Worker):
    async def on_start(self) -> None:
        raise OSError("cannot open the feed")


@pytest.fixture(autouse=True)
def journal():
    Worker.journal = []
    yield Worker.journal
    Worker.journal = None


def specs(*names: str, restart: str = "permanent", factory=Worker) -> list[ChildSpec]:
    return [ChildSpec(n, factory, restart=restart) for n in names]


def replaced(sup: Supervisor, name: str, old: mesh.Agent):
    """The child ``name`` runs again, as a new instance."""
    return lambda s: s.child(name) is not None and s.child(name) is not old and s.child_state(name) == "running"


async def with_node(*agents: mesh.Agent):
    node = mesh.Node("t")
    for a in agents:
        node.add(a)
    await node.start()
    return node


def test_children_start_in_order_and_are_callable_then_stop_in_reverse(journal):
    async def main():
        sup = Supervisor("sup", specs("a", "b", "c"))
        node = await with_node(sup)
        assert journal == [("start", "a"), ("start", "b"), ("start", "c")]
        assert sup.state == "running"
        assert {n for n in node.agents} >= {"sup", "a", "b", "c"}
        assert await node.call("b", "ping") == "b"
        status = await node.call("sup", "status")
        assert status["state"] == "running" and status["strategy"] == "one_for_one"
        assert [(c["name"], c["state"], c["restarts"]) for c in status["children"]] == \
            [("a", "running", 0), ("b", "running", 0), ("c", "running", 0)]
        journal.clear()
        await node.stop()
        # on_stop of each child ran once, in reverse order, though the node asks too
        assert journal == [("stop", "c"), ("stop", "b"), ("stop", "a")]
        assert sup.state == "stopped"
    run_async(main)


def test_one_for_one_restarts_the_crashed_child_only(journal):
    async def main():
        sup = Supervisor("sup", specs("a", "b", "c"), strategy="one_for_one", max_restarts=3)
        node = await with_node(sup)
        a, b, c = (sup.child(n) for n in "abc")
        journal.clear()
        b.crash()
        await sup.wait_until(replaced(sup, "b", b))
        assert journal == [("stop", "b"), ("start", "b")]
        assert sup.child("a") is a and sup.child("c") is c
        assert node.agents["b"] is sup.child("b")
        assert await node.call("b", "ping") == "b"            # the fresh instance answers
        kids = {k["name"]: k for k in sup.which_children()}
        assert (kids["b"]["restarts"], kids["b"]["last_exit"]) == (1, "RuntimeError: boom")
        assert kids["a"]["restarts"] == kids["c"]["restarts"] == 0
        await node.stop()
    run_async(main)


def test_one_for_all_restarts_every_sibling(journal):
    async def main():
        sup = Supervisor("sup", specs("a", "b", "c"), strategy="one_for_all", max_restarts=3)
        node = await with_node(sup)
        old = {n: sup.child(n) for n in "abc"}
        journal.clear()
        old["b"].crash()
        await sup.wait_until(lambda s: all(replaced(sup, n, old[n])(s) for n in "abc"))
        # stopped in reverse start order, started again in order
        assert journal == [("stop", "c"), ("stop", "b"), ("stop", "a"),
                           ("start", "a"), ("start", "b"), ("start", "c")]
        assert [k["restarts"] for k in sup.which_children()] == [1, 1, 1]
        await node.stop()
    run_async(main)


def test_rest_for_one_restarts_the_later_siblings_only(journal):
    async def main():
        sup = Supervisor("sup", specs("a", "b", "c"), strategy="rest_for_one", max_restarts=3)
        node = await with_node(sup)
        old = {n: sup.child(n) for n in "abc"}
        journal.clear()
        old["b"].crash()
        await sup.wait_until(lambda s: replaced(sup, "b", old["b"])(s) and replaced(sup, "c", old["c"])(s))
        assert journal == [("stop", "c"), ("stop", "b"), ("start", "b"), ("start", "c")]
        assert sup.child("a") is old["a"]
        assert [k["restarts"] for k in sup.which_children()] == [0, 1, 1]
        await node.stop()
    run_async(main)


def test_restart_types_decide_what_comes_back():
    async def main():
        children = [ChildSpec("perm", Worker, "permanent"), ChildSpec("trans", Worker, "transient"),
                    ChildSpec("temp", Worker, "temporary"), ChildSpec("trans2", Worker, "transient")]
        sup = Supervisor("sup", children, max_restarts=10)
        node = await with_node(sup)
        state = sup.child_state
        perm, trans, temp, trans2 = (sup.child(n) for n in ("perm", "trans", "temp", "trans2"))
        trans.finish()                                    # transient, normal exit: not restarted
        await sup.wait_until(lambda s: state("trans") == "stopped")
        assert "trans" not in node.agents
        temp.crash()                                      # temporary: never restarted
        await sup.wait_until(lambda s: state("temp") == "stopped")
        assert "temp" not in node.agents
        trans2.crash()                                    # transient crash: restarted
        await sup.wait_until(replaced(sup, "trans2", trans2))
        perm.finish()                                     # permanent: restarted even after a normal exit
        await sup.wait_until(replaced(sup, "perm", perm))
        assert [(k["name"], k["state"], k["last_exit"]) for k in sup.which_children()] == [
            ("perm", "running", "normal"), ("trans", "stopped", "normal"),
            ("temp", "stopped", "RuntimeError: boom"), ("trans2", "running", "RuntimeError: boom")]
        await node.stop()
    run_async(main)


def test_one_for_all_leaves_temporary_siblings_down(journal):
    async def main():
        children = [ChildSpec("a", Worker), ChildSpec("temp", Worker, "temporary"), ChildSpec("c", Worker)]
        sup = Supervisor("sup", children, strategy="one_for_all", max_restarts=3)
        node = await with_node(sup)
        a, c = sup.child("a"), sup.child("c")
        a.crash()
        await sup.wait_until(lambda s: replaced(sup, "a", a)(s) and replaced(sup, "c", c)(s))
        assert sup.child_state("temp") == "stopped" and "temp" not in node.agents
        await node.stop()
    run_async(main)


def test_a_child_reports_its_own_fatal_error():
    async def main():
        sup = Supervisor("sup", [ChildSpec("r", Reporter)], max_restarts=2)
        node = await with_node(sup)
        old = sup.child("r")
        await node.call("r", "corrupt")       # the handler returns; the supervisor acts on the report
        await sup.wait_until(replaced(sup, "r", old))
        assert sup.which_children()[0]["last_exit"] == "ChildFailed: state corrupt"
        # an rpc handler that raises is the caller's problem, not a crash
        with pytest.raises(RemoteError):
            await node.call("r", "ping", "unexpected argument")
        assert sup.which_children()[0]["restarts"] == 1
        await node.stop()
    run_async(main)


def test_intensity_exceeded_gives_up_stops_children_and_escalates(journal):
    """worker crashes -> team restarts it; again within the period -> team gives up, stops its
    workers; the root sees a crashed child and restarts the whole team fresh; when the root's
    own intensity is exceeded it gives up too and everything is off the node."""
    now = [100.0]
    clock = lambda: now[0]                                  # noqa: E731

    class Team(Supervisor):
        max_restarts, period_s = 1, 5.0
        child_specs = (ChildSpec("w1", Worker), ChildSpec("w2", Worker))

        def __init__(self, name: str | None = None) -> None:
            super().__init__(name, clock=clock)

    async def main():
        root = Supervisor("root", [ChildSpec("team", Team)], max_restarts=1, period_s=60.0, clock=clock)
        node = await with_node(root)
        team = root.child("team")
        w1 = team.child("w1")
        w1.crash()
        await team.wait_until(replaced(team, "w1", w1))                   # 1 restart: allowed
        assert team.status()["restarts_in_period"] == 1
        journal.clear()
        now[0] += 1.0
        team.child("w1").crash()                                           # 2nd within 5 s: too many
        await root.wait_until(replaced(root, "team", team))
        assert team.state == "failed" and "more than 1 restart in 5 s" in team.failure
        # the failed team stopped its workers (reverse order), then the root started a fresh team
        assert journal[:2] == [("stop", "w2"), ("stop", "w1")]
        assert journal[2:] == [("start", "w1"), ("start", "w2")]
        new_team = root.child("team")
        assert new_team.state == "running" and new_team.child("w1") is not None
        kids = root.which_children()
        assert kids[0]["kind"] == "supervisor" and kids[0]["restarts"] == 1
        assert kids[0]["last_exit"].startswith("GaveUp: supervisor team: more than 1 restart")
        assert [k["state"] for k in kids[0]["children"]] == ["running", "running"]

        # The new team fails twice more: the root restarted once in its 60 s, so it gives up.
        now[0] += 10.0                                                     # the team's window is fresh
        w = new_team.child("w2")
        w.crash()
        await new_team.wait_until(replaced(new_team, "w2", w))
        new_team.child("w2").crash()
        await root.wait_until(lambda s: s.state == "failed")
        assert "more than 1 restart in 60 s" in root.status()["failure"]
        assert {a for a in node.agents if a[0] != "_"} == {"root"}                                # everything below is gone
        assert [(k["name"], k["state"]) for k in root.which_children()] == [("team", "stopped")]
        with pytest.raises(GaveUp):
            await root.run()
        await node.stop()
    run_async(main)


def test_a_child_that_cannot_start(journal):
    async def main():
        # at start: the supervisor fails, stopping what it had started (reverse order)
        sup = Supervisor("sup", [ChildSpec("a", Worker), ChildSpec("bad", BadStart), ChildSpec("c", Worker)])
        node = await with_node(sup)
        assert sup.state == "failed" and "child bad failed to start: OSError" in sup.failure
        assert ("stop", "a") in journal and ("start", "c") not in journal
        assert {a for a in node.agents if a[0] != "_"} == {"sup"}
        await node.stop()

        # on a restart: each failed start counts against the intensity, then it gives up
        flaky = {"n": 0}

        def factory(name: str) -> mesh.Agent:
            flaky["n"] += 1
            return Worker(name) if flaky["n"] == 1 else BadStart(name)

        now = [0.0]
        sup = Supervisor("sup", [ChildSpec("x", factory)], max_restarts=3, period_s=10.0, clock=lambda: now[0])
        node = await with_node(sup)
        sup.child("x").crash()
        await sup.wait_until(lambda s: s.state == "failed")
        assert flaky["n"] == 4                         # the first instance, then 3 restarts that failed
        assert sup.which_children()[0]["last_exit"] == "OSError: cannot open the feed"
        assert sup.which_children()[0]["restarts"] == 3            # attempts, failed ones included
        await node.stop()
    run_async(main)


def test_a_supervisor_configured_by_class_attributes():
    class Pool(Supervisor):
        strategy = "rest_for_one"
        max_restarts, period_s = 4, 2.0
        child_specs = tuple(ChildSpec(f"p{i}", Worker) for i in range(3))

    async def main():
        pool = Pool("pool")                        # what `python -m mesh.node --agent m:Pool=pool` does
        node = await with_node(pool)
        status = await node.call("pool", "status")
        assert (status["strategy"], status["max_restarts"], status["period_s"]) == ("rest_for_one", 4, 2.0)
        assert [c["name"] for c in status["children"]] == ["p0", "p1", "p2"]
        await node.stop()
    run_async(main)
