"""The output projection + cross-entropy of one training step, naive against chunked.

The matched suite's head (config/matched.yaml): hidden states (batch 64 x context 1024 = 65,536
tokens) x 384 against a 50,304 x 384 projection, forward and backward. Rows:

* **naive**: what a training script writes, ``F.cross_entropy(linear(h).float(), y)`` under
  bf16 autocast (the full logits tensor in bf16 and float32, and their gradient);
* **chunked C**: :func:`reprflow.training.head_loss.linear_cross_entropy` with ``chunk_tokens=C``
  (bf16 matmuls, float32 softmax; never more than C rows of logits).

Each row: median ms of ``--repeats`` timed forward+backward passes after 2 warm-ups, peak memory
above the inputs, and the % of the bf16 roofline (3 matmuls of 2 x tokens x width x vocab FLOPs
each) and of the memory bound of writing and reading the bf16 logits once.

Usage (repository root)::

    PYTHONPATH=$PWD python benchmarks/head_loss.py            # CUDA: ~20 s
    PYTHONPATH=$PWD python benchmarks/head_loss.py --tokens 4096 --device cpu   # smoke test
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from kernels import H200_BF16_TFLOPS  # benchmarks/kernels.py: the bf16 matmul rate measured on the H200
from reprflow.training.head_loss import linear_cross_entropy

H200_HBM_TBS = 4.8


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def naive(h, w, y):
    with torch.autocast(device_type=h.device.type, dtype=torch.bfloat16, enabled=h.device.type == "cuda"):
        logits = F.linear(h, w)
    return F.cross_entropy(logits.float(), y)


def time_row(fn, h, w, y, repeats: int) -> tuple[float, float, float]:
    """(median ms of forward + backward, peak GiB above the inputs, loss)."""
    device = h.device
    times, loss = [], None
    for i in range(2 + repeats):
        h.grad = w.grad = None
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        loss = fn(h, w, y)
        loss.backward()
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if device.type == "cuda" else float("nan")
    return 1e3 * statistics.median(times), peak, float(loss.detach())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tokens", type=int, default=65536)
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--chunks", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    device = torch.device(args.device)
    g = torch.Generator(device="cpu").manual_seed(0)
    h = torch.randn(args.tokens, args.width, generator=g).to(device).requires_grad_()
    w = (torch.randn(args.vocab, args.width, generator=g) * args.width**-0.5).to(device).requires_grad_()
    y = torch.randint(0, args.vocab, (args.tokens,), generator=g).to(device)
    flops = 3 * 2 * args.tokens * args.width * args.vocab
    bytes_ = 2 * 2 * args.tokens * args.vocab  # bf16 logits written once and read once
    rows = [("naive (autocast logits, F.cross_entropy on float32)", lambda a, b, c: naive(a, b, c))]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows += [
        (f"chunked {c}", lambda a, b, t, c=c: linear_cross_entropy(a, b, t, compute_dtype=dtype, chunk_tokens=c))
        for c in args.chunks
    ]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(
        f"{name}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: head of {args.tokens} tokens x "
        f"{args.width} -> {args.vocab}, forward + backward, median of {args.repeats}\n"
    )
    print("| head | ms | % bf16 roofline | % logits memory bound | peak GiB | loss |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, fn in rows:
        ms, peak, loss = time_row(fn, h, w, y, args.repeats)
        roof = 100 * flops / (ms / 1e3) / (H200_BF16_TFLOPS * 1e12)
        mem = 100 * bytes_ / (ms / 1e3) / (H200_HBM_TBS * 1e12)
        print(f"| {label} | {ms:.1f} | {roof:.1f} | {mem:.1f} | {peak:.1f} | {loss:.4f} |", flush=True)


if __name__ == "__main__":
    main()
