"""LayerNorm rows in one Triton pass, optionally with two affine outputs of one input.

Pythia's layers use a *parallel* residual: ``input_layernorm(h)`` feeds the attention and
``post_attention_layernorm(h)`` the MLP, two LayerNorms of the same ``h`` with the same
``eps``. Both normalise ``h`` identically (same mean, same variance); only the affine weights
differ. :func:`layer_norm_pair` reads ``h`` once, computes the statistics once and writes the
two outputs (one read and two writes against torch's two reads and two writes, and one
kernel instead of two).

Arithmetic, per row of ``n`` elements, in float32 (torch's order for the affine step):
``mean = sum(x) / n``, ``var = sum((x - mean)^2) / n`` (two passes over registers, not
torch's Welford), ``y = w * (rstd * (x - mean)) + b`` with ``rstd = rsqrt(var + eps)``,
rounded once to the output dtype. The statistics can differ from torch's Welford in the
last float32 bit, so an output element can differ from ``F.layer_norm``'s by one rounding
step of the output dtype (measured on Pythia-2.8B shapes: ``benchmarks/pythia_passes.py``;
bounded by ``test_layer_norm_pair_on_gpu_is_torch_up_to_one_rounding`` in
``tests/kernels/test_fusions.py``). ``REPRFLOW_FUSE=0`` keeps torch's kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["layer_norm_pair", "layer_norm_pair_reference"]

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None


def layer_norm_pair_reference(
    x: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None, *, eps: float
) -> tuple[Tensor, Tensor]:
    """``(F.layer_norm(x, w1, b1), F.layer_norm(x, w2, b2))`` over the last axis."""
    shape = (x.shape[-1],)
    return F.layer_norm(x, shape, w1, b1, eps), F.layer_norm(x, shape, w2, b2, eps)


if triton is not None:

    @triton.jit
    def _layer_norm_pair_kernel(
        x_ptr,
        w1_ptr,
        b1_ptr,
        w2_ptr,
        b2_ptr,
        o1_ptr,
        o2_ptr,
        n_cols,
        eps,
        s_x,
        s_o,
        BLOCK: tl.constexpr,
        HAS_B: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, BLOCK)
        m = offs < n_cols
        x = tl.load(x_ptr + row * s_x + offs, mask=m, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / n_cols
        xc = tl.where(m, x - mean, 0.0)
        var = tl.sum(xc * xc, axis=0) / n_cols
        xn = tl.math.rsqrt(var + eps) * xc
        w1 = tl.load(w1_ptr + offs, mask=m, other=0.0).to(tl.float32)
        w2 = tl.load(w2_ptr + offs, mask=m, other=0.0).to(tl.float32)
        if HAS_B:
            y1 = w1 * xn + tl.load(b1_ptr + offs, mask=m, other=0.0).to(tl.float32)
            y2 = w2 * xn + tl.load(b2_ptr + offs, mask=m, other=0.0).to(tl.float32)
        else:
            y1 = w1 * xn
            y2 = w2 * xn
        tl.store(o1_ptr + row * s_o + offs, y1.to(o1_ptr.dtype.element_ty), mask=m)
        tl.store(o2_ptr + row * s_o + offs, y2.to(o2_ptr.dtype.element_ty), mask=m)


def layer_norm_pair(
    x: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None, *, eps: float
) -> tuple[Tensor, Tensor]:
    """Two LayerNorms of ``x`` over its last axis, in one pass on CUDA.

    Parameters
    ----------
    x : Tensor of shape (..., hidden)
    w1, w2 : Tensor of shape (hidden,)
        The two affine weights (dtype of ``x``).
    b1, b2 : Tensor of shape (hidden,) or None
        The two biases: both given or both None.
    eps : float

    Returns
    -------
    (Tensor, Tensor), each of the shape and dtype of ``x``
        ``F.layer_norm(x, (hidden,), w1, b1, eps)`` and the same with ``w2, b2``, up to one
        rounding step of the output dtype (module docstring). torch's own kernel runs off
        CUDA, without Triton, for mixed dtypes or one bias missing.
    """
    hidden = x.shape[-1]
    usable = (
        triton is not None
        and x.is_cuda
        and (b1 is None) == (b2 is None)
        and all(t.dtype == x.dtype and t.shape == (hidden,) for t in (w1, w2, b1, b2) if t is not None)
        and hidden <= 16384
    )
    if not usable:
        return layer_norm_pair_reference(x, w1, b1, w2, b2, eps=eps)
    x2 = x.reshape(-1, hidden)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    o1 = torch.empty((x2.shape[0], hidden), dtype=x.dtype, device=x.device)
    o2 = torch.empty_like(o1)
    block = triton.next_power_of_2(hidden)
    has_b = b1 is not None
    _layer_norm_pair_kernel[(x2.shape[0],)](
        x2,
        w1,
        b1 if has_b else w1,
        w2,
        b2 if has_b else w2,
        o1,
        o2,
        hidden,
        eps,
        x2.stride(0),
        o1.stride(0),
        BLOCK=block,
        HAS_B=has_b,
        num_warps=min(16, max(4, block // 512)),
    )
    return o1.view(x.shape), o2.view(x.shape)
