"""Measured special-function (``ex2``) and FMA rates of this GPU: the hardware limits of the scan.

The Mamba-1 scan needs one ``exp`` per token, channel and state, so its floor is the rate of
the GPU's special-function units. ``benchmarks/kernels.py`` assumes it from the data sheet
(H200: 132 SMs x 16 ``MUFU.EX2`` per clock x 1.98 GHz = 4.18 T/s); this measures it, and the
float32 FMA rate beside it (128 per clock per SM on Hopper, so the FMA rate also gives the
clock the GPU actually ran at while busy).

Each Triton program runs ``n_iter`` iterations over 8 independent chains per element
(``x = exp2(-0.5 x)``, resp. ``x = x * a + b``) of a ``(BLOCK,)`` float32 tensor in
registers; enough programs to fill every SM many times. Rate = operations / kernel time
(median of 5, CUDA events).

Usage (repository root, a CUDA GPU)::

    PYTHONPATH=$PWD python benchmarks/sfu_rate.py
"""

from __future__ import annotations

import statistics
import sys

import torch
import triton
import triton.language as tl

CHAINS = 8


@triton.jit
def _rate_kernel(out_ptr, n_iter, BLOCK: tl.constexpr, EXP: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x0 = offs.to(tl.float32) * 1e-9
    x1, x2, x3, x4, x5, x6, x7 = x0 + 0.1, x0 + 0.2, x0 + 0.3, x0 + 0.4, x0 + 0.5, x0 + 0.6, x0 + 0.7
    for _ in range(n_iter):
        if EXP:  # 8 ex2 (and 8 multiplies, one issue slot each) per iteration
            x0 = tl.exp2(x0 * -0.5)
            x1 = tl.exp2(x1 * -0.5)
            x2 = tl.exp2(x2 * -0.5)
            x3 = tl.exp2(x3 * -0.5)
            x4 = tl.exp2(x4 * -0.5)
            x5 = tl.exp2(x5 * -0.5)
            x6 = tl.exp2(x6 * -0.5)
            x7 = tl.exp2(x7 * -0.5)
        else:  # 8 FMA per iteration
            x0 = x0 * 0.999 + 0.001
            x1 = x1 * 0.999 + 0.001
            x2 = x2 * 0.999 + 0.001
            x3 = x3 * 0.999 + 0.001
            x4 = x4 * 0.999 + 0.001
            x5 = x5 * 0.999 + 0.001
            x6 = x6 * 0.999 + 0.001
            x7 = x7 * 0.999 + 0.001
    tl.store(out_ptr + offs, x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7)


def measure_rate(exp: bool, n_iter: int = 2048, block: int = 1024, waves: int = 16) -> float:
    """Operations per second: ``exp2`` (``exp=True``) or float32 FMA, on the current CUDA device."""
    n_sm = torch.cuda.get_device_properties(0).multi_processor_count
    grid = n_sm * waves
    out = torch.empty(grid * block, device="cuda")
    _rate_kernel[(grid,)](out, n_iter, BLOCK=block, EXP=exp, num_warps=8)  # compile
    times = []
    for _ in range(5):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        _rate_kernel[(grid,)](out, n_iter, BLOCK=block, EXP=exp, num_warps=8)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return grid * block * n_iter * CHAINS / statistics.median(times)


def measure_exp_rate() -> float:
    """``exp2`` per second on the current CUDA device."""
    return measure_rate(exp=True)


def main() -> int:
    n_sm = torch.cuda.get_device_properties(0).multi_processor_count
    ex2, fma = measure_exp_rate(), measure_rate(exp=False)
    clock = fma / (n_sm * 128)
    print(f"{torch.cuda.get_device_name()}, {n_sm} SMs, torch {torch.__version__}, Triton {triton.__version__}\n")
    print("| operation | measured per s | per clock per SM at the FMA-implied clock |")
    print("|---|---:|---:|")
    print(f"| float32 FMA | {fma / 1e12:.2f} T | 128 (defines the clock: {clock / 1e9:.2f} GHz) |")
    print(f"| ex2 (MUFU) | {ex2 / 1e12:.2f} T | {ex2 / (n_sm * clock):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
