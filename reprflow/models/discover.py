"""Find the block list, embedding and final norm of any Hugging Face causal LM.

Rules, applied to the base model (``model.base_model``, no LM head):

* **blocks**: the ``nn.ModuleList`` whose length is ``num_hidden_layers`` (read
  from ``config.get_text_config()``, so ``n_layer``/``num_layers`` families work
  through their attribute maps). Lists nested inside another candidate are
  ignored; of the rest the shallowest wins, and two at the same depth are
  ambiguous.
* **embedding**: the module ``get_input_embeddings()`` returns.
* **final norm**: the first child registered *after* the block list in the
  same parent whose class is a norm (``nn.LayerNorm``, ``nn.RMSNorm``,
  ``nn.GroupNorm``, or a class name containing ``Norm``). transformers
  registers modules in forward order, so this is the norm applied to the last
  block's output (e.g. ``ln_f``, ``norm``, ``norm_f``, ``final_layernorm``;
  LFM2 calls it ``embedding_norm``).

When a rule fails, the error names the model type, what was found and the
override entry to add to :data:`reprflow.models.layouts.OVERRIDES`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import transformers
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from reprflow.errors import ReprflowError
from reprflow.kernels.fallback_notice import layout_probe

__all__ = ["discover_paths", "probe_block_output", "skeleton"]

_FIX = "reprflow/models/layouts.py"
_NORM_TYPES = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)
_PROBE_TOKENS = 3


def _override_hint(model_type: str, fields: str) -> str:
    return f"add OVERRIDES['{model_type}'] = {{{fields}}} in {_FIX}"


def skeleton(config: PretrainedConfig) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_config(config)`` on the meta device (no memory, no weights)."""
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:  # checked by name: imports no modeling code
        raise ReprflowError(
            f"model_type '{getattr(config, 'model_type', None)}' has no causal-LM class in transformers "
            f"{transformers.__version__} (AutoModelForCausalLM does not know {type(config).__name__}); "
            f"reprflow reads causal LMs"
        )
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _num_layers(config: PretrainedConfig) -> int | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "num_hidden_layers", None)
    return int(value) if isinstance(value, int) else None


def _find_blocks(base: nn.Module, n_layers: int | None, model_type: str) -> str:
    lists = [(name, len(mod)) for name, mod in base.named_modules() if isinstance(mod, nn.ModuleList) and name]
    if n_layers is None:
        raise ReprflowError(
            f"model_type '{model_type}': the config has no num_hidden_layers, so the block list cannot be "
            f"found; ModuleLists in {type(base).__name__}: {lists}; "
            + _override_hint(model_type, "'blocks': '<path of the block list>'")
        )
    found = [name for name, n in lists if n == n_layers]
    top = [name for name in found if not any(name.startswith(other + ".") for other in found)]
    if not top:
        raise ReprflowError(
            f"model_type '{model_type}': no nn.ModuleList of length num_hidden_layers={n_layers} in "
            f"{type(base).__name__} (ModuleLists: {lists}); "
            + _override_hint(model_type, "'blocks': '<path of the block list>'")
        )
    depth = min(name.count(".") for name in top)
    shallowest = [name for name in top if name.count(".") == depth]
    if len(shallowest) > 1:
        raise ReprflowError(
            f"model_type '{model_type}': several nn.ModuleLists of length num_hidden_layers={n_layers} in "
            f"{type(base).__name__}: {shallowest}; "
            + _override_hint(model_type, f"'blocks': '{shallowest[0]}'")
            + " naming the list of residual blocks"
        )
    return shallowest[0]


def _path_of(base: nn.Module, target: nn.Module) -> str | None:
    return next((name for name, mod in base.named_modules() if mod is target and name), None)


def _find_embedding(base: nn.Module, model_type: str) -> str:
    try:
        emb = base.get_input_embeddings()
    except (NotImplementedError, AttributeError):
        emb = None
    path = _path_of(base, emb) if emb is not None else None
    if path is None:
        raise ReprflowError(
            f"model_type '{model_type}': get_input_embeddings() of {type(base).__name__} gives no submodule; "
            + _override_hint(model_type, "'embedding': '<path of the token embedding>'")
        )
    return path


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


