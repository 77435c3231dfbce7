"""HF's Mamba/Mamba-2 ``RMSNorm`` in one Triton pass, with HF's exact order of roundings.

transformers' ``MambaRMSNorm`` / ``Mamba2RMSNorm`` compute, for input dtype ``in``::

    x32 = x.float();  y = (x32 * rsqrt(mean(x32 ** 2) + eps)).to(in);  out = weight * y

in six or more elementwise passes over float32 (the residual stream of Mamba is float32).
:func:`rms_norm` does the same arithmetic per row in registers: one read, one write.
The output dtype is ``torch.promote_types(weight.dtype, x.dtype)``, as in torch.
"""

from __future__ import annotations

import types

import torch
from torch import Tensor, nn

__all__ = ["rms_norm", "rms_norm_reference", "install_rms_norm"]

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None


def rms_norm_reference(x: Tensor, weight: Tensor, *, eps: float) -> Tensor:
    """transformers' ``MambaRMSNorm.forward``, verbatim.

    Parameters
    ----------
    x : Tensor of shape (..., hidden)
    weight : Tensor of shape (hidden,)
    eps : float

    Returns
    -------
    Tensor of shape (..., hidden)
    """
    input_dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(input_dtype)


if triton is not None:

    @triton.jit
    def _rms_norm_kernel(x_ptr, w_ptr, out_ptr, n_cols, eps, s_x, s_o, BLOCK: tl.constexpr, ROUND_INPUT: tl.constexpr):
        # ROUND_INPUT: x is first rounded to the output dtype (HF's block calls
        # norm(x.to(weight.dtype)); the rounding is fused here instead of a separate pass).
        row = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, BLOCK)
        m = offs < n_cols
        x = tl.load(x_ptr + row * s_x + offs, mask=m, other=0.0)
        if ROUND_INPUT:
            x = x.to(out_ptr.dtype.element_ty)
        in_dtype = x.dtype
        x = x.to(tl.float32)
        var = tl.sum(x * x, axis=0) / n_cols
        y = (x * (1.0 / tl.sqrt(var + eps))).to(in_dtype)  # HF rounds to the input dtype here
        w = tl.load(w_ptr + offs, mask=m, other=0.0)
        out = w.to(tl.float32) * y.to(tl.float32)
        tl.store(out_ptr + row * s_o + offs, out.to(out_ptr.dtype.element_ty), mask=m)


def rms_norm(x: Tensor, weight: Tensor, *, eps: float, input_dtype: torch.dtype | None = None) -> Tensor:
    """RMSNorm of the last axis on a CUDA device (Triton), same result as the reference.

    Parameters
    ----------
    x : Tensor of shape (..., hidden)
    weight : Tensor of shape (hidden,)
    eps : float
    input_dtype : torch.dtype, optional
        Normalise ``x.to(input_dtype)`` (what HF's Mamba blocks pass their norm), with
        the rounding fused into the kernel; must equal ``weight.dtype``.

    Returns
    -------
    Tensor of shape (..., hidden)
        dtype ``torch.promote_types(weight.dtype, input dtype)``.
    """
    round_input = input_dtype is not None and input_dtype != x.dtype
    if round_input and input_dtype != weight.dtype:
        raise ValueError(f"rms_norm: input_dtype {input_dtype} must equal weight.dtype {weight.dtype}")
    if triton is None or not x.is_cuda:
        return rms_norm_reference(x.to(input_dtype) if round_input else x, weight, eps=eps)
    hidden = x.shape[-1]
    if weight.shape != (hidden,):
        raise ValueError(f"rms_norm: weight must be (hidden={hidden},), got {tuple(weight.shape)}")
    x2 = x.reshape(-1, hidden)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out_dtype = weight.dtype if round_input else torch.promote_types(weight.dtype, x.dtype)
    out = torch.empty(x2.shape, dtype=out_dtype, device=x.device)
    block = triton.next_power_of_2(hidden)
    _rms_norm_kernel[(x2.shape[0],)](
        x2,
        weight,
        out,
        hidden,
        float(eps),
        x2.stride(0),
        out.stride(0),
        BLOCK=block,
        ROUND_INPUT=round_input,
        num_warps=min(16, max(1, block // 256)),
    )
    return out.view(x.shape)


def _block_forward(self: nn.Module, hidden_states: Tensor, attention_mask: Tensor | None) -> Tensor:
    """HF's ``MambaBlock``/``Mamba2Block.forward`` (no cache) with the input rounding fused into
    the norm, and, where the mixer is reprflow's, the residual add fused into its ``out_proj``
    (:func:`reprflow.kernels.mamba_mixers.out_proj_add`)."""
    norm = self.norm
    normed = rms_norm(hidden_states, norm.weight, eps=norm.variance_epsilon, input_dtype=norm.weight.dtype)
    residual = hidden_states.to(torch.float32) if self.residual_in_fp32 else hidden_states
    fast = getattr(self.mixer, "_reprflow_fast", None)
    if fast is not None and getattr(self, "_reprflow_fuse_residual", False):
        return fast(normed, attention_mask, residual=residual)
    return residual + self.mixer(normed, cache_params=None, attention_mask=attention_mask)


def _forward(self: nn.Module, hidden_states: Tensor) -> Tensor:
    return rms_norm(hidden_states, self.weight, eps=self.variance_epsilon)


def install_rms_norm(model: nn.Module, *, fuse_residual: bool = True) -> int:
    """Switch every ``MambaRMSNorm``/``Mamba2RMSNorm`` of ``model`` to :func:`rms_norm`, in place.

    ``MambaBlock``/``Mamba2Block`` forwards also fuse their ``x.to(weight.dtype)`` into
    the norm (one pass over the float32 residual instead of two) and, with
    ``fuse_residual`` and a reprflow mixer, the residual add into the mixer's ``out_proj``
    GEMM. The gated ``MambaRMSNormGated`` of Mamba-2 mixers is not touched.

    Returns
    -------
    int
        Number of norms switched.
    """
    from reprflow.kernels.mamba_mixers import patch_forward

    names = {"MambaRMSNorm", "Mamba2RMSNorm"}
    blocks = {"MambaBlock", "Mamba2Block"}
    n = 0
    for m in model.modules():
        if getattr(m, "_reprflow_fastpath", False):
            continue
        if type(m).__name__ in names:
            m.forward = types.MethodType(_forward, m)
            m._reprflow_fastpath = True
        elif type(m).__name__ in blocks and type(getattr(m, "norm", None)).__name__ in names:
            patch_forward(m, _block_forward)  # a cache or training mode keeps HF's forward
            m._reprflow_fuse_residual = fuse_residual
        else:
            continue
        n += 1
    return n
