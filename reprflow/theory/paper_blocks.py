"""The blocks of the paper's own theorems (Hoang et al. 2025, §4 and Appendix A), batched.

These are the settings in which Theorems 1-6 are stated; the project's extensions (causal
attention, selective B/C, the D skip; :mod:`reprflow.theory.transformer` and
:mod:`reprflow.theory.mamba`) are kept apart.

**Transformer** (Eq. 5, Theorem 1, Eq. 32): single head, *non-causal* attention over all n tokens,
FFN with biases, d_ff = 4d, no LayerNorm, no output projection. Column-vector convention
(v_j = W_V h_j):

    Attn_t = Σ_{j=1}^n a_tj W_V h_j,   a_t = softmax_j((W_Q h_t)·(W_K h_j) / √d)
    F(h)   = Attn(h) + W_2 GELU(W_1 (h + Attn(h)) + b_1) + b_2

**Mamba** (Eq. 6, Theorems 3-4, Eq. 46-63): the S6 recursion with *deterministic* parameters
(Assumption 3): per channel i of m = expand·d channels a diagonal state of size N,

    h'   = SiLU(conv(W_h h)),  z = SiLU(W_z h)            (depthwise causal conv, K taps)
    s_t  = Ā ∘ s_{t-1} + B̄_t h'_t,  Ā_ik = exp(δ_i A_ik),  (B̄_t)_ik = δ_i B_{t,k}
    o_t,i = Σ_k C_{t,k} s_{t,i,k}
    F(h) = o ∘ z                   (Theorems 3-5: no output projection, no D skip)
    F(h) = (o ∘ z) W_outᵀ          (``project=True``: with Eq. 6's g, for residual stacks)

In the paper's matrix notation (state of size mN), C_t B̄_t = diag_i(δ_i C_t·B_t) and
M_{t,j} = C_t (Π_{k=j+1}^t Ā_k) B̄_j W_h' = diag_i(K_i[t, j]) W_h' with the kernel
K_i[t, j] = δ_i Σ_k C_{t,k} λ_ik^{t-j} B_{j,k}, λ_ik = exp(δ_i A_ik), and W_h' = diag(conv tap 0) W_h.
B_t and C_t are fixed across draws (drawn once per position from N(0, 1), the S4D scale), so
the selection does not depend on the input, as the paper's derivation assumes.

The *linearised* blocks replace GELU and both SiLUs by x/2 (Assumption 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as fn

from reprflow.theory.mamba import causal_depthwise_conv
from reprflow.theory.weights import DT_MAX, DT_MIN, FFN_MULT, WeightSource


@dataclass(frozen=True)
class PaperTransformerWeights:
    """Shapes: ``w_q, w_k, w_v`` (d, d); ``w_1`` (4d, d); ``b_1`` (4d,); ``w_2`` (d, 4d); ``b_2`` (d,)."""

    w_q: torch.Tensor
    w_k: torch.Tensor
    w_v: torch.Tensor
    w_1: torch.Tensor
    b_1: torch.Tensor
    w_2: torch.Tensor
    b_2: torch.Tensor

    @property
    def hidden(self) -> int:
        return self.w_v.shape[0]

    def to(self, device, dtype) -> PaperTransformerWeights:
        return PaperTransformerWeights(*(t.to(device=device, dtype=dtype) for t in _fields(self)))


@dataclass(frozen=True)
class PaperMambaWeights:
    """Shapes (m channels, N states, K taps, up to ``n_max`` positions): ``w_h, w_z`` (m, d);
    ``conv`` (m, K), tap k multiplies x_{t-k}; ``delta`` (m,); ``a`` (m, N), negative;
    ``b_t, c_t`` (n_max, N); ``w_out`` (d, m)."""

    w_h: torch.Tensor
    w_z: torch.Tensor
    conv: torch.Tensor
    delta: torch.Tensor
    a: torch.Tensor
    b_t: torch.Tensor
    c_t: torch.Tensor
    w_out: torch.Tensor

    @property
    def hidden(self) -> int:
        return self.w_h.shape[1]

    @property
    def log_lambda(self) -> torch.Tensor:
        """log λ_ik = δ_i A_ik, shape (m, N); λ = diagonal of Ā (time-invariant)."""
        return self.delta[:, None] * self.a

    @property
    def w_h_prime(self) -> torch.Tensor:
        """W_h' = diag(conv tap 0) W_h, shape (m, d) (the paper's W_{h'_0})."""
        return self.conv[:, :1] * self.w_h

    def single_tap(self) -> PaperMambaWeights:
        """The same block with conv kernel 1 (taps >= 1 zeroed): h'_t = SiLU(W_h' h_t), the form
        in which Theorem 4's M_{t,j} is written."""
        conv = torch.zeros_like(self.conv)
        conv[:, 0] = self.conv[:, 0]
        return replace(self, conv=conv)

    def to(self, device, dtype) -> PaperMambaWeights:
        return PaperMambaWeights(*(t.to(device=device, dtype=dtype) for t in _fields(self)))


def _fields(w) -> list[torch.Tensor]:
    return [getattr(w, f) for f in w.__dataclass_fields__]


def _normal(shape, std: float, g: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64) * std


def sample_paper_transformer(
    hidden: int, *, source: WeightSource, bias_std: float, seed: int
) -> PaperTransformerWeights:
    """Draw the paper's Transformer block (float64, CPU); biases ~ N(0, bias_std²)."""
    g = torch.Generator().manual_seed(seed)
    d, f = hidden, FFN_MULT * hidden
    return PaperTransformerWeights(
        w_q=_normal((d, d), source.std("q_proj", d, d), g),
        w_k=_normal((d, d), source.std("k_proj", d, d), g),
        w_v=_normal((d, d), source.std("v_proj", d, d), g),
        w_1=_normal((f, d), source.std("fc_in", d, f), g),
        b_1=_normal((f,), bias_std, g),
        w_2=_normal((d, f), source.std("fc_out", f, d), g),
        b_2=_normal((d,), bias_std, g),
    )


def sample_paper_mamba(
    hidden: int, *, d_state: int, d_conv: int, expand: int, n_max: int, source: WeightSource,
    seed: int,
) -> PaperMambaWeights:  # fmt: skip
    """Draw the paper's Mamba block (float64, CPU).

    W_h, W_z (in_proj halves), the conv taps and W_out follow ``source`` with Mamba's fans;
    δ ~ logU(1e-3, 1e-1) and A_ik = -k (S4D-real), as Mamba initialises Δ and A_log;
    B_t, C_t ~ N(0, 1) for t = 1..n_max.
    """
    g = torch.Generator().manual_seed(seed)
    m = expand * hidden
    w_in = _normal((2 * m, hidden), source.std("in_proj", hidden, 2 * m), g)
    conv = _normal((m, d_conv), source.std("conv", d_conv, m * d_conv), g)
    log_dt = math.log(DT_MIN) + torch.rand(m, generator=g, dtype=torch.float64) * (math.log(DT_MAX) - math.log(DT_MIN))
    a = -torch.arange(1, d_state + 1, dtype=torch.float64).repeat(m, 1)
    return PaperMambaWeights(
        w_h=w_in[:m],
        w_z=w_in[m:],
        conv=conv,
        delta=torch.exp(log_dt),
        a=a,
        b_t=torch.randn(n_max, d_state, generator=g, dtype=torch.float64),
        c_t=torch.randn(n_max, d_state, generator=g, dtype=torch.float64),
        w_out=_normal((hidden, m), source.std("out_proj", m, hidden), g),
    )


def paper_attention(h: torch.Tensor, w: PaperTransformerWeights) -> torch.Tensor:
    """Single-head non-causal softmax attention (Eq. 32); odd in h (Proposition 2).

    h : (n_samples, n_tokens, d) -> (n_samples, n_tokens, d)
    """
    q, k, v = h @ w.w_q.T, h @ w.w_k.T, h @ w.w_v.T
    weights = torch.softmax((q @ k.transpose(1, 2)) / math.sqrt(h.shape[2]), dim=-1)
    return weights @ v


def paper_transformer_update(h: torch.Tensor, w: PaperTransformerWeights, *, linearized: bool) -> torch.Tensor:
    """F(h) = Attn + W_2 GELU(W_1 (h + Attn) + b_1) + b_2; GELU(x) -> x/2 if ``linearized``.

    h : (n_samples, n_tokens, d) -> (n_samples, n_tokens, d)
    """
    a = paper_attention(h, w)
    pre = (h + a) @ w.w_1.T + w.b_1
    act = pre / 2 if linearized else fn.gelu(pre)
    return a + act @ w.w_2.T + w.b_2


def paper_scan(hp: torch.Tensor, w: PaperMambaWeights) -> torch.Tensor:
    """o_t,i = Σ_k C_{t,k} s_{t,i,k}, s_t = λ ∘ s_{t-1} + δ_i B_{t,k} h'_{t,i}, s_0 = 0.

    hp : (n_samples, n_tokens, m) -> (n_samples, n_tokens, m); needs n_tokens <= n_max.
    """
    n = hp.shape[1]
    if n > w.b_t.shape[0]:
        raise ValueError(f"paper Mamba weights cover {w.b_t.shape[0]} positions; got {n} tokens")
    lam = torch.exp(w.log_lambda)  # [m, N]
    state = torch.zeros(hp.shape[0], *lam.shape, dtype=hp.dtype, device=hp.device)
    out = torch.empty_like(hp)
    for t in range(n):
        state = lam * state + (w.delta * hp[:, t])[:, :, None] * w.b_t[t]
        out[:, t] = state @ w.c_t[t]
    return out


def paper_mamba_update(
    h: torch.Tensor, w: PaperMambaWeights, *, linearized: bool, project: bool = False
) -> torch.Tensor:
    """F(h) = S6(h') ∘ z (``project``: times W_outᵀ); SiLU(x) -> x/2 in both places if
    ``linearized``.

    h : (n_samples, n_tokens, d) -> (n_samples, n_tokens, m), or (…, d) with ``project``
    """
    act = (lambda x: x / 2) if linearized else fn.silu
    hp = act(causal_depthwise_conv(h @ w.w_h.T, w.conv))
    f = paper_scan(hp, w) * act(h @ w.w_z.T)
    return f @ w.w_out.T if project else f
