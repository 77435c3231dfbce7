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

__all__ = [
    "CONV_BLOCKS",
    "CONV_BLOCKS_TILE",
    "causal_conv1d_silu",
    "causal_conv1d_silu_reference",
    "causal_conv1d_silu_triton",
]

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
    from reprflow.kernels.selective_scan import _silu  # z * sigmoid(z): one ex2, one approximate division

    @triton.jit
    def _load_row(x_base, t, s_x_t, n_tokens, mask_d, EVEN_D: tl.constexpr):
        # row t of x as float32 [BLOCK_D]; zeros outside 0 <= t < n_tokens (the causal padding)
        ok = (t >= 0) & (t < n_tokens)
        if EVEN_D:
            row = tl.load(x_base + t * s_x_t, mask=ok, other=0.0)
        else:
            row = tl.load(x_base + t * s_x_t, mask=mask_d & ok, other=0.0)
        return row.to(tl.float32)

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
        EVEN_D: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        HAS_MASK: tl.constexpr,
    ):
        # One program: BLOCK_D channels x BLOCK_T consecutive tokens, streamed row by row (the
        # loop is unrolled) with the last WIDTH - 1 rows kept in registers, so each input row is
        # loaded and converted once (plus WIDTH - 1 rows before the block)
        pid_t = tl.program_id(0)
        pid_d = tl.program_id(1)
        pid_b = tl.program_id(2).to(tl.int64)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < channels
        x_base = x_ptr + pid_b * s_x_b + offs_d
        o_base = out_ptr + pid_b * s_o_b + offs_d
        t0 = pid_t * BLOCK_T
        w = ()
        for k in tl.static_range(WIDTH):
            w = w + (tl.load(w_ptr + offs_d * WIDTH + k, mask=mask_d, other=0.0).to(tl.float32),)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        else:
            bias = tl.zeros([BLOCK_D], dtype=tl.float32)
        win = ()  # rows t - WIDTH + 1 .. t - 1, oldest first
        for k in tl.static_range(WIDTH - 1):
            win = win + (_load_row(x_base, t0 - (WIDTH - 1) + k, s_x_t, n_tokens, mask_d, EVEN_D),)
        for j in tl.static_range(BLOCK_T):
            t = t0 + j
            xt = _load_row(x_base, t, s_x_t, n_tokens, mask_d, EVEN_D)
            acc = bias + w[WIDTH - 1] * xt
            for k in tl.static_range(WIDTH - 1):
                acc += w[k] * win[k]
            y = _silu(acc)
            if HAS_MASK:
                y = y * tl.load(mask_ptr + pid_b * s_m_b + t, mask=t < n_tokens, other=0).to(tl.float32)
            keep = t < n_tokens
            if EVEN_D:
                tl.store(o_base + t * s_o_t, y.to(out_ptr.dtype.element_ty), mask=keep)
            else:
                tl.store(o_base + t * s_o_t, y.to(out_ptr.dtype.element_ty), mask=mask_d & keep)
            nxt = ()
            for k in tl.static_range(1, WIDTH - 1):
                nxt = nxt + (win[k],)
            win = nxt + (xt,)

    @triton.jit
    def _causal_conv1d_silu_tile_kernel(
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
        EVEN_D: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        HAS_MASK: tl.constexpr,
    ):
        # One program: a (BLOCK_T, BLOCK_D) tile of the output from WIDTH shifted (BLOCK_T, BLOCK_D)
        # loads of x, all issued before any is used (the rows they share come from L1/L2, so HBM
        # reads each row about once). Same products in the same order as _causal_conv1d_silu_kernel.
        pid_t = tl.program_id(0)
        pid_d = tl.program_id(1)
        pid_b = tl.program_id(2).to(tl.int64)
        offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < channels
        x_base = x_ptr + pid_b * s_x_b + offs_d[None, :]
        rows = ()
        for k in tl.static_range(WIDTH):
            t_in = offs_t - (WIDTH - 1) + k
            ok = (t_in >= 0) & (t_in < n_tokens)
            if EVEN_D:
                m = ok[:, None]
            else:
                m = ok[:, None] & mask_d[None, :]
            rows = rows + (tl.load(x_base + t_in[:, None] * s_x_t, mask=m, other=0.0).to(tl.float32),)
        if HAS_BIAS:
            acc = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
        else:
            acc = tl.zeros([1, BLOCK_D], dtype=tl.float32)
        w_last = tl.load(w_ptr + offs_d * WIDTH + (WIDTH - 1), mask=mask_d, other=0.0).to(tl.float32)
        acc = acc + w_last[None, :] * rows[WIDTH - 1]
        for k in tl.static_range(WIDTH - 1):
            w_k = tl.load(w_ptr + offs_d * WIDTH + k, mask=mask_d, other=0.0).to(tl.float32)
            acc += w_k[None, :] * rows[k]
        y = _silu(acc)
        keep = offs_t < n_tokens
        if HAS_MASK:
            y = y * tl.load(mask_ptr + pid_b * s_m_b + offs_t, mask=keep, other=0).to(tl.float32)[:, None]
        o_ptrs = out_ptr + pid_b * s_o_b + offs_t[:, None] * s_o_t + offs_d[None, :]
        if EVEN_D:
            tl.store(o_ptrs, y.to(out_ptr.dtype.element_ty), mask=keep[:, None])
        else:
            tl.store(o_ptrs, y.to(out_ptr.dtype.element_ty), mask=keep[:, None] & mask_d[None, :])


