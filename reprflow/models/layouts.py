"""Where a Hugging Face causal LM keeps its residual stream: found from the module tree.

A :class:`Layout` tells :mod:`reprflow.capture` which modules to hook, and which
of the ``K_all = L + 2`` captured states reproduce ``output_hidden_states``:

    index   0        1         ...   L         L + 1
    state   embed    block_1   ...   block_L   final_norm

* ``embed`` (h⁰) is the *input of block 1*, read by a forward pre-hook: the
  same tensor for every family (GPT-2/GPT-Neo: ``drop(wte + wpe)``; Gemma-style
  models: the scaled embedding; Mamba: the raw token embedding).
* ``block_i`` is the output of block ``i`` (element 0 if the block returns a tuple).
* ``final_norm`` is the output of the final norm.

Discovery (any causal LM)
-------------------------
:func:`get_layout` reads the layout from the loaded model itself
(:mod:`reprflow.models.discover`): the base model's ``nn.ModuleList`` of length
``num_hidden_layers`` (the block list), the module ``get_input_embeddings()``
returns, and the first norm module registered after the block list in the same
parent. Two facts are not in the module tree:

* whether a block returns a tuple (``block_output``) -- read from one forward
  pass of three tokens through the model on its own device, cached per model;
* which convention ``output_hidden_states`` follows (``hf_records``):

  - ``"block_inputs"`` (almost every family; the default):
    ``[embed, block_1 .. block_{L-1}, final_norm]``. HF records the input of
    each block, then replaces the last entry by the final-norm output, so the
    raw output of block L is *not* in ``hidden_states``.
  - ``"block_outputs"`` (mamba, falcon_mamba, mamba2, via :data:`OVERRIDES`):
    ``[block_1 .. block_L, final_norm]``. HF records the output of each block
    and appends the final-norm output, so the embeddings are *not* in
    ``hidden_states`` but the raw output of block L *is*.

  :func:`reprflow.models.hf_view.check_hf_view` checks the convention against
  ``output_hidden_states`` on a real batch and names the first state that
  differs. Checked on transformers 5.23.0 (torch 2.13, CPU, fp32) for 17
  model types in ``tests/models/test_any_causal_lm.py``.

The ``residual`` view is ``[embed, block_1 .. block_L]`` (K = L + 1) for every family.

Overrides
---------
:data:`OVERRIDES` (keyed by ``config.model_type``) holds only what discovery
cannot know or gets wrong for a family: the ``hf_records`` of the Mamba
families, or a module path where the rules pick the wrong module (OPT's final
norm). ``keep_init`` (parameters the random init schemes leave alone) is also
discovered: ``dt_proj.bias`` wherever a Mamba-1 mixer has one. To
support a model type the rules cannot handle, add an entry there with the
fields to replace (e.g. ``{"final_norm": "norm_out"}``), then add the type to
``tests/models/test_any_causal_lm.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from reprflow.errors import ReprflowError
from reprflow.models.discover import discover_paths, probe_block_output, skeleton
from reprflow.models.shipped import CONTEXT_ATTRS

logger = logging.getLogger(__name__)

__all__ = [
    "OVERRIDES",
    "Layout",
    "context_attr",
    "get_layout",
    "view_indices",
]

LAYOUTS_FILE = "reprflow/models/layouts.py"


@dataclass(frozen=True)
class Layout:
    """Where one model keeps its residual stream.

    All module paths are dotted paths relative to the *base model*
    (``model.base_model``, e.g. ``GPTNeoModel`` inside ``GPTNeoForCausalLM``).

    Attributes
    ----------
    model_type : str
        ``config.model_type``.
    base_prefix : str
        Attribute of the ``*ForCausalLM`` wrapper that holds the base model
        (its ``base_model_prefix``), e.g. ``"transformer"``; ``""`` when the
        model is itself a base model.
    embedding : str
        Token-embedding module. Documentation and sanity checks only: h⁰ is
        captured as the input of block 1, which also includes position
        embeddings, scaling and dropout where a family applies them.
    blocks : str
        The ``nn.ModuleList`` of the L residual blocks.
    block_output : {"tuple", "tensor"} or None
        What one block's ``forward`` returns; for ``"tuple"`` the hidden state
        is element 0. None when the model was not run (a config, or a model on
        the meta device).
    final_norm : str
        The norm applied after the last block.
    context_attr : str or None
        Config attribute holding the trained context limit, or None for
        families without one (SSMs).
    hf_records : {"block_inputs", "block_outputs"}
        Which ``output_hidden_states`` convention the family follows (see the
        module docstring).
    keep_init : tuple of str
        Parameter-name suffixes that the random init schemes leave at the
        model's own init even though they belong to a Linear/Conv module
        (SSM-specific parameters such as Mamba-1's ``dt_proj.bias``).
    overridden : tuple of str
        Fields taken from :data:`OVERRIDES` rather than discovered.
    """

    model_type: str
    base_prefix: str
    embedding: str
    blocks: str
    block_output: Literal["tuple", "tensor"] | None
    final_norm: str
    context_attr: str | None
    hf_records: Literal["block_inputs", "block_outputs"]
    keep_init: tuple[str, ...] = ()
    overridden: tuple[str, ...] = ()

    @property
    def blocks_path(self) -> str:
        """Dotted path of the block list from the ``*ForCausalLM`` model."""
        return ".".join(p for p in (self.base_prefix, self.blocks) if p)

    @property
    def final_norm_path(self) -> str:
        """Dotted path of the final norm from the ``*ForCausalLM`` model."""
        return ".".join(p for p in (self.base_prefix, self.final_norm) if p)

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
                f"{type(base).__name__}; the layout belongs to another model, or the override "
                f"entry in {LAYOUTS_FILE} names a wrong path"
            ) from exc


#: model_type -> Layout fields that replace the discovered ones. Only what the module
#: tree cannot tell (or tells wrongly) belongs here; see the module docstring.
OVERRIDES: dict[str, dict[str, Any]] = {
    # HF's loop records each block's *output* and appends the final norm (no embeddings).
    "mamba": {"hf_records": "block_outputs"},
    "falcon_mamba": {"hf_records": "block_outputs"},
    "mamba2": {"hf_records": "block_outputs"},
    # OPT registers final_layer_norm before its layers (the rule looks after them); OPT-350m
    # (do_layer_norm_before=False) has no final norm and stops with a clear error.
    "opt": {"final_norm": "decoder.final_layer_norm"},
}

_FIELDS = {f.name for f in dataclasses.fields(Layout)} - {"model_type", "overridden"}

#: model -> its layout (discovery and the probe forward run once per model object)
_CACHE: weakref.WeakKeyDictionary[nn.Module, Layout] = weakref.WeakKeyDictionary()


def context_attr(config: PretrainedConfig) -> str | None:
    """The config attribute that holds the trained context limit, or None (SSMs).

    The override's ``context_attr`` if any, else the first of
    ``max_position_embeddings``, ``n_positions``, ``n_ctx`` that the config sets
    to an integer.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    override = OVERRIDES.get(getattr(config, "model_type", None), {})
    if "context_attr" in override:
        return override["context_attr"]
    for attr in CONTEXT_ATTRS:
        if isinstance(getattr(text, attr, None), int):
            return attr
    return None


def get_layout(model_or_config: nn.Module | PretrainedConfig) -> Layout:
    """The layout of a loaded causal LM, discovered from its module tree.

    Parameters
    ----------
    model_or_config : PreTrainedModel or PretrainedConfig
        A ``*ForCausalLM`` model (or its base model). A config is built on the
        meta device (no memory, no weights) to find the paths; its layout has
        ``block_output=None``.

    Returns
    -------
    Layout
        Cached per model object. For a model with real weights, the first call
        runs one forward pass of three tokens (no gradients, hooks removed
        afterwards) to read ``block_output``.

    Raises
    ------
    ReprflowError
        The module tree defeats the discovery rules (no or several block lists
        of length ``num_hidden_layers``, no final norm), or the blocks return
        a mix of tuples and tensors; the message names the model type and the
        override entry to add to :data:`OVERRIDES`.
    """
    if isinstance(model_or_config, PretrainedConfig):
        return _layout(skeleton(model_or_config))
    if not isinstance(model_or_config, nn.Module) or not hasattr(model_or_config, "config"):
        raise ReprflowError(
            f"get_layout expects a transformers causal LM or its config, got {type(model_or_config).__name__}"
        )
    cached = _CACHE.get(model_or_config)
    if cached is None:
        cached = _layout(model_or_config)
        _CACHE[model_or_config] = cached
    return cached


def _layout(model: nn.Module) -> Layout:
    config = model.config
    model_type = str(getattr(config, "model_type", None) or type(config).__name__)
    override = dict(OVERRIDES.get(model_type, {}))
    unknown = sorted(set(override) - _FIELDS)
    if unknown:  # pragma: no cover - guards edits to the table
        raise ReprflowError(f"{LAYOUTS_FILE}: OVERRIDES['{model_type}'] has unknown fields {unknown}")
    fields: dict[str, Any] = dict(
        discover_paths(
            model, model_type, fixed={k: override[k] for k in ("blocks", "embedding", "final_norm") if k in override}
        ),
        context_attr=context_attr(config),
        hf_records=_recorded_convention(model),
        keep_init=_ssm_keep_init(model),
    )
    fields.update({k: v for k, v in override.items() if k != "block_output"})
    layout = Layout(
        model_type=model_type, block_output=override.get("block_output"), overridden=tuple(sorted(override)), **fields
    )
    if layout.block_output is None:
        layout = dataclasses.replace(layout, block_output=probe_block_output(model, layout))
    logger.debug("layout of %s: %s", model_type, layout)
    return layout


def _ssm_keep_init(model: nn.Module) -> tuple[str, ...]:
    """``("dt_proj.bias",)`` for models with Mamba-1 mixers (mamba, falcon_mamba, jamba), else ``()``.

    Mamba-1's ``dt_proj.bias`` sets the initial step size dt (mamba, falcon_mamba: the
    inverse softplus of dt drawn in [dt_min, dt_max]); it is not a weight bias, so the
    random init schemes leave it at the family's own init.
    """
    has = any(
        name.endswith("dt_proj") and isinstance(mod, nn.Linear) and mod.bias is not None
        for name, mod in model.named_modules()
    )
    return ("dt_proj.bias",) if has else ()


def _recorded_convention(model: nn.Module) -> Literal["block_inputs", "block_outputs"]:
    """``hf_records`` as far as the model class declares it (transformers' output recorder)."""
    base = model.base_model if isinstance(model, PreTrainedModel) else model
    spec = (getattr(type(base), "_can_record_outputs", None) or {}).get("hidden_states")
    if spec is not None and getattr(spec, "capture_initial_hidden_state", True) is False:
        return "block_outputs"
    return "block_inputs"


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
        reproduces ``output_hidden_states``, ``residual`` is ``[0, 1, ..., L]``
        (embed, block_1 .. block_L).

    Examples
    --------
    >>> llama = Layout("llama", "model", "embed_tokens", "layers", "tensor", "norm", None, "block_inputs")
    >>> view_indices(llama, 4)
    {'hf': [0, 1, 2, 3, 5], 'residual': [0, 1, 2, 3, 4]}
    >>> view_indices(dataclasses.replace(llama, hf_records="block_outputs"), 4)["hf"]
    [1, 2, 3, 4, 5]
    """
    if n_blocks < 1:
        raise ReprflowError(f"view_indices: n_blocks must be >= 1, got {n_blocks}")
    final_norm = n_blocks + 1
    if layout.hf_records == "block_inputs":
        hf = list(range(0, n_blocks)) + [final_norm]  # embed, block_1 .. block_{L-1}, final_norm
    elif layout.hf_records == "block_outputs":
        hf = list(range(1, n_blocks + 1)) + [final_norm]  # block_1 .. block_L, final_norm
    else:
        raise ReprflowError(
            f"layout '{layout.model_type}': hf_records must be 'block_inputs' or 'block_outputs', "
            f"got {layout.hf_records!r}; fix OVERRIDES['{layout.model_type}'] in {LAYOUTS_FILE}"
        )
    return {"hf": hf, "residual": list(range(0, n_blocks + 1))}
