"""Full-sequence forwards for HF's ``MambaMixer`` (Mamba-1) and ``Mamba2Mixer`` (Mamba-2).

HF's mixers pick their kernels when transformers imports the model file, and their torch
fallbacks are slow (Mamba-1 loops in Python over the sequence) or memory-hungry (Mamba-2
materialises (chunk x chunk) decay matrices per head). :func:`install_mamba_forward` and
:func:`install_mamba2_forward` replace the ``forward`` of each mixer *instance* with one
that keeps HF's parameters and the order of HF's operations but keeps everything
time-major ``(batch, n_tokens, channels)`` and calls fast kernels:

Mamba-1: ``in_proj`` -> causal conv + SiLU (:mod:`reprflow.kernels.causal_conv1d`) ->
``x_proj`` -> ``dt_proj`` (weight only; its bias enters the scan in float32, as in HF)
-> selective scan -> ``out_proj``.

Mamba-2: ``in_proj`` -> causal conv + SiLU -> SSD scan (``mamba_ssm``'s Triton
``mamba_chunk_scan_combined``) -> gated group RMSNorm (HF's ``MambaRMSNormGated`` in one
Triton pass, :mod:`reprflow.kernels.gated_rms_norm`) -> ``out_proj``.

The conv, the scan and the SSD are passed in as callables: a fixed implementation (a
string ``impl``) or a :class:`reprflow.kernels.select.KernelOp` that picks the fastest
correct candidate per shape class (:mod:`reprflow.kernels.ops`; ``prepare_model`` does
this).

Calls with a cache (generation) go to HF's original forward, so the patched model still
generates. :func:`install_mamba_train_forward` is the training variant for Mamba-1 where
``mamba_ssm``'s fused compiled kernel is absent: the same forward with a differentiable scan
(default :func:`~reprflow.kernels.selective_scan.selective_scan_autograd`), in training and eval mode. Padding masks are applied where HF applies them (before ``in_proj`` and after
the conv).
"""

from __future__ import annotations

import functools
import logging
import types
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reprflow.kernels.causal_conv1d import causal_conv1d_silu
from reprflow.kernels.gated_rms_norm import GATED_NORM_CHUNK, GATED_NORM_HELD_MAX, GATED_NORM_ROWS, gated_rms_norm
from reprflow.kernels.optional import MambaSsmKernels
from reprflow.kernels.selective_scan import selective_scan, selective_scan_autograd

logger = logging.getLogger(__name__)

__all__ = [
    "install_mamba_forward",
    "install_mamba2_forward",
    "install_mamba_train_forward",
    "mamba_mixer_forward",
    "mamba2_mixer_forward",
    "out_proj_add",
    "patch_forward",
    "residual_in_place",
]

_RESIDUAL_IN_PLACE: ContextVar[bool] = ContextVar("reprflow_residual_in_place", default=False)


@contextmanager
def residual_in_place() -> Iterator[None]:
    """Within this context :func:`out_proj_add` adds into the float32 residual in place.

    ``torch.addmm(residual, y, W.T, out_dtype=float32)`` computes ``C = A B + C`` in cuBLAS, so
    it first copies the residual into a new output: a device-to-device copy of the whole
    float32 residual stream per block (0.16 ms per Mamba-2.8B layer at 16 x 2048 tokens on an
    H200). Writing into the residual instead overwrites the previous block's output, so only a
    caller that keeps no reference to a block's output past its forward hook may enter this
    context: :func:`reprflow.capture.forward_states` does (its hooks copy what they keep, and it
    never asks for ``output_hidden_states``). Elsewhere, e.g. a plain ``model(...,
    output_hidden_states=True)``, every block output stays as transformers returns it.
    """
    token = _RESIDUAL_IN_PLACE.set(True)
    try:
        yield
    finally:
        _RESIDUAL_IN_PLACE.reset(token)


def _mask_rows(hidden_states: Tensor, attention_mask: Tensor | None) -> Tensor:
    # HF's apply_mask_to_padding_states
    if attention_mask is None:
        return hidden_states
    return (hidden_states * attention_mask[:, :, None]).to(hidden_states.dtype)


