"""Tiny demo models: configs match the tokenizers, saves are atomic and deterministic."""

from __future__ import annotations

import json

import pytest

from reprflow.errors import ConfigError
from reprflow.models import TINY_TOKENIZERS, build_tiny_model, get_layout, tiny_config
from reprflow.models import tiny as tiny_module

TOKENIZER_SIZES = {"gpt2": 50257, "gpt-neox-20b": 50277}


@pytest.mark.parametrize("family", sorted(TINY_TOKENIZERS))
def test_tiny_configs_are_small_and_cover_the_tokenizer(family):
    config = tiny_config(family)
    assert config.model_type == family
    assert config.num_hidden_layers == 4 and config.hidden_size == 64
    assert config.vocab_size >= TOKENIZER_SIZES[TINY_TOKENIZERS[family]]
    assert config.vocab_size - TOKENIZER_SIZES[TINY_TOKENIZERS[family]] < 64  # padded, not oversized
    get_layout(config)


def test_tokenizer_pairing_and_context():
    assert TINY_TOKENIZERS["gpt_neo"] == "gpt2"
    assert tiny_config("gpt_neo").vocab_size == 50257
    assert {TINY_TOKENIZERS[f] for f in ("gpt_neox", "mamba", "mamba2")} == {"gpt-neox-20b"}
    assert tiny_config("gpt_neox").max_position_embeddings == 2048
    assert tiny_config("gpt_neo").max_position_embeddings == 2048


def test_gpt_neo_keeps_global_local_mix():
    config = tiny_config("gpt_neo")
    assert config.attention_layers == ["global", "local", "global", "local"]
    assert config.window_size == 32


def test_overrides_are_validated():
    assert tiny_config("mamba", overrides={"num_hidden_layers": 2}).num_hidden_layers == 2
    with pytest.raises(ConfigError, match=r"unknown config override\(s\) \['num_layerz'\]"):
        tiny_config("gpt_neox", overrides={"num_layerz": 2})
    with pytest.raises(ConfigError, match="tiny model family 'rwkv' is unknown"):
        tiny_config("rwkv")


def test_build_writes_provenance_and_is_deterministic(tmp_path):
    overrides = {"vocab_size": 64, "num_hidden_layers": 2}
    a = build_tiny_model("mamba", out_dir=tmp_path / "a", seed=5, overrides=overrides)
    b = build_tiny_model("mamba", out_dir=tmp_path / "b", seed=5, overrides=overrides)
    c = build_tiny_model("mamba", out_dir=tmp_path / "c", seed=6, overrides=overrides)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    provenance = json.loads((a / tiny_module.PROVENANCE_FILE).read_text())
    assert provenance["family"] == "mamba" and provenance["seed"] == 5
    assert provenance["overrides"] == overrides and provenance["tokenizer"] == "gpt-neox-20b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temp dirs left


def test_rebuild_replaces_and_failed_build_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "m"
    build_tiny_model("gpt2", out_dir=out, seed=0, overrides={"vocab_size": 64})
    build_tiny_model("gpt2", out_dir=out, seed=1, overrides={"vocab_size": 64})
    assert json.loads((out / tiny_module.PROVENANCE_FILE).read_text())["seed"] == 1

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("transformers.PreTrainedModel.save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        build_tiny_model("gpt2", out_dir=tmp_path / "new", seed=0, overrides={"vocab_size": 64})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
