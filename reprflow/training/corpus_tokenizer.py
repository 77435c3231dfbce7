"""A small byte-level BPE tokenizer trained on a corpus's training split (the demo's tokenizer).

With the GPT-2 or GPT-NeoX-20B vocabulary (50,304 embedding rows) a width-64 micro model spends
>90% of its compute in the output layer, and each of 50K embeddings is seen a handful of times in
the demo corpus's 0.27M tokens, so it barely learns in CPU minutes. A 2,048-token BPE trained on
the same text makes a step ~5x cheaper and every token frequent (docs/training.md, *The demo's
tokenizer*). It is a demo-only deviation from the matched suite's GPT-NeoX tokenizer.

Conventions (those of the GPT-NeoX-20B tokenizer the project ships): NFC normaliser, byte-level
pre-tokenizer without a prefix space, id 0 ``<|endoftext|>`` (document separator, EOS), id 1
``<|padding|>`` (pad), no BOS. Trained on the training split only (:func:`split_documents`), so
the validation loss is measured on text the tokenizer has not seen. The build is deterministic:
``python -m reprflow.training.corpus_tokenizer`` rewrites the shipped file byte for byte
(tests/training/test_corpus_tokenizer.py).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from reprflow.atomic import atomic_write_bytes
from reprflow.prompts.tokenizers import TOKENIZER_DIR
from reprflow.training.corpus import load_documents, split_documents

__all__ = ["DEMO_TOKENIZER", "SPECIAL_TOKENS", "build_corpus_tokenizer", "write_corpus_tokenizer"]

#: The shipped demo tokenizer: reprflow/data/tokenizers/nq-bpe-2048/tokenizer.json
DEMO_TOKENIZER = {"name": "nq-bpe-2048", "corpus": "nq_open", "vocab_size": 2048, "val_fraction": 0.1}
SPECIAL_TOKENS = ("<|endoftext|>", "<|padding|>")  # ids 0 and 1


def build_corpus_tokenizer(corpus: str, vocab_size: int, val_fraction: float) -> Tokenizer:
    """Train a byte-level BPE with ``vocab_size`` ids (specials and the 256 bytes included) on
    the training split of ``corpus`` (documents in corpus order; the split of
    :func:`~reprflow.training.corpus.split_documents` at ``val_fraction``)."""
    train_docs, _ = split_documents(load_documents(corpus), val_fraction)
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(train_docs, trainer=trainer)
    return tok


def write_corpus_tokenizer(out_dir: str | os.PathLike, *, corpus: str, vocab_size: int, val_fraction: float) -> Path:
    """Build the tokenizer and write ``{out_dir}/tokenizer.json`` atomically; returns its path."""
    path = Path(out_dir) / "tokenizer.json"
    text = build_corpus_tokenizer(corpus, vocab_size, val_fraction).to_str(pretty=True)
    atomic_write_bytes(text.encode(), path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default=DEMO_TOKENIZER["name"], help="folder under reprflow/data/tokenizers")
    parser.add_argument("--corpus", default=DEMO_TOKENIZER["corpus"])
    parser.add_argument("--vocab-size", type=int, default=DEMO_TOKENIZER["vocab_size"])
    parser.add_argument("--val-fraction", type=float, default=DEMO_TOKENIZER["val_fraction"])
    args = parser.parse_args(argv)
    path = write_corpus_tokenizer(
        TOKENIZER_DIR / args.name, corpus=args.corpus, vocab_size=args.vocab_size, val_fraction=args.val_fraction
    )
    print(path)


if __name__ == "__main__":
    main()