def mamba_mixer_forward(
    mixer: nn.Module,
    hidden_states: Tensor,
    attention_mask: Tensor | None = None,
    *,
    scan_impl: str | Callable[..., Tensor] = "auto",
    conv_impl: str | Callable[..., Tensor] = "auto",
    residual: Tensor | None = None,
) -> Tensor:
    """Full-sequence forward of one HF ``MambaMixer`` through the fast kernels.

    Parameters
    ----------
    mixer : MambaMixer
    hidden_states : Tensor of shape (batch, n_tokens, hidden)
    attention_mask : Tensor of shape (batch, n_tokens), optional
    scan_impl, conv_impl : {"auto", "triton", "torch"} or callable
        Implementations of the scan and the conv: an ``impl`` of
        :func:`~reprflow.kernels.selective_scan.selective_scan` /
        :func:`~reprflow.kernels.causal_conv1d.causal_conv1d_silu`, or a callable with
        their signature (without ``impl``), e.g. a ``KernelOp``.
    residual : Tensor of shape (batch, n_tokens, hidden), float32, optional
        The block's residual stream: when given, the block output ``residual +
        out_proj(y)`` is returned, from one GEMM (:func:`out_proj_add`).

    Returns
    -------
    Tensor of shape (batch, n_tokens, hidden)
        In the dtype of ``hidden_states`` (float32 with ``residual``).
    """
    dtype = hidden_states.dtype
    d_inner, d_state, rank = mixer.intermediate_size, mixer.ssm_state_size, mixer.time_step_rank
    hidden_states = _mask_rows(hidden_states, attention_mask)
    xz = mixer.in_proj(hidden_states)  # [batch, n_tokens, 2 * d_inner]
    x, z = xz[..., :d_inner], xz[..., d_inner:]
    conv_w = mixer.conv1d.weight[:, 0, :]  # [d_inner, width]
    conv_b = mixer.conv1d.bias if mixer.use_conv_bias else None
    x = _conv(conv_impl)(x, conv_w, conv_b, mask=attention_mask)  # [batch, n_tokens, d_inner]
    x_dbl = mixer.x_proj(x)  # [batch, n_tokens, rank + 2 * d_state]
    dt_raw = x_dbl[..., :rank]
    B = x_dbl[..., rank : rank + d_state]
    C = x_dbl[..., rank + d_state :]
    dt = F.linear(dt_raw, mixer.dt_proj.weight)  # [batch, n_tokens, d_inner]; bias added in the scan
    A = -torch.exp(mixer.A_log.float())  # [d_inner, d_state]
    dt_bias = mixer.dt_proj.bias.float() if mixer.dt_proj.bias is not None else None
    scan = scan_impl if callable(scan_impl) else functools.partial(selective_scan, impl=scan_impl)
    y = scan(x, dt, A, B, C, mixer.D.float(), z, delta_bias=dt_bias, delta_softplus=True)
    return out_proj_add(mixer.out_proj, y.to(dtype), residual)


def out_proj_add(out_proj: nn.Linear, y: Tensor, residual: Tensor | None) -> Tensor:
    """``out_proj(y)``, or with a float32 ``residual`` the block output ``residual + out_proj(y)``.

    The sum is one GEMM whose epilogue adds the float32 residual (``torch.addmm(...,
    out_dtype=torch.float32)``) before anything is rounded: transformers rounds
    ``out_proj(y)`` to the model dtype first, then adds. Measured on H200s for Mamba-2.8B
    (B=16, T=2048; ``benchmarks/epilogue_fusion.py``): 1.29 ms per layer against 1.38 ms
    for the two steps (1.40 against 1.52 on a second machine), and relative error against
    float64 4e-6 against 1.2e-3. Where that is not possible (a
    bias, a residual not in float32, CPU) the two steps run as transformers runs them. Inside
    :func:`residual_in_place` the sum overwrites ``residual`` (same values, no copy).

    Parameters
    ----------
    out_proj : nn.Linear
    y : Tensor of shape (batch, n_tokens, in_features)
    residual : Tensor of shape (batch, n_tokens, out_features), optional

    Returns
    -------
    Tensor of shape (batch, n_tokens, out_features)
    """
    if residual is None:
        return out_proj(y)
    fusable = (
        out_proj.bias is None
        and residual.dtype == torch.float32
        and residual.is_cuda
        and y.dtype in (torch.bfloat16, torch.float16)
    )
    if not fusable:
        return residual + out_proj(y)
    c = residual.reshape(-1, residual.shape[-1])
    if _RESIDUAL_IN_PLACE.get() and c.data_ptr() == residual.data_ptr() and c.is_contiguous():
        # out aliases C exactly: torch's copy of C into out is then a no-op (same data)
        torch.addmm(c, y.reshape(-1, y.shape[-1]), out_proj.weight.t(), out_dtype=torch.float32, out=c)
        return residual
    out = torch.addmm(c, y.reshape(-1, y.shape[-1]), out_proj.weight.t(), out_dtype=torch.float32)
    return out.view(residual.shape)


def _conv(conv_impl: str | Callable[..., Tensor]) -> Callable[..., Tensor]:
    return conv_impl if callable(conv_impl) else functools.partial(causal_conv1d_silu, impl=conv_impl)


