"""The paper's Theorems 1-5 as stated, plus exact references in the same setting (float64).

Units follow the paper: F(h⁰) ∈ R^{n×p}, Tr Σ_F and ||μ_F||² are sums over the n tokens, and
E[St²] ∝ E||F||_F² = Tr Σ_F + ||μ_F||_F² (Proposition 1). Blocks and notation:
:mod:`reprflow.theory.paper_blocks`. "Stated" functions evaluate the theorem's formula with the
block's weights (Assumption 3: fixed weights); "reference" functions are our derivation of the
same quantity for the linearised block under the named simplification, used to attribute a
disagreement (docs/theory.md, "Paper Theorems 1-6").

Mamba scale κ: with both SiLUs linearised (Assumption 4), F_t = κ diag(W_z h_t) Σ_j M_{t,j} h_j
with κ = 1/4; Theorem 3 uses κ = 1/4, the proof of Theorem 4 (Eq. 61) writes κ = 1/2.
"""

from __future__ import annotations

import math

import torch

from reprflow.theory.paper_blocks import PaperMambaWeights, PaperTransformerWeights

KAPPA_ASSUMPTION4 = 0.25  # both SiLUs -> x/2 (Theorem 3's σ²/4)
KAPPA_EQ61 = 0.5  # the proof of Theorem 4, Eq. 61-62 (its σ⁴/4 = κ² σ⁴)


# --- Transformer -------------------------------------------------------------------------------


def _t1_t2(w: PaperTransformerWeights) -> tuple[torch.Tensor, torch.Tensor]:
    t2 = w.w_2 @ w.w_1 / 2
    return torch.eye(w.hidden, dtype=t2.dtype) + t2, t2


def theorem1_mean(w: PaperTransformerWeights) -> torch.Tensor:
    """Theorem 1: μ_F ≈ ½ W_2 b_1 + b_2 for every token, shape (d,)."""
    return w.w_2 @ w.b_1 / 2 + w.b_2


def theorem2_trace(w: PaperTransformerWeights, *, n_tokens: int, sigma2: float) -> float:
    """Theorem 2 (Eq. 12) as stated: σ² Tr(T₁T₁ᵀ) + n σ² Tr(T₂T₂ᵀ) + 2σ² Tr(T₁ W_V T₂ᵀ),
    T₁ = I + ½W₂W₁, T₂ = ½W₂W₁ (cross term kept, as the theorem states it)."""
    t1, t2 = _t1_t2(w)
    return sigma2 * float((t1**2).sum() + n_tokens * (t2**2).sum() + 2 * torch.trace(t1 @ w.w_v @ t2.T))


def uniform_attention_trace(w: PaperTransformerWeights, *, n_tokens: int, sigma2: float) -> float:
    """Reference: Tr Σ_F of the linearised block when a_tj = 1/n exactly (W_Qᵀ W_K = 0):
    σ² [Tr(T₁ W_V W_Vᵀ T₁ᵀ) + n Tr(T₂T₂ᵀ) + 2 Tr(T₁ W_V T₂ᵀ)]. Theorem 2 is this with
    W_V W_Vᵀ ≈ I in the first term (the proof's Eq. 39)."""
    t1, t2 = _t1_t2(w)
    p = t1 @ w.w_v
    return sigma2 * float((p**2).sum() + n_tokens * (t2**2).sum() + 2 * torch.trace(p @ t2.T))


# --- Mamba -------------------------------------------------------------------------------------


KernelTerms = tuple[torch.Tensor, torch.Tensor]


def mamba_kernel_terms(w: PaperMambaWeights, n_tokens: int) -> KernelTerms:
    """(diag, hist), each of shape (n, m): diag[t, i] = K_i[t, t] = δ_i C_t·B_t and
    hist[t, i] = Σ_{j<t} K_i[t, j]², K_i[t, j] = δ_i Σ_k C_{t,k} λ_ik^{t-j} B_{j,k}.

    Recursion over t on P_i(t) = Σ_{j<t} (λ_i λ_iᵀ)^{∘(t-j)} ∘ B_j B_jᵀ (shape (m, N, N)):
    P_i(t+1) = λ_iλ_iᵀ ∘ (P_i(t) + B_t B_tᵀ), hist[t, i] = δ_i² C_tᵀ P_i(t) C_t.
    They depend on δ, A, B_t, C_t only (not on the conv or W_h, W_z), so the forms below take
    them precomputed as ``terms`` (the same for a block and its :meth:`single_tap`).
    """
    lam = torch.exp(w.log_lambda.to(torch.float64))
    lam2 = lam[:, :, None] * lam[:, None, :]  # [m, N, N]
    b, c, delta = (x.to(torch.float64) for x in (w.b_t, w.c_t, w.delta))
    p = torch.zeros_like(lam2)
    diag = torch.empty(n_tokens, lam.shape[0], dtype=torch.float64)
    hist = torch.empty_like(diag)
    for t in range(n_tokens):
        diag[t] = delta * (c[t] @ b[t])
        hist[t] = delta**2 * torch.einsum("k,ikl,l->i", c[t], p, c[t])
        p = lam2 * (p + torch.outer(b[t], b[t]))
    return diag, hist


