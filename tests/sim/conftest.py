"""Fixtures of the simulation tests: how many seeds to try, and how a failure says so.

``pytest tests/sim --seeds 500`` tries more seeds than the quick default (also settable as
``MESH_SIM_SEEDS=500``; the option itself is registered in tests/conftest.py, so it works
from the repository root too). Every seed replays exactly, so a failing one is
reported with the command that replays it (:func:`mesh.sim.__main__.replay_command`).
"""
from __future__ import annotations

import os
from typing import Callable

import pytest

from mesh.sim.__main__ import replay_command

from tests.conftest import DEFAULT_SIM_SEEDS


def seed_count(config: pytest.Config) -> int:
    n = config.getoption("--seeds")
    if n is None:
        n = int(os.environ.get("MESH_SIM_SEEDS", DEFAULT_SIM_SEEDS))
    if n < 1:
        raise pytest.UsageError("--seeds must be at least 1")
    return n


@pytest.fixture(scope="session")
def seeds(request: pytest.FixtureRequest) -> range:
    """The seeds a simulation test loops over: ``--seeds`` of them from ``--seed-start``."""
    start = request.config.getoption("--seed-start")
    return range(start, start + seed_count(request.config))


@pytest.fixture(scope="session")
def replay() -> Callable[..., str]:
    """``replay(seed, scenario, nodes, **options)``: the command that replays a run."""
    return replay_command


@pytest.fixture(scope="session")
def each_seed(seeds: range) -> Callable[..., None]:
    """``each_seed(check, scenario=..., nodes=..., **options)`` calls ``check(seed)`` for every
    seed; a failure is re-raised with a note naming the seed and the command replaying it."""

    def run(check: Callable[[int], object], *, scenario: str, nodes: int, **options: object) -> None:
        for seed in seeds:
            try:
                check(seed)
            except Exception as exc:
                exc.add_note(f"seed {seed}; replay: {replay_command(seed, scenario, nodes, **options)}")
                raise

    return run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each simulation test time in proportion to its seeds (about 1 s of CPU per seed
    for the slowest; pytest-timeout's default would cut a long ``--seeds`` run short)."""
    per_test_s = max(120, 3 * seed_count(config))
    for item in items:
        if item.get_closest_marker("sim") is not None:
            item.add_marker(pytest.mark.timeout(per_test_s))
