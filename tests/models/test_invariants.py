"""Family invariants and the shipped-config comparison: each broken checkpoint gets one clear error."""

from __future__ import annotations

import pytest
from transformers import AutoConfig, Mamba2Config

from reprflow.errors import ConfigError
from reprflow.models import InitSpec, TINY_TOKENIZERS, load_model, tiny_config
from reprflow.models.invariants import MAX_VOCAB_PADDING, check_family_invariants, check_matches_shipped
from reprflow.models.shipped import shipped_config_path, shipped_ids

TOKENIZER_SIZE = {"gpt2": 50257, "gpt-neox-20b": 50277}


@pytest.mark.parametrize("family", sorted(TINY_TOKENIZERS))
def test_tiny_models_satisfy_their_family_invariants(family):
    config = tiny_config(family)
    check_family_invariants(config, model=f"tiny-{family}", tokenizer_size=TOKENIZER_SIZE[TINY_TOKENIZERS[family]])


@pytest.mark.parametrize("hf_id", shipped_ids())
def test_shipped_configs_satisfy_invariants_and_match_themselves(hf_id):
    config = AutoConfig.from_pretrained(shipped_config_path(hf_id))
    tokenizer = "gpt2" if config.model_type == "gpt_neo" else "gpt-neox-20b"
    check_family_invariants(config, model=hf_id, tokenizer_size=TOKENIZER_SIZE[tokenizer])
    check_matches_shipped(config, config, model=hf_id)


def _shipped(hf_id, **changes):
    config = AutoConfig.from_pretrained(shipped_config_path(hf_id))
    for key, value in changes.items():
        setattr(config, key, value)
    return config


@pytest.mark.parametrize(
    ("hf_id", "changes", "match"),
    [
        (
            "AntonV/mamba2-2.7b-hf",
            {"n_groups": 8},
            r"n_groups is 8, expected 1 \(transformers' Mamba2Config defaults to 8",
        ),
        (
            "AntonV/mamba2-2.7b-hf",
            {"num_heads": 40},
            r"num_heads \* head_dim = 40 \* 64 = 2560 .* == 2 \* hidden_size \(5120\)",
        ),
        ("AntonV/mamba2-130m-hf", {"expand": 4}, "expected expand 2"),
        ("EleutherAI/gpt-neo-2.7B", {"attention_layers": ["global"] * 32}, "not GPT-Neo's alternating global/local"),
        ("state-spaces/mamba-2.8b-hf", {"intermediate_size": 4096}, r"intermediate_size == 2 \* hidden_size \(5120\)"),
    ],
)
def test_family_invariant_failures_name_model_origin_and_fix(hf_id, changes, match):
    with pytest.raises(ConfigError, match=match) as info:
        check_family_invariants(_shipped(hf_id, **changes), model=hf_id, origin="config.models[3].hf_id")
    assert str(info.value).startswith(f"model '{hf_id}' (config.models[3].hf_id): ")


def test_vocabulary_must_cover_the_tokenizer():
    config = tiny_config("mamba")  # vocab 50280
    check_family_invariants(config, model="m", tokenizer_size=50277)
    with pytest.raises(ConfigError, match=r"vocab_size 50280 does not match the tokenizer's 50281 tokens"):
        check_family_invariants(config, model="m", tokenizer_size=50281)
    with pytest.raises(ConfigError, match="pair the model with its own tokenizer"):
        check_family_invariants(config, model="m", tokenizer_size=50280 - MAX_VOCAB_PADDING - 1)


@pytest.mark.parametrize(
    ("hf_id", "changes", "key"),
    [
        ("EleutherAI/gpt-neo-2.7B", {"window_size": 128}, "window_size"),
        ("AntonV/mamba2-2.7b-hf", {"state_size": 64}, "state_size"),
        ("EleutherAI/pythia-2.8b", {"vocab_size": 50432}, "vocab_size"),
        ("state-spaces/mamba-2.8b-hf", {"num_hidden_layers": 48}, "num_hidden_layers"),
    ],
)
def test_checkpoint_differing_from_shipped_config_is_refused(hf_id, changes, key):
    shipped = _shipped(hf_id)
    with pytest.raises(
        ConfigError, match=rf"checkpoint config has {key} = .* but the shipped config .*{hf_id.split('/')[1]}"
    ) as info:
        check_matches_shipped(_shipped(hf_id, **changes), shipped, model=hf_id, shipped_path="x/" + hf_id.split("/")[1])
    assert "random-init arm would be a different architecture" in str(info.value)


def test_bad_conversion_fails_before_weights_are_read(tmp_path):
    """A Mamba2 config.json that relies on transformers' default n_groups (8) stops the load at once."""
    Mamba2Config(hidden_size=64, num_heads=8, head_dim=16, num_hidden_layers=2, vocab_size=50280).save_pretrained(
        tmp_path
    )
    for init in (InitSpec("pretrained"), InitSpec("default")):  # no weights in the folder: only the config is read
        with pytest.raises(ConfigError, match="n_groups is 8, expected 1"):
            load_model(str(tmp_path), init=init, seed=0, origin="config.models[3].hf_id")


def test_family_must_match_the_checkpoint_and_unknown_types_name_the_model(tmp_path):
    from transformers import OpenAIGPTConfig

    from reprflow.errors import ReprflowError

    Mamba2Config(
        hidden_size=64, num_heads=8, head_dim=16, n_groups=1, num_hidden_layers=2, vocab_size=50280
    ).save_pretrained(tmp_path / "m2")
    with pytest.raises(ConfigError, match="the checkpoint is model_type 'mamba2' but the config's family is 'mamba'"):
        load_model(str(tmp_path / "m2"), init=InitSpec("default"), seed=0, family="mamba")
    OpenAIGPTConfig(n_layer=2, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt1")  # no final norm
    with pytest.raises(ReprflowError, match=r"^model '.*gpt1' \(config.models\[5\].hf_id\): model_type 'openai-gpt'"):
        load_model(str(tmp_path / "gpt1"), init=InitSpec("pretrained"), seed=None, origin="config.models[5].hf_id")
