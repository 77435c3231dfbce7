"""Pick the fastest exact forward path for a loaded model, and say which one ran.

:func:`prepare_model` is called once on a model that is already on its device and in
its compute dtype (``reprflow.extract`` calls it before the first batch). It switches
modules in place, keyed by ``config.model_type``, and returns a small dict that the
caller records in the store attrs (``attrs["fastpath"]``) and the log:

============  ==========================================================================
family        what changes
============  ==========================================================================
gpt_neo       eager attention -> ``scaled_dot_product_attention`` (flash for global
              layers, band-masked for local ones; no 1/sqrt(d) scaling, as GPT-Neo);
              ``gelu_new`` -> the same tanh GELU as one torch kernel
gpt_neox      transformers' own ``sdpa`` attention (set if the model was loaded eager)
mamba         HF mixer -> time-major forward with a Triton causal conv and the Triton
              selective scan (or ``mamba_ssm``'s compiled ``selective_scan_fn``);
              RMSNorms -> one Triton pass each (same rounding order)
mamba2        HF mixer -> time-major forward with ``mamba_ssm``'s Triton SSD scan and
              gated RMSNorm, when ``mamba_ssm`` is installed; RMSNorms as Mamba
============  ==========================================================================

All families also get ``config.use_cache = False`` (extraction never decodes; the cache
path of the patched mixers falls back to HF's code). Anything else, or a CPU model for
the Mamba kernels, is left as transformers built it, and the dict says so.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from reprflow.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["prepare_model"]

_SCAN_CHOICES = ("auto", "triton", "torch", "hf")


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    p = next(model.parameters())
    return p.dtype, p.device


def _prepare_gpt_neo(model: nn.Module, report: dict[str, Any]) -> None:
    from reprflow.kernels.gpt_neo_attention import install_sdpa_attention

    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    n = 0
    if impl == "eager":
        n = install_sdpa_attention(model)
        report["attention"] = "sdpa (reprflow: flash global, masked local)" if n or _already(model) else impl
    else:
        report["attention"] = impl
    n_act = _fuse_gelu_new(model)
    if n_act or _already(model):
        report["mlp_activation"] = "torch gelu(approximate='tanh') (= gelu_new, one kernel)"
    report["patched_modules"] = n + n_act


def _fuse_gelu_new(model: nn.Module) -> int:
    """Swap HF's ``NewGELUActivation`` (about eight elementwise kernels) for the same
    tanh-approximated GELU in one kernel: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    n = 0
    for module in model.modules():
        for name, child in module.named_children():
            if type(child).__name__ == "NewGELUActivation":
                act = nn.GELU(approximate="tanh")
                act._reprflow_fastpath = True
                setattr(module, name, act)
                n += 1
    return n


def _already(model: nn.Module) -> bool:
    return any(getattr(m, "_reprflow_fastpath", False) for m in model.modules())


def _prepare_gpt_neox(model: nn.Module, report: dict[str, Any]) -> None:
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl == "eager" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("sdpa")
        impl = model.config._attn_implementation
    report["attention"] = impl


def _prepare_mamba(model: nn.Module, report: dict[str, Any], *, device: torch.device, scan: str) -> None:
    from reprflow.kernels import triton_available
    from reprflow.kernels.mamba_mixers import install_mamba_forward
    from reprflow.kernels.optional import compiled_selective_scan

    on_gpu = device.type == "cuda"
    if scan == "hf":
        report.update(scan="hf (transformers)", conv="hf (transformers)")
        return
    compiled = compiled_selective_scan() if on_gpu and scan == "auto" else None
    if compiled is not None:
        scan_impl, scan_name = "auto", "mamba_ssm selective_scan_cuda (compiled)"
    elif scan == "torch" or (scan == "auto" and not (on_gpu and triton_available())):
        if scan == "auto":  # CPU: HF's own path is as good as a torch loop; leave it
            report.update(scan="hf (transformers)", conv="hf (transformers)")
            return
        scan_impl, scan_name = "torch", "reprflow torch reference (python loop over tokens)"
    else:
        scan_impl, scan_name = "triton", "reprflow triton selective_scan"
    conv_impl = "triton" if on_gpu and triton_available() else "torch"
    n = install_mamba_forward(model, scan_impl=scan_impl, conv_impl=conv_impl, compiled_scan=compiled)
    n += _fuse_rms_norm(model, report, on_gpu=on_gpu)
    report.update(
        scan=scan_name,
        conv="reprflow triton causal_conv1d" if conv_impl == "triton" else "torch F.conv1d",
        patched_modules=n,
    )


