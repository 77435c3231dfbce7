"""Mamba-1 selective scan in Gluon: the ``triton`` scan's recurrence with the register layout chosen by hand.

Same recurrence, arguments and result as
:func:`reprflow.kernels.selective_scan.selective_scan_triton` (time-major
``(batch, n_tokens, channels)`` tensors, float32 state and arithmetic, output in the
dtype of ``u``). The Triton kernel leaves the layout of its ``(d_state, BLOCK_D)`` state to
the compiler, which derives it from the 2-D load of ``A`` (contiguous along the state):
4 channels x 4 states per lane, so every step pays three layout conversions of ``u``,
``delta``, ``z`` and ``y`` through shared memory (three barriers) and an 8-shuffle
reduction (``benchmarks/scan_sass.py``). Gluon (Triton's explicit-layout dialect,
``triton.experimental.gluon``, Triton >= 3.5) states the layout:

* the state is ``BlockedLayout([SPT_N, 1], [TPW_N, 32 // TPW_N], [1, num_warps], [0, 1])``:
  each lane holds ``SPT_N = d_state / TPW_N`` states of one channel, ``TPW_N`` lanes share a
  channel, a warp covers ``32 // TPW_N`` channels;
* ``u``, ``delta``, ``z`` and the output are loaded and stored in the state's channel
  slice (``SliceLayout(0, ·)``), ``B`` and ``C`` in its state slice (``SliceLayout(1, ·)``):
  no conversion at all, and ``y = sum_n C[n] h[n]`` is an in-lane chain plus
  ``log2(TPW_N)`` shuffles;
* with ``STAGES`` >= 2 (the default, 2) the inputs of each block of ``UNROLL`` steps are
  copied global -> shared by ``cp.async`` ``STAGES - 1`` blocks ahead of the block computed:
  nothing in flight holds registers, and each step reads its rows from shared memory
  straight into the slice layouts above (the loads' latency was what bounded the register
  versions, ``docs/kernels.md``); with ``STAGES`` 0 and ``PREFETCH`` each loop iteration
  loads the next block into registers while it computes the current one;
* no masks in the time loop: ``n_tokens - n_tokens % UNROLL`` tokens go through the
  unrolled loop, the rest through a one-step loop; no channel masks when ``BLOCK_D``
  divides ``channels``;
* each lane's decays ``2**(delta A log2 e)`` of one step are one inline-PTX block
  (:mod:`reprflow.kernels.exp2_ptx`): ``fma_exps`` of every 16 (default 1) by a degree-5
  polynomial on the FMA pipe, the rest by ``MUFU.EX2``, so the special-function unit, the
  scan's bottleneck, has fewer to do (7-9% faster on an H100, same float32 accuracy).

Gluon is experimental and its API moves between Triton releases: when it does not import
(or a launch fails to compile) this candidate is simply not offered
(:func:`gluon_available`) and the ``triton`` scan runs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from reprflow.kernels.exp2_ptx import exp2_ptx, exp2_ptx_constraints
from reprflow.kernels.selective_scan import _check_shapes

__all__ = ["GluonScanConfig", "decay_exp2_split", "default_gluon_config", "gluon_available", "selective_scan_gluon"]

_LOG2E = math.log2(math.e)

try:  # CUDA builds of torch ship Triton; Gluon is in Triton >= 3.5
    import triton
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.ampere import async_copy
except Exception:  # pragma: no cover - depends on the install
    triton = gluon = gl = async_copy = None


def decay_exp2_split(d_state: int, lanes_per_channel: int, fma_exps: int) -> tuple[int, int]:
    """``(pack, n_poly)``: each lane's decays go through PTX blocks of ``pack`` values, ``n_poly`` of them by polynomial.

    A lane holds ``d_state / lanes_per_channel`` states of its channel; a block takes up to 16 of
    them, and ``fma_exps`` of every 16 (rounded down for smaller blocks) go to the FMA pipe.
    """
    if not 0 <= fma_exps <= 16:
        raise ValueError(f"selective_scan_gluon: fma_exps must be in 0..16 (of every 16 decays), got {fma_exps}")
    pack = min(d_state // lanes_per_channel, 16)
    return pack, fma_exps * pack // 16


def gluon_available() -> bool:
    """Whether Triton's Gluon dialect imports here (it needs Triton >= 3.5)."""
    return gluon is not None


