"""Contract checks run on every registered metric (reprflow.metrics.METRICS)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprflow.errors import ConfigError
from reprflow.metrics import METRICS, UnknownMetricError, get_metric

K, N, D = 5, 12, 6

EXPECTED_SHAPES = {
    "layerwise_cosine": (K - 1, N),
    "inter_token_cosine": (K,),
    "cka_matrix": (K, K),
    "debiased_cka_matrix": (K, K),
    "smoothness": (),
    "stability": (),
}


@pytest.fixture
def states() -> np.ndarray:
    rng = np.random.default_rng(2)
    return np.cumsum(rng.normal(size=(K, N, D)), axis=0)


def test_every_registered_metric_has_an_expected_shape():
    assert set(METRICS) == set(EXPECTED_SHAPES)


@pytest.mark.parametrize("name", sorted(EXPECTED_SHAPES))
def test_metric_contract(name, states):
    fn = METRICS[name]
    out = fn(states)
    if EXPECTED_SHAPES[name] == ():
        assert isinstance(out, float)
    else:
        assert isinstance(out, np.ndarray) and out.dtype == np.float64
        assert out.shape == EXPECTED_SHAPES[name]
    assert np.isfinite(out).all()
    # determinism: a second call gives identical bits
    np.testing.assert_array_equal(fn(states), out)
    # torch input gives the same values as numpy input
    np.testing.assert_array_equal(fn(torch.from_numpy(states)), out)
    # float32 / float16 storage dtypes are accepted and cast to float64 on entry
    np.testing.assert_allclose(fn(states.astype(np.float32)), out, rtol=1e-4, atol=1e-5)
    # the input is not modified
    before = states.copy()
    fn(states)
    np.testing.assert_array_equal(states, before)


@pytest.mark.parametrize("name", sorted(EXPECTED_SHAPES))
def test_metric_rejects_wrong_rank(name):
    with pytest.raises(ValueError, match="3 axes"):
        METRICS[name](np.ones((N, D)))


def test_unknown_metric_names_the_known_ones():
    with pytest.raises(UnknownMetricError, match="unknown metric 'cka'; known metrics: cka_matrix"):
        get_metric("cka")
    with pytest.raises(ConfigError):
        METRICS["smoothnes"]
    with pytest.raises(KeyError):  # still a Mapping: KeyError semantics kept
        METRICS["x"]
    assert "x" not in METRICS and METRICS.get("x") is None
    assert get_metric("smoothness") is METRICS["smoothness"]
