"""Mamba-1's conv + SiLU and x_proj: two kernels (today's mixer) against one fused Gluon kernel.

At Mamba-2.8B's shapes (5,120 channels, a strided slice of the 10,240-wide in_proj output, width 4
with bias, x_proj 192 x 5,120, no bias), bf16, at the paper config's 64K tokens per pass (32 x 2048
and 16 x 4096; ``--shapes``), one row per way of computing ``u = silu(conv(x))`` and ``x_dbl = u
W^T``: ms per layer (median of ``--repeats`` CUDA-synchronised calls), the ratio to the memory bound
(read x once, write u and x_dbl once, at the rate a device-to-device copy reaches here), and the
errors on the first 256 tokens of batch row 0: ``u`` against the conv kernel's (0 = equal bit for
bit) and ``x_dbl`` against float64 (:func:`conv_xproj_reference`) and against ``F.linear`` of the
same ``u``:

* ``conv (tiled) + F.linear`` and ``conv (streamed) + F.linear``: what the mixer runs today;
* ``fused (tokens per segment, segments, channels per block, stages)``:
  :func:`reprflow.kernels.conv_xproj.conv_xproj_gluon` at each program shape of ``BLOCKS``.

The last rows check the fused kernel at 300 tokens (not a multiple of a program's tokens).

Usage (GPU, repository root)::

    PYTHONPATH=$PWD python benchmarks/conv_xproj.py [--shapes 2048x32 4096x16] [--repeats 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_tokens import parse_shape  # noqa: E402
from kernels import copy_bytes_per_s  # noqa: E402  (benchmarks/kernels.py)
from microbench import median_ms, rel_err  # noqa: E402

from reprflow.kernels.causal_conv1d import causal_conv1d_silu_triton  # noqa: E402
from reprflow.kernels.conv_xproj import CONV_XPROJ_BLOCKS, conv_xproj_gluon, conv_xproj_reference  # noqa: E402

CHANNELS, N_OUT, WIDTH = 5120, 192, 4
#: (tokens per segment, segments = warps, channels per block, stages) of the fused kernel; the default first
BLOCKS = (
    CONV_XPROJ_BLOCKS,
    (16, 8, 32, 2),
    (16, 8, 32, 4),
    (8, 8, 32, 3),
    (32, 4, 32, 3),
    (16, 4, 32, 3),
    (16, 8, 64, 2),
)


def inputs(batch: int, n_tokens: int, device: str, seed: int = 0) -> dict:
    g = torch.Generator(device).manual_seed(seed)
    xz = torch.randn(batch, n_tokens, 2 * CHANNELS, device=device, generator=g).to(torch.bfloat16)
    return {
        "x": xz[..., :CHANNELS],
        "conv_weight": (0.5 * torch.randn(CHANNELS, WIDTH, device=device, generator=g)).to(torch.bfloat16),
        "conv_bias": (0.1 * torch.randn(CHANNELS, device=device, generator=g)).to(torch.bfloat16),
        "proj_weight": (torch.randn(N_OUT, CHANNELS, device=device, generator=g) / CHANNELS**0.5).to(torch.bfloat16),
    }


def ways() -> list[tuple[str, object]]:
    """(label, fn(x, conv_weight, conv_bias, proj_weight) -> (u, x_dbl)) for every row."""

    def separate(tiled):
        def run(x, conv_weight, conv_bias, proj_weight):
            u = causal_conv1d_silu_triton(x, conv_weight, conv_bias, tiled=tiled)
            return u, F.linear(u, proj_weight)

        return run

    rows = [("conv (tiled) + F.linear", separate(True)), ("conv (streamed) + F.linear", separate(False))]
    rows += [(f"fused {b}", lambda *a, b=b: conv_xproj_gluon(*a, blocks=b)) for b in BLOCKS]
    return rows


def sweep(args) -> str:
    t0 = time.perf_counter()
    rate = copy_bytes_per_s("cuda")
    lines = [
        f"Mamba-1 conv + x_proj, {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {CHANNELS} channels, x_proj {N_OUT} x {CHANNELS}, bf16; memory bound = "
        f"(x read + u and x_dbl written) / {rate / 1e12:.2f} TB/s (a copy's rate here)",
        "",
        "| way | tokens x prompts | ms per layer | x memory bound | u vs conv kernel | x_dbl vs float64 | x_dbl vs F.linear(u) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for i, (n_tokens, batch) in enumerate([*args.shapes, (300, 3)]):
        x = inputs(batch, n_tokens, "cuda", seed=i)
        bound_ms = 1e3 * 2 * batch * n_tokens * (2 * CHANNELS + N_OUT) / rate
        head = x if n_tokens <= 300 else {k: (v[:1, :256] if k == "x" else v) for k, v in x.items()}
        want_u, want = conv_xproj_reference(*(v.double() for v in head.values()))
        conv_u = causal_conv1d_silu_triton(head["x"], head["conv_weight"], head["conv_bias"], tiled=True)
        for label, fn in ways():
            if n_tokens == 300 and not label.startswith("fused"):
                continue
            try:
                ms = median_ms(lambda fn=fn, x=x: fn(*x.values()), args.repeats)
                u, dbl = fn(*head.values())
                cells = (
                    f"{ms:.3f} | {ms / bound_ms:.2f} | {rel_err(u, conv_u):.1e} | {rel_err(dbl, want):.1e} | "
                    f"{rel_err(dbl, F.linear(u, head['proj_weight'])):.1e}"
                )
            except Exception as exc:  # a program shape the compiler or the GPU rejects
                cells = f"failed: {type(exc).__name__}: {str(exc)[:100]} | | | |"
            lines.append(f"| {label} | {n_tokens} x {batch} | {cells} |")
            print(lines[-1], flush=True)
        del x
    lines += ["", f"Sweep time {time.perf_counter() - t0:.0f} s."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", type=parse_shape, default=[(2048, 32), (4096, 16)], metavar="TOKENSxBATCH")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", type=Path, default=None, help="also write conv_xproj.md here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU (the kernels are Triton's)")
    text = sweep(args)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "conv_xproj.md").write_text(text + "\n")
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
