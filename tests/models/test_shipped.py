"""Shipped paper configs: random init builds offline, full-size architectures match the papers' sizes."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig

from reprflow.config import PROJECT_ROOT, load_config
from reprflow.errors import ConfigError, ModelNotFoundError
from reprflow.models import InitSpec, apply_init, get_layout, load_model, model_provenance
from reprflow.models.shipped import SHIPPED_DIR, read_shipped_config, shipped_config_path, shipped_ids

PAPER = load_config(PROJECT_ROOT / "config" / "config.yaml")


def _strict_json(path):
    def reject(constant):
        raise ValueError(f"{path.name}: non-standard JSON constant {constant}")

    with open(path) as fh:
        return json.load(fh, parse_constant=reject)


def _expected_params(c: dict) -> int:
    """Parameter count from the published architecture, written out by hand (independent of transformers)."""
    d, V = c["hidden_size"], c["vocab_size"]
    L = c.get("num_hidden_layers", c.get("num_layers"))  # GPT-Neo names it num_layers
    if c["model_type"] == "gpt_neo":
        per_layer = 2 * d + 3 * d * d + (d * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d)
        return V * d + c["max_position_embeddings"] * d + L * per_layer + 2 * d  # LM head tied
    if c["model_type"] == "gpt_neox":
        f = c["intermediate_size"]
        per_layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d)
        return 2 * V * d + L * per_layer + 2 * d  # embed_in and embed_out untied
    if c["model_type"] == "mamba":
        E, N, R, k = c["intermediate_size"], c["state_size"], c["time_step_rank"], c["conv_kernel"]
        mixer = d * 2 * E + (E * k + E) + E * (R + 2 * N) + (R * E + E) + E * N + E + E * d
        return V * d + L * (d + mixer) + d  # tied
    if c["model_type"] == "mamba2":
        E, N, H, G, k = c["expand"] * d, c["state_size"], c["num_heads"], c["n_groups"], c["conv_kernel"]
        conv_dim = E + 2 * G * N
        mixer = d * (2 * E + 2 * G * N + H) + (conv_dim * k + conv_dim) + 3 * H + E + E * d
        return V * d + L * (d + mixer) + d  # tied
    raise AssertionError(c["model_type"])


# (hf_id, blocks, hidden, approx params as published: "2.7B", "2.8B", "130M")
PUBLISHED = {
    "EleutherAI/gpt-neo-2.7B": (32, 2560, 2.7e9),
    "EleutherAI/pythia-2.8b": (32, 2560, 2.8e9),
    "state-spaces/mamba-2.8b-hf": (64, 2560, 2.8e9),
    "AntonV/mamba2-2.7b-hf": (64, 2560, 2.7e9),
    "AntonV/mamba2-130m-hf": (24, 768, 130e6),
}


def test_every_paper_model_has_a_shipped_config_and_a_source():
    assert sorted(m.hf_id for m in PAPER.models) == shipped_ids() == sorted(PUBLISHED)
    source = (SHIPPED_DIR / "SOURCE.md").read_text()
    for model in PAPER.models:
        path = shipped_config_path(model.hf_id)
        assert path.name == model.hf_id.replace("/", "__") + ".json"
        assert _strict_json(path) == read_shipped_config(model.hf_id)
        assert model.hf_id in source and path.name in source
        assert model.revision in source, f"{model.hf_id}: the pinned revision is not documented"
    assert shipped_config_path("/abs/EleutherAI/pythia-2.8b") is None
    assert shipped_config_path("EleutherAI/pythia-2.8b-deduped") is None


def test_config_loading_is_torch_free():
    """The config loader (and so every Snakemake parse) validates inits without importing torch."""
    code = (
        "import sys; from reprflow.config import load_config; load_config('config/config.yaml'); "
        "import reprflow.models.shipped; print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """Offline, with an empty HF cache: nothing can come from the hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))


@pytest.mark.parametrize("hf_id", sorted(PUBLISHED))
def test_random_init_of_each_paper_model_builds_offline_at_full_size(no_hub, hf_id):
    """The full architecture is built on the meta device (no memory) from the shipped config, offline."""
    blocks, hidden, published = PUBLISHED[hf_id]
    shipped = read_shipped_config(hf_id)
    model = load_model(hf_id, init=InitSpec("he"), seed=0, device="meta", tokenizer_size=None)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == _expected_params(shipped)
    assert abs(math.log(n_params / published)) < math.log(1.1), f"{hf_id}: {n_params:,} is not ~{published:.2g}"
    assert len(get_layout(model).block_list(model)) == blocks and model.config.hidden_size == hidden
    provenance = model_provenance(model)
    assert provenance["config_source"] == "shipped" and provenance["commit"] is None
    assert provenance["weights"] == "random" and provenance["config_path"].endswith(shipped_config_path(hf_id).name)


def test_known_totals():
    """Two published totals, exactly: GPT-Neo-2.7B as reported by transformers, Pythia-2.8B from the Pythia paper."""
    assert _expected_params(read_shipped_config("EleutherAI/gpt-neo-2.7B")) == 2_651_307_520
    assert _expected_params(read_shipped_config("EleutherAI/pythia-2.8b")) == 2_775_208_960


