"""Per-family layout table and layer views."""

from __future__ import annotations

import pytest
from transformers import GPTNeoConfig, MambaConfig, OPTConfig

from reprflow.errors import ReprflowError
from reprflow.models import get_layout, supported_model_types, tiny_config, view_indices


def test_paper_and_generic_families_are_supported():
    assert {"gpt_neo", "gpt_neox", "mamba", "mamba2", "gpt2", "llama", "bamba"} <= set(supported_model_types())


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
    views = view_indices(get_layout(tiny_config(family)), 4)
    assert views == {"hf": expected_hf, "residual": [0, 1, 2, 3, 4]}


def test_view_lengths_scale_with_depth():
    layout = get_layout(MambaConfig())
    for n_blocks in (1, 2, 64):
        views = view_indices(layout, n_blocks)
        assert len(views["hf"]) == n_blocks + 1
        assert views["hf"][-1] == n_blocks + 1  # final_norm is always last
        assert views["residual"] == list(range(n_blocks + 1))
    with pytest.raises(ReprflowError, match="n_blocks"):
        view_indices(layout, 0)


def test_layout_is_keyed_by_model_type_not_name():
    config = GPTNeoConfig(attention_types=[[["global", "local"], 1]], num_layers=2)
    config.name_or_path = "someone/mamba-lookalike"  # a misleading name must not matter
    assert get_layout(config).model_type == "gpt_neo"


def test_unknown_model_type_lists_supported_and_the_fix():
    with pytest.raises(ReprflowError) as info:
        get_layout(OPTConfig())
    message = str(info.value)
    assert "'opt'" in message
    for family in supported_model_types():
        assert family in message
    assert "reprflow/models/layouts.py" in message


def test_paths_are_relative_to_the_causal_lm():
    layout = get_layout(tiny_config("gpt_neo"))
    assert layout.blocks_path == "transformer.h"
    assert layout.final_norm_path == "transformer.ln_f"
    assert get_layout(tiny_config("mamba")).blocks_path == "backbone.layers"
