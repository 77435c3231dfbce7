"""Init schemes: validation, what each scheme touches, statistics, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from reprflow.errors import ConfigError
from reprflow.models import InitSpec, apply_init, build_from_config, get_layout, tiny_config

SMALL = {"vocab_size": 128, "bos_token_id": 0, "eos_token_id": 0}


def test_initspec_fills_defaults_and_serialises():
    assert InitSpec("gaussian").params == {"std": 0.02}
    assert InitSpec("xavier", {"gain": 2}).params == {"gain": 2.0}
    assert InitSpec("he").to_dict() == {"scheme": "he", "params": {"nonlinearity": "relu"}}
    assert not InitSpec("pretrained").is_random and InitSpec("default").is_random


@pytest.mark.parametrize(
    ("scheme", "params", "match"),
    [
        ("uniform", {}, r"init\.scheme: 'uniform' is unknown; expected one of"),
        ("gaussian", {"sigma": 0.1}, r"init\.params\.sigma: not a parameter of init scheme 'gaussian'; allowed: std"),
        ("gaussian", {"std": -0.1}, r"init\.params\.std: must be a finite number > 0 .*got -0\.1"),
        ("gaussian", {"std": float("nan")}, r"init\.params\.std: must be a finite number > 0"),
        ("gaussian", {"std": float("inf")}, r"init\.params\.std: must be a finite number > 0"),
        ("gaussian", {"std": True}, r"init\.params\.std: must be a finite number > 0"),
        ("xavier", {"gain": "big"}, r"init\.params\.gain: must be a finite number > 0 .*got 'big'"),
        ("xavier", {"gain": 0}, r"init\.params\.gain: must be a finite number > 0"),
        ("he", {"nonlinearity": "tanh"}, r"must be one of \['relu', 'linear'\].*got 'tanh'"),
        ("default", {"std": 1.0}, "allowed: none"),
    ],
)
def test_initspec_rejects_bad_input(scheme, params, match):
    with pytest.raises(ConfigError, match=match):
        InitSpec(scheme, params)


def _build(family, spec, seed):
    config = tiny_config(family, overrides=SMALL)
    model = build_from_config(config, seed=seed)
    apply_init(model, spec, seed=seed, keep_init=get_layout(config).keep_init)
    return model


def _equal_models(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("scheme", ["default", "gaussian", "xavier", "he"])
def test_random_init_is_deterministic_per_seed(scheme):
    spec = InitSpec(scheme)
    assert _equal_models(_build("mamba", spec, 3), _build("mamba", spec, 3))
    assert not _equal_models(_build("mamba", spec, 3), _build("mamba", spec, 4))


def test_global_rng_is_left_unchanged():
    cpu_state = torch.get_rng_state()
    _build("gpt_neox", InitSpec("gaussian", {"std": 0.5}), 7)
    assert torch.equal(torch.get_rng_state(), cpu_state)


@pytest.mark.parametrize("scheme", ["gaussian", "xavier", "he"])
def test_mamba_scheme_touches_weights_and_keeps_ssm_params(scheme):
    own = _build("mamba", InitSpec("default"), 5)
    model = _build("mamba", InitSpec(scheme), 5)
    own_params = dict(own.named_parameters())
    for name, param in model.named_parameters():
        before = own_params[name]
        if name.endswith(("A_log", "D", "dt_proj.bias")) or "norm" in name:
            assert torch.equal(param, before), f"{scheme} changed {name}, which keeps the model's own init"
        elif name.endswith(".bias"):
            assert torch.count_nonzero(param) == 0, f"{scheme}: bias {name} not zeroed"
        else:
            assert not torch.equal(param, before), f"{scheme} left weight {name} unchanged"
    norm = model.backbone.norm_f.weight
    assert torch.equal(norm, torch.ones_like(norm))


def test_mamba2_keeps_dt_bias_and_gated_norm():
    own = _build("mamba2", InitSpec("default"), 1)
    model = _build("mamba2", InitSpec("xavier"), 1)
    mixer, own_mixer = model.backbone.layers[0].mixer, own.backbone.layers[0].mixer
    for name in ("A_log", "D", "dt_bias"):
        assert torch.equal(getattr(mixer, name), getattr(own_mixer, name))
    assert torch.equal(mixer.norm.weight, torch.ones_like(mixer.norm.weight))
    assert not torch.equal(mixer.in_proj.weight, own_mixer.in_proj.weight)


def test_tied_embedding_stays_tied_and_gaussian():
    model = _build("gpt2", InitSpec("gaussian", {"std": 0.5}), 2)
    assert model.lm_head.weight is model.transformer.wte.weight
    std = model.transformer.wte.weight.double().std().item()
    assert std == pytest.approx(0.5, rel=0.05)


def _fill(module, spec, seed=0):
    apply_init(module, spec, seed=seed)
    return module


@pytest.mark.parametrize("std", [0.02, 1.3])
def test_gaussian_std_on_a_big_matrix(std):
    layer = _fill(nn.Linear(1024, 512), InitSpec("gaussian", {"std": std}))
    w = layer.weight.detach().double().numpy()
    assert abs(w.mean()) < 0.01 * std
    assert w.std() == pytest.approx(std, rel=0.05)
    assert np.count_nonzero(layer.bias.detach().numpy()) == 0


@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_xavier_variance_formula(gain):
    fan_out, fan_in = 384, 1024
    w = _fill(nn.Linear(fan_in, fan_out), InitSpec("xavier", {"gain": gain})).weight.detach().double().numpy()
    assert w.std() == pytest.approx(gain * math.sqrt(2.0 / (fan_in + fan_out)), rel=0.05)


@pytest.mark.parametrize(("nonlinearity", "gain"), [("relu", math.sqrt(2.0)), ("linear", 1.0)])
def test_he_variance_formula_uses_fan_in(nonlinearity, gain):
    fan_out, fan_in = 256, 2048
    spec = InitSpec("he", {"nonlinearity": nonlinearity})
    linear = _fill(nn.Linear(fan_in, fan_out), spec).weight.detach().double().numpy()
    assert linear.std() == pytest.approx(gain / math.sqrt(fan_in), rel=0.05)
    # GPT-2's transposed Conv1D(nf=out, nx=in) stores [in, out]; its fan_in is still `in`
    conv = _fill(Conv1D(fan_out, fan_in), spec).weight.detach().double().numpy()
    assert conv.shape == (fan_in, fan_out)
    assert conv.std() == pytest.approx(gain / math.sqrt(fan_in), rel=0.05)


def test_he_default_is_he_et_al_not_lecun():
    """The default `he` is He et al. (2015): std = sqrt(2 / fan_in), on every covered weight type."""
    fan_in, fan_out, vocab = 1536, 768, 4096
    spec = InitSpec("he")
    assert spec.params == {"nonlinearity": "relu"}
    linear = _fill(nn.Linear(fan_in, fan_out), spec).weight.detach().double().numpy()
    assert linear.std() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.03)
    assert linear.std() / (1 / math.sqrt(fan_in)) == pytest.approx(math.sqrt(2.0), rel=0.03)  # not LeCun
    # Embedding [vocab, d]: torch's fan_in is d
    emb = _fill(nn.Embedding(vocab, fan_out), spec).weight.detach().double().numpy()
    assert emb.std() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.03)


def test_depthwise_conv_fans_include_the_kernel():
    conv = _fill(nn.Conv1d(4096, 4096, kernel_size=4, groups=4096), InitSpec("he"))
    w = conv.weight.detach().double().numpy()  # [4096, 1, 4]: fan_in = 1 * 4
    assert w.std() == pytest.approx(math.sqrt(2 / 4), rel=0.05)


def test_apply_init_rejects_pretrained():
    with pytest.raises(ConfigError, match="pretrained"):
        apply_init(nn.Linear(2, 2), InitSpec("pretrained"), seed=0)
