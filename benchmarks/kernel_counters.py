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
* with ``--shapes TOKENSxBATCH ...`` the scans at those shapes instead, named by them, e.g.
  ``scan-gluon-2048x32`` (the paper config's 64K tokens per pass);
* ``ssd``: ``mamba_ssm``'s ``mamba_chunk_scan_combined`` at Mamba2-2.7B shapes, B=16, T=2048
  (all five of its kernels).

``hotspots SOURCE.csv``: per kernel, the share of warp samples per stall reason and opcode and
the instructions that hold the most samples (``ncu --page source --csv --print-source sass``).

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
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_tokens import parse_shape  # noqa: E402

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
PIPES = ("fma", "alu", "xu", "lsu", "fp16", "uniform", "adu", "cbu")


#: the scans' default shapes (batch, tokens) and their workload name suffixes
SCAN_SHAPES = {"": (16, 2048), "-4k": (8, 4096)}


def scan_shapes(shapes: list[tuple[int, int]] | None = None) -> dict[str, tuple[int, int]]:
    """Workload name suffix -> (batch, tokens) of the scans: :data:`SCAN_SHAPES`, or for ``shapes``
    given as (tokens, batch) pairs (``--shapes``) one suffix ``-TOKENSxBATCH`` each."""
    return {f"-{t}x{b}": (b, t) for t, b in shapes} if shapes else dict(SCAN_SHAPES)


def _workloads(gluon_config: tuple | None = None, shapes: list[tuple[int, int]] | None = None) -> dict:
    import torch

    from scan_sweep import _call, scan_inputs

    from reprflow.kernels.selective_scan import selective_scan_triton
    from reprflow.kernels.selective_scan_gluon import gluon_available, selective_scan_gluon

    out = {}
    for tag, (batch, tokens) in scan_shapes(shapes).items():
        x = scan_inputs(batch, tokens, torch.bfloat16, "cuda")
        out[f"scan-triton{tag}"] = lambda x=x: _call(selective_scan_triton, x)
        if gluon_available():
            out[f"scan-gluon{tag}"] = lambda x=x: _call(partial(selective_scan_gluon, config=gluon_config), x)
    from ssd_chunks import inputs as ssd_inputs

    from reprflow.kernels.optional import load_mamba_ssm_triton

    kernels = load_mamba_ssm_triton()
    if kernels is not None:
        a = ssd_inputs(16, 2048)
        out["ssd"] = lambda a=a: kernels.chunk_scan_combined(chunk_size=256, **a)
    return out


def run(names: list[str], gluon_config: tuple | None = None, shapes: list[tuple[int, int]] | None = None) -> None:
    """Warm each workload up, then run it once inside the profiler's range."""
    import torch

    work = _workloads(gluon_config, shapes)
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


def summarize(raw_csv: Path, min_ms: float = 0.01) -> str:
    """Markdown tables from ``ncu --page raw --csv`` (row 0 names, row 1 units, then one row per kernel).

    Kernels shorter than ``min_ms`` (the launcher's small casts and copies) are left out.
    """
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
        ms = (dur or 0.0) * {"ns": 1e-6, "us": 1e-3, "usecond": 1e-3, "ms": 1.0, "msecond": 1.0}.get(unit, 1.0)
        if ms < min_ms:
            continue
        lines.append(f"### `{name}` grid {grid} block {block}: {dur} {unit}\n")
        facts = [
            ("registers per thread", "launch__registers_per_thread"),
            ("issue slots busy %", "smsp__issue_active.avg.pct_of_peak_sustained_active"),
            ("warps active per scheduler", "smsp__warps_active.avg.per_cycle_active"),
            ("warps eligible per scheduler per cycle", "smsp__warps_eligible.avg.per_cycle_active"),
            ("achieved occupancy %", "sm__warps_active.avg.pct_of_peak_sustained_active"),
            ("DRAM throughput %", "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed"),
            ("L1/TEX throughput %", "l1tex__throughput.avg.pct_of_peak_sustained_active"),
            ("warp instructions executed", "smsp__inst_executed.sum"),
            ("tensor pipe active %", "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active"),
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


def hotspots(source_csv: Path, top: int = 8, min_samples: int = 10000) -> str:
    """Where each kernel's warps wait, per SASS instruction, from ``ncu --page source --csv --print-source sass``.

    For every kernel with at least ``min_samples`` warp-state samples: the share of samples per
    stall reason and per opcode, then the ``top`` instructions by samples with their three
    largest stall reasons (e.g. a register copy at a loop's back edge that waits for a load).
    """
    import collections
    import re

    kernels: list[dict] = []
    with open(source_csv, newline="") as f:
        for r in csv.reader(f):
            if not r:
                continue
            if r[0] == "Kernel Name":
                kernels.append({"name": r[1], "rows": []})
            elif r[0] == "Address":
                kernels[-1]["head"] = {k: i for i, k in enumerate(r)}
            elif kernels and "head" in kernels[-1]:
                kernels[-1]["rows"].append(r)
    lines = []
    for k in kernels:
        ix = k["head"]
        stall_cols = [c for c in ix if c.startswith("stall_") and "Not Issued" not in c]
        by_stall, by_op, inst = collections.Counter(), collections.Counter(), []
        for r in k["rows"]:
            n = int(_num(r[ix["Warp Stall Sampling (All Samples)"]]) or 0)
            src = r[ix["Source"]].strip()
            op = re.sub(r"^@!?U?P\w+\s+", "", src).split(" ")[0].split(".")[0] if src else "?"
            stalls = {c[6:]: int(_num(r[ix[c]]) or 0) for c in stall_cols}
            by_stall.update(stalls)
            by_op[op] += n
            inst.append((n, src, stalls))
        total = sum(by_op.values())
        if total < min_samples:
            continue
        lines.append(f"### `{k['name'][:60]}`: {total:,} warp samples\n")
        lines.append("stalls: " + ", ".join(f"{s} {v / total:.0%}" for s, v in by_stall.most_common(6)))
        lines.append("opcodes: " + ", ".join(f"{o} {v / total:.0%}" for o, v in by_op.most_common(8)) + "\n")
        lines.append("| samples | share | instruction | largest stalls |\n|---:|---:|---|---|")
        for n, src, stalls in sorted(inst, key=lambda x: -x[0])[:top]:
            big = ", ".join(f"{s} {v}" for s, v in sorted(stalls.items(), key=lambda x: -x[1])[:3])
            lines.append(f"| {n:,} | {n / total:.1%} | `{src[:50]}` | {big} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the workloads (under ncu --profile-from-start off)")
    r.add_argument("names", nargs="*", help="workloads (default: all available)")
    r.add_argument(
        "--gluon-config",
        type=lambda v: tuple(int(x) for x in v.split(",")),
        help="lanes,warps,unroll,prefetch of the gluon scan (default: its default)",
    )
    r.add_argument(
        "--shapes",
        nargs="+",
        type=parse_shape,
        help="TOKENSxBATCH of the scans (default 2048x16 and 4096x8), e.g. 2048x32 4096x16",
    )
    s = sub.add_parser("summarize", help="markdown tables from ncu's raw CSV page")
    s.add_argument("raw_csv", type=Path)
    s.add_argument("--min-ms", type=float, default=0.01, help="leave out kernels shorter than this")
    h = sub.add_parser("hotspots", help="per-instruction stalls from ncu's source CSV page")
    h.add_argument("source_csv", type=Path)
    h.add_argument("--top", type=int, default=8)
    args = p.parse_args()
    if args.cmd == "run":
        run(args.names, args.gluon_config, args.shapes)
    elif args.cmd == "summarize":
        print(summarize(args.raw_csv, args.min_ms))
    else:
        print(hotspots(args.source_csv, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
