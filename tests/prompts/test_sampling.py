"""Balanced gold positions and the seeded streams."""

import numpy as np
import pytest

from reprflow.errors import PromptError
from reprflow.prompts.sampling import balanced_labels, prompt_rng


@pytest.mark.parametrize(("n_prompts", "n_items"), [(100, 7), (24, 75), (75, 75), (1000, 3), (5, 5), (1, 4)])
def test_every_position_equally_often(n_prompts, n_items):
    labels = balanced_labels(n_prompts, n_items, np.random.default_rng(0))
    counts = np.bincount(labels, minlength=n_items)
    assert labels.shape == (n_prompts,) and counts.sum() == n_prompts
    assert counts.min() >= n_prompts // n_items and counts.max() <= n_prompts // n_items + 1
    assert counts.max() - counts.min() <= 1


def test_labels_are_shuffled_and_seeded():
    a = balanced_labels(200, 10, np.random.default_rng(1))
    assert np.array_equal(a, balanced_labels(200, 10, np.random.default_rng(1)))
    assert not np.array_equal(a, np.tile(np.arange(10), 20))
    assert not np.array_equal(a, balanced_labels(200, 10, np.random.default_rng(2)))


def test_prompt_rng_streams_are_independent_of_order():
    first = prompt_rng((3, 0, 300), 0, 5, 0).integers(0, 1 << 30, 4)
    again = prompt_rng((3, 0, 300), 0, 5, 0).integers(0, 1 << 30, 4)
    other = prompt_rng((3, 0, 300), 0, 6, 0).integers(0, 1 << 30, 4)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_prompt_rng_keys_differing_by_trailing_zeros_give_different_streams():
    # numpy's SeedSequence alone maps [1, 2] and [1, 2, 0] to the same stream
    draws = [prompt_rng((1, 2), *tail).integers(0, 1 << 30, 4) for tail in ((), (0,), (0, 0))]
    assert not np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[1], draws[2])


def test_prompt_rng_rejects_keys_outside_uint32():
    with pytest.raises(PromptError, match=r"every entry must be an int in \[0, 2\*\*32\)"):
        prompt_rng((2**32,), 0)
