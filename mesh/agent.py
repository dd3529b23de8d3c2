"""Agents: user classes whose ``@rpc`` methods are callable across the mesh and whose
``@on`` methods receive published topics.

The class is scanned once, when it is defined (``__init_subclass__``), into two tables the
node reads on every message: ``rpc`` name -> handler spec, and the topic patterns. Nothing
is looked up by reflection per message.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, TypeVar, overload

if TYPE_CHECKING:
    from mesh.node import Node

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """How to invoke one handler: its attribute name and whether it is a coroutine function."""

    attr: str
    is_async: bool
    idempotent: bool = False
    eager: bool = True
    queue: int = 0            # @on: messages waiting for the handler (bound)
    overflow: str = ""        # @on: what a full queue does: drop, drop_oldest, block


@overload
def rpc(fn: F) -> F: ...
@overload
def rpc(*, name: str | None = None, idempotent: bool = False, eager: bool = True) -> Callable[[F], F]: ...


def rpc(fn=None, *, name=None, idempotent=False, eager=True):
    """Mark a method as callable by name from any node: ``@mesh.rpc`` or ``@mesh.rpc(name=...)``.

    ``idempotent=True`` lets callers retry it safely. ``eager=False`` always runs the handler
    in its own task; by default a handler starts right away on the dispatcher's stack (no task
    is made unless it actually suspends), which is why code before its first ``await`` should
    not rely on ``asyncio.current_task()`` (``asyncio.timeout`` does).
    """

    def mark(f: F) -> F:
        f.__mesh_rpc__ = (name or f.__name__, idempotent, eager)  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


OVERFLOW_POLICIES = ("drop", "drop_oldest", "block")


def on(*patterns: str, queue: int = 1024, overflow: str = "drop") -> Callable[[F], F]:
    """Subscribe a method ``(self, topic, payload)`` to topic patterns.

    Topics are dot-separated; ``*`` matches one segment, a final ``#`` matches the rest
    (zero or more segments): ``@mesh.on("signals.*")`` gets ``signals.AAPL``.

    The handler gets its messages one at a time, in the order they arrived. While it is
    busy, up to ``queue`` more wait; when that is full, ``overflow`` decides: ``"drop"`` the
    new message, ``"drop_oldest"`` the oldest waiting one (both counted), or ``"block"``:
    ``await publish(...)`` returns only once the message found room, on this node or another,
    so a publisher slows to its slowest blocking subscriber.
    """
    if not patterns:
        raise TypeError("@mesh.on needs at least one topic pattern")
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, not {overflow!r}")
    if queue < 1:
        raise ValueError("queue must be at least 1")

    def mark(f: F) -> F:
        f.__mesh_topics__ = tuple(getattr(f, "__mesh_topics__", ())) + patterns  # type: ignore[attr-defined]
        f.__mesh_delivery__ = (queue, overflow)  # type: ignore[attr-defined]
        return f

    return mark


class Agent:
    """Base class of mesh agents. Subclass it, decorate methods, add instances to a node.

    ``capabilities`` names what the agent offers; ``call_any(capability, ...)`` load-balances
    over every agent offering it. ``max_concurrency`` caps the handlers it runs at once and
    ``mailbox`` the requests waiting for one (:mod:`mesh.resilience.bulkhead`); without a cap,
    ``mailbox`` bounds the handlers in flight. Beyond the bound a caller gets ``Overloaded``.
    ``capacity`` is the agent's relative weight in ``call_any`` (2.0: about twice the share
    of calls of an agent with 1.0 at the same latency); it travels with gossip. Lifecycle: ``on_start`` runs when the node starts (or when
    the agent is added to a running node), ``on_stop`` when it stops or the agent is removed.
    """

    capabilities: ClassVar[tuple[str, ...]] = ()
    max_concurrency: int | None = None
    capacity: float = 1.0
    mailbox: int = 4096
    rpc_table: ClassVar[dict[str, HandlerSpec]] = {}
    topic_table: ClassVar[tuple[tuple[str, HandlerSpec], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        rpcs: dict[str, HandlerSpec] = {}
        topics: dict[str, list[tuple[str, HandlerSpec]]] = {}   # by method: an override replaces
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                mark = getattr(value, "__mesh_rpc__", None)
                if mark is not None:
                    rpc_name, idempotent, eager = mark
                    rpcs[rpc_name] = HandlerSpec(attr, inspect.iscoroutinefunction(value), idempotent, eager)
                patterns = getattr(value, "__mesh_topics__", ())
                if patterns:
                    queue, overflow = value.__mesh_delivery__
                    spec = HandlerSpec(attr, inspect.iscoroutinefunction(value), queue=queue, overflow=overflow)
                    topics[attr] = [(pattern, spec) for pattern in patterns]
        cls.rpc_table = rpcs
        cls.topic_table = tuple(entry for entries in topics.values() for entry in entries)
        if isinstance(cls.capabilities, str):
            raise TypeError(f"{cls.__name__}.capabilities must be a tuple of names, not a string")
        cls.capabilities = tuple(cls.capabilities)

    def __init__(self, name: str | None = None) -> None:
        self.name: str = name or type(self).__name__.lower()
        self.node: Node | None = None

    # Shortcuts so agents talk to the mesh without reaching for the node.
    async def call(self, agent: str, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        return await self._node().call(agent, method, *args, timeout=timeout, **kwargs)

    async def call_any(self, capability: str, method: str, *args: Any, timeout: float | None = None,
                       **kwargs: Any) -> Any:
        return await self._node().call_any(capability, method, *args, timeout=timeout, **kwargs)

    async def send(self, agent: str, method: str, *args: Any, **kwargs: Any) -> None:
        await self._node().send(agent, method, *args, **kwargs)

    async def publish(self, topic: str, payload: Any = None) -> None:
        await self._node().publish(topic, payload)

    async def on_start(self) -> None:
        """Called once the agent is live on a started node."""

    async def on_stop(self) -> None:
        """Called when the node stops or the agent is removed."""

    def _node(self) -> Node:
        if self.node is None:
            raise RuntimeError(f"agent {self.name!r} is not added to a node")
        return self.node

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
