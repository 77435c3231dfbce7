"""The kernel ops of the Mamba families and their candidates (see :mod:`reprflow.kernels.select`).

=============  =====================================================  ============================
op             candidates (``REPRFLOW_KERNEL_<OP>=name``)             reference (float64 check)
=============  =====================================================  ============================
mamba_scan     ``triton`` (reprflow, time-major), ``gluon``           :func:`selective_scan_reference`
               (reprflow, time-major, explicit layout), ``mamba_ssm``
               (compiled ``selective_scan_fn`` + layout transposes),
               ``torch`` (per-token loop; fallback, never timed)
causal_conv    ``causal_conv1d`` (compiled ``causal_conv1d_fn``,      :func:`causal_conv1d_silu_reference`
               channel-last, on a dense copy), ``triton`` (reprflow),
               ``triton_tile`` (reprflow, tiled), ``torch``
               (``F.conv1d``)
mamba2_ssd     ``mamba_ssm`` (Triton ``mamba_chunk_scan_combined``),  :func:`reprflow.kernels.ssd.ssd_reference`
               ``fused_states`` (its stages with reprflow's fused
               chunk states), ``gluon`` (and reprflow's Gluon output
               kernel, sm_90; :mod:`reprflow.kernels.ssd_pipeline`),
               ``gluon_rows`` (its program per chunk and head),
               ``gluon_rows_cb16`` (the same, C B^T in 16 bits;
               ``GLUON_SSD_SHAPES``),
               ``torch`` (per-token loop; fallback, never timed)
=============  =====================================================  ============================

GPU-only candidates are offered only on CUDA and when their package imports; on CPU only
the torch candidates exist, so the choice is made without measuring.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor

from reprflow.kernels import triton_available
from reprflow.kernels.causal_conv1d import (
    CONV_BLOCKS_TILE,
    causal_conv1d_silu,
    causal_conv1d_silu_reference,
    causal_conv1d_silu_triton,
)
from reprflow.kernels.optional import MambaSsmKernels, compiled_causal_conv1d, compiled_selective_scan
from reprflow.kernels.select import Candidate, KernelOp
from reprflow.kernels.selective_scan import selective_scan, selective_scan_reference
from reprflow.kernels.selective_scan_gluon import gluon_available, selective_scan_gluon
from reprflow.kernels.ssd_chunk_scan_gluon import ssd_gluon_available
from reprflow.kernels.ssd import ssd_reference

__all__ = ["mamba_scan_op", "causal_conv_op", "mamba2_ssd_op", "compiled_scan_time_major", "OP_NAMES"]

OP_NAMES = ("mamba_scan", "causal_conv", "mamba2_ssd")
_ANY = ("cpu", "cuda")


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


# ---------------------------------------------------------------- Mamba-1 selective scan
def _scan_reference(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False) -> Tensor:
    return selective_scan_reference(
        u, delta, A, B, C, D, z, delta_bias=delta_bias, delta_softplus=delta_softplus, compute_dtype=torch.float64
    )


def compiled_scan_time_major(fn: Callable) -> Callable[..., Tensor]:
    """``mamba_ssm``'s channel-major ``selective_scan_fn`` behind the time-major signature
    (an autograd Function: training uses it too, :mod:`reprflow.training.kernels`)."""

    def scan(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False) -> Tensor:
        y = fn(
            u.transpose(1, 2),
            delta.transpose(1, 2),
            A,
            B.transpose(1, 2),
            C.transpose(1, 2),
            D,
            z=None if z is None else z.transpose(1, 2),
            delta_bias=delta_bias,
            delta_softplus=delta_softplus,
        )
        return y.transpose(1, 2)  # [batch, n_tokens, channels] view

    return scan


def mamba_scan_op(device: torch.device, *, report: dict, forced: str | None = None) -> KernelOp:
    """The Mamba-1 selective scan op (signature of :func:`selective_scan` without ``impl``)."""
    cands = []
    if device.type == "cuda" and triton_available():
        cands.append(
            Candidate(
                "triton",
                functools.partial(selective_scan, impl="triton"),
                "reprflow Triton selective scan (time-major, state in registers)",
            )
        )
    if device.type == "cuda" and gluon_available():
        cands.append(
            Candidate(
                "gluon",
                selective_scan_gluon,
                "reprflow Gluon selective scan (time-major, lane per channel, inputs staged in shared memory by cp.async)",
            )
        )
    compiled = compiled_selective_scan() if device.type == "cuda" else None
    if compiled is not None:
        cands.append(
            Candidate(
                "mamba_ssm",
                compiled_scan_time_major(compiled),
                f"mamba_ssm {_version('mamba_ssm')} selective_scan_cuda (compiled) + transposes",
            )
        )
    cands.append(
        Candidate(
            "torch",
            functools.partial(selective_scan, impl="torch"),
            "reprflow torch reference (Python loop over tokens)",
            devices=_ANY,
            timed=False,
        )
    )
    return KernelOp(
        "mamba_scan",
        _scan_reference,
        cands,
        time_major=("u", "delta", "B", "C", "z"),
        sizes=lambda a: (a["u"].shape[2], a["A"].shape[1], a.get("z") is not None),
        report=report,
        forced=forced,
        known=("triton", "gluon", "mamba_ssm", "torch", "hf"),
    )


# ---------------------------------------------------------------- causal conv + SiLU
def _compiled_conv_time_major(fn: Callable) -> Callable[..., Tensor]:
    """``causal_conv1d_fn`` on the channel-last view of a dense time-major tensor.

    The compiled channel-last kernel writes its output with the input's strides assumed
    dense (``torch.empty_like``); a strided view (``x`` sliced from the fused in_proj
    output) is therefore copied to a dense tensor first, and that copy is part of what
    the chooser measures.
    """

    def conv(x, weight, bias=None, *, mask=None) -> Tensor:
        dense = x if x.is_contiguous() else x.contiguous()
        y = fn(dense.transpose(1, 2), weight, bias, activation="silu").transpose(1, 2)
        if mask is not None:
            y = y * mask[:, :, None].to(y.dtype)
        return y.contiguous()

    return conv


def causal_conv_op(device: torch.device, *, report: dict, forced: str | None = None) -> KernelOp:
    """Depthwise causal conv + SiLU (signature of :func:`causal_conv1d_silu_reference`)."""
    cands = []
    compiled = compiled_causal_conv1d() if device.type == "cuda" else None
    if compiled is not None:
        cands.append(
            Candidate(
                "causal_conv1d",
                _compiled_conv_time_major(compiled),
                f"causal_conv1d {_version('causal_conv1d')} causal_conv1d_fn (compiled, channel-last)",
            )
        )
    if device.type == "cuda" and triton_available():
        cands.append(
            Candidate(
                "triton",
                functools.partial(causal_conv1d_silu, impl="triton"),
                "reprflow Triton causal conv + SiLU (time-major)",
            )
        )
        cands.append(
            Candidate(
                "triton_tile",
                functools.partial(causal_conv1d_silu_triton, tiled=True),
                f"reprflow Triton causal conv + SiLU (time-major), tiled: {CONV_BLOCKS_TILE} (tokens, channels, warps)",
            )
        )
    cands.append(
        Candidate(
            "torch", functools.partial(causal_conv1d_silu, impl="torch"), "torch F.conv1d (+ transposes)", devices=_ANY
        )
    )
    return KernelOp(
        "causal_conv",
        causal_conv1d_silu_reference,
        cands,
        time_major=("x", "mask"),
        sizes=lambda a: (a["x"].shape[2], a["weight"].shape[1], a.get("mask") is not None, a["x"].stride(1)),
        report=report,
        forced=forced,
        known=("causal_conv1d", "triton", "triton_tile", "torch"),
    )


# ---------------------------------------------------------------- Mamba-2 SSD
#: The Gluon output kernel's program shapes offered as candidates (arguments of ``chunk_scan_gluon``):
#: the fastest of each kind in ``benchmarks/ssd_chunks.py --output-kernel`` (H200, 2026-12-05: with
#: ``row_loop`` the C B^T tile loaded where it is used; ``head_pair`` slower at every shape, not offered)
#: ``gluon_rows_cb16``: the program per (batch, chunk, head) reading ``C B^T`` rounded to the input
#: dtype (half its L2 reads), each tile one step ahead (H100, 2026-12-05: the fastest output kernel,
#: 2-4% under the best float32 one; without the one-step-ahead load 22-25% slower)
GLUON_SSD_SHAPES: dict[str, dict[str, bool]] = {
    "gluon": {},
    "gluon_rows": {"row_loop": True, "prefetch_cb": False},
    "gluon_rows_cb16": {"row_loop": True, "prefetch_cb": True, "rounded_cb": True},
}


def mamba2_ssd_op(
    device: torch.device, kernels: MambaSsmKernels | None, *, report: dict, forced: str | None = None
) -> KernelOp:
    """The Mamba-2 SSD scan (signature of :func:`ssd_reference`)."""
    cands = []
    if kernels is not None:
        cands.append(
            Candidate(
                "mamba_ssm",
                kernels.chunk_scan_combined,
                f"mamba_ssm {kernels.version} Triton mamba_chunk_scan_combined",
                devices=("cuda",) if device.type == "cuda" else _ANY,
            )
        )
    if kernels is not None and device.type == "cuda" and triton_available():
        from reprflow.kernels.ssd_pipeline import tuned_ssd_combined

        if ssd_gluon_available(device):
            for name, shape in GLUON_SSD_SHAPES.items():
                program = "(batch, chunk, head)" if shape.get("row_loop") else "(batch, chunk, head, row block)"
                cb = ", C B^T in the input dtype" if shape.get("rounded_cb") else ""
                cands.append(
                    Candidate(
                        name,
                        tuned_ssd_combined(output="gluon", **shape),
                        f"mamba_ssm {kernels.version} SSD stages, reprflow's fused chunk states and Gluon wgmma "
                        f"output kernel (sm_90; one program per {program}{cb})",
                    )
                )
        cands.append(
            Candidate(
                "fused_states",
                tuned_ssd_combined(output="mamba_ssm"),
                f"mamba_ssm {kernels.version} SSD stages with reprflow's fused chunk states (one Triton kernel)",
            )
        )
    cands.append(
        Candidate(
            "torch", ssd_reference, "reprflow torch recurrence (Python loop over tokens)", devices=_ANY, timed=False
        )
    )
    return KernelOp(
        "mamba2_ssd",
        ssd_reference,
        cands,
        time_major=("x", "dt", "B", "C", "z"),
        sizes=lambda a: tuple(a["x"].shape[2:]) + (a["B"].shape[2], a["B"].shape[3]),
        report=report,
        forced=forced,
        known=("mamba_ssm", *GLUON_SSD_SHAPES, "fused_states", "torch", "hf"),
    )
