"""Training text: the documents of a named corpus, a held-out split and one token stream.

Corpora (their sources and licences: data/corpus/SOURCE.md):

- ``nq_open``: the Wikipedia passages of the NQ-Open oracle file the project ships
  (``data/lost_in_the_middle/nq-open-oracle.jsonl.gz``; 2655 passages, title + text, about
  0.4M tokens). For the CPU demo. The MDQA prompts quote the same passages, so a model trained
  on them has seen its documents: fine for a demo of the machinery, not for a claim.
- ``gcide``: the GNU Collaborative International Dictionary of English, from the Debian package
  ``dict-gcide`` (``/usr/share/dictd/gcide.dict.dz``; about 40 MB of English text, 8.9M
  tokens). For the GPU suite. Each dictionary entry is one document; pronunciation markup and
  source tags like ``[1913 Webster]`` are removed.

The split is by document: a document is held out for validation when a hash of its text falls
below ``val_fraction``, so it is stable across runs, machines and corpus order. The token stream
is the documents' tokens joined by the tokenizer's end-of-text token (id 0 for GPT-NeoX,
50256 for GPT-2), in corpus order.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import numpy as np

from reprflow.errors import ConfigError

__all__ = ["CORPORA", "load_documents", "split_documents", "tokenize_documents"]

_ROOT = Path(__file__).resolve().parents[2]
NQ_OPEN = "data/lost_in_the_middle/nq-open-oracle.jsonl.gz"
"""The nq_open corpus, relative to the project (rules/training.smk: an input of the training job)."""
NQ_OPEN_FILE = _ROOT / NQ_OPEN
GCIDE_FILE = Path("/usr/share/dictd/gcide.dict.dz")


def _nq_open() -> list[str]:
    docs = []
    with gzip.open(NQ_OPEN_FILE, "rt", encoding="utf-8") as fh:
        for line in fh:
            ctx = json.loads(line)["ctxs"][0]
            docs.append(f"{ctx['title']}\n{ctx['text'].strip()}")
    return docs


_GCIDE_TAG = re.compile(
    r"^\s*\[(?:[0-9]{4} Webster|WordNet [0-9.]+|PJC|Century Dict\.|Webster [0-9]+|[A-Z][A-Za-z .0-9]*)\]\s*$"
)
_GCIDE_PRON = re.compile(r"\\[^\\\n]*\\")


def _gcide(path: Path = GCIDE_FILE) -> list[str]:
    if not path.is_file():
        raise ConfigError(
            f"corpus 'gcide': {path} not found; install the Debian package dict-gcide "
            "(apt-get install dict-gcide), or copy data/corpus/tokens/ from a machine that has "
            "tokenized it, or use corpus: nq_open"
        )
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    docs = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.splitlines() if not _GCIDE_TAG.match(ln)]
        if not lines or lines[0].startswith("00-database"):
            continue
        doc = " ".join(" ".join(lines).split())
        doc = _GCIDE_PRON.sub("", doc).replace("*", "").replace("`", "").replace('"', "")
        doc = " ".join(doc.split())
        if len(doc) > 20:
            docs.append(doc)
    return docs


CORPORA = {"nq_open": _nq_open, "gcide": _gcide}


def load_documents(name: str) -> list[str]:
    """The documents of corpus ``name`` (see the module docstring), in a fixed order."""
    if name not in CORPORA:
        raise ConfigError(f"corpus {name!r} is unknown; use one of {sorted(CORPORA)}")
    return CORPORA[name]()


def _bucket(doc: str) -> float:
    return int.from_bytes(hashlib.sha256(doc.encode()).digest()[:8], "big") / 2.0**64


def split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """``(train, val)``: a document goes to val when the hash of its text, mapped to [0, 1),
    is below ``val_fraction``. Duplicated documents land on the same side."""
    train = [d for d in docs if _bucket(d) >= val_fraction]
    val = [d for d in docs if _bucket(d) < val_fraction]
    if not train or not val:
        raise ConfigError(f"val_fraction {val_fraction}: split of {len(docs)} documents leaves one side empty")
    return train, val


def tokenize_documents(docs: list[str], tokenizer) -> np.ndarray:
    """One int32 token stream: each document's ids followed by the end-of-text id.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` or a transformers tokenizer.
    """
    eos = _eos_id(tokenizer)
    if hasattr(tokenizer, "encode_batch"):
        ids = [enc.ids for enc in tokenizer.encode_batch(docs, add_special_tokens=False)]
    else:
        ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    out = np.fromiter((t for row in ids for t in (*row, eos)), dtype=np.int32)
    return out


def _eos_id(tokenizer) -> int:
    for token in ("<|endoftext|>",):
        tid = (
            tokenizer.token_to_id(token)
            if hasattr(tokenizer, "token_to_id")
            else tokenizer.convert_tokens_to_ids(token)
        )
        if tid is not None:
            return int(tid)
    raise ConfigError("tokenizer has no <|endoftext|> token to separate documents")
