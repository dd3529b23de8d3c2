"""Turn one pytest-benchmark JSON run into the table people compare, and the latency plot.

Rows are found generically, so the table covers whatever bench files exist:

* a *case* is one test function (plus any parameters that are not the implementation, e.g.
  the ``10`` of ``test_pick[compiled-10]``);
* the *implementation* is read from the parametrize id: the longest known name it starts
  with (``raw-blocking``, ``raw-asyncio``, ``mesh``, ``osbrain``, ``compiled``, ``pure``,
  ``msgpack``...); what follows is the variant;
* every row gets the ratio of its typical time to that of each *baseline* of its case
  (``raw-asyncio``, ``raw-blocking``, ``msgpack``, ``pure``), all from the same run.

The typical time is the per-call p50 where a suite recorded samples (``extra_info`` ``p50_us``),
else its ``median_us``, else pytest-benchmark's median; p99 only where a suite recorded one.

This module imports neither mesh nor pytest: it reads files, so it also works for the
baselines alone.
"""
from __future__ import annotations

import json
import math
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

IMPL_ORDER = ("raw-blocking", "raw-asyncio", "mesh", "osbrain", "msgpack", "pure", "cython", "compiled")
BASELINES = ("raw-asyncio", "raw-blocking", "msgpack", "pure")
SUITE_ORDER = ("e2e rtt", "e2e one-way throughput", "codec", "router", "scoring")
_UNIT_SCALE = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(slots=True)
class Row:
    suite: str
    case: str
    impl: str
    center_s: float                # p50 / median, seconds per operation
    center_kind: str               # "p50" (per-call samples) or "median"
    p99_s: float | None = None
    rate_per_s: float | None = None
    n: int | None = None
    ratios: list[tuple[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks; ``ordered`` sorted ascending, ``q`` in [0, 100]."""
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# -- reading ---------------------------------------------------------------------------------------


def split_impl(param: str | None) -> tuple[str, str]:
    """``"compiled-10"`` -> ``("compiled", "10")``; an id with no known name is all implementation."""
    if not param:
        return "-", ""
    best = ""
    for name in IMPL_ORDER:
        if (param == name or param.startswith(name + "-")) and len(name) > len(best):
            best = name
    if best:
        return best, param[len(best) + 1:]
    return param, ""


def _extra_seconds(extra: dict[str, Any], stem: str) -> float | None:
    for unit, scale in _UNIT_SCALE.items():
        value = extra.get(f"{stem}_{unit}")
        if isinstance(value, (int, float)) and math.isfinite(value):
            return value * scale
    return None


def _suite_of(bench: dict[str, Any]) -> str:
    if bench.get("group"):
        return str(bench["group"])
    module = Path(bench.get("fullname", "").split("::")[0]).stem
    return module.removeprefix("test_bench_").removeprefix("test_") or "bench"


def _function_of(bench: dict[str, Any], suite: str) -> str:
    """``test_codec_decode`` in suite ``codec`` -> ``decode``."""
    name = bench["name"].split("[")[0].removeprefix("test_")
    return name.removeprefix(suite + "_") or name


def load_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for bench in results.get("benchmarks", []):
        extra = bench.get("extra_info") or {}
        stats = bench["stats"]
        impl, variant = split_impl(bench.get("param"))
        suite = _suite_of(bench)
        case = _function_of(bench, suite) + (f" [{variant}]" if variant else "")
        p50 = _extra_seconds(extra, "p50")
        median = _extra_seconds(extra, "median")
        if p50 is not None:
            center, kind = p50, "p50"
        elif median is not None:
            center, kind = median, "median"
        else:
            center, kind = stats["median"], "median"
        n = extra.get("calls") or extra.get("messages") or stats["rounds"] * stats.get("iterations", 1)
        rows.append(Row(suite=suite, case=case, impl=impl, center_s=center, center_kind=kind,
                        p99_s=_extra_seconds(extra, "p99"), rate_per_s=extra.get("msgs_per_s"),
                        n=n, extra=extra))
    _add_ratios(rows)
    return sorted(rows, key=_sort_key)


def _add_ratios(rows: list[Row]) -> None:
    cases: dict[tuple[str, str], dict[str, Row]] = {}
    for row in rows:
        cases.setdefault((row.suite, row.case), {})[row.impl] = row
    for impls in cases.values():
        for row in impls.values():
            row.ratios = [(base, row.center_s / impls[base].center_s) for base in BASELINES
                          if base in impls and base != row.impl and impls[base].center_s > 0]


def _natural(text: str) -> tuple:
    """Sort key that puts "pick [10]" before "pick [100]"."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text))


def _sort_key(row: Row) -> tuple:
    suite = SUITE_ORDER.index(row.suite) if row.suite in SUITE_ORDER else len(SUITE_ORDER)
    impl = IMPL_ORDER.index(row.impl) if row.impl in IMPL_ORDER else len(IMPL_ORDER)
    return suite, row.suite, _natural(row.case), impl, row.impl


def skipped_tests(junit_xml: Path) -> list[tuple[str, str]]:
    """(test id, reason) for every test pytest skipped or could not run, from its JUnit XML."""
    if not junit_xml.exists():
        return []
    out = []
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        for tag in ("skipped", "error", "failure"):
            el = case.find(tag)
            if el is not None:
                name = case.get("name", "?")
                reason = (el.get("message") or "").splitlines()[0:1]
                label = "skipped" if tag == "skipped" else ("failed" if tag == "failure" else "error")
                out.append((f"{name}", f"{label}: {reason[0] if reason else ''}"))
    return out


# -- formatting --------------------------------------------------------------------------------------


def fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}" if seconds / scale < 100 else f"{seconds / scale:.0f} {unit}"
    return f"{seconds / 1e-9:.3g} ns" if seconds / 1e-9 < 100 else f"{seconds / 1e-9:.0f} ns"


def fmt_rate(rate: float | None) -> str:
    if not rate:
        return ""
    if rate >= 1e6:
        return f"{rate / 1e6:.2f} M msg/s"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f} k msg/s"
    return f"{rate:.0f} msg/s"


