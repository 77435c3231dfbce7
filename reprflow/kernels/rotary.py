"""GPT-NeoX's partial rotary embedding of queries and keys in one Triton pass, bit for bit.

transformers' ``GPTNeoXAttention`` splits the fused projection ``qkv`` of shape
``(batch, n_tokens, heads * 3 * head_dim)`` (per head ``[q | k | v]``) into strided
``(batch, heads, n_tokens, head_dim)`` views and rotates the first ``rot`` dims of the
queries and keys (``rot = head_dim * partial_rotary_factor``; 20 of 80 for Pythia-2.8B)::

    q_embed = cat([q_rot * cos + rotate_half(q_rot) * sin, q_pass], -1)   # and so for k

``rotate_half(x) = cat([-x[..., rot/2:], x[..., :rot/2]])``. That is about a dozen kernels
per layer (four ``cat`` copies, the products, the sum), 16% of Pythia-2.8B's forward on an
H200 (``benchmarks/profile_forward.py``). :func:`rotary_qk` reads ``q`` and ``k`` once and
writes both rotated, contiguous, with torch's roundings: each product and the sum are
formed in float32 and rounded to the input dtype, as torch's elementwise kernels do, so
the result equals transformers' (``torch.equal``, tested on the GPU).

Conventions: ``cos``/``sin`` are transformers' ``position_embeddings`` of shape
``(1 or batch, n_tokens, rot)`` in the model dtype (``cat([freqs, freqs])``, so the two
halves are equal); ``rot`` is even and ``<= head_dim``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rotary_qk", "rotary_qk_reference"]

#: No mul + add -> FMA contraction: torch rounds each product before the sum. With it, Triton
#: emits ``fma.rn.f32`` (float32) and ``fma.rn.bf16`` (bf16: the product is narrowed and fused),
#: one rounding step away from transformers in some elements (H200, 2026-12-04); without it
#: ``mul.rn`` + ``add.rn`` (tests/kernels/test_fusions.py reads the PTX).
_ROTARY_LAUNCH = {"enable_fp_fusion": False}

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None


def _split_qkv(qkv: Tensor, num_heads: int, head_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """transformers' views of q, k, v, each (batch, heads, n_tokens, head_dim), strided."""
    batch, n_tokens, _ = qkv.shape
    q, k, v = qkv.view(batch, n_tokens, num_heads, 3 * head_dim).transpose(1, 2).chunk(3, dim=-1)
    return q, k, v


def rotary_qk_reference(
    qkv: Tensor, cos: Tensor, sin: Tensor, *, num_heads: int, head_dim: int
) -> tuple[Tensor, Tensor]:
    """transformers' ``apply_rotary_pos_emb`` on the q and k of ``qkv`` (its own code path).

    Parameters
    ----------
    qkv : Tensor of shape (batch, n_tokens, num_heads * 3 * head_dim)
    cos, sin : Tensor of shape (1 or batch, n_tokens, rot)
    num_heads, head_dim : int

    Returns
    -------
    (q, k) : Tensors of shape (batch, num_heads, n_tokens, head_dim), contiguous
    """
    from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb

    q, k, _ = _split_qkv(qkv, num_heads, head_dim)
    return apply_rotary_pos_emb(q, k, cos, sin)


