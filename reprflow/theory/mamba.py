"""The one-layer Mamba block of the paper's Eq. 6, batched over Monte Carlo draws.

With m = expand * hidden channels and N = d_state:

    x = W_x h,  z = W_z h                               (in_proj, split)
    u_t = SiLU(sum_k conv[:, k] * x_{t-k})              (depthwise causal conv, kernel K, zero left pad)
    Δ_t = softplus(W_dt W_xdt u_t + b_dt),  B_t = W_B u_t,  C_t = W_C u_t     (selection, S6)
    s_t = exp(Δ_t A) * s_{t-1} + (Δ_t * u_t) B_t,       A = -exp(A_log)     (ZOH with B̄ = Δ B)
    y_t = s_t C_t + D * u_t
    F(h)_t = W_out (y_t * SiLU(z_t))

No biases except b_dt. The *linearised* block (Assumption 4) replaces both SiLUs by x / 2;
the softplus in Δ stays exact (it sets a time scale, not an activation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as fn

from reprflow.theory.weights import MambaWeights


def _silu(x: torch.Tensor, linearized: bool) -> torch.Tensor:
    return x / 2 if linearized else fn.silu(x)


def causal_depthwise_conv(x: torch.Tensor, conv: torch.Tensor) -> torch.Tensor:
    """sum_k conv[:, k] * x_{t-k}, zero left padding.

    Parameters
    ----------
    x : Tensor of shape (n_samples, n_tokens, m)
    conv : Tensor of shape (m, K)

    Returns
    -------
    Tensor of shape (n_samples, n_tokens, m)
    """
    n = x.shape[1]
    out = x * conv[:, 0]
    for k in range(1, min(conv.shape[1], n)):
        out[:, k:] += x[:, : n - k] * conv[:, k]
    return out


def selective_scan(
    u: torch.Tensor, delta: torch.Tensor, b: torch.Tensor, c: torch.Tensor, w: MambaWeights
) -> torch.Tensor:
    """S6 recurrence y_t = C_t s_t + D u_t with s_t = exp(Δ_t A) s_{t-1} + Δ_t u_t B_t.

    Parameters
    ----------
    u, delta : Tensor of shape (n_samples, n_tokens, m)
    b, c : Tensor of shape (n_samples, n_tokens, N)
    w : MambaWeights (uses ``a_log`` and ``d``)

    Returns
    -------
    Tensor of shape (n_samples, n_tokens, m)
    """
    a = -torch.exp(w.a_log)  # [m, N]
    state = torch.zeros(u.shape[0], u.shape[2], a.shape[1], dtype=u.dtype, device=u.device)
    ys = torch.empty_like(u)
    for t in range(u.shape[1]):
        d_t = delta[:, t, :, None]  # [n_samples, m, 1]
        state = torch.exp(d_t * a) * state + (d_t * u[:, t, :, None]) * b[:, t, None, :]
        ys[:, t] = (state * c[:, t, None, :]).sum(-1)
    return ys + w.d * u


def mamba_update(h: torch.Tensor, w: MambaWeights, *, linearized: bool) -> torch.Tensor:
    """Residual update F(h) of one Mamba block (Eq. 6).

    Parameters
    ----------
    h : Tensor of shape (n_samples, n_tokens, hidden)
    w : MambaWeights
    linearized : bool
        If true, SiLU(x) is replaced by x / 2 in both places (Assumption 4).

    Returns
    -------
    Tensor of shape (n_samples, n_tokens, hidden)
    """
    x, z = h @ w.w_x.T, h @ w.w_z.T
    u = _silu(causal_depthwise_conv(x, w.conv), linearized)
    delta = fn.softplus((u @ w.w_xdt.T) @ w.w_dt.T + w.b_dt)
    y = selective_scan(u, delta, u @ w.w_b.T, u @ w.w_c.T, w)
    return (y * _silu(z, linearized)) @ w.w_out.T
