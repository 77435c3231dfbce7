"""Mamba-1's causal conv + SiLU and its ``x_proj`` in one Triton kernel.

In a Mamba-1 mixer the conv writes ``u = silu(conv(x))`` (``(batch, n_tokens, d_inner)``, 671 MB
per layer at 64K tokens of Mamba-2.8B) and ``x_proj`` reads it straight back to compute
``x_dbl = u W^T`` (``(batch, n_tokens, dt_rank + 2 d_state)``: 192 columns). Both are bound by
that traffic, not by arithmetic. Here one program takes ``BLOCK_T`` tokens of one sequence and
walks the channels in blocks of ``BLOCK_K``: it computes the conv tile (the products of
:func:`reprflow.kernels.causal_conv1d.causal_conv1d_silu_triton`, in the same order), writes it
as ``u`` (the scan reads it) and multiplies the rounded tile into the ``x_dbl`` accumulators
on the tensor cores, so ``u`` is never read back. ``x_proj``'s weight (2 MB) is read from L2
by every program.

``u`` equals the conv kernel's output bit for bit; ``x_dbl`` is the product of the same
rounded ``u`` accumulated in float32 in another order than cuBLAS's, so it may differ from
``F.linear`` by one bf16 rounding step in some elements (its error against float64 is the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reprflow.kernels.causal_conv1d import causal_conv1d_silu_reference

__all__ = ["CONV_XPROJ_BLOCKS", "conv_xproj_reference", "conv_xproj_triton"]

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None


def conv_xproj_reference(
    x: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, proj_weight: Tensor, *, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``u = silu(causal_conv(x))`` and ``u @ proj_weight.T`` through torch (the unfused path).

    Parameters
    ----------
    x : Tensor of shape (batch, n_tokens, channels)
    conv_weight : Tensor of shape (channels, width)
    conv_bias : Tensor of shape (channels,), optional
    proj_weight : Tensor of shape (n_out, channels)
        ``x_proj``'s weight (no bias in Mamba-1).
    mask : Tensor of shape (batch, n_tokens), optional
        Multiplies ``u`` (HF's padding mask).

    Returns
    -------
    (u, x_dbl) : Tensors of shapes (batch, n_tokens, channels) and (batch, n_tokens, n_out)
        In the dtype of ``x``.
    """
    u = causal_conv1d_silu_reference(x, conv_weight, conv_bias, mask=mask)
    return u, F.linear(u, proj_weight.to(u.dtype))


if triton is not None:
    from reprflow.kernels.causal_conv1d import _conv_silu_tile

    @triton.jit
    def _conv_xproj_kernel(
        x_ptr,
        cw_ptr,
        cb_ptr,
        mask_ptr,
        w_ptr,
        u_ptr,
        dbl_ptr,
        n_tokens,
        channels,
        n_out,
        s_x_b,
        s_x_t,
        s_m_b,
        s_u_b,
        s_u_t,
        s_d_b,
        s_d_t,
        WIDTH: tl.constexpr,
        BLOCK_T: tl.constexpr,
        BLOCK_K: tl.constexpr,
        N1: tl.constexpr,
        N2: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        HAS_MASK: tl.constexpr,
        LOADS_FIRST: tl.constexpr,
    ):
        # One program: tokens pid_t * BLOCK_T .. + BLOCK_T of batch row pid_b, every channel
        # (channels % BLOCK_K == 0) and every output column (N1 + N2 >= n_out; N2 may be 0)
        pid_t = tl.program_id(0)
        pid_b = tl.program_id(1).to(tl.int64)
        offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        keep = offs_t < n_tokens
        x_row0 = x_ptr + pid_b * s_x_b
        if HAS_MASK:
            m = tl.load(mask_ptr + pid_b * s_m_b + offs_t, mask=keep, other=0).to(tl.float32)[:, None]
        n1 = tl.arange(0, N1)
        acc1 = tl.zeros([BLOCK_T, N1], dtype=tl.float32)
        if N2 > 0:
            n2 = N1 + tl.arange(0, N2)
            acc2 = tl.zeros([BLOCK_T, N2], dtype=tl.float32)
        for k0 in tl.range(0, channels, BLOCK_K):
            offs_d = k0 + tl.arange(0, BLOCK_K)
            y = _conv_silu_tile(
                x_row0,
                cw_ptr,
                cb_ptr,
                offs_t,
                offs_d,
                offs_d < channels,
                n_tokens,
                s_x_t,
                WIDTH,
                True,
                HAS_BIAS,
                LOADS_FIRST,
            )
            if HAS_MASK:
                y = y * m
            u = y.to(u_ptr.dtype.element_ty)
            tl.store(u_ptr + pid_b * s_u_b + offs_t[:, None] * s_u_t + offs_d[None, :], u, mask=keep[:, None])
            # x_proj's weight (n_out, channels) read as its transpose's (BLOCK_K, N) tile
            w1 = tl.load(w_ptr + n1[None, :] * channels + offs_d[:, None], mask=(n1 < n_out)[None, :], other=0.0)
            acc1 = tl.dot(u, w1, acc1)
            if N2 > 0:
                w2 = tl.load(w_ptr + n2[None, :] * channels + offs_d[:, None], mask=(n2 < n_out)[None, :], other=0.0)
                acc2 = tl.dot(u, w2, acc2)
        d_rows = dbl_ptr + pid_b * s_d_b + offs_t[:, None] * s_d_t
        tl.store(d_rows + n1[None, :], acc1.to(dbl_ptr.dtype.element_ty), mask=keep[:, None] & (n1 < n_out)[None, :])
        if N2 > 0:
            tl.store(
                d_rows + n2[None, :], acc2.to(dbl_ptr.dtype.element_ty), mask=keep[:, None] & (n2 < n_out)[None, :]
            )


