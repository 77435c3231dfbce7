"""Custom tasks: a user's JSONL of {"prompt", "label"} records -> a workflow prompt set."""

import copy
import json

import pytest
import yaml

from reprflow.config import PROJECT_ROOT, validate_config
from reprflow.errors import ConfigError, PromptError
from reprflow.prompts import read_prompt_set, write_prompt_set
from reprflow.prompts.custom import build_custom_prompt_set, check_custom_tasks, read_user_jsonl

GOOD = [
    {"prompt": "Question: who wrote it?\nAnswer:", "label": 0},
    {"prompt": "Question: when was it written?\nAnswer:", "label": 1, "source": "ignored"},
    {"prompt": "Question: where is it kept?\nAnswer:", "label": 2},
]


def _write(tmp_path, lines, name="mine.jsonl"):
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


def test_records_become_a_prompt_set_the_workflow_reads(tmp_path, tokenizers):
    path = _write(tmp_path, [GOOD[0], "", GOOD[1], GOOD[2]])  # a blank line is skipped
    spec = {"jsonl": path.name, "length": 64}
    records, manifest = build_custom_prompt_set("qa", spec, tokenizer_name="gpt2", root=tmp_path)
    expected_tokens = [len(tokenizers["gpt2"](r["prompt"], add_special_tokens=False)["input_ids"]) for r in GOOD]
    assert [r["n_tokens"] for r in records] == expected_tokens
    assert [(r["id"], r["task"], r["prompt"], r["label"], r["n_items"], r["answer"], r["group"]) for r in records] == [
        (f"qa-{i:06d}", "qa", g["prompt"], g["label"], 3, None, i) for i, g in enumerate(GOOD)
    ]
    assert manifest["target_tokens"] == 64 and manifest["label_counts"] == [1, 1, 1] and manifest["n_prompts"] == 3
    out = write_prompt_set(records, manifest, tmp_path / "gpt2" / "qa_n64.jsonl")
    assert read_prompt_set(out) == records  # validated against its manifest, as extraction reads it


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "x", "label": 0', "line 2: not JSON ("),
        ('["x", 0]', "line 2: expected a JSON object, got list"),
        ('{"text": "x", "label": 0}', "line 2: no 'prompt' key (keys: ['label', 'text'])"),
        ('{"prompt": 5, "label": 0}', "line 2: 'prompt' must be a string, got int"),
        ('{"prompt": "  ", "label": 0}', "line 2: 'prompt' is empty; give it text or delete the line"),
        ('{"prompt": "x"}', "line 2: no 'label' key; add the prompt's class as an int >= 0"),
        (
            '{"prompt": "x", "label": "1"}',
            "line 2: 'label' must be an int >= 0 (the probe's class), got '1'; write it as a bare",
        ),
        ('{"prompt": "x", "label": 1.0}', "got 1.0; write it as a bare integer"),
        ('{"prompt": "x", "label": true}', "got True; write it as a bare integer"),
        ('{"prompt": "x", "label": -1}', "got -1; write it as a bare integer"),
        (json.dumps(GOOD[0]), "line 2: same prompt as line 1; a prompt set holds no two equal prompts"),
    ],
)
def test_each_bad_record_is_named_by_file_line_and_fix(tmp_path, line, message):
    path = _write(tmp_path, [GOOD[0], line, GOOD[1]])
    with pytest.raises(PromptError) as err:
        build_custom_prompt_set("qa", {"jsonl": path.name, "length": 64}, tokenizer_name="gpt2", root=tmp_path)
    text = str(err.value)
    assert text.startswith(f"config.custom_tasks.qa.jsonl: {path} ") and message in text, text
    assert "\n" not in text


def test_one_class_empty_file_and_missing_file(tmp_path):
    one = _write(tmp_path, [{"prompt": "a", "label": 1}, {"prompt": "b", "label": 1}], "one.jsonl")
    with pytest.raises(PromptError, match=r"all 2 records have label 1; a probe needs two classes or more"):
        build_custom_prompt_set("qa", {"jsonl": one.name, "length": 8}, tokenizer_name="gpt2", root=tmp_path)
    _write(tmp_path, [""], "empty.jsonl")
    with pytest.raises(PromptError, match=r"empty.jsonl: no records \(empty file\)"):
        read_user_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(PromptError, match=r"gone.jsonl: no such prompt file"):
        read_user_jsonl(tmp_path / "gone.jsonl")


