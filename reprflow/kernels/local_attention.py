"""Causal sliding-window attention: a forward-only Triton flash-attention kernel.

For each batch row and head, query ``i`` attends to the keys ``j`` with
``i - window < j <= i`` (its last ``window`` keys, itself included; GPT-Neo's local layers,
HF's ``bias ^ tril(bias, -window_size)`` mask)::

    out[i] = sum_j softmax_j(scale * q[i] . k[j]) v[j]     over the allowed j

GPT-Neo calls it with ``scale=1.0`` (it does not divide by sqrt(head_dim)).

Shapes. ``q``, ``k``, ``v`` are ``(batch, heads, n_tokens, head_dim)`` with any strides
as long as the last axis has stride 1 (GPT-Neo's ``_split_heads`` gives views of that
shape over ``(batch, n_tokens, heads, head_dim)`` memory, used without a copy). The output
has the same shape and ``q``'s dtype, and its *memory* is ``(batch, n_tokens, heads,
head_dim)``, so that GPT-Neo's ``_merge_heads`` (``permute(0, 2, 1, 3).contiguous()``)
copies nothing. ``head_dim`` may be any size up to 256 (padded to a power of two >= 16
inside the kernel, with masked loads); bfloat16, float16 and float32 inputs.

Kernel (FlashAttention-2 forward). One program per (block of ``BLOCK_M`` queries, batch
row x head). It loads its queries once and walks the key blocks of ``BLOCK_N`` keys from
the block holding key ``start_m - window + 1`` (``start_m``: its first query) to the
diagonal block, keeping the running row maximum, row sum and output in float32 (online
softmax; scores as ``exp2`` with ``scale * log2(e)`` folded in; both products through
``tl.dot``, float32 inputs in IEEE precision, not TF32). Key blocks wholly inside every
query's window take no mask; only the first blocks (the window's far edge) and the
diagonal blocks are masked. With the default blocks for head_dim 128 (``BLOCK_M=64``,
``BLOCK_N=32``, 4 warps, 2 stages) and ``window = 256``, a program visits 10 key blocks
(320 keys for 64 queries; 6 unmasked) where a dense masked kernel visits all ``n_tokens``.

Inference only: there is no backward. :func:`sliding_window_attention` raises if an input
requires grad while autograd is on; GPT-Neo's attention
(:mod:`reprflow.kernels.gpt_neo_attention`) routes its local layers here on CUDA when no
gradient is needed, and keeps its dense-mask SDPA call otherwise.
:func:`sliding_window_attention_reference` is the float64 ground truth (any device).
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

from reprflow.errors import ReprflowError

__all__ = [
    "sliding_window_attention",
    "sliding_window_attention_reference",
    "sliding_window_supported",
    "DEFAULT_CONFIGS",
]

_LOG2E = math.log2(math.e)
_MAX_HEAD_DIM = 256
_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

# launch configuration per padded head dim: BLOCK_M queries per program, BLOCK_N keys per
# step (powers of two >= 16); pass ``config=`` to override any key. Measured on an H200
# (bf16, batch 16, T=2048, window 256, Triton 3.6; sweep of BLOCK_M 32-128, BLOCK_N 16-64,
# 4/8 warps, 2-4 stages): head_dim 128 x 20 heads 0.33 ms per layer in the sweep, 0.37 ms
# as shipped (lengths not specialised) (BLOCK_M=128, BLOCK_N=64, 8 warps: 0.54 ms; SDPA with
# the dense band mask: 1.96 ms); head_dim 64 x 12 heads 0.13 ms (dense mask: 0.82 ms).
# 256: not measured.
DEFAULT_CONFIGS: dict[int, dict[str, int]] = {
    64: {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 3},
    128: {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2},
    256: {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 8, "num_stages": 2},
}

try:  # Triton ships with CUDA builds of torch; CPU CI has none.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None


def _allowed(n_tokens: int, window: int, device: torch.device) -> Tensor:
    """Boolean (n_tokens, n_tokens) mask: key j allowed for query i iff i - window < j <= i."""
    i = torch.arange(n_tokens, device=device)[:, None]
    j = torch.arange(n_tokens, device=device)[None, :]
    return (j <= i) & (j > i - window)


def sliding_window_attention_reference(q: Tensor, k: Tensor, v: Tensor, *, window: int, scale: float) -> Tensor:
    """Dense masked softmax attention in float64 (tests; any device).

    Parameters and shapes as :func:`sliding_window_attention`; materialises the
    ``(batch, heads, n_tokens, n_tokens)`` scores.

    Returns
    -------
    Tensor of shape (batch, heads, n_tokens, head_dim), float64
    """
    _check(q, k, v, window)
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    s = s.masked_fill(~_allowed(q.shape[-2], window, q.device), float("-inf"))
    return torch.softmax(s, dim=-1) @ v.double()


def _check(q: Tensor, k: Tensor, v: Tensor, window: int) -> None:
    """Shape and window checks shared by the kernel and the reference."""
    if q.dim() != 4:
        raise ValueError(
            f"sliding_window_attention: q must be (batch, heads, n_tokens, head_dim), got shape {tuple(q.shape)}"
        )
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"sliding_window_attention: {name} {tuple(t.shape)} must match q {tuple(q.shape)}")
    if int(window) < 1:
        raise ValueError(f"sliding_window_attention: window must be >= 1, got {window}")


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def _launch_config(head_dim: int, config: dict[str, int] | None) -> tuple[int, dict[str, int]]:
    """(BLOCK_D, launch configuration) for ``head_dim``, with ``config`` overriding the defaults."""
    block_d = max(16, 1 << (head_dim - 1).bit_length())
    cfg = {**DEFAULT_CONFIGS[max(64, block_d)], **(config or {})}
    unknown = set(cfg) - {"BLOCK_M", "BLOCK_N", "num_warps", "num_stages"}
    if unknown:
        raise ValueError(f"sliding_window_attention: unknown config keys {sorted(unknown)}")
    for key in ("BLOCK_M", "BLOCK_N"):
        b = cfg[key]
        if b < 16 or b & (b - 1):
            raise ValueError(f"sliding_window_attention: config {key} must be a power of two >= 16, got {b}")
    return block_d, cfg


def sliding_window_supported(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether :func:`sliding_window_attention` takes these (already shape-matched) inputs:
    Triton installed, CUDA tensors of one supported dtype, ``head_dim`` <= 256, stride 1
    on the last axis. Gradients are the caller's to check. No device sync."""
    return (
        triton is not None
        and q.is_cuda
        and q.dtype in _DTYPES
        and q.shape[-1] <= _MAX_HEAD_DIM
        and all(t.dtype == q.dtype and t.device == q.device and t.stride(-1) == 1 for t in (q, k, v))
    )


