"""An MLP's first projection and its tanh GELU in one GEMM (cuBLASLt's bias + GELU epilogue).

GPT-Neo's MLP is ``c_proj(gelu_new(c_fc(x)))``; ``gelu_new`` is the tanh approximation
``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``. Run as two kernels, the GELU reads and
writes the (tokens x 4 hidden) activation once more: 0.45 ms per layer for GPT-Neo-2.7B at
batch 16 x 2048 tokens on an H200. ``torch._addmm_activation(bias, x, W.T, use_gelu=True)``
applies the same tanh GELU in the GEMM's epilogue (cuBLASLt ``GELU_BIAS``), before the
product is rounded to bf16 (measured: 2.32 ms against 2.55 ms for the two kernels, relative
error against float64 1.7e-3 against 2.6e-3, ``benchmarks/epilogue_fusion.py``).

Only tanh-approximated GELUs are fused: Pythia's exact (erf) GELU has no cuBLASLt epilogue.
It runs as :func:`gelu_erf_`: one Triton pass that overwrites the GEMM's output in place with
torch's arithmetic (``x * 0.5 * (1 + erf(x / sqrt(2)))`` in float32, libdevice ``erf``), so its
values equal ``F.gelu``'s. Training (autograd) and CPU modules keep transformers' forward.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["linear_gelu_tanh", "install_fused_gelu_mlp", "is_tanh_gelu", "is_erf_gelu", "gelu_erf_"]

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None


def is_tanh_gelu(act: nn.Module) -> bool:
    """Whether ``act`` computes the tanh-approximated GELU (HF's ``gelu_new`` or torch's)."""
    name = type(act).__name__
    if name in ("NewGELUActivation", "PytorchGELUTanh", "GELUTanh"):
        return True
    return isinstance(act, nn.GELU) and act.approximate == "tanh"


def is_erf_gelu(act: nn.Module) -> bool:
    """Whether ``act`` computes the exact (erf) GELU (HF's ``gelu`` or ``nn.GELU()``)."""
    if type(act).__name__ == "GELUActivation":  # transformers' "gelu": torch's gelu or its python erf twin
        return True
    return isinstance(act, nn.GELU) and act.approximate == "none"


#: Launch options of the GELU kernel (``benchmarks/pythia_passes.py`` times it with FMA
#: contraction on and off and checks equality with ``F.gelu``).
_GELU_LAUNCH: dict = {}

if triton is not None:

    @triton.jit
    def _gelu_erf_kernel(x_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        y = x * 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))  # torch's order (GeluCUDAKernelImpl)
        tl.store(x_ptr + offs, y.to(x_ptr.dtype.element_ty), mask=m)


def gelu_erf_(x: Tensor) -> Tensor:
    """Exact GELU of ``x`` in place, with ``F.gelu``'s values.

    Parameters
    ----------
    x : Tensor, any shape, float dtype
        Overwritten (a contiguous CUDA tensor: one Triton pass; otherwise ``F.gelu``'s result
        is copied in).

    Returns
    -------
    Tensor
        ``x``.
    """
    if triton is None or not x.is_cuda or not x.is_contiguous():
        return x.copy_(F.gelu(x))
    n = x.numel()
    block = 2048
    _gelu_erf_kernel[(triton.cdiv(n, block),)](x, n, BLOCK=block, num_warps=8, **_GELU_LAUNCH)
    return x


def linear_gelu_tanh(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``gelu_tanh(x @ weight.T + bias)`` as one GEMM.

    Parameters
    ----------
    x : Tensor of shape (..., in_features)
    weight : Tensor of shape (out_features, in_features)
    bias : Tensor of shape (out_features,)

    Returns
    -------
    Tensor of shape (..., out_features), dtype of ``x``

    Notes
    -----
    One GEMM on CUDA only: on the CPU ``torch._addmm_activation`` applies the exact (erf)
    GELU, so there the two steps run.
    """
    if not x.is_cuda:  # torch's CPU _addmm_activation applies the exact (erf) GELU
        return torch.nn.functional.gelu(torch.nn.functional.linear(x, weight, bias), approximate="tanh")
    x2 = x.reshape(-1, x.shape[-1])
    out = torch._addmm_activation(bias, x2, weight.t(), use_gelu=True)  # CUDA: tanh GELU
    return out.view(*x.shape[:-1], weight.shape[0])


def _forward(self: nn.Module, hidden_states: Tensor) -> Tensor:
    if self.training or torch.is_grad_enabled() or not hidden_states.is_cuda:
        return self._reprflow_original_forward(hidden_states)
    h = linear_gelu_tanh(hidden_states, self.c_fc.weight, self.c_fc.bias)
    return self.dropout(self.c_proj(h))


def install_fused_gelu_mlp(model: nn.Module) -> int:
    """Fuse ``c_fc`` and its tanh GELU in every GPT-Neo MLP of ``model``, in place.

    Returns
    -------
    int
        Number of MLPs switched (those with a bias and a tanh GELU; already switched ones
        are not counted).
    """
    n = 0
    for m in model.modules():
        if type(m).__name__ != "GPTNeoMLP" or getattr(m, "_reprflow_fused_mlp", False):
            continue
        if m.c_fc.bias is None or not is_tanh_gelu(m.act):
            continue
        m._reprflow_original_forward = m.forward
        m.forward = types.MethodType(_forward, m)
        m._reprflow_fused_mlp = True
        n += 1
    return n
