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
* with ``PREFETCH`` each loop iteration loads the next block of ``UNROLL`` steps while it
  computes the current one (their memory latency hides behind a block of compute);
* no masks in the time loop: ``n_tokens - n_tokens % UNROLL`` tokens go through the
  unrolled loop, the rest through a one-step loop; no channel masks when ``BLOCK_D``
  divides ``channels``.

Gluon is experimental and its API moves between Triton releases: when it does not import
(or a launch fails to compile) this candidate is simply not offered
(:func:`gluon_available`) and the ``triton`` scan runs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from reprflow.kernels.selective_scan import _check_shapes

__all__ = ["GluonScanConfig", "default_gluon_config", "gluon_available", "selective_scan_gluon"]

_LOG2E = math.log2(math.e)

try:  # CUDA builds of torch ship Triton; Gluon is in Triton >= 3.5
    import triton
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
except Exception:  # pragma: no cover - depends on the install
    triton = gluon = gl = None


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
    def _scan_step(
        h,
        step,
        a2,
        dskip,
        dt_bias,
        o_t,
        mask_d,
        HAS_D: gl.constexpr,
        HAS_Z: gl.constexpr,
        HAS_DT_BIAS: gl.constexpr,
        SOFTPLUS: gl.constexpr,
        EVEN_D: gl.constexpr,
    ):
        # h [D_STATE, BLOCK_D] float32 -> updated h; y [BLOCK_D] stored at o_t
        u, dt, b, c, z = step
        u = u.to(gl.float32)
        dt = dt.to(gl.float32)
        if HAS_DT_BIAS:
            dt = dt + dt_bias
        if SOFTPLUS:
            dt = _softplus(dt)
        decay = gl.exp2(gl.expand_dims(dt, 0) * a2)
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
        n_full = n_tokens - n_tokens % UNROLL
        rows = (u_row, dt_row, b_row, c_row, z_row)
        strides = (S_U_T, S_DT_T, S_B_T, S_C_T, S_Z_T)
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
                h = _scan_step(
                    h,
                    cur[k],
                    a2,
                    dskip,
                    dt_bias,
                    o_row + (t0 + k) * S_O_T,
                    mask_d,
                    HAS_D,
                    HAS_Z,
                    HAS_DT_BIAS,
                    SOFTPLUS,
                    EVEN_D,
                )
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
            h = _scan_step(
                h, step, a2, dskip, dt_bias, o_row + t * S_O_T, mask_d, HAS_D, HAS_Z, HAS_DT_BIAS, SOFTPLUS, EVEN_D
            )


class GluonScanConfig(tuple):
    """Launch configuration ``(lanes_per_channel, num_warps, unroll, prefetch)`` of the Gluon scan.

    ``lanes_per_channel`` (1, 2, 4 ... d_state) lanes share one channel, each holding
    ``d_state / lanes_per_channel`` of its states; a program covers
    ``32 // lanes_per_channel * num_warps`` channels.
    """

    __slots__ = ()

    def __new__(cls, lanes_per_channel: int, num_warps: int, unroll: int, prefetch: bool = True):
        return super().__new__(cls, (int(lanes_per_channel), int(num_warps), int(unroll), bool(prefetch)))

    def __repr__(self) -> str:
        lanes, nw, un, pf = self
        return f"lanes/channel={lanes} warps={nw} unroll={un} prefetch={'yes' if pf else 'no'}"


def default_gluon_config(channels: int, batch: int) -> GluonScanConfig:
    """The configuration used when none is given: ``(2, 4, 2, True)``.

    Two lanes per channel (8 states each), four warps per program (64 channels), two steps
    per loop iteration, prefetch. The fastest of the twelve configurations measured on an
    H200 at Mamba-2.8B shapes (``benchmarks/scan_sweep.py``, 2026-12-04 07:20 UTC;
    benchmarks/results/scan_sweep_h200_2026-12-04.md): 1.811 ms per layer at B=16, T=2048
    (the ``triton`` scan: 1.65-1.69 ms) and 1.829 ms at B=8, T=4096 (``triton``: 2.09 ms).
    """
    return GluonScanConfig(2, 4, 2, True)


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
    config : GluonScanConfig or (lanes_per_channel, num_warps, unroll[, prefetch]), optional
        Default :func:`default_gluon_config`.

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
    lanes, nw, un, pf = GluonScanConfig(*config) if config is not None else default_gluon_config(channels, batch)
    if d_state & (d_state - 1) or lanes & (lanes - 1) or not 1 <= lanes <= min(d_state, 32):
        raise ValueError(
            f"selective_scan_gluon: d_state ({d_state}) and lanes_per_channel ({lanes}) must be powers of "
            "two with lanes_per_channel <= min(d_state, 32)"
        )
    if not 1 <= un <= 8:
        raise ValueError(f"selective_scan_gluon: unroll must be in 1..8, got {un}")
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
        num_warps=nw,
    )
    return out
