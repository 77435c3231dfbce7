"""Mamba-2's SSD forward assembled from ``mamba_ssm``'s stages and reprflow's kernels.

``mamba_ssm``'s ``mamba_chunk_scan_combined`` runs five Triton kernels per layer: the within-chunk
cumulative decay (``_chunk_cumsum_fwd``), each chunk's state (``_chunk_state_fwd``), the states
passed between chunks (``_state_passing_fwd``), ``C B^T`` within each chunk (``_bmm_chunk_fwd``)
and the output (``_chunk_scan_fwd``). :func:`ssd_combined` runs the same forward with two of them
replaceable:

* ``fused_states``: the chunk states and their passing in one kernel
  (:func:`reprflow.kernels.ssd_states.chunk_states_passed`: no float32 states in memory);
* ``output="gluon"``: the output on Hopper's warpgroup MMA
  (:func:`reprflow.kernels.ssd_chunk_scan_gluon.chunk_scan_gluon`, sm_90 only), or
  ``output="mamba_ssm"``: ``mamba_ssm``'s own output kernel.

The kernel chooser offers the combinations as candidates of ``mamba2_ssd``
(``reprflow/kernels/ops.py``), so each is kept only where it is measured faster and passes the
float64 check. What the replacements do not take (autograd, dtypes other than bf16/fp16, a gate
``z`` for the Gluon output, shapes outside their limits) runs ``mamba_ssm``'s whole forward.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from torch import Tensor

__all__ = ["SsdStages", "ssd_combined", "ssd_stages", "tuned_ssd_combined"]


class SsdStages(NamedTuple):
    """What the SSD's output kernel reads (``mamba_ssm``'s conventions).

    ``x`` (batch, n_tokens, heads, head_dim) and ``C`` (batch, n_tokens, groups, d_state) with unit
    stride on their last axis; ``cb`` (batch, n_chunks, groups, chunk, chunk) float32 (or ``x``'s
    dtype, ``rounded_cb``), ``C_m . B_k`` within each chunk; ``dt`` (after bias and softplus) and ``dA_cumsum`` (batch, heads, n_chunks,
    chunk) float32; ``states`` (batch, n_chunks, heads, head_dim, d_state) in ``C``'s dtype, the
    state entering each chunk.
    """

    x: Tensor
    C: Tensor
    cb: Tensor
    dt: Tensor
    dA_cumsum: Tensor
    states: Tensor


def ssd_stages(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    *,
    fused_states: bool = True,
    rounded_cb: bool = False,
) -> SsdStages:
    """The SSD's stages before its output kernel: ``mamba_ssm``'s chunk cumsum and ``C B^T`` (float32,
    or with ``rounded_cb`` in ``x``'s dtype), and the chunk states passed between chunks by reprflow's
    one kernel (``fused_states``; the sizes of :func:`~reprflow.kernels.ssd_states.chunk_states_supported`)
    or by ``mamba_ssm``'s two. Arguments as for :func:`ssd_combined`; inference only (no autograd)."""
    import torch
    from mamba_ssm.ops.triton.ssd_bmm import _bmm_chunk_fwd
    from mamba_ssm.ops.triton.ssd_chunk_state import _chunk_cumsum_fwd, _chunk_state_fwd
    from mamba_ssm.ops.triton.ssd_state_passing import _state_passing_fwd

    from reprflow.kernels.ssd_states import chunk_states_passed

    batch, n_tokens, heads, head_dim = x.shape
    d_state = B.shape[-1]
    B = B if B.stride(-1) == 1 else B.contiguous()
    C = C if C.stride(-1) == 1 else C.contiguous()
    x = x if x.stride(-1) == 1 else x.contiguous()
    dA_cumsum, dt_c = _chunk_cumsum_fwd(dt, A, chunk_size, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit)
    if fused_states:
        states = chunk_states_passed(x, B, dt_c, dA_cumsum, out_dtype=C.dtype)
    else:
        states = _chunk_state_fwd(B, x, dt_c, dA_cumsum, states_in_fp32=True)
        n_chunks = math.ceil(n_tokens / chunk_size)
        states, _ = _state_passing_fwd(
            states.view(batch, n_chunks, heads, head_dim * d_state), dA_cumsum[:, :, :, -1], out_dtype=C.dtype
        )
        states = states.view(batch, n_chunks, heads, head_dim, d_state)
    cb = _bmm_chunk_fwd(C, B, chunk_size, output_dtype=x.dtype if rounded_cb else torch.float32)
    return SsdStages(x, C, cb, dt_c, dA_cumsum, states)


def ssd_combined(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    *,
    output: str = "gluon",
    fused_states: bool = True,
    row_loop: bool = False,
    head_pair: bool = False,
    prefetch_cb: bool = True,
    rounded_cb: bool = False,
) -> Tensor:
    """``mamba_chunk_scan_combined``'s forward (signature of :func:`reprflow.kernels.ssd.ssd_reference`)
    with reprflow's kernels where asked.

    Parameters
    ----------
    x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus, dt_limit
        As for ``mamba_chunk_scan_combined``: ``x`` (batch, n_tokens, heads, head_dim), ``dt``
        (batch, n_tokens, heads), ``A`` (heads,), ``B`` and ``C`` (batch, n_tokens, groups, d_state).
    output : {"gluon", "mamba_ssm"}
        The output kernel: reprflow's Gluon one (sm_90) or ``mamba_ssm``'s.
    fused_states : bool
        Chunk states and their passing in reprflow's one kernel (else ``mamba_ssm``'s two).
    row_loop, head_pair, prefetch_cb : bool
        The Gluon output kernel's program shape (:func:`~reprflow.kernels.ssd_chunk_scan_gluon.chunk_scan_gluon`);
        only with ``output="gluon"``.
    rounded_cb : bool
        ``C B^T`` stored in ``x``'s dtype instead of float32 (half of what the Gluon output kernel's
        programs read again from L2; one more rounding than ``mamba_ssm``'s); only with ``output="gluon"``.

    Returns
    -------
    Tensor of shape (batch, n_tokens, heads, head_dim), dtype of ``x``
    """
    import torch
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    from reprflow.kernels.ssd_chunk_scan_gluon import chunk_scan_gluon, chunk_scan_gluon_supported
    from reprflow.kernels.ssd_states import chunk_states_supported

    if output not in ("gluon", "mamba_ssm"):
        raise ValueError(f"ssd_combined: output {output!r}; expected 'gluon' or 'mamba_ssm'")
    if output != "gluon" and (row_loop or head_pair or not prefetch_cb or rounded_cb):
        raise ValueError(
            "ssd_combined: row_loop, head_pair, prefetch_cb and rounded_cb shape the Gluon output kernel; "
            "output is 'mamba_ssm'"
        )
    d_state = B.shape[-1]
    ours = (
        x.dtype in (torch.bfloat16, torch.float16)
        and not (torch.is_grad_enabled() and x.requires_grad)
        and (not fused_states or chunk_states_supported(x.shape[-1], d_state))
        and (output == "mamba_ssm" or (z is None and chunk_scan_gluon_supported(x, chunk_size, d_state)))
    )
    if not ours:
        return mamba_chunk_scan_combined(
            x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit
        )
    from mamba_ssm.ops.triton.ssd_chunk_scan import _chunk_scan_fwd

    st = ssd_stages(
        x,
        dt,
        A,
        B,
        C,
        chunk_size,
        dt_bias=dt_bias,
        dt_softplus=dt_softplus,
        dt_limit=dt_limit,
        fused_states=fused_states,
        rounded_cb=rounded_cb,
    )
    if output == "gluon":
        return chunk_scan_gluon(
            st.cb,
            st.x,
            st.dt,
            st.dA_cumsum,
            st.C,
            st.states,
            D,
            row_loop=row_loop,
            head_pair=head_pair,
            prefetch_cb=prefetch_cb,
        )
    return _chunk_scan_fwd(st.cb, st.x, st.dt, st.dA_cumsum, st.C, st.states, D=D, z=z)[0]


def tuned_ssd_combined(**options):
    """:func:`ssd_combined` with ``options`` (``output=``, ``fused_states=``, and the output kernel's
    ``row_loop=``, ``head_pair=``, ``prefetch_cb=``, ``rounded_cb=``), its ``mamba_ssm``
    stages autotuned per size class (:class:`~reprflow.kernels.autotune_by_size.AutotuneBySize`):
    how the kernel chooser runs each candidate (``reprflow/kernels/ops.py``), and how a benchmark
    should time it."""
    import functools

    from reprflow.kernels.autotune_by_size import AutotuneBySize, ssd_autotuners

    return AutotuneBySize(functools.partial(ssd_combined, **options), ssd_autotuners())