if triton is not None:

    @triton.jit
    def _rotate(x_ptr, row_offs, cols, rot_m, partner, sign, c, s, pass_m):
        x = tl.load(x_ptr + row_offs + cols, mask=pass_m | rot_m, other=0.0)
        xp = tl.load(x_ptr + row_offs + partner, mask=rot_m, other=0.0)
        out_ty = x.dtype
        a = (x.to(tl.float32) * c).to(out_ty)  # q_rot * cos, rounded as torch does
        b = ((sign * xp.to(tl.float32)) * s).to(out_ty)  # rotate_half(q_rot) * sin
        rotated = (a.to(tl.float32) + b.to(tl.float32)).to(out_ty)
        return tl.where(rot_m, rotated, x)

    @triton.jit
    def _rotary_qk_kernel(
        qkv_ptr,
        cos_ptr,
        sin_ptr,
        q_ptr,
        k_ptr,
        n_tokens,
        s_qkv_b,
        s_qkv_t,
        s_cs_b,
        s_cs_t,
        HEADS: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        ROT: tl.constexpr,
        BLOCK_H: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        # one program per token: all heads' q and k, (BLOCK_H, BLOCK_D) tiles
        pid = tl.program_id(0).to(tl.int64)
        b = pid // n_tokens
        t = pid % n_tokens
        h = tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, BLOCK_D)[None, :]
        inside = (h < HEADS) & (d < HEAD_DIM)
        rot_m = inside & (d < ROT)
        pass_m = inside & (d >= ROT)
        half: tl.constexpr = ROT // 2
        partner = tl.where(d < half, d + half, d - half)
        sign = tl.where(d < half, -1.0, 1.0)
        dc = tl.where(d < ROT, d, 0)
        c = tl.load(cos_ptr + b * s_cs_b + t * s_cs_t + dc, mask=d < ROT, other=0.0).to(tl.float32)
        s = tl.load(sin_ptr + b * s_cs_b + t * s_cs_t + dc, mask=d < ROT, other=0.0).to(tl.float32)
        src = qkv_ptr + b * s_qkv_b + t * s_qkv_t
        head_offs = h * (3 * HEAD_DIM)
        q = _rotate(src, head_offs, d, rot_m, partner, sign, c, s, pass_m)
        k = _rotate(src + HEAD_DIM, head_offs, d, rot_m, partner, sign, c, s, pass_m)
        dst = ((b * n_tokens + t) * HEADS + h) * HEAD_DIM + d  # memory (batch, n_tokens, heads, head_dim)
        tl.store(q_ptr + dst, q, mask=inside)
        tl.store(k_ptr + dst, k, mask=inside)


def rotary_qk(qkv: Tensor, cos: Tensor, sin: Tensor, *, num_heads: int, head_dim: int) -> tuple[Tensor, Tensor]:
    """Rotated q and k of a GPT-NeoX ``qkv`` projection, equal to :func:`rotary_qk_reference`.

    Parameters
    ----------
    qkv : Tensor of shape (batch, n_tokens, num_heads * 3 * head_dim)
        The ``query_key_value`` output; its last dim must be contiguous.
    cos, sin : Tensor of shape (1 or batch, n_tokens, rot)
        transformers' rotary ``position_embeddings`` (same dtype as ``qkv``).
    num_heads, head_dim : int

    Returns
    -------
    (q, k) : Tensors of shape (batch, num_heads, n_tokens, head_dim), dtype of ``qkv``
        Stored token-major: ``q.transpose(1, 2)`` is contiguous, (batch, n_tokens, heads,
        head_dim), the layout flash attention works in. SDPA's cuDNN kernel then writes its
        output in that layout too, so transformers' ``transpose(1, 2).contiguous()`` after
        attention copies nothing (it was 2.6% of Pythia-2.8B's forward, H200, 2026-12-04).

    Notes
    -----
    CUDA with Triton only; elsewhere (or for unusual strides) transformers' own code runs
    (contiguous q and k, same values).
    """
    batch, n_tokens, width = qkv.shape
    rot = cos.shape[-1]
    usable = (
        triton is not None
        and qkv.is_cuda
        and width == num_heads * 3 * head_dim
        and qkv.stride(-1) == 1
        and cos.shape == sin.shape
        and cos.dim() == 3
        and cos.shape[0] in (1, batch)
        and cos.shape[1] == n_tokens
        and rot % 2 == 0
        and 0 < rot <= head_dim
        and cos.dtype == sin.dtype == qkv.dtype
        and cos.stride() == sin.stride()
        and cos.stride(-1) == 1
    )
    if not usable:
        return rotary_qk_reference(qkv, cos, sin, num_heads=num_heads, head_dim=head_dim)
    q = torch.empty(batch, n_tokens, num_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    k = torch.empty_like(q)
    block_h, block_d = triton.next_power_of_2(num_heads), triton.next_power_of_2(head_dim)
    _rotary_qk_kernel[(batch * n_tokens,)](
        qkv,
        cos,
        sin,
        q,
        k,
        n_tokens,
        qkv.stride(0),
        qkv.stride(1),
        0 if cos.shape[0] == 1 else cos.stride(0),
        cos.stride(1),
        HEADS=num_heads,
        HEAD_DIM=head_dim,
        ROT=rot,
        BLOCK_H=block_h,
        BLOCK_D=block_d,
        num_warps=max(1, min(8, block_h * block_d // 512)),
        **_ROTARY_LAUNCH,
    )
    return q.transpose(1, 2), k.transpose(1, 2)
