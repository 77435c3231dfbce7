"""reprflow.token_ids: token ids made ahead in a background thread equal one batched call."""

from __future__ import annotations

import threading

import pytest

from reprflow.errors import PromptError
from reprflow.prompts.tokenizers import load_tokenizer
from reprflow.token_ids import TokenIds, tokenize_prompts

WORDS = "alpha beta gamma delta key value pair middle".split()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("gpt-neox-20b")


def _prompts(tokenizer, n: int) -> list[dict]:
    out = []
    for i in range(n):
        text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(2 + i % 9))
        out.append({"id": f"p{i}", "prompt": text, "n_tokens": len(tokenizer(text)["input_ids"])})
    return out


@pytest.mark.parametrize("background", [True, False])
def test_ids_equal_one_batched_call_in_any_read_order(tokenizer, background):
    prompts = _prompts(tokenizer, 23)
    order = [*range(5, 23), 3, 0]  # a shard, then prompts other sinks need
    want = tokenize_prompts(tokenizer, prompts, order, prompt_file="f.jsonl")
    with TokenIds(tokenizer, prompts, order, prompt_file="f.jsonl", chunk=4, background=background) as ids:
        assert list(ids) == order and len(ids) == len(order) and 3 in ids and 4 not in ids
        assert ids[0] == want[0]  # the last chunk, read first: waits for all before it
        assert {i: ids[i] for i in reversed(order)} == want
        assert ids.wait_all() is ids
        with pytest.raises(KeyError):
            ids[4]
    assert ids.busy_s > 0


def test_a_bad_record_fails_the_reader_of_its_chunk_not_the_earlier_ones(tokenizer):
    prompts = _prompts(tokenizer, 12)
    prompts[9] = {**prompts[9], "n_tokens": prompts[9]["n_tokens"] + 1}
    with TokenIds(tokenizer, prompts, range(12), prompt_file="f.jsonl", chunk=4) as ids:
        assert ids[7] == tokenize_prompts(tokenizer, prompts, [7], prompt_file="f.jsonl")[7]  # chunk 1 is fine
        for read in (lambda: ids[8], lambda: ids[11], ids.wait_all):  # chunk 2 holds the bad record
            with pytest.raises(PromptError, match=r"f\.jsonl: prompt 'p9' tokenizes to \d+ tokens .* record says"):
                read()
    with pytest.raises(PromptError, match="prompt 'p9'"):  # without a thread: at once
        TokenIds(tokenizer, prompts, range(12), prompt_file="f.jsonl", chunk=4, background=False)


def test_close_stops_the_thread_and_readers_learn_it(tokenizer):
    prompts = _prompts(tokenizer, 40)
    ids = TokenIds(tokenizer, prompts, range(40), prompt_file="f.jsonl", chunk=1)
    ids.close()
    assert not any(t.name == "reprflow-tokenizer" and t.is_alive() for t in threading.enumerate())
    if len(ids._ids) < 40:  # stopped before the end (the usual case): a read past it says so
        with pytest.raises(RuntimeError, match="tokenizer thread was stopped"):
            ids.wait_all()
