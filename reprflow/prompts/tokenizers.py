"""Tokenizers shipped with the package (``reprflow/data/tokenizers/<name>/tokenizer.json``, package data).

The prompt builder and the activation extractor load tokenizers through
:func:`load_tokenizer`, so both count tokens the same way (no special tokens are added:
neither GPT-2 nor GPT-NeoX-20B has a BOS post-processor).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from reprflow.config import TOKENIZER_DIR, shipped_tokenizers
from reprflow.errors import PromptError
from reprflow.prompts.files import sha256_file

if TYPE_CHECKING:  # transformers is imported when a tokenizer is loaded, not by the workflow's planning
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "TOKENIZER_DIR",
    "available_tokenizers",
    "tokenizer_file",
    "tokenizer_name",
    "tokenizer_sha256",
    "load_tokenizer",
]

logger = logging.getLogger(__name__)


_EOS = "<|endoftext|>"
# Pad token preference: a dedicated padding token where the vocabulary has one
# (GPT-NeoX-20B: id 1), else the end-of-text token (GPT-2 has no pad token).
_PAD_PREFERENCE = ("<|padding|>", _EOS)


def available_tokenizers(tokenizer_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the tokenizers under ``tokenizer_dir`` (default :data:`TOKENIZER_DIR`), sorted."""
    return shipped_tokenizers(Path(tokenizer_dir) if tokenizer_dir is not None else TOKENIZER_DIR)


def tokenizer_file(name_or_path: str | os.PathLike, *, tokenizer_dir: str | os.PathLike | None = None) -> Path:
    """Resolve a tokenizer name (``"gpt2"``), a folder holding ``tokenizer.json``, or the file itself.

    Raises
    ------
    PromptError
        If nothing matches; the message lists the shipped names.
    """
    root = Path(tokenizer_dir) if tokenizer_dir is not None else TOKENIZER_DIR
    text = os.fspath(name_or_path)
    candidates = [root / text / "tokenizer.json", Path(text) / "tokenizer.json", Path(text)]
    for cand in candidates:
        if cand.is_file() and cand.name == "tokenizer.json":
            return cand
    raise PromptError(
        f"tokenizer {text!r}: not a shipped tokenizer name and not a path to a tokenizer.json "
        f"(or a folder holding one); available names in {root}: {available_tokenizers(root)}"
    )


def tokenizer_name(name_or_path: str | os.PathLike, *, tokenizer_dir: str | os.PathLike | None = None) -> str:
    """Short name of a tokenizer: its folder name (``gpt2`` for ``reprflow/data/tokenizers/gpt2/tokenizer.json``)."""
    return tokenizer_file(name_or_path, tokenizer_dir=tokenizer_dir).parent.name


def tokenizer_sha256(name_or_path: str | os.PathLike, *, tokenizer_dir: str | os.PathLike | None = None) -> str:
    """Hex sha256 of the resolved ``tokenizer.json``."""
    return sha256_file(tokenizer_file(name_or_path, tokenizer_dir=tokenizer_dir))


def load_tokenizer(
    name_or_path: str | os.PathLike, *, tokenizer_dir: str | os.PathLike | None = None
) -> PreTrainedTokenizerFast:
    """Load a fast tokenizer from a shipped name or a ``tokenizer.json`` path.

    Parameters
    ----------
    name_or_path : str or path
        ``"gpt2"`` (GPT-Neo), ``"gpt-neox-20b"`` (Pythia, Mamba, Mamba2), a folder holding a
        ``tokenizer.json``, or the file itself.
    tokenizer_dir : path, optional
        Where shipped names are looked up; default :data:`TOKENIZER_DIR`.

    Returns
    -------
    transformers.PreTrainedTokenizerFast
        ``eos``/``bos``/``unk`` = ``<|endoftext|>``; pad = ``<|padding|>`` where the vocabulary
        has it (GPT-NeoX-20B), else ``<|endoftext|>`` (GPT-2); ``padding_side="right"``.

    Notes
    -----
    Right padding is exact for causal models (docs/design.md §4); the extractor gathers the
    last real token from the attention mask.
    """
    path = tokenizer_file(name_or_path, tokenizer_dir=tokenizer_dir)
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
    vocab = tok.get_vocab()
    if _EOS not in vocab:
        raise PromptError(f"tokenizer {path}: no {_EOS!r} token in its vocabulary; expected a GPT-2/NeoX BPE")
    pad = next(t for t in _PAD_PREFERENCE if t in vocab)
    tok.add_special_tokens({"eos_token": _EOS, "bos_token": _EOS, "unk_token": _EOS, "pad_token": pad})
    tok.padding_side = "right"
    logger.debug("loaded tokenizer %s (pad=%s, vocab=%d)", path, pad, len(vocab))
    return tok
