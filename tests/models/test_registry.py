"""Loading through from_pretrained: round trips, random inits, offline errors, context limits."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time

import pytest
import torch
from transformers import OpenAIGPTConfig

from reprflow.errors import ConfigError, ModelNotFoundError, ReprflowError
from reprflow.models import (
    InitSpec,
    build_from_config,
    build_tiny_model,
    load_model,
    model_max_context,
    tiny_config,
)
from reprflow.models.registry import model_provenance

FAMILIES = ["gpt_neo", "gpt_neox", "mamba", "mamba2", "gpt2", "llama", "bamba"]
SMALL = {"vocab_size": 128, "bos_token_id": 0, "eos_token_id": 0}
PRETRAINED = InitSpec("pretrained")


def _state_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    return {f: build_tiny_model(f, out_dir=root / f, seed=11, overrides=SMALL) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_through_save_pretrained(saved, family):
    model = load_model(str(saved[family]), init=PRETRAINED, seed=None)
    assert model.config.model_type == family
    assert not model.training
    reference = build_from_config(tiny_config(family, overrides=SMALL), seed=11)
    assert _state_equal(model, reference), f"{family}: weights changed through save_pretrained/from_pretrained"


def test_default_init_from_a_path_reproduces_the_saved_seed(saved):
    path = str(saved["mamba2"])
    pretrained = load_model(path, init=PRETRAINED, seed=None)
    same_seed = load_model(path, init=InitSpec("default"), seed=11)
    other_seed = load_model(path, init=InitSpec("default"), seed=12)
    assert _state_equal(pretrained, same_seed)
    assert not _state_equal(pretrained, other_seed)


def test_random_schemes_are_deterministic_and_leave_global_rng(saved):
    path = str(saved["gpt2"])
    rng = torch.get_rng_state()
    a = load_model(path, init=InitSpec("he", {"nonlinearity": "relu"}), seed=1)
    b = load_model(path, init=InitSpec("he", {"nonlinearity": "relu"}), seed=1)
    c = load_model(path, init=InitSpec("he", {"nonlinearity": "relu"}), seed=2)
    assert torch.equal(torch.get_rng_state(), rng)
    assert _state_equal(a, b) and not _state_equal(a, c)


def test_dtype_is_applied(saved):
    for init, seed in ((PRETRAINED, None), (InitSpec("gaussian"), 0)):
        model = load_model(str(saved["gpt_neox"]), init=init, seed=seed, dtype=torch.bfloat16)
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_random_scheme_needs_a_seed(saved):
    with pytest.raises(ConfigError, match="needs a seed"):
        load_model(str(saved["gpt2"]), init=InitSpec("xavier"), seed=None)


def test_offline_nonsense_id_fails_fast_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        load_model("nonsense-org/not-a-model-x9", init=PRETRAINED, seed=None, origin="config.models[0].hf_id")
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert "model 'nonsense-org/not-a-model-x9' (config.models[0].hf_id)" in message
    assert "unreachable (offline)" in message
    assert "`hf download nonsense-org/not-a-model-x9 --local-dir ./models/not-a-model-x9`" in message
    assert "huggingface-cli" not in message  # the pinned huggingface_hub ships `hf`, not huggingface-cli
    assert "set hf_id to its path" in message
    assert "HF_HOME" in message
    assert elapsed < 5, f"offline detection took {elapsed:.1f}s"
    with pytest.raises(ModelNotFoundError) as info:  # the CLI's argument: no config key to set
        load_model("nonsense-org/not-a-model-x9", init=PRETRAINED, seed=None, origin="MODEL")
    assert "copy the folder here and pass its path as MODEL instead of the id" in str(info.value)
    assert "hf_id" not in str(info.value)


def test_unreachable_hub_without_offline_flag_fails_fast(monkeypatch):
    """No offline flag, but the hub endpoint refuses connections: the probe must not wait for retries."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="unreachable"):
        load_model("nonsense-org/not-a-model-x9", init=InitSpec("default"), seed=0)
    assert time.perf_counter() - start < 5


def test_local_path_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="exists but has no config.json"):
        load_model(str(empty), init=PRETRAINED, seed=None)
    with pytest.raises(ModelNotFoundError, match="local path does not exist"):
        load_model(str(tmp_path / "missing" / "model"), init=PRETRAINED, seed=None)
    file = tmp_path / "weights.bin"
    file.write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        load_model(str(file), init=PRETRAINED, seed=None)


def test_unhandled_model_type_fails_before_reading_weights(tmp_path):
    OpenAIGPTConfig(n_layer=2, n_embd=32, n_head=2).save_pretrained(tmp_path)  # config only: no weights to read
    with pytest.raises(ReprflowError, match=r"model_type 'openai-gpt': no norm module .*add OVERRIDES\['openai-gpt'\]"):
        load_model(str(tmp_path), init=PRETRAINED, seed=None)


@pytest.mark.parametrize(
    ("family", "overrides", "expected"),
    [
        ("gpt_neo", {}, 2048),
        ("gpt_neox", {"max_position_embeddings": 4096}, 4096),
        ("gpt2", {"n_positions": 1024}, 1024),
        ("llama", {}, 2048),
        ("mamba", {}, None),
        ("mamba2", {}, None),
    ],
)
def test_model_max_context(family, overrides, expected):
    assert model_max_context(tiny_config(family, overrides=overrides)) == expected