def mamba2_mixer_forward(
    mixer: nn.Module,
    hidden_states: Tensor,
    attention_mask: Tensor | None = None,
    *,
    kernels: MambaSsmKernels,
    conv_impl: str | Callable[..., Tensor] = "auto",
    ssd: Callable[..., Tensor] | None = None,
    residual: Tensor | None = None,
) -> Tensor:
    """Full-sequence forward of one HF ``Mamba2Mixer`` through ``mamba_ssm``'s Triton SSD.

    Parameters
    ----------
    mixer : Mamba2Mixer
    hidden_states : Tensor of shape (batch, n_tokens, hidden)
    attention_mask : Tensor of shape (batch, n_tokens), optional
    kernels : MambaSsmKernels
        From :func:`reprflow.kernels.optional.load_mamba_ssm_triton`.
    conv_impl : {"auto", "triton", "torch"} or callable
        As for :func:`mamba_mixer_forward`.
    ssd : callable, optional
        The SSD scan with the signature of ``mamba_chunk_scan_combined`` (e.g. a
        ``KernelOp``); default ``kernels.chunk_scan_combined``.
    residual : Tensor of shape (batch, n_tokens, hidden), float32, optional
        As for :func:`mamba_mixer_forward`: the block output is returned.

    Returns
    -------
    Tensor of shape (batch, n_tokens, hidden)
        In the dtype of ``hidden_states`` (float32 with ``residual``).
    """
    batch, n_tokens, _ = hidden_states.shape
    dtype = hidden_states.dtype
    d_inner, n_heads, head_dim = mixer.intermediate_size, mixer.num_heads, mixer.head_dim
    n_groups, d_state = mixer.n_groups, mixer.ssm_state_size
    hidden_states = _mask_rows(hidden_states, attention_mask)
    proj = mixer.in_proj(hidden_states)  # [batch, n_tokens, d_inner + conv_dim + n_heads]
    gate = proj[..., :d_inner]
    xbc = proj[..., d_inner : d_inner + mixer.conv_dim]
    dt = proj[..., d_inner + mixer.conv_dim :]  # [batch, n_tokens, n_heads]
    conv_b = mixer.conv1d.bias if mixer.use_conv_bias else None
    xbc = _conv(conv_impl)(xbc, mixer.conv1d.weight[:, 0, :], conv_b, mask=attention_mask)
    x = xbc[..., :d_inner].view(batch, n_tokens, n_heads, head_dim)
    B = xbc[..., d_inner : d_inner + n_groups * d_state].view(batch, n_tokens, n_groups, d_state)
    C = xbc[..., d_inner + n_groups * d_state :].view(batch, n_tokens, n_groups, d_state)
    A = -torch.exp(mixer.A_log.float())  # [n_heads]
    y = (ssd or kernels.chunk_scan_combined)(
        x,
        dt,
        A,
        B,
        C,
        mixer.chunk_size,
        D=mixer.D,
        z=None,
        dt_bias=mixer.dt_bias,
        dt_softplus=True,
        dt_limit=tuple(mixer.time_step_limit),
    )  # [batch, n_tokens, n_heads, head_dim]
    y = y.reshape(batch, n_tokens, d_inner)
    group_size = d_inner // n_groups
    chunk = GATED_NORM_CHUNK if group_size > GATED_NORM_CHUNK else None  # a wide row walked in blocks
    rows = GATED_NORM_ROWS if chunk and group_size <= GATED_NORM_HELD_MAX else None  # ... held in registers
    y = gated_rms_norm(
        y, gate, mixer.norm.weight, eps=mixer.norm.variance_epsilon, group_size=group_size, chunk=chunk, rows=rows
    )
    return out_proj_add(mixer.out_proj, y.to(dtype), residual)


def patch_forward(mixer: nn.Module, fast: Callable[..., Tensor]) -> None:
    """Route ``mixer.forward`` (an HF Mamba/Mamba-2 mixer or block) to ``fast``, in place.

    ``fast(module, hidden_states, attention_mask)`` serves full-sequence inference; with a
    cache or in training mode the module's own forward runs. Marks the module
    ``_reprflow_fastpath`` so that installing twice is a no-op.
    """
    original = mixer.forward  # bound method of the HF class

    def forward(self, hidden_states, cache_params=None, attention_mask=None, **kwargs):
        if cache_params is not None or self.training:
            return original(hidden_states, cache_params=cache_params, attention_mask=attention_mask, **kwargs)
        return fast(self, hidden_states, attention_mask)

    mixer.forward = types.MethodType(forward, mixer)
    mixer._reprflow_fast = types.MethodType(fast, mixer)  # the block calls it with its residual
    mixer._reprflow_fastpath = True


def ssm_forward_patched(model: nn.Module) -> bool:
    """Whether :func:`patch_forward` routed any of ``model``'s Mamba/Mamba-2 mixers or blocks to
    reprflow's kernels (else transformers' own forward runs them)."""
    return any(hasattr(m, "_reprflow_fast") for m in model.modules())