#: (tokens, channels per step, warps, pipeline stages) per program of :func:`conv_xproj_triton`
CONV_XPROJ_BLOCKS = (128, 64, 8, 2)


def _column_blocks(n_out: int) -> tuple[int, int]:
    """``x_dbl``'s columns as two power-of-two blocks (N1, N2), N1 + N2 >= n_out, each >= 16 or N2 = 0:
    192 -> (128, 64), 80 -> (64, 16), 64 -> (64, 0)."""
    n1 = max(16, 1 << (n_out.bit_length() - 1))
    rest = n_out - n1
    return n1, (0 if rest <= 0 else max(16, 1 << (rest - 1).bit_length()))


def conv_xproj_triton(
    x: Tensor,
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    proj_weight: Tensor,
    *,
    mask: Tensor | None = None,
    blocks: tuple[int, int, int, int] | None = None,
    loads_first: bool = False,
) -> tuple[Tensor, Tensor]:
    """:func:`conv_xproj_reference` on a CUDA device in one Triton kernel (module docstring).

    ``x`` may be a strided view (stride 1 on the channel axis); ``channels`` must be a multiple
    of the channel block. ``blocks``: (tokens, channels per step, warps, stages) per program,
    default :data:`CONV_XPROJ_BLOCKS`.
    """
    if triton is None:
        raise RuntimeError("conv_xproj_triton needs Triton; use conv_xproj_reference")
    batch, n_tokens, channels = x.shape
    n_out = proj_weight.shape[0]
    block_t, block_k, num_warps, num_stages = blocks or CONV_XPROJ_BLOCKS
    if x.stride(2) != 1 or channels % block_k:
        raise ValueError(
            f"conv_xproj_triton: x needs stride 1 on its channel axis and channels ({channels}) a multiple "
            f"of {block_k}; got strides {x.stride()}"
        )
    if proj_weight.shape[1] != channels:
        raise ValueError(f"conv_xproj_triton: proj_weight must be (n_out, {channels}), got {tuple(proj_weight.shape)}")
    cw = conv_weight.contiguous()
    w = proj_weight.to(x.dtype).contiguous()
    m = mask.contiguous() if mask is not None else None
    u = torch.empty(batch, n_tokens, channels, dtype=x.dtype, device=x.device)
    dbl = torch.empty(batch, n_tokens, n_out, dtype=x.dtype, device=x.device)
    n1, n2 = _column_blocks(n_out)
    _conv_xproj_kernel[(triton.cdiv(n_tokens, block_t), batch)](
        x,
        cw,
        conv_bias if conv_bias is not None else cw,
        m if m is not None else cw,
        w,
        u,
        dbl,
        n_tokens,
        channels,
        n_out,
        x.stride(0),
        x.stride(1),
        m.stride(0) if m is not None else 0,
        u.stride(0),
        u.stride(1),
        dbl.stride(0),
        dbl.stride(1),
        WIDTH=cw.shape[1],
        BLOCK_T=block_t,
        BLOCK_K=block_k,
        N1=n1,
        N2=n2,
        HAS_BIAS=conv_bias is not None,
        HAS_MASK=m is not None,
        LOADS_FIRST=loads_first,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    return u, dbl
