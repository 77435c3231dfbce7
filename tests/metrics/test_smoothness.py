"""Tests for reprflow.metrics.smoothness (Sm, Eq. 3; St, Eq. 4) against explicit loops / np.std."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprflow.metrics import SmoothnessStabilityAccumulator, smoothness, stability


@pytest.fixture
def states() -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.cumsum(rng.normal(size=(6, 9, 4)), axis=0)  # a random walk over states


def _ref_sm(h: np.ndarray) -> float:
    """K - 2 second differences per (token, dim), averaged, then averaged over cells."""
    k, n, d = h.shape
    total = 0.0
    for t in range(n):
        for j in range(d):
            cell = sum(abs(h[l + 1, t, j] - (h[l, t, j] + h[l + 2, t, j]) / 2) for l in range(k - 2))
            total += cell / (k - 2)
    return total / (n * d)


def _ref_st(h: np.ndarray) -> float:
    return float(np.std(h, axis=0, ddof=0).mean())


def test_smoothness_matches_loop(states):
    got = smoothness(states)
    assert isinstance(got, float)
    assert abs(got - _ref_sm(states)) / _ref_sm(states) < 1e-10


def test_stability_is_mean_population_std(states):
    got = stability(states)
    assert isinstance(got, float)
    assert abs(got - _ref_st(states)) / _ref_st(states) < 1e-10


def test_float32_input_within_1e4(states):
    h32 = torch.from_numpy(states.astype(np.float32))
    assert abs(smoothness(h32) - _ref_sm(states)) / _ref_sm(states) < 1e-4
    assert abs(stability(h32) - _ref_st(states)) / _ref_st(states) < 1e-4


def test_linear_flow_is_perfectly_smooth():
    base, step = np.ones((1, 3, 2)), np.arange(6.0).reshape(1, 3, 2)
    h = base + np.arange(5.0)[:, None, None] * step  # h^l = a + l b: zero second difference
    assert smoothness(h) == 0.0
    # population std of 0..4 is sqrt(2); St = sqrt(2) * mean |b|
    assert stability(h) == pytest.approx(np.sqrt(2.0) * np.abs(step).mean(), rel=1e-14)


@pytest.mark.parametrize("chunk", [1, 4, 9])
def test_accumulator_equals_whole_prompt(states, chunk):
    acc = SmoothnessStabilityAccumulator()
    for start in range(0, 9, chunk):
        acc.update(states[:, start : start + chunk])
    assert acc.smoothness() == pytest.approx(smoothness(states), rel=1e-12)
    assert acc.stability() == pytest.approx(stability(states), rel=1e-12)


def test_too_few_states_raise(states):
    with pytest.raises(ValueError, match="n_states >= 3"):
        smoothness(states[:2])
    with pytest.raises(ValueError, match="n_states >= 2"):
        stability(states[:1])
    acc = SmoothnessStabilityAccumulator().update(states[:2])
    assert acc.stability() == pytest.approx(stability(states[:2]), rel=1e-12)
    with pytest.raises(ValueError, match="n_states >= 3"):
        acc.smoothness()
    with pytest.raises(ValueError, match="no chunk"):
        SmoothnessStabilityAccumulator().stability()
