"""Depthwise causal 1-D convolution + SiLU over time-major tensors.

Computes, for every batch row b, position t and channel d (kernel width K)::

    y[b, t, d] = silu(bias[d] + sum_k weight[d, k] * x[b, t - K + 1 + k, d])

with zeros before the sequence start, then optionally multiplies by a padding mask
``mask[b, t]``. This is ``nn.Conv1d(groups=channels, padding=K - 1)`` cut to the first
``n_tokens`` outputs, as in HF's Mamba mixers, but on the ``(batch, n_tokens, channels)``
layout that the input projection produces, so no transposes are needed around it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["causal_conv1d_silu", "causal_conv1d_silu_reference", "causal_conv1d_silu_triton"]

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None


def _check(x: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None) -> None:
    if x.dim() != 3:
        raise ValueError(f"causal_conv1d: x must be (batch, n_tokens, channels), got {tuple(x.shape)}")
    if weight.dim() != 2 or weight.shape[0] != x.shape[2]:
        raise ValueError(f"causal_conv1d: weight must be (channels={x.shape[2]}, width), got {tuple(weight.shape)}")
    if bias is not None and bias.shape != (x.shape[2],):
        raise ValueError(f"causal_conv1d: bias must be (channels={x.shape[2]},), got {tuple(bias.shape)}")
    if mask is not None and mask.shape != x.shape[:2]:
        raise ValueError(f"causal_conv1d: mask must be (batch, n_tokens)={tuple(x.shape[:2])}, got {tuple(mask.shape)}")


def causal_conv1d_silu_reference(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, *, mask: Tensor | None = None
) -> Tensor:
    """Causal depthwise conv + SiLU through ``F.conv1d`` (HF's torch path).

    Parameters
    ----------
    x : Tensor of shape (batch, n_tokens, channels)
    weight : Tensor of shape (channels, width)
    bias : Tensor of shape (channels,), optional
    mask : Tensor of shape (batch, n_tokens), optional
        Multiplies the output (HF's ``apply_mask_to_padding_states``).

    Returns
    -------
    Tensor of shape (batch, n_tokens, channels)
        Contiguous, in the dtype of ``x``.
    """
    _check(x, weight, bias, mask)
    n_tokens, width = x.shape[1], weight.shape[1]
    y = F.conv1d(x.transpose(1, 2).to(weight.dtype), weight.unsqueeze(1), bias, padding=width - 1, groups=x.shape[2])[
        :, :, :n_tokens
    ]
    y = F.silu(y).transpose(1, 2)
    if mask is not None:
        y = y * mask[:, :, None].to(y.dtype)
    return y.to(x.dtype).contiguous()


if triton is not None:

    @triton.jit
    def _causal_conv1d_silu_kernel(
        x_ptr,
        w_ptr,
        bias_ptr,
        mask_ptr,
        out_ptr,
        n_tokens,
        channels,
        s_x_b,
        s_x_t,
        s_m_b,
        s_o_b,
        s_o_t,
        WIDTH: tl.constexpr,
        BLOCK_T: tl.constexpr,
        BLOCK_D: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        HAS_MASK: tl.constexpr,
    ):
        pid_t = tl.program_id(0)
        pid_d = tl.program_id(1)
        pid_b = tl.program_id(2).to(tl.int64)
        offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < channels
        x_base = x_ptr + pid_b * s_x_b
        acc = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
        for k in tl.static_range(WIDTH):
            src = offs_t - (WIDTH - 1) + k
            ok = (src >= 0) & (src < n_tokens)
            xk = tl.load(x_base + src[:, None] * s_x_t + offs_d[None, :], mask=ok[:, None] & mask_d[None, :], other=0.0)
            wk = tl.load(w_ptr + offs_d * WIDTH + k, mask=mask_d, other=0.0)
            acc += xk.to(tl.float32) * wk.to(tl.float32)[None, :]
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
        acc = acc * tl.sigmoid(acc)
        in_t = offs_t < n_tokens
        if HAS_MASK:
            m = tl.load(mask_ptr + pid_b * s_m_b + offs_t, mask=in_t, other=0).to(tl.float32)
            acc = acc * m[:, None]
        o = out_ptr + pid_b * s_o_b + offs_t[:, None] * s_o_t + offs_d[None, :]
        tl.store(o, acc.to(out_ptr.dtype.element_ty), mask=in_t[:, None] & mask_d[None, :])


def causal_conv1d_silu_triton(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, *, mask: Tensor | None = None
) -> Tensor:
    """Causal depthwise conv + SiLU on a CUDA device through a Triton kernel.

    Same parameters as :func:`causal_conv1d_silu_reference`; ``x`` may be a strided view
    (stride 1 on the channel axis). Accumulates in float32.

    Returns
    -------
    Tensor of shape (batch, n_tokens, channels)
        Contiguous, in the dtype of ``x``.
    """
    if triton is None:
        raise RuntimeError("causal_conv1d_silu_triton needs Triton; use causal_conv1d_silu_reference")
    _check(x, weight, bias, mask)
    if x.stride(2) != 1:
        raise ValueError(f"causal_conv1d_silu_triton: x needs stride 1 on the channel axis, got {x.stride()}")
    batch, n_tokens, channels = x.shape
    w = weight.contiguous()
    out = torch.empty(batch, n_tokens, channels, dtype=x.dtype, device=x.device)
    m = mask.contiguous() if mask is not None else None
    block_t, block_d = 32, 128
    grid = (triton.cdiv(n_tokens, block_t), triton.cdiv(channels, block_d), batch)
    _causal_conv1d_silu_kernel[grid](
        x,
        w,
        bias if bias is not None else w,
        m if m is not None else w,
        out,
        n_tokens,
        channels,
        x.stride(0),
        x.stride(1),
        m.stride(0) if m is not None else 0,
        out.stride(0),
        out.stride(1),
        WIDTH=w.shape[1],
        BLOCK_T=block_t,
        BLOCK_D=block_d,
        HAS_BIAS=bias is not None,
        HAS_MASK=m is not None,
        num_warps=4,
    )
    return out


def causal_conv1d_silu(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, *, mask: Tensor | None = None, impl: str = "auto"
) -> Tensor:
    """Causal depthwise conv + SiLU with the implementation chosen by ``impl``.

    Parameters
    ----------
    x, weight, bias, mask
        See :func:`causal_conv1d_silu_reference`.
    impl : {"auto", "triton", "torch"}
        ``"auto"``: Triton for CUDA tensors when Triton imports, else ``F.conv1d``.

    Returns
    -------
    Tensor of shape (batch, n_tokens, channels)
    """
    if impl not in ("auto", "triton", "torch"):
        raise ValueError(f"causal_conv1d_silu: impl must be 'auto', 'triton' or 'torch', got {impl!r}")
    if impl == "triton" or (impl == "auto" and x.is_cuda and triton is not None):
        return causal_conv1d_silu_triton(x, weight, bias, mask=mask)
    return causal_conv1d_silu_reference(x, weight, bias, mask=mask)
