"""Metrics at a paper-scale token count (4096 tokens, 66 states) against float64 numpy.

The references are written here from the definitions (no library helper). The states
are float32 with a common offset 100x the token spread, as deep residual streams have,
so a float32 accumulation over 4096 tokens or a cancellation in the centring would show.
Hidden size is small (16) to keep the test in seconds; the chunking over tokens is made
fine (``CHUNK_BYTES``) so that many chunk boundaries are crossed.
"""

from __future__ import annotations

import numpy as np
import pytest

import reprflow.metrics as M
from reprflow.metrics import _arrays

K, N, D = 66, 4096, 16


@pytest.fixture(scope="module")
def states() -> np.ndarray:
    rng = np.random.default_rng(7)
    offset = 100.0 * rng.standard_normal((1, 1, D))
    drift = np.cumsum(rng.standard_normal((K, 1, D)), axis=0)
    return (offset + drift + rng.standard_normal((K, N, D))).astype(np.float32)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(_arrays, "CHUNK_BYTES", 8 * K * D * 100)  # 100 tokens per chunk


def _unit(h: np.ndarray) -> np.ndarray:
    return h / np.sqrt((h * h).sum(axis=-1, keepdims=True))


def test_cosines_match_float64_reference(states):
    h = states.astype(np.float64)
    u = _unit(h)
    layer = np.einsum("knd,knd->kn", u[:-1], u[1:])
    np.testing.assert_allclose(M.layerwise_cosine(states), layer, rtol=0, atol=1e-12)
    bins = np.arange(N) * 64 // N
    binned = np.stack([layer[:, bins == b].mean(axis=1) for b in range(64)], axis=1)
    np.testing.assert_allclose(M.binned_layerwise_cosine(states), binned, rtol=0, atol=1e-12)
    pick = [0, 1, 33, 64, 65]  # the pairwise reference costs n^2 d per state
    inter = [((u[k] @ u[k].T).sum() - N) / (N * (N - 1)) for k in pick]  # mean over i != j
    np.testing.assert_allclose(M.inter_token_cosine(states)[pick], inter, rtol=0, atol=1e-12)


def test_smoothness_stability_match_float64_reference(states):
    h = states.astype(np.float64)
    sm = np.abs(h[1:-1] - (h[:-2] + h[2:]) / 2).mean()
    st = np.sqrt(((h - h.mean(axis=0)) ** 2).mean(axis=0)).mean()
    rms = (np.sqrt((h * h).sum(axis=-1)) / np.sqrt(D)).mean()
    assert M.smoothness(states) == pytest.approx(sm, rel=1e-12)
    assert M.stability(states) == pytest.approx(st, rel=1e-12)
    assert M.mean_state_rms(states) == pytest.approx(rms, rel=1e-12)


def _hsic_terms(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(biased, debiased) n(n-3)-scaled HSIC of two token matrices, feature space, float64."""
    n = x.shape[0]
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    cross = float(((xc.T @ yc) ** 2).sum())
    q, r = (xc * xc).sum(axis=1), (yc * yc).sum(axis=1)
    return cross, cross - n / (n - 2) * float(q @ r) + q.sum() * r.sum() / ((n - 1) * (n - 2))


@pytest.mark.parametrize("form", ["example", "feature"])
def test_cka_matches_float64_reference(states, form):
    pick = [0, 1, 2, 17, 40, 64, 65]  # the example form costs K n^2 d: a few states
    h = states[pick]
    ref = np.empty((2, len(pick), len(pick)))
    for a in range(len(pick)):
        for b in range(len(pick)):
            ref[:, a, b] = _hsic_terms(h[a].astype(np.float64), h[b].astype(np.float64))
    diag = np.einsum("tkk->tk", ref)
    ref = ref / np.sqrt(diag[:, :, None] * diag[:, None, :])
    out = M.cka_matrices(h, form=form, block_bytes=8 * len(pick) * N * 512)
    np.testing.assert_allclose(out.biased, ref[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(out.debiased, ref[1], rtol=0, atol=1e-10)
