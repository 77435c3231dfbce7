"""The matched families' parameter counts by formula against models built from the same configs."""

import pytest

from reprflow.training.block_counts import MAMBA2_STATES, best_ssm_shape, non_embedding_params
from reprflow.training.sizing import count_params, family_config, match_families

SHAPE = dict(vocab_size=256, context=128)


@pytest.mark.parametrize("width", [64, 96, 128, 256, 384, 512, 1024])
@pytest.mark.parametrize("depth", [1, 2, 3, 6])
def test_formula_counts_equal_the_built_models(width, depth):
    for family, states in (("gpt_neox", (16,)), ("mamba", (16,)), ("mamba2", MAMBA2_STATES)):
        for d_state in states:
            config = family_config(family, width=width, depth=depth, d_state=d_state, **SHAPE)
            want = count_params(config)[1]
            assert non_embedding_params(family, width=width, depth=depth, d_state=d_state) == want, (family, d_state)


def _closest_by_building(family, width, depth):
    """The closest (blocks, d_state) over the whole search range, counted on built models."""
    reference = count_params(family_config("gpt_neox", width=width, depth=depth, **SHAPE))[1]
    options = [
        (abs(count_params(family_config(family, width=width, depth=b, d_state=s, **SHAPE))[1] - reference), b, s)
        for s in (MAMBA2_STATES if family == "mamba2" else (16,))
        for b in range(depth, 4 * depth + 1)
    ]
    err, blocks, d_state = min(options)
    return err, blocks, d_state


@pytest.mark.parametrize(("width", "depth"), [(64, 2), (384, 4), (512, 6), (1024, 8)])
@pytest.mark.parametrize("family", ["mamba", "mamba2"])
def test_best_shape_is_the_closest_built_model_and_match_families_uses_it(family, width, depth):
    blocks, d_state = best_ssm_shape(family, width=width, depth=depth)
    err, *_ = _closest_by_building(family, width, depth)
    reference = count_params(family_config("gpt_neox", width=width, depth=depth, **SHAPE))[1]
    got = count_params(family_config(family, width=width, depth=blocks, d_state=d_state, **SHAPE))[1]
    assert abs(got - reference) == err  # as close as any shape in the range
    sized = match_families([family], width=width, depth=depth, **SHAPE)[family]
    assert (sized.depth, sized.config.state_size) == (blocks, d_state)


def test_an_unknown_family_is_named():
    with pytest.raises(ValueError, match="gpt_neo"):
        non_embedding_params("gpt_neo", width=64, depth=2)