def test_he_on_full_mamba2_keeps_ssm_parameters():
    model = load_model("AntonV/mamba2-2.7b-hf", init=InitSpec("default"), seed=0, device="meta")
    touched = apply_init(model, InitSpec("he"), seed=0, keep_init=get_layout(model).keep_init)
    assert not any(name.endswith(("A_log", ".D", "dt_bias")) or "norm" in name for name in touched)
    assert {name.split(".")[-2] for name in touched} == {"embeddings", "in_proj", "conv1d", "out_proj"}


def test_reduced_paper_architecture_runs_on_cpu_from_a_local_config(no_hub, tmp_path):
    """A folder holding only config.json is enough for a random init; a small variant of each shipped
    config (same family and flags, fewer/narrower layers) builds and runs a forward pass offline."""
    shrink = {
        "gpt_neo": {"num_layers": 2, "hidden_size": 64, "num_heads": 4, "attention_types": [[["global", "local"], 1]]},
        "gpt_neox": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 256},
        "mamba": {
            "num_hidden_layers": 2,
            "n_layer": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "time_step_rank": 4,
        },
        "mamba2": {"num_hidden_layers": 2, "hidden_size": 64, "num_heads": 2, "chunk_size": 16},
    }
    for hf_id in sorted(PUBLISHED):
        config = dict(read_shipped_config(hf_id))
        config.update(shrink[config["model_type"]])
        if config["model_type"] == "gpt_neo":
            config["attention_layers"] = ["global", "local"]
        folder = tmp_path / hf_id.replace("/", "__")
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        model = load_model(
            str(folder),
            init=InitSpec("gaussian", {"std": 0.2}),
            seed=1,
            tokenizer_size=50277 if config["model_type"] != "gpt_neo" else 50257,
        )
        with torch.no_grad():
            out = model(torch.arange(1, 9)[None], output_hidden_states=True)
        assert all(torch.isfinite(h).all() for h in out.hidden_states), hf_id
        assert model_provenance(model)["config_source"] == "local"


def test_random_init_without_shipped_config_offline_says_how_to_get_config_json(no_hub):
    with pytest.raises(ModelNotFoundError) as info:
        load_model(
            "nonsense-org/not-a-model-x9",
            init=InitSpec("default"),
            seed=0,
            revision="abc123",
            origin="config.models[4].hf_id",
        )
    message = str(info.value)
    assert "(config.models[4].hf_id)" in message and "needs only its config.json" in message
    assert "`hf download nonsense-org/not-a-model-x9 config.json --revision abc123 --local-dir" in message


def test_shipped_config_is_what_transformers_reads():
    for hf_id in shipped_ids():
        config = AutoConfig.from_pretrained(shipped_config_path(hf_id))
        assert config.model_type == read_shipped_config(hf_id)["model_type"]


def _fake_hub(monkeypatch, changes=None):
    """Stand in for the network only: the 'hub' serves the shipped config (optionally altered) at a commit."""
    from reprflow.models import registry

    commit = "0123456789abcdef0123456789abcdef01234567"

    def from_hub(loader, model_id, *, revision, origin, config_only=False, **kwargs):
        config = AutoConfig.from_pretrained(shipped_config_path(model_id))
        for key, value in (changes or {}).items():
            setattr(config, key, value)
        config._commit_hash = commit
        if loader == AutoConfig.from_pretrained:  # bound classmethods compare equal, never identical
            return config
        with torch.device("meta"):
            from transformers import AutoModelForCausalLM

            return AutoModelForCausalLM.from_config(config, dtype=kwargs.get("dtype"))

    monkeypatch.setattr(registry, "_from_hub", from_hub)
    return commit


def test_pretrained_hub_load_records_commit_and_warns_when_unpinned(monkeypatch, caplog):
    commit = _fake_hub(monkeypatch)
    with caplog.at_level("WARNING", logger="reprflow.models.registry"):
        model = load_model(
            "AntonV/mamba2-130m-hf",
            init=InitSpec("pretrained"),
            seed=None,
            device="meta",
            origin="config.models[4].hf_id",
            dtype=torch.bfloat16,
        )
    provenance = model_provenance(model)
    assert provenance == {**provenance, "config_source": "hub", "commit": commit, "weights": "pretrained"}
    assert f"pin it with `revision: {commit}`" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="reprflow.models.registry"):
        load_model("AntonV/mamba2-130m-hf", init=InitSpec("pretrained"), seed=None, device="meta", revision=commit)
    assert "pin it" not in caplog.text


def test_pretrained_checkpoint_that_drifted_from_the_shipped_config_is_refused(monkeypatch):
    _fake_hub(monkeypatch, {"state_size": 64})
    with pytest.raises(
        ConfigError,
        match=r"checkpoint config has state_size = 64 but the shipped config "
        r"reprflow/models/configs/AntonV__mamba2-130m-hf.json has 128",
    ):
        load_model("AntonV/mamba2-130m-hf", init=InitSpec("pretrained"), seed=None, device="meta")
