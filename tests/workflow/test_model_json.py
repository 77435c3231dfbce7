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
    assert message.startswith(
        f"config.models[{len(raw['models']) - 1}] (mine): lengths [600] exceed its context window of 512 tokens "
        f"(read from {hf_id}/config.json); set `max_context: 512` in that entry"
    ), message
    raw["models"][-1]["max_context"] = 1024  # set, but above the model's own window
    with pytest.raises(ConfigError, match=r"max_context is 1024, above the model's own window: set it to 512"):
        check_context_windows(validate_config(raw))
    raw["models"][-1]["max_context"] = 512  # the fix: 600 is skipped for this model
    check_context_windows(validate_config(raw))


def test_a_custom_task_length_counts_and_unknown_windows_pass(tmp_path):
    hf_id = _local(tmp_path, {"model_type": "gpt_neox", "max_position_embeddings": 256})
    raw = _demo_with({"name": "mine", "family": "gpt_neox", "hf_id": hf_id}, lengths=[200])
    raw["figures"]["length"] = 200
    raw["custom_tasks"]["qword"].update(length=300, models=None)  # every model, beyond mine's window
    with pytest.raises(ConfigError, match=r"\(mine\): lengths \[300\] exceed its context window of 256"):
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
        ConfigError, match=r"lengths \[4096\] exceed its context window of 2048 tokens \(read from .*configs"
    ):
        check_context_windows(validate_config(raw))
