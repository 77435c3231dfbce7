"""Which kernels a training step runs, per family and device (docs/training.md, *Devices and kernels*).

The models train through their own transformers code, except Mamba-1's mixers where
transformers' fallback is unusable for training (its torch scan indexes one token at a time,
so its backward costs ``O(context^2)``). Mamba-1 has four paths (:data:`MAMBA1_PATHS`);
:func:`mamba1_train_path` picks, fastest available first:

``hf-mamba_ssm``
    transformers' own forward, which in training mode calls ``mamba_ssm``'s fused compiled
    ``mamba_inner_fn`` (conv, scan and projections in one autograd Function, with the
    compiled backward). Needs CUDA, ``selective_scan_cuda`` and ``causal_conv1d`` compiled,
    and transformers to have resolved ``mamba_inner_fn`` to ``mamba_ssm``'s.
``reprflow-mamba_ssm-scan``
    :func:`~reprflow.kernels.mamba_mixers.install_mamba_train_forward` with ``mamba_ssm``'s
    compiled ``selective_scan_fn`` (time-major wrapper) and the torch conv: CUDA with
    ``selective_scan_cuda`` but without ``causal_conv1d`` (which the fused function needs).
``reprflow-autograd``
    ``install_mamba_train_forward`` with
    :func:`~reprflow.kernels.selective_scan.selective_scan_autograd` (torch; a Python loop over
    the tokens, backward linear in the context): every other case, the CPU included.
``hf-torch``
    transformers' forward left as it is, which is its torch fallback only where the compiled
    packages do not import (benchmarks/train_gpu.py runs it in a process that hides them);
    never chosen.

GPT-Neo: transformers has only eager attention for it (float32 scores materialised per
layer) or flash-attn's package; ``prepare_training`` installs the project's SDPA attention
(:func:`~reprflow.kernels.gpt_neo_attention.install_sdpa_attention`: flash for global layers,
the band mask for local ones, no ``1/sqrt(d)`` scale, the same function as eager), which has
a backward on every device (:data:`GPT_NEO_PATHS`; ``hf-eager`` only for benchmarks).

Mamba2 and GPT-NeoX are left to transformers (Mamba2: ``mamba_ssm``'s Triton
``mamba_split_conv1d_scan_combined``, which has a backward, only when both ``mamba_ssm`` and
``causal_conv1d`` import; else transformers' torch path, 3.6x slower on the H200);
:func:`describe_kernels` names what transformers resolved, for the log and the summary.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from reprflow.kernels.mamba_mixers import install_mamba_train_forward
from reprflow.kernels.optional import compiled_causal_conv1d, compiled_selective_scan

logger = logging.getLogger(__name__)

__all__ = [
    "GPT_NEO_PATHS",
    "MAMBA1_PATHS",
    "describe_kernels",
    "hf_resolved_module",
    "mamba1_path_availability",
    "mamba1_train_path",
    "prepare_training",
]

MAMBA1_PATHS = ("hf-mamba_ssm", "reprflow-mamba_ssm-scan", "reprflow-autograd", "hf-torch")
GPT_NEO_PATHS = ("reprflow-sdpa", "hf-eager")


def hf_resolved_module(fn) -> str:
    """The module of the implementation transformers bound to a kernel function decorated
    with ``use_kernel_func_from_hub_with_fallback`` (e.g. ``mamba_ssm.ops.selective_scan_interface``),
    or ``"transformers"`` when it kept its torch fallback, ``"unknown"`` if it cannot tell."""
    seen = set()
    while fn is not None and id(fn) not in seen:
        seen.add(id(fn))
        code = getattr(fn, "__code__", None)
        if code is not None and fn.__closure__:
            cells = dict(zip(code.co_freevars, fn.__closure__))
            if "implementation" in cells:
                return getattr(cells["implementation"].cell_contents, "__module__", None) or "unknown"
        fn = getattr(fn, "__wrapped__", None)
    return "unknown"


def _hf_mamba_inner_is_compiled() -> bool:
    """False only when transformers visibly kept its torch ``mamba_inner_fn`` (which returns
    None and sends training to the torch fallback); callers check the compiled imports first."""
    from transformers.models.mamba import modeling_mamba

    return not hf_resolved_module(modeling_mamba.mamba_inner_fn).startswith("transformers")


def mamba1_path_availability(device: torch.device) -> dict[str, str]:
    """Each of :data:`MAMBA1_PATHS` -> ``""`` if it can run on ``device`` here, else why not."""
    scan = device.type == "cuda" and compiled_selective_scan() is not None
    fused = scan and compiled_causal_conv1d() is not None and _hf_mamba_inner_is_compiled()
    return {
        "hf-mamba_ssm": "" if fused else "needs CUDA and compiled selective_scan_cuda + causal_conv1d",
        "reprflow-mamba_ssm-scan": "" if scan else "needs CUDA and compiled selective_scan_cuda",
        "reprflow-autograd": "",
        "hf-torch": "",
    }


def mamba1_train_path(device: torch.device) -> str:
    """The fastest Mamba-1 training path available on ``device``: the first available of
    ``hf-mamba_ssm``, ``reprflow-mamba_ssm-scan``, ``reprflow-autograd`` (module docstring)."""
    available = mamba1_path_availability(device)
    return next(p for p in MAMBA1_PATHS[:3] if not available[p])


def prepare_training(model: nn.Module, family: str, device: torch.device, *, path: str | None = None) -> str:
    """Install the training forward of ``family`` on ``model`` (in place) and return its path.

    Parameters
    ----------
    model : PreTrainedModel
        A freshly built model on ``device``.
    family : str
        ``gpt_neo``, ``gpt_neox``, ``mamba`` or ``mamba2``.
    device : torch.device
    path : str, optional
        Force a path (benchmarks): Mamba-1 one of :data:`MAMBA1_PATHS` (default
        :func:`mamba1_train_path`), GPT-Neo one of :data:`GPT_NEO_PATHS` (default
        ``reprflow-sdpa``).

    Returns
    -------
    str
        The Mamba-1 or GPT-Neo path, or ``"transformers"`` for the other families.
    """
    if family == "gpt_neo":
        path = path or GPT_NEO_PATHS[0]
        if path not in GPT_NEO_PATHS:
            raise ValueError(f"GPT-Neo training path {path!r}: use one of {list(GPT_NEO_PATHS)}")
        if path == "reprflow-sdpa":
            from reprflow.kernels.gpt_neo_attention import install_sdpa_attention

            install_sdpa_attention(model)
        return path
    if family != "mamba":
        return "transformers"
    path = path or mamba1_train_path(device)
    if path not in MAMBA1_PATHS:
        raise ValueError(f"Mamba-1 training path {path!r}: use one of {list(MAMBA1_PATHS)}")
    if path == "reprflow-autograd":
        if device.type == "cuda":
            logger.warning(
                "Mamba-1 trains through selective_scan_autograd on %s: launch-bound and memory-hungry "
                "(benchmarks/train_gpu.py); install mamba-ssm and causal-conv1d compiled for this GPU "
                "to train through their fused kernels",
                device,
            )
        install_mamba_train_forward(model)
    elif path == "reprflow-mamba_ssm-scan":
        from reprflow.kernels.ops import compiled_scan_time_major

        fn = compiled_selective_scan()
        if fn is None:
            raise RuntimeError("Mamba-1 path 'reprflow-mamba_ssm-scan' needs mamba_ssm's compiled selective_scan_cuda")
        install_mamba_train_forward(model, scan=compiled_scan_time_major(fn))
    elif path == "hf-mamba_ssm" and not _hf_mamba_inner_is_compiled():
        raise RuntimeError(
            "Mamba-1 path 'hf-mamba_ssm': transformers did not bind mamba_ssm's compiled "
            "mamba_inner_fn (is selective_scan_cuda / causal_conv1d importable?)"
        )
    return path


def describe_kernels(model: nn.Module, family: str, path: str) -> str:
    """One line naming the kernels a training step of ``model`` runs (for the log and summary)."""
    if family == "mamba":
        return {
            "hf-mamba_ssm": "Mamba-1: transformers' forward with mamba_ssm's compiled mamba_inner_fn (fused, backward compiled)",
            "reprflow-mamba_ssm-scan": "Mamba-1: reprflow mixer forward with mamba_ssm's compiled selective_scan_fn, torch conv",
            "reprflow-autograd": "Mamba-1: reprflow mixer forward with selective_scan_autograd (torch loop over tokens), torch conv",
            "hf-torch": "Mamba-1: transformers' torch fallback (per-token indexing, O(context^2) backward)",
        }[path]
    if family == "mamba2":
        from transformers.models.mamba2 import modeling_mamba2

        impl = hf_resolved_module(modeling_mamba2.mamba2_split_conv1d_scan_combined)
        return f"Mamba2: transformers' forward, split_conv1d_scan_combined from {impl}"
    if family == "gpt_neo" and path == "reprflow-sdpa":
        return "gpt_neo: transformers' forward, attention reprflow sdpa (flash global, band-masked local, scale 1)"
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None) or "eager"
    return f"{family}: transformers' forward, attention {attn}"