#: (tokens, channels, warps) per program of :func:`causal_conv1d_silu_triton`: 4 channels per thread
#: (8-byte loads of bf16) at 4 warps, 32 tokens. The fastest of seven shapes at both SSMs' sizes on an
#: H200 (2026-12-05, ``benchmarks/conv_sweep.py``, B=16, T=2048): Mamba-2.8B 0.264 ms per layer,
#: Mamba2-2.7B's strided input 0.365, against 0.283 and 0.386 for (64, 1024, 4) before
CONV_BLOCKS = (32, 512, 4)
#: (tokens, channels, warps) per program of the tiled kernel (``tiled=True``; ``triton_tile`` in
#: :mod:`reprflow.kernels.ops`, timed against the streaming kernel at first use). On an H200 at
#: B=32, T=2048 (2026-12-05, ``benchmarks/conv_sweep.py --batch 32``): Mamba-2.8B 0.465 ms per
#: layer against 0.483 streaming with :data:`CONV_BLOCKS`, Mamba2-2.7B's strided input 0.515
#: against 0.564; the best of seven tile shapes for the two together
CONV_BLOCKS_TILE = (64, 128, 4)


def causal_conv1d_silu_triton(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    mask: Tensor | None = None,
    blocks: tuple[int, int, int] | None = None,
    tiled: bool = False,
) -> Tensor:
    """Causal depthwise conv + SiLU on a CUDA device through a Triton kernel.

    Same parameters as :func:`causal_conv1d_silu_reference`; ``x`` may be a strided view
    (stride 1 on the channel axis). Accumulates in float32; SiLU as ``z / (1 + exp(-z))`` with
    one ``ex2`` and an approximate division (relative error below 1e-6, as the scan's).
    ``tiled``: False streams each program's tokens row by row, keeping the last ``width - 1``
    rows in registers; True computes a (tokens, channels) tile from ``width`` shifted tile
    loads (same products, same order). ``blocks``: (tokens, channels, warps) per program
    (powers of two; default :data:`CONV_BLOCKS`, or :data:`CONV_BLOCKS_TILE` when tiled).

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
    block_t, block_d, num_warps = blocks or (CONV_BLOCKS_TILE if tiled else CONV_BLOCKS)
    grid = (triton.cdiv(n_tokens, block_t), triton.cdiv(channels, block_d), batch)
    kernel = _causal_conv1d_silu_tile_kernel if tiled else _causal_conv1d_silu_kernel
    kernel[grid](
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
        EVEN_D=channels % block_d == 0,
        HAS_BIAS=bias is not None,
        HAS_MASK=m is not None,
        num_warps=num_warps,
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