def _mixers(model: nn.Module, cls: type, what: str) -> list[nn.Module]:
    """The ``cls`` mixers of ``model`` not switched yet; an error if one's activation is not SiLU."""
    mixers = [m for m in model.modules() if isinstance(m, cls) and not getattr(m, "_reprflow_fastpath", False)]
    for m in mixers:
        if m.activation != "silu":
            raise ValueError(f"{what} fast path supports hidden_act='silu' only, got {m.activation!r}")
    return mixers


def install_mamba_forward(
    model: nn.Module,
    *,
    scan_impl: str | Callable[..., Tensor] = "auto",
    conv_impl: str | Callable[..., Tensor] = "auto",
) -> int:
    """Switch every ``MambaMixer`` of ``model`` to :func:`mamba_mixer_forward`, in place.

    Returns
    -------
    int
        Number of mixers switched.
    """
    from transformers.models.mamba.modeling_mamba import MambaMixer

    mixers = _mixers(model, MambaMixer, "Mamba")
    for m in mixers:

        def fast(self, h, mask, residual=None):
            return mamba_mixer_forward(self, h, mask, scan_impl=scan_impl, conv_impl=conv_impl, residual=residual)

        patch_forward(m, fast)
    return len(mixers)


def install_mamba2_forward(
    model: nn.Module,
    *,
    kernels: MambaSsmKernels,
    conv_impl: str | Callable[..., Tensor] = "auto",
    ssd: Callable[..., Tensor] | None = None,
) -> int:
    """Switch every ``Mamba2Mixer`` of ``model`` to :func:`mamba2_mixer_forward`, in place.

    Returns
    -------
    int
        Number of mixers switched.
    """
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    mixers = _mixers(model, Mamba2Mixer, "Mamba-2")
    for m in mixers:
        expected = m.intermediate_size + m.conv_dim + m.num_heads
        if m.in_proj.out_features != expected:
            raise ValueError(
                f"Mamba-2 fast path: in_proj has {m.in_proj.out_features} outputs, expected "
                f"d_inner + conv_dim + n_heads = {expected} (an MLP branch is not supported)"
            )

        def fast(self, h, mask, residual=None):
            return mamba2_mixer_forward(self, h, mask, kernels=kernels, conv_impl=conv_impl, ssd=ssd, residual=residual)

        patch_forward(m, fast)
    return len(mixers)


def install_mamba_train_forward(
    model: nn.Module,
    *,
    scan: Callable[..., Tensor] = selective_scan_autograd,
    conv_impl: str | Callable[..., Tensor] = "torch",
) -> int:
    """Route every ``MambaMixer`` of ``model`` to :func:`mamba_mixer_forward` with a
    differentiable scan and conv, in training *and* eval mode (calls with a cache still go to
    HF's forward).

    For training Mamba-1 where ``mamba_ssm``'s fused compiled ``mamba_inner_fn`` is absent
    (the CPU; a GPU without ``causal_conv1d``): HF's torch fallback then indexes its scan
    inputs one token at a time, whose backward costs ``O(n_tokens^2)``. Same parameters and
    the same operations as HF's forward, so the trained weights load and run in stock
    transformers. Marks the mixers ``_reprflow_train_forward``; installing twice is a no-op.
    :func:`reprflow.training.kernels.prepare_training` picks the scan per device.

    Parameters
    ----------
    scan : callable
        A scan with autograd, signature of
        :func:`~reprflow.kernels.selective_scan.selective_scan` without ``impl``: default
        :func:`~reprflow.kernels.selective_scan.selective_scan_autograd` (torch, any device);
        on CUDA also ``mamba_ssm``'s compiled ``selective_scan_fn`` behind the time-major
        signature (:func:`reprflow.kernels.ops.compiled_scan_time_major`).
    conv_impl : {"torch"} or callable
        The causal conv + SiLU; must have a backward (the torch conv does; the project's
        Triton conv does not).

    Returns
    -------
    int
        Number of mixers switched.
    """
    from transformers.models.mamba.modeling_mamba import MambaMixer

    mixers = [
        m for m in model.modules() if isinstance(m, MambaMixer) and not getattr(m, "_reprflow_train_forward", False)
    ]
    for m in mixers:
        if m.activation != "silu":
            raise ValueError(f"Mamba training forward supports hidden_act='silu' only, got {m.activation!r}")
        original = m.forward

        def forward(self, hidden_states, cache_params=None, attention_mask=None, _original=original, **kwargs):
            if cache_params is not None:
                return _original(hidden_states, cache_params=cache_params, attention_mask=attention_mask, **kwargs)
            return mamba_mixer_forward(self, hidden_states, attention_mask, scan_impl=scan, conv_impl=conv_impl)

        m.forward = types.MethodType(forward, m)
        m._reprflow_train_forward = True
    return len(mixers)
