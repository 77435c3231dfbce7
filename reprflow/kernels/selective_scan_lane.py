"""Mamba-1 selective scan with one GPU lane per channel: the ``triton_lane`` candidate.

Same recurrence, arguments and result as :func:`reprflow.kernels.selective_scan.selective_scan_triton`
(time-major ``(batch, n_tokens, channels)`` tensors; float32 state and arithmetic; output
in the dtype of ``u``); it differs in how the work is laid out on the GPU, which is what
bounds the scan: it is limited by instruction issue and by the special-function unit
(one ``ex2`` per token, channel and state), not by memory.

* **One lane owns one channel and all its ``d_state`` states.** The state ``h`` is a
  ``(d_state, BLOCK_D)`` float32 tensor in Triton's default layout (the channels across
  the lanes and warps, the states in each lane's registers, ``BLOCK_D / (32 * num_warps)``
  channels per lane). Nothing in the kernel is loaded as a 2-D tile: ``A`` is read row by
  row, so no load imposes a layout of its own. (The ``triton`` kernel reads ``A`` as a
  2-D tile contiguous along the state; Triton then gives each lane 4 states x 4
  channels, so every output needs a 4-lane shuffle reduction and each step moves ``u``,
  ``delta`` and ``y`` between layouts through shared memory, with barriers: 237 sm_90
  SASS instructions per warp-step before this change, 201 with the shared helpers, 137
  here.) Here
  ``y = sum_n C[n] h[n]`` is a chain of fused multiply-adds inside the lane, and the
  per-channel inputs need no conversion.
* **B and C are packed once into one float32 ``(batch, n_tokens, 2 * d_state)`` buffer**
  (a few MB): every lane reads the same 128 bytes per step (a broadcast from L1) and
  converts nothing.
* **No masks in the time loop:** ``n_tokens - n_tokens % UNROLL`` tokens go through the
  unrolled loop (all loads of ``UNROLL`` steps issued first, then the updates), the rest
  through a one-step loop. The token strides are compile-time constants, so the steps of
  a block address memory by immediate offsets from one base.
* **Optional prefetch:** each iteration loads the next block's ``u``, ``delta`` and ``z``
  (from HBM, the long latency) while it computes the current one; ``B`` and ``C`` (read
  by every program of the batch row, so mostly L2 hits) are loaded in the iteration.
* **Part of the exponentials on the FMA pipe:** the softplus's and the gate's exponentials
  (``channel_exp2_fma``), or all decays of the first ``exp2_fma_steps`` steps of each
  block, by a degree-5 polynomial (:func:`reprflow.kernels.selective_scan._exp2_fma`,
  relative error 2.4e-7) instead of ``ex2``, trading issue slots for special-function
  throughput.

Per element (token x channel x state) the loop runs one multiply (``dt * A``), one ``ex2``,
one multiply (``dt * u * B``) and two fused multiply-adds (state, output); per channel
and step the softplus, the gate and the loads add about as much as one more state.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from reprflow.kernels.selective_scan import _check_triton_inputs, triton

__all__ = ["selective_scan_lane", "LaneConfig", "default_lane_config"]

_LOG2E = math.log2(math.e)

if triton is not None:
    import triton.language as tl

    from reprflow.kernels.selective_scan import _load_channel_params, _load_channels, _load_step, _scan_step

    @triton.jit
    def _selective_scan_lane_kernel(
        u_ptr, dt_ptr, a2t_ptr, bc_ptr, dskip_ptr, z_ptr, dtb_ptr, out_ptr,
        n_tokens, channels,
        s_u_b, s_dt_b, s_bc_b, s_z_b, s_o_b,
        S_U_T: tl.constexpr,  # token strides: compile-time, so a step's addresses are immediate offsets
        S_DT_T: tl.constexpr,
        S_Z_T: tl.constexpr,
        S_O_T: tl.constexpr,
        EVEN_D: tl.constexpr,  # channels % BLOCK_D == 0: no channel masks
        D_STATE: tl.constexpr,
        BLOCK_D: tl.constexpr,
        UNROLL: tl.constexpr,
        EXP2_FMA_STEPS: tl.constexpr,
        CHANNEL_EXP2_FMA: tl.constexpr,
        PREFETCH: tl.constexpr,
        HAS_D: tl.constexpr,
        HAS_Z: tl.constexpr,
        HAS_DT_BIAS: tl.constexpr,
        SOFTPLUS: tl.constexpr,
    ):
        # One program: BLOCK_D channels of one batch row, the whole sequence.
        pid_d = tl.program_id(0)
        pid_b = tl.program_id(1).to(tl.int64)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # [BLOCK_D]
        mask_d = (offs_d < channels) | EVEN_D
        offs_n = tl.arange(0, D_STATE)  # [D_STATE]

        # a2t is A^T * log2(e), (d_state, channels) contiguous: one coalesced row per state,
        # placed into the default (lane-per-channel) layout of the state.
        a2 = tl.zeros([D_STATE, BLOCK_D], dtype=tl.float32)
        for n in tl.static_range(D_STATE):
            a_n = tl.load(a2t_ptr + n * channels + offs_d, mask=mask_d, other=0.0)
            a2 = tl.where(offs_n[:, None] == n, a_n[None, :], a2)
        dskip, dt_bias = _load_channel_params(dskip_ptr, dtb_ptr, offs_d, mask_d, BLOCK_D, HAS_D, HAS_DT_BIAS)

        u_row = u_ptr + pid_b * s_u_b + offs_d
        dt_row = dt_ptr + pid_b * s_dt_b + offs_d
        b_row = bc_ptr + pid_b * s_bc_b + offs_n  # B at [0, D_STATE), C at [D_STATE, 2 D_STATE)
        c_row = b_row + D_STATE
        z_row = z_ptr + pid_b * s_z_b + offs_d
        o_row = out_ptr + pid_b * s_o_b + offs_d

        h = tl.zeros([D_STATE, BLOCK_D], dtype=tl.float32)
        n_full = n_tokens - n_tokens % UNROLL
        if PREFETCH:  # u, delta, z of the first block (none if n_tokens < UNROLL)
            nxt = ()
            for k in tl.static_range(UNROLL):
                nxt = nxt + (_load_channels(u_row, dt_row, z_row, k, k < n_full, S_U_T, S_DT_T, S_Z_T, mask_d,
                                            HAS_Z),)
        for t0 in tl.range(0, n_full, UNROLL):
            # the block's base addresses; step k is at base + k * stride (constants)
            u_t, dt_t, z_t, o_t = u_row + t0 * S_U_T, dt_row + t0 * S_DT_T, z_row + t0 * S_Z_T, o_row + t0 * S_O_T
            b_t, c_t = b_row + t0 * 2 * D_STATE, c_row + t0 * 2 * D_STATE
            # loads first: independent of h, so their latencies overlap
            if PREFETCH:  # this block's u, delta, z came with the previous iteration; fetch the next block's
                cur = nxt
                t_n = tl.minimum(t0 + UNROLL, n_full - UNROLL)  # the last iteration re-reads its own block
                nxt = ()
                for k in tl.static_range(UNROLL):
                    nxt = nxt + (_load_channels(u_row + t_n * S_U_T, dt_row + t_n * S_DT_T, z_row + t_n * S_Z_T,
                                                k, True, S_U_T, S_DT_T, S_Z_T, mask_d, HAS_Z),)
            else:
                cur = ()
                for k in tl.static_range(UNROLL):
                    cur = cur + (_load_channels(u_t, dt_t, z_t, k, True, S_U_T, S_DT_T, S_Z_T, mask_d, HAS_Z),)
            bc = ()
            for k in tl.static_range(UNROLL):
                bc = bc + ((tl.load(b_t + k * 2 * D_STATE), tl.load(c_t + k * 2 * D_STATE)),)
            for k in tl.static_range(UNROLL):
                u, dt, z = cur[k]
                b, c = bc[k]
                h = _scan_step(h, u, dt, b, c, z, a2, dskip, dt_bias, o_t + k * S_O_T, mask_d,
                               HAS_D, HAS_Z, HAS_DT_BIAS, SOFTPLUS, k < EXP2_FMA_STEPS, CHANNEL_EXP2_FMA)
        for t in tl.range(n_full, n_tokens):  # the last n_tokens % UNROLL steps
            u, dt, b, c, z = _load_step(u_row, dt_row, b_row, c_row, z_row, t, True, S_U_T, S_DT_T, 2 * D_STATE,
                                        2 * D_STATE, S_Z_T, mask_d, offs_n, HAS_Z)
            h = _scan_step(h, u, dt, b, c, z, a2, dskip, dt_bias, o_row + t * S_O_T, mask_d,
                           HAS_D, HAS_Z, HAS_DT_BIAS, SOFTPLUS, False, CHANNEL_EXP2_FMA)


class LaneConfig(tuple):
    """Launch configuration ``(block_d, num_warps, unroll, exp2_fma_steps, channel_exp2_fma,
    prefetch)`` of the lane kernel (see :func:`selective_scan_lane`)."""

    __slots__ = ()

    def __new__(cls, block_d: int, num_warps: int, unroll: int, exp2_fma_steps: int = 0,
                channel_exp2_fma: int = 0, prefetch: bool = False):
        return super().__new__(cls, (block_d, num_warps, unroll, exp2_fma_steps, int(channel_exp2_fma),
                                     bool(prefetch)))

    def __repr__(self) -> str:
        bd, nw, un, fma, ch, pf = self
        return (f"BLOCK_D={bd} warps={nw} unroll={un} fma_exp_steps={fma} "
                f"fma_channel_exps={ch} prefetch={'yes' if pf else 'no'}")


def default_lane_config(channels: int, batch: int) -> LaneConfig:
    """The launch configuration used when none is given: ``(32, 1, 4, 0, 1, True)``.

    32 channels per warp (one per lane), one warp per program: at Mamba-2.8B shapes
    (5120 channels, batch 16) that is 2,560 single-warp programs, about 19.4 per SM of an
    H200, all resident (ptxas: 89 registers per thread, so up to 23 warps per SM; unroll 8
    with prefetch takes 106 and would leave a second wave). By the sm_90 SASS of the loop
    (Triton 3.6, Mamba-2.8B strides), per warp-step (32 channels x 16 states): 124
    instructions with every exponential on the special-function unit, 19 of them ``MUFU``
    (16 decays, the softplus's ex2, the gate's ex2 and reciprocal); at 8 cycles per
    ``MUFU`` per SM sub-partition that is 152 cycles, so that unit bounds the loop and
    issue has slack. The softplus's exponential on the FMA pipe (``channel_exp2_fma=1``,
    ~11 instructions) gives 134 instructions and 144 ``MUFU`` cycles; the gate's as well
    (2), or a whole step's 16 decays, makes issue the bound again (147, ~166). The prefetch
    costs ~4 instructions per step. Predicted: ~1.1-1.2x the exp bound if the pipes stay
    busy. ``benchmarks/scan_sweep.py`` measures the alternatives.
    """
    return LaneConfig(32, 1, 4, 0, 1, True)


def selective_scan_lane(
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
    config: tuple[int, int, int, int] | None = None,
) -> Tensor:
    """Selective scan through the lane-per-channel Triton kernel.

    Parameters
    ----------
    u, delta, A, B, C, D, z, delta_bias, delta_softplus
        As :func:`reprflow.kernels.selective_scan.selective_scan_reference`: ``u``, ``delta``
        and ``z`` of shape (batch, n_tokens, channels), ``A`` (channels, d_state), ``B`` and
        ``C`` (batch, n_tokens, d_state), ``D`` and ``delta_bias`` (channels,). The last axis
        of every (batch, n_tokens, .) tensor must have stride 1; other strides are free.
        ``d_state`` must be a power of two.
    config : (block_d, num_warps, unroll[, exp2_fma_steps, channel_exp2_fma, prefetch]), optional
        Launch configuration (default :func:`default_lane_config`): channels per program
        (a power of two, a multiple of ``32 * num_warps``), warps per program, time steps
        per loop iteration (1..8), how many of them take their ``d_state`` exponentials on
        the FMA pipe (0..unroll), and how many of the two per-channel exponentials take
        theirs there (0: none, 1: the softplus's, 2: the softplus's and the gate's), and
        whether each loop iteration loads the next block's ``u``, ``delta`` and ``z``
        (prefetch: their memory latency hides behind a whole block of compute, for ~3
        registers per step of the block).

    Returns
    -------
    Tensor of shape (batch, n_tokens, channels)
        In the dtype of ``u``; state and arithmetic are float32.
    """
    _check_triton_inputs("selective_scan_lane", u, delta, A, B, C, D, z, delta_bias)
    batch, n_tokens, channels = u.shape
    d_state = A.shape[1]
    bd, nw, un, fma, ch, pf = LaneConfig(*config) if config is not None else default_lane_config(channels, batch)
    if bd % (32 * nw) or bd & (bd - 1):
        raise ValueError(f"selective_scan_lane: block_d={bd} must be a power of two and a multiple of 32 * "
                         f"num_warps={32 * nw}")
    if not (1 <= un <= 8 and 0 <= fma <= un and 0 <= ch <= 2):
        raise ValueError(f"selective_scan_lane: need 1 <= unroll <= 8, 0 <= exp2_fma_steps <= unroll and "
                         f"channel_exp2_fma in 0..2, got {LaneConfig(bd, nw, un, fma, ch, pf)}")
    a2t = (A.float() * _LOG2E).t().contiguous()  # [d_state, channels]
    bc = torch.empty(batch, n_tokens, 2 * d_state, dtype=torch.float32, device=u.device)
    bc[..., :d_state] = B
    bc[..., d_state:] = C
    out = torch.empty_like(u)
    dummy = a2t  # any valid pointer for absent optional inputs
    zz = z if z is not None else u
    grid = (triton.cdiv(channels, bd), batch)
    _selective_scan_lane_kernel[grid](
        u, delta, a2t, bc,
        D.float().contiguous() if D is not None else dummy,
        zz,
        delta_bias.float().contiguous() if delta_bias is not None else dummy,
        out,
        n_tokens, channels,
        u.stride(0), delta.stride(0), bc.stride(0), zz.stride(0), out.stride(0),
        S_U_T=u.stride(1), S_DT_T=delta.stride(1), S_Z_T=zz.stride(1), S_O_T=out.stride(1),
        EVEN_D=channels % bd == 0, D_STATE=d_state, BLOCK_D=bd, UNROLL=un, EXP2_FMA_STEPS=fma, CHANNEL_EXP2_FMA=ch, PREFETCH=pf,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DT_BIAS=delta_bias is not None,
        SOFTPLUS=delta_softplus,
        num_warps=nw,
    )
    return out
