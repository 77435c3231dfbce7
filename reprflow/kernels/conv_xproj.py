"""Mamba-1's causal conv + SiLU and its ``x_proj`` in one Gluon kernel (sm_90).

In a Mamba-1 mixer the conv writes ``u = silu(conv(x))`` (``(batch, n_tokens, d_inner)``, 671 MB
per layer at 64K tokens of Mamba-2.8B) and ``x_proj`` reads it straight back to compute
``x_dbl = u W^T`` (192 columns). Both are bound by that traffic. Here one program takes ``BT``
tokens of one sequence and walks the channels in blocks of ``BK``, ``STAGES - 1`` blocks ahead by
``cp.async``: it computes the conv of the block (the products of
:func:`reprflow.kernels.causal_conv1d.causal_conv1d_silu_triton`, in the same order), writes it as
``u`` (the scan reads it) and multiplies the rounded block into the ``x_dbl`` accumulators on
warpgroup MMA, so ``u`` is never read back. ``x_proj``'s weight (2 MB) comes from L2.

Gluon cannot view shared memory at a row offset that is not a multiple of the view's rows, so
the conv does not take shifted tiles: the block's ``BT`` tokens are ``NSEG`` segments of ``SEG``
consecutive tokens, stored token-in-segment major (row ``j * NSEG + s`` of a block is token ``s * SEG + j``), and the conv streams
through the ``SEG`` rows of all segments at once, keeping the last ``width - 1`` rows in
registers; the 4 rows before each segment come in a small gathered copy. The MMA's rows are
then in that order (row ``j * NSEG + s`` is token ``s * SEG + j``), and the stores map them back.

``u`` equals the conv kernel's output bit for bit; ``x_dbl`` is the product of the same rounded
``u`` accumulated in float32 in another order than cuBLAS's, so it may differ from ``F.linear``
by one bf16 rounding step in some elements (its error against float64 is the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reprflow.kernels.causal_conv1d import causal_conv1d_silu_reference

__all__ = ["CONV_XPROJ_BLOCKS", "conv_xproj_gluon", "conv_xproj_reference"]

try:  # Hopper's Gluon: Triton >= 3.5
    import triton
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.ampere import async_copy
    from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma, warpgroup_mma_wait
except Exception:  # pragma: no cover - depends on the install
    triton = gluon = gl = None


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


def _column_blocks(n_out: int) -> tuple[int, int]:
    """``x_dbl``'s columns as two power-of-two blocks (N1, N2), N1 + N2 >= n_out, each >= 16 or N2 = 0:
    192 -> (128, 64), 80 -> (64, 16), 64 -> (64, 0)."""
    n1 = max(16, 1 << (n_out.bit_length() - 1))
    rest = n_out - n1
    return n1, (0 if rest <= 0 else max(16, 1 << (rest - 1).bit_length()))


if gluon is not None:
    from reprflow.kernels.selective_scan import _silu
    from reprflow.kernels.selective_scan_gluon import _copy_layout

    @gluon.jit
    def _issue_block(xs, hs, w1s, w2s, x_src, h_src, w1_src, w2_src, w2_mask, kb,
                     STAGES: gl.constexpr, BK: gl.constexpr, N2: gl.constexpr):  # fmt: skip
        # cp.async of channel block kb into its stage: the block's x rows (token-in-segment major),
        # the 4 rows before each segment, x_proj's weight columns
        st = kb % STAGES
        off = kb * BK
        async_copy.async_copy_global_to_shared(xs.index(st), x_src + off)
        async_copy.async_copy_global_to_shared(hs.index(st), h_src + off)
        async_copy.async_copy_global_to_shared(w1s.index(st), w1_src + off)
        if N2 > 0:
            async_copy.async_copy_global_to_shared(w2s.index(st), w2_src + off, mask=w2_mask)

    @gluon.jit
    def _conv_xproj_kernel(
        x_ptr, cw_ptr, cb_ptr, w_ptr, u_ptr, dbl_ptr,
        n_tokens, s_x_b, s_x_t, s_u_b, s_u_t, s_d_b, s_d_t,
        CHANNELS: gl.constexpr, N_OUT: gl.constexpr, N1: gl.constexpr, N2: gl.constexpr,
        SEG: gl.constexpr, NSEG: gl.constexpr, BK: gl.constexpr, STAGES: gl.constexpr,
        WIDTH: gl.constexpr, HAS_BIAS: gl.constexpr,
        CP_X: gl.constexpr, CP_H: gl.constexpr, ROW: gl.constexpr, TILE: gl.constexpr,
        CP_W1: gl.constexpr, CP_W2: gl.constexpr,
        SH2: gl.constexpr, SH_A: gl.constexpr, SH_W1: gl.constexpr, SH_W2: gl.constexpr,
        MMA1: gl.constexpr, MMA2: gl.constexpr,
    ):  # fmt: skip
        BT: gl.constexpr = SEG * NSEG
        N2_: gl.constexpr = N2 if N2 > 0 else 16
        N_K: gl.constexpr = CHANNELS // BK
        pid_t = gl.program_id(0)
        pid_b = gl.program_id(1).to(gl.int64)
        t0 = pid_t * BT
        x_base = x_ptr + pid_b * s_x_b
        dtype = x_ptr.dtype.element_ty
        xs = gl.allocate_shared_memory(dtype, [STAGES, BT, BK], SH2)
        hs = gl.allocate_shared_memory(dtype, [STAGES, 4 * NSEG, BK], SH2)
        w1s = gl.allocate_shared_memory(w_ptr.dtype.element_ty, [STAGES, N1, BK], SH_W1)
        w2s = gl.allocate_shared_memory(w_ptr.dtype.element_ty, [STAGES, N2_, BK], SH_W2)
        us = gl.allocate_shared_memory(dtype, [BT, BK], SH2)
        a_s = gl.allocate_shared_memory(dtype, [2, BT, BK], SH_A)

        # copy sources at channel block 0: row m = j * NSEG + s of a block is token s * SEG + j; row
        # i * NSEG + s of the rows before the segments is token s * SEG - 4 + i. Rows outside the
        # sequence are read from its first or last row and zeroed in the conv or not stored
        mx = gl.arange(0, BT, layout=gl.SliceLayout(1, CP_X))
        cx = gl.arange(0, BK, layout=gl.SliceLayout(0, CP_X))
        tx = t0 + (mx % NSEG) * SEG + mx // NSEG
        x_src = x_base + gl.expand_dims(gl.minimum(tx, n_tokens - 1), 1) * s_x_t + gl.expand_dims(cx, 0)
        mh = gl.arange(0, 4 * NSEG, layout=gl.SliceLayout(1, CP_H))
        ch = gl.arange(0, BK, layout=gl.SliceLayout(0, CP_H))
        th = t0 + (mh % NSEG) * SEG - 4 + mh // NSEG
        h_src = x_base + gl.expand_dims(gl.maximum(th, 0), 1) * s_x_t + gl.expand_dims(ch, 0)
        r1 = gl.arange(0, N1, layout=gl.SliceLayout(1, CP_W1))
        c1 = gl.arange(0, BK, layout=gl.SliceLayout(0, CP_W1))
        w1_src = w_ptr + gl.expand_dims(r1, 1) * CHANNELS + gl.expand_dims(c1, 0)
        r2 = N1 + gl.arange(0, N2_, layout=gl.SliceLayout(1, CP_W2))
        c2 = gl.arange(0, BK, layout=gl.SliceLayout(0, CP_W2))
        w2_src = w_ptr + gl.expand_dims(gl.minimum(r2, N_OUT - 1), 1) * CHANNELS + gl.expand_dims(c2, 0)
        w2_mask = gl.expand_dims(r2 < N_OUT, 1)

        for p in gl.static_range(STAGES - 1):
            if p < N_K:
                _issue_block(xs, hs, w1s, w2s, x_src, h_src, w1_src, w2_src, w2_mask, p, STAGES, BK, N2)
            async_copy.commit_group()

        # the conv's rows: [NSEG, BK], one segment per row, first token of each segment
        seg_t = t0 + gl.arange(0, NSEG, layout=gl.SliceLayout(1, ROW)) * SEG
        cr = gl.arange(0, BK, layout=gl.SliceLayout(0, ROW))
        # the MMA's rows m = j * NSEG + s are tokens s * SEG + j; u's tile rows likewise
        mt = gl.arange(0, BT, layout=gl.SliceLayout(1, TILE))
        ct = gl.arange(0, BK, layout=gl.SliceLayout(0, TILE))
        tok_t = t0 + (mt % NSEG) * SEG + mt // NSEG
        u_dst = u_ptr + pid_b * s_u_b + gl.expand_dims(tok_t, 1) * s_u_t + gl.expand_dims(ct, 0)
        keep_t = gl.expand_dims(tok_t < n_tokens, 1)
        acc1 = gl.zeros([BT, N1], gl.float32, layout=MMA1)
        acc2 = gl.zeros([BT, N2_], gl.float32, layout=MMA2)
        for kb in range(N_K):
            async_copy.wait_group(STAGES - 2)
            gl.thread_barrier()
            xb = xs.index(kb % STAGES)
            hb = hs.index(kb % STAGES)
            c = kb * BK + cr
            w_last = gl.expand_dims(gl.load(cw_ptr + c * WIDTH + (WIDTH - 1)).to(gl.float32), 0)
            if HAS_BIAS:
                bias = gl.expand_dims(gl.load(cb_ptr + c).to(gl.float32), 0)
            # the window: x at t - WIDTH + 1 .. t - 1 (oldest first), from the rows before each segment
            win = ()
            for k in gl.static_range(WIDTH - 1):
                r = hb.slice((4 - (WIDTH - 1) + k) * NSEG, NSEG).load(ROW).to(gl.float32)
                ok = gl.expand_dims(seg_t - (WIDTH - 1) + k >= 0, 1)
                win = win + (gl.where(ok, r, 0.0),)
            for j in gl.static_range(SEG):
                xt = xb.slice(j * NSEG, NSEG).load(ROW).to(gl.float32)
                if HAS_BIAS:
                    acc = bias + w_last * xt
                else:
                    acc = w_last * xt
                for k in gl.static_range(WIDTH - 1):
                    w_k = gl.expand_dims(gl.load(cw_ptr + c * WIDTH + k).to(gl.float32), 0)
                    acc += w_k * win[k]
                us.slice(j * NSEG, NSEG).store(_silu(acc).to(dtype))
                nxt = ()
                for k in gl.static_range(1, WIDTH - 1):
                    nxt = nxt + (win[k],)
                win = nxt + (xt,)
            gl.thread_barrier()
            u = us.load(TILE)
            gl.store(u_dst + kb * BK, u, mask=keep_t)
            ab = a_s.index(kb % 2)
            ab.store(u)
            fence_async_shared()
            gl.thread_barrier()
            acc1 = warpgroup_mma(ab, w1s.index(kb % STAGES).permute((1, 0)), acc1, is_async=True)
            if N2 > 0:
                acc2 = warpgroup_mma(ab, w2s.index(kb % STAGES).permute((1, 0)), acc2, is_async=True)
                acc1, acc2 = warpgroup_mma_wait(num_outstanding=2, deps=(acc1, acc2))
            else:
                acc1 = warpgroup_mma_wait(num_outstanding=1, deps=(acc1,))
            # block kb - 1's MMAs are done: its stage takes block kb + STAGES - 1
            nb = kb + STAGES - 1
            if nb < N_K:
                _issue_block(xs, hs, w1s, w2s, x_src, h_src, w1_src, w2_src, w2_mask, nb, STAGES, BK, N2)
            async_copy.commit_group()
        acc1 = warpgroup_mma_wait(num_outstanding=0, deps=(acc1,))
        m1 = gl.arange(0, BT, layout=gl.SliceLayout(1, MMA1))
        t1 = t0 + (m1 % NSEG) * SEG + m1 // NSEG
        n1 = gl.arange(0, N1, layout=gl.SliceLayout(0, MMA1))
        d1 = dbl_ptr + pid_b * s_d_b + gl.expand_dims(t1, 1) * s_d_t + gl.expand_dims(n1, 0)
        gl.store(d1, acc1.to(dbl_ptr.dtype.element_ty), mask=gl.expand_dims(t1 < n_tokens, 1))
        if N2 > 0:
            acc2 = warpgroup_mma_wait(num_outstanding=0, deps=(acc2,))
            m2 = gl.arange(0, BT, layout=gl.SliceLayout(1, MMA2))
            t2 = t0 + (m2 % NSEG) * SEG + m2 // NSEG
            n2 = N1 + gl.arange(0, N2_, layout=gl.SliceLayout(0, MMA2))
            d2 = dbl_ptr + pid_b * s_d_b + gl.expand_dims(t2, 1) * s_d_t + gl.expand_dims(n2, 0)
            ok = gl.expand_dims(t2 < n_tokens, 1) & gl.expand_dims(n2 < N_OUT, 0)
            gl.store(d2, acc2.to(dbl_ptr.dtype.element_ty), mask=ok)


#: (tokens per segment, segments, channels per block, stages) per program of :func:`conv_xproj_gluon`
#: (8 warps: one segment row per warp, one channel per lane)
CONV_XPROJ_BLOCKS = (16, 8, 32, 3)


def conv_xproj_gluon(
    x: Tensor,
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    proj_weight: Tensor,
    *,
    blocks: tuple[int, int, int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`conv_xproj_reference` (no mask) in one Gluon kernel on an sm_90 GPU (module docstring).

    ``x`` may be a strided view (stride 1 on the channel axis), bf16 or fp16; ``channels`` a multiple
    of the channel block; conv width <= 5. ``blocks``: (tokens per segment, segments, channels per
    block, stages), default :data:`CONV_XPROJ_BLOCKS`.
    """
    if gluon is None:
        raise RuntimeError("conv_xproj_gluon needs Triton's Gluon (Triton >= 3.5)")
    batch, n_tokens, channels = x.shape
    n_out, width = proj_weight.shape[0], conv_weight.shape[1]
    seg, nseg, bk, stages = blocks or CONV_XPROJ_BLOCKS
    nw = nseg  # one segment row per warp
    if x.stride(2) != 1 or channels % bk or width > 5 or x.dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(
            f"conv_xproj_gluon: needs bf16/fp16 x with unit channel stride, channels % {bk} == 0, width <= 5; "
            f"got {x.dtype}, strides {x.stride()}, width {width}"
        )
    n1, n2 = _column_blocks(n_out)
    n2_ = n2 or 16
    bt = seg * nseg
    el = gl.bfloat16 if x.dtype == torch.bfloat16 else gl.float16
    w = proj_weight.to(x.dtype).contiguous()
    cw = conv_weight.contiguous()
    u = torch.empty(batch, n_tokens, channels, dtype=x.dtype, device=x.device)
    dbl = torch.empty(batch, n_tokens, n_out, dtype=x.dtype, device=x.device)
    _conv_xproj_kernel[(triton.cdiv(n_tokens, bt), batch)](
        x, cw, conv_bias if conv_bias is not None else cw, w, u, dbl,
        n_tokens, x.stride(0), x.stride(1), u.stride(0), u.stride(1), dbl.stride(0), dbl.stride(1),
        CHANNELS=channels, N_OUT=n_out, N1=n1, N2=n2, SEG=seg, NSEG=nseg, BK=bk, STAGES=stages, WIDTH=width,
        HAS_BIAS=conv_bias is not None,
        CP_X=_copy_layout(bt, bk, 2, nw),
        CP_H=_copy_layout(4 * nseg, bk, 2, nw),
        ROW=gl.BlockedLayout([1, 1], [1, 32], [nw, 1], [1, 0]) if bk == 32 else gl.BlockedLayout([1, bk // 32], [1, 32], [nw, 1], [1, 0]),
        TILE=_copy_layout(bt, bk, 2, nw),
        CP_W1=_copy_layout(n1, bk, 2, nw),
        CP_W2=_copy_layout(n2_, bk, 2, nw),
        SH2=gl.SwizzledSharedLayout(1, 1, 1, [1, 0]),
        SH_A=gl.NVMMASharedLayout.get_default_for([bt, bk], el),
        SH_W1=gl.NVMMASharedLayout.get_default_for([n1, bk], el),
        SH_W2=gl.NVMMASharedLayout.get_default_for([n2_, bk], el),
        MMA1=gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[nw, 1], instr_shape=[16, n1, 16]),
        MMA2=gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[nw, 1], instr_shape=[16, n2_, 16]),
        num_warps=nw,
    )  # fmt: skip
    return u, dbl
