"""HF's ``MambaRMSNormGated`` (Mamba-2's norm of the SSD output, gated by ``silu(z)``) in one Triton pass.

transformers computes, per group of ``group_size`` channels, for input dtype ``in``::

    h = x.float() * silu(z.float());  y = (h * rsqrt(mean(h ** 2) + eps)).to(in);  out = weight * y

in about ten elementwise passes. ``mamba_ssm``'s Triton ``rmsnorm_fn`` (``norm_before_gate=False``)
does it in one, but in another rounding order (``weight`` applied before the one rounding): a
quarter of its bf16 outputs differ from transformers'. :func:`gated_rms_norm` keeps
transformers' order: one read of ``x`` and ``z``, one write. Measured on an H200 for Mamba2-2.7B
at 32 x 2048 tokens (``benchmarks/gated_norm.py --batch 32``): two rows per program, each held in
registers in blocks of 1,024 channels, 0.567 ms per layer against ``mamba_ssm``'s 0.698 ms (1.21x
and 1.49x the time their bytes need), equal to transformers' output in all but 1e-5 of the
elements.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["GATED_NORM_CHUNK", "GATED_NORM_HELD_MAX", "GATED_NORM_ROWS", "gated_rms_norm", "gated_rms_norm_reference"]

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None


def gated_rms_norm_reference(x: Tensor, z: Tensor, weight: Tensor, *, eps: float, group_size: int) -> Tensor:
    """transformers' ``MambaRMSNormGated.forward(x, gate=z)``, verbatim.

    Parameters
    ----------
    x : Tensor of shape (..., channels)
        The SSD output.
    z : Tensor of shape (..., channels)
        The gate (its ``silu`` multiplies ``x`` before the norm).
    weight : Tensor of shape (channels,)
    eps : float
    group_size : int
        Channels per normalised group (``channels // n_groups``).

    Returns
    -------
    Tensor of shape (..., channels)
        dtype ``torch.promote_types(weight.dtype, x.dtype)``.
    """
    input_dtype = x.dtype
    h = x.to(torch.float32) * F.silu(z.to(torch.float32))
    *prefix, channels = h.shape
    groups = h.view(*prefix, channels // group_size, group_size)
    groups = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + eps)
    return weight * groups.view(*prefix, channels).to(input_dtype)


if triton is not None:

    @triton.jit
    def _gated_rms_norm_kernel(x_ptr, z_ptr, w_ptr, out_ptr, group_size, eps, s_x, s_z, s_o, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * group_size + tl.arange(0, BLOCK)
        m = tl.arange(0, BLOCK) < group_size
        x = tl.load(x_ptr + row * s_x + cols, mask=m, other=0.0)
        in_dtype = x.dtype
        z = tl.load(z_ptr + row * s_z + cols, mask=m, other=0.0).to(tl.float32)
        h = x.to(tl.float32) * (z / (1.0 + tl.exp(-z)))
        var = tl.sum(h * h, axis=0) / group_size
        y = (h * (1.0 / tl.sqrt(var + eps))).to(in_dtype)  # transformers rounds to the input dtype here
        w = tl.load(w_ptr + cols, mask=m, other=0.0)
        tl.store(out_ptr + row * s_o + cols, (w.to(tl.float32) * y.to(tl.float32)).to(out_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _gated_rms_norm_chunked_kernel(
        x_ptr, z_ptr, w_ptr, out_ptr, group_size, eps, s_x, s_z, s_o, BLOCK: tl.constexpr, CHUNKS: tl.constexpr
    ):
        """One row of one group in ``CHUNKS`` blocks of ``BLOCK`` channels: the sum of squares over
        the blocks, then each block read again (from the cache), normalised and written."""
        row = tl.program_id(0).to(tl.int64)
        g0 = tl.program_id(1) * group_size
        offs = tl.arange(0, BLOCK)
        in_dtype = x_ptr.dtype.element_ty
        ss = tl.zeros((BLOCK,), dtype=tl.float32)
        for i in tl.static_range(CHUNKS):
            cols = i * BLOCK + offs
            m = cols < group_size
            x = tl.load(x_ptr + row * s_x + g0 + cols, mask=m, other=0.0).to(tl.float32)
            z = tl.load(z_ptr + row * s_z + g0 + cols, mask=m, other=0.0).to(tl.float32)
            h = x * (z / (1.0 + tl.exp(-z)))
            ss += h * h
        rstd = 1.0 / tl.sqrt(tl.sum(ss, axis=0) / group_size + eps)
        for i in tl.static_range(CHUNKS):
            cols = i * BLOCK + offs
            m = cols < group_size
            x = tl.load(x_ptr + row * s_x + g0 + cols, mask=m, other=0.0).to(tl.float32)
            z = tl.load(z_ptr + row * s_z + g0 + cols, mask=m, other=0.0).to(tl.float32)
            y = (x * (z / (1.0 + tl.exp(-z))) * rstd).to(in_dtype)  # transformers rounds here
            w = tl.load(w_ptr + g0 + cols, mask=m, other=0.0)
            out = (w.to(tl.float32) * y.to(tl.float32)).to(out_ptr.dtype.element_ty)
            tl.store(out_ptr + row * s_o + g0 + cols, out, mask=m)

    @triton.jit
    def _gated_rms_norm_held_kernel(
        x_ptr,
        z_ptr,
        w_ptr,
        out_ptr,
        n_rows,
        group_size,
        eps,
        s_x,
        s_z,
        s_o,
        BLOCK: tl.constexpr,
        CHUNKS: tl.constexpr,
        ROWS: tl.constexpr,
    ):
        """``ROWS`` rows of one group per program, each in ``CHUNKS`` blocks of ``BLOCK`` channels
        held in registers between the sum of squares and the output: ``x`` and ``z`` read once,
        the weight once per ``ROWS`` rows. The chunked kernel's arithmetic, in its order."""
        rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
        row_ok = rows < n_rows
        g0 = tl.program_id(1) * group_size
        offs = tl.arange(0, BLOCK)
        in_dtype = x_ptr.dtype.element_ty
        ss = tl.zeros((ROWS, BLOCK), dtype=tl.float32)
        held = ()
        for i in tl.static_range(CHUNKS):
            cols = g0 + i * BLOCK + offs
            m = row_ok[:, None] & (i * BLOCK + offs < group_size)[None, :]
            x = tl.load(x_ptr + rows[:, None] * s_x + cols[None, :], mask=m, other=0.0).to(tl.float32)
            z = tl.load(z_ptr + rows[:, None] * s_z + cols[None, :], mask=m, other=0.0).to(tl.float32)
            h = x * (z / (1.0 + tl.exp(-z)))
            ss += h * h
            held = held + (h,)
        rstd = 1.0 / tl.sqrt(tl.sum(ss, axis=1) / group_size + eps)  # (ROWS,)
        for i in tl.static_range(CHUNKS):
            cols = g0 + i * BLOCK + offs
            col_ok = i * BLOCK + offs < group_size
            y = (held[i] * rstd[:, None]).to(in_dtype)  # transformers rounds here
            w = tl.load(w_ptr + cols, mask=col_ok, other=0.0)
            out = (w.to(tl.float32)[None, :] * y.to(tl.float32)).to(out_ptr.dtype.element_ty)
            tl.store(out_ptr + rows[:, None] * s_o + cols[None, :], out, mask=row_ok[:, None] & col_ok[None, :])


#: channels per block for rows wider than this (Mamba's mixers pass it): Mamba2-2.7B's 5,120-channel
#: rows took 0.331 ms in blocks of 1,024 against 0.344 whole (padded to 8,192) and 0.345 / 0.466 in
#: blocks of 2,048 / 512 on an H200 (2026-12-05, ``benchmarks/gated_norm.py``, 16 x 2048 tokens)
GATED_NORM_CHUNK = 1024
#: rows per program when a wide row is held in registers (``rows=``): Mamba2-2.7B at 32 x 2048 tokens
#: on an H200 (2026-12-05, ``benchmarks/gated_norm.py --batch 32``) took 0.567 ms per layer with
#: ``chunk=1024, rows=2`` against 0.628 read twice (``chunk=1024``), 0.588 whole, 0.617 / 0.606 with
#: 1 / 4 rows (1.21x the time its bytes need at 4.3 TB/s)
GATED_NORM_ROWS = 2
#: the widest group held in registers (8 blocks of 1,024: 64 float32 registers a thread at
#: ``GATED_NORM_ROWS``); wider groups are read twice
GATED_NORM_HELD_MAX = 8192


def gated_rms_norm(
    x: Tensor,
    z: Tensor,
    weight: Tensor,
    *,
    eps: float,
    group_size: int,
    chunk: int | None = None,
    rows: int | None = None,
) -> Tensor:
    """:func:`gated_rms_norm_reference` in one Triton pass on CUDA (the reference elsewhere).

    Same parameters and result as the reference (float32 arithmetic, the same two roundings);
    ``x`` and ``z`` may be strided views with stride 1 on the channel axis (``z`` is usually a
    slice of ``in_proj``'s output). ``chunk`` (a power of two >= 256): each program walks its
    row in blocks of that many channels, twice (the sum of squares, then the output, the second
    read served by the cache), instead of holding the whole row padded to a power of two (Mamba2-2.7B's
    5120 channels in an 8192-wide block); the same values up to the order of the sum of squares.
    ``rows`` (a power of two; needs ``chunk``): each program takes that many rows and holds their
    blocks in registers between the two walks, so ``x`` and ``z`` are read once.
    """
    channels = x.shape[-1]
    if z.shape != x.shape or weight.shape != (channels,) or channels % group_size:
        raise ValueError(
            f"gated_rms_norm: x {tuple(x.shape)}, z {tuple(z.shape)}, weight {tuple(weight.shape)} and "
            f"group_size {group_size} do not fit (z like x, weight (channels,), channels a multiple of group_size)"
        )
    if triton is None or not x.is_cuda:
        return gated_rms_norm_reference(x, z, weight, eps=eps, group_size=group_size)
    x2, z2 = x.reshape(-1, channels), z.reshape(-1, channels)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    if z2.stride(-1) != 1:
        z2 = z2.contiguous()
    out = torch.empty(x2.shape, dtype=torch.promote_types(weight.dtype, x.dtype), device=x.device)
    if chunk is not None and (chunk < 256 or chunk & (chunk - 1)):
        raise ValueError(f"gated_rms_norm: chunk {chunk} is not a power of two >= 256")
    if rows is not None and (chunk is None or rows < 1 or rows & (rows - 1)):
        raise ValueError(f"gated_rms_norm: rows {rows} needs a chunk and must be a power of two")
    if rows is not None:
        n_rows = x2.shape[0]
        _gated_rms_norm_held_kernel[(triton.cdiv(n_rows, rows), channels // group_size)](
            x2, z2, weight, out, n_rows, group_size, float(eps), x2.stride(0), z2.stride(0), out.stride(0),
            BLOCK=chunk, CHUNKS=triton.cdiv(group_size, chunk), ROWS=rows, num_warps=max(1, rows * chunk // 256),
        )  # fmt: skip
        return out.view(x.shape)
    if chunk is not None:
        _gated_rms_norm_chunked_kernel[(x2.shape[0], channels // group_size)](
            x2, z2, weight, out, group_size, float(eps), x2.stride(0), z2.stride(0), out.stride(0),
            BLOCK=chunk, CHUNKS=triton.cdiv(group_size, chunk), num_warps=max(1, chunk // 256),
        )  # fmt: skip
        return out.view(x.shape)
    block = triton.next_power_of_2(group_size)
    _gated_rms_norm_kernel[(x2.shape[0], channels // group_size)](
        x2,
        z2,
        weight,
        out,
        group_size,
        float(eps),
        x2.stride(0),
        z2.stride(0),
        out.stride(0),
        BLOCK=block,
        num_warps=min(16, max(1, block // 256)),
    )
    return out.view(x.shape)
