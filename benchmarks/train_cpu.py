"""CPU training throughput of the micro models, per family: the training step as it was
(``before``) against the step of reprflow/training/loop.py (``after``).

``before``: float32 output projection and softmax, AdamW's foreach path, and for Mamba-1
transformers' torch scan (whose backward is O(context^2)). ``after``: bf16 output projection
and softmax (``_loss(..., bf16_head=True)``), fused AdamW, and for Mamba-1
``install_mamba_train_forward``. Same model (``build_config`` of a ``train:`` block: width 64,
depth 2, 50304-row tied embedding), the same random batch, full step (forward, backward,
clipping, optimiser). Prints, per family and variant, the median and minimum wall time of
``--steps`` timed steps (after one warm-up), the CPU seconds per step, tokens/s at the median,
and the 1-minute load average before and after (the development machine is shared, so
compare variants of one run, not runs of different times).

Run: ``PYTHONPATH=. python benchmarks/train_cpu.py --batch 8 --context 64 --threads 2``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from reprflow.kernels.mamba_mixers import install_mamba_train_forward
from reprflow.models.init_schemes import build_from_config
from reprflow.training.loop import _loss, build_config
from reprflow.training.recipe import TrainSpec
from reprflow.training.sizing import MATCHED_FAMILIES


def _step_time(family: str, variant: str, args) -> tuple[float, float, float]:
    spec = TrainSpec(width=args.width, depth=args.depth, context=args.context, batch_size=args.batch)
    model = build_from_config(
        build_config(family, spec, vocab_size=50304, positions=args.context),
        seed=0,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )
    after = variant == "after"
    if after and family == "mamba":
        install_mamba_train_forward(model)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=after, foreach=None if after else True)
    x = torch.randint(0, 50277, (args.batch, args.context + 1), generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")

    def step():
        loss = _loss(model, x, cpu, bf16_head=after)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()
    walls, c0 = [], time.process_time()
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        walls.append(time.perf_counter() - t)
    return statistics.median(walls), min(walls), (time.process_time() - c0) / args.steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", nargs="+", default=list(MATCHED_FAMILIES))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tokens = args.batch * args.context
    print(
        f"batch {args.batch} x context {args.context} = {tokens} tokens/step, {args.threads} threads, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    for family in args.families:
        for variant in ("before", "after"):
            med, best, cpu = _step_time(family, variant, args)
            print(
                f"{family:9s} {variant:6s} median {med * 1e3:7.0f} ms  min {best * 1e3:7.0f} ms  "
                f"cpu {cpu:6.2f} s/step  {tokens / med:7.0f} tok/s  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
