"""CPU training throughput of the micro models, per family: the training step as it was
(``before``) against the step of reprflow/training/loop.py (``after``), and that step with its
output projection in bf16 (``bf16 head``).

``before``: AdamW's foreach path, and for Mamba-1 transformers' torch scan (whose backward is
O(context^2)). ``after``: fused AdamW, and for Mamba-1 ``install_mamba_train_forward``. Both run
the chunked head (``linear_cross_entropy``) in float32, as the CPU training step does; ``bf16
head`` is ``after`` with ``_loss(..., head_dtype=torch.bfloat16)`` (on a CPU without bf16 matrix
units, such as an AVX2 one, emulated and much slower). Same model (``build_config`` of a
``train:`` block: width 64, depth 2, ``--vocab``-row tied embedding: 50,304 by default, the
GPT-NeoX tokenizer's), the same random batch, full step (forward, backward, clipping,
optimiser). Prints, per family and variant, the median and minimum wall time of
``--steps`` timed steps (after one warm-up), the CPU seconds per step, tokens/s at the median,
and the 1-minute load average before and after (the development machine is shared, so
compare variants of one run, not runs of different times).

Run: ``PYTHONPATH=. python benchmarks/train_cpu.py --batch 8 --context 64 --threads 2``; the demo's
step: ``--batch 8 --context 128 --threads 1 --vocab 2048``
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
        build_config(family, spec, vocab_size=args.vocab, positions=args.context),
        seed=0,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )
    after = variant != "before"
    head_dtype = torch.bfloat16 if variant == "bf16 head" else torch.float32
    if after and family == "mamba":
        install_mamba_train_forward(model)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=after, foreach=None if after else True)
    x = torch.randint(0, args.vocab, (args.batch, args.context + 1), generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")

    def step():
        loss = _loss(model, x, cpu, head_dtype=head_dtype)
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
    ap.add_argument("--vocab", type=int, default=50304, help="2048: the demo's tokenizer (config/demo.yaml)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tokens = args.batch * args.context
    print(
        f"batch {args.batch} x context {args.context} = {tokens} tokens/step, vocabulary {args.vocab}, "
        f"{args.threads} threads, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    for family in args.families:
        for variant in ("before", "after", "bf16 head"):
            med, best, cpu = _step_time(family, variant, args)
            print(
                f"{family:9s} {variant:9s} median {med * 1e3:7.0f} ms  min {best * 1e3:7.0f} ms  "
                f"cpu {cpu:6.2f} s/step  {tokens / med:7.0f} tok/s  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
