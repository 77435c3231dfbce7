"""KVPR prompt sets: calibrated length, cap, labels, answers, determinism, errors."""

import json
import math

import numpy as np
import pytest

from reprflow.errors import PromptError
from reprflow.prompts import build_prompt_set, read_prompt_set, write_prompt_set


def parse_kvpr(prompt: str) -> tuple[list[tuple[str, str]], str]:
    """Independent parse of a KVPR prompt: the ordered pairs and the query key."""
    head, rest = prompt.split("JSON data:\n", 1)
    body, tail = rest.split("\n\nKey: ", 1)
    assert head == "Extract the value corresponding to the specified key in the JSON object below.\n\n"
    assert tail.endswith("\nCorresponding value:")
    return json.loads(body, object_pairs_hook=list), json.loads(tail.split("\n", 1)[0])


@pytest.mark.parametrize("tok", ["gpt2", "gpt-neox-20b"])
def test_kvpr_1024_median_within_5_percent(tokenizers, tok):
    records, manifest = build_prompt_set(
        "kvpr", target_tokens=1024, tokenizer_name=tok, n_prompts=36, seed=0, progress=False
    )
    n_tokens = np.array([r["n_tokens"] for r in records])
    assert abs(np.median(n_tokens) - 1024) <= 0.05 * 1024
    assert n_tokens.max() <= math.floor(1024 * 1.05) == manifest["max_tokens"]
    # n_tokens is the real count with no special tokens
    recount = [len(x) for x in tokenizers[tok]([r["prompt"] for r in records], add_special_tokens=False)["input_ids"]]
    assert recount == n_tokens.tolist()
    n_items = manifest["n_items"]
    assert {r["n_items"] for r in records} == {n_items}
    counts = np.bincount([r["label"] for r in records], minlength=n_items)
    assert counts.max() - counts.min() <= 1
    for r in records:
        pairs, key = parse_kvpr(r["prompt"])
        assert len(pairs) == n_items and len({k for k, _ in pairs}) == n_items
        assert list(pairs[r["label"]]) == [key, r["answer"]]


@pytest.mark.parametrize("tok", ["gpt2", "gpt-neox-20b"])
def test_kvpr_300_is_too_coarse_for_5_percent(tok):
    # A UUID pair is ~54 tokens (18% of 300): 4 pairs give ~270 tokens, 5 pairs ~325.
    expected = rf"kvpr n300 {tok}: .*n_items=4: natural median 2\d\d.*n_items=5: natural median 3\d\d"
    with pytest.raises(PromptError, match=expected):
        build_prompt_set("kvpr", target_tokens=300, tokenizer_name=tok, n_prompts=8, seed=0, progress=False)
    records, manifest = build_prompt_set(
        "kvpr", target_tokens=300, tokenizer_name=tok, n_prompts=8, seed=0, tolerance=0.1, progress=False
    )
    assert abs(manifest["achieved"]["median"] - 300) <= 30
    assert max(r["n_tokens"] for r in records) <= 330


def test_context_limit_tightens_the_cap_and_never_loosens_it():
    records, manifest = build_prompt_set(
        "kvpr", target_tokens=1024, tokenizer_name="gpt2", n_prompts=40, seed=1, max_tokens=1024, progress=False
    )
    assert max(r["n_tokens"] for r in records) <= 1024
    assert manifest["max_tokens"] == 1024 and manifest["context_limit"] == 1024
    _, manifest = build_prompt_set(
        "kvpr", target_tokens=1024, tokenizer_name="gpt2", n_prompts=4, seed=1, max_tokens=2048, progress=False
    )
    assert manifest["max_tokens"] == 1075 and manifest["context_limit"] == 2048


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(target_tokens=200, tokenizer_name="gpt2", n_prompts=12, tolerance=0.2, progress=False)
    paths = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        records, manifest = build_prompt_set("kvpr", seed=seed, **kw)
        paths.append(write_prompt_set(records, manifest, tmp_path / name / "kvpr_n200.jsonl"))
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b and a != c
    manifests = [(tmp_path / d / "kvpr_n200.manifest.json").read_bytes() for d in "abc"]
    assert manifests[0] == manifests[1] and manifests[0] != manifests[2]
    assert read_prompt_set(paths[0]) == [json.loads(x) for x in a.decode().splitlines()]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["kvpr_n200.jsonl", "kvpr_n200.manifest.json"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(task="kvqa"), r"unknown task 'kvqa'.*kvpr.*mdqa"),
        (dict(target_tokens=0), r"target_tokens must be an int in \[1, 2\*\*32\), got 0"),
        (dict(target_tokens=-300), r"target_tokens must be an int in \[1, 2\*\*32\), got -300"),
        (dict(target_tokens=300.0), r"target_tokens must be an int .*got 300.0"),
        (dict(n_prompts=0), r"n_prompts must be an int in \[1"),
        (dict(seed=-1), r"seed must be an int in \[0"),
        (dict(tokenizer_name="gpt3"), r"tokenizer 'gpt3'.*available names.*gpt2"),
        (dict(tolerance=0), r"tolerance must be in \(0, 1\)"),
        (dict(max_tokens=100), r"kvpr n300: max_tokens=100 leaves no room .*needs >= 285"),
        (dict(max_tokens=2.5), r"max_tokens must be a positive int or None, got 2.5"),
        (dict(task="mdqa"), r"oracle_path is required"),
    ],
)
def test_bad_arguments_name_the_culprit(kwargs, match):
    args = dict(task="kvpr", target_tokens=300, tokenizer_name="gpt2", n_prompts=4, seed=0, progress=False) | kwargs
    task = args.pop("task")
    with pytest.raises(PromptError, match=match):
        build_prompt_set(task, **args)
