from __future__ import annotations

from typing import Any, Awaitable, Callable

import pytest


def run_async(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine function on a fresh uvloop loop, as a node would."""
    import uvloop

    return uvloop.run(fn())


@pytest.fixture
def arun():
    return run_async
