"""Mamba-2's SSD output kernel in Gluon, on Hopper's warpgroup MMA (``wgmma``).

``mamba_ssm``'s ``mamba_chunk_scan_combined`` runs five Triton kernels per layer; the last,
``_chunk_scan_fwd`` (each token's output from the state entering its chunk and from the
chunk's earlier tokens), took 74 of Mamba2-2.7B's 412 ms forward at B=16, T=2048 on an H200,
several times its tensor-core and memory time. Its hardware counters (docs/kernels.md,
"Hardware counters") show 2-warp programs on Ampere's ``mma.sync`` waiting on shared memory:
the ``C B^T`` tile, scaled by the decays in registers, is converted to an MMA operand through
shared memory at every step, in tiles too small to reuse what they load.

:func:`chunk_scan_gluon` computes the same output with one warpgroup (4 warps) per
``(batch, chunk, head, 64-row block)``:

* ``cp.async`` copies the block's ``C`` rows and the head's incoming state (one group) and
  every ``x`` tile up to the diagonal (a second group) into shared memory at the start; the
  state part ``exp(dA_m) C_m S^T`` runs on ``wgmma`` as soon as the first group lands, while
  the ``x`` tiles are still in flight;
* each 64 x 64 tile of ``C B^T`` (float32, or rounded to the input dtype; shared by the heads of a group and L2-resident,
  since the heads of one block are launched side by side) is loaded, scaled by
  ``exp(min(dA_m - dA_k, 0)) dt_k``, masked above the diagonal, rounded to bf16 once and
  stored as the MMA's A operand (two buffers in turn, laid over ``C``'s once the state part
  is done when ``d_state`` >= 128: 64 KB of shared memory per program at Mamba2-2.7B's sizes, three programs per SM);
  the ``wgmma`` runs asynchronously while the next tile is scaled (one MMA in flight);
* the epilogue adds ``D x_m`` from the ``x`` tile already in shared memory.

With ``row_loop=True`` one program per ``(batch, chunk, head)`` walks the chunk's row blocks in
turn instead: the state and the ``x`` tiles are copied once, not once per row block, and each
next block's ``C`` rows are copied while the block before it is written (same arithmetic, same
order: equal outputs).

The arithmetic is ``mamba_ssm``'s (float32 scaling, one rounding of the scaled tile to the
input dtype, float32 accumulation). Conventions (``mamba_ssm``'s): ``x`` (batch, n_tokens,
heads, head_dim); ``dt`` and ``dA_cumsum`` (batch, heads, n_chunks, chunk) float32; ``cb``
(batch, n_chunks, groups, chunk, chunk) float32; ``C`` (batch, n_tokens, groups, d_state);
``states`` (batch, n_chunks, heads, head_dim, d_state) in the dtype of ``x``. bf16 or fp16
only, chunk a multiple of 64, head_dim and d_state powers of two in 16..256; no ``z``, no
``seq_idx``, no initial state, inference only: :func:`reprflow.kernels.ssd_pipeline.ssd_combined`
sends every other call to ``mamba_ssm``.
"""

from __future__ import annotations


import torch
from torch import Tensor

__all__ = ["chunk_scan_gluon", "chunk_scan_gluon_supported", "ssd_gluon_available"]

try:  # Hopper's Gluon: Triton >= 3.5
    import triton
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.ampere import async_copy
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
except Exception:  # pragma: no cover - depends on the install
    triton = gluon = gl = None

BM = 64  # rows of a program = the key block (the diagonal tile is one x tile)

