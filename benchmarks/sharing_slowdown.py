"""Does sharing a node slow a job down? The same extraction jobs, alone on one GPU and on the node.

Issue 16 asks that a sample of the 8-GPU run's jobs, timed alone on one H200, show that sharing
the node (its CPUs, disk and host memory with seven other GPU jobs) slows a job by at most 10%.
Both runs are ``snakemake`` runs of the same config (``out_dir`` and ``execution`` keys aside,
which change no stored value), so their stores hold the same cells; this compares them per cell:

- **loop**: the store attr ``timing.seconds``, the extraction loop (forwards, device-to-host
  copies, writes, streamed token metrics);
- **job**: the job's wall time (Snakemake's benchmark file) minus ``timing.startup.gpu_wait``,
  the time it waited for a GPU to be free (with ``execution.jobs_per_gpu: 2`` a job starts up
  while another computes; that wait is scheduling, not a slowdown).

The slowdown of a cell is node / alone - 1; the verdict is on the job time (the worst cell
decides), with the loop's beside it. Two things besides sharing change a job's time, so a cell
counts only where they match: its prompts per forward pass (``timing.batch_size``; a cell whose
batch differs is listed and left out) and its kernels' first use (the kernel choices it measured
itself, ``fastpath.kernels``, rather than read from the run's cache: a fresh machine's first
Mamba-2 job of a size class spends about 98 s compiling and measuring on an H200; such a cell is
shown, marked, and left out of the verdict).

The alone run (``bash benchmarks/paper_rehearsal_gpu.sh alone``, one job at a time on one GPU)
can be saved to a small JSON (``--save``) and compared with a node run made later::

    python benchmarks/sharing_slowdown.py --alone runs/alone --save benchmarks/results/alone_h200.json
    python benchmarks/sharing_slowdown.py --alone benchmarks/results/alone_h200.json --node <node root>
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from paper_rehearsal import read_benchmarks, read_stores  # benchmarks/paper_rehearsal.py

GOAL = 0.10  # at most 10% slower on the node (issue 16)


def job_times(root: Path) -> dict[str, dict]:
    """``model/init/task_nL`` -> ``{tokens, loop_s, job_s, gpu_wait_s, batch_size, first_use,
    peak_gpu_bytes, startup}`` for every extraction store of a run root that has its timing
    (``job_s`` NaN without a benchmark file; ``batch_size`` None where the store predates it).
    ``job_s`` excludes the wait for a GPU; ``first_use`` counts the kernel choices the job
    measured itself rather than read from a cache."""
    walls = {r["key"]: r["seconds"] for r in read_benchmarks(root) if r["phase"] == "activations"}
    out = {}
    for key, store in read_stores(root).items():
        timing = store["timing"]
        if "seconds" not in timing:
            continue
        choices = [c for by_shape in store["kernels"].values() for c in by_shape.values()]
        startup = {k: float(v) for k, v in (timing.get("startup") or {}).items()}
        wait = startup.get("gpu_wait", 0.0)
        out[key] = {
            "tokens": int(timing.get("tokens") or 0),
            "loop_s": float(timing["seconds"]),
            "job_s": walls.get(key, math.nan) - wait,
            "gpu_wait_s": wait,
            "batch_size": timing.get("batch_size"),
            "first_use": sum("ms" in c for c in choices),  # timed here (a cached choice has no times)
            "peak_gpu_bytes": timing.get("peak_gpu_bytes"),
            "startup": startup,
        }
    return out


def load(path: Path) -> dict[str, dict]:
    """A run root's :func:`job_times`, or a JSON that ``--save`` wrote."""
    if path.is_file():
        return json.loads(path.read_text())["jobs"]
    if not (path / "results" / "activations").is_dir():
        raise SystemExit(f"{path}: neither a run root (no results/activations) nor a saved JSON")
    return job_times(path)


