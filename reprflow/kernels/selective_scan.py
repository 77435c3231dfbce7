"""Mamba-1 selective scan over time-major tensors: a Triton kernel and a torch reference.

The scan (Gu & Dao 2023, Alg. 2; the recurrence of HF's ``MambaMixer`` slow path) is,
per batch row, channel d and state n::

    delta_t = softplus(delta_raw_t + delta_bias)            (optional softplus / bias)
    h_t     = exp(delta_t * A[d, n]) * h_{t-1} + delta_t * B_t[n] * u_t
    y_t     = sum_n C_t[n] * h_t[n] + D[d] * u_t
    y_t     = y_t * silu(z_t)                                (optional gate)

All tensors are *time-major* ``(batch, n_tokens, channels)``, the layout the mixer's
linear layers produce, so one time step of a block of channels is one contiguous load.

The Triton kernel runs one program per (block of ``BLOCK_D`` channels, batch row). The
state ``h`` of shape ``(d_state, BLOCK_D)`` stays in registers in float32 for the whole
sequence; the program walks the time axis sequentially, ``UNROLL`` steps per loop
iteration: it first issues the loads of all ``UNROLL`` steps (they do not depend on the
state, so their memory latencies overlap) and then runs the ``UNROLL`` state updates.
Inputs may be bfloat16, float16 or float32; all arithmetic is float32; the
output takes the dtype of ``u``. It never loops in Python over the sequence.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["selective_scan", "selective_scan_autograd", "selective_scan_reference", "selective_scan_triton"]

_LOG2E = math.log2(math.e)

try:  # Triton ships with CUDA builds of torch; CPU CI has none.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None


def _check_shapes(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D, z, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, n_tokens, channels), got shape {tuple(u.shape)}")
    batch, n_tokens, channels = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta {tuple(delta.shape)} must match u {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"selective_scan: A must be (channels={channels}, d_state), got {tuple(A.shape)}")
    d_state = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.shape != (batch, n_tokens, d_state):
            raise ValueError(
                f"selective_scan: {name} must be (batch, n_tokens, d_state)={(batch, n_tokens, d_state)}, "
                f"got {tuple(t.shape)}"
            )
    if z is not None and z.shape != u.shape:
        raise ValueError(f"selective_scan: z {tuple(z.shape)} must match u {tuple(u.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (channels,):
            raise ValueError(f"selective_scan: {name} must be (channels={channels},), got {tuple(t.shape)}")


def _time_steps(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool, cd: torch.dtype) -> Tensor:
    """``softplus(delta + delta_bias)`` (each part optional) in ``cd``: the scan's time steps."""
    dt = delta.to(cd)
    if delta_bias is not None:
        dt = dt + delta_bias.to(cd)
    return F.softplus(dt) if delta_softplus else dt


def _skip_and_gate(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, cd: torch.dtype) -> Tensor:
    """The scan output with the skip ``u * D`` added and the gate ``silu(z)`` applied (each optional)."""
    if D is not None:
        y = y + u * D.to(cd)
    return y * F.silu(z.to(cd)) if z is not None else y


