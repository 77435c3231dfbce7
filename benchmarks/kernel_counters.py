"""Hardware counters of the SSM kernels under Nsight Compute: why they run where they do.

The Mamba-1 scan runs at 2.3-2.6x its exp bound and Mamba-2's SSD output kernel at several
times its tensor-core and memory times (BENCHMARKS.md); instruction counts and timing
variants did not say why (docs/kernels.md, "Tried and reverted"). This script has two parts:

``run``: the workloads, each bracketed by ``cudaProfilerStart``/``Stop`` so that
``ncu --profile-from-start off`` records exactly one call of each after its warm-up (Triton
compiles and ``mamba_ssm``'s autotuning happen outside the profiled range):

* ``scan-triton``: ``reprflow``'s ``triton`` scan, Mamba-2.8B shapes, bf16, B=16, T=2048;
* ``scan-gluon``: the ``gluon`` scan, same inputs (when Gluon imports);
* ``scan-gluon-4k`` / ``scan-triton-4k``: both at B=8, T=4096;
* ``ssd``: ``mamba_ssm``'s ``mamba_chunk_scan_combined`` at Mamba2-2.7B shapes, B=16, T=2048
  (all five of its kernels).

``summarize RAW.csv``: one markdown table per kernel from ``ncu --page raw --csv``: duration,
issue-slot use, achieved warps per scheduler, eligible warps per cycle, the busiest pipes, and
the warp-stall reasons as cycles per issued instruction (largest first).

Usage on a GPU machine whose runtime lets ``ncu`` read the counters (``benchmarks/kernel_counters.sh``
runs both parts)::

    ncu --profile-from-start off --clock-control none --set full -o OUT/counters \\
        python benchmarks/kernel_counters.py run
    ncu -i OUT/counters.ncu-rep --page raw --csv > OUT/raw.csv
    python benchmarks/kernel_counters.py summarize OUT/raw.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: the warp-stall reasons ncu reports (``smsp__average_warps_issue_stalled_<r>_per_issue_active``)
STALLS = (
    "long_scoreboard",
    "short_scoreboard",
    "math_pipe_throttle",
    "mio_throttle",
    "lg_throttle",
    "wait",
    "barrier",
    "dispatch_stall",
    "no_instruction",
    "not_selected",
    "selected",
    "branch_resolving",
    "drain",
    "imc_miss",
    "membar",
    "misc",
    "sleeping",
    "tex_throttle",
)
#: pipes whose utilisation is shown (``sm__inst_executed_pipe_<p>`` as % of peak)
PIPES = ("fma", "alu", "xu", "lsu", "fp16", "tensor", "uniform", "adu", "cbu")


def _workloads() -> dict:
    import torch

    from scan_sweep import _call, scan_inputs

    from reprflow.kernels.selective_scan import selective_scan_triton
    from reprflow.kernels.selective_scan_gluon import gluon_available, selective_scan_gluon

    out = {}
    for tag, (batch, tokens) in (("", (16, 2048)), ("-4k", (8, 4096))):
        x = scan_inputs(batch, tokens, torch.bfloat16, "cuda")
        out[f"scan-triton{tag}"] = lambda x=x: _call(selective_scan_triton, x)
        if gluon_available():
            out[f"scan-gluon{tag}"] = lambda x=x: _call(selective_scan_gluon, x)
    from ssd_chunks import inputs as ssd_inputs

    from reprflow.kernels.optional import load_mamba_ssm_triton

    kernels = load_mamba_ssm_triton()
    if kernels is not None:
        a = ssd_inputs(16, 2048)
        out["ssd"] = lambda a=a: kernels.chunk_scan_combined(chunk_size=256, **a)
    return out


def run(names: list[str]) -> None:
    """Warm each workload up, then run it once inside the profiler's range."""
    import torch

    work = _workloads()
    for name in names or list(work):
        if name not in work:
            raise SystemExit(f"unknown or unavailable workload {name!r}; available: {', '.join(work)}")
        fn = work[name]
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
        fn()
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()
        print(f"profiled {name}", flush=True)


def _num(v: str) -> float | None:
    try:
        return float(v.replace(",", ""))
    except (ValueError, AttributeError):
        return None


def summarize(raw_csv: Path) -> str:
    """Markdown tables from ``ncu --page raw --csv`` (row 0 names, row 1 units, then one row per kernel)."""
    with open(raw_csv, newline="") as f:
        rows = list(csv.reader(f))
    rows = [r for r in rows if r and not r[0].startswith("==")]
    head, units, data = rows[0], rows[1], rows[2:]
    col = {name: i for i, name in enumerate(head)}

    def get(r, name):
        return _num(r[col[name]]) if name in col else None

    lines = []
    for r in data:
        name = r[col["Kernel Name"]][:60] if "Kernel Name" in col else "?"
        grid = r[col["Grid Size"]] if "Grid Size" in col else ""
        block = r[col["Block Size"]] if "Block Size" in col else ""
        dur = get(r, "gpu__time_duration.sum")
        unit = units[col["gpu__time_duration.sum"]] if "gpu__time_duration.sum" in col else ""
        lines.append(f"### `{name}` grid {grid} block {block}: {dur} {unit}\n")
        facts = [
            ("registers per thread", "launch__registers_per_thread"),
            ("issue slots busy %", "sm__inst_issued.avg.pct_of_peak_sustained_active"),
            ("warps active per scheduler", "smsp__warps_active.avg.per_cycle_active"),
            ("warps eligible per scheduler per cycle", "smsp__warps_eligible.avg.per_cycle_active"),
            ("achieved occupancy %", "sm__warps_active.avg.pct_of_peak_sustained_active"),
            ("DRAM throughput %", "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed"),
            ("L1/TEX throughput %", "l1tex__throughput.avg.pct_of_peak_sustained_active"),
            ("instructions per warp (executed)", "smsp__inst_executed.sum"),
        ]
        lines.append("| fact | value |\n|---|---:|")
        for label, metric in facts:
            v = get(r, metric)
            if v is not None:
                lines.append(f"| {label} | {v:,.2f} |")
        for p in PIPES:
            v = get(r, f"sm__inst_executed_pipe_{p}.avg.pct_of_peak_sustained_active")
            if v is not None:
                lines.append(f"| pipe {p} % of peak | {v:.1f} |")
        stalls = []
        for s in STALLS:
            v = get(r, f"smsp__average_warps_issue_stalled_{s}_per_issue_active.ratio")
            if v is not None:
                stalls.append((v, s))
        stalls.sort(reverse=True)
        lines.append("\n| stall reason | warps stalled per issued instruction |\n|---|---:|")
        lines += [f"| {s} | {v:.2f} |" for v, s in stalls if v >= 0.01]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the workloads (under ncu --profile-from-start off)")
    r.add_argument("names", nargs="*", help="workloads (default: all available)")
    s = sub.add_parser("summarize", help="markdown tables from ncu's raw CSV page")
    s.add_argument("raw_csv", type=Path)
    args = p.parse_args()
    if args.cmd == "run":
        run(args.names)
    else:
        print(summarize(args.raw_csv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
