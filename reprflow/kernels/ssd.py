"""Mamba-2 SSD scan as a plain recurrence: the torch reference of ``mamba_chunk_scan_combined``.

Per batch row, head h (scalar ``A[h] < 0``), head channel p and state n, with heads split
evenly over ``n_groups`` groups of ``B``/``C``::

    dt_t = clamp(softplus(dt_t + dt_bias), *dt_limit)        (softplus optional)
    s_t  = exp(dt_t[h] * A[h]) * s_{t-1} + dt_t[h] * x_t[h, p] * B_t[g(h), n]
    y_t  = sum_n C_t[g(h), n] * s_t[h, p, n] + D[h] * x_t[h, p]
    y_t  = y_t * silu(z_t)                                    (optional gate)

It loops in Python over tokens, so it is for checks and tests (the kernel chooser's
ground truth), never for a paper-size run. ``chunk_size`` is accepted for signature
compatibility and ignored (the recurrence has no chunks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ssd_reference"]


def ssd_reference(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
) -> Tensor:
    """Mamba-2 recurrence in the dtype of ``x`` (pass float64 for a ground truth).

    Parameters
    ----------
    x : Tensor of shape (batch, n_tokens, n_heads, head_dim)
    dt : Tensor of shape (batch, n_tokens, n_heads)
    A : Tensor of shape (n_heads,)
    B, C : Tensor of shape (batch, n_tokens, n_groups, d_state)
    chunk_size : int
        Ignored.
    D : Tensor of shape (n_heads,) or (n_heads, head_dim), optional
    z : Tensor of shape (batch, n_tokens, n_heads, head_dim), optional
    dt_bias : Tensor of shape (n_heads,), optional
    dt_softplus : bool
    dt_limit : (float, float)

    Returns
    -------
    Tensor of shape (batch, n_tokens, n_heads, head_dim)
        In the dtype of ``x``.
    """
    cd = x.dtype if x.dtype == torch.float64 else torch.float32
    batch, n_tokens, heads, head_dim = x.shape
    groups = B.shape[2]
    if heads % groups:
        raise ValueError(f"ssd_reference: n_heads={heads} is not a multiple of n_groups={groups}")
    d = dt.to(cd) + (dt_bias.to(cd) if dt_bias is not None else 0)
    d = F.softplus(d) if dt_softplus else d
    d = d.clamp(dt_limit[0], dt_limit[1])
    Bh = B.to(cd).repeat_interleave(heads // groups, dim=2)  # [batch, n_tokens, heads, d_state]
    Ch = C.to(cd).repeat_interleave(heads // groups, dim=2)
    xs = x.to(cd)
    s = torch.zeros(batch, heads, head_dim, B.shape[-1], dtype=cd, device=x.device)
    ys = []
    for t in range(n_tokens):
        decay = torch.exp(d[:, t] * A.to(cd))[:, :, None, None]
        s = decay * s + (d[:, t, :, None] * xs[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", s, Ch[:, t]))
    y = torch.stack(ys, dim=1)
    if D is not None:
        y = y + xs * (D.to(cd)[:, None] if D.dim() == 1 else D.to(cd))
    if z is not None:
        y = y * F.silu(z.to(cd))
    return y.to(x.dtype)
