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
              ``gelu_new`` -> the same tanh GELU as one torch kernel; on CUDA each MLP's
              ``c_fc`` + GELU as one cuBLASLt GEMM (:mod:`reprflow.kernels.gelu_mlp`)
gpt_neox      transformers' own ``sdpa`` attention (set if the model was loaded eager); on CUDA
              the partial rotary embedding of q and k (in place in ``qkv``), and the
              parallel residual's two adds, each in one Triton pass (same values), and its
              two LayerNorms of one input in one pass (:mod:`reprflow.kernels.gpt_neox`)
mamba         HF mixer -> time-major forward whose causal conv and selective scan are
              :mod:`reprflow.kernels.ops` ops: each picks the fastest correct candidate
              (reprflow Triton, compiled mamba_ssm / causal_conv1d, torch) at first
              use per shape class; RMSNorms -> one Triton pass each (same rounding order);
              ``out_proj`` + the float32 residual add as one GEMM (on CUDA)
mamba2        HF mixer -> time-major forward with the conv op, the SSD op (mamba_ssm's
              Triton SSD scan, tuned per size class) and reprflow's one-pass gated
              RMSNorm (transformers' rounding order), when ``mamba_ssm`` is installed;
              RMSNorms and ``out_proj`` + residual as Mamba
============  ==========================================================================

All families also get ``config.use_cache = False`` (extraction never decodes; the cache
path of the patched mixers falls back to HF's code). Anything else, or a CPU model for
the Mamba kernels, is left as transformers built it, and the dict says so. How kernels
are chosen, and how to force one (``REPRFLOW_KERNEL_<OP>``), is in docs/kernels.md.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from reprflow.errors import ConfigError
from reprflow.kernels.fallback_notice import note_device, note_model
from reprflow.kernels.select import env_var, forced_name

logger = logging.getLogger(__name__)

__all__ = ["prepare_model"]

_SCAN_CHOICES = ("auto", "triton", "torch", "hf")
HF_MIXERS = "hf (transformers)"  # the report's scan and conv where transformers' own mixers stay


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    p = next(model.parameters())
    return p.dtype, p.device


_ATTENTION_WHY = (
    "preference: SDPA (flash / memory-efficient kernels) over eager, measured by "
    "benchmarks/kernels.py (rows 'hf naive' vs 'hf best')"
)


def _attention_choice(forced: dict[str, str]) -> str:
    want = forced_name("attention", forced.get("attention")) or "sdpa"
    if want not in ("sdpa", "eager"):
        raise ConfigError(
            f"{env_var('attention')} (or prepare_model(kernels={{'attention': ...}})) = {want!r}: choose 'sdpa', 'eager' or 'auto'"
        )
    return want


def _prepare_gpt_neo(model: nn.Module, report: dict[str, Any], forced: dict[str, str]) -> None:
    from reprflow.kernels import triton_available
    from reprflow.kernels.gpt_neo_attention import install_sdpa_attention

    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    n = 0
    want = _attention_choice(forced)
    report["why"] = "forced" if forced_name("attention", forced.get("attention")) else _ATTENTION_WHY
    # local layers: reprflow's Triton sliding-window kernel (CUDA) or SDPA with HF's dense band mask
    local = forced_name("local_attention", forced.get("local_attention"))
    triton_ok = next(model.parameters()).is_cuda and triton_available()
    if local not in (None, "triton", "sdpa") or (local == "triton" and not triton_ok):
        raise ConfigError(
            f"{env_var('local_attention')} (or prepare_model(kernels={{'local_attention': ...}})) = {local!r}: choose 'triton' "
            "(needs a CUDA model and Triton), 'sdpa' or 'auto'"
        )
    local = local or ("triton" if triton_ok else "sdpa")
    if want == "eager":
        report["attention"] = impl
    elif impl == "eager":
        n = install_sdpa_attention(model, local_kernel=local)
        report["attention"] = "sdpa (reprflow: flash global, masked local)" if n or _already(model) else impl
        if n or _already(model):
            report["local_attention"] = (
                "triton sliding window (reprflow)" if local == "triton" else "sdpa (dense band mask)"
            )
    else:
        report["attention"] = impl
    n_act = _fuse_gelu_new(model, fuse_gemm=report["fusions"] == "on")
    if any(getattr(m, "_reprflow_fused_mlp", False) for m in model.modules()):
        report["mlp_activation"] = "c_fc + gelu_new in one cuBLASLt GEMM (bias + tanh GELU epilogue)"
    elif n_act or _already(model):
        report["mlp_activation"] = "torch gelu(approximate='tanh') (= gelu_new, one kernel)"
    report["patched_modules"] = n + n_act


def _fuse_gelu_new(model: nn.Module, *, fuse_gemm: bool = True) -> int:
    """Swap HF's ``NewGELUActivation`` (about eight elementwise kernels) for the same
    tanh-approximated GELU in one kernel: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``;
    on CUDA, also run each MLP's ``c_fc`` and that GELU as one GEMM."""
    n = 0
    for module in model.modules():
        for name, child in module.named_children():
            if type(child).__name__ == "NewGELUActivation":
                act = nn.GELU(approximate="tanh")
                act._reprflow_fastpath = True
                setattr(module, name, act)
                n += 1
    if fuse_gemm and next(model.parameters()).is_cuda:  # c_fc + GELU as one GEMM (kernels/gelu_mlp.py)
        from reprflow.kernels.gelu_mlp import install_fused_gelu_mlp

        n += install_fused_gelu_mlp(model)
    return n


def _already(model: nn.Module) -> bool:
    return any(getattr(m, "_reprflow_fastpath", False) for m in model.modules())


def _prepare_gpt_neox(model: nn.Module, report: dict[str, Any], forced: dict[str, str]) -> None:
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    want = _attention_choice(forced)
    report["why"] = "forced" if forced_name("attention", forced.get("attention")) else _ATTENTION_WHY
    if want == "eager" and impl != "eager" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
        impl = model.config._attn_implementation
    if want == "sdpa" and impl == "eager" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("sdpa")
        impl = model.config._attn_implementation
    report["attention"] = impl
    if report["fusions"] == "on" and next(model.parameters()).is_cuda:
        from reprflow.kernels import triton_available
        from reprflow.kernels.gpt_neox import install_gpt_neox_forward

        if triton_available():
            report["patched_modules"] = install_gpt_neox_forward(model)
            report["rotary"] = "reprflow triton rotary_qk_ (in place in qkv, one pass; equal to transformers')"
            report["residual"] = "reprflow triton add3 (mlp + attn + residual in one pass; equal)"
            report["norms"] = "reprflow triton layer_norm_pair (both LayerNorms of h in one pass)"


def _prepare_mamba(model: nn.Module, report: dict[str, Any], *, device: torch.device, forced: dict[str, str]) -> None:
    from reprflow.kernels.mamba_mixers import install_mamba_forward
    from reprflow.kernels.ops import causal_conv_op, mamba_scan_op

    on_gpu = device.type == "cuda"
    if forced_name("mamba_scan", forced.get("mamba_scan")) == "hf":
        report.update(scan=HF_MIXERS, conv=HF_MIXERS, why="forced")
        return
    # CPU too: reprflow's torch path (a token loop over contiguous (batch, channels, d_state)
    # slices) runs a forward in about half the CPU time of transformers' slow_forward, which reads
    # one strided token slice of an all-token tensor per step (benchmarks/cpu_mamba.py)
    chosen = report.setdefault("kernels", {})  # filled at first use, per shape class
    scan = mamba_scan_op(device, report=chosen, forced=forced.get("mamba_scan"))
    conv = causal_conv_op(device, report=chosen, forced=forced.get("causal_conv"))
    n = install_mamba_forward(model, scan_impl=scan, conv_impl=conv)
    n += _fuse_rms_norm(model, report, on_gpu=on_gpu)
    report.update(scan=_offer(scan), conv=_offer(conv), why="per op and shape class: see 'kernels'", patched_modules=n)


def _offer(op) -> str:
    """What the report says before the first call: the candidates the op will choose among."""
    want = forced_name(op.name, op.forced)
    names = [c.name for c in op.candidates]
    return f"{want} (forced)" if want else f"chosen at first use among {names} (see 'kernels')"


def _fuse_rms_norm(model: nn.Module, report: dict[str, Any], *, on_gpu: bool) -> int:
    from reprflow.kernels import triton_available
    from reprflow.kernels.rms_norm import install_rms_norm

    if not (on_gpu and triton_available()):
        return 0
    fuse = report["fusions"] == "on"
    n = install_rms_norm(model, fuse_residual=fuse)
    report["norm"] = "reprflow triton rms_norm (HF rounding order)"
    if fuse:
        report["residual"] = "out_proj + float32 residual in one GEMM (addmm, out_dtype=float32)"
    return n


def _prepare_mamba2(model: nn.Module, report: dict[str, Any], *, device: torch.device, forced: dict[str, str]) -> None:
    from reprflow.kernels.mamba_mixers import install_mamba2_forward
    from reprflow.kernels.ops import causal_conv_op, mamba2_ssd_op
    from reprflow.kernels.optional import load_mamba_ssm_triton

    want = forced_name("mamba2_ssd", forced.get("mamba2_ssd"))
    kernels = load_mamba_ssm_triton() if device.type == "cuda" and want != "hf" else None
    if kernels is None:
        if device.type == "cuda" and want != "hf":
            logger.warning(
                "Mamba-2 on GPU without mamba_ssm: transformers' torch SSD path is slow and needs "
                "~20 GB per (batch x 1K tokens); install mamba-ssm as envs/gpu.yaml describes"
            )
        report.update(
            scan=HF_MIXERS,
            conv=HF_MIXERS,
            why="forced" if want == "hf" else f"no mamba_ssm Triton kernels on {device.type}",
        )
        return
    chosen = report.setdefault("kernels", {})
    ssd = mamba2_ssd_op(device, kernels, report=chosen, forced=forced.get("mamba2_ssd"))
    conv = causal_conv_op(device, report=chosen, forced=forced.get("causal_conv"))
    n = install_mamba2_forward(model, kernels=kernels, conv_impl=conv, ssd=ssd)
    n += _fuse_rms_norm(model, report, on_gpu=True)
    report.update(
        scan=_offer(ssd),
        gated_norm="reprflow triton gated_rms_norm (HF rounding order)",
        conv=_offer(conv),
        mamba_ssm_bare_import=kernels.bare_package,
        why="per op and shape class: see 'kernels'",
        patched_modules=n,
    )


def _fusions_wanted(fuse: bool | None) -> bool:
    """``fuse`` if given, else ``REPRFLOW_FUSE`` (on unless 0/off/false/no)."""
    if fuse is not None:
        return bool(fuse)
    value = os.environ.get("REPRFLOW_FUSE", "1").strip().lower()
    if value in ("1", "on", "true", "yes", ""):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ConfigError(f"REPRFLOW_FUSE={value!r}: use 1/on or 0/off")


def _forced_kernels(kernels: dict[str, str] | None, scan: str) -> dict[str, str]:
    """Merge ``prepare_model``'s ``kernels`` and legacy ``scan`` arguments; validate op names."""
    from reprflow.kernels.ops import OP_NAMES

    forced = dict(kernels or {})
    ops = (*OP_NAMES, "attention", "local_attention")
    for op in forced:
        if op not in ops:
            raise ConfigError(f"prepare_model(kernels={{{op!r}: ...}}): unknown op; known ops are {list(ops)}")
    if scan != "auto":
        forced.setdefault("mamba_scan", scan)
        forced.setdefault("mamba2_ssd", "hf" if scan == "hf" else "auto")
    return forced


def prepare_model(
    model: nn.Module, *, scan: str = "auto", kernels: dict[str, str] | None = None, fuse: bool | None = None
) -> dict[str, Any]:
    """Switch ``model`` to its fast forward path in place and report what was chosen.

    Parameters
    ----------
    model : PreTrainedModel
        A transformers causal LM (or base model), already on its device and dtype.
    scan : {"auto", "triton", "torch", "hf"}
        Shorthand for ``kernels={"mamba_scan": scan}``; ``"hf"`` leaves the Mamba and
        Mamba-2 mixers as transformers built them.
    kernels : dict, optional
        ``{op: name | "auto"}`` forcing the kernel of an op (``mamba_scan``,
        ``causal_conv``, ``mamba2_ssd``, ``attention``, ``local_attention``; names in
        docs/kernels.md).
        Unset ops read ``REPRFLOW_KERNEL_<OP>`` from the environment, else choose
        themselves (:mod:`reprflow.kernels.select`): on CUDA the fastest candidate that
        matches the float64 reference, measured at first use per shape class; on CPU
        the torch path, without measuring (reprflow's for Mamba-1, transformers' own for
        Mamba-2, unless a kernel is forced).
    fuse : bool, optional
        Fuse elementwise steps into their neighbours on CUDA (default; ``REPRFLOW_FUSE=0``
        in the environment turns it off): GPT-NeoX's rotary embedding and parallel
        residual (same values) and its two LayerNorms of one input in one pass (statistics
        not Welford's: within one rounding of the model dtype), GPT-Neo's ``c_fc`` + GELU
        and the Mamba blocks' ``out_proj`` + float32 residual (one GEMM each, rounded once
        instead of twice, so closer to float64 than transformers' order; docs/kernels.md).
        ``False`` keeps transformers' rounding order everywhere.

    Returns
    -------
    dict
        JSON-serialisable: ``family`` (``config.model_type``), ``attention``, ``scan``,
        ``conv``, ``why``, ``compute_dtype``, ``device``, ``use_cache``, ``fusions``
        (``"on"``/``"off"``) and, where modules were switched, ``patched_modules``; GPT-Neo
        adds ``mlp_activation`` and ``local_attention``; GPT-NeoX on CUDA ``rotary``,
        ``residual`` and ``norms``; Mamba/Mamba-2 on CUDA add ``norm`` (and ``residual`` with fusions on);
        Mamba-2 adds ``gated_norm`` and ``mamba_ssm_bare_import``.
        Patched Mamba/Mamba-2 models add ``kernels``, a dict the ops fill at their first
        call: ``kernels[op]["<dtype> <shape class>"] = {kernel, origin, reason,
        check_rel_err, ms}``; the caller records the dict after the run (store attrs).

    Raises
    ------
    ConfigError
        A GPT-Neo or GPT-NeoX model in float16 (both overflow in float16; use bfloat16
        or float32), an unknown ``scan``, op or kernel name.

    Notes
    -----
    Calling it twice is harmless (switched modules are marked). The switched GPT-Neo
    attention drops the padding mask for right-padded batches, which is exact for every
    real token (see :mod:`reprflow.kernels.gpt_neo_attention`).
    """
    if scan not in _SCAN_CHOICES:
        raise ConfigError(f"prepare_model: scan must be one of {_SCAN_CHOICES}, got {scan!r}")
    forced = _forced_kernels(kernels, scan)
    config = model.config
    family = str(getattr(config, "model_type", "unknown"))
    dtype, device = _model_dtype_device(model)
    note_device(device)  # a kernel fallback on CPU is expected, on CUDA it is worth a warning
    if family in ("gpt_neo", "gpt_neox") and dtype == torch.float16:
        raise ConfigError(
            f"model_type '{family}' in float16: its activations overflow float16 on long inputs; "
            f"load it in bfloat16 (GPU) or float32"
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
    report["fusions"] = "on" if _fusions_wanted(fuse) else "off"
    if family == "gpt_neo":
        _prepare_gpt_neo(model, report, forced)
    elif family == "gpt_neox":
        _prepare_gpt_neox(model, report, forced)
    elif family == "mamba":
        report["attention"] = "none"
        _prepare_mamba(model, report, device=device, forced=forced)
    elif family == "mamba2":
        report["attention"] = "none"
        _prepare_mamba2(model, report, device=device, forced=forced)
    note_model(model)  # transformers' fallback warning is true only if its SSM mixers stay
    logger.info("fast path for %s: %s", family, report)
    return report