def sliding_window_attention(
    q: Tensor, k: Tensor, v: Tensor, *, window: int, scale: float, config: dict[str, int] | None = None
) -> Tensor:
    """Causal sliding-window attention through the Triton kernel (forward only).

    Parameters
    ----------
    q, k, v : Tensor of shape (batch, heads, n_tokens, head_dim)
        CUDA tensors of one dtype (bfloat16, float16 or float32), stride 1 on the last
        axis (other strides free). ``head_dim`` <= 256.
    window : int
        Keys per query, the query itself included: key j is allowed for query i iff
        ``i - window < j <= i``.
    scale : float
        Multiplies the scores (1.0 for GPT-Neo).
    config : dict, optional
        Overrides of the launch configuration (``BLOCK_M``, ``BLOCK_N``, ``num_warps``,
        ``num_stages``; defaults in :data:`DEFAULT_CONFIGS`).

    Returns
    -------
    Tensor of shape (batch, heads, n_tokens, head_dim)
        In ``q``'s dtype; a view with memory layout (batch, n_tokens, heads, head_dim).

    Raises
    ------
    ValueError
        Mismatched shapes or dtypes, a last axis with stride != 1, ``head_dim`` > 256, a
        non-CUDA tensor (CPU tensors run only in Triton's interpreter, ``TRITON_INTERPRET=1``), or an input that requires grad while autograd is enabled (there is
        no backward; use ``F.scaled_dot_product_attention`` with a band mask to train).
    ReprflowError
        Triton is not installed.
    """
    _check(q, k, v, window)
    batch, heads, n_tokens, head_dim = q.shape
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dtype != q.dtype or t.dtype not in _DTYPES:
            raise ValueError(
                f"sliding_window_attention: {name} is {t.dtype}; q, k and v must share one of "
                f"bfloat16, float16, float32 (q is {q.dtype})"
            )
        if t.stride(-1) != 1:
            raise ValueError(
                f"sliding_window_attention: {name} needs stride 1 on its last axis (head_dim), got strides {t.stride()}"
            )
    if head_dim > _MAX_HEAD_DIM:
        raise ValueError(f"sliding_window_attention: head_dim must be <= {_MAX_HEAD_DIM}, got {head_dim}")
    block_d, cfg = _launch_config(head_dim, config)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.requires_grad and torch.is_grad_enabled():
            raise ValueError(
                f"sliding_window_attention: {name} requires grad, but the kernel is forward-only; "
                "run under torch.no_grad() / torch.inference_mode(), or use SDPA with a band mask to train"
            )
        if t.device != q.device or not (t.is_cuda or _interpreting()):
            raise ValueError(f"sliding_window_attention: {name} is on {t.device}; the kernel needs CUDA tensors")
    if triton is None:
        raise ReprflowError(
            "sliding_window_attention needs Triton; use sliding_window_attention_reference or SDPA on this machine"
        )
    out = torch.empty(batch, n_tokens, heads, head_dim, dtype=q.dtype, device=q.device).transpose(1, 2)
    if out.numel() == 0:
        return out
    grid = (triton.cdiv(n_tokens, cfg["BLOCK_M"]), batch * heads)
    _sliding_window_fwd_kernel[grid](
        q, k, v, out,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        heads, n_tokens, min(int(window), n_tokens), float(scale) * _LOG2E,  # a longer window is causal
        HEAD_DIM=head_dim,
        BLOCK_D=block_d,
        BLOCK_M=cfg["BLOCK_M"],
        BLOCK_N=cfg["BLOCK_N"],
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # "tf32" is ignored for 16-bit inputs
        num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"],
    )  # fmt: skip
    return out


