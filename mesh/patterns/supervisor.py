"""Supervisors: agents that start other agents and restart them when they crash, as in
Erlang/OTP.

Theory of operation
-------------------
* A :class:`Supervisor` owns children, each given as a :class:`ChildSpec`: a name, a factory
  that makes a fresh agent for that name, and a restart type. When the supervisor starts it
  adds them to its own node in order, each one's ``on_start`` finished before the next is
  added; when it stops it stops them in reverse order.
* What a crash is. A child lives from its ``on_start`` until, if it defines one, its
  long-running ``async def run(self)`` ends; the supervisor runs ``run`` as a task once
  ``on_start`` has returned. The child *exits normally* when ``run`` returns, and *crashes*
  when ``run`` raises, when ``on_start`` raises, or when it reports a fatal error itself with
  :func:`fail`. A ``@rpc`` handler that raises is not a crash: its caller gets the error.
  A child without ``run`` lives until it fails or its supervisor stops it.
* Restart types (per child): ``permanent`` children are restarted whenever they exit,
  ``transient`` ones only after a crash, ``temporary`` ones never (a sibling's restart does
  not bring one back either). A child that is not restarted is taken off the node.
* Strategies (per supervisor), applied when a child must be restarted: ``one_for_one``
  restarts that child; ``one_for_all`` stops every running child (reverse order) and starts
  them again (in order); ``rest_for_one`` does that for the child and those started after it.
  A restart is a fresh instance from the factory under the same name; no state survives.
* Restart intensity: more than ``max_restarts`` restarts within ``period_s`` seconds and the
  supervisor gives up. It stops all its children, enters state ``failed``, and its own
  ``run`` raises :class:`GaveUp` -- so a parent supervisor sees a crashed child and applies
  its own strategy (escalation). A top-level supervisor stays on its node, failed, so that
  ``status()`` can say why. The bookkeeping is :class:`RestartIntensity`, a pure class.
* One exit at a time. Exits land in an inbox that one control task drains; a restart is
  finished before the next exit is looked at, and an exit from an instance that has since
  been stopped or replaced is stale and ignored -- as an OTP supervisor handles one EXIT
  message at a time. At most one exit per child instance is queued, so the inbox is bounded
  by the number of children.
* Time comes from the event loop's clock, or from ``clock=`` (tests inject one).

The node starts and stops the agents it hosts without telling anyone how that went, and both
``node.remove`` and ``node.stop`` call ``on_stop``. So the supervisor wraps each child
instance's ``on_start`` (to learn that it finished or raised) and ``on_stop`` (so that it runs
once, whoever asks first). Remove supervised children through their supervisor, not with
``node.remove``.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Literal, Sequence

from mesh.agent import Agent, rpc
from mesh.errors import MeshError, Timeout

log = logging.getLogger(__name__)

Restart = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
RESTART_TYPES: tuple[str, ...] = ("permanent", "transient", "temporary")
STRATEGIES: tuple[str, ...] = ("one_for_one", "one_for_all", "rest_for_one")

_LINK = "_mesh_supervision"   # attribute on a child instance: (supervisor, child record, generation)


class GaveUp(MeshError):
    """A supervisor exceeded its restart intensity, or could not start its children, and has
    stopped them all. A parent supervisor treats it as a crash of that child."""


class ChildFailed(MeshError):
    """The reason recorded when a child reports a fatal error with :func:`fail`."""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to make and keep one child.

    ``factory(name)`` returns a fresh :class:`~mesh.Agent` named ``name`` (an agent class
    will do). ``start_timeout_s`` bounds its ``on_start``; ``shutdown_s`` bounds how long
    its ``run`` may take to end after cancellation and its ``on_stop`` to finish.
    """

    name: str
    factory: Callable[[str], Agent]
    restart: Restart = "permanent"
    start_timeout_s: float = 10.0
    shutdown_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a child needs a name")
        if self.restart not in RESTART_TYPES:
            raise ValueError(f"child {self.name!r}: restart must be one of {', '.join(RESTART_TYPES)}, "
                             f"not {self.restart!r}")
        if not callable(self.factory):
            raise TypeError(f"child {self.name!r}: factory must be callable")
        if self.start_timeout_s <= 0 or self.shutdown_s <= 0:
            raise ValueError(f"child {self.name!r}: start_timeout_s and shutdown_s must be positive")


