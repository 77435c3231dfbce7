"""Median GPU time of a callable, by CUDA events (shared by the kernel micro-benchmarks)."""

from __future__ import annotations

from typing import Callable

import torch


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn`` on the current CUDA stream.

    One untimed warm-up call first (it also compiles Triton kernels and runs autotuners);
    each timed call is bracketed by its own pair of CUDA events and synchronised.
    """
    fn()
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
