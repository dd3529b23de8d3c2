"""``python -m bench.balance`` end to end at a tiny size: it starts its replica processes,
drives every strategy through every case, and writes a well-formed table and summary.
No timing is asserted: which strategy wins is the benchmark's business, not a test's."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.integration.cluster import ROOT

pytestmark = pytest.mark.integration

CALLS = 200
STRATEGIES = ("call_any", "round-robin", "random")
CASES = ("slow", "stall", "equal")


def test_balance_bench_runs_every_strategy_without_errors(tmp_path):
    plot = importlib.util.find_spec("matplotlib") is not None
    cmd = [sys.executable, "-m", "bench.balance", "--quick", "--calls", str(CALLS), "--warmup", "50",
           "--rounds", "1", "--out", str(tmp_path)] + (["--plot"] if plot else [])
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]

    saved = json.loads((tmp_path / "balance.json").read_text())
    assert saved["command"].startswith("python -m bench.balance --quick")
    assert list(saved["results"]) == list(CASES)
    for case, res in saved["results"].items():
        assert res["sick"] == (None if case == "equal" else "r4")
        for strategy in STRATEGIES:
            st = res["strategies"][strategy]
            assert st["errors"] == {}, (case, strategy)
            assert st["calls"] == st["ok"] == CALLS, (case, strategy)
            assert sum(st["targets"].values()) == CALLS
            assert set(st["targets"]) <= {"r1", "r2", "r3", "r4"}
            assert 0 < st["p50_us"] <= st["p99_us"] <= st["p999_us"] <= st["max_us"]
            assert st["calls_per_s"] > 0
        for other in ("round-robin", "random"):
            assert res["ratios"][other]["p99"] > 0
        assert res["strategies"]["round-robin"]["targets"] == {f"r{i}": CALLS // 4 for i in range(1, 5)}

    table = [line for line in (tmp_path / "balance.md").read_text().splitlines() if line.startswith("|")]
    header, rule, *rows = table
    columns = header.count("|")
    assert "p99" in header and "calls/s" in header and set(rule) <= set("|-: ")
    assert all(row.count("|") == columns for row in [rule, *rows])
    assert len(rows) == len(CASES) * len(STRATEGIES)
    assert [row.split("|")[2].strip() for row in rows] == list(STRATEGIES) * len(CASES)
    assert all(f"0 of {CALLS}" in row for row in rows)
    if plot:
        assert (tmp_path / "balance.png").stat().st_size > 0
