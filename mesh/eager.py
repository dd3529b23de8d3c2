"""Run a handler coroutine eagerly: its first step runs on the caller's stack.

Most RPC handlers finish without ever suspending. Wrapping each in an ``asyncio.Task``
costs an allocation and, worse, a trip through the event loop before the reply can be sent.
So the dispatcher steps the coroutine once by hand: if it finishes, the result is there at
once; if it suspends, the rest is handed to a task through :class:`Resume`, which first
yields the future the coroutine is already waiting on and then forwards everything
(sends, throws, close) to the coroutine — exactly what a task would have seen.
(Python 3.12's eager task factory does the same, at the price of a Task per call.)
"""
from __future__ import annotations

from typing import Any, Callable, Coroutine


class Resume:
    """An awaitable that continues a coroutine already advanced to its first suspension."""

    __slots__ = ("_coro", "_first", "_started", "_blocking")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any, blocking: bool = False) -> None:
        self._coro = coro
        self._first = first
        self._started = False
        self._blocking = blocking

    def __await__(self) -> "Resume":
        return self

    def __iter__(self) -> "Resume":
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        if not self._started:
            self._started = True
            first = self._first
            if self._blocking:               # hand the future over as its await left it
                first._asyncio_future_blocking = True
            return first
        return self._coro.send(value)

    def throw(self, *exc: Any) -> Any:
        self._started = True
        return self._coro.throw(*exc)

    def close(self) -> None:
        self._coro.close()


SYNC_DONE = object()  # marks "finished synchronously" in run_eager's result


def run_eager(fn: Callable[..., Any], args: Any, kwargs: Any, is_async: bool) -> tuple[Any, Any]:
    """Start ``fn(*args, **kwargs)``. Returns ``(SYNC_DONE, result)`` when it finished, or
    ``(None, awaitable)`` when it suspended. Exceptions from the handler propagate."""
    if not is_async:
        return SYNC_DONE, fn(*args, **kwargs)
    coro = fn(*args, **kwargs)
    try:
        first = coro.send(None)
    except StopIteration as stop:
        return SYNC_DONE, stop.value
    # ``await future`` marks the future as yielded (``_asyncio_future_blocking``) and a task
    # clears the mark as soon as it takes the future. Until our task does, another handler
    # awaiting the same future would find the mark set and fail ("await wasn't used with
    # future"), so clear it now, as a task would, and set it again when the task takes over.
    blocking = getattr(first, "_asyncio_future_blocking", False) is True
    if blocking:
        first._asyncio_future_blocking = False
    return None, Resume(coro, first, blocking)
