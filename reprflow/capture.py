"""Capture the residual stream of a Hugging Face causal LM with scoped forward hooks.

Mechanism
---------
For a model with L blocks, reprflow captures ``K_all = L + 2`` named states
(:func:`state_names`), each read from the model's own modules so the numerics
are exactly Hugging Face's (nothing is re-implemented):

=============  ===========================================================
``embed``      input of block 1 (forward *pre*-hook; h⁰, embeddings incl.
               position embeddings and dropout where the family has them)
``block_i``    output of block i (forward hook; element 0 if it is a tuple)
``final_norm`` output of the final norm (forward hook)
=============  ===========================================================

Where the modules are comes from :mod:`reprflow.models.layouts` (keyed by
``config.model_type``); which captured states reproduce
``output_hidden_states`` is :func:`reprflow.models.layouts.view_indices`.

Why hooks and not ``output_hidden_states``
------------------------------------------
``output_hidden_states`` returns L + 1 full ``[batch, n_tokens, hidden]``
tensors in a family-dependent arrangement that never includes all of h⁰..h^L
plus the final norm, and it keeps every full tensor alive until the forward
ends. Hooks see each state once, and a ``keep`` callback slices it at once
(the last real token of every row, a few full rows), so only what is stored
ever survives the forward or leaves the device.

Hooks are global state on the modules: :func:`capture_states` registers them
on entry and removes them in ``finally``, also when the forward raises, and a
state seen twice in one context (a shared module, a second forward) is an
error rather than a silent overwrite.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reprflow.errors import ReprflowError
from reprflow.kernels.mamba_mixers import residual_in_place
from reprflow.models.layouts import Layout, get_layout
from reprflow.transfer import to_device

logger = logging.getLogger(__name__)

__all__ = [
    "CapturedBatch",
    "capture_states",
    "forward_states",
    "last_token_index",
    "state_names",
]

#: keep(name, hidden) -> what to retain for state ``name`` (None retains nothing);
#: ``hidden`` is the full state, shape (batch, n_tokens, hidden), on the model's device.
KeepFn = Callable[[str, Tensor], Any]


def state_names(n_blocks: int) -> list[str]:
    """Names of the K_all = L + 2 captured states, in depth order.

    Parameters
    ----------
    n_blocks : int
        Number of blocks L (>= 1).

    Returns
    -------
    list of str
        ``["embed", "block_1", ..., "block_L", "final_norm"]``.
    """
    if n_blocks < 1:
        raise ReprflowError(f"state_names: n_blocks must be >= 1, got {n_blocks}")
    return ["embed", *(f"block_{i}" for i in range(1, n_blocks + 1)), "final_norm"]


def _as_hidden(name: str, value: Any, layout: Layout) -> Tensor:
    """The (batch, n_tokens, hidden) tensor inside a hooked module's output."""
    if isinstance(value, tuple):
        value = value[0] if value else None
    if not isinstance(value, Tensor) or value.dim() != 3:
        got = type(value).__name__ if not isinstance(value, Tensor) else f"Tensor{tuple(value.shape)}"
        raise ReprflowError(
            f"capture of '{name}' for model_type '{layout.model_type}': expected a "
            f"(batch, n_tokens, hidden) tensor, got {got}; the layout in "
            f"reprflow/models/layouts.py no longer matches this transformers version"
        )
    return value


def _hook_modules(model: nn.Module, layout: Layout) -> list[tuple[str, nn.Module, str]]:
    """(state name, module, "input" | "output") for every captured state, in depth order."""
    blocks = layout.block_list(model)
    if len(blocks) == 0:
        raise ReprflowError(f"model_type '{layout.model_type}': block list '{layout.blocks}' is empty")
    points = [("embed", blocks[0], "input")]
    points += [(f"block_{i}", block, "output") for i, block in enumerate(blocks, start=1)]
    points.append(("final_norm", layout.final_norm_module(model), "output"))
    return points