def _fuse_rms_norm(model: nn.Module, report: dict[str, Any], *, on_gpu: bool) -> int:
    from reprflow.kernels import triton_available
    from reprflow.kernels.rms_norm import install_rms_norm

    if not (on_gpu and triton_available()):
        return 0
    n = install_rms_norm(model)
    report["norm"] = "reprflow triton rms_norm (HF rounding order)"
    return n


def _prepare_mamba2(model: nn.Module, report: dict[str, Any], *, device: torch.device, scan: str) -> None:
    from reprflow.kernels import triton_available
    from reprflow.kernels.mamba_mixers import install_mamba2_forward
    from reprflow.kernels.optional import load_mamba_ssm_triton

    kernels = load_mamba_ssm_triton() if device.type == "cuda" and scan in ("auto", "triton") else None
    if kernels is None:
        if device.type == "cuda" and scan != "hf":
            logger.warning(
                "Mamba-2 on GPU without mamba_ssm: transformers' torch SSD path is slow and needs "
                "~20 GB per (batch x 1K tokens); install mamba-ssm as envs/gpu.yaml describes"
            )
        report.update(scan="hf (transformers)", conv="hf (transformers)")
        return
    conv_impl = "triton" if triton_available() else "torch"
    n = install_mamba2_forward(model, kernels=kernels, conv_impl=conv_impl)
    n += _fuse_rms_norm(model, report, on_gpu=True)
    report.update(
        scan=f"mamba_ssm {kernels.version} triton mamba_chunk_scan_combined",
        gated_norm="mamba_ssm triton rmsnorm_fn (norm_before_gate=False)",
        conv="reprflow triton causal_conv1d" if conv_impl == "triton" else "torch F.conv1d",
        mamba_ssm_bare_import=kernels.bare_package,
        patched_modules=n,
    )


def prepare_model(model: nn.Module, *, scan: str = "auto") -> dict[str, Any]:
    """Switch ``model`` to its fast forward path in place and report what was chosen.

    Parameters
    ----------
    model : PreTrainedModel
        A transformers causal LM (or base model), already on its device and dtype.
    scan : {"auto", "triton", "torch", "hf"}
        Mamba/Mamba-2 scan choice. ``"auto"``: the fastest available (compiled
        ``mamba_ssm`` > reprflow Triton for Mamba-1; ``mamba_ssm`` Triton for Mamba-2) on
        CUDA, transformers' own path on CPU. ``"torch"`` forces reprflow's torch reference
        scan for Mamba-1 (tests); ``"hf"`` leaves the mixers untouched.

    Returns
    -------
    dict
        JSON-serialisable: ``family`` (``config.model_type``), ``attention``, ``scan``,
        ``conv``, ``compute_dtype``, ``device``, ``use_cache`` and, where modules were
        switched, ``patched_modules``; GPT-Neo adds ``mlp_activation``; Mamba/Mamba-2 on
        CUDA add ``norm``; Mamba-2 adds ``gated_norm`` and ``mamba_ssm_bare_import``.

    Raises
    ------
    ConfigError
        A GPT-Neo or GPT-NeoX model in float16 (both overflow in float16; use bfloat16
        or float32), or an unknown ``scan``.

    Notes
    -----
    Calling it twice is harmless (switched modules are marked). The switched GPT-Neo
    attention drops the padding mask for right-padded batches, which is exact for every
    real token (see :mod:`reprflow.kernels.gpt_neo_attention`).
    """
    if scan not in _SCAN_CHOICES:
        raise ConfigError(f"prepare_model: scan must be one of {_SCAN_CHOICES}, got {scan!r}")
    config = model.config
    family = str(getattr(config, "model_type", "unknown"))
    dtype, device = _model_dtype_device(model)
    if family in ("gpt_neo", "gpt_neox") and dtype == torch.float16:
        raise ConfigError(
            f"model_type '{family}' in float16: its activations overflow float16 on long inputs "
            f"(ARCHITECTURE.md §4); load it in bfloat16 (GPU) or float32"
        )
    report: dict[str, Any] = {
        "family": family,
        "attention": getattr(config, "_attn_implementation", None) or "none",
        "scan": "none",
        "conv": "none",
        "compute_dtype": str(dtype).removeprefix("torch."),
        "device": device.type,
    }
    config.use_cache = False
    report["use_cache"] = False
    if family == "gpt_neo":
        _prepare_gpt_neo(model, report)
    elif family == "gpt_neox":
        _prepare_gpt_neox(model, report)
    elif family == "mamba":
        report["attention"] = "none"
        _prepare_mamba(model, report, device=device, scan=scan)
    elif family == "mamba2":
        report["attention"] = "none"
        _prepare_mamba2(model, report, device=device, scan=scan)
    logger.info("fast path for %s: %s", family, report)
    return report
