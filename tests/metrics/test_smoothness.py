"""Tests for reprflow.metrics.smoothness_stability (Sm, Eq. 3; St, Eq. 4) against explicit loops / np.std."""

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


def _ref_state_rms(h: np.ndarray) -> float:
    """Independent float64 loop: mean over (state, token) of ||h||_2 / sqrt(d)."""
    k, n, d = h.shape
    return sum(np.sqrt(sum(h[l, t, j] ** 2 for j in range(d)) / d) for l in range(k) for t in range(n)) / (k * n)


def test_scale_free_variants_match_float64_reference(states):
    from reprflow.metrics import mean_state_rms, smoothness_scale_free, stability_scale_free

    s = _ref_state_rms(states)
    assert mean_state_rms(states) == pytest.approx(s, rel=1e-12)
    assert smoothness_scale_free(states) == pytest.approx(_ref_sm(states) / s, rel=1e-10)
    assert stability_scale_free(states) == pytest.approx(_ref_st(states) / s, rel=1e-10)


@pytest.mark.parametrize("c", [1e-3, 7.0, 1e4])
def test_scale_free_variants_ignore_a_global_scale(states, c):
    from reprflow.metrics import smoothness_scale_free, stability_scale_free

    # the absolute metrics scale with c, the variants do not
    assert smoothness(c * states) == pytest.approx(c * smoothness(states), rel=1e-10)
    assert smoothness_scale_free(c * states) == pytest.approx(smoothness_scale_free(states), rel=1e-10)
    assert stability_scale_free(c * states) == pytest.approx(stability_scale_free(states), rel=1e-10)


@pytest.mark.parametrize("chunk", [1, 4, 9])
def test_accumulator_scale_free_equals_whole_prompt(states, chunk):
    from reprflow.metrics import mean_state_rms, smoothness_scale_free, stability_scale_free

    acc = SmoothnessStabilityAccumulator()
    for start in range(0, 9, chunk):
        acc.update(states[:, start : start + chunk])
    assert acc.mean_state_rms() == pytest.approx(mean_state_rms(states), rel=1e-12)
    assert acc.smoothness_scale_free() == pytest.approx(smoothness_scale_free(states), rel=1e-12)
    assert acc.stability_scale_free() == pytest.approx(stability_scale_free(states), rel=1e-12)


def test_scale_free_of_all_zero_states_raises():
    from reprflow.metrics import stability_scale_free

    with pytest.raises(ValueError, match="every state is zero"):
        stability_scale_free(np.zeros((4, 3, 2)))
