"""Check that the captured ``hf`` view reproduces ``output_hidden_states`` on a real batch.

Discovery (:mod:`reprflow.models.discover`) finds the modules; which captured
states make up Hugging Face's ``hidden_states`` is a convention of each family
(``Layout.hf_records``). :func:`check_hf_view` compares the two on one batch and
stops with the model type and the first state that differs, so a wrong layout
never reaches a store. :func:`verify_hf_view` does both forwards on the first
rows of a batch (extraction calls it on its first batch)::

    verify_hf_view(model, input_ids, attention_mask, layout=layout)

which is ::

    captured = forward_states(model, ids, mask, layout=layout, token_rows=range(len(ids)))
    check_hf_view(model, layout, captured, hf_hidden_states(model, ids, layout=layout))

The reference forward is called exactly like
:func:`reprflow.capture.forward_states` calls the model (base model, no mask,
``use_cache=False``), so on one device the states are bitwise equal and the
default tolerance is zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from reprflow.capture import forward_states
from reprflow.errors import ReprflowError
from reprflow.models.layouts import LAYOUTS_FILE, Layout, get_layout, view_indices

__all__ = ["HfViewMismatchError", "check_hf_view", "hf_hidden_states", "verify_hf_view"]


class HfViewMismatchError(ReprflowError):
    """The hf view of a layout does not reproduce ``output_hidden_states``."""


def hf_hidden_states(model: nn.Module, input_ids: Tensor, *, layout: Layout | None = None) -> tuple[Tensor, ...]:
    """``output_hidden_states`` of the base model for one batch.

    Parameters
    ----------
    model : PreTrainedModel
        The ``*ForCausalLM`` model (or its base model).
    input_ids : Tensor of shape (batch, n_tokens)
        On the model's device; right padding is fine (causal models).
    layout : Layout, optional
        Only used to find the base model; defaults to ``model.base_model``.

    Returns
    -------
    tuple of Tensor, each of shape (batch, n_tokens, hidden)
        L + 1 entries for a family following one of the two conventions.
    """
    base = layout.base_model(model) if layout is not None else getattr(model, "base_model", model)
    with torch.inference_mode():
        out = base(input_ids=input_ids, use_cache=False, output_hidden_states=True)
    hidden = getattr(out, "hidden_states", None)
    if hidden is None:
        raise ReprflowError(
            f"model_type '{getattr(model.config, 'model_type', '?')}': {type(base).__name__} returned no "
            f"hidden_states for output_hidden_states=True, so its hf view cannot be checked"
        )
    return tuple(hidden)


def _max_diff(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _close(a: Tensor, b: Tensor, atol: float, rtol: float = 0.0) -> bool:
    """Bitwise equal when ``atol == rtol == 0``; else max|a - b| <= atol + rtol * max|b|."""
    if a.shape != b.shape:
        return False
    if atol == 0 and rtol == 0:
        return torch.equal(a, b)
    scale = float(b.double().abs().max()) if b.numel() else 0.0
    return _max_diff(a, b) <= atol + rtol * scale


def _pairs(captured: Any, hidden: Sequence[Tensor], j: int, k: int):
    """(got, want, where) per compared slice of hidden_states[j] vs captured state k."""
    ref = hidden[j]  # (batch, n_tokens, hidden)
    dtype = captured.last.dtype
    rows = torch.arange(ref.shape[0], device=ref.device)
    last_idx = captured.lengths.to(ref.device) - 1
    yield captured.last[k], ref[rows, last_idx].to(dtype), "last real token"
    tokens = getattr(captured, "tokens", None)
    if tokens is not None:
        for slot, r in enumerate(captured.token_rows):
            n = int(captured.lengths[r])
            yield tokens[k, slot, :n], ref[r, :n].to(dtype), f"all tokens of row {r}"


def _matches(
    captured: Any, hidden: Sequence[Tensor], j: int, k: int, atol: float, rtol: float = 0.0
) -> tuple[bool, float, str]:
    for got, want, where in _pairs(captured, hidden, j, k):
        if not _close(got, want.to(got.device), atol, rtol):
            return False, _max_diff(got, want.to(got.device)) if got.shape == want.shape else float("inf"), where
    return True, 0.0, ""


def check_hf_view(
    model: nn.Module,
    layout: Layout,
    captured: Any,
    hidden_states: Sequence[Tensor],
    *,
    atol: float = 0.0,
    rtol: float = 0.0,
) -> None:
    """Raise unless the layout's hf view equals ``output_hidden_states`` on this batch.

    Parameters
    ----------
    model : PreTrainedModel
        Gives the model type for messages.
    layout : Layout
        The layout the states were captured with.
    captured : CapturedBatch
        From :func:`reprflow.capture.forward_states` on the batch: ``last``
        (K_all, batch, hidden), ``lengths`` (batch,), ``state_names`` and, if
        token rows were requested, ``tokens`` (K_all, n_rows, n_tokens, hidden)
        with ``token_rows``.
    hidden_states : sequence of Tensor, each (batch, n_tokens, hidden)
        ``output_hidden_states`` of the same batch (:func:`hf_hidden_states`).
        They are cast to the captured dtype before comparing (lossless: Mamba's
        float32 residual promotes the captured states, never the reverse).
    atol, rtol : float
        Allowed difference ``atol + rtol * max|reference|``; both 0 (default) demand bitwise
        equality.

    Raises
    ------
    HfViewMismatchError
        A length mismatch, or the first hf-view entry whose captured state
        differs; the message names the model type, the entry, the state, the
        largest difference, which captured state (if any) it does equal, and
        the fix.
    """
    model_type = layout.model_type
    names = list(captured.state_names)
    n_blocks = len(names) - 2
    hf = view_indices(layout, n_blocks)["hf"]
    fix = f"fix OVERRIDES['{model_type}'] in {LAYOUTS_FILE}"
    if len(hidden_states) != len(hf):
        raise HfViewMismatchError(
            f"model_type '{model_type}': output_hidden_states has {len(hidden_states)} entries but the hf view "
            f"of {n_blocks} blocks has {len(hf)} ({[names[k] for k in hf]}); the block list '{layout.blocks}' "
            f"is not what HF records -- {fix} (blocks)"
        )
    for j, k in enumerate(hf):
        ok, diff, where = _matches(captured, hidden_states, j, k, atol, rtol)
        if ok:
            continue
        equal = [
            names[m] for m in range(len(names)) if m != k and _matches(captured, hidden_states, j, m, atol, rtol)[0]
        ]
        other = "block_outputs" if layout.hf_records == "block_inputs" else "block_inputs"
        other_ok = all(
            _matches(captured, hidden_states, jj, kk, atol, rtol)[0]
            for jj, kk in enumerate(view_indices(dataclasses.replace(layout, hf_records=other), n_blocks)["hf"])
        )
        field = "final_norm" if names[k] == "final_norm" else "blocks"
        hint = (
            f"the family records '{other}': add \"hf_records\": \"{other}\" to OVERRIDES['{model_type}'] "
            f"in {LAYOUTS_FILE}"
            if other_ok
            else f"{fix} ({field}: now '{getattr(layout, field)}')"
        )
        raise HfViewMismatchError(
            f"model_type '{model_type}': hf view entry {j} (captured state '{names[k]}', hf_records="
            f"'{layout.hf_records}') differs from output_hidden_states[{j}] ({where}: max |diff| = {diff:.3g}, "
            f"atol = {atol:g}); output_hidden_states[{j}] equals "
            f"{', '.join(repr(n) for n in equal) if equal else 'no captured state'}; {hint}"
        )


def verify_hf_view(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    layout: Layout | None = None,
    max_rows: int = 2,
    atol: float = 0.0,
    rtol: float = 0.0,
) -> None:
    """Capture the first ``max_rows`` rows of a batch and :func:`check_hf_view` them.

    Parameters
    ----------
    model : PreTrainedModel
    input_ids, attention_mask : Tensor of shape (batch, n_tokens)
        A right-padded batch on the model's device (e.g. extraction's first batch).
    layout : Layout, optional
        Defaults to ``get_layout(model)``.
    max_rows : int
        Rows checked (every token of each). Few rows keep the L + 1 full
        ``output_hidden_states`` tensors small: both forwards see the same
        (max_rows, n_tokens) input, so they are bitwise comparable.
    atol, rtol : float
        See :func:`check_hf_view` (``rtol`` is relative to the reference's max |x|).

    Raises
    ------
    HfViewMismatchError
        See :func:`check_hf_view`.
    """
    layout = get_layout(model) if layout is None else layout
    n = max(1, min(int(max_rows), input_ids.shape[0]))
    ids, mask = input_ids[:n], attention_mask[:n]
    captured = forward_states(model, ids, mask, layout=layout, token_rows=range(n))
    check_hf_view(model, layout, captured, hf_hidden_states(model, ids, layout=layout), atol=atol, rtol=rtol)
