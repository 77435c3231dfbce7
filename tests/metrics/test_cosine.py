"""Tests for reprflow.metrics.cosine against plain float64 loops written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprflow.metrics import (
    InterTokenCosineAccumulator,
    LayerwiseCosineAccumulator,
    binned_layerwise_cosine,
    inter_token_cosine,
    layerwise_cosine,
)


@pytest.fixture
def states() -> np.ndarray:
    """(n_states=5, n_tokens=23, hidden=7) with a shared offset so cosines are not ~0."""
    rng = np.random.default_rng(11)
    return rng.normal(size=(5, 23, 7)) + rng.normal(size=(1, 1, 7))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.sqrt(np.dot(a, a)) * np.sqrt(np.dot(b, b))))


def _ref_layerwise(h: np.ndarray) -> np.ndarray:
    k, n, _ = h.shape
    out = np.empty((k - 1, n))
    for layer in range(k - 1):
        for t in range(n):
            out[layer, t] = _cos(h[layer, t], h[layer + 1, t])
    return out


def _ref_inter_token(h: np.ndarray) -> np.ndarray:
    """Eq. 2 by its O(n^2 d) definition: mean over pairs i < j."""
    k, n, _ = h.shape
    out = np.empty(k)
    for layer in range(k):
        pairs = [_cos(h[layer, i], h[layer, j]) for i in range(n) for j in range(i + 1, n)]
        out[layer] = sum(pairs) / len(pairs)
    return out


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def test_layerwise_cosine_matches_loop(states):
    got = layerwise_cosine(states)
    assert got.shape == (4, 23) and got.dtype == np.float64
    assert _rel_err(got, _ref_layerwise(states)) < 1e-10


def test_inter_token_cosine_on_nd_equals_pairwise_definition(states):
    got = inter_token_cosine(states)
    assert got.shape == (5,) and got.dtype == np.float64
    assert _rel_err(got, _ref_inter_token(states)) < 1e-10


def test_float32_input_within_1e4(states):
    h32 = states.astype(np.float32)
    assert _rel_err(inter_token_cosine(h32), _ref_inter_token(states)) < 1e-4
    assert _rel_err(layerwise_cosine(torch.from_numpy(h32)), _ref_layerwise(states)) < 1e-4


def test_inter_token_cosine_of_identical_tokens_is_one():
    h = np.tile(np.arange(1.0, 5.0), (2, 6, 1))  # every token the same direction
    np.testing.assert_allclose(inter_token_cosine(h), [1.0, 1.0], rtol=1e-14)


def test_binned_layerwise_cosine_matches_loop(states):
    n_bins = 4
    got = binned_layerwise_cosine(states, n_bins=n_bins)
    ref_cos = _ref_layerwise(states)
    n = states.shape[1]
    ref = np.zeros((4, n_bins))
    for b in range(n_bins):
        members = [t for t in range(n) if (t * n_bins) // n == b]
        ref[:, b] = ref_cos[:, members].mean(axis=1)
    assert _rel_err(got, ref) < 1e-10


def test_binned_layerwise_cosine_marks_empty_bins_nan():
    h = np.random.default_rng(0).normal(size=(3, 2, 4))
    got = binned_layerwise_cosine(h, n_bins=4)  # tokens 0, 1 -> bins 0, 2
    assert np.isnan(got[:, [1, 3]]).all() and np.isfinite(got[:, [0, 2]]).all()


@pytest.mark.parametrize("chunk", [1, 5, 23])
def test_accumulators_equal_whole_prompt(states, chunk):
    inter, layer = InterTokenCosineAccumulator(), LayerwiseCosineAccumulator(23, n_bins=4)
    for start in range(0, 23, chunk):
        part = states[:, start : start + chunk]
        inter.update(part)
        layer.update(torch.from_numpy(part))
    np.testing.assert_allclose(inter.result(), inter_token_cosine(states), rtol=1e-12)
    np.testing.assert_allclose(layer.mean(), _ref_layerwise(states).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(layer.binned(), binned_layerwise_cosine(states, n_bins=4), rtol=1e-12)


def test_layerwise_accumulator_refuses_partial_or_excess_prompt(states):
    acc = LayerwiseCosineAccumulator(23).update(states[:, :10])
    with pytest.raises(ValueError, match="saw 10 of n_tokens=23"):
        acc.mean()
    with pytest.raises(ValueError, match="got 33 tokens"):
        acc.update(states)


def test_inter_token_accumulator_refuses_changed_width(states):
    acc = InterTokenCosineAccumulator().update(states[:, :3])
    with pytest.raises(ValueError, match="earlier chunks"):
        acc.update(states[:, 3:, :5])


def test_zero_norm_token_raises_naming_it(states):
    h = states.copy()
    h[2, 9] = 0.0
    for fn in (layerwise_cosine, inter_token_cosine):
        with pytest.raises(ValueError, match="token 9 of state 2 has zero norm"):
            fn(h)
    acc = InterTokenCosineAccumulator().update(h[:, :5])
    with pytest.raises(ValueError, match="token 9 of state 2"):
        acc.update(h[:, 5:])  # offsets are reported in prompt positions


def test_degenerate_shapes_raise():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="n_tokens >= 2"):
        inter_token_cosine(rng.normal(size=(3, 1, 4)))
    with pytest.raises(ValueError, match="n_states >= 2"):
        layerwise_cosine(rng.normal(size=(1, 5, 4)))
    with pytest.raises(ValueError, match="3 axes"):
        layerwise_cosine(rng.normal(size=(5, 4)))
    with pytest.raises(ValueError, match="NaN or inf"):
        layerwise_cosine(np.full((2, 3, 4), np.nan))
    with pytest.raises(ValueError, match="overflows float64"):
        inter_token_cosine(np.full((2, 3, 4), 1e308))  # finite values, infinite norms