class RestartIntensity:
    """OTP's MaxR/MaxT: at most ``max_restarts`` restarts within any ``period_s`` seconds.

    :meth:`allow` is asked before each restart with the current time (seconds, any monotonic
    clock). A restart is counted while ``now - then <= period_s`` (OTP's rule); when
    ``max_restarts`` are already counted the answer is no, and the supervisor gives up.
    ``max_restarts=0`` gives up on the first exit that asks for a restart.
    """

    __slots__ = ("max_restarts", "period_s", "_stamps")

    def __init__(self, max_restarts: int, period_s: float) -> None:
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"max_restarts must be an integer >= 0, not {max_restarts!r}")
        if not period_s > 0:
            raise ValueError(f"period_s must be positive, not {period_s!r}")
        self.max_restarts = max_restarts
        self.period_s = float(period_s)
        self._stamps: deque[float] = deque()

    def _expire(self, now: float) -> None:
        stamps = self._stamps
        while stamps and now - stamps[0] > self.period_s:
            stamps.popleft()

    def allow(self, now: float) -> bool:
        """Count a restart at ``now`` if the intensity allows it; False means give up."""
        self._expire(now)
        if len(self._stamps) >= self.max_restarts:
            return False
        self._stamps.append(now)
        return True

    def count(self, now: float) -> int:
        """Restarts still counted at ``now``."""
        self._expire(now)
        return len(self._stamps)


def should_restart(restart: str, crashed: bool) -> bool:
    """Whether a child of this restart type is restarted after an exit (OTP's rules)."""
    return restart == "permanent" or (restart == "transient" and crashed)


def restart_set(strategy: str, order: Sequence[str], exited: str) -> list[str]:
    """The children (in start order) a strategy takes down and restarts with ``exited``."""
    if strategy == "one_for_one":
        return [exited]
    if strategy == "one_for_all":
        return list(order)
    if strategy == "rest_for_one":
        return list(order[order.index(exited):])
    raise ValueError(f"unknown strategy {strategy!r}")


def fail(agent: Agent, reason: BaseException | str = "failed") -> None:
    """Report a fatal error of a supervised ``agent`` (call it from the agent itself): its
    supervisor handles it as a crash, as if ``run`` had raised. Raises RuntimeError if the
    agent has no supervisor."""
    link = getattr(agent, _LINK, None)
    if link is None:
        raise RuntimeError(f"{agent!r} is not supervised")
    supervisor, child, gen = link
    exc = reason if isinstance(reason, BaseException) else ChildFailed(str(reason))
    supervisor._report_exit(child, gen, exc)


def _describe(reason: BaseException | None) -> str:
    if reason is None:
        return "normal"
    text = str(reason)
    return f"{type(reason).__name__}: {text}" if text else type(reason).__name__


class _Child:
    """One child slot: its spec and its current instance (None while down)."""

    __slots__ = ("spec", "agent", "gen", "reported", "state", "task", "restarts", "last_exit", "kind")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.agent: Agent | None = None
        self.gen = 0                      # bumped for each instance; exits name theirs
        self.reported = 0                 # the last generation whose exit was queued
        # starting, running, stopping, restarting (down, to be started), start_failed, stopped
        self.state = "stopped"
        self.task: asyncio.Task | None = None
        self.restarts = 0
        self.last_exit = ""
        self.kind = "worker"

    @property
    def name(self) -> str:
        return self.spec.name


