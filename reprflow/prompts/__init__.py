"""KVPR and MDQA prompt sets (Liu et al. 2024 formats, paper App. B), calibrated to target lengths.

Entry points: :func:`build_prompt_set` -> :func:`write_prompt_set`; :func:`read_prompt_set`;
:func:`load_tokenizer` (shared with the extractor).
"""

from reprflow.lazy import lazy_exports

# name -> submodule; imported on first use (PEP 562), so a job that reads a prompt file does not
# import the builders' scikit-learn and transformers
_EXPORTS = {
    "build_prompt_set": "build",
    "TASKS": "dataset",
    "manifest_path": "dataset",
    "prompt_set_path": "dataset",
    "read_manifest": "dataset",
    "read_prompt_groups": "dataset",
    "read_prompt_set": "dataset",
    "write_prompt_set": "dataset",
    "format_kvpr_prompt": "kvpr",
    "format_mdqa_prompt": "mdqa",
    "available_tokenizers": "tokenizers",
    "load_tokenizer": "tokenizers",
    "tokenizer_sha256": "tokenizers",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

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
