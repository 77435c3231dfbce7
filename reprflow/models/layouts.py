"""Per-family module layouts, keyed by ``config.model_type``.

A :class:`Layout` tells :mod:`reprflow.capture` where the residual stream of a
Hugging Face causal LM can be read with forward hooks, and which of the
``K_all = L + 2`` captured states reproduce ``output_hidden_states``:

    index   0        1         ...   L         L + 1
    state   embed    block_1   ...   block_L   final_norm

* ``embed`` (h⁰) is the *input of block 1*, read by a forward pre-hook. This is
  the same tensor for every family (for GPT-2/GPT-Neo it is ``drop(wte + wpe)``,
  for Mamba the raw token embedding), so no family needs its own embedding sum.
* ``block_i`` is the output of block ``i`` (the residual stream after it); for
  families whose blocks return a tuple it is element 0.
* ``final_norm`` is the output of the final norm module.

Layer views
-----------
Checked empirically on **transformers 5.23.0** (torch 2.13, CPU, fp32) with tiny
random models; ``tests/test_capture.py`` asserts the ``hf`` view equals
``model(..., output_hidden_states=True).hidden_states`` exactly for every family
below. Two conventions exist (both give L + 1 entries):

* ``"block_inputs"`` -- gpt_neo, gpt_neox, gpt2, llama, bamba:
  ``[embed, block_1 .. block_{L-1}, final_norm]``. HF records the input of each
  block, then replaces the last entry by the final-norm output, so the raw
  output of block L is *not* in ``hidden_states``.
* ``"block_outputs"`` -- mamba, mamba2:
  ``[block_1 .. block_L, final_norm]``. HF records the output of each block and
  appends the final-norm output, so the embeddings are *not* in
  ``hidden_states`` but the raw output of block L *is*. (An older table in
  ARCHITECTURE.md claims no family returns its raw last block; on 5.23.0 the
  Mamba families do.)

The ``residual`` view is ``[embed, block_1 .. block_L]`` (K = L + 1) for every family.

Adding a family
---------------
Add one :class:`Layout` entry to ``_LAYOUTS`` below (key = ``config.model_type``),
then add the family to the parity test in ``tests/test_capture.py`` -- it fails,
naming the layer, if ``hf_records`` or a path is wrong.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from reprflow.errors import ReprflowError

logger = logging.getLogger(__name__)

__all__ = [
    "Layout",
    "get_layout",
    "supported_model_types",
    "view_indices",
]


@dataclass(frozen=True)
class Layout:
    """Where one model family keeps its residual stream.

    All module paths are dotted paths relative to the *base model*
    (``model.base_model``, e.g. ``GPTNeoModel`` inside ``GPTNeoForCausalLM``).

    Attributes
    ----------
    model_type : str
        ``config.model_type`` this layout is registered under.
    base_prefix : str
        Attribute of the ``*ForCausalLM`` wrapper that holds the base model
        (its ``base_model_prefix``), e.g. ``"transformer"``.
    embedding : str
        Token-embedding module. Documentation and sanity checks only: h⁰ is
        captured as the input of block 1, which also includes position
        embeddings where a family adds them.
    blocks : str
        The ``nn.ModuleList`` of the L residual blocks.
    block_output : {"tuple", "tensor"}
        What one block's ``forward`` returns on transformers 5.23; for
        ``"tuple"`` the hidden state is element 0.
    final_norm : str
        The norm applied after the last block.
    context_attr : str or None
        Config attribute holding the trained context limit, or None for
        families without one (SSMs).
    hf_records : {"block_inputs", "block_outputs"}
        Which HF ``output_hidden_states`` convention the family follows (see
        the module docstring).
    keep_init : tuple of str
        Parameter-name suffixes that the random init schemes leave at the
        model's own init even though they belong to a Linear/Conv module
        (SSM-specific parameters such as Mamba-1's ``dt_proj.bias``).
    """

    model_type: str
    base_prefix: str
    embedding: str
    blocks: str
    block_output: Literal["tuple", "tensor"]
    final_norm: str
    context_attr: str | None
    hf_records: Literal["block_inputs", "block_outputs"]
    keep_init: tuple[str, ...] = ()

    @property
    def blocks_path(self) -> str:
        """Dotted path of the block list from the ``*ForCausalLM`` model."""
        return f"{self.base_prefix}.{self.blocks}"

    @property
    def final_norm_path(self) -> str:
        """Dotted path of the final norm from the ``*ForCausalLM`` model."""
        return f"{self.base_prefix}.{self.final_norm}"

    def base_model(self, model: nn.Module) -> nn.Module:
        """The base model (no LM head) of ``model``; ``model`` itself if it is one."""
        if isinstance(model, PreTrainedModel):
            return model.base_model
        return model

    def block_list(self, model: nn.Module) -> nn.ModuleList:
        """The ``nn.ModuleList`` of blocks (length L)."""
        return self._submodule(model, self.blocks)

    def final_norm_module(self, model: nn.Module) -> nn.Module:
        """The final norm module."""
        return self._submodule(model, self.final_norm)

    def embedding_module(self, model: nn.Module) -> nn.Module:
        """The token-embedding module."""
        return self._submodule(model, self.embedding)

    def _submodule(self, model: nn.Module, path: str) -> nn.Module:
        base = self.base_model(model)
        try:
            return base.get_submodule(path)
        except AttributeError as exc:
            raise ReprflowError(
                f"layout for model_type '{self.model_type}': module '{path}' not found in "
                f"{type(base).__name__} (transformers changed the module tree?); fix the entry "
                f"in reprflow/models/layouts.py"
            ) from exc


_LAYOUTS: dict[str, Layout] = {
    layout.model_type: layout
    for layout in (
        # ---- the paper's families ----
        Layout(
            model_type="gpt_neo",
            base_prefix="transformer",
            embedding="wte",
            blocks="h",
            block_output="tuple",
            final_norm="ln_f",
            context_attr="max_position_embeddings",
            hf_records="block_inputs",
        ),
        Layout(
            model_type="gpt_neox",
            base_prefix="gpt_neox",
            embedding="embed_in",
            blocks="layers",
            block_output="tensor",
            final_norm="final_layer_norm",
            context_attr="max_position_embeddings",
            hf_records="block_inputs",
        ),
        Layout(
            model_type="mamba",
            base_prefix="backbone",
            embedding="embeddings",
            blocks="layers",
            block_output="tensor",
            final_norm="norm_f",
            context_attr=None,
            hf_records="block_outputs",
            keep_init=("dt_proj.bias",),
        ),
        Layout(
            model_type="mamba2",
            base_prefix="backbone",
            embedding="embeddings",
            blocks="layers",
            block_output="tensor",
            final_norm="norm_f",
            context_attr=None,
            hf_records="block_outputs",
        ),
        # ---- generic decoders (extensibility) ----
        Layout(
            model_type="gpt2",
            base_prefix="transformer",
            embedding="wte",
            blocks="h",
            block_output="tensor",
            final_norm="ln_f",
            context_attr="n_positions",
            hf_records="block_inputs",
        ),
        Layout(
            model_type="llama",
            base_prefix="model",
            embedding="embed_tokens",
            blocks="layers",
            block_output="tensor",
            final_norm="norm",
            context_attr="max_position_embeddings",
            hf_records="block_inputs",
        ),
        # ---- hybrid: Mamba2 mixers interleaved with attention layers ----
        Layout(
            model_type="bamba",
            base_prefix="model",
            embedding="embed_tokens",
            blocks="layers",
            block_output="tuple",
            final_norm="final_layernorm",
            context_attr="max_position_embeddings",
            hf_records="block_inputs",
        ),
    )
}


def supported_model_types() -> list[str]:
    """Sorted ``model_type`` keys that have a layout."""
    return sorted(_LAYOUTS)


def get_layout(model_or_config: PreTrainedModel | PretrainedConfig) -> Layout:
    """Return the layout for a model or config, keyed by ``config.model_type``.

    Parameters
    ----------
    model_or_config : PreTrainedModel or PretrainedConfig
        A loaded model (its ``.config`` is used) or a config.

    Returns
    -------
    Layout

    Raises
    ------
    ReprflowError
        If ``model_type`` has no layout; the message lists the supported ones
        and how to add one.
    """
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if not model_type or model_type not in _LAYOUTS:
        raise ReprflowError(
            f"model_type '{model_type}' (config of {type(model_or_config).__name__}) has no "
            f"reprflow layout; supported: {', '.join(supported_model_types())}. To add a "
            f"family, add one Layout entry to _LAYOUTS in reprflow/models/layouts.py (block "
            f"list, final norm, hf_records) and the family to tests/test_capture.py"
        )
    return _LAYOUTS[model_type]


def view_indices(layout: Layout, n_blocks: int) -> dict[str, list[int]]:
    """Index lists into the K_all = L + 2 captured states for each layer view.

    Parameters
    ----------
    layout : Layout
    n_blocks : int
        Number of blocks L (``>= 1``).

    Returns
    -------
    dict
        ``{"hf": [...], "residual": [...]}``; ``hf`` has L + 1 entries and
        reproduces ``output_hidden_states`` exactly, ``residual`` is
        ``[0, 1, ..., L]`` (embed, block_1 .. block_L).

    Examples
    --------
    >>> from transformers import MambaConfig
    >>> view_indices(get_layout(MambaConfig()), 4)
    {'hf': [1, 2, 3, 4, 5], 'residual': [0, 1, 2, 3, 4]}
    """
    if n_blocks < 1:
        raise ReprflowError(f"view_indices: n_blocks must be >= 1, got {n_blocks}")
    final_norm = n_blocks + 1
    if layout.hf_records == "block_inputs":
        hf = list(range(0, n_blocks)) + [final_norm]  # embed, block_1 .. block_{L-1}, final_norm
    elif layout.hf_records == "block_outputs":
        hf = list(range(1, n_blocks + 1)) + [final_norm]  # block_1 .. block_L, final_norm
    else:  # pragma: no cover - guarded by the Literal type and the table above
        raise ReprflowError(f"layout '{layout.model_type}': unknown hf_records {layout.hf_records!r}")
    return {"hf": hf, "residual": list(range(0, n_blocks + 1))}
