"""Closed forms vs the linearised blocks, where they are exact and where they provably are not.

Every approximation of our closed forms is exact for a family of weights; the agreement tests
use those weights. The error tests break one approximation (or use one of the paper's) and
assert the size of the error. Names (T-unif, M-Δ, M-gate, M-conv, P-1/n², P-VV) as in
docs/theory.md.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from reprflow.theory.closed_forms import (
    _geometric_lag_mean,
    _geometric_product_mean,
    closed_form_attention_energy,
    closed_form_mamba_energy,
    closed_form_ssm_energy,
    closed_form_transformer_energy,
    harmonic_number,
    mamba_energy_coefficients,
    ssm_output_second_moment,
    theorem5_crossover_sigma2,
)
from reprflow.theory.mamba import causal_depthwise_conv, mamba_update, selective_scan
from reprflow.theory.montecarlo import monte_carlo_moments
from reprflow.theory.transformer import causal_attention, transformer_update
from reprflow.theory.weights import WeightSource, sample_mamba_weights, sample_transformer_weights

XAVIER = WeightSource("xavier", {})


def uniform_attention_weights(hidden, seed, source=XAVIER):
    """T-unif is exact: W_Q = 0 makes every logit zero, so a_tj = 1/t."""
    w = sample_transformer_weights(hidden, source=source, seed=seed)
    return dataclasses.replace(w, w_q=torch.zeros_like(w.w_q))


def exact_approximation_mamba_weights(hidden=4, d_state=3, seed=1, b_dt=0.3, bc_scale=3.0):
    """M-Δ, M-gate and M-conv are exact: W_dt = 0, W_z ⟂ W_x, only the k = 0 conv tap."""
    w = sample_mamba_weights(hidden, d_state=d_state, d_conv=4, expand=2, source=XAVIER, seed=seed)
    half = hidden // 2
    wx, wz, conv = w.w_x.clone(), w.w_z.clone(), w.conv.clone()
    wx[:, half:], wz[:, :half], conv[:, 1:] = 0.0, 0.0, 0.0
    return dataclasses.replace(
        w, w_x=wx, w_z=wz, conv=conv, w_dt=torch.zeros_like(w.w_dt),
        b_dt=torch.full_like(w.b_dt, b_dt), w_b=w.w_b * bc_scale, w_c=w.w_c * bc_scale,
    )  # fmt: skip


# --- exact algebra -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7])
def test_transformer_closed_form_is_exact_for_uniform_attention(n):
    """With W_Q = 0 the linearised block is linear in h: E||F||² = σ² ||L||_F² / n exactly."""
    d, sigma2 = 3, 1.7
    w = uniform_attention_weights(d, seed=0)
    basis = torch.eye(n * d, dtype=torch.float64).reshape(n * d, n, d)
    lin_map = transformer_update(basis, w, linearized=True).reshape(n * d, n * d)
    reference = sigma2 * float((lin_map**2).sum()) / n
    got = closed_form_transformer_energy(w, n_tokens=n, sigma2=sigma2)
    assert got == pytest.approx(reference, rel=1e-12)
    attn_map = causal_attention(basis, w).reshape(n * d, n * d)
    assert closed_form_attention_energy(w, n_tokens=n, sigma2=sigma2) == pytest.approx(
        sigma2 * float((attn_map**2).sum()) / n, rel=1e-12
    )


def test_geometric_time_averages_match_direct_sums():
    a = torch.tensor([-1e-3, -0.05, -0.7, -4.0], dtype=torch.float64)
    for n in (1, 2, 16, 300):
        lam = torch.exp(a)
        g = torch.stack([sum(lam**tau for tau in range(1, t)) if t > 1 else torch.zeros(4, dtype=torch.float64)
                         for t in range(1, n + 1)])  # fmt: skip  # [n, 4]
        torch.testing.assert_close(_geometric_lag_mean(a, n), g.mean(0), rtol=1e-10, atol=1e-14)
        prod = _geometric_product_mean(a[:, None], a[None, :], n)
        torch.testing.assert_close(prod, (g[:, :, None] * g[:, None, :]).mean(0), rtol=1e-9, atol=1e-14)


# --- closed forms vs linearised Monte Carlo, where the approximations are exact --------------


def test_transformer_closed_form_inside_linearized_ci():
    w = uniform_attention_weights(4, seed=2)
    for n, sigma2 in [(3, 0.5), (9, 2.0)]:
        mc = monte_carlo_moments(
            {"lin": lambda h: transformer_update(h, w, linearized=True)},
            n_tokens=n, hidden=4, sigma2=sigma2, n_mc=4000, seed=n, chunk=4000,
        )["lin"]  # fmt: skip
        cf = closed_form_transformer_energy(w, n_tokens=n, sigma2=sigma2)
        assert mc.energy.contains(cf) and mc.trace_cov.contains(cf)
        assert mc.mean_norm2.contains(0.0)


@pytest.mark.parametrize("n", [1, 3, 8])
def test_mamba_closed_form_inside_linearized_ci(n):
    w = exact_approximation_mamba_weights()
    sigma2 = 1.5
    mc = monte_carlo_moments(
        {"lin": lambda h: mamba_update(h, w, linearized=True)},
        n_tokens=n, hidden=4, sigma2=sigma2, n_mc=20000, seed=10 + n, chunk=20000,
    )["lin"]  # fmt: skip
    cf = closed_form_mamba_energy(w, n_tokens=n, sigma2=sigma2)
    assert mc.energy.contains(cf), (cf, mc.energy)
    assert mc.mean_norm2.contains(0.0)
    assert (mc.energy.ci_high - mc.energy.ci_low) < 0.1 * cf  # the CI is informative


def test_ssm_second_moment_matches_monte_carlo_and_history_matters():
    """Ȳ (our Theorem 3) against the S6 output y itself; D = 0 so only the selective scan acts."""
    w = dataclasses.replace(exact_approximation_mamba_weights(b_dt=-2.0), d=torch.zeros(8, dtype=torch.float64))
    sigma2, n, draws = 1.0, 6, 40000
    h = torch.randn(draws, n, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    u = causal_depthwise_conv(h @ w.w_x.T, w.conv) / 2
    delta = torch.nn.functional.softplus(w.b_dt).expand_as(u)
    y = selective_scan(u, delta, u @ w.w_b.T, u @ w.w_c.T, w)
    per_draw = (y**2).sum(-1).mean(-1)
    mean, se = float(per_draw.mean()), float(per_draw.std()) / math.sqrt(draws)
    cf = closed_form_ssm_energy(w, n_tokens=n, sigma2=sigma2)
    assert abs(cf - mean) < 1.96 * se * 1.5  # 1.5: a little slack for heavy (6th-moment) tails
    # the history term is visible: n = 6 differs from n = 1 by far more than the MC error
    assert cf - closed_form_ssm_energy(w, n_tokens=1, sigma2=sigma2) > 10 * se
    y_bar = ssm_output_second_moment(w, n_tokens=n, sigma2=sigma2)
    assert torch.allclose(y_bar, y_bar.T, atol=1e-15)


# --- where the closed forms provably do not agree, and by how much ----------------------------


def test_paper_one_over_n_squared_underestimates_causal_attention_by_harmonic_factor():
    """P-1/n²: E[a_tj²] ≈ 1/n² (all n tokens) vs causal a_tj = 1/t. Error factor exactly H_n."""
    n, sigma2 = 16, 1.0
    w = uniform_attention_weights(4, seed=3)
    ours = closed_form_attention_energy(w, n_tokens=n, sigma2=sigma2)
    paper = closed_form_attention_energy(w, n_tokens=n, sigma2=sigma2, attention="paper_1_over_n2")
    assert ours / paper == pytest.approx(harmonic_number(n), rel=1e-14)  # H_16 = 3.38
    mc = monte_carlo_moments(
        {"attn": lambda h: causal_attention(h, w)},
        n_tokens=n, hidden=4, sigma2=sigma2, n_mc=4000, seed=3, chunk=4000,
    )["attn"]  # fmt: skip
    assert mc.energy.contains(ours) and mc.energy.ci_low > 2.5 * paper  # paper is 70 % low


def test_paper_value_gram_identity_error_grows_as_weights_shrink():
    """P-VV: W_V W_Vᵀ ≈ I. With gaussian(0.02) weights tr(W_V W_Vᵀ) = d·4e-4, so the paper's
    attention term is ~1/(d·4e-4) too large; with xavier it is within a few per cent."""
    n, sigma2, d = 8, 1.0, 16
    small = uniform_attention_weights(d, seed=4, source=WeightSource("gaussian", {"std": 0.02}))
    mc = monte_carlo_moments(
        {"lin": lambda h: transformer_update(h, small, linearized=True)},
        n_tokens=n, hidden=d, sigma2=sigma2, n_mc=2000, seed=4, chunk=2000,
    )["lin"]  # fmt: skip
    ours = closed_form_transformer_energy(small, n_tokens=n, sigma2=sigma2)
    paper = closed_form_transformer_energy(small, n_tokens=n, sigma2=sigma2, value_gram="paper_identity")
    assert mc.energy.contains(ours)
    assert paper / ours > 100  # two orders of magnitude too large
    xav = uniform_attention_weights(d, seed=4)
    ratio = closed_form_transformer_energy(xav, n_tokens=n, sigma2=sigma2, value_gram="paper_identity") / \
        closed_form_transformer_energy(xav, n_tokens=n, sigma2=sigma2)  # fmt: skip
    assert 0.8 < ratio < 1.25


def test_uniform_attention_underestimates_sharp_attention():
    """T-unif breaks when logits are large (xavier W_Q, W_K, σ² = 4): softmax concentrates,
    Σ_j a_tj² grows above 1/t, and the closed form falls well below the linearised block."""
    n, d = 16, 8
    w = sample_transformer_weights(d, source=XAVIER, seed=5)
    mc = monte_carlo_moments(
        {"lin": lambda h: transformer_update(h, w, linearized=True)},
        n_tokens=n, hidden=d, sigma2=4.0, n_mc=1000, seed=5, chunk=1000,
    )["lin"]  # fmt: skip
    cf = closed_form_transformer_energy(w, n_tokens=n, sigma2=4.0)
    assert cf < mc.energy.ci_low and cf / mc.energy.value < 0.8  # > 20 % too low


def test_gate_independence_misses_the_mean_of_the_linearized_mamba():
    """M-gate: with z correlated to x (here W_z = W_x), F = W_out (y ⊙ z/2) is even in h and its
    mean is not zero, while the closed form (M-gate) has ||E F||² = 0."""
    w = exact_approximation_mamba_weights()
    w = dataclasses.replace(w, w_z=w.w_x.clone())
    mc = monte_carlo_moments(
        {"lin": lambda h: mamba_update(h, w, linearized=True)},
        n_tokens=4, hidden=4, sigma2=1.0, n_mc=20000, seed=6, chunk=20000,
    )["lin"]  # fmt: skip
    assert mc.mean_norm2.ci_low > 0.0
    assert mc.mean_norm2.value / mc.energy.value > 0.05  # the mean is a visible share of energy
    h = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(mamba_update(-h, w, linearized=True), mamba_update(h, w, linearized=True))


def test_conv_boundary_and_lag_correlation_error_shrinks_with_n():
    """M-conv with all four taps: the first d_conv - 1 tokens have a shorter window, and
    neighbouring u_t are correlated. Both are O(1/n) or bounded; the error at n = 4 exceeds
    the error at n = 64."""
    w = exact_approximation_mamba_weights(bc_scale=1.0)
    w = dataclasses.replace(w, conv=sample_mamba_weights(4, d_state=3, d_conv=4, expand=2, source=XAVIER, seed=1).conv)
    errors = []
    for n in (4, 64):
        mc = monte_carlo_moments(
            {"lin": lambda h: mamba_update(h, w, linearized=True)},
            n_tokens=n, hidden=4, sigma2=1.0, n_mc=3000, seed=n, chunk=3000,
        )["lin"]  # fmt: skip
        cf = closed_form_mamba_energy(w, n_tokens=n, sigma2=1.0)
        errors.append(cf / mc.energy.value - 1.0)
    assert errors[0] > 0.15  # boundary tokens have less variance than S says: cf too high
    assert abs(errors[1]) < errors[0] / 2


def test_closed_forms_are_polynomials_in_sigma2():
    """E_T = t σ² and E_M = a σ⁴ + b σ⁶ + c σ⁸: E_M/σ² is a cubic in σ² (4th differences vanish)."""
    wt = sample_transformer_weights(4, source=XAVIER, seed=0)
    wm = sample_mamba_weights(4, d_state=3, d_conv=4, expand=2, source=XAVIER, seed=0)
    et = [closed_form_transformer_energy(wt, n_tokens=5, sigma2=s) for s in (1.0, 2.0)]
    assert et[1] == pytest.approx(2 * et[0], rel=1e-13)
    em = np.array([closed_form_mamba_energy(wm, n_tokens=5, sigma2=s) / s for s in (1.0, 2.0, 3.0, 4.0, 5.0)])
    assert np.abs(np.diff(em, 4)).max() < 1e-9 * np.abs(em).max()
    assert np.abs(np.diff(em, 3)).max() > 1e-6 * np.abs(em).max()  # a true cubic, not lower


def test_theorem5_crossover_is_where_the_closed_forms_meet():
    wt = sample_transformer_weights(4, source=XAVIER, seed=0)
    wm = sample_mamba_weights(4, d_state=3, d_conv=4, expand=2, source=XAVIER, seed=0)
    a, b, c = mamba_energy_coefficients(wm, n_tokens=6)
    s = 1.7
    assert a * s**2 + b * s**3 + c * s**4 == pytest.approx(
        closed_form_mamba_energy(wm, n_tokens=6, sigma2=s), rel=1e-12
    )
    star = theorem5_crossover_sigma2(wt, wm, n_tokens=6)
    assert 0 < star < math.inf
    e_t = closed_form_transformer_energy(wt, n_tokens=6, sigma2=star)
    assert closed_form_mamba_energy(wm, n_tokens=6, sigma2=star) == pytest.approx(e_t, rel=1e-8)
    below, above = star / 2, star * 2
    assert closed_form_transformer_energy(wt, n_tokens=6, sigma2=below) > closed_form_mamba_energy(
        wm, n_tokens=6, sigma2=below
    )
    assert closed_form_transformer_energy(wt, n_tokens=6, sigma2=above) < closed_form_mamba_energy(
        wm, n_tokens=6, sigma2=above
    )
