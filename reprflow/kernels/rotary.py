"""GPT-NeoX's partial rotary embedding of queries and keys in one Triton pass, bit for bit.

transformers' ``GPTNeoXAttention`` splits the fused projection ``qkv`` of shape
``(batch, n_tokens, heads * 3 * head_dim)`` (per head ``[q | k | v]``) into strided
``(batch, heads, n_tokens, head_dim)`` views and rotates the first ``rot`` dims of the
queries and keys (``rot = head_dim * partial_rotary_factor``; 20 of 80 for Pythia-2.8B)::

    q_embed = cat([q_rot * cos + rotate_half(q_rot) * sin, q_pass], -1)   # and so for k

``rotate_half(x) = cat([-x[..., rot/2:], x[..., :rot/2]])``. That is about a dozen kernels
per layer (four ``cat`` copies, the products, the sum), 16% of Pythia-2.8B's forward on an
H200 (``benchmarks/profile_forward.py``). :func:`rotary_qk_` rotates the ``rot`` dims of
``q`` and ``k`` in place inside ``qkv`` (reading and writing only those) and returns
transformers' strided views, with torch's roundings: each product and the sum are formed in
float32 and rounded to the input dtype, as torch's elementwise kernels do, so the result
equals transformers' (``torch.equal``, tested on the GPU).

Conventions: ``cos``/``sin`` are transformers' ``position_embeddings`` of shape
``(1 or batch, n_tokens, rot)`` in the model dtype (``cat([freqs, freqs])``, so the two
halves are equal); ``rot`` is even and ``<= head_dim``.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["rotary_qk_", "rotary_qk_reference"]

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
    def _rotate_(ptr, j, inside, c1, s1, c2, s2, HALF: tl.constexpr):
        """Rotate, in place, the ``rot`` first dims of a (rows x half) tile of q or k heads.

        ``x1 = x[:half]``, ``x2 = x[half:rot]``: out1 = x1 c - x2 s, out2 = x2 c + x1 s, each
        product and the sum rounded to the input dtype as torch rounds them. Both halves are
        tiles of one shape and layout, so each thread stores only what it loaded itself.
        """
        x1 = tl.load(ptr + j, mask=inside, other=0.0)
        x2 = tl.load(ptr + j + HALF, mask=inside, other=0.0)
        ty = x1.dtype
        f1, f2 = x1.to(tl.float32), x2.to(tl.float32)
        a1 = (f1 * c1).to(ty)  # q_rot * cos, rounded as torch does
        b1 = (-f2 * s1).to(ty)  # rotate_half(q_rot) * sin: -x2 in the first half
        a2 = (f2 * c2).to(ty)
        b2 = (f1 * s2).to(ty)
        tl.store(ptr + j, (a1.to(tl.float32) + b1.to(tl.float32)).to(ty), mask=inside)
        tl.store(ptr + j + HALF, (a2.to(tl.float32) + b2.to(tl.float32)).to(ty), mask=inside)

    @triton.jit
    def _rotary_qk_kernel(
        qkv_ptr,
        cos_ptr,
        sin_ptr,
        n_rows,
        n_tokens,
        s_qkv_b,
        s_qkv_t,
        s_cs_b,
        s_cs_t,
        HEADS: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        ROT: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_HALF: tl.constexpr,
    ):
        # rows = (batch, token, head) triples, BLOCK_R per program; the rotary dims of each
        # row's q and k, in place
        r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
        HALF: tl.constexpr = ROT // 2
        j = tl.arange(0, BLOCK_HALF)[None, :]
        bt = r // HEADS
        h = r % HEADS
        b = bt // n_tokens
        t = bt % n_tokens
        inside = (r < n_rows) & (j < HALF)
        cs = b * s_cs_b + t * s_cs_t + j
        c1 = tl.load(cos_ptr + cs, mask=inside, other=0.0).to(tl.float32)
        s1 = tl.load(sin_ptr + cs, mask=inside, other=0.0).to(tl.float32)
        c2 = tl.load(cos_ptr + cs + HALF, mask=inside, other=0.0).to(tl.float32)
        s2 = tl.load(sin_ptr + cs + HALF, mask=inside, other=0.0).to(tl.float32)
        row = qkv_ptr + b * s_qkv_b + t * s_qkv_t + h * (3 * HEAD_DIM)
        _rotate_(row, j, inside, c1, s1, c2, s2, HALF)  # q
        _rotate_(row + HEAD_DIM, j, inside, c1, s1, c2, s2, HALF)  # k


def rotary_qk_(qkv: Tensor, cos: Tensor, sin: Tensor, *, num_heads: int, head_dim: int) -> tuple[Tensor, Tensor]:
    """Rotated q and k of a GPT-NeoX ``qkv`` projection, equal to :func:`rotary_qk_reference`,
    rotated in place inside ``qkv``.

    Parameters
    ----------
    qkv : Tensor of shape (batch, n_tokens, num_heads * 3 * head_dim)
        The ``query_key_value`` output; its last dim must be contiguous. On the fast path the
        first ``rot`` dims of each head's q and k are overwritten with their rotation (v and
        the other dims are untouched); use only the returned views of it afterwards.
    cos, sin : Tensor of shape (1 or batch, n_tokens, rot)
        transformers' rotary ``position_embeddings`` (same dtype as ``qkv``).
    num_heads, head_dim : int

    Returns
    -------
    (q, k) : Tensors of shape (batch, num_heads, n_tokens, head_dim), dtype of ``qkv``
        On the fast path, transformers' own strided views of ``qkv`` (as ``v`` is): reading
        and writing only the rotated quarter of q and k instead of copying both whole
        (Pythia-2.8B: 20 of 80 dims). SDPA's cuDNN kernel then writes its output token-major,
        so transformers' ``transpose(1, 2).contiguous()`` after attention copies nothing.

    Notes
    -----
    CUDA with Triton only; elsewhere (or for unusual strides) transformers' own code runs
    (new contiguous q and k, same values; ``qkv`` unchanged).
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
    _launch(qkv, cos, sin, num_heads=num_heads, head_dim=head_dim)
    q, k, _ = _split_qkv(qkv, num_heads, head_dim)
    return q, k


def _launch(
    qkv: Tensor, cos: Tensor, sin: Tensor, *, num_heads: int, head_dim: int, block_r: int | None = None
) -> None:
    """Run :func:`_rotary_qk_kernel` over every (batch, token, head) row of ``qkv``, in place
    (``block_r`` rows per program; default 4096 elements' worth, 256 rows for Pythia's 10)."""
    batch, n_tokens, _ = qkv.shape
    rot = cos.shape[-1]
    block_half = triton.next_power_of_2(rot // 2)
    block_r = block_r or max(16, 4096 // block_half)
    n_rows = batch * n_tokens * num_heads
    _rotary_qk_kernel[(triton.cdiv(n_rows, block_r),)](
        qkv,
        cos,
        sin,
        n_rows,
        n_tokens,
        qkv.stride(0),
        qkv.stride(1),
        0 if cos.shape[0] == 1 else cos.stride(0),
        cos.stride(1),
        HEADS=num_heads,
        HEAD_DIM=head_dim,
        ROT=rot,
        BLOCK_R=block_r,
        BLOCK_HALF=block_half,
        num_warps=4,
        **_ROTARY_LAUNCH,
    )
