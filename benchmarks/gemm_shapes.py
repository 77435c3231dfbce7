"""The paper models' own matmuls against the roofline's: the ceiling of "% of roofline".

Every "% of the bf16 roofline" in BENCHMARKS.md divides 2 x parameters FLOPs per token by a bf16
matmul rate measured on the GPU (``kernels.measure_peak_tflops``). Until 2026-12-05 that was the rate
of one square 8192^3 product; on an H100 the SSMs' own out_proj shape then ran 10% faster than it, so
the roofline is now the best of ``kernels.ROOFLINE_SHAPES`` (the square and those projections). A
forward's projections have other shapes (65,536 x 2,560 x 10,240 for a Mamba in_proj at 64K tokens
per pass, 5,120 -> 192 for Mamba-1's x_proj, ...), and cuBLAS runs them at their own rates. This
prints the square rate and the roofline, then times each projection of each paper model (bf16
``F.linear``, the tokens per pass of the paper config: ``execution.extraction.batch_tokens``) and
prints, per model, the time of all its matmuls per layer and what that time alone is as a percentage
of the roofline: the most a forward could reach on this GPU if everything else (scan, SSD, conv,
norms, attention) took no time. With ``--layouts`` it also times every projection with its weight
stored column-major and through cuBLASLt, side by side (none of them faster on an H100, 2026-12-06:
docs/kernels.md).

Usage (repository root)::

    PYTHONPATH=$PWD python benchmarks/gemm_shapes.py            # GPU: ~20 s
    PYTHONPATH=$PWD python benchmarks/gemm_shapes.py --layouts  # GPU: ~1 min
    PYTHONPATH=$PWD python benchmarks/gemm_shapes.py --quick    # CPU, toy sizes, seconds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernels import alternating_order, gemm_tflops, measure_peak_tflops  # noqa: E402  benchmarks/kernels.py
from microbench import median_ms  # noqa: E402

#: per model: tokens per pass (the paper config) and its projections per layer, (in, out) features
MODELS: dict[str, tuple[int, list[tuple[str, int, int]]]] = {
    "mamba-2.8b": (
        65536,
        [("in_proj", 2560, 10240), ("x_proj", 5120, 192), ("dt_proj", 160, 5120), ("out_proj", 5120, 2560)],
    ),
    "mamba2-2.7b": (65536, [("in_proj", 2560, 10576), ("out_proj", 5120, 2560)]),
    "pythia-2.8b": (
        32768,
        [
            ("query_key_value", 2560, 7680),
            ("dense", 2560, 2560),
            ("dense_h_to_4h", 2560, 10240),
            ("dense_4h_to_h", 10240, 2560),
        ],
    ),
    "gpt-neo-2.7b": (
        32768,
        [("q_proj", 2560, 2560), ("k_proj", 2560, 2560), ("v_proj", 2560, 2560), ("out_proj", 2560, 2560)]
        + [("c_fc", 2560, 10240), ("c_proj", 10240, 2560)],
    ),
}


def scaled_shape(tokens: int, d_in: int, d_out: int, scale: int) -> tuple[int, int, int]:
    """(tokens, in, out) of a projection with every size divided by ``scale`` (the --quick toy run)."""
    return tokens // scale, max(1, d_in // scale), max(1, d_out // scale)


def time_model(tokens: int, projections: list[tuple[str, int, int]], *, device: str, dtype, scale: int, repeats: int):
    """Per projection: (name, ms, FLOPs); ``scale`` divides every size (the --quick toy run)."""
    rows = []
    for name, d_in, d_out in projections:
        n, k, m = scaled_shape(tokens, d_in, d_out, scale)
        x = torch.randn(n, k, device=device, dtype=dtype)
        w = torch.randn(m, k, device=device, dtype=dtype)
        rows.append((name, median_ms(lambda x=x, w=w: F.linear(x, w), repeats, device), 2 * n * k * m))
    return rows


def mamba_skinny_variants(tokens: int, *, device: str, dtype, scale: int, repeats: int):
    """Mamba-1's two skinny projections as the mixer runs them, and other ways to get the same values.

    x_proj (5,120 -> 192) and dt_proj (160 -> 5,120, fed the first 160 columns of x_proj's output, a
    strided view) run at about half the roofline rate. Per variant: (name, ms per layer, FLOPs).
    """
    n, d, r, m = tokens // scale, 5120 // scale, 160 // scale, 192 // scale
    u = torch.randn(n, d, device=device, dtype=dtype)
    wx = torch.randn(m, d, device=device, dtype=dtype)
    wdt = torch.randn(d, r, device=device, dtype=dtype)
    x_dbl = F.linear(u, wx)
    dt_raw = x_dbl[:, :r]
    out = torch.empty(n, d, device=device, dtype=dtype)
    fx, fdt = 2 * n * d * m, 2 * n * r * d
    variants = [
        ("x_proj: F.linear(u, W) (the mixer)", lambda: F.linear(u, wx), fx),
        ("x_proj: (W @ u^T)^T", lambda: torch.mm(wx, u.t()).t(), fx),
        ("dt_proj: F.linear on the strided view (the mixer)", lambda: F.linear(dt_raw, wdt), fdt),
        ("dt_proj: copy to contiguous, then F.linear", lambda: F.linear(dt_raw.contiguous(), wdt), fdt),
        ("dt_proj: torch.mm into a preallocated output", lambda: torch.mm(dt_raw, wdt.t(), out=out), fdt),
    ]
    return [(name, median_ms(fn, repeats, device), flops) for name, fn, flops in variants]


#: (cuBLAS library, weight storage) pairs of ``--layouts``; the first is what every forward runs
LAYOUTS = (("cublas", "row"), ("cublas", "column"), ("cublaslt", "row"), ("cublaslt", "column"))


def layout_variants(tokens: int, d_in: int, d_out: int, *, device: str, dtype, scale: int, repeats: int, rounds: int):
    """One projection's ``F.linear`` with its weight stored row-major (as loaded) or column-major
    (``w.t().contiguous().t()``: the same values, so cuBLAS gets the other transpose flag) and
    through cuBLAS or cuBLASLt (``torch.backends.cuda.preferred_blas_library``; on the CPU only the
    layouts). The variants alternate over ``rounds`` rounds (in reverse every other round), so a
    clock that drifts under the GPU's power cap is shared among them. Returns (library, layout,
    median ms over the rounds' medians, FLOPs, largest absolute difference from the first
    variant's output); the library preference is restored to cuBLAS afterwards."""
    n, k, m = scaled_shape(tokens, d_in, d_out, scale)
    x = torch.randn(n, k, device=device, dtype=dtype)
    w = torch.randn(m, k, device=device, dtype=dtype) / k**0.5
    weights = {"row": w, "column": w.t().contiguous().t()}
    variants = [v for v in LAYOUTS if device == "cuda" or v[0] == "cublas"]
    times: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    diffs: dict[tuple[str, str], float] = {}
    reference = F.linear(x, w).float()
    try:
        for r, (lib, layout) in alternating_order(variants, rounds):
            if device == "cuda":
                torch.backends.cuda.preferred_blas_library(lib)
            ww = weights[layout]
            times[(lib, layout)].append(median_ms(lambda ww=ww: F.linear(x, ww), repeats, device))
            if r == 0:
                diffs[(lib, layout)] = (F.linear(x, ww).float() - reference).abs().max().item()
    finally:
        if device == "cuda":
            torch.backends.cuda.preferred_blas_library("cublas")
    flops = 2 * n * k * m
    return [(lib, layout, sorted(ts)[len(ts) // 2], flops, diffs[(lib, layout)]) for (lib, layout), ts in times.items()]


def tflops(flops: float, ms: float) -> float:
    return flops / (ms * 1e-3) / 1e12


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU, float32, every size divided by 16")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument(
        "--layouts",
        action="store_true",
        help="also every projection with its weight column-major and through cuBLASLt (5 alternating rounds)",
    )
    args = p.parse_args(argv)
    device = "cpu" if args.quick or not torch.cuda.is_available() else "cuda"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    scale = 16 if args.quick else 1
    peak = measure_peak_tflops(device, args.quick)
    side = 8192 // scale
    square = gemm_tflops(device, side, side, side)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(
        f"{name} | torch {torch.__version__} | square {side}^3 matmul: {square:.3g} TFLOP/s | "
        f"roofline ({'best of kernels.ROOFLINE_SHAPES' if device == 'cuda' else 'one 256^3 product'}): {peak:.3g} TFLOP/s\n"
    )
    print("| model | tokens per pass | projection | ms per layer | TFLOP/s | of the roofline |")
    print("|---|---:|---|---:|---:|---:|")
    totals = []
    for model, (tokens, projections) in MODELS.items():
        rows = time_model(tokens, projections, device=device, dtype=dtype, scale=scale, repeats=args.repeats)
        for proj, ms, flops in rows:
            rate = tflops(flops, ms)
            print(f"| {model} | {tokens // scale:,} | {proj} | {ms:.3f} | {rate:.3g} | {rate / peak:.0%} |")
        ms = sum(r[1] for r in rows)
        totals.append((model, ms, tflops(sum(r[2] for r in rows), ms)))
    print(
        "\n| model | matmuls per layer, ms | their rate, TFLOP/s | a forward of only these matmuls, % of the roofline |"
    )
    print("|---|---:|---:|---:|")
    for model, ms, rate in totals:
        print(f"| {model} | {ms:.3f} | {rate:.3g} | {rate / peak:.0%} |")
    tokens = MODELS["mamba-2.8b"][0]
    print(f"\nMamba-2.8B's skinny projections at {tokens // scale:,} tokens, other formulations of the same values\n")
    print("| variant | ms per layer | TFLOP/s | of the roofline |")
    print("|---|---:|---:|---:|")
    for variant, ms, flops in mamba_skinny_variants(
        tokens, device=device, dtype=dtype, scale=scale, repeats=args.repeats
    ):
        rate = tflops(flops, ms)
        print(f"| {variant} | {ms:.3f} | {rate:.3g} | {rate / peak:.0%} |")
    if args.layouts:
        print("\nEvery projection by library and weight storage (the first row of each is the forward's)\n")
        print("| model | projection | library | weight | ms per layer | TFLOP/s | of the roofline | max abs. diff |")
        print("|---|---|---|---|---:|---:|---:|---:|")
        for model, (tokens, projections) in MODELS.items():
            for proj, d_in, d_out in projections:
                for lib, layout, ms, flops, diff in layout_variants(
                    tokens, d_in, d_out, device=device, dtype=dtype, scale=scale, repeats=args.repeats, rounds=5
                ):
                    rate = tflops(flops, ms)
                    print(
                        f"| {model} | {proj} | {lib} | {layout} | {ms:.3f} | {rate:.3g} | {rate / peak:.0%} | {diff:.2g} |"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
