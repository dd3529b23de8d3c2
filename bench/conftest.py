"""Shared benchmark fixtures: run sizes (full or quick), the event loop, the output folder,
and the CPU idle policy.

``MESH_BENCH_QUICK=1`` (what ``python -m bench --quick`` sets) cuts every end-to-end suite to
about a tenth of its size: enough to see the shape, not to trust the tail.

``MESH_BENCH_NO_CPU_SLEEP=1`` (``python -m bench --no-cpu-sleep``) holds the Linux PM QoS request
``/dev/cpu_dma_latency = 0`` for the session, so idle CPUs poll instead of halting. On a VM an
idle vCPU that halts takes tens of µs to wake, and a round trip wakes two processes: on the
2-core test VM this alone moved the raw blocking round trip from ~125 µs to ~50 µs and
squeezed every ratio towards 1. Low-latency hosts run that way (``idle=poll``, C-states off);
the setting is released when the session ends. Needs root; without it the run goes on and the
report says which policy was in force.
"""
from __future__ import annotations

import asyncio
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

OUT_DIR = Path(__file__).resolve().parent / "out"
PM_QOS_DEVICE = "/dev/cpu_dma_latency"


def quick_mode() -> bool:
    return os.environ.get("MESH_BENCH_QUICK", "") not in ("", "0")


def no_cpu_sleep_wanted() -> bool:
    return os.environ.get("MESH_BENCH_NO_CPU_SLEEP", "") not in ("", "0")


@pytest.fixture(scope="session", autouse=True)
def cpu_idle_policy():
    """Hold ``/dev/cpu_dma_latency`` at 0 µs for the session when asked (see the module docstring);
    the value says which idle policy is in force, for the suites to record."""
    if not no_cpu_sleep_wanted():
        yield "default"
        return
    try:
        fd = os.open(PM_QOS_DEVICE, os.O_WRONLY)
    except OSError as exc:
        warnings.warn(f"MESH_BENCH_NO_CPU_SLEEP: cannot open {PM_QOS_DEVICE} ({exc.strerror}); "
                      "running with the default idle policy")
        yield f"default (no-cpu-sleep asked, but {PM_QOS_DEVICE}: {exc.strerror})"
        return
    try:
        os.write(fd, struct.pack("i", 0))
        yield "poll (PM QoS cpu_dma_latency=0)"
    finally:
        os.close(fd)    # the kernel drops the request with the last close


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