def fmt_ratios(row: Row) -> str:
    if not row.ratios:
        return "baseline" if row.impl in BASELINES else ""
    text = " · ".join(f"{r:.2f}× {base}" for base, r in row.ratios)
    return ("baseline; " if row.impl in BASELINES else "") + text


def _run_header(results: dict[str, Any], rows: list[Row]) -> list[str]:
    info = results.get("machine_info", {})
    cpu = info.get("cpu", {}) or {}
    hot = sorted({str(r.extra["hot_path"]) for r in rows if "hot_path" in r.extra})
    quick = any(r.extra.get("quick") for r in rows)
    commit = results.get("commit_info", {}) or {}
    parts = [results.get("datetime", "")[:19].replace("T", " ") + " UTC",
             f"Python {info.get('python_version', '?')}",
             f"{cpu.get('count', '?')} CPUs ({cpu.get('brand_raw', info.get('machine', '?'))})"]
    if commit.get("id"):
        parts.append(f"commit {commit['id'][:10]}{' (dirty)' if commit.get('dirty') else ''}")
    if hot:
        parts.append(f"mesh hot path: {', '.join(hot)}")
    idle = sorted({str(r.extra["cpu_idle"]) for r in rows if "cpu_idle" in r.extra})
    if idle:
        parts.append(f"CPU idle: {', '.join(idle)}")
    if quick:
        parts.append("QUICK sizes")
    return ["# mesh benchmarks", "", " · ".join(parts), ""]


def render_table(rows: list[Row]) -> list[str]:
    header = ["suite", "case", "impl", "p50 / median", "p99", "throughput", "n", "ratio vs baseline (same run)"]
    body = []
    for row in rows:
        center = f"{fmt_time(row.center_s)}" + ("" if row.center_kind == "p50" else " (median)")
        body.append([row.suite, row.case, row.impl, center, fmt_time(row.p99_s) if row.p99_s else "—",
                     fmt_rate(row.rate_per_s), f"{row.n:,}" if row.n else "", fmt_ratios(row)])
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    right = {3, 4, 5, 6}

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                         for i, w in enumerate(widths)) + "|"
    return [line(header), sep] + [line(cells) for cells in body]


