"""Tests for reprflow.metrics.cka against explicit float64 HSIC references written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprflow.metrics import (
    MinibatchCKAAccumulator,
    center_gram,
    cka_from_grams,
    cka_matrices,
    cka_matrix,
    feature_space_linear_cka,
    gram_linear,
    hsic,
    linear_cka,
    minibatch_cka,
)

# ----------------------------------------------------------------- independent references


def _ref_hsic_biased(x: np.ndarray, y: np.ndarray) -> float:
    """tr(K H L H) / (n - 1)^2 with the centring matrix H built explicitly."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(x @ x.T @ h @ (y @ y.T) @ h)) / (n - 1) ** 2


def _ref_hsic_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al. 2012, Eq. 5, literally (on uncentred features)."""
    n = x.shape[0]
    kt, lt = x @ x.T, y @ y.T
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    value = (
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    )
    return float(value) / (n * (n - 3))


def _ref_cka(x: np.ndarray, y: np.ndarray, *, debiased: bool) -> float:
    f = _ref_hsic_unbiased if debiased else _ref_hsic_biased
    return f(x, y) / np.sqrt(f(x, x) * f(y, y))


@pytest.fixture
def xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 6)) + 2.0  # offset: centring matters
    y = x @ rng.normal(size=(6, 9)) + rng.normal(size=(40, 9))
    return x, y


@pytest.fixture
def states() -> np.ndarray:
    """(n_states=6, n_tokens=30, hidden=5): a random walk, so neighbours are similar."""
    rng = np.random.default_rng(8)
    return np.cumsum(rng.normal(size=(6, 30, 5)), axis=0) + 1.0


# ------------------------------------------------------------------------ published values


def test_kornblith_published_values():
    rs = np.random.RandomState(1337)  # same stream as the notebook's np.random.seed(1337)
    x = rs.randn(100, 10)
    y = rs.randn(100, 10) + x
    assert round(linear_cka(x, y), 5) == 0.55761
    assert round(linear_cka(x, y, debiased=True), 5) == 0.51346
    assert round(cka_from_grams(gram_linear(x), gram_linear(y)), 5) == 0.55761
    assert round(feature_space_linear_cka(x, y, debiased=True), 5) == 0.51346


# ----------------------------------------------------------------------- references, forms


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("form", ["example", "feature"])
def test_linear_cka_matches_explicit_hsic(xy, debiased, form):
    x, y = xy
    ref = _ref_cka(x, y, debiased=debiased)
    got = linear_cka(x, y, debiased=debiased, form=form)
    assert abs(got - ref) / abs(ref) < 1e-10


@pytest.mark.parametrize("debiased", [False, True])
def test_example_and_feature_space_agree(xy, debiased):
    x, y = xy
    grams = cka_from_grams(gram_linear(x), gram_linear(y), debiased=debiased)
    feature = feature_space_linear_cka(x, y, debiased=debiased)
    assert grams == pytest.approx(feature, rel=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_hsic_matches_explicit_references(xy, debiased):
    x, y = xy
    ref = (_ref_hsic_unbiased if debiased else _ref_hsic_biased)(x, y)
    got = hsic(gram_linear(x), gram_linear(y), debiased=debiased)
    assert abs(got - ref) / abs(ref) < 1e-10


def test_center_gram_biased_is_hgh(xy):
    x, _ = xy
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    g = x @ x.T
    np.testing.assert_allclose(center_gram(g), h @ g @ h, rtol=0, atol=1e-10 * np.abs(g).max())


def test_center_gram_unbiased_kills_row_and_column_constants(xy):
    x, _ = xy
    g = x @ x.T
    u = center_gram(g, unbiased=True)
    assert np.all(np.diag(u) == 0.0)
    a = np.random.default_rng(0).normal(size=g.shape[0])
    shifted = g + a[:, None] + a[None, :] + 3.0  # U-centring is blind to such terms
    np.testing.assert_allclose(center_gram(shifted, unbiased=True), u, atol=1e-10 * np.abs(u).max())


def test_center_gram_rejects_asymmetric():
    with pytest.raises(ValueError, match="not symmetric"):
        center_gram(np.arange(16.0).reshape(4, 4))


def test_float32_input_within_1e4(xy):
    x, y = xy
    for debiased in (False, True):
        ref = _ref_cka(x, y, debiased=debiased)
        got = linear_cka(torch.from_numpy(x.astype(np.float32)), y.astype(np.float32), debiased=debiased)
        assert abs(got - ref) / abs(ref) < 1e-4


# ------------------------------------------------------------------------------ invariances


def test_invariant_to_orthogonal_maps_and_isotropic_scaling(xy):
    x, y = xy
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    for debiased in (False, True):
        base = linear_cka(x, y, debiased=debiased)
        assert linear_cka(x @ q, y, debiased=debiased) == pytest.approx(base, rel=1e-12)
        assert linear_cka(x, 7.5 * y, debiased=debiased) == pytest.approx(base, rel=1e-12)
        assert linear_cka(x + 4.0, y, debiased=debiased) == pytest.approx(base, rel=1e-12)


def test_not_invariant_to_general_linear_maps(xy):
    x, y = xy
    a = np.diag([10.0, 1.0, 0.1, 1.0, 5.0, 0.01])  # anisotropic rescaling
    assert abs(linear_cka(x @ a, y) - linear_cka(x, y)) > 1e-2


# --------------------------------------------------------------------------- K x K matrices


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize(
    "form, block_bytes",
    [("example", 8 * 6 * 30 * 7), ("example", 2**30), ("feature", 8 * 5 * 10), ("auto", 2**20)],
    ids=["example-5-blocks", "example-1-block", "feature-1-state-groups", "auto"],
)
def test_cka_matrix_equals_pairwise_reference(states, debiased, form, block_bytes):
    got = cka_matrix(states, debiased=debiased, form=form, block_bytes=block_bytes)
    k = states.shape[0]
    ref = np.array([[_ref_cka(states[a], states[b], debiased=debiased) for b in range(k)] for a in range(k)])
    assert got.shape == (k, k) and got.dtype == np.float64
    np.testing.assert_array_equal(got, got.T)
    np.testing.assert_array_equal(np.diag(got), np.ones(k))
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=0)


def test_cka_matrix_equals_linear_cka_pairs_and_cka_matrices(states):
    both = cka_matrices(states.astype(np.float16))
    h16 = states.astype(np.float16)
    for debiased, mat in ((False, both.biased), (True, both.debiased)):
        np.testing.assert_allclose(mat, cka_matrix(h16, debiased=debiased), rtol=1e-13)
        assert mat[1, 4] == pytest.approx(linear_cka(h16[1], h16[4], debiased=debiased), rel=1e-12)
    assert np.all((both.biased >= 0) & (both.biased <= 1 + 1e-12))


def test_debiased_needs_four_tokens_and_constant_state_raises(states):
    with pytest.raises(ValueError, match="n_tokens >= 4"):
        cka_matrix(states[:, :3], debiased=True)
    assert cka_matrix(states[:, :3]).shape == (6, 6)  # biased is defined for n = 3
    h = states.copy()
    h[2] = 1.5  # every token of state 2 identical
    with pytest.raises(ValueError, match=r"state\(s\) \[2\]"):
        cka_matrix(h)


def test_overflowing_input_raises_instead_of_nan(states):
    with pytest.raises(ValueError, match="overflows float64"):
        cka_matrix(states * 1e300)


def test_mismatched_token_counts_raise(xy):
    x, y = xy
    with pytest.raises(ValueError, match="same n_tokens"):
        linear_cka(x, y[:-1])


# -------------------------------------------------------------------------------- minibatch


def test_minibatch_cka_single_batch_is_full_debiased(states):
    np.testing.assert_allclose(minibatch_cka([states]), cka_matrix(states, debiased=True), rtol=1e-12)


def test_minibatch_cka_converges_to_full_debiased_cka():
    """Random minibatches of 512 of 8192 tokens: within 0.005 of the full-data debiased CKA.

    Both are unbiased-HSIC estimates of the same population CKA; their difference is
    sampling noise that shrinks with n_tokens (measured: 2.6e-4 here, so 20x margin).
    """
    rng = np.random.default_rng(21)
    n, d = 8192, 12
    z = rng.normal(size=(n, d))
    h = np.stack([z, z + rng.normal(size=(n, d)), z @ rng.normal(size=(d, d)) + 2 * rng.normal(size=(n, d))])
    full = cka_matrix(h, debiased=True)
    order = rng.permutation(n)
    acc = MinibatchCKAAccumulator()
    for start in range(0, n, 512):
        acc.update(h[:, order[start : start + 512]])
    assert acc.n_batches_ == 16
    got = acc.result()
    np.testing.assert_allclose(got, full, atol=0.005)
    assert np.abs(got - full).max() > 0  # an estimate, not a copy of the full value
    assert full[0, 1] > 0.3  # the data are not trivially dissimilar


# ---------------------------------------------------------------------------------- device


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("block_bytes", [2**20, 8 * 6 * 30 * 7], ids=["1-block", "5-blocks"])
def test_cka_matrix_on_gpu_matches_cpu(states, block_bytes):
    h = states.astype(np.float16)
    for debiased in (False, True):
        for form in ("example", "feature"):
            got = cka_matrix(h, debiased=debiased, device="cuda", form=form, block_bytes=block_bytes)
            np.testing.assert_allclose(got, cka_matrix(h, debiased=debiased), rtol=1e-10)
