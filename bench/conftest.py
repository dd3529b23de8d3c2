"""Shared benchmark fixtures: run sizes (full or quick), the event loop, the output folder.

``MESH_BENCH_QUICK=1`` (what ``python -m bench --quick`` sets) cuts every end-to-end suite to
about a tenth of its size: enough to see the shape, not to trust the tail.
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

OUT_DIR = Path(__file__).resolve().parent / "out"


def quick_mode() -> bool:
    return os.environ.get("MESH_BENCH_QUICK", "") not in ("", "0")


@dataclass(frozen=True, slots=True)
class Plan:
    """How much each end-to-end suite does. Round trips: ``rtt_rounds`` batches of
    ``rtt_batch`` calls after ``rtt_warmup`` untimed ones. One-way: ``oneway_rounds`` bursts of
    ``oneway_batch`` messages after one untimed burst."""

    quick: bool
    rtt_warmup: int
    rtt_batch: int
    rtt_rounds: int
    oneway_batch: int
    oneway_rounds: int

    @property
    def rtt_calls(self) -> int:
        return self.rtt_batch * self.rtt_rounds


FULL = Plan(quick=False, rtt_warmup=2_000, rtt_batch=1_000, rtt_rounds=20, oneway_batch=20_000, oneway_rounds=10)
QUICK = Plan(quick=True, rtt_warmup=300, rtt_batch=200, rtt_rounds=10, oneway_batch=5_000, oneway_rounds=3)


def pytest_report_header(config: pytest.Config) -> str:
    plan = QUICK if quick_mode() else FULL
    return (f"mesh bench: {'QUICK' if plan.quick else 'full'} sizes — {plan.rtt_calls} round trips, "
            f"{plan.oneway_batch * plan.oneway_rounds} one-way messages per implementation")


@pytest.fixture(scope="session")
def plan() -> Plan:
    return QUICK if quick_mode() else FULL


@pytest.fixture(scope="session")
def out_dir() -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    return OUT_DIR


@pytest.fixture(scope="session")
def bench_loop():
    """One uvloop loop for every asyncio client of the session (mesh runs on uvloop too).

    It only runs inside ``run_until_complete`` while a client measures; between suites it
    sits stopped, which costs the idle clients nothing.
    """
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:   # uvloop does not exist on Windows
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