def _find_final_norm(base: nn.Module, blocks: str, model_type: str) -> str:
    parent_path, _, name = blocks.rpartition(".")
    parent = base.get_submodule(parent_path) if parent_path else base
    children = list(parent.named_children())
    after = children[[n for n, _ in children].index(name) + 1 :]
    for child, module in after:
        if _is_norm(module):
            return f"{parent_path}.{child}" if parent_path else child
    listed = [f"{n} ({type(m).__name__})" for n, m in after]
    raise ReprflowError(
        f"model_type '{model_type}': no norm module registered after the block list '{blocks}' in "
        f"{type(parent).__name__} (modules after it: {listed or 'none'}); reprflow's final_norm state is "
        f"the output of that norm -- "
        + _override_hint(model_type, "'final_norm': '<path of the module whose output is last_hidden_state>'")
    )


def discover_paths(model: nn.Module, model_type: str, *, fixed: dict[str, str] | None = None) -> dict[str, Any]:
    """Module paths of ``model``'s layout (relative to its base model).

    Parameters
    ----------
    model : nn.Module
        A ``*ForCausalLM`` model or its base model (may be on the meta device).
    model_type : str
        For messages.
    fixed : dict, optional
        ``blocks`` / ``embedding`` / ``final_norm`` paths from the override table;
        their rules are skipped.

    Returns
    -------
    dict
        ``base_prefix``, ``embedding``, ``blocks``, ``final_norm``.

    Raises
    ------
    ReprflowError
        A rule found nothing or was ambiguous (the message names the override to add).
    """
    fixed = dict(fixed or {})
    base = model.base_model if isinstance(model, PreTrainedModel) else model
    base_prefix = getattr(model, "base_model_prefix", "") if base is not model else ""
    for field, path in fixed.items():  # override paths must name a module of this model
        try:
            module = base.get_submodule(path)
        except AttributeError:
            module = None
        if not isinstance(module, nn.ModuleList if field == "blocks" else nn.Module):
            raise ReprflowError(
                f"model_type '{model_type}': OVERRIDES['{model_type}']['{field}'] = '{path}' is not "
                f"{'an nn.ModuleList' if field == 'blocks' else 'a module'} of {type(base).__name__} "
                f"(this checkpoint's variant may lack it); fix the entry in {_FIX}"
            )
    blocks = fixed.get("blocks") or _find_blocks(base, _num_layers(model.config), model_type)
    return {
        "base_prefix": base_prefix,
        "embedding": fixed.get("embedding") or _find_embedding(base, model_type),
        "blocks": blocks,
        "final_norm": fixed.get("final_norm") or _find_final_norm(base, blocks, model_type),
    }


def probe_block_output(model: nn.Module, layout) -> Literal["tuple", "tensor"] | None:
    """Whether the blocks return tuples, read from one 3-token forward of the base model.

    Runs on the model's own device and dtype under ``torch.inference_mode`` in
    eval mode (no RNG is drawn; the training flag is restored); the hooks are
    removed afterwards. Returns None for a model on the meta device.

    Raises
    ------
    ReprflowError
        The forward fails, or blocks return a mix of tuples and tensors.
    """
    base = layout.base_model(model)
    param = next(base.parameters(), None)
    if param is None or param.device.type == "meta":
        return None
    vocab = int(getattr(layout.embedding_module(model), "num_embeddings", 0) or model.config.vocab_size)
    input_ids = (torch.arange(1, _PROBE_TOKENS + 1) % vocab).unsqueeze(0).to(param.device)  # (1, 3)
    kinds: dict[int, bool] = {}
    blocks = layout.block_list(model)
    handles = [
        block.register_forward_hook(lambda mod, args, out, i=i: kinds.__setitem__(i, isinstance(out, tuple)))
        for i, block in enumerate(blocks)
    ]
    was_training = base.training
    try:
        base.eval()
        with torch.inference_mode(), layout_probe():  # transformers' mixers here say nothing of later forwards
            base(input_ids=input_ids, use_cache=False)
    except Exception as exc:
        raise ReprflowError(
            f"model_type '{layout.model_type}': a {_PROBE_TOKENS}-token forward of {type(base).__name__} "
            f"(to read what its blocks return) failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        base.train(was_training)
        for handle in handles:
            handle.remove()
    if len(kinds) != len(blocks) or len(set(kinds.values())) != 1:
        detail = {f"block_{i + 1}": "tuple" if t else "tensor" for i, t in sorted(kinds.items())}
        raise ReprflowError(
            f"model_type '{layout.model_type}': blocks of '{layout.blocks}' return {detail} "
            f"({len(kinds)} of {len(blocks)} ran); capture needs every block to run once and return the "
            f"same kind -- " + _override_hint(layout.model_type, "'blocks': '<path of the residual blocks>'")
        )
    return "tuple" if kinds[0] else "tensor"
