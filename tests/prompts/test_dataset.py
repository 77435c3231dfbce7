"""Prompt-set files: validation naming the bad line and id, manifest checks, atomic writes."""

import json

import pytest

from reprflow.errors import PromptError
from reprflow.prompts import (
    manifest_path,
    prompt_set_path,
    read_manifest,
    read_prompt_groups,
    read_prompt_set,
    write_prompt_set,
)


def record(i=0, **kw):
    rec = {
        "id": f"kvpr-n300-{i:06d}",
        "task": "kvpr",
        "prompt": f"p{i}",
        "label": 1,
        "n_items": 4,
        "n_tokens": 9,
        "answer": "v",
        "group": i,
    }
    return rec | kw


def test_paths_follow_the_contract(tmp_path):
    p = prompt_set_path(tmp_path, "gpt2", "mdqa", 2048)
    assert p == tmp_path / "gpt2" / "mdqa_n2048.jsonl"
    assert manifest_path(p) == tmp_path / "gpt2" / "mdqa_n2048.manifest.json"
    with pytest.raises(PromptError, match="unknown task 'qa'"):
        prompt_set_path(tmp_path, "gpt2", "qa", 300)


def test_roundtrip_and_manifest_hash(tmp_path):
    path = write_prompt_set([record(0), record(1, label=3)], {"seed": 1}, tmp_path / "kvpr_n300.jsonl")
    assert [r["label"] for r in read_prompt_set(path)] == [1, 3]
    manifest = json.loads(manifest_path(path).read_text())
    assert manifest["seed"] == 1 and manifest["n_records"] == 2 and len(manifest["prompts_sha256"]) == 64
    path.write_text(path.read_text().replace('"p0"', '"q0"'))
    with pytest.raises(PromptError, match="differs from its manifest"):
        read_prompt_set(path)
    manifest_path(path).unlink()
    with pytest.raises(PromptError, match="manifest kvpr_n300.manifest.json missing"):
        read_prompt_set(path)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (record(1, label=4), r"line 2 \(id 'kvpr-n300-000001'\): 'label' must be an int in \[0, n_items=4\)"),
        (record(1, n_tokens=0), r"line 2 \(id 'kvpr-n300-000001'\): 'n_tokens' must be a positive int"),
        (record(1, answer=["v"]), r"line 2 \(id 'kvpr-n300-000001'\): KVPR 'answer'"),
        (record(1, task="mdqa"), r"line 2 .*MDQA 'answer'"),
        (record(1, task="qa"), r"line 2 .*a custom task's 'answer' is null, got 'v'"),  # a custom task's record
        (record(1, task=""), r"line 2 .*'task' must be kvpr or mdqa or a custom task's name"),
        ({k: v for k, v in record(1).items() if k != "prompt"}, r"line 2 .*missing keys \['prompt'\]"),
        (record(0), r"line 2: duplicate id 'kvpr-n300-000000'"),
        (record(1, prompt="p0"), r"line 2 \(id 'kvpr-n300-000001'\): same prompt text as 'kvpr-n300-000000'"),
        (record(1, group=-1), r"line 2 .*'group' must be an int >= 0"),
        ({k: v for k, v in record(1).items() if k != "group"}, r"line 2 .*missing keys \['group'\].*rebuild"),
    ],
)
def test_malformed_record_names_line_and_id(tmp_path, bad, match):
    path = tmp_path / "kvpr_n300.jsonl"
    path.write_text(json.dumps(record(0)) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(PromptError, match=match):
        read_prompt_set(path, check_manifest=False)


def test_bad_json_line_and_missing_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(record(0)) + "\n{oops\n")
    with pytest.raises(PromptError, match=r"x.jsonl line 2: not valid JSON"):
        read_prompt_set(path, check_manifest=False)
    with pytest.raises(PromptError, match="not found"):
        read_prompt_set(tmp_path / "nope.jsonl")


def test_write_refuses_bad_records_and_leaves_nothing(tmp_path):
    out = tmp_path / "kvpr_n300.jsonl"
    with pytest.raises(PromptError, match=r"record 1 \(id 'kvpr-n300-000001'\): 'label'"):
        write_prompt_set([record(0), record(1, label=-1)], {}, out)
    with pytest.raises(PromptError, match=r"record 1 \(id 'kvpr-n300-000001'\): same prompt text"):
        write_prompt_set([record(0), record(1, prompt="p0", label=2)], {}, out)
    assert list(tmp_path.iterdir()) == []


def test_groups_are_read_back_and_checked_against_a_sha(tmp_path):
    path = write_prompt_set([record(0, group=5), record(1, group=5, label=3)], {}, tmp_path / "mdqa_n300.jsonl")
    groups, labels = read_prompt_groups(path, sha256=read_manifest(path)["prompts_sha256"])
    assert groups.tolist() == [5, 5] and labels.tolist() == [1, 3]
    with pytest.raises(PromptError, match="differs from the one recorded by the activation store"):
        read_prompt_groups(path, sha256="0" * 64)