def _row_products(w: PaperMambaWeights) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(||w_h',i||², ||w_z,i||², w_h',i · w_z,i), each (m,)."""
    wh, wz = w.w_h_prime.to(torch.float64), w.w_z.to(torch.float64)
    return (wh**2).sum(1), (wz**2).sum(1), (wh * wz).sum(1)


def theorem3_mean(
    w: PaperMambaWeights, *, n_tokens: int, sigma2: float, terms: KernelTerms | None = None
) -> torch.Tensor:
    """Theorem 3 (Eq. 13) as stated: σ²/(4n) Σ_t diag(C_t B̄_t W_h'₀ W_zᵀ), shape (m,) — the
    token average of E[F_t] (κ = 1/4)."""
    diag, _ = terms or mamba_kernel_terms(w, n_tokens)
    _, _, hz = _row_products(w)
    return sigma2 / (4 * n_tokens) * diag.sum(0) * hz


def mamba_token_means(
    w: PaperMambaWeights,
    *,
    n_tokens: int,
    sigma2: float,
    kappa: float = KAPPA_ASSUMPTION4,
    terms: KernelTerms | None = None,
) -> torch.Tensor:
    """Reference: E[F_t] = κ σ² diag(M_tt W_zᵀ) per token, shape (n, m) (Eq. 65-66 with κ)."""
    diag, _ = terms or mamba_kernel_terms(w, n_tokens)
    _, _, hz = _row_products(w)
    return kappa * sigma2 * diag * hz


def theorem4_trace(w: PaperMambaWeights, *, n_tokens: int, sigma2: float, terms: KernelTerms | None = None) -> float:
    """Theorem 4 (Eq. 14) as stated, summed over t as its proof says ("take the trace and sum
    over t"): Σ_t σ⁴/4 {Tr[(W_zW_zᵀ) ∘ S_t] + Tr[(M_tt W_zᵀ) ∘ (W_z M_ttᵀ)]}, S_t = Σ_{j<t}.
    Needs a single-tap conv (M_{t,j} has one W_h')."""
    diag, hist = terms or mamba_kernel_terms(w, n_tokens)
    hh, zz, hz = _row_products(w)
    return sigma2**2 / 4 * float((zz * hh * hist + diag**2 * hz**2).sum())


def mamba_trace(
    w: PaperMambaWeights,
    *,
    n_tokens: int,
    sigma2: float,
    kappa: float = KAPPA_ASSUMPTION4,
    terms: KernelTerms | None = None,
) -> float:
    """Reference: Σ_t Tr Σ_{F_t} of the linearised single-tap block, exact by Isserlis:
    κ² σ⁴ Σ_t Σ_i [||w_z,i||² ||w_h',i||² (hist_ti + diag_ti²) + diag_ti² (w_h',i·w_z,i)²].
    Theorem 4 drops the j = m = t term ||w_z,i||² ||w_h',i||² diag_ti² (the
    (M_tt M_ttᵀ) ∘ (W_zW_zᵀ) term of Eq. 69's Isserlis expansion) and writes κ² = 1/4."""
    diag, hist = terms or mamba_kernel_terms(w, n_tokens)
    hh, zz, hz = _row_products(w)
    return kappa**2 * sigma2**2 * float((zz * hh * (hist + diag**2) + diag**2 * hz**2).sum())


# --- Theorem 5 ---------------------------------------------------------------------------------


def transformer_energy_coefficients(w: PaperTransformerWeights, *, n_tokens: int) -> tuple[float, float]:
    """(e₀, e₁) with E||F_Trans||_F² = e₀ + e₁ σ² for the linearised block under exactly
    uniform attention: e₀ = n ||½W₂b₁ + b₂||², e₁ = :func:`uniform_attention_trace` at σ² = 1."""
    mu = theorem1_mean(w)
    return n_tokens * float(mu @ mu), uniform_attention_trace(w, n_tokens=n_tokens, sigma2=1.0)


def mamba_energy_coefficient(
    w: PaperMambaWeights,
    *,
    n_tokens: int,
    kappa: float = KAPPA_ASSUMPTION4,
    terms: KernelTerms | None = None,
) -> float:
    """m₂ with E||F_Mamba||_F² = m₂ σ⁴ for the linearised single-tap block (trace + mean²)."""
    terms = terms or mamba_kernel_terms(w, n_tokens)
    mu = mamba_token_means(w, n_tokens=n_tokens, sigma2=1.0, kappa=kappa, terms=terms)
    return mamba_trace(w, n_tokens=n_tokens, sigma2=1.0, kappa=kappa, terms=terms) + float((mu**2).sum())


def crossover_sigma2(e0: float, e1: float, m2: float) -> float:
    """Smallest σ² > 0 with m₂ σ⁴ >= e₀ + e₁ σ² (the positive root), inf if m₂ <= 0."""
    if m2 <= 0:
        return math.inf
    return (e1 + math.sqrt(e1**2 + 4 * m2 * e0)) / (2 * m2)


def proof_constants(wt: PaperTransformerWeights, wm: PaperMambaWeights, *, n_tokens: int) -> dict[str, float]:
    """The constants of the proof of Theorem 5 for these (fixed) weights, and x_max.

    Transformer (per token, with the cross term dropped as the proof does): α_T = ||½W₂b₁+b₂||²,
    β_T = ||W₂W₁||_F², γ_T = Tr(T₁T₁ᵀ) = d + Tr(W₂W₁) + β_T/4. Mamba: ρ = max_t ||Ā_t||₂,
    c = max_t ||C_t||₂, b = max_t ||B̄_t||₂, h = ||W_h'||₂, z = ||W_z||_F,
    β_M = z²c²b²h² (1 + 1/(1-ρ²)), α_M = Σ_t ||C_t B̄_t W_h' W_zᵀ||_F² over t = 1..n_tokens.
    ``x_max`` is the proof's threshold with α_M at n = 1 (where Q(1) is solved);
    ``x_max_n`` solves the same per-token comparison at n_tokens with both sides summed over
    the n tokens (per token: (β_M/4 + α_M/(16 n)) x² = (β_T/4 + γ_T/n) x + α_T); it equals
    ``x_max`` at n = 1.
    """
    d = wt.hidden
    w21 = wt.w_2 @ wt.w_1
    mu = theorem1_mean(wt)
    alpha_t = float(mu @ mu)
    beta_t = float((w21**2).sum())
    gamma_t = d + float(torch.trace(w21)) + beta_t / 4
    lam = torch.exp(wm.log_lambda)
    rho = float(lam.max())
    c = float(torch.linalg.vector_norm(wm.c_t[:n_tokens], dim=1).max())
    b = float(wm.delta.max() * torch.linalg.vector_norm(wm.b_t[:n_tokens], dim=1).max())
    h = float(torch.linalg.matrix_norm(wm.w_h_prime, ord=2))
    z = float(torch.linalg.matrix_norm(wm.w_z))
    beta_m = z**2 * c**2 * b**2 * h**2 * (1 + 1 / (1 - rho**2))
    # ||C_t B̄_t W_h' W_zᵀ||_F² with C_t B̄_t = diag_i(δ_i C_t·B_t)
    g = wm.w_h_prime @ wm.w_z.T
    row2 = (g**2).sum(1)  # [m]
    cb = wm.delta[None, :] * (wm.c_t[:n_tokens] * wm.b_t[:n_tokens]).sum(1)[:, None]  # [n, m]
    alpha_m_t = (cb**2 * row2).sum(1)  # [n]
    alpha_m1 = float(alpha_m_t[0])
    s = beta_t + 4 * gamma_t
    x_max = (s + math.sqrt(s**2 + 4 * (4 * beta_m + alpha_m1) * alpha_t)) / (2 * beta_m + alpha_m1 / 2)
    n = n_tokens
    x_max_n = crossover_sigma2(alpha_t, beta_t / 4 + gamma_t / n, beta_m / 4 + float(alpha_m_t.sum()) / (16 * n))
    return {
        "alpha_T": alpha_t, "beta_T": beta_t, "gamma_T": gamma_t, "rho": rho, "c": c, "b": b,
        "h": h, "z": z, "beta_M": beta_m, "alpha_M": float(alpha_m_t.sum()),
        "alpha_M_n1": alpha_m1, "x_max": x_max, "x_max_n": x_max_n,
    }  # fmt: skip