def test_model_max_context_from_a_model(saved):
    assert model_max_context(load_model(str(saved["gpt_neo"]), init=PRETRAINED, seed=None)) == 2048


# ---------------------------------------------------------------- weights that do not match config.json


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_models_reload_with_no_weight_report(saved, family, caplog):
    # tied lm_heads (gpt_neo, mamba, gpt2) are not saved, and must not count as missing
    with caplog.at_level(logging.WARNING):
        model = load_model(str(saved[family]), init=PRETRAINED, seed=None)
    assert model_provenance(model)["weights"] == "pretrained"
    assert "not used by" not in caplog.text and "LOAD REPORT" not in caplog.text


def test_weights_of_another_model_are_refused(saved, tmp_path):
    wrong = _copy(saved["mamba"], tmp_path / "wrongw")
    shutil.copy(saved["gpt_neox"] / "config.json", wrong / "config.json")
    with pytest.raises(ModelNotFoundError) as info:
        load_model(str(wrong), init=PRETRAINED, seed=None, origin="MODEL")
    message = str(info.value)
    assert message.startswith(
        f"model '{wrong}' (MODEL): the weights in {wrong} do not match its config.json (model_type 'gpt_neox'): "
    )
    assert re.search(
        r"\d+ weight\(s\) of the model are missing from the checkpoint \(gpt_neox\.embed_in\.weight, ", message
    )
    assert ", ...) and would be random" in message and "\n" not in message


def test_weights_of_another_shape_are_refused(saved, tmp_path):
    wrong = _copy(saved["gpt_neox"], tmp_path / "shape")
    config = json.loads((wrong / "config.json").read_text())
    config["vocab_size"] = 256
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotFoundError) as info:
        load_model(str(wrong), init=PRETRAINED, seed=None)
    message = str(info.value)
    assert f"the weights in {wrong} do not match its config.json: 2 weight(s) have another shape" in message
    assert "gpt_neox.embed_in.weight: checkpoint (128, 64) vs config (256, 64)" in message


def test_unused_checkpoint_weights_only_warn(saved, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    extra = _copy(saved["gpt_neo"], tmp_path / "extra")
    weights = load_file(extra / "model.safetensors")
    weights["transformer.h.0.attn.attention.bias"] = torch.ones(1, 1, 8, 8, dtype=torch.bool)  # an old buffer
    save_file(weights, extra / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING):
        model = load_model(str(extra), init=PRETRAINED, seed=None)
    reference = build_from_config(tiny_config("gpt_neo", overrides=SMALL), seed=11)
    assert _state_equal(model, reference)
    assert (
        f"model '{extra}' (model): 1 checkpoint weight(s) are not used by GPTNeoForCausalLM and were skipped "
        "(transformer.h.0.attn.attention.bias)" in caplog.text
    )


def test_truncated_safetensors_is_one_error_naming_the_file(saved, tmp_path):
    broken = _copy(saved["gpt_neox"], tmp_path / "trunc")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelNotFoundError) as info:
        load_model(str(broken), init=PRETRAINED, seed=None, origin="MODEL")
    assert str(info.value) == (
        f"model '{broken}' (MODEL): {weights} is damaged or truncated (Error while deserializing header: "
        "incomplete metadata, file not fully covered); re-download or re-save it"
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__


# ---------------------------------------------------------------- revision of a local folder


@pytest.mark.parametrize("init", [PRETRAINED, InitSpec("default")])
def test_a_revision_for_a_local_folder_is_refused(saved, init):
    path = str(saved["gpt_neox"])
    with pytest.raises(ConfigError) as info:
        load_model(path, init=init, seed=0, revision="main", origin="config.models[0].hf_id")
    assert str(info.value).startswith(
        f"model '{path}' (config.models[0].hf_id): --revision/revision applies to hub ids; '{path}' is a local "
        "folder: it has no `hf download` record to check the revision against, so the revision would be ignored "
        "yet recorded in the store's provenance; drop it (`revision: null`, no --revision)"
    )


def test_a_revision_is_accepted_only_when_the_folders_download_record_holds_it(saved, tmp_path):
    from huggingface_hub._local_folder import write_download_metadata

    folder = _copy(saved["gpt_neox"], tmp_path / "downloaded")
    commit = "d37e168787d7419ff28a946dc7105b1252f752a7"
    for name in ("config.json", "model.safetensors"):  # what `hf download --local-dir` leaves behind
        write_download_metadata(folder, name, commit, "etag")
    model = load_model(str(folder), init=PRETRAINED, seed=None, revision=commit)
    assert model_provenance(model)["revision"] == commit
    with pytest.raises(ConfigError, match=f"its `hf download` record .* says it holds commit {commit}, not 'main'"):
        load_model(str(folder), init=PRETRAINED, seed=None, revision="main")
    with pytest.raises(ConfigError, match=f"holds commit {commit}, not '{'0' * 40}'"):
        load_model(str(folder), init=PRETRAINED, seed=None, revision="0" * 40)