if gluon is not None:
    from reprflow.kernels.selective_scan_gluon import _copy_layout

    @gluon.jit
    def _state_part(c_s, s_s, dA_base, m0, rows_ar, BLK: gl.constexpr, HDIM: gl.constexpr, MMA: gl.constexpr):
        """exp(dA_m) * (C_m @ S^T) for one head: [BLK, HDIM] float32 in the MMA layout (synchronous wgmma)."""
        acc = gl.zeros([BLK, HDIM], gl.float32, layout=MMA)
        acc = warpgroup_mma(c_s, s_s.permute((1, 0)), acc)
        dA_rows = gl.load(dA_base + m0 + rows_ar)
        return acc * gl.expand_dims(gl.exp(dA_rows), 1)

    @gluon.jit
    def _tile_mma(w, dA_m, dA_base, dt_base, offs_m, offs_k, a_buf, x_tile, acc):
        """One key tile of one head: the raw C B^T tile ``w`` (float32, or rounded to the input
        dtype) scaled in float32 by ``exp(min(dA_m - dA_k, 0)) dt_k``, masked above the diagonal,
        rounded once into ``a_buf``, and ``acc += a_buf @ x_tile`` issued asynchronously (the caller waits)."""
        dA_k = gl.load(dA_base + offs_k)
        dt_k = gl.load(dt_base + offs_k)
        w = w.to(gl.float32) * gl.exp(gl.minimum(gl.expand_dims(dA_m, 1) - gl.expand_dims(dA_k, 0), 0.0))
        w = w * gl.expand_dims(dt_k, 0)
        w = gl.where(gl.expand_dims(offs_m, 1) >= gl.expand_dims(offs_k, 0), w, 0.0)
        a_buf.store(w.to(a_buf.dtype))
        fence_async_shared()
        gl.thread_barrier()
        return warpgroup_mma(a_buf, x_tile, acc, is_async=True)

    @gluon.jit
    def _write_rows(
        acc, x_tile, out_base, D_ptr, h, rows, cols, limit, s_o_t, s_D_h,
        HAS_D: gl.constexpr, D_HAS_HDIM: gl.constexpr, MMA: gl.constexpr,
    ):  # fmt: skip
        """One head's rows of the output: ``acc + D x_m`` (``x_m`` the diagonal tile in shared memory)."""
        if HAS_D:
            x_m = x_tile.load(MMA).to(gl.float32)
            if D_HAS_HDIM:
                d = gl.load(D_ptr + h * s_D_h + cols).to(gl.float32)
                acc = acc + x_m * gl.expand_dims(d, 0)
            else:
                acc = acc + x_m * gl.load(D_ptr + h * s_D_h).to(gl.float32)
        o = out_base + gl.expand_dims(rows, 1) * s_o_t + gl.expand_dims(cols, 0)
        gl.store(o, acc.to(out_base.dtype.element_ty), mask=gl.expand_dims(rows < limit, 1))

    @gluon.jit
    def _ssd_chunk_scan_kernel(
        cb_ptr,
        x_ptr,
        out_ptr,
        dt_ptr,
        dA_ptr,
        C_ptr,
        st_ptr,
        D_ptr,
        n_tokens,
        n_chunks,
        heads_per_group,
        s_cb_b,
        s_cb_c,
        s_cb_g,
        s_cb_m,
        s_x_b,
        s_x_t,
        s_x_h,
        s_o_b,
        s_o_t,
        s_o_h,
        s_dt_b,
        s_dt_h,
        s_dt_c,
        s_C_b,
        s_C_t,
        s_C_g,
        s_st_b,
        s_st_c,
        s_st_h,
        s_D_h,
        CHUNK: gl.constexpr,
        HDIM: gl.constexpr,
        DSTATE: gl.constexpr,
        HAS_D: gl.constexpr,
        D_HAS_HDIM: gl.constexpr,
        MMA: gl.constexpr,  # wgmma accumulator layout of [BM, HDIM]
        TILE: gl.constexpr,  # registers of a [BM, BM] C B^T tile (float32 or the input dtype)
        CP_X: gl.constexpr,  # cp.async of a [BM, HDIM] x tile
        CP_C: gl.constexpr,  # cp.async of [BM, DSTATE] C rows
        CP_S: gl.constexpr,  # cp.async of the [HDIM, DSTATE] state
        SH_X: gl.constexpr,  # shared layouts (NVMMA swizzles) of the same
        SH_A: gl.constexpr,
        SH_C: gl.constexpr,
        SH_S: gl.constexpr,
        PREFETCH_CB: gl.constexpr = True,  # load each C B^T tile one step ahead (registers)
        ROW_LOOP: gl.constexpr = False,  # one program per (batch, chunk, head), all its row blocks
        HEAD_PAIR: gl.constexpr = False,  # two heads of one group per program
    ):
        BLK: gl.constexpr = 64
        N_K: gl.constexpr = CHUNK // BLK
        NH: gl.constexpr = 2 if HEAD_PAIR else 1  # heads per program (one group)
        h = gl.program_id(0) * NH
        bc = gl.program_id(2)
        b = (bc // n_chunks).to(gl.int64)
        c = bc % n_chunks
        g = h // heads_per_group
        limit = gl.minimum(n_tokens - c * CHUNK, CHUNK)
        if ROW_LOOP:  # every row block of the chunk, one after the other
            m_lo = 0
            m_hi = N_K
        else:  # one row block per program
            m_lo = gl.program_id(1)
            m_hi = m_lo + 1
        t0 = (c * CHUNK).to(gl.int64)
        x_base = x_ptr + b * s_x_b + t0 * s_x_t + h * s_x_h
        dt_base = dt_ptr + b * s_dt_b + h * s_dt_h + c * s_dt_c
        dA_base = dA_ptr + b * s_dt_b + h * s_dt_h + c * s_dt_c
        cb_base = cb_ptr + b * s_cb_b + c * s_cb_c + g * s_cb_g
        C_base = C_ptr + b * s_C_b + g * s_C_g + t0 * s_C_t
        st_base = st_ptr + b * s_st_b + c * s_st_c + h * s_st_h
        out_base = out_ptr + b * s_o_b + h * s_o_h + t0 * s_o_t
        dtype = x_ptr.dtype.element_ty

        # x tiles: head j's key block kb at index j * N_K + kb; states: head j's at j
        x_s = gl.allocate_shared_memory(dtype, [NH * N_K, BLK, HDIM], SH_X)
        c_s = gl.allocate_shared_memory(C_ptr.dtype.element_ty, [BLK, DSTATE], SH_C)
        s_s = gl.allocate_shared_memory(st_ptr.dtype.element_ty, [NH, HDIM, DSTATE], SH_S)
        # the scaled C B^T tiles take turns in two buffers laid over C's, free once the state
        # part's (synchronous) MMAs are done: with one head, tile kb overwrites tile kb - 2's; with
        # a head pair, head j's tiles go to buffer j; each overwritten tile's MMA is complete by
        # the waits in the key loop
        if DSTATE >= 2 * BLK:
            a_s = c_s._reinterpret(dtype, [2, BLK, BLK], SH_A)
        else:  # C's buffer is smaller than two tiles
            a_s = gl.allocate_shared_memory(dtype, [2, BLK, BLK], SH_A)

        # group 1: the first block's C rows and the heads' incoming states
        rc = gl.arange(0, BLK, layout=gl.SliceLayout(1, CP_C))
        nc = gl.arange(0, DSTATE, layout=gl.SliceLayout(0, CP_C))
        c_src = C_base + gl.expand_dims(m_lo * BLK + rc, 1) * s_C_t + gl.expand_dims(nc, 0)
        async_copy.async_copy_global_to_shared(c_s, c_src, mask=gl.expand_dims(m_lo * BLK + rc < limit, 1))
        ps = gl.arange(0, HDIM, layout=gl.SliceLayout(1, CP_S))
        ns = gl.arange(0, DSTATE, layout=gl.SliceLayout(0, CP_S))
        s_off = gl.expand_dims(ps, 1) * DSTATE + gl.expand_dims(ns, 0)
        for j in gl.static_range(NH):
            async_copy.async_copy_global_to_shared(s_s.index(j), st_base + j * s_st_h + s_off)
        async_copy.commit_group()
        # group 2: the x tiles of keys 0 .. m_hi * BLK - 1 (rows past the sequence read as zeros),
        # each loaded once for every row block of the program
        rx = gl.arange(0, BLK, layout=gl.SliceLayout(1, CP_X))
        px = gl.arange(0, HDIM, layout=gl.SliceLayout(0, CP_X))
        for j in gl.static_range(NH):
            for kb in range(0, m_hi):
                r = kb * BLK + rx
                x_src = x_base + j * s_x_h + gl.expand_dims(r, 1) * s_x_t + gl.expand_dims(px, 0)
                async_copy.async_copy_global_to_shared(
                    x_s.index(j * N_K + kb), x_src, mask=gl.expand_dims(r < limit, 1)
                )
        async_copy.commit_group()

        k_ar = gl.arange(0, BLK, layout=gl.SliceLayout(0, TILE))
        rows_ar = gl.arange(0, BLK, layout=gl.SliceLayout(1, MMA))
        cols = gl.arange(0, HDIM, layout=gl.SliceLayout(0, MMA))
        for pid_m in range(m_lo, m_hi):
            m0 = pid_m * BLK
            # this block's rows of C B^T; with PREFETCH_CB the first key tile is loaded now, and
            # each later one while the tile before it is scaled and multiplied
            offs_m = m0 + gl.arange(0, BLK, layout=gl.SliceLayout(1, TILE))
            cb_rows = cb_base + gl.expand_dims(offs_m, 1) * s_cb_m
            if PREFETCH_CB:
                w_nxt = gl.load(cb_rows + gl.expand_dims(k_ar, 0))

            # the state part: exp(dA_m) * (C_m @ S^T), on wgmma once this block's C rows (and, for
            # the first block, the states) have landed; the first block's x tiles may still be in flight
            if pid_m == m_lo:
                async_copy.wait_group(1)
            else:
                async_copy.wait_group(0)
            fence_async_shared()
            gl.thread_barrier()
            acc0 = _state_part(c_s, s_s.index(0), dA_base, m0, rows_ar, BLK, HDIM, MMA)
            dA_m0 = gl.load(dA_base + offs_m)
            if HEAD_PAIR:
                acc1 = _state_part(c_s, s_s.index(1), dA_base + s_dt_h, m0, rows_ar, BLK, HDIM, MMA)
                dA_m1 = gl.load(dA_base + s_dt_h + offs_m)

            # the chunk part: sum over key tiles of (C B^T scaled, masked) @ x, the raw tile loaded
            # once for both heads of a pair
            async_copy.wait_group(0)
            fence_async_shared()
            gl.thread_barrier()
            for kb in range(0, pid_m + 1):
                offs_k = kb * BLK + k_ar
                if PREFETCH_CB:
                    w = w_nxt
                    k_next = gl.minimum(kb + 1, pid_m) * BLK + k_ar  # the last iteration re-reads its own tile
                    w_nxt = gl.load(cb_rows + gl.expand_dims(k_next, 0))
                else:
                    w = gl.load(cb_rows + gl.expand_dims(offs_k, 0))
                if HEAD_PAIR:
                    acc0 = _tile_mma(w, dA_m0, dA_base, dt_base, offs_m, offs_k, a_s.index(0), x_s.index(kb), acc0)
                    # head 1's MMA before it is complete (in order: a_s[1] is free), then head 0's
                    acc0, acc1 = warpgroup_mma_wait(num_outstanding=1, deps=(acc0, acc1))
                    acc1 = _tile_mma(
                        w, dA_m1, dA_base + s_dt_h, dt_base + s_dt_h, offs_m, offs_k, a_s.index(1),
                        x_s.index(N_K + kb), acc1,
                    )  # fmt: skip
                    acc0, acc1 = warpgroup_mma_wait(num_outstanding=1, deps=(acc0, acc1))
                else:
                    acc0 = _tile_mma(w, dA_m0, dA_base, dt_base, offs_m, offs_k, a_s.index(kb % 2), x_s.index(kb), acc0)
                    acc0 = warpgroup_mma_wait(num_outstanding=1, deps=(acc0,))
            acc0 = warpgroup_mma_wait(num_outstanding=0, deps=(acc0,))
            if HEAD_PAIR:
                acc1 = warpgroup_mma_wait(num_outstanding=0, deps=(acc1,))

            if pid_m + 1 < m_hi:  # the next block's C rows, into C's buffer (its MMAs are done)
                gl.thread_barrier()
                c_src = C_base + gl.expand_dims(m0 + BLK + rc, 1) * s_C_t + gl.expand_dims(nc, 0)
                async_copy.async_copy_global_to_shared(c_s, c_src, mask=gl.expand_dims(m0 + BLK + rc < limit, 1))
                async_copy.commit_group()

            rows = m0 + rows_ar
            _write_rows(
                acc0, x_s.index(pid_m), out_base, D_ptr, h, rows, cols, limit, s_o_t, s_D_h, HAS_D, D_HAS_HDIM, MMA
            )
            if HEAD_PAIR:
                _write_rows(
                    acc1, x_s.index(N_K + pid_m), out_base + s_o_h, D_ptr, h + 1, rows, cols, limit, s_o_t, s_D_h,
                    HAS_D, D_HAS_HDIM, MMA,
                )  # fmt: skip


def ssd_gluon_available(device: torch.device) -> bool:
    """Whether the Gluon output kernel can run on ``device``: Gluon imports and it is an sm_90 GPU."""
    return gluon is not None and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9


def chunk_scan_gluon_supported(x: Tensor, chunk: int, d_state: int) -> bool:
    """Whether :func:`chunk_scan_gluon` takes these shapes (else use ``mamba_ssm``'s kernel)."""
    head_dim = x.shape[-1]

    def pow2(n: int) -> bool:
        return 16 <= n <= 256 and n & (n - 1) == 0

    return (
        ssd_gluon_available(x.device)
        and x.dtype in (torch.bfloat16, torch.float16)
        and chunk % BM == 0
        and pow2(head_dim)
        and pow2(d_state)
    )


def chunk_scan_gluon(
    cb: Tensor,
    x: Tensor,
    dt: Tensor,
    dA_cumsum: Tensor,
    C: Tensor,
    states: Tensor,
    D: Tensor | None = None,
    *,
    prefetch_cb: bool = True,
    row_loop: bool = False,
    head_pair: bool = False,
) -> Tensor:
    """Each token's SSD output from its chunk's incoming state and the chunk's earlier tokens.

    Parameters
    ----------
    cb : Tensor of shape (batch, n_chunks, groups, chunk, chunk), float32 or the dtype of ``x``
        ``C_m . B_k`` within each chunk; last axis contiguous. In ``x``'s dtype (``ssd_combined(...,
        rounded_cb=True)``) each program reads half the bytes of the tiles its group's heads all
        read again from L2, at the cost of one more rounding (each ``C_m . B_k`` before it is scaled).
    x : Tensor of shape (batch, n_tokens, heads, head_dim), bf16 or fp16
        Last axis contiguous.
    dt, dA_cumsum : Tensor of shape (batch, heads, n_chunks, chunk), float32, same strides
    C : Tensor of shape (batch, n_tokens, groups, d_state), dtype of ``x``, last axis contiguous
    states : Tensor of shape (batch, n_chunks, heads, head_dim, d_state), dtype of ``x``
        The state entering each chunk; its last two axes contiguous.
    D : Tensor of shape (heads,) or (heads, head_dim), optional
    prefetch_cb : bool
        Load each ``C B^T`` tile one key step ahead, into registers (default), or where it is used.
    row_loop : bool
        One program per (batch, chunk, head) walks the chunk's row blocks in turn, loading the
        head's state and each ``x`` tile once (at Mamba2-2.7B's sizes a quarter of the state's and
        40% of ``x``'s reads from L2 of one program per row block, about a quarter of the kernel's
        L2 traffic), with each next block's ``C`` rows copied while the block before it is
        written; otherwise (default) one program per row block.
    head_pair : bool
        Two heads of one group per program: each raw ``C B^T`` tile and the ``C`` rows are loaded
        once for both (about 1.15 GB less L2 traffic per Mamba2-2.7B layer), at twice the shared
        memory (two programs per SM instead of three). Needs an even number of heads per group.

    Returns
    -------
    Tensor of shape (batch, n_tokens, heads, head_dim), dtype of ``x``
        ``exp(dA_m) C_m S_c^T + sum_{k <= m} (C_m . B_k) exp(dA_m - dA_k) dt_k x_k + D x_m``.
    """
    batch, n_tokens, heads, head_dim = x.shape
    _, _, n_chunks, chunk = dt.shape
    groups, d_state = C.shape[2], C.shape[3]
    if not chunk_scan_gluon_supported(x, chunk, d_state):
        raise ValueError(
            f"chunk_scan_gluon: needs an sm_90 GPU, bf16/fp16 x, chunk a multiple of {BM} and head_dim, "
            f"d_state powers of two in 16..256; got {x.dtype}, chunk {chunk}, head_dim {head_dim}, d_state {d_state}"
        )
    if dt.stride() != dA_cumsum.stride() or dt.stride(-1) != 1:
        raise ValueError("chunk_scan_gluon: dt and dA_cumsum need the same strides, unit stride on the chunk axis")
    if cb.dtype not in (torch.float32, x.dtype):
        raise ValueError(f"chunk_scan_gluon: cb must be float32 or x's dtype {x.dtype}, got {cb.dtype}")
    for name, t in (("cb", cb), ("x", x), ("C", C)):
        if t.stride(-1) != 1:
            raise ValueError(f"chunk_scan_gluon: {name} needs stride 1 on its last axis, got {t.stride()}")
    if head_pair and (heads // groups) % 2:
        raise ValueError(f"chunk_scan_gluon: head_pair needs an even number of heads per group, got {heads // groups}")
    if states.stride(-1) != 1 or states.stride(-2) != d_state:
        states = states.contiguous()
    states = states.to(x.dtype)
    C = C.to(x.dtype)
    out = torch.empty(batch, n_tokens, heads, head_dim, dtype=x.dtype, device=x.device)
    el = gl.bfloat16 if x.dtype == torch.bfloat16 else gl.float16
    mma = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, head_dim, 16])
    if D is not None:
        D = D.float().contiguous()
    grid = (heads // (2 if head_pair else 1), 1 if row_loop else chunk // BM, batch * n_chunks)
    _ssd_chunk_scan_kernel[grid](
        cb, x, out, dt, dA_cumsum, C, states, D if D is not None else dt,
        n_tokens, n_chunks, heads // groups,
        cb.stride(0), cb.stride(1), cb.stride(2), cb.stride(3),
        x.stride(0), x.stride(1), x.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        dt.stride(0), dt.stride(1), dt.stride(2),
        C.stride(0), C.stride(1), C.stride(2),
        states.stride(0), states.stride(1), states.stride(2),
        D.stride(0) if D is not None else 0,
        CHUNK=chunk, HDIM=head_dim, DSTATE=d_state,
        HAS_D=D is not None, D_HAS_HDIM=D is not None and D.dim() == 2,
        MMA=mma,
        TILE=_copy_layout(BM, BM, cb.element_size(), 4),
        CP_X=_copy_layout(BM, head_dim, 2, 4),
        CP_C=_copy_layout(BM, d_state, 2, 4),
        CP_S=_copy_layout(head_dim, d_state, 2, 4),
        SH_X=gl.NVMMASharedLayout.get_default_for([BM, head_dim], el),
        SH_A=gl.NVMMASharedLayout.get_default_for([BM, BM], el),
        SH_C=gl.NVMMASharedLayout.get_default_for([BM, d_state], el),
        SH_S=gl.NVMMASharedLayout.get_default_for([head_dim, d_state], el),
        PREFETCH_CB=prefetch_cb,
        ROW_LOOP=row_loop and chunk > BM,  # one row block: the same program (and Triton 3.6 fails to lower the loop)
        HEAD_PAIR=head_pair,
        num_warps=4,
    )  # fmt: skip
    return out
