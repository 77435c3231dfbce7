"""Shipped tokenizers: ids from SOURCE.md, pad tokens, errors."""

import pytest

from reprflow.errors import PromptError
from reprflow.prompts import available_tokenizers, load_tokenizer, tokenizer_sha256
from reprflow.prompts.tokenizers import TOKENIZER_DIR


@pytest.mark.parametrize(
    ("name", "ids", "pad", "pad_id"),
    [
        ("gpt2", [464, 2068, 7586, 21831], "<|endoftext|>", 50256),
        ("gpt-neox-20b", [510, 3158, 8516, 30013], "<|padding|>", 1),
    ],
)
def test_shipped_tokenizers_match_source_md(tokenizers, name, ids, pad, pad_id):
    tok = tokenizers[name]
    assert tok("The quick brown fox", add_special_tokens=False)["input_ids"] == ids
    assert tok("The quick brown fox")["input_ids"] == ids  # no BOS/EOS is ever added
    assert tok.pad_token == pad and tok.pad_token_id == pad_id
    assert tok.eos_token == "<|endoftext|>"
    assert tok.padding_side == "right"


def test_load_by_path_equals_load_by_name(tokenizers):
    tok = load_tokenizer(TOKENIZER_DIR / "gpt2" / "tokenizer.json")
    text = 'Key: "3f2a-11"\nCorresponding value:'
    assert tok(text)["input_ids"] == tokenizers["gpt2"](text)["input_ids"]


def test_sha256_matches_source_md():
    assert tokenizer_sha256("gpt2") == "e88dafdf79f2026eaffb161c36a8b914b5fa586a620d108b9fecc117f74dbdd7"
    assert tokenizer_sha256("nq-bpe-2048") == "4ce40f5d466ed8158825d892c2d09c12ff64823d270923cd1de03fce2f65b2d8"
    assert available_tokenizers() == ["gpt-neox-20b", "gpt2", "nq-bpe-2048"]


def test_unknown_tokenizer_lists_available_ones():
    with pytest.raises(PromptError, match=r"'llama-7b'.*gpt-neox-20b.*gpt2"):
        load_tokenizer("llama-7b")