def selective_scan_reference(
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
    compute_dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Selective scan in plain torch, vectorised over batch, channels and state.

    Loops in Python over the ``n_tokens`` axis, so it is meant for tests, for CPU runs of
    tiny models and as the float64 ground truth of the Triton kernel.

    Parameters
    ----------
    u : Tensor of shape (batch, n_tokens, channels)
        Input of the scan (the conv output in a Mamba mixer).
    delta : Tensor of shape (batch, n_tokens, channels)
        Time steps before ``delta_bias`` and softplus.
    A : Tensor of shape (channels, d_state)
        Continuous-time state matrix (negative entries: ``-exp(A_log)``).
    B, C : Tensor of shape (batch, n_tokens, d_state)
        Input-dependent input and output projections.
    D : Tensor of shape (channels,), optional
        Skip connection.
    z : Tensor of shape (batch, n_tokens, channels), optional
        Gate: the output is multiplied by ``silu(z)``.
    delta_bias : Tensor of shape (channels,), optional
        Added to ``delta`` before the softplus.
    delta_softplus : bool
        Apply softplus to the biased ``delta``.
    compute_dtype : torch.dtype
        dtype of all arithmetic (float64 for a ground truth).

    Returns
    -------
    Tensor of shape (batch, n_tokens, channels)
        In ``compute_dtype``.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    cd = compute_dtype
    u_, dt = u.to(cd), _time_steps(delta, delta_bias, delta_softplus, cd)
    A_, B_, C_ = A.to(cd), B.to(cd), C.to(cd)
    batch, n_tokens, channels = u.shape
    h = torch.zeros(batch, channels, A.shape[1], dtype=cd, device=u.device)  # [batch, channels, d_state]
    ys = []
    for t in range(n_tokens):
        decay = torch.exp(dt[:, t, :, None] * A_[None])  # [batch, channels, d_state]
        h = decay * h + (dt[:, t] * u_[:, t])[:, :, None] * B_[:, t, None, :]
        ys.append(torch.einsum("bcn,bn->bc", h, C_[:, t]))
    y = torch.stack(ys, dim=1)  # [batch, n_tokens, channels]
    y = _skip_and_gate(y, u_, D, z, cd)
    return y


def selective_scan_autograd(
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
) -> Tensor:
    """Selective scan for training in torch: the recurrence of :func:`selective_scan_reference`,
    arranged so that its backward pass is linear in ``n_tokens``.

    A Python loop that indexes ``x[:, t]`` (HF's torch path, the reference) costs, in the
    backward pass, one zero-filled gradient of the *whole* sequence per token, so a step of
    ``n_tokens`` tokens costs ``O(n_tokens^2)`` memory traffic; on the CPU that made Mamba-1
    the slowest family to train (docs/training.md). Here the discretisation
    ``exp(delta * A)`` and ``delta * B * u`` is computed for all tokens at once, time-major,
    and split with ``unbind`` (whose backward is one ``stack``); the loop then runs one fused
    multiply-add and one batched matmul per token. Arithmetic in float32 (float64 if ``u`` is
    float64).

    Parameters and shapes as :func:`selective_scan_reference`.

    Returns
    -------
    Tensor of shape (batch, n_tokens, channels)
        In the dtype of ``u``.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    cd = torch.float64 if u.dtype == torch.float64 else torch.float32
    u_, dt = u.to(cd), _time_steps(delta, delta_bias, delta_softplus, cd)
    batch, n_tokens, channels = u.shape
    d_state = A.shape[1]
    dt_t = dt.transpose(0, 1)  # [n_tokens, batch, channels]
    decay = torch.exp(dt_t[..., None] * A.to(cd))  # [n_tokens, batch, channels, d_state]
    drive = (dt_t * u_.transpose(0, 1))[..., None] * B.to(cd).transpose(0, 1)[:, :, None, :]
    c_t = C.to(cd).transpose(0, 1)[..., None]  # [n_tokens, batch, d_state, 1]
    h = torch.zeros(batch, channels, d_state, dtype=cd, device=u.device)
    ys = []
    for a_t, b_t, cc in zip(decay.unbind(0), drive.unbind(0), c_t.unbind(0)):
        h = torch.addcmul(b_t, a_t, h)  # [batch, channels, d_state]
        ys.append(torch.bmm(h, cc))  # [batch, channels, 1]
    y = torch.stack(ys, dim=1)[..., 0]  # [batch, n_tokens, channels]
    y = _skip_and_gate(y, u_, D, z, cd)
    return y.to(u.dtype)


if triton is not None:

    @triton.jit
    def _softplus(x):
        # softplus(x) = max(x, 0) + log1p(e), e = exp(-|x|) in (0, 1], with log1p(e) = e * p(e)
        # and p a degree-8 polynomial fitted to log1p(e) / e on [0, 1] (relative error 2.2e-7
        # in float32). Equal to torch's thresholded softplus within float32 rounding, for
        # every x; one ex2 on the special-function unit, the rest on the FMA pipe; no
        # libdevice (so it also runs in TRITON_INTERPRET).
        e = tl.exp2(tl.abs(x) * -1.4426950408889634)
        p = e * 0.005232651252299547 - 0.029505066573619843
        p = p * e + 0.07822566479444504
        p = p * e - 0.13663221895694733
        p = p * e + 0.19105994701385498
        p = p * e - 0.2484297901391983
        p = p * e + 0.3331909775733948
        p = p * e - 0.4999949336051941
        p = p * e + 0.9999999403953552
        return tl.maximum(x, 0.0) + e * p

    @triton.jit
    def _silu(z):
        # z * sigmoid(z) with one ex2 and one approximate division (2 ulp)
        e = tl.exp2(z * -1.4426950408889634)
        return tl.fdiv(z, 1.0 + e)

    @triton.jit
    def _load_step(
        u_row,
        dt_row,
        b_row,
        c_row,
        z_row,
        t,
        ok,
        s_u_t,
        s_dt_t,
        s_b_t,
        s_c_t,
        s_z_t,
        mask_d,
        offs_n,
        HAS_Z: tl.constexpr,
    ):
        # The inputs of time step t (ok: whether t < n_tokens); z is u again when absent
        u = tl.load(u_row + t * s_u_t, mask=mask_d & ok, other=0.0)
        dt = tl.load(dt_row + t * s_dt_t, mask=mask_d & ok, other=0.0)
        b = tl.load(b_row + t * s_b_t, mask=(offs_n >= 0) & ok, other=0.0)
        c = tl.load(c_row + t * s_c_t, mask=(offs_n >= 0) & ok, other=0.0)
        if HAS_Z:
            z = tl.load(z_row + t * s_z_t, mask=mask_d & ok, other=0.0)
        else:
            z = u
        return u, dt, b, c, z

    @triton.jit
    def _scan_step(
        h,
        u,
        dt,
        b,
        c,
        z,
        a2,
        dskip,
        dt_bias,
        o_ptrs,
        mask,
        HAS_D: tl.constexpr,
        HAS_Z: tl.constexpr,
        HAS_DT_BIAS: tl.constexpr,
        SOFTPLUS: tl.constexpr,
    ):
        # One time step: h [D_STATE, BLOCK_D] float32 -> updated h; y [BLOCK_D] stored at o_ptrs
        # under mask
        u = u.to(tl.float32)
        dt = dt.to(tl.float32)
        if HAS_DT_BIAS:
            dt = dt + dt_bias
        if SOFTPLUS:
            dt = _softplus(dt)
        decay = tl.exp2(dt[None, :] * a2)  # [D_STATE, BLOCK_D]
        h = h * decay + (dt * u)[None, :] * b.to(tl.float32)[:, None]
        y = tl.sum(h * c.to(tl.float32)[:, None], axis=0)  # [BLOCK_D]
        if HAS_D:
            y = y + dskip * u
        if HAS_Z:
            y = y * _silu(z.to(tl.float32))
        tl.store(o_ptrs, y.to(o_ptrs.dtype.element_ty), mask=mask)
        return h

    @triton.jit
    def _selective_scan_fwd_kernel(
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
        s_u_t,
        s_dt_b,
        s_dt_t,
        s_b_b,
        s_b_t,
        s_c_b,
        s_c_t,
        s_z_b,
        s_z_t,
        s_o_b,
        s_o_t,
        D_STATE: tl.constexpr,
        BLOCK_D: tl.constexpr,
        UNROLL: tl.constexpr,
        HAS_D: tl.constexpr,
        HAS_Z: tl.constexpr,
        HAS_DT_BIAS: tl.constexpr,
        SOFTPLUS: tl.constexpr,
    ):
        # One program: BLOCK_D channels of one batch row, the whole sequence. Each loop
        # iteration first issues the loads of UNROLL time steps (independent of the state,
        # so their latencies overlap), then runs the UNROLL sequential state updates.
        pid_d = tl.program_id(0)
        pid_b = tl.program_id(1).to(tl.int64)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # [BLOCK_D]
        mask_d = offs_d < channels
        offs_n = tl.arange(0, D_STATE)  # [D_STATE]

        # A is (channels, d_state) contiguous and pre-scaled by log2(e): exp(x) = exp2(x * log2 e)
        a2 = tl.load(a_ptr + offs_d[None, :] * D_STATE + offs_n[:, None], mask=mask_d[None, :], other=0.0)
        if HAS_D:
            dskip = tl.load(dskip_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        else:
            dskip = tl.zeros([BLOCK_D], dtype=tl.float32)
        if HAS_DT_BIAS:
            dt_bias = tl.load(dtb_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        else:
            dt_bias = tl.zeros([BLOCK_D], dtype=tl.float32)

        u_row = u_ptr + pid_b * s_u_b + offs_d
        dt_row = dt_ptr + pid_b * s_dt_b + offs_d
        b_row = b_ptr + pid_b * s_b_b + offs_n
        c_row = c_ptr + pid_b * s_c_b + offs_n
        z_row = z_ptr + pid_b * s_z_b + offs_d
        o_row = out_ptr + pid_b * s_o_b + offs_d

        h = tl.zeros([D_STATE, BLOCK_D], dtype=tl.float32)
        for t0 in tl.range(0, n_tokens, UNROLL):
            steps = ()
            for k in tl.static_range(UNROLL):
                steps = steps + (
                    _load_step(
                        u_row,
                        dt_row,
                        b_row,
                        c_row,
                        z_row,
                        t0 + k,
                        t0 + k < n_tokens,
                        s_u_t,
                        s_dt_t,
                        s_b_t,
                        s_c_t,
                        s_z_t,
                        mask_d,
                        offs_n,
                        HAS_Z,
                    ),
                )
            for k in tl.static_range(UNROLL):
                u, dt, b, c, z = steps[k]
                h = _scan_step(
                    h,
                    u,
                    dt,
                    b,
                    c,
                    z,
                    a2,
                    dskip,
                    dt_bias,
                    o_row + (t0 + k) * s_o_t,
                    mask_d & (t0 + k < n_tokens),
                    HAS_D,
                    HAS_Z,
                    HAS_DT_BIAS,
                    SOFTPLUS,
                )


def _default_config(channels: int, batch: int) -> tuple[int, int, int]:
    """(BLOCK_D, num_warps, UNROLL) for the launch.

    32 channels per single-warp program. Measured on an H200 at Mamba-2.8B shapes
    (benchmarks/results/scan_sweep_h200_2026-12-03.md): 1.718 ms per layer at B=16,
    T=2048 and 2.193 ms at B=8, T=4096, against 1.753 and 2.313 ms for (64, 2, 4).
    """
    return 32, 1, 4


def selective_scan_triton(
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
    block_d: int | None = None,
    num_warps: int | None = None,
    unroll: int | None = None,
) -> Tensor:
    """Selective scan on a CUDA device through the Triton kernel.

    Same parameters and semantics as :func:`selective_scan_reference` (the last axis of
    every (batch, n_tokens, ·) tensor must have stride 1; the other strides are free,
    so views into a fused projection output need no copy). ``block_d``,
    ``num_warps`` and ``unroll`` (1 to 8 time steps per loop iteration) override the
    launch configuration (for tuning).

    Returns
    -------
    Tensor of shape (batch, n_tokens, channels)
        In the dtype of ``u``; arithmetic and state are float32.
    """
    if triton is None:
        raise RuntimeError("selective_scan_triton needs Triton; use selective_scan_reference on this machine")
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    batch, n_tokens, channels = u.shape
    d_state = A.shape[1]
    if d_state & (d_state - 1):
        raise ValueError(f"selective_scan_triton: d_state must be a power of two, got {d_state}")
    for name, t in (("u", u), ("delta", delta), ("B", B), ("C", C), ("z", z)):
        if t is not None and t.stride(-1) != 1:
            raise ValueError(f"selective_scan_triton: {name} needs stride 1 on its last axis, got {t.stride()}")
    a2 = (A.float() * _LOG2E).contiguous()
    out = torch.empty_like(u)
    bd, nw, un = _default_config(channels, batch)
    bd, nw, un = block_d or bd, num_warps or nw, unroll or un
    if not 1 <= un <= 8:
        raise ValueError(f"selective_scan_triton: unroll must be in 1..8, got {un}")
    dummy = a2  # any valid pointer for absent optional inputs
    zz = z if z is not None else u
    grid = (triton.cdiv(channels, bd), batch)
    _selective_scan_fwd_kernel[grid](
        u,
        delta,
        a2,
        B,
        C,
        D.float().contiguous() if D is not None else dummy,
        zz,
        delta_bias.float().contiguous() if delta_bias is not None else dummy,
        out,
        n_tokens,
        channels,
        u.stride(0),
        u.stride(1),
        delta.stride(0),
        delta.stride(1),
        B.stride(0),
        B.stride(1),
        C.stride(0),
        C.stride(1),
        zz.stride(0),
        zz.stride(1),
        out.stride(0),
        out.stride(1),
        D_STATE=d_state,
        BLOCK_D=bd,
        UNROLL=un,
        HAS_D=D is not None,
        HAS_Z=z is not None,
        HAS_DT_BIAS=delta_bias is not None,
        SOFTPLUS=delta_softplus,
        num_warps=nw,
    )
    return out


def selective_scan(
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
    impl: str = "auto",
) -> Tensor:
    """Selective scan with the implementation chosen by ``impl``.

    Parameters
    ----------
    u, delta, A, B, C, D, z, delta_bias, delta_softplus
        See :func:`selective_scan_reference`.
    impl : {"auto", "triton", "torch"}
        ``"auto"`` takes the Triton kernel for CUDA tensors when Triton imports, else
        the torch reference (float32 arithmetic).

    Returns
    -------
    Tensor of shape (batch, n_tokens, channels)
        In the dtype of ``u``.
    """
    if impl not in ("auto", "triton", "torch"):
        raise ValueError(f"selective_scan: impl must be 'auto', 'triton' or 'torch', got {impl!r}")
    use_triton = impl == "triton" or (impl == "auto" and u.is_cuda and triton is not None)
    if use_triton:
        return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias=delta_bias, delta_softplus=delta_softplus)
    y = selective_scan_reference(u, delta, A, B, C, D, z, delta_bias=delta_bias, delta_softplus=delta_softplus)
    return y.to(u.dtype)
