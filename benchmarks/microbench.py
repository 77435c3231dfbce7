"""Shared by the kernel micro-benchmarks (``epilogue_fusion.py``, ``attention_backends.py``,
``pythia_passes.py``, ``ssd_chunks.py``): CUDA-event timing and the relative error against a
float64 reference."""

from __future__ import annotations

from typing import Callable

import time

import torch


def median_ms(fn: Callable[[], object], repeats: int, device: str = "cuda") -> float:
    """Median milliseconds of ``repeats`` calls of ``fn`` on the current CUDA stream (on the
    wall clock with ``device="cpu"``, for the toy runs that test a benchmark without a GPU).

    One untimed warm-up call first (it also compiles Triton kernels and runs autotuners);
    each timed call is bracketed by its own pair of CUDA events and synchronised.
    """
    fn()
    if device == "cpu":
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
        return sorted(times)[len(times) // 2]
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """``||got - want|| / ||want||``, computed in float64 (``want`` is the float64 reference)."""
    return float((got.double() - want.double()).norm() / want.double().norm())