def compare(alone: dict[str, dict], node: dict[str, dict]) -> tuple[list[dict], list[str], float | None]:
    """Cells in both runs: one row each (times and slowdowns, node / alone - 1, of the loop and the
    job; ``first_use`` True where the two measured a different number of kernel choices; ``counted``
    where the row enters the verdict: no first-use difference and both job times known), the cells
    left out because their batches differ, and the worst job slowdown over the rows without a
    first-use difference (None when there is none)."""
    rows, skipped = [], []
    for key in sorted(alone.keys() & node.keys()):
        a, n = alone[key], node[key]
        if a["tokens"] != n["tokens"]:  # not the same work: a config differs beyond out_dir/execution
            raise SystemExit(f"{key}: {a['tokens']} tokens alone, {n['tokens']} on the node; not the same job")
        if None not in (a.get("batch_size"), n.get("batch_size")) and a["batch_size"] != n["batch_size"]:
            skipped.append(f"{key} ({a['batch_size']} prompts per pass alone, {n['batch_size']} on the node)")
            continue
        rows.append(
            {
                "key": key,
                "tokens": a["tokens"],
                "loop": (a["loop_s"], n["loop_s"], n["loop_s"] / a["loop_s"] - 1),
                "job": (a["job_s"], n["job_s"], n["job_s"] / a["job_s"] - 1),
                "first_use": a.get("first_use", 0) != n.get("first_use", 0),
            }
        )
        rows[-1]["counted"] = not rows[-1]["first_use"] and not math.isnan(rows[-1]["job"][2])
    counted = [r["job"][2] for r in rows if r["counted"]]
    return rows, skipped, (max(counted) if counted else None)


def table(rows: list[dict], skipped: list[str], worst: float | None) -> str:
    """Markdown: per cell, alone and node seconds and the slowdown of the loop and the job (``*``:
    the two runs measured different kernel choices in it, left out of the verdict), the cells left
    out for their batch, then the verdict."""
    lines = [
        "| cell | tokens | loop alone s | loop node s | loop slowdown | job alone s | job node s | job slowdown |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        (la, ln, ls), (ja, jn, js) = r["loop"], r["job"]
        cell = r["key"] + (" *" if r["first_use"] else "")
        lines.append(
            f"| {cell} | {r['tokens']:,} | {la:.1f} | {ln:.1f} | {ls:+.1%} | {ja:.1f} | {jn:.1f} | {js:+.1%} |"
        )
    if any(r["first_use"] for r in rows):
        lines.append("\n\\* kernel choices measured in one run, read from a cache in the other: not in the verdict.")
    if skipped:
        lines.append("\nLeft out, their batches differ: " + "; ".join(skipped) + ".")
    counted = sum(r["counted"] for r in rows)
    if worst is None:
        lines.append("\n**Verdict: not measured** (no comparable cell with its job time in both runs).")
    else:
        held = "holds" if worst <= GOAL else "does not hold"
        lines.append(
            f"\n**Verdict: the goal (sharing slows a job by at most {GOAL:.0%}) {held}**: the worst job "
            f"slowdown over {counted} cells is {worst:+.1%}."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--alone", type=Path, nargs="+", required=True, help="run roots or saved JSONs: the jobs alone")
    p.add_argument("--node", type=Path, help="run root or saved JSON: the same jobs on the node")
    p.add_argument("--save", type=Path, help="write --alone's job times to this JSON (to compare later)")
    args = p.parse_args(argv)
    alone = {key: t for path in args.alone for key, t in load(path).items()}  # a later source wins
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps({"source": [str(p) for p in args.alone], "jobs": alone}, indent=1) + "\n")
        print(f"saved {len(alone)} jobs to {args.save}")
        for key, t in sorted(alone.items()):
            peak = t.get("peak_gpu_bytes")
            memory = "" if peak is None else f", peak {peak / 2**30:.1f} GiB on the GPU"
            print(f"  {key}: {t['tokens']:,} tokens, loop {t['loop_s']:.1f} s, job {t['job_s']:.1f} s{memory}")
    if args.node:
        print(table(*compare(alone, load(args.node))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