if gluon is not None:
    from reprflow.kernels.selective_scan import _silu, _softplus  # Triton helpers; Gluon calls them

    @gluon.jit
    def _load_step(u_t, dt_t, b_t, c_t, z_t, mask_d, HAS_Z: gl.constexpr, EVEN_D: gl.constexpr):
        # The inputs of one time step from its row pointers; z is u again when absent
        if EVEN_D:
            u = gl.load(u_t)
            dt = gl.load(dt_t)
            z = gl.load(z_t) if HAS_Z else u
        else:
            u = gl.load(u_t, mask=mask_d, other=0.0)
            dt = gl.load(dt_t, mask=mask_d, other=0.0)
            z = gl.load(z_t, mask=mask_d, other=0.0) if HAS_Z else u
        return u, dt, gl.load(b_t), gl.load(c_t), z

    @gluon.jit
    def _load_block(
        u_row,
        dt_row,
        b_row,
        c_row,
        z_row,
        t0,
        t_last,
        mask_d,
        S_U_T: gl.constexpr,
        S_DT_T: gl.constexpr,
        S_B_T: gl.constexpr,
        S_C_T: gl.constexpr,
        S_Z_T: gl.constexpr,
        UNROLL: gl.constexpr,
        HAS_Z: gl.constexpr,
        EVEN_D: gl.constexpr,
        CAP: gl.constexpr,
    ):
        # The inputs of steps t0 .. t0 + UNROLL - 1; with CAP each step index is capped at
        # t_last (the first block, which may be longer than the sequence, reads in range)
        block = ()
        for k in gl.static_range(UNROLL):
            t = gl.minimum(t0 + k, t_last) if CAP else t0 + k
            block = block + (
                _load_step(
                    u_row + t * S_U_T,
                    dt_row + t * S_DT_T,
                    b_row + t * S_B_T,
                    c_row + t * S_C_T,
                    z_row + t * S_Z_T,
                    mask_d,
                    HAS_Z,
                    EVEN_D,
                ),
            )
        return block

    @gluon.jit
    def _scan_step(h, step, o_t, chan, FLAGS: gl.constexpr):
        # h [D_STATE, BLOCK_D] float32 -> updated h; y [BLOCK_D] stored at o_t. chan: the program's
        # per-channel tensors (a2, dskip, dt_bias, mask_d); FLAGS: (HAS_D, HAS_Z, HAS_DT_BIAS,
        # SOFTPLUS, EVEN_D, EXP2_PTX, EXP2_CONSTRAINTS, EXP2_PACK), the decays by EXP2_PTX
        # (exp2_ptx.py), EXP2_PACK of a lane's states per block
        a2, dskip, dt_bias, mask_d = chan
        HAS_D: gl.constexpr = FLAGS[0]
        HAS_Z: gl.constexpr = FLAGS[1]
        HAS_DT_BIAS: gl.constexpr = FLAGS[2]
        SOFTPLUS: gl.constexpr = FLAGS[3]
        EVEN_D: gl.constexpr = FLAGS[4]
        EXP2_PTX: gl.constexpr = FLAGS[5]
        EXP2_CONSTRAINTS: gl.constexpr = FLAGS[6]
        EXP2_PACK: gl.constexpr = FLAGS[7]
        u, dt, b, c, z = step
        u = u.to(gl.float32)
        dt = dt.to(gl.float32)
        if HAS_DT_BIAS:
            dt = dt + dt_bias
        if SOFTPLUS:
            dt = _softplus(dt)
        decay = gl.inline_asm_elementwise(
            EXP2_PTX, EXP2_CONSTRAINTS, [gl.expand_dims(dt, 0) * a2], dtype=gl.float32, is_pure=True, pack=EXP2_PACK
        )
        h = h * decay + gl.expand_dims(dt * u, 0) * gl.expand_dims(b.to(gl.float32), 1)
        y = gl.sum(h * gl.expand_dims(c.to(gl.float32), 1), axis=0)
        if HAS_D:
            y = y + dskip * u
        if HAS_Z:
            y = y * _silu(z.to(gl.float32))
        if EVEN_D:
            gl.store(o_t, y.to(o_t.dtype.element_ty))
        else:
            gl.store(o_t, y.to(o_t.dtype.element_ty), mask=mask_d)
        return h

    @gluon.jit
    def _scan_blocks_shared(
        h,
        u_base,
        dt_base,
        bc_base,
        z_base,
        o_row,
        pid_d,
        n_blocks,
        chan,
        S_U_T: gl.constexpr,
        S_DT_T: gl.constexpr,
        S_BC_T: gl.constexpr,
        S_Z_T: gl.constexpr,
        S_O_T: gl.constexpr,
        LAYOUT: gl.constexpr,
        COPY_D: gl.constexpr,
        COPY_BC: gl.constexpr,
        D_STATE: gl.constexpr,
        BLOCK_D: gl.constexpr,
        UNROLL: gl.constexpr,
        STAGES: gl.constexpr,
        HAS_Z: gl.constexpr,
        STEP_FLAGS: gl.constexpr,
    ):
        # The n_blocks whole blocks of the scan, their inputs copied global -> shared by cp.async
        # STAGES - 1 blocks ahead of the block computed (no registers hold them in flight); each
        # step then reads its row of each buffer straight into the state's slice layouts.
        # ``bc_base`` points at the packed float32 [B | C] rows (2 * D_STATE per token).
        smem_l: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
        u_s = gl.allocate_shared_memory(u_base.dtype.element_ty, [STAGES, UNROLL, BLOCK_D], smem_l)
        dt_s = gl.allocate_shared_memory(dt_base.dtype.element_ty, [STAGES, UNROLL, BLOCK_D], smem_l)
        bc_s = gl.allocate_shared_memory(bc_base.dtype.element_ty, [STAGES, UNROLL, 2 * D_STATE], smem_l)
        z_s = gl.allocate_shared_memory(z_base.dtype.element_ty, [STAGES if HAS_Z else 1, UNROLL, BLOCK_D], smem_l)
        bufs = (u_s, dt_s, bc_s, z_s)

        # whole blocks only (the caller's condition: BLOCK_D divides channels), so no masks: a masked
        # cp.async needs the mask uniform over each 4-byte vector, which a channel edge breaks
        ct2 = gl.expand_dims(gl.arange(0, UNROLL, layout=gl.SliceLayout(1, COPY_D)), 1)
        cd2 = gl.expand_dims(pid_d * BLOCK_D + gl.arange(0, BLOCK_D, layout=gl.SliceLayout(0, COPY_D)), 0)
        u_cp = u_base + ct2 * S_U_T + cd2
        dt_cp = dt_base + ct2 * S_DT_T + cd2
        z_cp = z_base + ct2 * S_Z_T + cd2
        bt = gl.arange(0, UNROLL, layout=gl.SliceLayout(1, COPY_BC))
        bn = gl.arange(0, 2 * D_STATE, layout=gl.SliceLayout(0, COPY_BC))
        bc_cp = bc_base + gl.expand_dims(bt, 1) * S_BC_T + gl.expand_dims(bn, 0)
        srcs = (u_cp, dt_cp, bc_cp, z_cp)
        strides = (S_U_T, S_DT_T, S_BC_T, S_Z_T)

        for p in gl.static_range(STAGES - 1):  # the prologue: blocks 0 .. STAGES - 2
            if p < n_blocks:
                _issue_block(bufs, srcs, strides, p, STAGES, UNROLL, HAS_Z)
            async_copy.commit_group()  # one group per block, empty past the end: counts stay exact

        # the same buffers seen as [STAGES * UNROLL] rows, one row per step (unswizzled: same bytes)
        rows_l: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
        u_r = u_s._reinterpret(u_s.dtype, [STAGES * UNROLL, BLOCK_D], rows_l)
        dt_r = dt_s._reinterpret(dt_s.dtype, [STAGES * UNROLL, BLOCK_D], rows_l)
        bc_r = bc_s._reinterpret(bc_s.dtype, [STAGES * UNROLL, 2 * D_STATE], rows_l)
        if HAS_Z:
            z_r = z_s._reinterpret(z_s.dtype, [STAGES * UNROLL, BLOCK_D], rows_l)
        chan_l: gl.constexpr = gl.SliceLayout(0, LAYOUT)
        state_l: gl.constexpr = gl.SliceLayout(1, LAYOUT)
        for i in range(n_blocks):
            async_copy.wait_group(STAGES - 2)  # this thread's copies of block i have landed
            gl.thread_barrier()  # everyone's have; and block i - 1's stage is read by all warps
            j = i + STAGES - 1
            if j < n_blocks:  # into the stage block i - 1 used
                _issue_block(bufs, srcs, strides, j, STAGES, UNROLL, HAS_Z)
            async_copy.commit_group()
            r0 = (i % STAGES) * UNROLL
            for k in gl.static_range(UNROLL):
                u = u_r.index(r0 + k).load(chan_l)
                dt = dt_r.index(r0 + k).load(chan_l)
                bc_row = bc_r.index(r0 + k)
                b = bc_row.slice(0, D_STATE).load(state_l)
                c = bc_row.slice(D_STATE, D_STATE).load(state_l)
                z = z_r.index(r0 + k).load(chan_l) if HAS_Z else u
                h = _scan_step(h, (u, dt, b, c, z), o_row + (i * UNROLL + k) * S_O_T, chan, STEP_FLAGS)
        async_copy.wait_group(0)  # nothing left in flight when the buffers go
        return h

    @gluon.jit
    def _issue_block(bufs, srcs, strides, block, STAGES: gl.constexpr, UNROLL: gl.constexpr, HAS_Z: gl.constexpr):
        # cp.async of block ``block`` (UNROLL steps) of u, delta, [B | C] and z into their stage's
        # buffers; ``srcs`` point at block 0, ``strides`` are their token strides
        for n in gl.static_range(4 if HAS_Z else 3):
            dst = bufs[n].index(block % STAGES)
            async_copy.async_copy_global_to_shared(dst, srcs[n] + block * (UNROLL * strides[n]))

    @gluon.jit
    def _selective_scan_gluon_kernel(
        u_ptr,
        dt_ptr,
        a_ptr,
        b_ptr,
        c_ptr,
        dskip_ptr,
        z_ptr,
        dtb_ptr,
        out_ptr,
        n_tokens,
        channels,
        s_u_b,
        s_dt_b,
        s_b_b,
        s_c_b,
        s_z_b,
        s_o_b,
        S_U_T: gl.constexpr,  # token strides: compile-time, so a block's steps are immediate offsets
        S_DT_T: gl.constexpr,
        S_B_T: gl.constexpr,
        S_C_T: gl.constexpr,
        S_Z_T: gl.constexpr,
        S_O_T: gl.constexpr,
        LAYOUT: gl.constexpr,  # of the state [D_STATE, BLOCK_D]
        D_STATE: gl.constexpr,
        BLOCK_D: gl.constexpr,
        UNROLL: gl.constexpr,
        PREFETCH: gl.constexpr,
        EVEN_D: gl.constexpr,
        HAS_D: gl.constexpr,
        HAS_Z: gl.constexpr,
        HAS_DT_BIAS: gl.constexpr,
        SOFTPLUS: gl.constexpr,
        EXP2_PTX: gl.constexpr,  # the decays' PTX block (exp2_ptx.exp2_ptx), EXP2_PACK values each
        EXP2_CONSTRAINTS: gl.constexpr,
        EXP2_PACK: gl.constexpr,
        STAGES: gl.constexpr = 0,  # > 0: blocks come through shared memory, STAGES - 1 ahead
        COPY_D: gl.constexpr = None,  # layout of a [UNROLL, BLOCK_D] block's cp.async
        COPY_BC: gl.constexpr = None,  # layout of a [UNROLL, 2 * D_STATE] block's cp.async
    ):
        pid_d = gl.program_id(0)
        pid_b = gl.program_id(1).to(gl.int64)
        offs_d = pid_d * BLOCK_D + gl.arange(0, BLOCK_D, layout=gl.SliceLayout(0, LAYOUT))
        offs_n = gl.arange(0, D_STATE, layout=gl.SliceLayout(1, LAYOUT))
        mask_d = offs_d < channels

        # A * log2(e), (channels, d_state) contiguous, straight into the state's layout
        a_ptrs = a_ptr + gl.expand_dims(offs_d, 0) * D_STATE + gl.expand_dims(offs_n, 1)
        a2 = gl.load(a_ptrs, mask=gl.expand_dims(mask_d, 0), other=0.0)
        if HAS_D:
            dskip = gl.load(dskip_ptr + offs_d, mask=mask_d, other=0.0)
        else:
            dskip = gl.zeros([BLOCK_D], gl.float32, layout=gl.SliceLayout(0, LAYOUT))
        if HAS_DT_BIAS:
            dt_bias = gl.load(dtb_ptr + offs_d, mask=mask_d, other=0.0)
        else:
            dt_bias = gl.zeros([BLOCK_D], gl.float32, layout=gl.SliceLayout(0, LAYOUT))

        u_row = u_ptr + pid_b * s_u_b + offs_d
        dt_row = dt_ptr + pid_b * s_dt_b + offs_d
        b_row = b_ptr + pid_b * s_b_b + offs_n
        c_row = c_ptr + pid_b * s_c_b + offs_n
        z_row = z_ptr + pid_b * s_z_b + offs_d
        o_row = out_ptr + pid_b * s_o_b + offs_d

        h = gl.zeros([D_STATE, BLOCK_D], gl.float32, layout=LAYOUT)
        chan = (a2, dskip, dt_bias, mask_d)
        STEP_FLAGS: gl.constexpr = (HAS_D, HAS_Z, HAS_DT_BIAS, SOFTPLUS, EVEN_D, EXP2_PTX, EXP2_CONSTRAINTS, EXP2_PACK)
        n_full = n_tokens - n_tokens % UNROLL
        rows = (u_row, dt_row, b_row, c_row, z_row)
        strides = (S_U_T, S_DT_T, S_B_T, S_C_T, S_Z_T)
        if STAGES > 0:
            h = _scan_blocks_shared(
                h,
                u_ptr + pid_b * s_u_b,
                dt_ptr + pid_b * s_dt_b,
                b_ptr + pid_b * s_b_b,
                z_ptr + pid_b * s_z_b,
                o_row,
                pid_d,
                n_full // UNROLL,
                chan,
                S_U_T,
                S_DT_T,
                S_B_T,
                S_Z_T,
                S_O_T,
                LAYOUT,
                COPY_D,
                COPY_BC,
                D_STATE,
                BLOCK_D,
                UNROLL,
                STAGES,
                HAS_Z,
                STEP_FLAGS,
            )
        else:
            if PREFETCH:  # the first block (unused when n_tokens < UNROLL)
                nxt = _load_block(*rows, 0, n_tokens - 1, mask_d, *strides, UNROLL, HAS_Z, EVEN_D, True)
            for t0 in range(0, n_full, UNROLL):
                if PREFETCH:  # this block came with the previous iteration; fetch the next one
                    cur = nxt
                    t_n = gl.minimum(t0 + UNROLL, n_full - UNROLL)  # the last iteration re-reads its own block
                    nxt = _load_block(*rows, t_n, 0, mask_d, *strides, UNROLL, HAS_Z, EVEN_D, False)
                else:  # all loads of the block first: independent of h, their latencies overlap
                    cur = _load_block(*rows, t0, 0, mask_d, *strides, UNROLL, HAS_Z, EVEN_D, False)
                for k in gl.static_range(UNROLL):
                    h = _scan_step(h, cur[k], o_row + (t0 + k) * S_O_T, chan, STEP_FLAGS)
        for t in range(n_full, n_tokens):  # the last n_tokens % UNROLL steps
            step = _load_step(
                u_row + t * S_U_T,
                dt_row + t * S_DT_T,
                b_row + t * S_B_T,
                c_row + t * S_C_T,
                z_row + t * S_Z_T,
                mask_d,
                HAS_Z,
                EVEN_D,
            )
            h = _scan_step(h, step, o_row + t * S_O_T, chan, STEP_FLAGS)


