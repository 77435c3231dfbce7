"""Mamba-2's SSD forward with reprflow's own output kernel (``chunk_scan``), for inference.

``mamba_ssm``'s ``mamba_chunk_scan_combined`` runs five Triton kernels per layer. On an H200
at Mamba2-2.7B's shapes (B=16, T=2048, 80 heads x 64, 128 states, chunk 256) the last one,
``_chunk_scan_fwd`` (each token's output from its chunk's passed-in state and the tokens
before it in the chunk), takes 0.98 of 1.56 ms (``benchmarks/ssd_chunks.py``,
2026-12-04), several times its tensor-core and memory time. :func:`ssd_combined` keeps
``mamba_ssm``'s four other kernels and replaces that one with :func:`chunk_scan`, which

* takes ``HB`` heads per program, so that one load of the shared ``C B^T`` tile (one group
  for all heads) serves them all;
* skips the exponentials off the diagonal: for a key block ``k`` strictly before the query
  block, ``exp(dA_m - dA_k) = exp(dA_m - dA_r) * exp(dA_r - dA_k)`` with ``r`` the key
  block's last token; both factors are <= 1 (``dA`` falls along the chunk), so neither
  overflows, and one exponential per row and per column replaces one per element. Diagonal
  blocks keep the per-element ``exp(min(dA_m - dA_k, 0))``;
* launches the heads of one ``(batch, chunk)`` side by side, so the ``C B^T`` tile stays in L2.

Conventions (``mamba_ssm``'s): ``x`` (batch, n_tokens, heads, head_dim); ``dt`` and ``dA``
(batch, heads, n_chunks, chunk) float32, ``dt`` after bias, softplus and limits, ``dA`` its
cumulative sum times ``A`` within each chunk; ``cb`` (batch, n_chunks, groups, chunk, chunk)
float32; ``C`` (batch, n_tokens, groups, d_state); ``states`` (batch, n_chunks, heads,
head_dim, d_state), the state entering each chunk. Inference only (no autograd), no ``z``,
no ``seq_idx``, no initial state: other calls go to ``mamba_ssm``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["chunk_scan", "ssd_combined", "CHUNK_SCAN_CONFIG"]

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

#: Launch configuration of :func:`chunk_scan`: rows per program (``BM``), key block (``BK``),
#: heads per program (``HB``), warps and pipeline stages. Chosen by ``benchmarks/ssd_chunks.py``.
CHUNK_SCAN_CONFIG = {"BM": 64, "BK": 64, "HB": 2, "num_warps": 4, "num_stages": 2}

if triton is not None:

    @triton.jit
    def _head_block(
        acc,
        cb,
        x_base,
        dt_base,
        dA_base,
        dA_m,
        offs_m,
        offs_k,
        offs_p,
        limit,
        s_x_t,
        s_x_p,
        s_q,
        HDIM: tl.constexpr,
        DIAGONAL: tl.constexpr,
    ):
        """``acc += (cb * decay * dt) @ x`` for one head and one key block."""
        k_in = offs_k < limit
        dA_k = tl.load(dA_base + offs_k * s_q, mask=k_in, other=0.0)
        dt_k = tl.load(dt_base + offs_k * s_q, mask=k_in, other=0.0)
        if DIAGONAL:
            w = cb * tl.exp(tl.minimum(dA_m[:, None] - dA_k[None, :], 0.0)) * dt_k[None, :]
            w = tl.where(offs_m[:, None] >= offs_k[None, :], w, 0.0)
        else:
            # r = the key block's last row: every factor <= 1
            dA_r = tl.min(tl.where(k_in, dA_k, float("inf")), axis=0)
            row = tl.exp(tl.minimum(dA_m - dA_r, 0.0))  # (the min only matters for rows past the end)
            col = tl.exp(tl.minimum(dA_r - dA_k, 0.0)) * dt_k
            w = cb * row[:, None] * col[None, :]
        xk = tl.load(
            x_base + offs_k[:, None] * s_x_t + offs_p[None, :] * s_x_p,
            mask=k_in[:, None] & (offs_p[None, :] < HDIM),
            other=0.0,
        )
        return acc + tl.dot(w.to(xk.dtype), xk)

    @triton.jit
    def _state_part(C_tile, st_ptr, dA_m, offs_n, offs_p, s_st_p, s_st_n, HDIM: tl.constexpr, DSTATE: tl.constexpr):
        """``exp(dA_m) * (C_m @ S^T)`` for one head: the state passed into the chunk."""
        S = tl.load(
            st_ptr + offs_n[:, None] * s_st_n + offs_p[None, :] * s_st_p,
            mask=(offs_n[:, None] < DSTATE) & (offs_p[None, :] < HDIM),
            other=0.0,
        )
        return tl.dot(C_tile, S.to(C_tile.dtype)) * tl.exp(dA_m)[:, None]

    @triton.jit
    def _store(out_ptr, acc, x_base, D_ptr, h, offs_m, offs_p, limit, s_x_t, s_x_p, s_o_t, s_o_p,
               HDIM: tl.constexpr, HAS_D: tl.constexpr, D_HAS_HDIM: tl.constexpr):  # fmt: skip
        mask = (offs_m[:, None] < limit) & (offs_p[None, :] < HDIM)
        if HAS_D:
            if D_HAS_HDIM:
                D = tl.load(D_ptr + h * HDIM + offs_p, mask=offs_p < HDIM, other=0.0).to(tl.float32)[None, :]
            else:
                D = tl.load(D_ptr + h).to(tl.float32)
            xm = tl.load(x_base + offs_m[:, None] * s_x_t + offs_p[None, :] * s_x_p, mask=mask, other=0.0)
            acc += xm.to(tl.float32) * D
        tl.store(
            out_ptr + offs_m[:, None] * s_o_t + offs_p[None, :] * s_o_p, acc.to(out_ptr.dtype.element_ty), mask=mask
        )

    @triton.jit
    def _chunk_scan_kernel(
        cb_ptr, x_ptr, out_ptr, dt_ptr, dA_ptr, C_ptr, st_ptr, D_ptr,
        chunk_size, seqlen, heads_per_group, n_head_blocks,
        s_cb_b, s_cb_c, s_cb_g, s_cb_m, s_cb_k,
        s_x_b, s_x_t, s_x_h, s_x_p,
        s_o_b, s_o_t, s_o_h, s_o_p,
        s_d_b, s_d_h, s_d_c, s_d_q,
        s_C_b, s_C_t, s_C_g, s_C_n,
        s_st_b, s_st_c, s_st_h, s_st_p, s_st_n,
        HDIM: tl.constexpr, DSTATE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
        BM: tl.constexpr, BK: tl.constexpr, HB: tl.constexpr, HAS_D: tl.constexpr, D_HAS_HDIM: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        pid_h = tl.program_id(1)  # block of HB heads (of one group)
        pid_bc = tl.program_id(2)
        n_chunks = tl.cdiv(seqlen, chunk_size)
        b = pid_bc // n_chunks
        c = pid_bc % n_chunks
        h0 = pid_h * HB
        g = h0 // heads_per_group
        t0 = c * chunk_size
        limit = tl.minimum(chunk_size, seqlen - t0)
        offs_m = pid_m * BM + tl.arange(0, BM)
        offs_p = tl.arange(0, BLOCK_P)
        offs_n = tl.arange(0, BLOCK_N)
        m_in = offs_m < limit

        cb_base = cb_ptr + b.to(tl.int64) * s_cb_b + c * s_cb_c + g * s_cb_g
        x0 = x_ptr + b.to(tl.int64) * s_x_b + t0.to(tl.int64) * s_x_t + h0 * s_x_h
        d0 = b.to(tl.int64) * s_d_b + h0 * s_d_h + c * s_d_c
        st0 = st_ptr + b.to(tl.int64) * s_st_b + c.to(tl.int64) * s_st_c + h0 * s_st_h
        C_tile = tl.load(
            C_ptr + b.to(tl.int64) * s_C_b + (t0 + offs_m)[:, None].to(tl.int64) * s_C_t + g * s_C_g
            + offs_n[None, :] * s_C_n,
            mask=m_in[:, None] & (offs_n[None, :] < DSTATE),
            other=0.0,
        )  # fmt: skip

        dA_m0 = tl.load(dA_ptr + d0 + offs_m * s_d_q, mask=m_in, other=0.0)
        acc0 = _state_part(C_tile, st0, dA_m0, offs_n, offs_p, s_st_p, s_st_n, HDIM, DSTATE)
        if HB == 2:
            dA_m1 = tl.load(dA_ptr + d0 + s_d_h + offs_m * s_d_q, mask=m_in, other=0.0)
            acc1 = _state_part(C_tile, st0 + s_st_h, dA_m1, offs_n, offs_p, s_st_p, s_st_n, HDIM, DSTATE)

        # key blocks strictly before this row block: no mask, factored decay
        m_start = pid_m * BM
        for k0 in range(0, m_start, BK):
            offs_k = k0 + tl.arange(0, BK)
            cb = tl.load(cb_base + offs_m[:, None] * s_cb_m + offs_k[None, :] * s_cb_k, mask=m_in[:, None], other=0.0)
            acc0 = _head_block(acc0, cb, x0, dt_ptr + d0, dA_ptr + d0, dA_m0, offs_m, offs_k, offs_p, limit,
                               s_x_t, s_x_p, s_d_q, HDIM, False)  # fmt: skip
            if HB == 2:
                acc1 = _head_block(acc1, cb, x0 + s_x_h, dt_ptr + d0 + s_d_h, dA_ptr + d0 + s_d_h, dA_m1, offs_m,
                                   offs_k, offs_p, limit, s_x_t, s_x_p, s_d_q, HDIM, False)  # fmt: skip
        # key blocks overlapping this row block: causal mask, per-element decay
        for k0 in range(m_start, tl.minimum(m_start + BM, limit), BK):
            offs_k = k0 + tl.arange(0, BK)
            cb = tl.load(
                cb_base + offs_m[:, None] * s_cb_m + offs_k[None, :] * s_cb_k,
                mask=m_in[:, None] & (offs_k[None, :] < limit),
                other=0.0,
            )
            acc0 = _head_block(acc0, cb, x0, dt_ptr + d0, dA_ptr + d0, dA_m0, offs_m, offs_k, offs_p, limit,
                               s_x_t, s_x_p, s_d_q, HDIM, True)  # fmt: skip
            if HB == 2:
                acc1 = _head_block(acc1, cb, x0 + s_x_h, dt_ptr + d0 + s_d_h, dA_ptr + d0 + s_d_h, dA_m1, offs_m,
                                   offs_k, offs_p, limit, s_x_t, s_x_p, s_d_q, HDIM, True)  # fmt: skip

        o0 = out_ptr + b.to(tl.int64) * s_o_b + t0.to(tl.int64) * s_o_t + h0 * s_o_h
        _store(o0, acc0, x0, D_ptr, h0, offs_m, offs_p, limit, s_x_t, s_x_p, s_o_t, s_o_p, HDIM, HAS_D, D_HAS_HDIM)
        if HB == 2:
            _store(o0 + s_o_h, acc1, x0 + s_x_h, D_ptr, h0 + 1, offs_m, offs_p, limit, s_x_t, s_x_p, s_o_t, s_o_p,
                   HDIM, HAS_D, D_HAS_HDIM)  # fmt: skip


def chunk_scan(
    cb: Tensor,
    x: Tensor,
    dt: Tensor,
    dA_cumsum: Tensor,
    C: Tensor,
    states: Tensor,
    D: Tensor | None = None,
    *,
    config: dict | None = None,
) -> Tensor:
    """Each token's SSD output from its chunk's incoming state and the chunk's earlier tokens.

    Parameters
    ----------
    cb : Tensor of shape (batch, n_chunks, groups, chunk, chunk), float32
        ``C_m . B_k`` within each chunk.
    x : Tensor of shape (batch, n_tokens, heads, head_dim)
        Its last axis contiguous.
    dt, dA_cumsum : Tensor of shape (batch, heads, n_chunks, chunk), float32, same strides
    C : Tensor of shape (batch, n_tokens, groups, d_state)
    states : Tensor of shape (batch, n_chunks, heads, head_dim, d_state)
        The state entering each chunk.
    D : Tensor of shape (heads,) or (heads, head_dim), optional
    config : dict, optional
        Launch configuration (default :data:`CHUNK_SCAN_CONFIG`).

    Returns
    -------
    Tensor of shape (batch, n_tokens, heads, head_dim), dtype of ``x``
        ``exp(dA_m) C_m S_c^T + sum_{k <= m} (C_m . B_k) exp(dA_m - dA_k) dt_k x_k + D x_m``.
    """
    cfg = dict(CHUNK_SCAN_CONFIG, **(config or {}))
    batch, n_tokens, heads, head_dim = x.shape
    _, _, n_chunks, chunk = dt.shape
    groups, d_state = C.shape[2], C.shape[3]
    hb = cfg["HB"] if (heads // groups) % cfg["HB"] == 0 else 1
    if dt.stride() != dA_cumsum.stride():
        raise ValueError("chunk_scan: dt and dA_cumsum must have the same strides")
    out = torch.empty(batch, n_tokens, heads, head_dim, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(chunk, cfg["BM"]), heads // hb, batch * n_chunks)
    if D is not None:
        D = D.contiguous()
    _chunk_scan_kernel[grid](
        cb, x, out, dt, dA_cumsum, C, states, D if D is not None else x,
        chunk, n_tokens, heads // groups, heads // hb,
        *cb.stride(), *x.stride(), *out.stride(),
        dt.stride(0), dt.stride(1), dt.stride(2), dt.stride(3),
        *C.stride(), *states.stride(),
        HDIM=head_dim, DSTATE=d_state,
        BLOCK_P=max(16, triton.next_power_of_2(head_dim)), BLOCK_N=max(16, triton.next_power_of_2(d_state)),
        BM=cfg["BM"], BK=cfg["BK"], HB=hb, HAS_D=D is not None, D_HAS_HDIM=D is not None and D.dim() == 2,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    return out


def ssd_combined(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    *,
    config: dict | None = None,
) -> Tensor:
    """``mamba_chunk_scan_combined``'s forward (signature of :func:`reprflow.kernels.ssd.ssd_reference`)
    with :func:`chunk_scan` as its output kernel; ``mamba_ssm``'s own for ``z`` or off CUDA.

    Parameters
    ----------
    x : Tensor of shape (batch, n_tokens, heads, head_dim)
    dt : Tensor of shape (batch, n_tokens, heads)
    A : Tensor of shape (heads,)
    B, C : Tensor of shape (batch, n_tokens, groups, d_state)
    chunk_size : int
    D, z, dt_bias, dt_softplus, dt_limit
        As ``mamba_chunk_scan_combined``.

    Returns
    -------
    Tensor of shape (batch, n_tokens, heads, head_dim), dtype of ``x``
    """
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    if z is not None or triton is None or not x.is_cuda or torch.is_grad_enabled() and x.requires_grad:
        return mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias,
                                         dt_softplus=dt_softplus, dt_limit=dt_limit)  # fmt: skip
    return _ssd_forward(x, dt, A, B, C, chunk_size, D, dt_bias, dt_softplus, dt_limit, config)


def _ssd_forward(x, dt, A, B, C, chunk_size, D, dt_bias, dt_softplus, dt_limit, config) -> Tensor:
    """The four ``mamba_ssm`` stages, then :func:`chunk_scan` (any device Triton runs on)."""
    from mamba_ssm.ops.triton.ssd_bmm import _bmm_chunk_fwd
    from mamba_ssm.ops.triton.ssd_chunk_state import _chunk_cumsum_fwd, _chunk_state_fwd
    from mamba_ssm.ops.triton.ssd_state_passing import _state_passing_fwd

    batch, n_tokens, heads, head_dim = x.shape
    d_state = B.shape[-1]
    B = B if B.stride(-1) == 1 else B.contiguous()
    C = C if C.stride(-1) == 1 else C.contiguous()
    x = x if x.stride(-1) == 1 else x.contiguous()
    dA_cumsum, dt_c = _chunk_cumsum_fwd(dt, A, chunk_size, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit)
    states = _chunk_state_fwd(B, x, dt_c, dA_cumsum, states_in_fp32=True)
    n_chunks = math.ceil(n_tokens / chunk_size)
    states, _ = _state_passing_fwd(
        states.view(batch, n_chunks, heads, head_dim * d_state), dA_cumsum[:, :, :, -1], out_dtype=C.dtype
    )
    states = states.view(batch, n_chunks, heads, head_dim, d_state)
    cb = _bmm_chunk_fwd(C, B, chunk_size, output_dtype=torch.float32)
    return chunk_scan(cb, x, dt_c, dA_cumsum, C, states, D, config=config)
