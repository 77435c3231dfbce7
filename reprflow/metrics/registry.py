"""The metric registry: ``METRICS`` maps a config name to a per-prompt metric ``f(H) -> ndarray | float``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial

import numpy as np

from reprflow.errors import UnknownMetricError
from reprflow.metrics.cka import cka_matrix
from reprflow.metrics.cosine import inter_token_cosine, layerwise_cosine
from reprflow.metrics.smoothness_stability import smoothness, stability

__all__ = ["METRICS", "MetricFn", "get_metric"]

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
