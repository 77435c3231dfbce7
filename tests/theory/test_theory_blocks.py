"""The theory blocks against loop-based float64 references, and Propositions 2 and 3."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.special import erf

from reprflow.theory.mamba import mamba_update
from reprflow.theory.montecarlo import monte_carlo_moments
from reprflow.theory.transformer import causal_attention, transformer_update
from reprflow.theory.weights import (
    WeightSource,
    sample_mamba_weights,
    sample_transformer_weights,
)

XAVIER = WeightSource("xavier", {})


def _np(w):
    return {k: getattr(w, k).numpy() for k in w.__dataclass_fields__}


def reference_transformer(h: np.ndarray, w: dict, linearized: bool) -> np.ndarray:
    """Token-by-token Eq. 5 in numpy: causal softmax attention, FFN on h + A, no LN."""
    n, d = h.shape
    out = np.zeros_like(h)
    for t in range(n):
        logits = np.array([(w["w_q"] @ h[t]) @ (w["w_k"] @ h[j]) / math.sqrt(d) for j in range(t + 1)])
        a = np.exp(logits - logits.max())
        a /= a.sum()
        attn = sum(a[j] * (w["w_v"] @ h[j]) for j in range(t + 1))
        pre = w["w_1"] @ (h[t] + attn)
        act = pre / 2 if linearized else 0.5 * pre * (1 + erf(pre / math.sqrt(2)))
        out[t] = attn + w["w_2"] @ act
    return out


def reference_mamba(h: np.ndarray, w: dict, linearized: bool) -> np.ndarray:
    """Token-by-token, channel-by-channel Eq. 6 in numpy."""
    silu = (lambda x: x / 2) if linearized else (lambda x: x / (1 + np.exp(-x)))
    n = h.shape[0]
    m, k_conv = w["conv"].shape
    x = h @ w["w_x"].T
    z = h @ w["w_z"].T
    u = np.zeros((n, m))
    for t in range(n):
        for c in range(m):
            u[t, c] = sum(w["conv"][c, k] * x[t - k, c] for k in range(k_conv) if t - k >= 0)
    u = silu(u)
    a = -np.exp(w["a_log"])
    state = np.zeros_like(a)
    out = np.zeros((n, w["w_out"].shape[0]))
    for t in range(n):
        delta = np.log1p(np.exp(w["w_dt"] @ (w["w_xdt"] @ u[t]) + w["b_dt"]))
        b, c = w["w_b"] @ u[t], w["w_c"] @ u[t]
        y = np.zeros(m)
        for i in range(m):
            state[i] = np.exp(delta[i] * a[i]) * state[i] + delta[i] * u[t, i] * b
            y[i] = state[i] @ c + w["d"][i] * u[t, i]
        out[t] = w["w_out"] @ (y * silu(z[t]))
    return out


@pytest.mark.parametrize("linearized", [False, True])
def test_transformer_block_matches_loop_reference(linearized):
    w = sample_transformer_weights(6, source=XAVIER, seed=3)
    h = torch.randn(2, 7, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = transformer_update(h, w, linearized=linearized)
    for b in range(2):
        ref = reference_transformer(h[b].numpy(), _np(w), linearized)
        np.testing.assert_allclose(got[b].numpy(), ref, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("linearized", [False, True])
def test_mamba_block_matches_loop_reference(linearized):
    w = sample_mamba_weights(4, d_state=3, d_conv=4, expand=2, source=XAVIER, seed=3)
    h = torch.randn(2, 9, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = mamba_update(h, w, linearized=linearized)
    for b in range(2):
        ref = reference_mamba(h[b].numpy(), _np(w), linearized)
        np.testing.assert_allclose(got[b].numpy(), ref, rtol=1e-11, atol=1e-13)


def test_blocks_are_causal():
    wt = sample_transformer_weights(4, source=XAVIER, seed=0)
    wm = sample_mamba_weights(4, d_state=2, d_conv=4, expand=2, source=XAVIER, seed=0)
    h = torch.randn(1, 10, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h2 = h.clone()
    h2[:, 6:] += 1.0
    for f in (lambda x: transformer_update(x, wt, linearized=False),
              lambda x: mamba_update(x, wm, linearized=False)):  # fmt: skip
        a, b = f(h), f(h2)
        assert torch.equal(a[:, :6], b[:, :6])
        assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_proposition2_attention_is_odd():
    w = sample_transformer_weights(8, source=WeightSource("gaussian", {"std": 0.7}), seed=1)
    h = torch.randn(4, 33, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3
    assert torch.allclose(causal_attention(-h, w), -causal_attention(h, w), rtol=0, atol=1e-12)
    # the whole exact block is not odd (GELU is not), so the check is not vacuous
    assert not torch.allclose(transformer_update(-h, w, linearized=False), -transformer_update(h, w, linearized=False))


def test_proposition3_attention_has_zero_mean():
    w = sample_transformer_weights(6, source=XAVIER, seed=4)
    draws = 3000
    h = torch.randn(draws, 8, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a = causal_attention(h * math.sqrt(2.0), w)  # [draws, n_tokens, hidden]
    z = a.mean(0) / (a.std(0) / math.sqrt(draws))
    assert z.abs().max() < 4.0  # 48 coordinates, each consistent with mean 0
    mc = monte_carlo_moments(
        {"attn": lambda x: causal_attention(x, w),
         "attn_plus_shift": lambda x: causal_attention(x, w) + 0.05},
        n_tokens=8, hidden=6, sigma2=2.0, n_mc=draws, seed=5, chunk=draws,
    )  # fmt: skip
    # ||E A||² per token: consistent with 0, and its CI is narrow next to E||A||²
    est = mc["attn"].mean_norm2
    half = (est.ci_high - est.ci_low) / 2
    assert abs(est.value) < 1.5 * half and half < 0.002 * mc["attn"].energy.value
    # a shift of 0.05 in every coordinate (||E A||² = 6 * 0.05² = 0.015) is detected
    shifted = mc["attn_plus_shift"].mean_norm2
    assert shifted.ci_low > 0 and abs(shifted.value - 6 * 0.05**2) < 1.5 * half + 0.003


def test_linearized_blocks_agree_with_exact_for_tiny_inputs():
    """SiLU(x) = x/2 + O(x²), GELU(x) = x/2 + O(x²): the relative gap shrinks like the scale."""
    wt = sample_transformer_weights(4, source=XAVIER, seed=0)
    wm = sample_mamba_weights(4, d_state=2, d_conv=4, expand=2, source=XAVIER, seed=0)
    h = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for f in (transformer_update, mamba_update):
        w = wt if f is transformer_update else wm
        gaps = []
        for scale in (1e-2, 1e-3):
            a, b = f(h * scale, w, linearized=False), f(h * scale, w, linearized=True)
            gaps.append(float((a - b).norm() / b.norm()))
        assert gaps[1] < gaps[0] / 5


def test_mamba_weights_keep_mamba_init_for_ssm_parameters():
    w = sample_mamba_weights(16, d_state=4, d_conv=4, expand=2, source=XAVIER, seed=0)
    dt = torch.nn.functional.softplus(w.b_dt)
    assert dt.min() >= 1e-3 - 1e-15 and dt.max() <= 1e-1 + 1e-15
    assert torch.equal(w.a_log[0], torch.log(torch.arange(1.0, 5.0, dtype=torch.float64)))
    assert torch.equal(w.d, torch.ones(32, dtype=torch.float64))
    assert w.w_xdt.shape == (1, 32) and w.w_dt.shape == (32, 1)  # dt_rank = ceil(16 / 16)
    assert dataclasses.asdict(w).keys() >= {"w_x", "w_z", "conv"}