def render(results: dict[str, Any], skipped: Iterable[tuple[str, str]] = ()) -> str:
    rows = load_rows(results)
    lines = _run_header(results, rows)
    if rows:
        lines += render_table(rows)
    else:
        lines.append("No benchmark results in this run.")
    lines += ["",
              "Time per operation: one round trip (e2e rtt), one message (one-way throughput), one call "
              "(micro-benchmarks). p50/p99 come from per-call samples; `(median)` marks a median over rounds "
              "(bursts of messages, or pytest-benchmark rounds of many calls), where no per-call samples exist. Ratio = this row's time ÷ the baseline's time in the same case and "
              "run: < 1 is faster than the baseline, > 1 slower."]
    skipped = list(skipped)
    if skipped:
        lines += ["", "Not measured in this run:"]
        lines += [f"- `{name}` — {reason}" for name, reason in skipped]
    return "\n".join(lines) + "\n"


def write_report(results_json: Path, report_md: Path, junit_xml: Path | None = None) -> str:
    results = json.loads(results_json.read_text())
    text = render(results, skipped_tests(junit_xml) if junit_xml else ())
    report_md.parent.mkdir(parents=True, exist_ok=True)
    report_md.write_text(text)
    return text


# -- plot ----------------------------------------------------------------------------------------------


def load_samples(samples_dir: Path) -> dict[str, list[int]]:
    """impl -> round-trip samples in ns, from ``bench/out/rtt/<impl>.json``, in IMPL_ORDER."""
    found = {}
    for path in samples_dir.glob("*.json"):
        data = json.loads(path.read_text())
        found[data.get("impl", path.stem)] = data["samples"]
    return dict(sorted(found.items(), key=lambda kv: IMPL_ORDER.index(kv[0]) if kv[0] in IMPL_ORDER else 99))


def plot_latency(samples_dir: Path, out_png: Path, title: str = "") -> Path | None:
    """CDF and tail (1 − CDF) of the round-trip latency of each implementation, log time axis.

    Returns the path written, or None when there are no samples. Raises ImportError without
    matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = load_samples(samples_dir)
    if not series:
        return None
    fig, (ax_cdf, ax_tail) = plt.subplots(1, 2, figsize=(13, 5))
    for impl, samples in series.items():
        us = sorted(s / 1000 for s in samples)
        n = len(us)
        cdf = [(k + 1) / n for k in range(n)]
        p50, p99 = percentile(us, 50), percentile(us, 99)
        label = f"{impl}  (p50 {p50:.0f} µs, p99 {p99:.0f} µs, n={n:,})"
        ax_cdf.plot(us, cdf, label=label, linewidth=1.6)
        ax_tail.plot(us, [max(1 - c, 0.5 / n) for c in cdf], label=impl, linewidth=1.6)
    ax_cdf.set_xscale("log")
    ax_cdf.set_xlabel("round-trip latency (µs, log)")
    ax_cdf.set_ylabel("fraction of calls ≤ x")
    ax_cdf.set_title("Round trip, one call in flight: CDF")
    ax_cdf.grid(True, which="both", alpha=0.3)
    ax_cdf.legend(loc="lower right", fontsize=8)
    ax_tail.set_xscale("log")
    ax_tail.set_yscale("log")
    ax_tail.set_xlabel("round-trip latency (µs, log)")
    ax_tail.set_ylabel("fraction of calls > x (log)")
    ax_tail.set_title("Tail: 1 − CDF")
    for q, name in ((1e-2, "p99"), (1e-3, "p99.9")):
        ax_tail.axhline(q, color="grey", linestyle=":", linewidth=0.8)
        ax_tail.text(ax_tail.get_xlim()[0], q, f" {name}", va="bottom", fontsize=8, color="grey")
    ax_tail.grid(True, which="both", alpha=0.3)
    ax_tail.legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def publish(out: Path, stem: str, text: str, data: dict[str, Any], plot: Any = None) -> int:
    """Write ``out/stem.md`` (the table) and ``out/stem.json`` (the data), print the table,
    and draw ``out/stem.png`` with ``plot(path)`` when given. Returns an exit status: 1 when
    the plot needs matplotlib and it is missing."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=1))
    print(text)
    if plot is not None:
        try:
            plot(out / f"{stem}.png")
        except ImportError:
            print("--plot needs matplotlib: pip install matplotlib  (or pip install -e '.[bench]')", file=sys.stderr)
            return 1
        print(f"plot: {out / f'{stem}.png'}")
    return 0
