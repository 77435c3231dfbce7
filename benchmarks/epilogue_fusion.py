"""Is it worth fusing an elementwise op into the GEMM before it? Time and accuracy, side by side.

For the paper models' shapes at (batch x tokens) rows, bf16, one H200:

* ``gelu_fc``: GPT-Neo's ``c_fc`` + ``gelu_new`` (tanh GELU) as two kernels (what runs
  today: ``F.linear`` then ``F.gelu(approximate="tanh")``) against one cuBLASLt GEMM with
  the bias + GELU epilogue (``torch._addmm_activation(..., use_gelu=True)``, tanh GELU).
* ``residual_out``: Mamba's ``out_proj`` (no bias) + the float32 residual as two kernels
  (``res + F.linear(y, W)``: the GEMM's output rounded to bf16, then a float32 add) against
  one GEMM whose epilogue adds the float32 residual (``torch.addmm(res, y, W.T,
  out_dtype=torch.float32)``; the product is not rounded to bf16 first).

* ``gelu_erf_fc``: Pythia's ``dense_h_to_4h`` + exact (erf) GELU as two kernels (``F.linear`` then
  ``F.gelu``: cuBLASLt has no erf-GELU epilogue) against reprflow's Triton GEMM with that
  epilogue (``benchmarks/gemm_epilogue_triton.py``; tried and not adopted: docs/kernels.md), one
  row per launch configuration.
* ``residual_out`` also gets the Triton GEMM's ``add_f32`` epilogue, which writes a new float32
  tensor (``torch.addmm`` first copies the float32 residual into its output).

Each row: median ms of ``--repeats`` calls (CUDA events), GB/s-free % of the bf16 matmul
rate measured at the start, and the relative error ``||got - want|| / ||want||`` against
the same computation in float64 from the same bf16 inputs.

Usage (GPU)::

    PYTHONPATH=$PWD python benchmarks/epilogue_fusion.py [--rows 32768]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from kernels import measure_peak_tflops  # noqa: E402
from microbench import median_ms, rel_err  # noqa: E402


def _measure(fusion, shape, cands, flops, repeats, rate, want) -> list[tuple]:
    """One row per ``(name, fn)`` candidate: median ms, % of ``rate``, error against ``want``
    (none for the floor, a different computation)."""
    out = []
    for name, fn in cands:
        ms = median_ms(fn, repeats)
        err = rel_err(fn(), want) if "floor" not in name else float("nan")
        out.append((fusion, shape, name, ms, flops / (ms * 1e-3) / 1e12 / rate, err))
    return out


#: launch configurations of the Triton GEMM tried per epilogue
#: (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_stages, num_warps, subtile)
TRITON_CONFIGS = {
    "gelu_erf": [
        (128, 256, 64, 8, 3, 8, True),
        (128, 256, 64, 8, 4, 8, True),
        (128, 128, 64, 8, 4, 8, True),
        (128, 128, 64, 8, 5, 8, True),
        (256, 128, 64, 8, 3, 8, True),
    ],
    "add_f32": [
        (128, 128, 64, 8, 3, 8, True),
        (128, 128, 64, 8, 4, 8, True),
        (128, 128, 64, 8, 5, 8, True),
        (128, 256, 64, 8, 2, 8, True),
        (128, 128, 64, 4, 4, 8, False),
    ],
}


def _triton_cands(epilogue: str, **kw) -> list[tuple]:
    """The Triton GEMM (``gemm_epilogue_triton.py``) per launch configuration that runs here."""
    from gemm_epilogue_triton import gemm_epilogue, gemm_epilogue_available

    if not gemm_epilogue_available("cuda"):
        return []
    cands = []
    for cfg in TRITON_CONFIGS[epilogue]:
        fn = lambda cfg=cfg: gemm_epilogue(epilogue=epilogue, config=cfg, **kw)  # noqa: E731
        try:
            fn()  # compiles; fails e.g. out of shared memory on a smaller GPU
        except Exception as exc:
            print(f"triton {epilogue} {cfg}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            continue
        cands.append((f"reprflow triton gemm_epilogue {epilogue} {cfg}", fn))
    return cands


def gelu_rows(rows: int, d: int, repeats: int, rate: float, approximate: str) -> list[tuple]:
    """An MLP's first GEMM + GELU: ``approximate="tanh"`` is GPT-Neo's (cuBLASLt has it as an
    epilogue), ``"none"`` Pythia's exact erf GELU (reprflow's Triton GEMM has it)."""
    g = torch.Generator(device="cuda").manual_seed(0 if approximate == "tanh" else 2)
    x = torch.randn(rows, d, device="cuda", dtype=torch.bfloat16, generator=g)
    w = (torch.randn(4 * d, d, device="cuda", generator=g) / d**0.5).to(torch.bfloat16)
    b = (0.1 * torch.randn(4 * d, device="cuda", generator=g)).to(torch.bfloat16)
    want = F.gelu(torch.addmm(b.double(), x.double(), w.double().T), approximate=approximate)
    floor = ("linear alone (no GELU: the floor)", lambda: F.linear(x, w, b))
    if approximate == "tanh":
        fusion = "gelu_fc"
        cands = [
            ("linear, then gelu(tanh) (today)", lambda: F.gelu(F.linear(x, w, b), approximate="tanh")),
            (
                "_addmm_activation(use_gelu) (cuBLASLt GELU_BIAS)",
                lambda: torch._addmm_activation(b, x, w.T, use_gelu=True),
            ),
            floor,
        ]
    else:
        fusion = "gelu_erf_fc"
        cands = [("linear, then gelu (erf; today)", lambda: F.gelu(F.linear(x, w, b))), floor]
        cands += _triton_cands("gelu_erf", x=x, weight=w, bias=b)
    return _measure(fusion, f"{rows}x{d}->{4 * d}", cands, 2 * rows * d * 4 * d, repeats, rate, want)


def residual_rows(rows: int, d_inner: int, d: int, repeats: int, rate: float) -> list[tuple]:
    g = torch.Generator(device="cuda").manual_seed(1)
    y = torch.randn(rows, d_inner, device="cuda", dtype=torch.bfloat16, generator=g)
    w = (torch.randn(d, d_inner, device="cuda", generator=g) / d_inner**0.5).to(torch.bfloat16)
    res = torch.randn(rows, d, device="cuda", generator=g)
    want = res.double() + y.double() @ w.double().T
    cands = [
        ("res + linear (today: product rounded to bf16)", lambda: res + F.linear(y, w)),
        ("linear alone (the floor)", lambda: F.linear(y, w)),
    ]
    try:
        torch.addmm(res[:8], y[:8], w.T, out_dtype=torch.float32)
        cands.insert(
            1, ("addmm(res, y, W.T, out_dtype=float32)", lambda: torch.addmm(res, y, w.T, out_dtype=torch.float32))
        )
    except (RuntimeError, TypeError) as exc:
        print(f"addmm out_dtype=float32 with a float32 C is not available: {exc}".splitlines()[0])
    cands += _triton_cands("add_f32", x=y, weight=w, residual=res)
    shape = f"{rows}x{d_inner}->{d}"
    return _measure("residual_out", shape, cands, 2 * rows * d_inner * d, repeats, rate, want)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=32768, help="batch x tokens (default 16 x 2048)")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("epilogue_fusion: needs a CUDA GPU", file=sys.stderr)
        return 2
    rate = measure_peak_tflops("cuda", quick=False)
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"bf16 matmul rate (best of kernels.ROOFLINE_SHAPES): {rate:.0f} TFLOP/s\n")
    rows = (
        gelu_rows(args.rows, 2560, args.repeats, rate, "tanh")
        + gelu_rows(args.rows, 2560, args.repeats, rate, "none")
        + residual_rows(args.rows, 5120, 2560, args.repeats, rate)
    )
    print("| fusion | shape | variant | ms | % of matmul rate | rel. err vs float64 |")
    print("|---|---|---|---:|---:|---:|")
    for fusion, shape, name, ms, frac, err in rows:
        print(f"| {fusion} | {shape} | {name} | {ms:.3f} | {100 * frac:.1f} | {err:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
