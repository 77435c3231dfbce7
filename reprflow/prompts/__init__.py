"""KVPR and MDQA prompt sets (Liu et al. 2024 formats, paper App. B), calibrated to target lengths.

Entry points: :func:`build_prompt_set` -> :func:`write_prompt_set`; :func:`read_prompt_set`;
:func:`load_tokenizer` (shared with the extractor).
"""

from reprflow.prompts.build import build_prompt_set
from reprflow.prompts.dataset import (
    TASKS,
    manifest_path,
    prompt_set_path,
    read_manifest,
    read_prompt_groups,
    read_prompt_set,
    write_prompt_set,
)
from reprflow.prompts.kvpr import format_kvpr_prompt
from reprflow.prompts.mdqa import format_mdqa_prompt
from reprflow.prompts.tokenizers import available_tokenizers, load_tokenizer, tokenizer_sha256

__all__ = [
    "TASKS",
    "build_prompt_set",
    "write_prompt_set",
    "read_prompt_set",
    "read_manifest",
    "read_prompt_groups",
    "prompt_set_path",
    "manifest_path",
    "load_tokenizer",
    "available_tokenizers",
    "tokenizer_sha256",
    "format_kvpr_prompt",
    "format_mdqa_prompt",
]
