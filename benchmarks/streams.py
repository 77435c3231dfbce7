"""One pass as concurrent micro-batches on CUDA streams, against one stream, side by side in one process.

Within a Mamba-1 layer the scan is bound by the special-function unit (docs/kernels.md: its XU
pipe ~80% busy, DRAM ~40%), while the conv, RMSNorm and the skinny x_proj/dt_proj are bound by
memory: run one after another they cannot overlap. Splitting a pass's prompts into micro-batches,
each forwarded on its own CUDA stream, lets the GPU run one micro-batch's memory-bound kernels
beside another's scan where the SMs have room (the scan at half the prompts leaves ~1/4 of each
SM's registers free). This measures what that is worth: for each family one full-size random-init
model (as ``benchmarks/kernels.py``), one pass of ``TOKENSxBATCH`` prompts timed as

* ``one stream``: the whole pass in one forward (what extraction does today);
* ``k in sequence``: the pass as k micro-batches one after another on one stream;
* ``k streams``: the same k micro-batches, each on its own stream, launched one after another
  from this thread (the GPU overlaps them as far as their kernels fit).

Every variant's kernel choices are made in a warm-up call at its micro-batch shape before any
timing; rounds alternate the variants' order; tokens/s is the median (range) over rounds.

Usage (repository root, a CUDA GPU)::

    PYTHONPATH=$PWD python benchmarks/streams.py [--families mamba mamba2] [--shapes 2048x32 4096x16] \\
        [--splits 2 4] [--rounds 3] [--calls 2] [--out DIR]
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


def micro_batches(ids: torch.Tensor, k: int) -> list[torch.Tensor]:
    """``ids`` [batch, tokens] cut into ``k`` contiguous row blocks of as equal sizes as possible."""
    if not 1 <= k <= ids.shape[0]:
        raise ValueError(f"cannot cut {ids.shape[0]} prompts into {k} micro-batches")
    return list(torch.tensor_split(ids, k, dim=0))


def on_streams(run, parts: list[torch.Tensor], streams: list[torch.cuda.Stream]) -> list:
    """``run(part)`` for every part, each launched on its own stream after the current stream's work;
    the current stream then waits for all of them (the caller sees one pass)."""
    current = torch.cuda.current_stream()
    outs = []
    for part, stream in zip(parts, streams):
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            outs.append(run(part))
    for stream in streams:
        current.wait_stream(stream)
    return outs


def time_family(name: str, args) -> list[dict]:
    """One row per shape and variant: tokens/s, one value per round."""
    config, run = kernels.full_size_forward(name)
    rows = []
    for (tokens, batch), ids in kernels.random_ids(config.vocab_size, args.shapes, "cuda").items():
        variants = {"one stream": lambda ids=ids: run(ids)}
        for k in args.splits:
            if k > batch:
                continue
            parts = micro_batches(ids, k)
            streams = [torch.cuda.Stream() for _ in parts]
            variants[f"{k} in sequence"] = lambda parts=parts: [run(p) for p in parts]
            variants[f"{k} streams"] = lambda parts=parts, streams=streams: on_streams(run, parts, streams)
        with torch.no_grad():
            for fn in variants.values():  # kernel choices at every micro-batch shape, outside the timing
                fn()
            rates = kernels.alternating_rates(variants, tokens * batch, rounds=args.rounds, calls=args.calls)
        for v, values in rates.items():
            print(f"  {name} {tokens} x {batch} {v}: {[round(x) for x in values]}", flush=True)
            rows.append({"model": name, "tokens": tokens, "batch": batch, "variant": v, "rates": values})
    return rows


def table(rows: list[dict], gpu: str) -> str:
    lines = [
        f"reprflow forward, one pass as micro-batches on CUDA streams, {gpu}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; random init, bf16; tokens/s, median (range) over the rounds; "
        "gain against one stream",
        "",
        "| model | tokens x prompts | variant | tokens/s | gain |",
        "|---|---|---|---:|---:|",
    ]
    base = {}
    for r in rows:
        key = (r["model"], r["tokens"], r["batch"])
        med = statistics.median(r["rates"])
        if r["variant"] == "one stream":
            base[key] = med
        gain = f"{100 * (med / base[key] - 1):+.2f}%" if key in base and r["variant"] != "one stream" else ""
        lines.append(
            f"| {r['model']} | {r['tokens']} x {r['batch']} | {r['variant']} | "
            f"{kernels.median_range(r['rates'])} | {gain} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_gpu_family_args(p, out_name="streams.md", calls_help="timed passes per round")
    p.add_argument("--splits", nargs="+", type=int, default=[2], help="micro-batches per pass")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("CUDA streams need a CUDA GPU; none is visible here")
    return kernels.family_table_main(args, time_family, table)


if __name__ == "__main__":
    sys.exit(main())
