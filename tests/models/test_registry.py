"""Loading through from_pretrained: round trips, random inits, offline errors, context limits."""

from __future__ import annotations

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
