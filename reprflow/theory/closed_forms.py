"""Closed forms for E||F(h⁰)||² of one linearised Transformer and one linearised Mamba block.

The paper (Hoang et al. 2025, §4 and Appendix A, Theorems 1-4) states closed forms for these
energies under its Assumptions 1-4. Its text could not be consulted when this module was
written, so the formulas below are **our derivation** under the same assumptions:

- Assumptions 1-3: tokens h_t ~ N(0, σ² I_d), i.i.d. across tokens;
- Assumption 4: GELU(x) ≈ x/2 and SiLU(x) ≈ x/2;

plus the approximations named below, each of which is *exact* for a family of weights (that is
how the tests check the algebra). Every quantity is conditional on the block's weights and is
averaged over tokens: E = (1/n) Σ_t E||F_t||², with ||.|| summed over the hidden axis.

Approximations (names used in docs/theory.md, the tests and approximations.csv):

``T-unif``  attention weights are uniform over the causal window, a_tj = 1/t for j <= t, and
            independent of h. Exact when W_Qᵀ W_K = 0 (all logits zero).
``M-Δ``     Δ is frozen at δ = softplus(b_dt). Exact when W_dt W_xdt = 0.
``M-gate``  the gate z = W_z h is independent of the SSM branch x = W_x h. Exact when
            W_z W_xᵀ = 0.
``M-conv``  the conv output u is white across tokens, with its exact same-token covariance
            S = (σ²/4) (W_x W_xᵀ) ⊙ (K Kᵀ) (K the conv taps); the lag < d_conv correlations
            and the first d_conv - 1 (zero-padded) tokens are ignored. Exact when only the
            k = 0 tap is nonzero.

Two further approximations are the paper's, offered as switches so their error can be measured:

``P-1/n²``  E[a_tj²] ≈ 1/n² for all n tokens (non-causal uniform attention): replaces H_n/n by 1/n.
``P-VV``    W_V W_Vᵀ ≈ I: replaces ||(I+M) W_V||_F² by ||I+M||_F² and drops the cross term
            tr(W_Vᵀ (I+M)ᵀ M), whose mean over an orthogonal W_V drawn independently of M is 0.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from reprflow.errors import ConfigError
from reprflow.theory.weights import MambaWeights, TransformerWeights

AttentionApprox = Literal["causal_uniform", "paper_1_over_n2"]
ValueGram = Literal["exact", "paper_identity"]


def harmonic_number(n: int) -> float:
    """H_n = Σ_{t=1}^n 1/t (exact float64 sum)."""
    return math.fsum(1.0 / t for t in range(1, n + 1))


def _attention_factor(n_tokens: int, attention: str) -> float:
    """(1/n) Σ_t Σ_j E[a_tj²] (= (1/n) Σ_t E[a_tt] under uniform attention)."""
    if n_tokens < 1:
        raise ConfigError(f"theory n_tokens: got {n_tokens}; expected >= 1")
    if attention == "causal_uniform":
        return harmonic_number(n_tokens) / n_tokens
    if attention == "paper_1_over_n2":
        return 1.0 / n_tokens
    raise ConfigError(
        f"closed-form attention approximation {attention!r}: unknown; expected 'causal_uniform' or 'paper_1_over_n2'"
    )


def closed_form_attention_energy(
    w: TransformerWeights,
    *,
    n_tokens: int,
    sigma2: float,
    attention: AttentionApprox = "causal_uniform",
) -> float:
    """E||A(h)||² per token of single-head causal attention (our Theorem 1).

    Under T-unif, A_t = W_V h̄_t with h̄_t = (1/t) Σ_{j<=t} h_j ~ N(0, σ²/t I), so

        E = σ² ||W_V||_F² · H_n / n,        H_n = Σ_{t=1}^n 1/t.

    With ``attention="paper_1_over_n2"`` (P-1/n²) the factor H_n/n becomes 1/n.
    """
    return sigma2 * float((w.w_v**2).sum()) * _attention_factor(n_tokens, attention)


def closed_form_transformer_energy(
    w: TransformerWeights,
    *,
    n_tokens: int,
    sigma2: float,
    attention: AttentionApprox = "causal_uniform",
    value_gram: ValueGram = "exact",
) -> float:
    """E||F(h)||² per token of the linearised Transformer block (our Theorem 2).

    With M = W_2 W_1 / 2 (the linearised FFN) and P = (I + M) W_V, the update is
    F_t = P h̄_t + M h_t under T-unif, and Cov(h_t, h̄_t) = σ²/t I gives

        E = σ² [ ||M||_F² + (H_n / n) ( ||P||_F² + 2 tr(Pᵀ M) ) ].

    The mean is 0 (F is odd in h), so Tr Σ = E. ``attention="paper_1_over_n2"`` replaces
    H_n/n by 1/n (P-1/n²); ``value_gram="paper_identity"`` replaces ||P||_F² by ||I+M||_F² and
    drops 2 tr(Pᵀ M) (P-VV).
    """
    c = _attention_factor(n_tokens, attention)
    eye = torch.eye(w.hidden, dtype=w.w_v.dtype, device=w.w_v.device)
    m = w.w_2 @ w.w_1 / 2
    if value_gram == "exact":
        p = (eye + m) @ w.w_v
        attn_term = float((p**2).sum()) + 2.0 * float((p * m).sum())
    elif value_gram == "paper_identity":
        attn_term = float(((eye + m) ** 2).sum())
    else:
        raise ConfigError(f"closed-form value_gram {value_gram!r}: unknown; expected 'exact' or 'paper_identity'")
    return sigma2 * (float((m**2).sum()) + c * attn_term)


# --- Mamba -------------------------------------------------------------------------------------


def _geometric_lag_mean(a: torch.Tensor, n: int) -> torch.Tensor:
    """(1/n) Σ_{t=1}^n Σ_{τ=1}^{t-1} e^{aτ} = (1/n) Σ_{τ=1}^{n-1} (n-τ) e^{aτ}, elementwise, a < 0.

    Closed form x (n(1-x) - (1-x^n)) / (n (1-x)²) with x = e^a, written with expm1.
    """
    e1, en = -torch.expm1(a), -torch.expm1(n * a)
    return torch.exp(a) * (n * e1 - en) / (n * e1**2)


def _window_mean(a: torch.Tensor, n: int) -> torch.Tensor:
    """φ(a) = (1/n) Σ_{t=1}^n e^{a(t-1)} = (1 - x^n) / (n (1 - x)), x = e^a < 1."""
    return -torch.expm1(n * a) / (n * -torch.expm1(a))


def _geometric_product_mean(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    """(1/n) Σ_t g_a(t) g_b(t) with g_a(t) = Σ_{τ=1}^{t-1} e^{aτ}; broadcasts a against b."""
    scale = torch.exp(a + b) / (torch.expm1(a) * torch.expm1(b))
    return scale * (1.0 - _window_mean(a, n) - _window_mean(b, n) + _window_mean(a + b, n))


def ssm_output_second_moment(
    w: MambaWeights, *, n_tokens: int, sigma2: float, max_block_elements: int = 1 << 24
) -> torch.Tensor:
    """Ȳ = (1/n) Σ_t E[y_t y_tᵀ] of the linearised S6 output, under M-Δ and M-conv.

    Parameters
    ----------
    w : MambaWeights
    n_tokens : int
    sigma2 : float
    max_block_elements : int
        Bound on the size of the (rows, N, m, N) temporaries; rows of Ȳ are done in blocks.

    Returns
    -------
    Tensor of shape (m, m), float64 on the weights' device.

    Notes
    -----
    Let u_t ~ N(0, S) i.i.d. (M-conv), δ = softplus(b_dt), λ_ik = exp(δ_i A_ik) (M-Δ),
    Q_0 = W_Cᵀ W_B, Q_s = (Q_0 + Q_0ᵀ)/2, q = tr(Q_s S), β = W_B S, Γ_B = W_B S W_Bᵀ,
    Γ_C = W_C S W_Cᵀ. Then y_t,i = P_t,i + R_t,i with the present term
    P_t,i = δ_i (u_tᵀ Q_0 u_t) u_t,i + D_i u_t,i and the history term
    R_t,i = δ_i Σ_{s<t} (u_tᵀ W_Cᵀ Λ_i^{t-s} W_B u_s) u_s,i, Λ_i^τ = diag_k(λ_ik^τ). Isserlis'
    theorem gives, with ḡ_ik = ⟨Σ_{τ=1}^{t-1} λ_ik^τ⟩_t, Π̄_ikjl = ⟨Σ_{τ=1}^{t-1} (λ_ik λ_jl)^τ⟩_t
    and Ḡ_ikjl = ⟨g_ik(t) g_jl(t)⟩_t (token averages, closed-form geometric sums):

        PP = δδᵀ⊙(c₂ S + 4q SQ_sS + 8 SQ_sSQ_sS) + (δDᵀ + Dδᵀ)⊙(q S + 2 SQ_sS) + DDᵀ⊙S,
             c₂ = q² + 2 tr((Q_s S)²)
        PR = (diag(qδ + D) S + 2 diag(δ) SQ_sS) M̄,   M̄[:, j] = δ_j W_Cᵀ (ḡ_j ⊙ β[:, j])
        RR_ij = δ_iδ_j Σ_kl [ β_ki β_lj Γ_C,kl Ḡ_ikjl + S_ij Γ_B,kl Γ_C,kl Π̄_ikjl
                              + β_kj β_li Γ_C,kl Π̄_ikjl ]
        Ȳ = PP + PR + PRᵀ + RR.

    Since S ∝ σ², Ȳ = σ² Y₁ + σ⁴ Y₂ + σ⁶ Y₃ (see :func:`ssm_output_moment_terms`).
    """
    y1, y2, y3 = ssm_output_moment_terms(w, n_tokens=n_tokens, max_block_elements=max_block_elements)
    return sigma2 * y1 + sigma2**2 * y2 + sigma2**3 * y3


def ssm_output_moment_terms(
    w: MambaWeights, *, n_tokens: int, max_block_elements: int = 1 << 24
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Y₁, Y₂, Y₃) with Ȳ = σ² Y₁ + σ⁴ Y₂ + σ⁶ Y₃ (formulas in :func:`ssm_output_second_moment`).

    Y₁ = DDᵀ⊙S, Y₂ = (δDᵀ + Dδᵀ)⊙(qS + 2SQ_sS) + diag(D) S M̄ + (…)ᵀ, Y₃ the rest, all at σ² = 1.
    """
    if n_tokens < 1:
        raise ConfigError(f"theory n_tokens: got {n_tokens}; expected >= 1")
    f64 = {"dtype": torch.float64}
    wx, wb, wc = w.w_x.to(**f64), w.w_b.to(**f64), w.w_c.to(**f64)
    conv, d_skip = w.conv.to(**f64), w.d.to(**f64)
    delta = torch.nn.functional.softplus(w.b_dt.to(**f64))
    log_lam = delta[:, None] * -torch.exp(w.a_log.to(**f64))  # [m, N], < 0
    s = 0.25 * (wx @ wx.T) * (conv @ conv.T)  # S at σ² = 1
    q0 = wc.T @ wb
    qs = (q0 + q0.T) / 2
    q = float(torch.trace(qs @ s))
    sqs = s @ qs @ s
    c2 = q**2 + 2.0 * float(torch.trace(qs @ s @ qs @ s))
    dd, ddt = torch.outer(delta, delta), torch.outer(delta, d_skip)
    beta = wb @ s  # [N, m]
    gamma_b, gamma_c = wb @ s @ wb.T, wc @ s @ wc.T
    g_bar = _geometric_lag_mean(log_lam, n_tokens)  # [m, N]
    m_bar = (wc.T @ (g_bar.T * beta)) * delta[None, :]
    pr2 = d_skip[:, None] * s @ m_bar
    pr3 = (q * delta[:, None] * s + 2.0 * delta[:, None] * sqs) @ m_bar

    m, n_state = log_lam.shape
    rr = torch.empty_like(s)
    rows = max(1, max_block_elements // (m * n_state * n_state))
    gbc = gamma_b * gamma_c
    for i0 in range(0, m, rows):
        i1 = min(m, i0 + rows)
        la = log_lam[i0:i1, :, None, None]  # [rows, N, 1, 1]
        lb = log_lam[None, None, :, :]  # [1, 1, m, N]
        g_prod = _geometric_product_mean(la, lb, n_tokens)  # [rows, N, m, N]
        pi_bar = _geometric_lag_mean(la + lb, n_tokens)
        rr1 = torch.einsum("ki,lj,kl,ikjl->ij", beta[:, i0:i1], beta, gamma_c, g_prod)
        rr2 = torch.einsum("kl,ikjl->ij", gbc, pi_bar)
        rr3 = torch.einsum("kj,li,kl,ikjl->ij", beta, beta[:, i0:i1], gamma_c, pi_bar)
        rr[i0:i1] = rr1 + s[i0:i1] * rr2 + rr3
    y1 = torch.outer(d_skip, d_skip) * s
    y2 = (ddt + ddt.T) * (q * s + 2.0 * sqs) + pr2 + pr2.T
    y3 = dd * (c2 * s + 4.0 * q * sqs + 8.0 * sqs @ qs @ s) + pr3 + pr3.T + dd * rr
    return y1, y2, y3


def closed_form_ssm_energy(w: MambaWeights, *, n_tokens: int, sigma2: float) -> float:
    """E||y||² per token of the linearised S6 output y (our Theorem 3): tr(Ȳ).

    See :func:`ssm_output_second_moment` for Ȳ and the approximations (M-Δ, M-conv).
    """
    return float(torch.trace(ssm_output_second_moment(w, n_tokens=n_tokens, sigma2=sigma2)))


def closed_form_mamba_energy(w: MambaWeights, *, n_tokens: int, sigma2: float) -> float:
    """E||F(h)||² per token of the linearised Mamba block (our Theorem 4).

    With G = W_outᵀ W_out, Σ_z = σ² W_z W_zᵀ and Ȳ from :func:`ssm_output_second_moment`,
    M-gate gives

        E = (1/4) Σ_ij G_ij Ȳ_ij (Σ_z)_ij.

    Under M-gate the mean is 0 (E z = 0), so Tr Σ = E; the linearised block's true mean is
    not zero (F is even in h: y is odd, the gate z/2 is odd), which M-gate misses.
    """
    y_bar = ssm_output_second_moment(w, n_tokens=n_tokens, sigma2=sigma2)
    wz, wo = w.w_z.to(torch.float64), w.w_out.to(torch.float64)
    return 0.25 * float((wo.T @ wo * y_bar * (sigma2 * wz @ wz.T)).sum())


# --- Theorem 5 ---------------------------------------------------------------------------------


def mamba_energy_coefficients(w: MambaWeights, *, n_tokens: int) -> tuple[float, float, float]:
    """(a, b, c) with closed_form_mamba_energy = a σ⁴ + b σ⁶ + c σ⁸.

    From Ȳ = σ² Y₁ + σ⁴ Y₂ + σ⁶ Y₃ and Σ_z = σ² W_z W_zᵀ: a = ¼ Σ G ⊙ Y₁ ⊙ W_zW_zᵀ, etc.
    a is the D-skip term, b the skip x scan cross term, c the pure selective-scan term.
    """
    wz, wo = w.w_z.to(torch.float64), w.w_out.to(torch.float64)
    weight = wo.T @ wo * (wz @ wz.T)
    terms = ssm_output_moment_terms(w, n_tokens=n_tokens)
    a, b, c = (0.25 * float((weight * y).sum()) for y in terms)
    return a, b, c


def theorem5_crossover_sigma2(wt: TransformerWeights, wm: MambaWeights, *, n_tokens: int) -> float:
    """Smallest σ² at which the closed forms reverse Theorem 5 (E_Mamba >= E_Trans), else inf.

    E_Trans = t σ² (linear in σ²) and E_Mamba = a σ⁴ + b σ⁶ + c σ⁸, so the reversal is the
    smallest positive root s of c s³ + b s² + a s - t = 0.
    """
    t = closed_form_transformer_energy(wt, n_tokens=n_tokens, sigma2=1.0)
    a, b, c = mamba_energy_coefficients(wm, n_tokens=n_tokens)
    roots = np.roots([c, b, a, -t])
    positive = [r.real for r in roots if abs(r.imag) <= 1e-9 * abs(r) and r.real > 0]
    return min(positive) if positive else math.inf
