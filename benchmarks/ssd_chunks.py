"""Mamba-2's SSD scan (``mamba_ssm``'s Triton ``mamba_chunk_scan_combined``) by chunk size.

The chunk size is a choice of the algorithm, not of the model: every chunk size computes the
same recurrence (the state is passed between chunks exactly), so a smaller chunk trades the
quadratic work inside a chunk for more states passed between chunks. For Mamba2-2.7B's shapes
(80 heads x 64, one group, 128 states; x, B, C strided views of the conv output as in the
mixer), bf16, one GPU, per chunk size: median ms per layer (CUDA events), the time of each
of its kernels (torch profiler), the autotuned configs, and the relative error against the
float64 recurrence (``reprflow.kernels.ssd.ssd_reference``) on the first 512 tokens of one
sequence.

Usage (GPU)::

    PYTHONPATH=$PWD python benchmarks/ssd_chunks.py [--shapes 16x2048 8x4096] [--chunks 64 128 256]
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from reprflow.kernels.autotune_by_size import ssd_autotuners
from reprflow.kernels.optional import load_mamba_ssm_triton
from reprflow.kernels.ssd import ssd_reference

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from microbench import median_ms, rel_err  # noqa: E402

HEADS, HEAD_DIM, GROUPS, STATES = 80, 64, 1, 128


def inputs(batch: int, n_tokens: int, seed: int = 0) -> dict:
    """The mixer's SSD arguments at Mamba2-2.7B's sizes (x, B, C views into one conv output)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    d_inner = HEADS * HEAD_DIM
    xbc = torch.randn(batch, n_tokens, d_inner + 2 * GROUPS * STATES, device="cuda", generator=g).bfloat16()
    dt = torch.randn(batch, n_tokens, HEADS, device="cuda", generator=g).bfloat16()
    a_log = torch.log(torch.empty(HEADS, device="cuda").uniform_(1, 16, generator=g))
    dt0 = torch.exp(torch.empty(HEADS, device="cuda").uniform_(math.log(1e-3), math.log(1e-1), generator=g))
    return dict(
        x=xbc[..., :d_inner].view(batch, n_tokens, HEADS, HEAD_DIM),
        dt=dt,
        A=-torch.exp(a_log),
        B=xbc[..., d_inner : d_inner + GROUPS * STATES].view(batch, n_tokens, GROUPS, STATES),
        C=xbc[..., d_inner + GROUPS * STATES :].view(batch, n_tokens, GROUPS, STATES),
        D=torch.ones(HEADS, device="cuda"),
        dt_bias=(dt0 + torch.log(-torch.expm1(-dt0))),  # inverse softplus
        dt_softplus=True,
        dt_limit=(0.0, float("inf")),
    )


def _sub(args: dict, n_tokens: int) -> dict:
    out = dict(args)
    for k in ("x", "dt", "B", "C"):
        out[k] = args[k][:1, :n_tokens]
    return out


def kernel_times(fn, repeats: int = 3) -> list[tuple[str, float]]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    events.sort(key=lambda e: -e.device_time_total)
    return [(e.key, e.device_time_total / 1e3 / repeats) for e in events[:8]]


def best_configs() -> dict[str, str]:
    """The configuration each forward SSD kernel's autotuner last chose, by kernel name."""
    return {
        t.base_fn.__name__: str(t.best_config)
        for t in ssd_autotuners()
        if t.base_fn.__name__.endswith("_fwd_kernel") and getattr(t, "best_config", None) is not None
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=["16x2048", "8x4096"])
    p.add_argument("--chunks", nargs="+", type=int, default=[64, 128, 256])
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    kernels = load_mamba_ssm_triton()
    if kernels is None:
        raise SystemExit("mamba_ssm's Triton kernels are not importable here")
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | mamba_ssm {kernels.version}")
    rows = []
    for shape in args.shapes:
        batch, n_tokens = (int(v) for v in shape.split("x"))
        a = inputs(batch, n_tokens)
        small = _sub(a, 512)
        want = ssd_reference(**{k: (v.double() if torch.is_tensor(v) else v) for k, v in small.items()}, chunk_size=0)
        for chunk in args.chunks:

            def run(a=a, chunk=chunk):
                return kernels.chunk_scan_combined(chunk_size=chunk, **a)

            ms = median_ms(run, args.repeats)
            err = rel_err(kernels.chunk_scan_combined(chunk_size=chunk, **small), want)
            parts = kernel_times(run)
            rows.append((shape, chunk, ms, err, parts, best_configs()))
            print(f"{shape} chunk {chunk}: {ms:.3f} ms, rel err {err:.2e}", flush=True)
    print("\n| batch x tokens | chunk | ms per layer | rel err vs float64 | kernels (ms) |")
    print("|---|---:|---:|---:|---|")
    for shape, chunk, ms, err, parts, _ in rows:
        ks = "; ".join(f"`{k.split('(')[0][:40]}` {v:.3f}" for k, v in parts)
        print(f"| {shape} | {chunk} | {ms:.3f} | {err:.2e} | {ks} |")
    print("\nautotuned configs (last shape, last chunk):")
    for k, v in rows[-1][5].items():
        print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