class GluonScanConfig(tuple):
    """Launch configuration ``(lanes_per_channel, num_warps, unroll, prefetch, stages)`` of the Gluon scan.

    ``lanes_per_channel`` (1, 2, 4 ... d_state) lanes share one channel, each holding
    ``d_state / lanes_per_channel`` of its states; a program covers
    ``32 // lanes_per_channel * num_warps`` channels. ``stages`` 0: each block of ``unroll``
    steps is loaded into registers (with ``prefetch``, one block ahead); ``stages`` >= 2: blocks
    are copied into shared memory by ``cp.async``, ``stages - 1`` blocks ahead, and ``prefetch``
    is ignored.
    """

    __slots__ = ()

    def __new__(cls, lanes_per_channel: int, num_warps: int, unroll: int, prefetch: bool = True, stages: int = 0):
        return super().__new__(cls, (int(lanes_per_channel), int(num_warps), int(unroll), bool(prefetch), int(stages)))

    def __repr__(self) -> str:
        lanes, nw, un, pf, st = self
        ahead = f"shared x{st}" if st else ("prefetch" if pf else "no prefetch")
        return f"lanes/channel={lanes} warps={nw} unroll={un} {ahead}"


def _copy_layout(rows: int, cols: int, elem_bytes: int, num_warps: int):
    """A ``BlockedLayout`` covering a ``[rows, cols]`` block exactly once, rows-major, for ``cp.async``.

    Each thread copies ``vec`` contiguous elements (4, 8 or 16 bytes: what ``cp.async`` moves).
    None when there is none: the block is too small for the program's threads at 4 bytes each
    (then the scan takes its inputs through registers).
    """
    threads = 32 * num_warps
    vec = min(16 // elem_bytes, cols, rows * cols // threads)
    if vec < 1 or vec * elem_bytes < 4:
        return None
    tc = min(32, cols // vec)
    tr = 32 // tc
    wr = max(1, min(num_warps, rows // tr))
    wc = num_warps // wr
    if tr * wr > rows or tc * wc * vec > cols:
        return None
    return gl.BlockedLayout([1, vec], [tr, tc], [wr, wc], [1, 0])


def default_gluon_config(channels: int, batch: int) -> GluonScanConfig:
    """The configuration used when none is given: ``(1, 1, 8, True, 2)``.

    One lane per channel (its 16 states in registers), one warp per program (32 channels),
    eight steps per block, blocks copied into shared memory by ``cp.async`` one block ahead.
    The fastest of the ten shared-memory configurations first measured on an H200 at Mamba-2.8B
    shapes (``benchmarks/scan_sweep.py``, 2026-12-04 20:32 UTC,
    benchmarks/results/scan_sweep_h200_2026-12-04_shared.md): 1.236 ms per layer at B=16,
    T=2048 and 1.455 ms at B=8, T=4096, against 1.932 / 1.907 ms for the register-prefetch
    configuration before it, ``(2, 4, 2, True)``, and 1.709 / 2.175 ms for the ``triton`` scan.
    """
    return GluonScanConfig(1, 1, 8, True, 2)


def selective_scan_gluon(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    *,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    config: tuple | None = None,
    fma_exps: int = 1,
) -> Tensor:
    """Selective scan on a CUDA device through the Gluon kernel.

    Parameters
    ----------
    u, delta, A, B, C, D, z, delta_bias, delta_softplus
        As :func:`reprflow.kernels.selective_scan.selective_scan_reference`: ``u``, ``delta``
        and ``z`` of shape (batch, n_tokens, channels), ``A`` (channels, d_state), ``B`` and
        ``C`` (batch, n_tokens, d_state), ``D`` and ``delta_bias`` (channels,). The last axis
        of every (batch, n_tokens, ·) tensor must have stride 1; the other strides are free.
        ``d_state`` must be a power of two.
    config : GluonScanConfig or (lanes_per_channel, num_warps, unroll[, prefetch[, stages]]), optional
        Default :func:`default_gluon_config`.
    fma_exps : int
        How many of every 16 decays ``2**(delta A log2 e)`` are computed by a polynomial on the FMA
        pipe instead of the special-function unit (:mod:`reprflow.kernels.exp2_ptx`; 0..16, rounded
        down where a lane holds fewer than 16 states). 1, the default, measured fastest on an H100;
        0 puts every decay on the special-function unit. Same float32 accuracy either way.

    Returns
    -------
    Tensor of shape (batch, n_tokens, channels)
        In the dtype of ``u``; state and arithmetic are float32.
    """
    if gluon is None:
        raise RuntimeError("selective_scan_gluon needs Triton's Gluon (Triton >= 3.5); use selective_scan_triton")
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    batch, n_tokens, channels = u.shape
    d_state = A.shape[1]
    lanes, nw, un, pf, st = GluonScanConfig(*config) if config is not None else default_gluon_config(channels, batch)
    if d_state & (d_state - 1) or lanes & (lanes - 1) or not 1 <= lanes <= min(d_state, 32):
        raise ValueError(
            f"selective_scan_gluon: d_state ({d_state}) and lanes_per_channel ({lanes}) must be powers of "
            "two with lanes_per_channel <= min(d_state, 32)"
        )
    if not 1 <= un <= 16:
        raise ValueError(f"selective_scan_gluon: unroll must be in 1..16, got {un}")
    pack, n_poly = decay_exp2_split(d_state, lanes, fma_exps)
    if st == 1 or not 0 <= st <= 8:
        raise ValueError(f"selective_scan_gluon: stages must be 0 (registers) or 2..8 (shared memory), got {st}")
    for name, t in (("u", u), ("delta", delta), ("B", B), ("C", C), ("z", z)):
        if t is not None and t.stride(-1) != 1:
            raise ValueError(f"selective_scan_gluon: {name} needs stride 1 on its last axis, got {t.stride()}")
    block_d = 32 // lanes * nw
    layout = gl.BlockedLayout([d_state // lanes, 1], [lanes, 32 // lanes], [1, nw], [0, 1])
    a2 = (A.float() * _LOG2E).contiguous()
    # B and C in float32, side by side (a few MB): each lane reads its states without conversions
    bc = torch.empty(batch, n_tokens, 2 * d_state, dtype=torch.float32, device=u.device)
    bc[..., :d_state] = B
    bc[..., d_state:] = C
    B, C = bc[..., :d_state], bc[..., d_state:]
    out = torch.empty_like(u)
    zz = z if z is not None else u
    # Through shared memory when a program's channels are whole (no masks), one cp.async layout serves
    # u, delta and z (one element width) and a block is large enough for the program's threads;
    # otherwise through registers (same values)
    copy_layouts = {}
    if st and channels % block_d == 0 and len({t.element_size() for t in (u, delta, zz)}) == 1:
        copy_layouts = {
            "COPY_D": _copy_layout(un, block_d, u.element_size(), nw),
            "COPY_BC": _copy_layout(un, 2 * d_state, 4, nw),
        }
    if None in copy_layouts.values() or not copy_layouts:
        st, copy_layouts = 0, {}
    grid = (triton.cdiv(channels, block_d), batch)
    _selective_scan_gluon_kernel[grid](
        u,
        delta,
        a2,
        B,
        C,
        D.float().contiguous() if D is not None else a2,
        zz,
        delta_bias.float().contiguous() if delta_bias is not None else a2,
        out,
        n_tokens,
        channels,
        u.stride(0),
        delta.stride(0),
        B.stride(0),
        C.stride(0),
        zz.stride(0),
        out.stride(0),
        S_U_T=u.stride(1),
        S_DT_T=delta.stride(1),
        S_B_T=B.stride(1),
        S_C_T=C.stride(1),
        S_Z_T=zz.stride(1),
        S_O_T=out.stride(1),
        LAYOUT=layout,
        D_STATE=d_state,
        BLOCK_D=block_d,
        UNROLL=un,
        PREFETCH=pf,
        EVEN_D=channels % block_d == 0,
        HAS_D=D is not None,
        HAS_Z=z is not None,
        HAS_DT_BIAS=delta_bias is not None,
        SOFTPLUS=delta_softplus,
        EXP2_PTX=exp2_ptx(pack, n_poly),
        EXP2_CONSTRAINTS=exp2_ptx_constraints(pack),
        EXP2_PACK=pack,
        STAGES=st,
        **copy_layouts,
        num_warps=nw,
    )
    return out
