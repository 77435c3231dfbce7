"""Representation-flow metrics: pure math on the token states of one prompt.

Every metric takes ``H`` of shape (n_states, n_tokens, hidden) (numpy or torch),
computes in float64 and returns numpy float64 (an array or a float). Nothing here
touches files, Zarr or config; ``reprflow.pipeline`` does load -> compute -> write.

Modules: :mod:`~reprflow.metrics.cosine` (layerwise and inter-token cosine, Eq. 2),
:mod:`~reprflow.metrics.cka` (linear CKA, biased and debiased, minibatch CKA) and
:mod:`~reprflow.metrics.smoothness` (Sm, Eq. 3, and St, Eq. 4); :mod:`~reprflow.metrics.mixed` computes
them all in one float32 pass (``metrics.precision: mixed``). A map from each metric to its function,
file and figure: docs/metrics.md.

``METRICS`` maps a config name to a function ``f(H) -> ndarray | float``::

    METRICS["inter_token_cosine"](H)   # shape (n_states,)
    METRICS["nope"]                    # UnknownMetricError listing the known names
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial

import numpy as np

from reprflow.errors import UnknownMetricError
from reprflow.metrics.cka import (
    CKAMatrices,
    MinibatchCKAAccumulator,
    center_gram,
    cka_from_grams,
    cka_matrices,
    cka_matrix,
    feature_space_linear_cka,
    gram_linear,
    hsic,
    linear_cka,
    minibatch_cka,
)
from reprflow.metrics.cosine import (
    InterTokenCosineAccumulator,
    LayerwiseCosineAccumulator,
    binned_layerwise_cosine,
    inter_token_cosine,
    layerwise_cosine,
)
from reprflow.metrics.smoothness import (
    SmoothnessStabilityAccumulator,
    mean_state_rms,
    smoothness,
    smoothness_scale_free,
    stability,
    stability_scale_free,
)

__all__ = [
    "METRICS",
    "CKAMatrices",
    "InterTokenCosineAccumulator",
    "LayerwiseCosineAccumulator",
    "MinibatchCKAAccumulator",
    "SmoothnessStabilityAccumulator",
    "UnknownMetricError",
    "binned_layerwise_cosine",
    "center_gram",
    "cka_from_grams",
    "cka_matrices",
    "cka_matrix",
    "feature_space_linear_cka",
    "get_metric",
    "gram_linear",
    "hsic",
    "inter_token_cosine",
    "layerwise_cosine",
    "linear_cka",
    "minibatch_cka",
    "mean_state_rms",
    "smoothness",
    "smoothness_scale_free",
    "stability",
    "stability_scale_free",
]

MetricFn = Callable[..., "np.ndarray | float"]


class _MetricRegistry(Mapping[str, MetricFn]):
    """Read-only name -> metric mapping whose missing-key error lists the known names."""

    def __init__(self, metrics: dict[str, MetricFn]) -> None:
        self._metrics = dict(metrics)

    def __getitem__(self, name: str) -> MetricFn:
        try:
            return self._metrics[name]
        except KeyError:
            raise UnknownMetricError(
                f"unknown metric {name!r}; known metrics: {', '.join(sorted(self._metrics))}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._metrics)

    def __len__(self) -> int:
        return len(self._metrics)

    def __repr__(self) -> str:
        return f"METRICS({sorted(self._metrics)})"


METRICS: Mapping[str, MetricFn] = _MetricRegistry(
    {
        "layerwise_cosine": layerwise_cosine,  # (K-1, n)
        "inter_token_cosine": inter_token_cosine,  # (K,)
        "cka_matrix": cka_matrix,  # (K, K)
        "debiased_cka_matrix": partial(cka_matrix, debiased=True),  # (K, K)
        "smoothness": smoothness,  # float (Sm, Eq. 3)
        "stability": stability,  # float (St, Eq. 4)
    }
)
"""Per-prompt metrics by config name; each is ``f(H, *, device=None)`` with H of shape
(n_states, n_tokens, hidden)."""


def get_metric(name: str) -> MetricFn:
    """The metric registered as ``name``; raises :class:`UnknownMetricError` (a ConfigError)."""
    return METRICS[name]
