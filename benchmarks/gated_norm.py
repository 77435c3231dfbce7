"""Mamba-2's gated RMSNorm at Mamba2-2.7B's size: transformers, ``mamba_ssm`` and reprflow, side by side.

``norm(y, gate=z)`` for y (16 x 2048 tokens, 5120 channels, bf16, contiguous) and z a strided
slice of ``in_proj``'s output (10576 wide), as in the mixer. Rows: transformers'
``MambaRMSNormGated`` (torch, about ten passes), ``mamba_ssm``'s Triton ``rmsnorm_fn``
(``norm_before_gate=False``; what reprflow ran before), reprflow's
:func:`~reprflow.kernels.gated_rms_norm.gated_rms_norm` (the whole row in one block, then in
blocks of 512, 1024 and 2048 channels: ``chunk=``; then held in registers, 1 to 4 rows per
program: ``rows=``). Per row: median ms (CUDA events), x
the memory bound (bytes read and written / the rate a copy reaches on this GPU), relative error against the same
arithmetic in float64, and the fraction of elements not equal to transformers' output.

Usage (GPU)::

    PYTHONPATH=$PWD python benchmarks/gated_norm.py [--batch 16 --tokens 2048]
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from reprflow.kernels.gated_rms_norm import gated_rms_norm, gated_rms_norm_reference
from reprflow.kernels.optional import load_mamba_ssm_triton

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from kernels import copy_bytes_per_s  # noqa: E402  (benchmarks/kernels.py: this GPU's copy bandwidth)
from microbench import median_ms, rel_err  # noqa: E402

CHANNELS, PROJ, EPS = 5120, 10576, 1e-5


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (args.batch, args.tokens)
    y = torch.randn(*shape, CHANNELS, device="cuda", generator=g).bfloat16()
    z = torch.randn(*shape, PROJ, device="cuda", generator=g).bfloat16()[..., :CHANNELS]
    w = (1 + 0.1 * torch.randn(CHANNELS, device="cuda", generator=g)).bfloat16()
    h = y.double() * F.silu(z.double())
    want = w.double() * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)
    hf = gated_rms_norm_reference(y, z, w, eps=EPS, group_size=CHANNELS)
    rows = [
        (
            "transformers MambaRMSNormGated (torch)",
            lambda: gated_rms_norm_reference(y, z, w, eps=EPS, group_size=CHANNELS),
        )
    ]
    if load_mamba_ssm_triton() is not None:
        from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn

        rows.append(
            (
                "mamba_ssm rmsnorm_fn (before)",
                lambda: rmsnorm_fn(y, w, None, z=z, eps=EPS, group_size=CHANNELS, norm_before_gate=False),
            )
        )
    rows.append(("reprflow gated_rms_norm", lambda: gated_rms_norm(y, z, w, eps=EPS, group_size=CHANNELS)))
    for chunk in (512, 1024, 2048):  # the row in blocks, read twice (the second time from the cache)
        rows.append(
            (
                f"reprflow gated_rms_norm, chunk={chunk}",
                lambda chunk=chunk: gated_rms_norm(y, z, w, eps=EPS, group_size=CHANNELS, chunk=chunk),
            )
        )
    for chunk, n_rows in ((1024, 1), (1024, 2), (512, 2), (512, 4), (1024, 4)):  # held in registers, read once
        rows.append(
            (
                f"reprflow gated_rms_norm, chunk={chunk}, rows={n_rows}",
                lambda chunk=chunk, n_rows=n_rows: gated_rms_norm(
                    y, z, w, eps=EPS, group_size=CHANNELS, chunk=chunk, rows=n_rows
                ),
            )
        )
    rate = copy_bytes_per_s("cuda")
    bound_ms = 3 * y.numel() * 2 / rate * 1e3  # y and z read, out written, bf16
    print(
        f"{torch.cuda.get_device_name()} | torch {torch.__version__} | {args.batch} x {args.tokens} x {CHANNELS} bf16"
    )
    print(f"memory bound {bound_ms:.3f} ms ({rate / 1e12:.2f} TB/s, a device-to-device copy's rate here)\n")
    print("| implementation | ms | x memory bound | rel. err vs float64 | elements != transformers |")
    print("|---|---:|---:|---:|---:|")
    for name, fn in rows:
        ms = median_ms(fn, args.repeats)
        out = fn()
        print(
            f"| {name} | {ms:.3f} | {ms / bound_ms:.2f} | {rel_err(out, want):.2e} | {(out != hf).float().mean().item():.1e} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
