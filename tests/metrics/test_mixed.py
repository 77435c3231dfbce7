"""metrics.precision: mixed (reprflow.metrics.mixed) against independent numpy float64 formulas.

The documented tolerances (docs/metrics.md): 1e-4 absolute on CKA (biased, debiased) and on
every cosine, 1e-5 relative on Sm, St and the state RMS. Checked on random, oversmoothed
(inter-token cosine > 0.999 from an offset 1e3 x the token spread; or one offset shared by every
state and token, 1e4 x the spread, so layerwise cosines are ~1 too) and huge (|x| ~ 6e5,
like a random-init Mamba) states, in float32 and bfloat16 storage, with both Gram kernels
(bf16x3, computed here from float32 copies of the bf16 parts, and float32).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprflow.errors import ConfigError, StoreError
from reprflow.metrics.mixed import prompt_metrics_mixed
from reprflow.pipeline.token_metrics import prompt_metrics

K, N, D, N_BINS = 8, 64, 48, 8
VIEWS = {"hf": list(range(K - 1)), "residual": [*range(K - 2), K - 1]}
ABS_TOL, REL_TOL = 1e-4, 1e-5


def _reference(h: np.ndarray, idx: list[int]) -> dict:
    """Paper formulas in numpy float64, written out independently of reprflow."""
    x = h[idx].astype(np.float64)  # [K, n, d]
    k, n, d = x.shape
    u = x / np.linalg.norm(x, axis=-1, keepdims=True)
    gram_u = np.einsum("kid,kjd->kij", u, u)
    inter = (gram_u.sum(axis=(1, 2)) - n) / (n * (n - 1))  # mean over i != j
    cos = (u[:-1] * u[1:]).sum(-1)  # [K-1, n]
    bins = np.arange(n) * N_BINS // n
    binned = np.stack([cos[:, bins == b].mean(axis=1) for b in range(N_BINS)], axis=1)
    xc = x - x.mean(axis=1, keepdims=True)
    grams = np.einsum("kid,kjd->kij", xc, xc)
    hmat = np.eye(n) - 1.0 / n
    cg = np.stack([hmat @ g @ hmat for g in grams])
    hs = np.einsum("kij,lij->kl", cg, cg)
    cka = hs / np.sqrt(np.outer(np.diag(hs), np.diag(hs)))
    ug = []  # U-centring (Szekely & Rizzo 2014), as in Kornblith et al.'s notebook
    for g in grams:
        g = g.copy()
        np.fill_diagonal(g, 0)
        means = g.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        g = g - means[:, None] - means[None, :]
        np.fill_diagonal(g, 0)
        ug.append(g)
    ug = np.stack(ug)
    hu = np.einsum("kij,lij->kl", ug, ug)
    cka_d = hu / np.sqrt(np.outer(np.diag(hu), np.diag(hu)))
    sm = np.abs(x[1:-1] - (x[:-2] + x[2:]) / 2).sum() / ((k - 2) * n * d)
    st = x.std(axis=0).sum() / (n * d)
    rms = (np.linalg.norm(x, axis=-1) / np.sqrt(d)).mean()
    return {
        "inter_token": inter,
        "layerwise_mean": cos.mean(1),
        "layerwise_binned": binned,
        "cka": cka,
        "cka_debiased": cka_d,
        "sm": sm,
        "st": st,
        "state_rms": rms,
    }


def _cases():
    g = torch.Generator().manual_seed(0)
    walk = torch.randn(K, N, D, generator=g).cumsum(0)  # a flow: each state = previous + noise
    offset = torch.randn(K, 1, D, generator=g)
    yield "random", walk
    yield "oversmoothed", 1e3 * (offset + torch.randn(1, 1, D, generator=g)) + walk / K  # inter-token > 0.999
    yield "common_offset", 1e4 * torch.randn(1, 1, D, generator=g) + walk / K  # layers and tokens nearly equal
    yield "huge", 6e5 * walk / walk.abs().max() + 1e5 * offset
    yield "bfloat16", walk.to(torch.bfloat16)


CASES = list(_cases())


def _check(got: dict, ref: dict, what: str) -> None:
    for f in ("inter_token", "layerwise_mean", "layerwise_binned", "cka", "cka_debiased"):
        np.testing.assert_allclose(got[f], ref[f], rtol=0, atol=ABS_TOL, err_msg=f"{what}: {f}")
    for f in ("sm", "st", "state_rms"):
        assert got[f] == pytest.approx(ref[f], rel=REL_TOL), f"{what}: {f}"
    assert got["sm_rel"] == pytest.approx(ref["sm"] / ref["state_rms"], rel=2 * REL_TOL)


@pytest.mark.parametrize("name,h", CASES, ids=[c[0] for c in CASES])
def test_mixed_precision_within_tolerance_of_float64_formulas(name, h):
    refs = {v: _reference(h.float().numpy(), idx) for v, idx in VIEWS.items()}
    if name in ("oversmoothed", "common_offset"):
        assert refs["hf"]["inter_token"].min() > 0.999
    for kernel in ("bf16x3", "float32"):
        got = prompt_metrics_mixed(h, VIEWS, debiased_cka=True, n_bins=N_BINS, chunk=40, kernel=kernel)
        for v in VIEWS:
            _check(got[v], refs[v], f"{name}, {kernel}, view {v}")
    # through the per-prompt entry point of both token-metric paths (store and stream)
    out = prompt_metrics(h, VIEWS, debiased_cka=True, n_bins=N_BINS, chunk=40, where="t", precision="mixed")
    ref64 = prompt_metrics(h, VIEWS, debiased_cka=True, n_bins=N_BINS, chunk=40, where="t")
    for v in VIEWS:
        _check(vars(out[v]), refs[v], f"{name}, prompt_metrics, view {v}")
        _check(vars(ref64[v]), refs[v], f"{name}, float64 reference, view {v}")


def test_mixed_precision_errors_name_the_culprit():
    h = CASES[0][1].clone()
    h[3, 17] = 0.0
    with pytest.raises(StoreError, match=r"p 5, states .*token 17 of state 3 has zero norm"):
        prompt_metrics(h, VIEWS, debiased_cka=True, n_bins=N_BINS, where="p 5", precision="mixed")
    h = CASES[0][1].clone()
    h[2, 5, 1] = float("nan")
    with pytest.raises(StoreError, match="NaN or inf"):
        prompt_metrics(h, VIEWS, debiased_cka=True, n_bins=N_BINS, where="p 5", precision="mixed")
    with pytest.raises(ConfigError, match=r"metrics.precision is 'tf32'; expected one of \['float64', 'mixed'\]"):
        prompt_metrics(CASES[0][1], VIEWS, debiased_cka=True, where="p", precision="tf32")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixed_precision_on_cuda_uses_tensor_cores_within_tolerance():
    from reprflow.metrics.mixed import gram_kernel

    assert gram_kernel(torch.device("cuda")) == "bf16x3"
    for name, h in CASES:
        refs = {v: _reference(h.float().numpy(), idx) for v, idx in VIEWS.items()}
        got = prompt_metrics_mixed(h.cuda(), VIEWS, debiased_cka=True, n_bins=N_BINS, chunk=40)
        for v in VIEWS:
            _check(got[v], refs[v], f"{name} on CUDA, view {v}")
