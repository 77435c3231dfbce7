"""Shared fixtures for the prompt tests: shipped tokenizers and a tiny synthetic oracle file."""

import gzip
import json
from pathlib import Path

import pytest

from reprflow.prompts import load_tokenizer

ORACLE = Path(__file__).resolve().parents[2] / "data" / "lost_in_the_middle" / "nq-open-oracle.jsonl.gz"

_WORDS = (
    "river mountain castle empire planet violin engine harbor forest desert glacier island comet "
    "bridge temple canyon market museum orbit valley"
).split()


@pytest.fixture(scope="session")
def tokenizers():
    """Both shipped tokenizers, loaded once."""
    return {name: load_tokenizer(name) for name in ("gpt2", "gpt-neox-20b")}


def synthetic_examples(n: int = 24) -> list[dict]:
    """``n`` oracle-format records: question i, answer ``answer<i>``, gold passage naming it."""
    recs = []
    for i in range(n):
        topic = f"{_WORDS[i % len(_WORDS)]} {_WORDS[(3 * i + 1) % len(_WORDS)]}"
        text = f"The {topic} is described here. It was founded by answer{i} long ago. " * (1 + i % 3)
        recs.append(
            {
                "question": f"who founded the {topic} number {i}",
                "answers": [f"answer{i}"],
                "ctxs": [{"title": f"Title {i}", "text": text.strip(), "hasanswer": True, "isgold": True}],
            }
        )
    return recs


@pytest.fixture(scope="session")
def oracle_path() -> Path:
    """The project's copy of Liu et al.'s nq-open-oracle.jsonl.gz."""
    return ORACLE


@pytest.fixture(scope="session")
def make_synthetic_records():
    """``make_synthetic_records(n)``: :func:`synthetic_examples`, for tests that need raw records."""
    return synthetic_examples


@pytest.fixture
def synthetic_oracle(tmp_path) -> Path:
    """A gzipped oracle file of 24 synthetic questions."""
    path = tmp_path / "oracle.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for rec in synthetic_examples():
            fh.write(json.dumps(rec) + "\n")
    return path
