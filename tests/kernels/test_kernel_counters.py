"""benchmarks/kernel_counters.py reads Nsight Compute's CSV pages as ncu writes them.

The fixtures are cut from a real run (H200, 2026-12-04, benchmarks/results/kernel_counters_h200_2026-12-04.md):
``ncu_raw.csv`` keeps the columns ``summarize`` reads for two kernels (the Mamba-1 scan, 1.52 ms,
and the SSD's chunk cumsum, 0.012 ms); ``ncu_source.csv`` the scan's 40 SASS instructions with the
most warp samples."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(ROOT / "benchmarks"))

import kernel_counters  # noqa: E402


def _raw_row(kernel: str) -> dict:
    with open(DATA / "ncu_raw.csv", newline="") as f:
        rows = list(csv.reader(f))
    row = next(r for r in rows[2:] if r[0] == kernel)
    return dict(zip(rows[0], row))


def test_summarize_reports_the_scan_and_leaves_out_short_kernels():
    text = kernel_counters.summarize(DATA / "ncu_raw.csv", min_ms=0.05)
    assert "_selective_scan_fwd_kernel" in text and "_chunk_cumsum_fwd_kernel" not in text
    assert "_chunk_cumsum_fwd_kernel" in kernel_counters.summarize(DATA / "ncu_raw.csv", min_ms=0.01)
    raw = _raw_row("_selective_scan_fwd_kernel")
    issue = float(raw["smsp__issue_active.avg.pct_of_peak_sustained_active"])
    assert f"| issue slots busy % | {issue:,.2f} |" in text
    xu = float(raw["sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active"])
    assert f"| pipe xu % of peak | {xu:.1f} |" in text
    # stall reasons largest first, as ncu's own numbers
    stalls = {
        s: float(raw[f"smsp__average_warps_issue_stalled_{s}_per_issue_active.ratio"]) for s in kernel_counters.STALLS
    }
    order = [
        line.split("|")[1].strip()
        for line in text.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip() in stalls
    ]
    assert order == sorted(order, key=lambda s: -stalls[s])[: len(order)]
    assert order[0] == max(stalls, key=stalls.get)


def test_hotspots_ranks_instructions_by_samples_with_their_stalls():
    text = kernel_counters.hotspots(DATA / "ncu_source.csv", top=3, min_samples=1)
    with open(DATA / "ncu_source.csv", newline="") as f:
        rows = list(csv.reader(f))[2:]
    samples = sorted((int(r[2]), r[1].strip()) for r in rows)[::-1]
    total = sum(n for n, _ in samples)
    assert f"{total:,} warp samples" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    assert len(table) == 3
    for line, (n, src) in zip(table, samples):
        assert line.startswith(f"| {n:,} | {n / total:.1%} | `{src[:50]}`")
    assert "long_sb" in table[0]  # the first use of a block's loads waits on them
    assert kernel_counters.hotspots(DATA / "ncu_source.csv", min_samples=10**9) == ""


def test_scan_workloads_are_named_by_their_shape_when_shapes_are_given():
    # the defaults keep their names; --shapes 2048x32 4096x16 (TOKENSxBATCH) name the paper config's passes
    assert kernel_counters.scan_shapes() == {"": (16, 2048), "-4k": (8, 4096)}
    assert kernel_counters.scan_shapes([(2048, 32), (4096, 16)]) == {"-2048x32": (32, 2048), "-4096x16": (16, 4096)}
