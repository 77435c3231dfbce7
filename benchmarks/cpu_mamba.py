"""Mamba-1 extraction forward on the CPU: transformers' own torch path against reprflow's.

What it backs: :func:`reprflow.fastpath.prepare_model` on a CPU switches Mamba-1's mixers to
reprflow's torch path (``scan: torch``, ``conv: torch``; docs/kernels.md) instead of leaving
transformers' ``slow_forward``, which discretises all tokens at once into a
(batch, channels, n_tokens, d_state) tensor and then reads it one strided token slice at a time.

Rows, per model size and length (random init, no hub; the same weights and ids for each variant):

* ``hf``: ``prepare_model(model, scan="hf")``, i.e. transformers' forward untouched: what a user
  gets from ``MambaForCausalLM`` on a CPU without reprflow;
* ``reprflow``: ``prepare_model(model)``, the default (auto).

Each forward is ``model.base_model(ids, output_hidden_states=True, use_cache=False)`` under
``no_grad``, as extraction runs it. Prints the median CPU seconds of ``--repeats`` forwards
(after one warm-up), tokens/s, the speed-up and the largest difference of the last hidden state
from ``hf``. The machine is shared: compare the rows of one run (ratios), not runs.

Run: ``PYTHONPATH=. python benchmarks/cpu_mamba.py`` (about a minute on one thread;
``--threads`` sets torch's).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from reprflow.fastpath import prepare_model

SIZES = {
    # name: (hidden_size, num_hidden_layers, batch): the demo's trained tiny-mamba, and a wider one
    "demo (64 x 3)": (64, 3, 8),
    "mamba-130m width (768 x 2)": (768, 2, 1),
}


def _forward(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.base_model(ids, output_hidden_states=True, use_cache=False).hidden_states[-1]


def _cpu_seconds(model, ids: torch.Tensor, repeats: int) -> float:
    _forward(model, ids)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        _forward(model, ids)
        times.append(time.process_time() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    from transformers import MambaConfig, MambaForCausalLM

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="300,600", help="tokens per prompt, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {args.threads} thread(s); median CPU s per forward of {args.repeats}")
    print("| model | batch x tokens | hf s | reprflow s | hf tok/s | reprflow tok/s | speed-up | max abs diff |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, (width, depth, batch) in SIZES.items():
        cfg = MambaConfig(vocab_size=2048, hidden_size=width, num_hidden_layers=depth, state_size=16, expand=2)
        torch.manual_seed(0)
        hf = MambaForCausalLM(cfg).eval()
        fast = copy.deepcopy(hf)
        prepare_model(hf, scan="hf")
        report = prepare_model(fast)
        assert report["scan"] != "hf (transformers)", report
        for length in map(int, args.lengths.split(",")):
            ids = torch.randint(0, cfg.vocab_size, (batch, length), generator=torch.Generator().manual_seed(length))
            diff = (_forward(hf, ids) - _forward(fast, ids)).abs().max().item()
            t_hf, t_fast = _cpu_seconds(hf, ids, args.repeats), _cpu_seconds(fast, ids, args.repeats)
            n = batch * length
            print(
                f"| {name} | {batch} x {length} | {t_hf:.3f} | {t_fast:.3f} | {n / t_hf:,.0f} | {n / t_fast:,.0f} "
                f"| {t_hf / t_fast:.2f}x | {diff:.1e} |"
            )


if __name__ == "__main__":
    main()