if triton is not None:

    @triton.jit
    def _attend(
        acc,
        l_i,
        m_i,
        q,
        k_base,
        v_base,
        start_n,
        offs_m,
        offs_n,
        offs_d,
        s_kt,
        s_vt,
        n_tokens,
        window,
        qk_scale,
        HEAD_DIM: tl.constexpr,
        BLOCK_D: tl.constexpr,
        MASK: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """One online-softmax step over the keys [start_n, start_n + BLOCK_N).

        ``MASK``: apply the band mask (and bound the key loads by ``n_tokens``); off for key
        blocks that lie inside every query's window. Rows whose keys are all masked keep
        ``m_i = -inf`` and contribute nothing (their maximum is replaced by 0 in the
        exponents, so no ``-inf - -inf``).
        """
        offs_k = start_n + offs_n
        k_ptrs = k_base + offs_k[:, None] * s_kt + offs_d[None, :]
        v_ptrs = v_base + offs_k[:, None] * s_vt + offs_d[None, :]
        if MASK:
            load_mask = offs_k[:, None] < n_tokens
            if BLOCK_D != HEAD_DIM:
                load_mask = load_mask & (offs_d[None, :] < HEAD_DIM)
            k = tl.load(k_ptrs, mask=load_mask, other=0.0)
            v = tl.load(v_ptrs, mask=load_mask, other=0.0)
        elif BLOCK_D != HEAD_DIM:
            k = tl.load(k_ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
            v = tl.load(v_ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # log2-scaled scores
        if MASK:
            lag = offs_m[:, None] - offs_k[None, :]
            s = tl.where((lag >= 0) & (lag < window), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        if MASK:
            m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_sub = m_new
        p = tl.exp2(s - m_sub[:, None])
        alpha = tl.exp2(m_i - m_sub)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        return acc, l_i, m_new

    @triton.jit(do_not_specialize=["n_tokens", "window"])  # one compile per dtype and head_dim, not per length
    def _sliding_window_fwd_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        o_ptr,
        s_qb,
        s_qh,
        s_qt,
        s_kb,
        s_kh,
        s_kt,
        s_vb,
        s_vh,
        s_vt,
        s_ob,
        s_oh,
        s_ot,
        heads,
        n_tokens,
        window,
        qk_scale,
        HEAD_DIM: tl.constexpr,
        BLOCK_D: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        start_m = tl.program_id(0) * BLOCK_M
        bh = tl.program_id(1)
        b = (bh // heads).to(tl.int64)
        h = (bh % heads).to(tl.int64)
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        row_mask = (offs_m[:, None] < n_tokens) & (offs_d[None, :] < HEAD_DIM)
        q_ptrs = q_ptr + b * s_qb + h * s_qh + offs_m[:, None] * s_qt + offs_d[None, :]
        q = tl.load(q_ptrs, mask=row_mask, other=0.0)
        k_base = k_ptr + b * s_kb + h * s_kh
        v_base = v_ptr + b * s_vb + h * s_vh

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

        # key blocks (on the BLOCK_N grid) from the one holding the first query's oldest key to
        # the one holding the last query (exclusive end `hi`), in three runs:
        #   [lo, mid_lo)   far edge of the window: some keys too old for some queries -> masked
        #   [mid_lo, mid_hi) inside every query's window, before the first query -> no mask
        #   [mid_hi, hi)   the diagonal: some keys later than some queries -> masked
        lo = (tl.maximum(start_m - window + 1, 0) // BLOCK_N) * BLOCK_N
        hi = tl.minimum(start_m + BLOCK_M, n_tokens)
        mid_hi = tl.maximum((tl.minimum(start_m + 1, n_tokens) // BLOCK_N) * BLOCK_N, lo)
        # first block start n with n > (last query) - window, i.e. n >= start_m + BLOCK_M - window
        mid_lo = tl.maximum(start_m + BLOCK_M - window, 0)
        mid_lo = tl.minimum(tl.maximum(((mid_lo + BLOCK_N - 1) // BLOCK_N) * BLOCK_N, lo), mid_hi)

        for start_n in tl.range(lo, mid_lo, BLOCK_N):
            acc, l_i, m_i = _attend(
                acc, l_i, m_i, q, k_base, v_base, start_n, offs_m, offs_n, offs_d, s_kt, s_vt,
                n_tokens, window, qk_scale, HEAD_DIM, BLOCK_D, True, PRECISION,
            )  # fmt: skip
        for start_n in tl.range(mid_lo, mid_hi, BLOCK_N):
            acc, l_i, m_i = _attend(
                acc, l_i, m_i, q, k_base, v_base, start_n, offs_m, offs_n, offs_d, s_kt, s_vt,
                n_tokens, window, qk_scale, HEAD_DIM, BLOCK_D, False, PRECISION,
            )  # fmt: skip
        for start_n in tl.range(mid_hi, hi, BLOCK_N):
            acc, l_i, m_i = _attend(
                acc, l_i, m_i, q, k_base, v_base, start_n, offs_m, offs_n, offs_d, s_kt, s_vt,
                n_tokens, window, qk_scale, HEAD_DIM, BLOCK_D, True, PRECISION,
            )  # fmt: skip

        l_i = tl.where(l_i == 0.0, 1.0, l_i)  # rows past n_tokens only (never stored)
        out = acc / l_i[:, None]
        o_ptrs = o_ptr + b * s_ob + h * s_oh + offs_m[:, None] * s_ot + offs_d[None, :]
        tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=row_mask)
