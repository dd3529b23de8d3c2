"""``python -m bench``: run every benchmark under bench/, then print one comparison table.

    python -m bench                  # everything, full sizes (a few minutes on 2 cores)
    python -m bench --quick          # about a tenth of the end-to-end work (MESH_BENCH_QUICK=1)
    python -m bench -k rtt --plot    # only the round-trip suite, and bench/out/latency.png
    python -m bench --no-cpu-sleep   # idle CPUs poll instead of halting (root; see bench/conftest.py)
    python -m bench -- --benchmark-disable-gc   # anything after -- goes to pytest

Writes bench/out/results.json (pytest-benchmark), bench/out/report.md (the table),
bench/out/rtt/*.json (round-trip samples) and, with --plot, bench/out/latency.png.
Exits with pytest's status (0 when every benchmark ran or was skipped on purpose).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench import report

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run mesh's benchmarks (pytest-benchmark) and print one table of medians, p99 "
                    "and ratios against the baselines measured in the same run.")
    p.add_argument("--quick", action="store_true",
                   help="smaller end-to-end runs (~2,000 round trips instead of 20,000); sets MESH_BENCH_QUICK=1")
    p.add_argument("--plot", action="store_true",
                   help="also write bench/out/latency.png: round-trip latency CDF and tail (needs matplotlib)")
    p.add_argument("--no-cpu-sleep", action="store_true",
                   help="hold /dev/cpu_dma_latency at 0 while benchmarks run (Linux, root): idle CPUs poll "
                        "instead of halting, so round trips do not pay a CPU wake-up per hop "
                        "(sets MESH_BENCH_NO_CPU_SLEEP=1)")
    p.add_argument("-k", metavar="EXPR", dest="keyword",
                   help="only benchmarks matching this pytest -k expression, e.g. 'rtt or codec'")
    p.add_argument("--out", type=Path, default=OUT, help="output folder (default bench/out)")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (put them after --)")
    return p


def run_pytest(args: argparse.Namespace, results_json: Path, junit_xml: Path) -> int:
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "bench"), "--benchmark-only", "--benchmark-quiet",
           f"--benchmark-json={results_json}", f"--junitxml={junit_xml}", "-o", "junit_family=xunit2",
           "-p", "no:cacheprovider", "--continue-on-collection-errors", "-v", "-rfEs"]
    if args.keyword:
        cmd += ["-k", args.keyword]
    cmd += args.pytest_args
    env = dict(os.environ)
    if args.quick:
        env["MESH_BENCH_QUICK"] = "1"
    if args.no_cpu_sleep:
        env["MESH_BENCH_NO_CPU_SLEEP"] = "1"
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results_json, junit_xml, report_md = out / "results.json", out / "junit.xml", out / "report.md"
    samples_dir = OUT / "rtt"           # where the e2e suite saves samples
    # Nothing from an earlier run may end up in this run's table or plot.
    for stale in (results_json, junit_xml):
        stale.unlink(missing_ok=True)
    shutil.rmtree(samples_dir, ignore_errors=True)

    rc = run_pytest(args, results_json, junit_xml)
    if not results_json.exists():
        print(f"\npytest wrote no results ({results_json}); exit status {rc}", file=sys.stderr)
        return rc or 1

    text = report.write_report(results_json, report_md, junit_xml)
    print("\n" + text)
    print(f"table: {report_md.relative_to(ROOT) if report_md.is_relative_to(ROOT) else report_md}; "
          f"raw results: {results_json.relative_to(ROOT) if results_json.is_relative_to(ROOT) else results_json}")

    if args.plot:
        png = out / "latency.png"
        try:
            written = report.plot_latency(samples_dir, png, title=text.splitlines()[2])
        except ImportError:
            print("--plot needs matplotlib: pip install matplotlib  (or pip install -e '.[bench]')",
                  file=sys.stderr)
            return rc or 1
        if written is None:
            print("--plot: no round-trip samples in this run (the e2e rtt suite did not run); no plot written",
                  file=sys.stderr)
        else:
            print(f"plot: {written.relative_to(ROOT) if written.is_relative_to(ROOT) else written}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
