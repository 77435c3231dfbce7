"""Layer views, the override table, and discovery on the demo's tiny families (configs only, meta device)."""

from __future__ import annotations

import dataclasses

import pytest
from transformers import GPTNeoConfig, MambaConfig

from reprflow.errors import ReprflowError
from reprflow.models import OVERRIDES, Layout, get_layout, tiny_config, view_indices
from reprflow.models.layouts import _FIELDS


@pytest.mark.parametrize(
    ("family", "expected_hf"),
    [
        # Transformers record each block's input, then the final norm replaces the last entry
        ("gpt_neo", [0, 1, 2, 3, 5]),
        ("gpt_neox", [0, 1, 2, 3, 5]),
        ("gpt2", [0, 1, 2, 3, 5]),
        ("llama", [0, 1, 2, 3, 5]),
        ("bamba", [0, 1, 2, 3, 5]),
        # Mamba records each block's output, then appends the final norm
        ("mamba", [1, 2, 3, 4, 5]),
        ("mamba2", [1, 2, 3, 4, 5]),
    ],
)
def test_view_indices_for_four_blocks(family, expected_hf):
    views = view_indices(get_layout(tiny_config(family)), 4)  # from the config: a meta-device skeleton
    assert views == {"hf": expected_hf, "residual": [0, 1, 2, 3, 4]}


def test_view_lengths_scale_with_depth():
    layout = get_layout(MambaConfig(num_hidden_layers=2, hidden_size=16))
    for n_blocks in (1, 2, 64):
        views = view_indices(layout, n_blocks)
        assert len(views["hf"]) == n_blocks + 1
        assert views["hf"][-1] == n_blocks + 1  # final_norm is always last
        assert views["residual"] == list(range(n_blocks + 1))
    with pytest.raises(ReprflowError, match="n_blocks"):
        view_indices(layout, 0)
    with pytest.raises(ReprflowError, match="hf_records must be"):
        view_indices(dataclasses.replace(layout, hf_records="outputs"), 2)


def test_layout_is_keyed_by_model_type_not_name():
    config = GPTNeoConfig(attention_types=[[["global", "local"], 1]], num_layers=2, hidden_size=16, num_heads=2)
    config.name_or_path = "someone/mamba-lookalike"  # a misleading name must not matter
    layout = get_layout(config)
    assert (layout.model_type, layout.hf_records, layout.overridden) == ("gpt_neo", "block_inputs", ())


def test_paths_are_relative_to_the_causal_lm():
    layout = get_layout(tiny_config("gpt_neo"))
    assert (layout.base_prefix, layout.blocks, layout.final_norm, layout.embedding) == (
        "transformer",
        "h",
        "ln_f",
        "wte",
    )
    assert layout.blocks_path == "transformer.h"
    assert layout.final_norm_path == "transformer.ln_f"
    assert get_layout(tiny_config("mamba")).blocks_path == "backbone.layers"


def test_override_table_names_only_layout_fields():
    for model_type, fields in OVERRIDES.items():
        assert set(fields) <= _FIELDS, model_type
    mamba = get_layout(tiny_config("mamba"))
    assert (mamba.overridden, mamba.keep_init) == (("hf_records",), ("dt_proj.bias",))


def test_layout_is_a_plain_record():
    layout = Layout("llama", "model", "embed_tokens", "layers", "tensor", "norm", None, "block_inputs")
    assert layout.keep_init == () and layout.overridden == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.blocks = "h"  # type: ignore[misc]