@contextmanager
def capture_states(model: nn.Module, layout: Layout, keep: KeepFn) -> Iterator[dict[str, Any]]:
    """Register capture hooks for the duration of a ``with`` block.

    Parameters
    ----------
    model : nn.Module
        The ``*ForCausalLM`` model or its base model.
    layout : Layout
        From :func:`reprflow.models.layouts.get_layout`.
    keep : callable
        ``keep(name, hidden)`` with ``hidden`` of shape (batch, n_tokens,
        hidden); its return value is stored under ``name`` unless it is None.
        Slice here, so full states never outlive the hook.

    Yields
    ------
    dict
        ``name -> keep(name, hidden)``, filled during the forward pass run
        inside the block.

    Raises
    ------
    ReprflowError
        If a state is captured twice in one context, or a module's output is
        not a (batch, n_tokens, hidden) tensor.

    Notes
    -----
    The hooks are global state on the model's modules; they are removed in
    ``finally``, also when the forward pass raises. Run one forward per context.
    """
    kept: dict[str, Any] = {}
    seen: set[str] = set()

    def record(name: str, value: Any) -> None:
        if name in seen:
            raise ReprflowError(
                f"state '{name}' captured twice in one capture_states context (a module "
                f"shared between depths, or a second forward); run one forward per context"
            )
        seen.add(name)
        out = keep(name, _as_hidden(name, value, layout))
        if out is not None:
            kept[name] = out

    def input_hook(name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            record(name, args[0] if args else kwargs.get("hidden_states"))

        return hook

    def output_hook(name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if name.startswith("block_") and isinstance(output, tuple) != (layout.block_output == "tuple"):
                raise ReprflowError(
                    f"layout '{layout.model_type}' says blocks return a {layout.block_output} but "
                    f"'{name}' returned a {type(output).__name__}; update block_output in "
                    f"reprflow/models/layouts.py (and rerun tests/test_capture.py)"
                )
            record(name, output)

        return hook

    handles = []
    try:
        for name, module, where in _hook_modules(model, layout):
            if where == "input":
                handles.append(module.register_forward_pre_hook(input_hook(name), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(output_hook(name)))
        yield kept
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class CapturedBatch:
    """States of one batch, gathered on the model's device.

    Attributes
    ----------
    last : Tensor of shape (n_states, batch, hidden)
        State at the last real token of every row (K_all = L + 2 states).
    tokens : Tensor of shape (n_states, n_prompts, n_tokens, hidden) or None
        Full states of the rows in ``token_rows``; ``n_tokens`` is the longest
        of those rows, positions at or past a row's length are exactly zero.
        None when no rows were requested.
    lengths : Tensor of shape (batch,), int64
        Number of real tokens of every row.
    token_rows : tuple of int
        Batch rows held in ``tokens``, in order.
    state_names : tuple of str
        ``embed, block_1 .. block_L, final_norm``.
    """

    last: Tensor
    tokens: Tensor | None
    lengths: Tensor
    token_rows: tuple[int, ...]
    state_names: tuple[str, ...]

    def to(self, device: str | torch.device) -> CapturedBatch:
        """A copy with every tensor on ``device`` (e.g. ``"cpu"`` before writing)."""
        return CapturedBatch(
            last=self.last.to(device),
            tokens=None if self.tokens is None else self.tokens.to(device),
            lengths=self.lengths.to(device),
            token_rows=self.token_rows,
            state_names=self.state_names,
        )


def last_token_index(attention_mask: Tensor, *, check: bool = True) -> Tensor:
    """Position of the last real token of every right-padded row.

    Parameters
    ----------
    attention_mask : Tensor of shape (batch, n_tokens)
        1 for real tokens, 0 for padding; padding must be on the right.
    check : bool
        Verify the right padding. On a GPU that reads a flag back from the device, i.e.
        waits for it; pass False for a mask already checked on the host.

    Returns
    -------
    Tensor of shape (batch,), int64
        ``attention_mask.sum(1) - 1``.

    Raises
    ------
    ReprflowError
        If a row is empty or not right-padded (a 0 before a 1).
    """
    if attention_mask.dim() != 2:
        raise ReprflowError(f"attention_mask must be (batch, n_tokens), got shape {tuple(attention_mask.shape)}")
    mask = attention_mask != 0
    lengths = mask.sum(dim=1)
    if not check:
        return lengths - 1
    positions = torch.arange(mask.shape[1], device=mask.device)
    right_padded = positions[None, :] < lengths[:, None]  # (batch, n_tokens)
    bad = (right_padded != mask).any(dim=1) | (lengths == 0)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ReprflowError(
            f"attention_mask row {row} is empty or not right-padded (mask "
            f"{mask[row].int().tolist()[:16]}...); reprflow gathers the last real token at "
            f"mask.sum(1) - 1, so tokenize with padding_side='right'"
        )
    return lengths - 1


def forward_states(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    layout: Layout | None = None,
    token_rows: Sequence[int] | None = None,
    check_padding: bool = True,
    row_lengths: Sequence[int] | None = None,
) -> CapturedBatch:
    """Run one right-padded batch and return its captured states.

    Parameters
    ----------
    model : PreTrainedModel
        A ``*ForCausalLM`` model (or its base model) in eval mode.
    input_ids : Tensor of shape (batch, n_tokens), int64
    attention_mask : Tensor of shape (batch, n_tokens)
        Right padding (see :func:`last_token_index`).
    layout : Layout, optional
        Defaults to ``get_layout(model)``.
    token_rows : sequence of int, optional
        Batch rows whose full token states are returned in ``tokens``.
    check_padding : bool
        Verify the right padding (``last_token_index(check=...)``); a caller that checked
        the mask on the host passes False so that batches queue without a device sync.
    row_lengths : sequence of int, optional
        Real tokens of every row, as the caller that padded the batch knows them on the
        host (equal to ``attention_mask.sum(1)``). With it, cutting the ``token_rows`` to
        their longest length reads nothing back from the device (no sync per batch).

    Returns
    -------
    CapturedBatch
        On the model's device. The dtype is the promotion of the states'
        dtypes, usually the model's; Mamba and Mamba2 keep their residual in
        float32 (``residual_in_fp32``), so a bf16 Mamba gives float32 states
        (the bf16 embeddings are upcast losslessly).

    Notes
    -----
    Runs the *base* model (``model.base_model``) under ``torch.inference_mode``
    with ``use_cache=False`` and without ``output_hidden_states``, so the LM
    head's vocabulary projection is never computed; the hidden states are the
    same tensors the full model computes (the test suite checks ``torch.equal``
    against ``output_hidden_states``). Right padding is exact for causal
    models: a real token never attends to (or scans over) later positions.
    For the same reason ``attention_mask`` only locates each row's last real
    token and is *not* passed to the model: the states of real tokens do not
    depend on it, while passing it would cost a mask multiply per Mamba layer,
    keep SDPA off its fused causal kernel and make transformers read the mask
    back from the device. States at padded positions are never returned.
    """
    layout = get_layout(model) if layout is None else layout
    if input_ids.dim() != 2 or input_ids.shape != attention_mask.shape:
        raise ReprflowError(
            f"forward_states: input_ids {tuple(input_ids.shape)} and attention_mask "
            f"{tuple(attention_mask.shape)} must both be (batch, n_tokens)"
        )
    batch = input_ids.shape[0]
    rows = tuple(int(r) for r in (token_rows or ()))
    if any(not 0 <= r < batch for r in rows):
        raise ReprflowError(f"forward_states: token_rows {list(rows)} out of range for batch size {batch}")
    last_idx = last_token_index(attention_mask, check=check_padding)  # (batch,)
    lengths = last_idx + 1
    batch_idx = torch.arange(batch, device=input_ids.device)
    if rows:
        if row_lengths is not None:  # known on the host: no device read, no blocking copy
            max_len = max(int(row_lengths[r]) for r in rows)
            rows_t = to_device(torch.tensor(rows), input_ids.device)
        else:
            rows_t = torch.tensor(rows, device=input_ids.device)
            max_len = int(lengths[rows_t].max())
        pad = torch.arange(max_len, device=input_ids.device)[None, :] >= lengths[rows_t][:, None]

    def keep(name: str, hidden: Tensor) -> tuple[Tensor, Tensor | None]:
        last = hidden[batch_idx, last_idx]  # (batch, hidden)
        if not rows:
            return last, None
        tok = hidden[rows_t, :max_len].masked_fill(pad[..., None], 0)  # (n_prompts, n_tokens, hidden)
        return last, tok

    names = state_names(len(layout.block_list(model)))
    base = layout.base_model(model)
    # keep() copies what it keeps, so a block may add into its input in place (no copy of the
    # float32 residual per Mamba block; reprflow.kernels.mamba_mixers.residual_in_place)
    with torch.inference_mode(), capture_states(model, layout, keep) as kept, residual_in_place():
        base(input_ids=input_ids, use_cache=False)  # no mask: see Notes
    missing = [n for n in names if n not in kept]
    if missing:
        raise ReprflowError(
            f"model_type '{layout.model_type}': states {missing} were not captured during the "
            f"forward pass; the layout in reprflow/models/layouts.py does not match the model"
        )
    return CapturedBatch(
        last=torch.stack([kept[n][0] for n in names]),  # (n_states, batch, hidden)
        tokens=torch.stack([kept[n][1] for n in names]) if rows else None,
        lengths=lengths,
        token_rows=rows,
        state_names=tuple(names),
    )
