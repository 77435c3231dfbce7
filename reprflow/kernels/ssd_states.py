"""Mamba-2's SSD chunk states and their passing between chunks, in one Triton kernel.

``mamba_ssm``'s ``mamba_chunk_scan_combined`` computes the state each chunk adds
(``_chunk_state_fwd``: ``S_c = sum_k x_k^T (B_k exp(dA_last - dA_k) dt_k)``, float32, shape
(batch, n_chunks, heads, head_dim, d_state)), writes it, and a second kernel
(``_state_passing_fwd``) reads it back and walks the chunks: the state entering chunk 0 is zero,
the one entering chunk c + 1 is ``exp(dA_last_c) * entering_c + S_c``. At Mamba2-2.7B's sizes
(B=16, T=2048, chunk 256) the two took 0.289 + 0.134 ms per layer on an H200
(``benchmarks/results/ssd_chunks_h200_2026-12-04.md``), with 335 MB of float32 states written
and read again in between.

:func:`chunk_states_passed` does both in one program per (batch, head, ``head_dim`` block): it
computes ``S_c`` chunk after chunk and folds it into the running state in registers, so the
float32 states never reach memory; only the entering states are written, in the dtype the output
kernel reads. The arithmetic is ``mamba_ssm``'s, step for step: ``B`` scaled in float32 by
``exp(min(dA_last - dA_k, 0)) dt_k`` and rounded to the input dtype once, ``x^T B`` accumulated
in float32 per chunk, then ``state = exp(dA_last) * state + S_c`` in float32.

Conventions (``mamba_ssm``'s): ``x`` (batch, n_tokens, heads, head_dim), ``B`` (batch, n_tokens,
groups, d_state), both with a unit stride on the last axis; ``dt`` (after its softplus and bias)
and ``dA_cumsum`` (batch, heads, n_chunks, chunk) float32 with the same strides and a unit stride
on the chunk axis. No ``seq_idx``, no initial state: inference only.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["chunk_states_passed", "chunk_states_reference", "chunk_states_supported"]

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = tl = None


if triton is not None:

    @triton.jit
    def _chunk_states_passed_kernel(
        x_ptr,
        b_ptr,
        dt_ptr,
        dA_ptr,
        out_ptr,
        n_tokens,
        n_chunks,
        heads,
        heads_per_group,
        s_x_b,
        s_x_t,
        s_x_h,
        s_b_b,
        s_b_t,
        s_b_g,
        s_dt_b,
        s_dt_h,
        s_dt_c,
        s_o_b,
        s_o_c,
        s_o_h,
        s_o_p,
        CHUNK: tl.constexpr,
        HDIM: tl.constexpr,
        DSTATE: tl.constexpr,
        BLOCK_P: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pid_p = tl.program_id(0)
        pid_bh = tl.program_id(1)  # heads of one sequence side by side: B (shared by them) stays in L2
        bi = (pid_bh // heads).to(tl.int64)
        h = pid_bh % heads
        g = h // heads_per_group
        offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
        offs_n = tl.arange(0, DSTATE)
        offs_k = tl.arange(0, BLOCK_K)
        p_ok = offs_p[:, None] < HDIM
        x_base = x_ptr + bi * s_x_b + h * s_x_h + offs_p[:, None]  # [BLOCK_P, 1]: one head_dim row each
        b_base = b_ptr + bi * s_b_b + g * s_b_g + offs_n[None, :]  # [1, DSTATE]
        dt_base = dt_ptr + bi * s_dt_b + h * s_dt_h
        dA_base = dA_ptr + bi * s_dt_b + h * s_dt_h
        o_base = out_ptr + bi * s_o_b + h * s_o_h + offs_p[:, None] * s_o_p + offs_n[None, :]

        state = tl.zeros((BLOCK_P, DSTATE), dtype=tl.float32)
        tl.store(o_base, state.to(out_ptr.dtype.element_ty), mask=p_ok)  # entering chunk 0
        for c in range(0, n_chunks):
            t0 = c * CHUNK
            limit = min(CHUNK, n_tokens - t0)
            dA_c = dA_base + c * s_dt_c
            dt_c = dt_base + c * s_dt_c
            dA_last = tl.load(dA_c + CHUNK - 1)
            acc = tl.zeros((BLOCK_P, DSTATE), dtype=tl.float32)
            for k0 in range(0, limit, BLOCK_K):
                k = k0 + offs_k
                k_ok = k < limit
                t = (t0 + k).to(tl.int64)
                x = tl.load(x_base + t[None, :] * s_x_t, mask=p_ok & k_ok[None, :], other=0.0)
                bk = tl.load(b_base + t[:, None] * s_b_t, mask=k_ok[:, None], other=0.0).to(tl.float32)
                dA_k = tl.load(dA_c + k, mask=k_ok, other=0.0)
                dt_k = tl.load(dt_c + k, mask=k_ok, other=0.0)
                scale = tl.exp(tl.minimum(dA_last - dA_k, 0.0)) * dt_k
                bk = (bk * scale[:, None]).to(x_ptr.dtype.element_ty)
                acc += tl.dot(x, bk)
            state = tl.exp(dA_last) * state + acc
            if c + 1 < n_chunks:
                tl.store(o_base + (c + 1) * s_o_c, state.to(out_ptr.dtype.element_ty), mask=p_ok)


def chunk_states_supported(head_dim: int, d_state: int) -> bool:
    """Whether :func:`chunk_states_passed` takes these sizes: ``d_state`` a power of two in 16..256,
    ``head_dim`` >= 16."""
    return d_state & (d_state - 1) == 0 and 16 <= d_state <= 256 and head_dim >= 16


def chunk_states_passed(
    x: Tensor,
    B: Tensor,
    dt: Tensor,
    dA_cumsum: Tensor,
    *,
    out_dtype: torch.dtype | None = None,
    block_k: int = 64,
    num_warps: int = 4,
    num_stages: int = 3,
) -> Tensor:
    """The state entering each chunk: what ``_chunk_state_fwd`` then ``_state_passing_fwd`` return.

    Parameters
    ----------
    x : Tensor of shape (batch, n_tokens, heads, head_dim)
    B : Tensor of shape (batch, n_tokens, groups, d_state), dtype of ``x``
    dt, dA_cumsum : Tensor of shape (batch, heads, n_chunks, chunk), float32
        ``dt`` after its bias and softplus and the within-chunk cumulative sum of ``dt * A``
        (``mamba_ssm``'s ``_chunk_cumsum_fwd``).
    out_dtype : torch.dtype, optional
        dtype of the result (default: that of ``x``; the output kernel reads it so).
    block_k, num_warps, num_stages : int
        Tokens per step of the inner loop and the launch configuration. The default (64, 4, 3) was
        the fastest of six on an H200 (2026-12-05, ``benchmarks/ssd_chunks.py --output-kernel``):
        0.361 ms per Mamba2-2.7B layer at 16 x 2048 tokens, 0.364 at 8 x 4096, against 0.493 and
        0.577 for (32, 8, 2) and ``mamba_ssm``'s two kernels' 0.519 and 0.512 (4 warps: 241
        registers per thread in sm_90 SASS, no spills; 8 warps: 127).

    Returns
    -------
    Tensor of shape (batch, n_chunks, heads, head_dim, d_state)
        ``[:, 0]`` is zero; ``[:, c + 1] = exp(dA_cumsum[:, :, c, -1]) [:, c] + S_c``.
    """
    if triton is None:
        raise RuntimeError("chunk_states_passed needs Triton")
    batch, n_tokens, heads, head_dim = x.shape
    _, _, n_chunks, chunk = dt.shape
    groups, d_state = B.shape[2], B.shape[3]
    if x.stride(-1) != 1 or B.stride(-1) != 1:
        raise ValueError(
            f"chunk_states_passed: x and B need stride 1 on their last axis, got {x.stride()}, {B.stride()}"
        )
    if dt.stride() != dA_cumsum.stride() or dt.stride(-1) != 1:
        raise ValueError("chunk_states_passed: dt and dA_cumsum need the same strides, unit stride on the chunk axis")
    if not chunk_states_supported(head_dim, d_state) or heads % groups:
        raise ValueError(
            f"chunk_states_passed: d_state {d_state} (a power of two in 16..256), head_dim {head_dim} (>= 16)"
        )
    if n_chunks != -(-n_tokens // chunk):
        raise ValueError(f"chunk_states_passed: {n_chunks} chunks of {chunk} for {n_tokens} tokens")
    out = torch.empty(batch, n_chunks, heads, head_dim, d_state, dtype=out_dtype or x.dtype, device=x.device)
    block_p = min(64, triton.next_power_of_2(head_dim))
    grid = (triton.cdiv(head_dim, block_p), batch * heads)
    _chunk_states_passed_kernel[grid](
        x, B, dt, dA_cumsum, out,
        n_tokens, n_chunks, heads, heads // groups,
        x.stride(0), x.stride(1), x.stride(2),
        B.stride(0), B.stride(1), B.stride(2),
        dt.stride(0), dt.stride(1), dt.stride(2),
        out.stride(0), out.stride(1), out.stride(2), out.stride(3),
        CHUNK=chunk, HDIM=head_dim, DSTATE=d_state, BLOCK_P=block_p, BLOCK_K=block_k,
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return out


def chunk_states_reference(x: Tensor, B: Tensor, dt: Tensor, dA_cumsum: Tensor) -> Tensor:
    """:func:`chunk_states_passed` in float64, chunk by chunk (the test's reference; any device).

    Returns
    -------
    Tensor of shape (batch, n_chunks, heads, head_dim, d_state), float64
    """
    batch, n_tokens, heads, head_dim = x.shape
    _, _, n_chunks, chunk = dt.shape
    groups = B.shape[2]
    x, B, dt, dA = x.double(), B.double(), dt.double(), dA_cumsum.double()
    Bh = B.repeat_interleave(heads // groups, dim=2)  # (batch, n_tokens, heads, d_state)
    out = torch.zeros(batch, n_chunks, heads, head_dim, B.shape[-1], dtype=torch.float64, device=x.device)
    state = out[:, 0].clone()
    for c in range(n_chunks - 1):
        t = slice(c * chunk, min((c + 1) * chunk, n_tokens))
        n = t.stop - t.start
        last = dA[:, :, c, -1]  # (batch, heads)
        w = torch.exp(torch.clamp(last[..., None] - dA[:, :, c, :n], max=0.0)) * dt[:, :, c, :n]  # (batch, heads, n)
        s_c = torch.einsum("bthp,bthn,bht->bhpn", x[:, t], Bh[:, t], w)
        state = torch.exp(last)[..., None, None] * state + s_c
        out[:, c + 1] = state
    return out
