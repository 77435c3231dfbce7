"""Tiny random demo models, saved with ``save_pretrained`` so they load like hub models.

Each family gets hidden size 64 and 4 blocks, with a vocabulary matching the
tokenizer it is paired with (:data:`TINY_TOKENIZERS`): the GPT-2 tokenizer
(50257 tokens) for gpt_neo and gpt2, and the GPT-NeoX-20B tokenizer (50277
tokens, padded like the real models: 50304 for Pythia's gpt_neox, 50280 for
the others) for the rest. Transformers keep ``max_position_embeddings = 2048``
(the paper's GPT-Neo/Pythia limit), and GPT-Neo keeps its alternating
global/local attention with a 32-token window, shorter than any demo prompt,
so the local-attention path is exercised.

A model is written to a temporary sibling directory and renamed into place,
with a ``reprflow_tiny.json`` provenance file, so a killed build never leaves a
directory that looks complete. Load it with
``load_model(out_dir, init=InitSpec("pretrained"), seed=None)``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    BambaConfig,
    GPT2Config,
    GPTNeoConfig,
    GPTNeoXConfig,
    LlamaConfig,
    Mamba2Config,
    MambaConfig,
    PretrainedConfig,
)

import reprflow
from reprflow.atomic import atomic_write_dir
from reprflow.errors import ConfigError
from reprflow.models.init_schemes import build_from_config
from reprflow.models.layouts import get_layout
from reprflow.models.tiny_families import TINY_TOKENIZERS

logger = logging.getLogger(__name__)

__all__ = ["PROVENANCE_FILE", "TINY_TOKENIZERS", "build_tiny_model", "tiny_config"]

PROVENANCE_FILE = "reprflow_tiny.json"

_NEOX_SPECIAL = {"bos_token_id": 0, "eos_token_id": 0}
# Llama's tiny shape (grouped-query attention: 2 key/value heads for 4 query heads), which the
# hybrid Bamba's attention layers share.
_GQA_ATTENTION = dict(
    vocab_size=50280,
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
)
_TINY: dict[str, tuple[type[PretrainedConfig], dict[str, Any]]] = {  # tokenizers: TINY_TOKENIZERS
    "gpt_neo": (
        GPTNeoConfig,
        dict(
            vocab_size=50257,
            hidden_size=64,
            num_layers=4,
            num_heads=4,
            intermediate_size=256,
            attention_types=[[["global", "local"], 2]],
            window_size=32,
            max_position_embeddings=2048,
        ),
    ),
    "gpt_neox": (
        GPTNeoXConfig,
        dict(
            vocab_size=50304,
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=256,
            rotary_pct=0.25,
            max_position_embeddings=2048,
            **_NEOX_SPECIAL,
        ),
    ),
    "mamba": (
        MambaConfig,
        dict(
            vocab_size=50280,
            hidden_size=64,
            num_hidden_layers=4,
            state_size=16,
            expand=2,
            conv_kernel=4,
            pad_token_id=0,
            **_NEOX_SPECIAL,
        ),
    ),
    "mamba2": (
        Mamba2Config,
        dict(
            vocab_size=50280,
            hidden_size=64,
            num_hidden_layers=4,
            state_size=16,
            expand=2,
            num_heads=8,
            head_dim=16,
            n_groups=1,
            conv_kernel=4,
            chunk_size=64,
            pad_token_id=0,
            **_NEOX_SPECIAL,
        ),
    ),
    "gpt2": (
        GPT2Config,
        dict(vocab_size=50257, n_embd=64, n_layer=4, n_head=4, n_positions=2048),
    ),
    "llama": (
        LlamaConfig,
        dict(
            **_GQA_ATTENTION,
            max_position_embeddings=2048,
            **_NEOX_SPECIAL,
        ),
    ),
    "bamba": (
        BambaConfig,
        dict(
            **_GQA_ATTENTION,
            attn_layer_indices=[1, 3],
            mamba_n_heads=8,
            mamba_d_head=16,
            mamba_expand=2,
            mamba_d_state=16,
            mamba_n_groups=1,
            mamba_chunk_size=64,
            max_position_embeddings=2048,
            pad_token_id=0,
            **_NEOX_SPECIAL,
        ),
    ),
}


def tiny_config(family: str, *, overrides: Mapping[str, Any] | None = None) -> PretrainedConfig:
    """The tiny config of ``family`` with ``overrides`` applied.

    Parameters
    ----------
    family : str
        A ``model_type`` in :data:`TINY_TOKENIZERS`.
    overrides : mapping, optional
        Config attributes to change (e.g. ``{"num_hidden_layers": 2}``); keys
        must be attributes of the family's config.

    Raises
    ------
    ConfigError
        Unknown family or override key.
    """
    if family not in _TINY:
        raise ConfigError(f"tiny model family '{family}' is unknown; expected one of {', '.join(sorted(_TINY))}")
    config_cls, defaults = _TINY[family]
    overrides = dict(overrides or {})
    reference = config_cls(**defaults)
    unknown = sorted(k for k in overrides if not hasattr(reference, k))
    if unknown:
        raise ConfigError(
            f"tiny model '{family}': unknown config override(s) {unknown}; use attributes of "
            f"{config_cls.__name__} (e.g. num_hidden_layers, hidden_size)"
        )
    return config_cls(**{**defaults, **overrides})


def build_tiny_model(
    family: str,
    *,
    out_dir: str | os.PathLike,
    seed: int,
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Build a tiny random model of ``family`` and save it atomically to ``out_dir``.

    Parameters
    ----------
    family : str
        ``gpt_neo``, ``gpt_neox``, ``mamba``, ``mamba2``, ``gpt2``, ``llama`` or ``bamba``.
    out_dir : path
        Target directory; replaced if it exists.
    seed : int
        Seeds the model's own init (same model, byte for byte, per seed).
    overrides : mapping, optional
        Config attributes to change (see :func:`tiny_config`).

    Returns
    -------
    Path
        ``out_dir``, holding ``config.json``, ``model.safetensors`` and
        ``reprflow_tiny.json``.
    """
    config = tiny_config(family, overrides=overrides)
    get_layout(config)  # every tiny family must be capturable
    model = build_from_config(config, seed=seed, dtype=torch.float32, device="cpu")
    out_dir = Path(out_dir)
    provenance = {
        "family": family,
        "model_type": config.model_type,
        "seed": seed,
        "overrides": dict(overrides or {}),
        "tokenizer": TINY_TOKENIZERS[family],
        "vocab_size": config.vocab_size,
        "n_params": sum(p.numel() for p in model.parameters()),
        "reprflow_version": reprflow.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")

    atomic_write_dir(out_dir, write)
    logger.info("built tiny %s model (%d params, seed %d) at %s", family, provenance["n_params"], seed, out_dir)
    return out_dir
