from __future__ import annotations

from typing import Any, Awaitable, Callable

import pytest

DEFAULT_SIM_SEEDS = 20


def pytest_addoption(parser: pytest.Parser) -> None:
    # here, not in tests/sim/conftest.py: options must be known before collection starts
    parser.addoption("--seeds", type=int, default=None,
                     help=f"how many seeds each simulation test tries (default {DEFAULT_SIM_SEEDS}, "
                          "or $MESH_SIM_SEEDS)")
    parser.addoption("--seed-start", type=int, default=0,
                     help="the first seed (to spread a long run over several processes or days)")


def run_async(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine function on a fresh uvloop loop, as a node would."""
    import uvloop

    return uvloop.run(fn())


@pytest.fixture
def arun():
    return run_async
