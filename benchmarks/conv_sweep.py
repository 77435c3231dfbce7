"""The Triton causal conv + SiLU at several program shapes, against cuDNN and the memory bound.

At the paper SSMs' shapes, bf16, batch 16 x 2048 tokens, the input a strided slice of the in_proj
output as the mixers pass it (Mamba-2.8B: 5,120 channels of a 10,240-wide row; Mamba2-2.7B: the
5,376 ``xBC`` channels of a 10,576-wide row), width 4, with bias: per row, ms per layer (median of
CUDA-event-timed calls) for ``F.conv1d`` with transposes (cuDNN; what transformers runs) and for
:func:`reprflow.kernels.causal_conv1d.causal_conv1d_silu_triton` at each ``(tokens, channels,
warps)`` per program, the ratio to the memory bound (read the input once, write the output once,
at the rate a device-to-device copy reaches on this GPU) and the relative error against the float64 reference on the first 256 tokens.

Usage (GPU, repository root)::

    PYTHONPATH=$PWD python benchmarks/conv_sweep.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernels import copy_bytes_per_s  # noqa: E402  (benchmarks/kernels.py)
from microbench import median_ms, rel_err  # noqa: E402

from reprflow.kernels.causal_conv1d import (  # noqa: E402
    CONV_BLOCKS,
    CONV_BLOCKS_TILE,
    causal_conv1d_silu_reference,
    causal_conv1d_silu_triton,
)

#: (name, channels, row width of the in_proj output)
SHAPES = (("mamba-2.8b", 5120, 10240), ("mamba2-2.7b", 5376, 10576))
#: (tokens, channels, warps) per program; the default first
BLOCKS = (
    CONV_BLOCKS,
    (64, 256, 2),
    (64, 1024, 4),
    (32, 1024, 4),
    (128, 1024, 4),
    (64, 512, 2),
    (64, 2048, 8),
    (16, 1024, 4),
    (32, 256, 2),  # 256 channels divide Mamba2-2.7B's 5,376 (21 blocks, no masked block)
    (32, 256, 1),
    (128, 256, 2),
    (64, 512, 4),
)
#: program shapes of the tiled kernel (``tiled=True``); the chooser's first
TILE_BLOCKS = (CONV_BLOCKS_TILE, (16, 256, 4), (32, 128, 2), (32, 256, 4), (32, 512, 4), (64, 256, 8), (16, 512, 4))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    print(
        f"{torch.cuda.get_device_name()} | torch {torch.__version__} | batch {args.batch} x {args.tokens}, bf16 | "
        f"memory bound at {copy_bytes_per_s('cuda') / 1e12:.2f} TB/s (a device-to-device copy's rate, measured here)\n"
    )
    print("| model | kernel | (tokens, channels, warps) | ms per layer | x memory bound | rel err vs float64 |")
    print("|---|---|---|---:|---:|---:|")
    g = torch.Generator(device="cuda").manual_seed(0)
    for name, channels, width in SHAPES:
        row = torch.randn(args.batch, args.tokens, width, device="cuda", generator=g).bfloat16()
        x = row[..., :channels]
        w = torch.randn(channels, 4, device="cuda", generator=g).bfloat16()
        b = torch.randn(channels, device="cuda", generator=g).bfloat16()
        mem_ms = 1e3 * 2 * x.numel() * x.element_size() / copy_bytes_per_s("cuda")
        want = causal_conv1d_silu_reference(x[:1, :256].double(), w.double(), b.double())
        rows = [("torch (cuDNN F.conv1d)", "-", lambda: causal_conv1d_silu_reference(x, w, b))]
        rows += [("triton", str(blk), lambda blk=blk: causal_conv1d_silu_triton(x, w, b, blocks=blk)) for blk in BLOCKS]
        rows += [
            ("triton tiled", str(blk), lambda blk=blk: causal_conv1d_silu_triton(x, w, b, blocks=blk, tiled=True))
            for blk in TILE_BLOCKS
        ]
        for kernel, blk, fn in rows:
            try:
                ms = median_ms(fn, args.repeats)
                err = rel_err(fn()[:1, :256], want)
            except Exception as exc:  # a program shape the compiler rejects is reported, not fatal
                print(f"| {name} | {kernel} | {blk} | failed: {type(exc).__name__} | | |", flush=True)
                continue
            print(f"| {name} | {kernel} | {blk} | {ms:.3f} | {ms / mem_ms:.2f} | {err:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
