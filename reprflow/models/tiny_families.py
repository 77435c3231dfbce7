"""The families a ``tiny:`` model entry can build, and the tokenizer each is sized for.

Torch-free, so the config loader checks a ``tiny:`` entry (:func:`reprflow.config.validate_config`)
before any job runs; the configs themselves are in :mod:`reprflow.models.tiny`.
"""

from __future__ import annotations

#: family -> tokenizer directory name under reprflow/data/tokenizers (the tiny model's vocabulary
#: covers exactly that tokenizer, padded like the real models)
TINY_TOKENIZERS: dict[str, str] = {
    "gpt_neo": "gpt2",
    "gpt_neox": "gpt-neox-20b",
    "mamba": "gpt-neox-20b",
    "mamba2": "gpt-neox-20b",
    "gpt2": "gpt2",
    "llama": "gpt-neox-20b",
    "bamba": "gpt-neox-20b",
}
