"""benchmarks/cell.py's GPU-busy bookkeeping on a CPU: the sampler's two windows and the loop's end."""

import logging
import sys
import time

import pytest


@pytest.fixture()
def cell(benchmark_script):
    return benchmark_script("cell")


def test_busy_over_the_busy_span_and_over_a_given_window(cell):
    sampler = cell.GpuSampler()
    # idle before and after; the model build at 40%, then the loop at 100/90/100/100
    sampler.samples = [(0.0, 0.0), (0.1, 40.0), (0.2, 100.0), (0.3, 90.0), (0.4, 100.0), (0.5, 100.0), (0.6, 0.0)]
    busy, n = sampler.busy()
    assert n == 5 and busy == pytest.approx((40 + 100 + 90 + 100 + 100) / 500)
    busy_loop, n_loop = sampler.busy((0.15, 0.55))
    assert n_loop == 4 and busy_loop == pytest.approx(390 / 400)
    assert sampler.busy((1.0, 2.0)) == (None, 0)
    assert cell.GpuSampler().busy() == (None, 0)


def test_loop_end_is_the_time_extraction_logs_its_summary_and_the_logger_is_restored(cell):
    log = logging.getLogger("reprflow.extract")
    before = (log.level, list(log.handlers))
    with cell.LoopEnd().attached() as end:
        log.info("%s: where the time went (s): %s", "x.zarr", {})
        assert end.at is None
        t0 = time.perf_counter()
        log.info(
            "%s: %d prompts, %d tokens in %.2f s = %.0f tok/s (padding %.1f%%%s)", "x.zarr", 4, 40, 1.0, 40, 0.0, ""
        )
        t1 = time.perf_counter()
        log.info(
            "%s: %d prompts, %d tokens in %.2f s = %.0f tok/s (padding %.1f%%%s)", "y.zarr", 4, 40, 1.0, 40, 0.0, ""
        )
    assert t0 <= end.at <= t1  # the first summary line, not the second
    assert (log.level, list(log.handlers)) == before
    assert "cell" in sys.modules
