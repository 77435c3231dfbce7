"""CUDA graphs against eager launches for reprflow's forward, side by side in one process.

Issue 15 lists "capture the layer sequence in CUDA graphs" among the levers to measure. A graph
saves the CPU's launch work (a few microseconds per kernel, ~8-12 kernels per layer) and the gaps
between kernels when the CPU cannot stay ahead of the GPU. This measures what that is worth at the
paper's shapes: for each family it builds one full-size random-init model (as
``benchmarks/kernels.py``: bf16, ``prepare_model``, the forward extraction runs, returning every
layer's last-token state), runs one eager batch per shape (the kernel chooser measures and picks
there, outside any capture), captures a graph of the same forward on static inputs, then times
eager calls and graph replays in alternating rounds: tokens/s of each (median and range over the
rounds) and the graph's gain. A forward that cannot be captured gets its error in the row.

Usage (repository root, a CUDA GPU)::

    PYTHONPATH=$PWD python benchmarks/cuda_graphs.py [--families mamba mamba2] \\
        [--shapes 2048x32 4096x16] [--rounds 3] [--calls 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernels  # noqa: E402  benchmarks/kernels.py
from batch_tokens import add_gpu_family_args  # noqa: E402


def capture(run, ids: torch.Tensor) -> torch.cuda.CUDAGraph:
    """A graph of ``run(ids)`` (its output and inputs stay where the capture put them)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        run(ids)  # allocations of the first call on a side stream, as torch's docs ask
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        run(ids)
    return graph


def time_family(name: str, args) -> list[dict]:
    """One row per shape: eager and graph tokens/s (one value per round) or the capture's error."""
    config, run = kernels.full_size_forward(name)
    rows = []
    for (tokens, batch), ids in kernels.random_ids(config.vocab_size, args.shapes, "cuda").items():
        n = tokens * batch
        with torch.no_grad():
            run(ids)  # the kernel chooser's first call at this shape, outside the capture
        variants, error = {"eager": lambda: run(ids)}, ""
        try:
            graph = capture(run, ids)
            variants["graph"] = graph.replay
        except Exception as exc:  # noqa: BLE001 - the row reports why this forward does not capture
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            graph = None
        with torch.no_grad():
            rates = kernels.alternating_rates(variants, n, rounds=args.rounds, calls=args.calls)
        row = {
            "model": name,
            "tokens": tokens,
            "batch": batch,
            "eager": rates["eager"],
            "graph": rates.get("graph", []),
            "error": error,
        }
        print(
            f"  {name} {tokens} x {batch}: eager {[round(v) for v in row['eager']]} "
            f"graph {[round(v) for v in row['graph']]} {row['error']}",
            flush=True,
        )
        rows.append(row)
        del graph
        torch.cuda.empty_cache()
    return rows  # the model goes with this frame; main empties the cache before the next family


def table(rows: list[dict], gpu: str) -> str:
    lines = [
        f"reprflow forward, eager launches against one CUDA graph replay, {gpu}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; random init, bf16; tokens/s, median (range) over the rounds",
        "",
        "| model | tokens x prompts | eager tokens/s | graph tokens/s | graph gain |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        gain = (
            f"{100 * (statistics.median(r['graph']) / statistics.median(r['eager']) - 1):+.2f}%"
            if r["graph"]
            else f"capture failed: {r['error']}"
        )
        lines.append(
            f"| {r['model']} | {r['tokens']} x {r['batch']} | {kernels.median_range(r['eager'])} | {kernels.median_range(r['graph'])} | {gain} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_gpu_family_args(p, out_name="cuda_graphs.md", calls_help="timed calls per round")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("CUDA graphs need a CUDA GPU; none is visible here")
    return kernels.family_table_main(args, time_family, table)


if __name__ == "__main__":
    sys.exit(main())
