"""The planning-time reading of a model's config.json: its context window checked before any job."""

import json

import pytest
import yaml

from reprflow.config import PROJECT_ROOT, validate_config
from reprflow.errors import ConfigError
from reprflow.workflow.model_json import check_context_windows, context_window, read_model_json


def _demo_with(model: dict, lengths=(300, 600)) -> dict:
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    raw["lengths"] = list(lengths)
    raw["models"].append({"tokenizer": "gpt-neox-20b", **model})
    return raw


def _local(tmp_path, config: dict, name: str = "my-model"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize(
    "config, window",
    [
        ({"model_type": "gpt2", "n_positions": 512, "n_ctx": 1024}, 512),
        ({"model_type": "llava", "text_config": {"max_position_embeddings": 4096}}, 4096),
        ({"model_type": "mamba", "hidden_size": 768}, None),
        ({"max_position_embeddings": True}, None),  # a bool is not a window
    ],
)
def test_context_window_of_a_config_json(config, window):
    assert context_window(config) == window


def test_a_local_model_read_past_its_window_is_refused_before_any_job(tmp_path):
    hf_id = _local(tmp_path, {"model_type": "gpt_neox", "max_position_embeddings": 512})
    raw = _demo_with({"name": "mine", "family": "gpt_neox", "hf_id": hf_id})
    with pytest.raises(ConfigError) as err:
        check_context_windows(validate_config(raw))
    (message,) = str(err.value).splitlines()
    assert message == (
        f"config.models[{len(raw['models']) - 1}] (mine): its prompts may have up to 630 tokens at length 600, "
        f"beyond its context window of 512 tokens (read from {hf_id}/config.json); set `max_context: 512` in that "
        "entry (its prompts are then cut to fit and longer lengths skipped)"
    ), message
    raw["models"][-1]["max_context"] = 1024  # set, but above the model's own window
    with pytest.raises(ConfigError, match=r"max_context is 1024, above the model's own window: set it to 512"):
        check_context_windows(validate_config(raw))
    raw["models"][-1]["max_context"] = 512  # the fix: 600 is skipped for this model
    check_context_windows(validate_config(raw))


def test_a_length_equal_to_the_window_needs_max_context_to_cut_its_prompts(tmp_path):
    """Prompts at a length run up to length x (1 + tolerance) unless a model's max_context caps the set."""
    hf_id = _local(tmp_path, {"model_type": "gpt_neox", "max_position_embeddings": 600})
    raw = _demo_with({"name": "mine", "family": "gpt_neox", "hf_id": hf_id})
    with pytest.raises(ConfigError, match=r"up to 630 tokens at length 600, beyond its context window of 600"):
        check_context_windows(validate_config(raw))
    raw["models"][-1]["max_context"] = 600  # the set is capped at 600: every prompt fits
    check_context_windows(validate_config(raw))


def test_a_custom_task_length_counts_and_unknown_windows_pass(tmp_path):
    hf_id = _local(tmp_path, {"model_type": "gpt_neox", "max_position_embeddings": 256})
    raw = _demo_with({"name": "mine", "family": "gpt_neox", "hf_id": hf_id}, lengths=[200])
    raw["figures"]["length"] = 200
    raw["custom_tasks"]["qword"].update(length=300, models=None)  # every model, beyond mine's window
    with pytest.raises(
        ConfigError,
        match=r"\(mine\): its prompts may have up to 300 tokens at length 300, beyond its context window of 256",
    ):
        check_context_windows(validate_config(raw))
    ssm = _local(tmp_path, {"model_type": "mamba"}, name="my-ssm")
    raw = _demo_with({"name": "ssm", "family": "mamba", "hf_id": ssm}, lengths=[100_000])
    raw["figures"]["length"] = 100_000
    raw["models"] += [{"name": "hub", "family": "gpt_neox", "hf_id": "org/not-shipped", "tokenizer": "gpt-neox-20b"}]
    check_context_windows(validate_config(raw))  # no window declared / not known offline: the job checks
    assert read_model_json("org/not-shipped") is None


def test_the_paper_config_passes_and_a_shipped_window_is_enforced():
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "config.yaml").read_text())
    check_context_windows(validate_config(raw))
    neo = next(i for i, m in enumerate(raw["models"]) if m["hf_id"] == "EleutherAI/gpt-neo-2.7B")
    del raw["models"][neo]["max_context"]
    with pytest.raises(
        ConfigError,
        match=r"up to 2150 tokens at length 2048, 4300 tokens at length 4096, beyond its context window of 2048 tokens \(read from .*configs",
    ):
        check_context_windows(validate_config(raw))