class Supervisor(Agent):
    """An agent that starts, watches and restarts child agents on its node.

    Configure it with arguments, or in a subclass with class attributes (which is what
    ``python -m mesh.node --agent module:MySupervisor`` needs)::

        class Pricing(Supervisor):
            strategy = "one_for_one"
            max_restarts, period_s = 3, 5.0
            child_specs = (ChildSpec("pricer-1", Pricer), ChildSpec("pricer-2", Pricer))

    A supervisor may be another supervisor's child (give its class as the factory): when it
    gives up, its parent restarts it with fresh children, or gives up in turn.
    """

    # class-level defaults; each instance holds its own (arguments win)
    strategy: str = "one_for_one"
    max_restarts: int = 1                # OTP's defaults: 1 restart in 5 s
    period_s: float = 5.0
    child_specs: ClassVar[Sequence[ChildSpec]] = ()

    def __init__(self, name: str | None = None, children: Iterable[ChildSpec] | None = None, *,
                 strategy: str | None = None, max_restarts: int | None = None,
                 period_s: float | None = None, clock: Callable[[], float] | None = None) -> None:
        super().__init__(name)
        self.strategy = strategy if strategy is not None else type(self).strategy
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        self.max_restarts = max_restarts if max_restarts is not None else type(self).max_restarts
        self.period_s = period_s if period_s is not None else type(self).period_s
        self.intensity = RestartIntensity(self.max_restarts, self.period_s)
        specs = list(children if children is not None else type(self).child_specs)
        names = [s.name for s in specs]
        if len(set(names)) != len(names) or self.name in names:
            raise ValueError(f"supervisor {self.name!r}: child names must be unique and differ from its own")
        self._children = [_Child(s) for s in specs]
        self._by_name = {c.name: c for c in self._children}
        self._clock = clock
        self.state = "new"                # new, starting, running, failed, stopped
        self.failure = ""
        self.restarts_total = 0
        self._inbox: asyncio.Queue[tuple[_Child, int, BaseException | None]] = asyncio.Queue()
        self._control: asyncio.Task | None = None
        self._finished = asyncio.Event()
        self._change = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Start the children in order. If one fails to start, stop those already started and
        fail (raise GaveUp), as an OTP supervisor's init does."""
        loop = asyncio.get_running_loop()
        if self._clock is None:
            self._clock = loop.time
        self.state = "starting"
        for child in self._children:
            try:
                await self._start_child(child)
            except Exception as exc:
                child.last_exit = _describe(exc)
                await self._stop_child(child, "stopped")
                await self._give_up(f"child {child.name} failed to start: {child.last_exit}")
                raise GaveUp(f"supervisor {self.name}: {self.failure}") from exc
        self.state = "running"
        self._control = loop.create_task(self._supervise(), name=f"supervisor {self.name}")
        self._changed()

    async def on_stop(self) -> None:
        """Stop the children in reverse start order."""
        if self._control is not None:
            self._control.cancel()
            await asyncio.gather(self._control, return_exceptions=True)
            self._control = None
        for child in reversed(self._children):
            await self._stop_child(child, "stopped")
        if self.state != "failed":
            self.state = "stopped"
        self._finished.set()
        self._changed()

    async def run(self) -> None:
        """Return when this supervisor stops; raise GaveUp when it fails. A parent supervisor
        runs this, so a failure here is a crash of the child it supervises."""
        await self._finished.wait()
        if self.state == "failed":
            raise GaveUp(f"supervisor {self.name}: {self.failure}")

    # -- inspection ------------------------------------------------------------------------

    @rpc
    def which_children(self) -> list[dict[str, Any]]:
        """Each child in start order: name, kind (worker or supervisor), restart type, state,
        restarts so far (attempts, a failed start included), how it last exited; a supervisor
        child lists its own children."""
        out = []
        for c in self._children:
            entry: dict[str, Any] = {"name": c.name, "kind": c.kind, "restart": c.spec.restart,
                                     "state": c.state, "restarts": c.restarts, "last_exit": c.last_exit}
            if isinstance(c.agent, Supervisor):
                entry["children"] = c.agent.which_children()
            out.append(entry)
        return out

    @rpc
    def status(self) -> dict[str, Any]:
        """The supervisor's state (running, failed...), why it failed, its strategy and
        intensity, the restarts counted in the current period, and its children."""
        now = self._clock() if self._clock is not None else 0.0
        return {"name": self.name, "state": self.state, "failure": self.failure, "strategy": self.strategy,
                "max_restarts": self.max_restarts, "period_s": self.period_s,
                "restarts_in_period": self.intensity.count(now), "restarts_total": self.restarts_total,
                "children": self.which_children()}

    def child(self, name: str) -> Agent | None:
        """The current instance of child ``name`` (None while it is down)."""
        return self._by_name[name].agent

    def child_state(self, name: str) -> str:
        """starting, running, stopping, restarting, start_failed or stopped."""
        return self._by_name[name].state

    async def wait_until(self, predicate: Callable[[Supervisor], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate(self)`` holds; it is checked after every state change.
        Raises :class:`~mesh.errors.Timeout` after ``timeout`` seconds."""
        async def wait() -> None:
            while not predicate(self):
                await self._change.wait()
        try:
            await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"supervisor {self.name}: condition not met within {timeout:g} s") from None

    # -- exits -----------------------------------------------------------------------------

    def _report_exit(self, child: _Child, gen: int, reason: BaseException | None) -> None:
        """Queue the exit of instance ``gen`` of ``child``, once per instance."""
        if gen != child.gen or child.reported == gen:
            return
        child.reported = gen
        self._inbox.put_nowait((child, gen, reason))

    def _run_done(self, child: _Child, gen: int, task: asyncio.Task) -> None:
        if task.cancelled():
            # ours (a stop, then ignored as stale) or someone else's, which is a crash
            reason: BaseException | None = asyncio.CancelledError(f"run() of {child.name} was cancelled")
        else:
            reason = task.exception()
        self._report_exit(child, gen, reason)

    async def _supervise(self) -> None:
        while True:
            child, gen, reason = await self._inbox.get()
            if gen != child.gen or child.state not in ("running", "start_failed"):
                continue   # an instance we already stopped or replaced
            if self._node_stopping():
                continue   # the node is going down; on_stop stops the children in order
            await self._handle_exit(child, reason)
            if self.state == "failed":
                return

    async def _handle_exit(self, child: _Child, reason: BaseException | None) -> None:
        crashed = reason is not None
        child.last_exit = _describe(reason)
        if crashed:
            log.warning("supervisor %s: child %s crashed: %s", self.name, child.name, child.last_exit)
        else:
            log.info("supervisor %s: child %s exited normally", self.name, child.name)
        if not should_restart(child.spec.restart, crashed):
            await self._stop_child(child, "stopped")
            self._changed()
            return
        if not self.intensity.allow(self._clock()):
            plural = "" if self.max_restarts == 1 else "s"
            await self._give_up(f"more than {self.max_restarts} restart{plural} in {self.period_s:g} s "
                                f"(last: {child.name}, {child.last_exit})")
            return
        down = [self._by_name[n] for n in restart_set(self.strategy, [c.name for c in self._children], child.name)]
        for c in reversed(down):
            if c is child:
                await self._stop_child(c, "restarting")
            elif c.state in ("running", "starting", "start_failed"):
                # siblings that were already down stay as they are; temporary ones stay down
                await self._stop_child(c, "stopped" if c.spec.restart == "temporary" else "restarting")
        await self._start_pending()
        self._changed()

    async def _start_pending(self) -> None:
        """Start, in order, every child waiting to be restarted. A child that fails to start
        is queued as a crash (it counts against the intensity) and the rest wait for it."""
        for child in self._children:
            if child.state != "restarting":
                continue
            if self._node_stopping():
                return
            # counted when attempted: the new instance may answer calls before we resume
            child.restarts += 1
            self.restarts_total += 1
            try:
                await self._start_child(child)
            except Exception as exc:
                log.warning("supervisor %s: child %s failed to start: %s", self.name, child.name, _describe(exc))
                await self._stop_child(child, "start_failed")
                self._report_exit(child, child.gen, exc)
                return
            log.info("supervisor %s restarted %s (%s)", self.name, child.name, self.strategy)

    async def _give_up(self, why: str) -> None:
        self.state = "failed"
        self.failure = why
        log.error("supervisor %s gives up: %s", self.name, why)
        for child in reversed(self._children):
            await self._stop_child(child, "stopped")
        self._finished.set()
        self._changed()

    # -- one child -------------------------------------------------------------------------

    async def _start_child(self, child: _Child) -> None:
        """Add a fresh instance to the node and wait for its on_start; raise if it fails."""
        child.gen += 1          # first: even a factory that raises has its own generation
        gen = child.gen
        agent = child.spec.factory(child.name)
        if not isinstance(agent, Agent) or agent.name != child.name:
            raise TypeError(f"the factory of child {child.name!r} made {agent!r}, not an agent of that name")
        loop = asyncio.get_running_loop()
        started: asyncio.Future = loop.create_future()
        self._wrap_lifecycle(child, agent, gen, started)
        child.agent, child.state = agent, "starting"
        child.kind = "supervisor" if isinstance(agent, Supervisor) else "worker"
        self._node().add(agent)      # on a running node this calls on_start (ours, wrapped)
        try:
            await asyncio.wait_for(asyncio.shield(started), child.spec.start_timeout_s)
        except asyncio.TimeoutError:
            started.cancel()
            raise Timeout(f"on_start of {child.name} did not finish within {child.spec.start_timeout_s:g} s") from None
        except BaseException:
            started.cancel()
            raise
        child.state = "running"
        run = getattr(agent, "run", None)
        if callable(run):
            child.task = loop.create_task(run(), name=f"{child.name} run")
            child.task.add_done_callback(lambda t, c=child, g=gen: self._run_done(c, g, t))
        self._changed()

    async def _stop_child(self, child: _Child, final_state: str) -> None:
        """Cancel its run, let its on_stop finish (bounded), take it off the node."""
        agent, task = child.agent, child.task
        child.state = "stopping"
        if task is not None and not task.done():
            task.cancel()
            _, pending = await asyncio.wait({task}, timeout=child.spec.shutdown_s)
            if pending:
                log.warning("supervisor %s: run() of %s ignored cancellation for %g s",
                            self.name, child.name, child.spec.shutdown_s)
        child.task = None
        if agent is not None:
            try:
                await asyncio.wait_for(agent.on_stop(), child.spec.shutdown_s)
            except asyncio.TimeoutError:
                log.warning("supervisor %s: on_stop of %s took over %g s", self.name, child.name,
                            child.spec.shutdown_s)
            node = self.node
            if node is not None and node.agents.get(child.name) is agent:
                node.remove(child.name)
        child.agent = None
        child.state = final_state

    def _wrap_lifecycle(self, child: _Child, agent: Agent, gen: int, started: asyncio.Future) -> None:
        """Wrap this instance's on_start (to hear how it went) and on_stop (to run it once)."""
        original_start, original_stop = agent.on_start, agent.on_stop
        stopping: list[asyncio.Task] = []

        async def on_start() -> None:
            try:
                await original_start()
            except Exception as exc:
                if not started.done():
                    started.set_exception(exc)
                else:
                    log.warning("on_start of %s failed after its supervisor gave up waiting: %r", child.name, exc)
                return
            if not started.done():
                started.set_result(None)

        async def stop_once() -> None:
            try:
                await original_stop()
            except Exception:
                log.exception("on_stop of %s failed", child.name)

        async def on_stop() -> None:
            if not stopping:
                stopping.append(asyncio.ensure_future(stop_once()))
            await asyncio.shield(stopping[0])

        agent.on_start = on_start      # type: ignore[method-assign]
        agent.on_stop = on_stop        # type: ignore[method-assign]
        setattr(agent, _LINK, (self, child, gen))

    # -- helpers ---------------------------------------------------------------------------

    def _node(self) -> Any:
        if self.node is None:
            raise RuntimeError(f"supervisor {self.name!r} is not added to a node")
        return self.node

    def _node_stopping(self) -> bool:
        # restarting into a node that is shutting down would only start agents its
        # on_stop pass has already skipped
        node = self.node
        return node is None or node.stopping

    def _changed(self) -> None:
        # wake every wait_until; each re-checks its predicate and waits on the next event
        event, self._change = self._change, asyncio.Event()
        event.set()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.strategy} {self.state}>"