def test_a_prompt_above_the_length_cap_names_its_line_and_the_key(tmp_path, tokenizers):
    long = {"prompt": "word " * 40, "label": 1}
    path = _write(tmp_path, [GOOD[0], long])
    n = len(tokenizers["gpt-neox-20b"](long["prompt"], add_special_tokens=False)["input_ids"])
    with pytest.raises(PromptError) as err:
        build_custom_prompt_set("qa", {"jsonl": path.name, "length": 16}, tokenizer_name="gpt-neox-20b", root=tmp_path)
    assert (
        f"{path} line 2: the prompt has {n} tokens under tokenizer gpt-neox-20b, above "
        "config.custom_tasks.qa.length = 16"
    ) in str(err.value)
    assert "raise config.custom_tasks.qa.length" in str(err.value)


def test_the_cli_reads_the_same_records_with_labels_optional(tmp_path):
    path = _write(tmp_path, [{"prompt": "a"}, {"prompt": "b", "label": 2}])
    assert [(r["prompt"], r["label"], r["line"]) for r in read_user_jsonl(path, require_label=False)] == [
        ("a", -1, 1),
        ("b", 2, 2),
    ]


def test_a_file_not_in_utf8_names_its_line_and_a_bom_is_read(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "tea", "label": 0}\n{"prompt": "caf\xe9", "label": 1}\n')
    with pytest.raises(PromptError) as err:
        read_user_jsonl(path)
    assert str(err.value) == f"{path} line 2: not UTF-8 text (byte 0xe9 at offset 45); save the file as UTF-8"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in GOOD).encode())  # saved by Excel
    assert [r["prompt"] for r in read_user_jsonl(path)] == [r["prompt"] for r in GOOD]


# ----------------------------------------------------------------------------- the config form


@pytest.fixture(scope="module")
def demo() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())


def test_demo_custom_task_tasks_lengths_and_checked_file(demo):
    cfg = validate_config(demo)
    assert cfg.paper_tasks == ["kvpr", "mdqa"] and cfg.tasks == ["kvpr", "mdqa", "qword"]
    assert cfg.task_lengths("qword") == [40] and cfg.task_lengths("kvpr") == [300, 600]
    assert cfg.runs_task("tiny-mamba", "qword") and not cfg.runs_task("tiny-gpt-neo", "qword")
    assert cfg.paper_only().tasks == ["kvpr", "mdqa"] and cfg.paper_only().models == cfg.models
    check_custom_tasks(cfg, root=PROJECT_ROOT)  # the shipped demo file is valid


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update(kvpr=t.pop("qword")), "config.custom_tasks.kvpr: a custom task needs a lowercase name"),
        (
            lambda t: t.update({"My Task": t.pop("qword")}),
            "config.custom_tasks.My Task: a custom task needs a lowercase",
        ),
        (lambda t: t["qword"].pop("length"), "config.custom_tasks.qword: 'length' is a required property"),
        (lambda t: t["qword"].update(length=0), "config.custom_tasks.qword.length: must be >= 1, got 0"),
        (lambda t: t["qword"].update(lenght=3), "config.custom_tasks.qword: unknown key 'lenght'"),
        (
            lambda t: t["qword"].update(models=["tiny-gpt2"]),
            "config.custom_tasks.qword.models[0]: 'tiny-gpt2' is not a model name; use one of",
        ),
    ],
)
def test_bad_custom_task_entries_name_the_key(demo, change, message):
    raw = copy.deepcopy(demo)
    change(raw["custom_tasks"])
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    assert str(err.value).startswith(message), str(err.value)


def test_a_bad_record_is_reported_before_any_job(demo, tmp_path):
    raw = copy.deepcopy(demo)
    _write(tmp_path, [GOOD[0], '{"prompt": "x", "label": "a"}'])
    raw["custom_tasks"]["qword"]["jsonl"] = "mine.jsonl"
    with pytest.raises(PromptError, match=r"^config.custom_tasks.qword.jsonl: .*mine.jsonl line 2: 'label' must be"):
        check_custom_tasks(validate_config(raw), root=tmp_path)
